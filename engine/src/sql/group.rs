//! Group commit: the writes of one actor that are waiting at the same moment
//! commit together, in one transaction with one commit (one fsync at
//! `--durability fsync`), and every answer of the group leaves only after it.
//!
//! A writer-lane batch (every request of the actor queued when its lane ran,
//! see `connection::scheduler`) is walked in order:
//! - **members** — an `Execute`/`ExecuteWrite`/`Exec` that does not manage
//!   transactions itself, and every KV request — run inside the open group
//!   transaction (SQL and KV are two files, so two transactions), each in its
//!   own SAVEPOINT: a failing member rolls back only itself and gets its own
//!   error, its own `changes` and `lastInsertRowId`;
//! - requests that **run alone** — any statement starting with BEGIN, COMMIT,
//!   END, ROLLBACK, SAVEPOINT, RELEASE, VACUUM or PRAGMA (transaction control,
//!   or behaviour that differs inside a transaction) — first commit the group
//!   and send its answers, then run as they always did;
//! - a member that would leave a **deferred foreign-key violation** is undone
//!   and runs alone after the group's commit, where its own COMMIT fails as it
//!   would have;
//! - if SQLite rolls back the **whole** group transaction while a member runs
//!   (an interrupted write, `OR ROLLBACK`, an I/O error), that member keeps its
//!   own error and the members before it run again, alone, so nothing
//!   acknowledged is lost and every answer matches what running one by one
//!   would have given.
//!
//! The group is bounded by `group_commit_max_members` and by
//! `group_commit_max_ms` (a group open that long commits and answers, and the
//! next member opens a new one). If a commit fails, every member of that group
//! is answered with the commit's error, `committed: false`.

use super::cost::{self, Rows};
use super::executor::{err, Executor, MemberOutcome, WriterLock};
use super::route::{statements, Kind};
use super::v5::{self, Keyed};
use crate::budget::{self, Charge};
use crate::connection::scheduler::{run_job, Job, Work};
use crate::connection::writer::Outbox;
use crate::metrics::Store;
use crate::sql::route::Lane;
use envoy_protocol::{
    KvErrorCode, KvErrorResponse, KvResponseData, SqliteError, SqliteExecResult, SqliteExecuteResult, ToEnvoy,
    ToEnvoyKvResponse, ToEnvoySqliteExecResponse, ToEnvoySqliteExecuteResponse,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Group-commit bounds, and where the engine counts what groups did.
#[derive(Debug, Clone)]
pub struct GroupLimits {
    /// Most members in one group.
    pub max_members: usize,
    /// Longest a group stays open collecting members before it commits.
    pub max_open: Duration,
    /// Counters shared by every connection of the engine.
    pub stats: Arc<GroupStats>,
    /// The engine's metrics: group sizes and COMMIT times (`envoy_group_commit_size`,
    /// `envoy_commit_duration_seconds`).
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// What group commits did (observability; tests check grouping happened).
#[derive(Debug, Default)]
pub struct GroupStats {
    /// Group transactions committed (SQL and KV counted separately).
    pub commits: AtomicU64,
    /// Requests those commits carried.
    pub members: AtomicU64,
    /// The largest group committed.
    pub largest: AtomicU64,
    /// Group commits that failed (every member answered with the error).
    pub failed: AtomicU64,
}

impl GroupStats {
    fn record(&self, members: u64, ok: bool) {
        if ok {
            self.commits.fetch_add(1, Ordering::Relaxed);
            self.members.fetch_add(members, Ordering::Relaxed);
            self.largest.fetch_max(members, Ordering::Relaxed);
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// How a request takes part in a writer batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// A member of the SQL group.
    Sql,
    /// A member of the KV group.
    Kv,
    /// Runs alone, after the open group committed.
    Alone,
}

fn part(work: &Work) -> Part {
    match work {
        Work::Execute { route, .. } => {
            if route.kind.runs_alone() {
                Part::Alone
            } else {
                Part::Sql
            }
        }
        Work::Exec { sql, .. } => {
            if statements(sql).any(|s| Kind::of(s).runs_alone()) {
                Part::Alone
            } else {
                Part::Sql
            }
        }
        Work::Kv { .. } => Part::Kv,
        // A keyed one never runs alone (refused at admission).
        Work::ExecuteV5 { route, .. } => {
            if route.kind.runs_alone() {
                Part::Alone
            } else {
                Part::Sql
            }
        }
        Work::ExecV5 { sql, .. } => {
            if statements(sql).any(|s| Kind::of(s).runs_alone()) {
                Part::Alone
            } else {
                Part::Sql
            }
        }
        Work::Batch { .. } => Part::Sql,
    }
}

/// An answer built inside an open group: sent only after the group commits.
struct Held {
    /// The request (its in-flight and pending guards end when the answer is queued).
    job: Job,
    /// Its answer, valid once the group it belongs to commits.
    answer: ToEnvoy,
    /// What the answer holds on the budgets.
    charge: Charge,
    /// Which group it belongs to (None: already committed on its own).
    part: Option<Part>,
}

/// The state of one writer batch.
struct Batch<'a> {
    /// Answers are queued here.
    outbox: &'a Outbox,
    /// Bounds of a group.
    limits: &'a GroupLimits,
    /// Answers not sent yet, in request order.
    held: Vec<Held>,
    /// When the open SQL or KV group began (None: no group open).
    opened: Option<Instant>,
    /// Whether a SQL group transaction is open on the writer.
    sql_open: bool,
    /// Whether a KV group transaction is open on the KV store.
    kv_open: bool,
    /// Members in the open groups.
    members: usize,
    /// Request keys of members in the open SQL group: a repeat of one waits for
    /// the group's commit, so it is never answered from a record that may not commit.
    open_keys: Vec<Vec<u8>>,
}

impl Batch<'_> {
    /// Builds an answer with its charges (results charged to this connection while built).
    fn charge(&self, answer: ToEnvoy, built: Option<Charge>) -> (ToEnvoy, Charge) {
        let charge = budget::answer_charge(self.outbox.budget(), &answer, built);
        (answer, charge)
    }

    fn hold(&mut self, job: Job, answer: ToEnvoy, built: Option<Charge>, part: Option<Part>) {
        let (answer, charge) = self.charge(answer, built);
        self.held.push(Held { job, answer, charge, part });
    }

    /// Commits the open groups and sends every held answer (replacing those of a
    /// group whose commit failed by its error).
    fn flush(&mut self, x: &Executor, w: &mut WriterLock<'_>) {
        let count = |p: Part| self.held.iter().filter(|h| h.part == Some(p)).count() as u64;
        let (sql_members, kv_members) = (count(Part::Sql), count(Part::Kv));
        let sql_failed = if std::mem::take(&mut self.sql_open) {
            let started = Instant::now();
            let r = w.commit_group().err();
            self.limits.stats.record(sql_members, r.is_none());
            self.limits.metrics.group_commit(Store::Sql, sql_members, started.elapsed(), r.is_none());
            r
        } else {
            None
        };
        let kv_failed = if std::mem::take(&mut self.kv_open) {
            let started = Instant::now();
            // Finishing begun work: no start check (a stop must not skip a commit).
            let r = match x.with_kv_store(|kv, _| kv.commit_group()) {
                Ok(r) => r.err(),
                Err(_) => Some(rusqlite::Error::InvalidQuery),
            };
            self.limits.stats.record(kv_members, r.is_none());
            self.limits.metrics.group_commit(Store::Kv, kv_members, started.elapsed(), r.is_none());
            r
        } else {
            None
        };
        self.opened = None;
        self.members = 0;
        self.open_keys.clear();
        let mut answers = Vec::with_capacity(self.held.len());
        let mut charge = Charge::default();
        let mut jobs = Vec::with_capacity(self.held.len());
        for mut h in self.held.drain(..) {
            // A v5 answer's duration runs until it is released (after its commit).
            if let Some(v5) = h.job.work.v5() {
                v5::restamp(&mut h.answer, &v5.clock);
            }
            let answer = match (h.part, &sql_failed, &kv_failed) {
                (Some(Part::Sql), Some(e), _) => commit_failed_sql(&h.answer, e),
                (Some(Part::Kv), _, Some(e)) => commit_failed_kv(&h.answer, e),
                _ => {
                    charge.merge(h.charge);
                    answers.push(h.answer);
                    jobs.push(h.job);
                    continue;
                }
            };
            answers.push(answer);
            jobs.push(h.job);
        }
        self.outbox.send_batch(answers, charge);
        drop(jobs); // answered: their in-flight guards end
    }

    fn should_flush(&self) -> bool {
        self.members >= self.limits.max_members || self.opened.is_some_and(|t| t.elapsed() >= self.limits.max_open)
    }
}

/// The answer of a SQL member whose group failed to commit.
fn commit_failed_sql(answer: &ToEnvoy, e: &SqliteError) -> ToEnvoy {
    let mut e = e.clone();
    e.committed = Some(false);
    e.message = format!("the group commit failed, nothing of this request was committed: {}", e.message);
    match answer {
        ToEnvoy::SqliteExecuteResponse(r) => ToEnvoy::SqliteExecuteResponse(ToEnvoySqliteExecuteResponse {
            request_id: r.request_id,
            result: SqliteExecuteResult::SqliteError(e),
        }),
        ToEnvoy::SqliteExecResponse(r) => ToEnvoy::SqliteExecResponse(ToEnvoySqliteExecResponse {
            request_id: r.request_id,
            result: SqliteExecResult::SqliteError(e),
        }),
        other => v5::with_error(other, e).unwrap_or_else(|| other.clone()),
    }
}

/// The answer of a KV member whose group failed to commit.
fn commit_failed_kv(answer: &ToEnvoy, e: &rusqlite::Error) -> ToEnvoy {
    match answer {
        ToEnvoy::KvResponse(r) => ToEnvoy::KvResponse(ToEnvoyKvResponse {
            request_id: r.request_id,
            data: KvResponseData::KvErrorResponse(KvErrorResponse {
                code: KvErrorCode::Internal,
                message: format!("the group commit failed, nothing of this request was committed: {e}"),
                current_generation: None,
            }),
        }),
        other => other.clone(),
    }
}

fn execute_answer(request_id: u32, r: Result<envoy_protocol::ExecuteResult, SqliteError>) -> ToEnvoy {
    ToEnvoy::SqliteExecuteResponse(ToEnvoySqliteExecuteResponse {
        request_id,
        result: match r {
            Ok(r) => SqliteExecuteResult::ExecuteResult(r),
            Err(e) => SqliteExecuteResult::SqliteError(e),
        },
    })
}

fn exec_answer(request_id: u32, r: Result<envoy_protocol::QueryResult, SqliteError>) -> ToEnvoy {
    ToEnvoy::SqliteExecResponse(ToEnvoySqliteExecResponse {
        request_id,
        result: match r {
            Ok(r) => SqliteExecResult::QueryResult(r),
            Err(e) => SqliteExecResult::SqliteError(e),
        },
    })
}

/// Runs a SQL job alone on the locked writer.
fn run_alone(w: &mut WriterLock<'_>, work: &Work) -> ToEnvoy {
    match work {
        Work::Execute { request_id, sql, params, write, route } => {
            execute_answer(*request_id, w.stopping().and_then(|()| w.execute_alone(sql, route, params, *write)))
        }
        Work::Exec { request_id, sql } => exec_answer(*request_id, w.stopping().and_then(|()| w.exec_alone(sql))),
        Work::Kv { request_id, .. } => {
            exec_answer(*request_id, Err(err(envoy_protocol::SqliteErrorCode::Internal, "KV is not SQL", None)))
        }
        // Keyless ones that manage transactions run as in v4.
        Work::ExecuteV5 { request_id, sql, params, write, route, v5 }
            if v5.key.is_none() && route.kind.runs_alone() =>
        {
            let (r, rows) = cost::measure(|| w.stopping().and_then(|()| w.execute_alone(sql, route, params, *write)));
            v5::execute_answer(*request_id, r, v5.clock.cost(rows), None)
        }
        Work::ExecV5 { request_id, sql, v5 } if v5.key.is_none() && part(work) == Part::Alone => {
            let (r, rows) = cost::measure(|| w.stopping().and_then(|()| w.exec_alone(sql)));
            v5::exec_answer(*request_id, r, v5.clock.cost(rows), None)
        }
        // Every other v5 request: as the only member of its own group (its key recorded in it).
        Work::ExecuteV5 { .. } | Work::ExecV5 { .. } | Work::Batch { .. } => {
            let (r, rows) = cost::measure(|| group_of_one(w, |w| v5_member(w, work)));
            v5_answer(work, r, rows)
        }
    }
}

/// Runs a v5 request as a member of the open group (`sql::executor::keyed`).
fn v5_member(w: &mut WriterLock<'_>, work: &Work) -> MemberOutcome<Keyed<V5Ran>> {
    fn map<T>(o: MemberOutcome<Keyed<T>>, f: impl FnOnce(T) -> V5Ran) -> MemberOutcome<Keyed<V5Ran>> {
        let m = |r: Result<Keyed<T>, SqliteError>| {
            r.map(|k| match k {
                Keyed::Ran(v) => Keyed::Ran(f(v)),
                Keyed::Replayed(rec) => Keyed::Replayed(rec),
            })
        };
        match o {
            MemberOutcome::Done(r) => MemberOutcome::Done(m(r)),
            MemberOutcome::Vanished(r) => MemberOutcome::Vanished(m(r)),
            MemberOutcome::RunAlone => MemberOutcome::RunAlone,
        }
    }
    match work {
        Work::ExecuteV5 { sql, params, write, route, v5, .. } => {
            map(w.execute_v5_member(sql, route, params, *write, v5.key.as_ref()), V5Ran::Execute)
        }
        Work::ExecV5 { sql, v5, .. } => map(w.exec_v5_member(sql, v5.key.as_ref()), V5Ran::Exec),
        Work::Batch { batch, v5, .. } => map(w.batch_member(batch, v5.key.as_ref()), V5Ran::Batch),
        Work::Exec { .. } | Work::Execute { .. } | Work::Kv { .. } => {
            MemberOutcome::Done(Err(err(envoy_protocol::SqliteErrorCode::Internal, "not a v5 request", None)))
        }
    }
}

/// What a v5 request returned, by kind (one member type for the group's walk).
enum V5Ran {
    /// An ExecuteV5's result.
    Execute(envoy_protocol::ExecuteResult),
    /// An ExecV5's last statement's rows.
    Exec(envoy_protocol::QueryResult),
    /// A batch's results, one per statement.
    Batch(Vec<envoy_protocol::ExecuteResult>),
}

/// The answer of a v5 request from how it ended and the rows it counted.
fn v5_answer(work: &Work, r: Result<Keyed<V5Ran>, SqliteError>, rows: Rows) -> ToEnvoy {
    let Some(req) = work.v5() else {
        return execute_answer(0, Err(err(envoy_protocol::SqliteErrorCode::Internal, "not a v5 request", None)));
    };
    let cost = req.clock.cost(rows);
    let request_id = match work {
        Work::ExecuteV5 { request_id, .. }
        | Work::ExecV5 { request_id, .. }
        | Work::Batch { request_id, .. }
        | Work::Exec { request_id, .. }
        | Work::Execute { request_id, .. }
        | Work::Kv { request_id, .. } => *request_id,
    };
    let key = req.executed();
    let r = match r {
        Ok(Keyed::Replayed(rec)) => return v5::replay_answer(request_id, &rec, cost),
        Ok(Keyed::Ran(v)) => Ok(v),
        Err(e) => Err(e),
    };
    match work {
        Work::ExecV5 { .. } => v5::exec_answer(
            request_id,
            r.and_then(|v| match v {
                V5Ran::Exec(q) => Ok(q),
                V5Ran::Execute(_) | V5Ran::Batch(_) => Err(mismatch()),
            }),
            cost,
            key,
        ),
        Work::Batch { .. } => v5::batch_answer(
            request_id,
            r.and_then(|v| match v {
                V5Ran::Batch(b) => Ok(b),
                V5Ran::Execute(_) | V5Ran::Exec(_) => Err(mismatch()),
            }),
            cost,
            key,
        ),
        Work::ExecuteV5 { .. } | Work::Exec { .. } | Work::Execute { .. } | Work::Kv { .. } => v5::execute_answer(
            request_id,
            r.and_then(|v| match v {
                V5Ran::Execute(x) => Ok(x),
                V5Ran::Exec(_) | V5Ran::Batch(_) => Err(mismatch()),
            }),
            cost,
            key,
        ),
    }
}

fn mismatch() -> SqliteError {
    err(envoy_protocol::SqliteErrorCode::Internal, "a v5 request ended as another kind", None)
}

/// Runs one member in a group of its own: BEGIN IMMEDIATE, the member, COMMIT.
/// What a request that cannot share a group gets instead of autocommit, so its
/// request key is still recorded by the transaction that commits its write.
fn group_of_one<T>(
    w: &mut WriterLock<'_>,
    member: impl FnOnce(&mut WriterLock<'_>) -> MemberOutcome<T>,
) -> Result<T, SqliteError> {
    w.stopping()?;
    w.begin_group()?;
    let commit = |w: &mut WriterLock<'_>, r: Result<T, SqliteError>| match w.commit_group() {
        Ok(()) => r,
        Err(mut e) => {
            e.committed = Some(false);
            Err(e)
        }
    };
    match member(w) {
        MemberOutcome::Done(r) => commit(w, r),
        MemberOutcome::Vanished(r) => r,
        MemberOutcome::RunAlone => {
            // Its deferred foreign-key violation was undone; alone its COMMIT would fail so.
            let _ = w.commit_group();
            let mut e = err(envoy_protocol::SqliteErrorCode::Sqlite, "FOREIGN KEY constraint failed", Some(false));
            e.extended_code = Some(787);
            Err(e)
        }
    }
}

/// Runs a v5 writer request alone on `x` (when its writer batch could not take
/// the writer, see `run_writer_batch`).
pub(crate) fn run_v5_alone(x: &Executor, work: &Work) -> ToEnvoy {
    match x.lock_writer() {
        Ok(mut w) => run_alone(&mut w, work),
        Err(e) => v5_answer(work, Err(e), Rows::default()),
    }
}

/// Runs one writer-lane batch of one actor with group commit, answering every job.
pub fn run_writer_batch(outbox: &Outbox, batch: Vec<Job>, limits: &GroupLimits) {
    let Some(first) = batch.first() else { return };
    let x = first.executor.clone();
    // One admission to the open-database cap for the whole batch.
    let in_use = x.enter();
    let mut w = match (&in_use, x.lock_writer()) {
        (Ok(_), Ok(w)) => w,
        _ => {
            // The database cannot be used (no room, cannot open, stopping): answer each job as before.
            drop(in_use);
            let mut answers = Vec::with_capacity(batch.len());
            let mut charge = Charge::default();
            for job in &batch {
                let _request_span = job.span().entered();
                let (answer, built) = budget::scope(outbox.budget(), || run_job(job, Lane::Writer));
                let answer = answer.unwrap_or_else(|| {
                    execute_answer(
                        0,
                        Err(err(envoy_protocol::SqliteErrorCode::Internal, "writer refused a statement", None)),
                    )
                });
                charge.merge(budget::answer_charge(outbox.budget(), &answer, built));
                answers.push(answer);
            }
            outbox.send_batch(answers, charge);
            return;
        }
    };
    let mut b = Batch {
        outbox,
        limits,
        held: Vec::with_capacity(batch.len()),
        opened: None,
        sql_open: false,
        kv_open: false,
        members: 0,
        open_keys: Vec::new(),
    };
    for job in batch {
        let _request_span = job.span().entered();
        match part(&job.work) {
            Part::Alone => {
                b.flush(&x, &mut w);
                let (answer, built) = budget::scope(outbox.budget(), || run_alone(&mut w, &job.work));
                b.hold(job, answer, built, None);
                b.flush(&x, &mut w);
            }
            Part::Kv => {
                let Work::Kv { request_id, data } = &job.work else { unreachable!("part() said KV") };
                if !b.kv_open {
                    match x.with_kv(|kv, _| kv.begin_group()) {
                        Ok(Ok(())) => {
                            b.kv_open = true;
                            b.opened.get_or_insert_with(Instant::now);
                        }
                        // Cannot group (stopping, cannot open): answer it alone.
                        _ => {
                            let (answer, built) = budget::scope(outbox.budget(), || run_job(&job, Lane::Writer));
                            let answer = answer.unwrap_or_else(|| unreachable!("KV jobs always answer"));
                            b.hold(job, answer, built, None);
                            continue;
                        }
                    }
                }
                let (r, built) = budget::scope(outbox.budget(), || x.with_kv(|kv, l| kv.handle_member(data, l)));
                let data = match r {
                    Ok((data, still_open)) => {
                        b.kv_open = still_open;
                        data
                    }
                    Err(data) => data,
                };
                let answer = ToEnvoy::KvResponse(ToEnvoyKvResponse { request_id: *request_id, data });
                let part = if b.kv_open { Some(Part::Kv) } else { None };
                b.hold(job, answer, built, part);
                b.members += 1;
            }
            Part::Sql => {
                // A repeat of a key already in the open group waits for its commit.
                if let Some(k) = job.work.v5().and_then(|v| v.key.as_ref()) {
                    if b.open_keys.contains(&k.key) {
                        b.flush(&x, &mut w);
                    }
                    b.open_keys.push(k.key.clone());
                }
                if !b.sql_open {
                    if let Err(e) = w.stopping().and_then(|()| w.begin_group()) {
                        let answer = match &job.work {
                            Work::Exec { request_id, .. } => exec_answer(*request_id, Err(e)),
                            Work::Execute { request_id, .. } | Work::Kv { request_id, .. } => {
                                execute_answer(*request_id, Err(e))
                            }
                            Work::ExecuteV5 { .. } | Work::ExecV5 { .. } | Work::Batch { .. } => {
                                v5_answer(&job.work, Err(e), Rows::default())
                            }
                        };
                        b.hold(job, answer, None, None);
                        continue;
                    }
                    b.sql_open = true;
                    b.opened.get_or_insert_with(Instant::now);
                }
                let (outcome, built) = budget::scope(outbox.budget(), || match &job.work {
                    Work::Execute { request_id, sql, params, write, route } => {
                        map_outcome(w.execute_member(sql, route, params, *write), |r| execute_answer(*request_id, r))
                    }
                    Work::Exec { request_id, sql } => map_outcome(w.exec_member(sql), |r| exec_answer(*request_id, r)),
                    Work::ExecuteV5 { .. } | Work::ExecV5 { .. } | Work::Batch { .. } => {
                        let (o, rows) = cost::measure(|| v5_member(&mut w, &job.work));
                        map_outcome(o, |r| v5_answer(&job.work, r, rows))
                    }
                    Work::Kv { .. } => unreachable!("part() said SQL"),
                });
                match outcome {
                    Step::Done(answer) => {
                        b.hold(job, answer, built, Some(Part::Sql));
                        b.members += 1;
                    }
                    Step::Vanished(answer) => {
                        // The group transaction is gone: earlier SQL members of it run again, alone.
                        b.sql_open = false;
                        for h in b.held.iter_mut().filter(|h| h.part == Some(Part::Sql)) {
                            let (again, built) = budget::scope(outbox.budget(), || run_alone(&mut w, &h.job.work));
                            h.charge = budget::answer_charge(outbox.budget(), &again, built);
                            h.answer = again;
                            h.part = None;
                        }
                        b.hold(job, answer, built, None);
                    }
                    Step::RunAlone => {
                        b.flush(&x, &mut w);
                        let (answer, built) = budget::scope(outbox.budget(), || run_alone(&mut w, &job.work));
                        b.hold(job, answer, built, None);
                        b.flush(&x, &mut w);
                    }
                }
            }
        }
        if b.should_flush() {
            b.flush(&x, &mut w);
        }
    }
    b.flush(&x, &mut w);
}

/// A member's outcome with its answer built.
enum Step {
    Done(ToEnvoy),
    Vanished(ToEnvoy),
    RunAlone,
}

fn map_outcome<T>(o: MemberOutcome<T>, f: impl FnOnce(Result<T, SqliteError>) -> ToEnvoy) -> Step {
    match o {
        MemberOutcome::Done(r) => Step::Done(f(r)),
        MemberOutcome::Vanished(r) => Step::Vanished(f(r)),
        MemberOutcome::RunAlone => Step::RunAlone,
    }
}
