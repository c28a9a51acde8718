//! Runs a connection's SQL/KV work off the read loop.
//!
//! Per the measured perf facts, a thread hop per request caps pipelined
//! throughput at ≈6 % of the transport; one hop per *batch* recovers it. So:
//! each actor has a FIFO queue on this connection; a lane (one blocking
//! thread) takes every consecutive queued request that can share it as ONE
//! batch, and the batch's answers go to the writer together (one flush). When
//! a batch ends, the same lane takes what queued up meanwhile, without a new hop.
//!
//! Permits: the connection has `permits_per_connection` (default 32) blocking
//! slots. Fairness: one actor holds at most its writer lane plus
//! `reader_lanes_per_actor` reader lanes; waiting actors are served
//! round-robin, and a lane yields its permit when others wait for one, so a
//! busy actor cannot hold every permit.
//!
//! Ordering: a read never starts while an earlier request of the same actor
//! is still on the writer lane, so pipelined write-then-read sees the write.

use super::admission::PendingGuard;
use super::writer::Outbox;
use crate::budget::{self, Charge};
use crate::generations::InflightGuard;
use crate::sql::cost;
use crate::sql::executor::BatchRead;
use crate::sql::executor::{ExecuteOutcome, Executor};
use crate::sql::route::Lane;
use crate::sql::v5::{self, V5Req};
use envoy_protocol::{
    KvRequestData, SqliteExecResult, SqliteExecuteResult, ToEnvoy, ToEnvoyKvResponse, ToEnvoySqliteExecResponse,
    ToEnvoySqliteExecuteResponse, Value,
};
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod park;

/// A busy reader lane that started no batch for this long counts as stuck on a
/// slow statement, and another reader lane may open for the actor. Extra lanes
/// for quick reads only add thread contention (measured: 1 lane serves
/// pipelined point SELECTs ≈1.6× faster than 3 on 2 cores).
const SLOW_LANE: Duration = Duration::from_millis(2);

/// How long a lane that ran out of work waits for more of its actor's requests
/// before it gives its thread back (see `run_lane`).
const LINGER: Duration = Duration::from_micros(50);

/// Within a batch, answers already built are sent early once this long passed
/// since the last send, so a slow statement does not hold back quick answers
/// before it, while quick batches still leave as one send (one flush).
const EARLY_SEND_AFTER: Duration = Duration::from_millis(2);

/// What a job does.
pub enum Work {
    Exec {
        request_id: u32,
        sql: String,
    },
    /// One statement; `route` was decided at admission.
    Execute {
        request_id: u32,
        sql: String,
        params: Vec<Value>,
        write: bool,
        route: crate::sql::route::Route,
    },
    Kv {
        request_id: u32,
        data: KvRequestData,
    },
    /// v5 Execute (`write`: writer = true); answered with a cost and the key outcome.
    ExecuteV5 {
        /// Echoed in the answer.
        request_id: u32,
        /// The statement's text.
        sql: String,
        /// Its positional parameters.
        params: Vec<Value>,
        /// Sent with writer = true (as ExecuteWrite).
        write: bool,
        /// Decided at admission (a keyed request is routed to the writer).
        route: crate::sql::route::Route,
        /// Cost clock and request key.
        v5: V5Req,
    },
    /// v5 Exec; answered with a cost and the key outcome.
    ExecV5 {
        /// Echoed in the answer.
        request_id: u32,
        /// The statements.
        sql: String,
        /// Cost clock and request key.
        v5: V5Req,
    },
    /// v5 atomic batch (`sql::batch`).
    Batch {
        /// Echoed in the answer.
        request_id: u32,
        /// The admitted statements and mode.
        batch: crate::sql::batch::BatchReq,
        /// Cost clock and request key.
        v5: V5Req,
    },
}

impl Work {
    /// The v5 part of the request (None for v4 requests and KV).
    pub fn v5(&self) -> Option<&V5Req> {
        match self {
            Work::ExecuteV5 { v5, .. } | Work::ExecV5 { v5, .. } | Work::Batch { v5, .. } => Some(v5),
            Work::Exec { .. } | Work::Execute { .. } | Work::Kv { .. } => None,
        }
    }

    /// Moving to the writer after a reader found it writes: a DEFERRED batch then runs as WRITE.
    fn into_writer(self) -> Self {
        match self {
            Work::Batch { request_id, mut batch, v5 } => {
                if batch.deferred {
                    batch.read = false;
                }
                Work::Batch { request_id, batch, v5 }
            }
            other => other,
        }
    }
}

/// An accepted request waiting for (or holding) a lane.
pub struct Job {
    /// What to run.
    pub work: Work,
    /// The (actor, generation) executor, resolved at acceptance.
    pub executor: Arc<Executor>,
    /// Reader for read candidates, Writer otherwise (or after a bounce).
    pub lane: Lane,
    /// Times it from admission (`envoy_request_duration_seconds`). Declared before
    /// `inflight` so it drops first: once the in-flight count shows a request
    /// answered, its latency sample is in.
    pub timer: crate::metrics::RequestTimer,
    /// Counts this request until its answer is handed to the writer.
    #[expect(dead_code, reason = "held for its Drop: the count falls when the job is done")]
    pub inflight: InflightGuard,
    /// Counts it against the connection's pending bound.
    #[expect(dead_code, reason = "held for its Drop: the connection's pending count falls when the job is done")]
    pub pending: PendingGuard,
    /// When it first found the actor's writer held by an interactive transaction
    /// (None: never): it fails with TRANSACTION_BUSY once it waited
    /// `max_transaction_wait` from then (see `park.rs`).
    pub parked_at: Option<Instant>,
}

/// What admission hands a request that may run: its executor and its two guards.
pub(crate) type Admitted = (Arc<Executor>, InflightGuard, PendingGuard);

impl Job {
    /// A job for an admitted request, queued on `lane` and timed by `timer`.
    pub(crate) fn admitted(work: Work, lane: Lane, timer: crate::metrics::RequestTimer, admitted: Admitted) -> Job {
        let (executor, inflight, pending) = admitted;
        Job { work, executor, lane, timer, inflight, pending, parked_at: None }
    }

    /// A DEBUG span naming this request: its actor, request id and kind. At the
    /// default info level it is disabled and costs a level check; no SQL in it.
    pub(crate) fn span(&self) -> tracing::Span {
        let (request_id, kind) = match &self.work {
            Work::Exec { request_id, .. } => (*request_id, "exec"),
            Work::Execute { request_id, write: false, .. } => (*request_id, "execute"),
            Work::Execute { request_id, write: true, .. } => (*request_id, "execute_write"),
            Work::Kv { request_id, .. } => (*request_id, "kv"),
            Work::ExecuteV5 { request_id, write: false, .. } => (*request_id, "execute_v5"),
            Work::ExecuteV5 { request_id, write: true, .. } => (*request_id, "execute_write_v5"),
            Work::ExecV5 { request_id, .. } => (*request_id, "exec_v5"),
            Work::Batch { request_id, .. } => (*request_id, "batch"),
        };
        tracing::debug_span!("request", actor_id = %self.executor.actor_id, request_id, kind)
    }

    /// The lane this job would take now (a read goes to the writer while a transaction is open there).
    fn lane_now(&self) -> Lane {
        match self.lane {
            Lane::Reader if !self.executor.in_txn() && !self.executor.reads_need_writer() => Lane::Reader,
            Lane::Reader | Lane::Writer => Lane::Writer,
        }
    }
}

/// Queue key: the address of the (actor, generation)'s executor. Unique while any
/// job holds the executor, which is as long as the queue exists; no allocation per job.
type QueueKey = usize;

fn key_of(job: &Job) -> QueueKey {
    Arc::as_ptr(&job.executor) as usize
}

#[derive(Default)]
struct ActorQueue {
    /// Accepted jobs not started yet, in arrival order.
    pending: VecDeque<Job>,
    /// A batch runs on the writer lane.
    writer_busy: bool,
    /// Batches running on reader lanes.
    readers_busy: usize,
    /// Whether the key is in the round-robin `ready` list.
    in_ready: bool,
    /// The front job is a write waiting for an interactive transaction to release
    /// the actor's writer: no lane starts for this actor until a waiter (`park.rs`)
    /// clears it.
    parked: bool,
    /// When a reader lane of this actor last started a batch: another reader
    /// lane opens only if the busy ones made no progress for `SLOW_LANE`.
    reader_progress: Option<Instant>,
}

/// Scheduler parameters.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Blocking permits of the connection.
    pub permits: usize,
    /// Reader lanes one actor may hold at once.
    pub reader_lanes: usize,
    /// Most jobs in one batch.
    pub max_batch: usize,
    /// Bounds of a group commit on the writer lane.
    pub group: crate::sql::group::GroupLimits,
    /// How long a write waits for an interactive transaction holding its actor's writer.
    pub max_transaction_wait: Duration,
    /// The connection's protocol version (which error a write that waited too long gets).
    pub version: u16,
}

/// A batch to start on a blocking thread.
struct Launch {
    /// The actor queue the lane serves.
    key: QueueKey,
    /// Writer or reader lane.
    lane: Lane,
    /// First batch to run.
    batch: Vec<Job>,
}

/// Queues and permits of one connection.
struct State {
    /// Per-actor queues with waiting or running work.
    queues: HashMap<QueueKey, ActorQueue>,
    /// Actors with waiting work, served round-robin.
    ready: VecDeque<QueueKey>,
    /// Permits not held by a running lane.
    free: usize,
}

struct Shared {
    /// Permits, lanes, batch size.
    cfg: SchedulerConfig,
    /// Answers go to the connection's writer.
    outbox: Outbox,
    /// Runtime whose blocking pool runs the lanes.
    runtime: tokio::runtime::Handle,
    /// Queues and permits, locked briefly by the read loop and lanes.
    state: Mutex<State>,
    /// The connection's `envoy` span (conn id, namespace, envoy key): lanes run on
    /// blocking threads, which do not inherit it, so each lane enters it.
    span: tracing::Span,
}

/// The connection's scheduler. The read loop submits jobs; blocking threads run
/// lanes. A lane that finishes a batch takes the next batch of the same lane
/// from its actor's queue without another hop (requests that arrived while it
/// ran), and only releases its permit when the queue has nothing for it or
/// another actor waits for a permit. Nothing runs on the read loop but a short
/// locked enqueue. Lanes hold the shared state, so accepted work completes even
/// after the read loop ended.
pub struct Scheduler {
    /// Shared with running lanes, which outlive the read loop if needed.
    shared: Arc<Shared>,
}

impl Scheduler {
    pub fn new(cfg: SchedulerConfig, outbox: Outbox) -> Self {
        let free = cfg.permits;
        Self {
            shared: Arc::new(Shared {
                cfg,
                outbox,
                runtime: tokio::runtime::Handle::current(),
                state: Mutex::new(State { queues: HashMap::new(), ready: VecDeque::new(), free }),
                span: tracing::Span::current(),
            }),
        }
    }

    /// Queues an accepted job and starts a lane for it if one is free.
    pub fn submit(&self, job: Job) {
        let launches = {
            let mut st = self.shared.state.lock();
            st.enqueue(job, false);
            st.dispatch(&self.shared.cfg)
        };
        for l in launches {
            spawn_lane(self.shared.clone(), l);
        }
    }
}

impl State {
    fn enqueue(&mut self, job: Job, front: bool) {
        let key = key_of(&job);
        let q = self.queues.entry(key).or_default();
        if front {
            q.pending.push_front(job);
        } else {
            q.pending.push_back(job);
        }
        if !q.in_ready {
            q.in_ready = true;
            self.ready.push_back(key);
        }
    }

    /// Starts what can start, round-robin over waiting actors.
    fn dispatch(&mut self, cfg: &SchedulerConfig) -> Vec<Launch> {
        let mut out = Vec::new();
        let mut rounds = self.ready.len();
        while rounds > 0 && self.free > 0 {
            rounds -= 1;
            let Some(key) = self.ready.pop_front() else { break };
            let Some(q) = self.queues.get_mut(&key) else { continue };
            q.in_ready = false;
            while self.free > 0 {
                let Some((lane, batch)) = take_batch(q, cfg) else { break };
                self.free -= 1;
                out.push(Launch { key, lane, batch });
            }
            if q.pending.is_empty() {
                if !q.writer_busy && q.readers_busy == 0 {
                    self.queues.remove(&key);
                }
            } else {
                // Still waiting (its lane is busy or permits ran out): back of the round-robin.
                q.in_ready = true;
                self.ready.push_back(key);
            }
        }
        out
    }
}

/// Takes the next batch this actor may start on a new lane now, if any.
fn take_batch(q: &mut ActorQueue, cfg: &SchedulerConfig) -> Option<(Lane, Vec<Job>)> {
    let lane = q.pending.front()?.lane_now();
    match lane {
        Lane::Writer if q.writer_busy || q.parked => return None,
        Lane::Reader if q.writer_busy || q.readers_busy >= cfg.reader_lanes => return None,
        Lane::Reader if q.readers_busy > 0 && q.reader_progress.is_some_and(|t| t.elapsed() < SLOW_LANE) => {
            return None
        }
        Lane::Writer | Lane::Reader => {}
    }
    let batch = take_run(q, lane, cfg.max_batch);
    match lane {
        Lane::Writer => q.writer_busy = true,
        Lane::Reader => {
            q.readers_busy += 1;
            q.reader_progress = Some(Instant::now());
        }
    }
    Some((lane, batch))
}

/// Pops the consecutive jobs at the front that run on `lane`.
fn take_run(q: &mut ActorQueue, lane: Lane, max: usize) -> Vec<Job> {
    let mut batch = Vec::new();
    while batch.len() < max && q.pending.front().is_some_and(|j| j.lane_now() == lane) {
        batch.extend(q.pending.pop_front());
    }
    batch
}

fn spawn_lane(shared: Arc<Shared>, launch: Launch) {
    let runtime = shared.runtime.clone();
    runtime.spawn_blocking(move || run_lane(shared, launch));
}

/// Runs batches on one lane until its actor's queue has nothing more for it.
fn run_lane(shared: Arc<Shared>, launch: Launch) {
    let Launch { key, lane, mut batch } = launch;
    let _conn_span = shared.span.enter();
    let cfg = &shared.cfg;
    'batches: loop {
        let (bounced, parked) = run_batch(&shared.outbox, lane, batch, cfg);
        // Linger: the next request of a client that waits for each answer arrives about
        // one round trip later; picking it up here saves parking this thread and waking
        // another for it (a thread wake costs more than the SQL on this class of machine).
        if bounced.is_empty() && parked.is_empty() {
            let lingered = Instant::now();
            while lingered.elapsed() < LINGER {
                std::thread::yield_now();
                let mut st = shared.state.lock();
                let others_wait = st.free == 0 && st.ready.iter().any(|k| *k != key);
                if others_wait {
                    break;
                }
                if let Some(q) = st.queues.get_mut(&key) {
                    if q.pending.front().is_some_and(|j| j.lane_now() == lane)
                        && (lane == Lane::Writer || !q.writer_busy)
                        && !q.parked
                    {
                        batch = take_run(q, lane, cfg.max_batch);
                        if lane == Lane::Reader {
                            q.reader_progress = Some(Instant::now());
                        }
                        continue 'batches;
                    }
                }
            }
        }
        let launches = {
            let mut st = shared.state.lock();
            for job in bounced.into_iter().rev() {
                st.enqueue(job, true);
            }
            let park_on = parked.first().map(|j| j.executor.clone());
            if let Some(x) = &park_on {
                park::park(&mut st, key, parked);
                park::spawn_waiter(shared.clone(), key, x.clone());
            }
            let others_wait = st.free == 0 && st.ready.iter().any(|k| *k != key);
            let Some(q) = st.queues.get_mut(&key) else {
                // Cannot happen: a queue with a busy lane is never removed.
                st.free += 1;
                return;
            };
            let may_continue = !others_wait
                && !q.parked
                && q.pending.front().is_some_and(|j| j.lane_now() == lane)
                && (lane == Lane::Writer || !q.writer_busy);
            if may_continue {
                batch = take_run(q, lane, cfg.max_batch);
                if lane == Lane::Reader {
                    q.reader_progress = Some(Instant::now());
                }
                continue 'batches;
            }
            match lane {
                Lane::Writer => q.writer_busy = false,
                Lane::Reader => q.readers_busy -= 1,
            }
            if !q.in_ready {
                q.in_ready = true;
                st.ready.push_back(key);
            }
            st.free += 1;
            st.dispatch(cfg)
        };
        for l in launches {
            spawn_lane(shared.clone(), l);
        }
        return;
    }
}

/// Runs one batch, sends its answers (early if the batch runs long), and
/// returns the jobs that must move to the writer, and the writes that must wait
/// for an interactive transaction holding the writer (parked).
fn run_batch(outbox: &Outbox, lane: Lane, batch: Vec<Job>, cfg: &SchedulerConfig) -> (Vec<Job>, Vec<Job>) {
    if lane == Lane::Writer {
        // Writes commit together (one transaction, one fsync); see sql/group.rs.
        let parked = crate::sql::group::run_writer_batch(outbox, batch, &cfg.group);
        return (Vec::new(), parked);
    }
    let mut last_send = Instant::now();
    let mut answers = Vec::with_capacity(batch.len());
    // What the answers not sent yet hold on the connection's (and engine's) budget.
    let mut charge = Charge::default();
    let mut answered: Vec<Job> = Vec::with_capacity(batch.len());
    let mut bounced = Vec::new();
    // One reader and one WAL snapshot for the whole batch (see ReadSession), with one
    // admission to the open-database cap.
    let Some(x) = batch.first().map(|j| j.executor.clone()) else { return (bounced, Vec::new()) };
    let in_use = x.enter();
    let mut reads = in_use.is_ok().then(|| x.read_session());
    let mut jobs = batch.into_iter();
    while let Some(job) = jobs.next() {
        let _request_span = job.span().entered();
        // Results built by the job are charged to this connection (see budget::scope).
        let (answer, built) = budget::scope(outbox.budget(), || match (&mut reads, &job.work) {
            (Some(rs), Work::Execute { request_id, sql, params, route, .. }) => {
                let result = match rs.execute(sql, route, params) {
                    ExecuteOutcome::Bounce => return None,
                    ExecuteOutcome::Done(Ok(r)) => SqliteExecuteResult::ExecuteResult(r),
                    ExecuteOutcome::Done(Err(e)) => SqliteExecuteResult::SqliteError(e),
                };
                Some(ToEnvoy::SqliteExecuteResponse(ToEnvoySqliteExecuteResponse { request_id: *request_id, result }))
            }
            (Some(rs), Work::ExecuteV5 { request_id, sql, params, route, v5, .. }) => {
                let (outcome, rows) = cost::measure(|| rs.execute(sql, route, params));
                let r = match outcome {
                    ExecuteOutcome::Bounce => return None,
                    ExecuteOutcome::Done(r) => r,
                };
                Some(v5::execute_answer(*request_id, r, v5.clock.cost(rows), v5.executed()))
            }
            (Some(rs), Work::Batch { request_id, batch, v5 }) => {
                let (outcome, rows) = cost::measure(|| rs.batch(batch));
                let r = match outcome {
                    BatchRead::Bounce => return None,
                    BatchRead::Done(r) => r,
                };
                Some(v5::batch_answer(*request_id, r, v5.clock.cost(rows), v5.executed()))
            }
            _ => run_job(&job, lane),
        });
        match answer {
            Some(answer) => {
                // An error answer releases whatever its job had built before failing.
                charge.merge(budget::answer_charge(outbox.budget(), &answer, built));
                answers.push(answer);
                answered.push(job);
            }
            None => {
                // It writes after all: it and every later read wait for the writer
                // (a read never runs before an earlier request that writes).
                let timer = job.timer.rerouted(crate::metrics::RouteLabel::Write);
                bounced.push(Job { lane: Lane::Writer, timer, work: job.work.into_writer(), ..job });
                bounced.extend(jobs.by_ref());
            }
        }
        if last_send.elapsed() > EARLY_SEND_AFTER && !answers.is_empty() {
            outbox.send_batch(std::mem::take(&mut answers), std::mem::take(&mut charge));
            answered.clear(); // drops their in-flight guards: answered
            last_send = Instant::now();
        }
    }
    drop(reads);
    drop(in_use);
    outbox.send_batch(answers, charge);
    drop(answered);
    (bounced, Vec::new())
}

/// Runs one job on `lane`; None means "not read-only: move it to the writer".
pub(crate) fn run_job(job: &Job, lane: Lane) -> Option<ToEnvoy> {
    let x = &job.executor;
    // In use for the whole job: the open-database cap cannot close it meanwhile.
    let _in_use = match x.enter() {
        Ok(g) => g,
        Err(message) => return Some(overloaded(&job.work, message)),
    };
    Some(match &job.work {
        Work::Execute { request_id, sql, params, write, route } => {
            let result = match x.execute(lane, sql, route, params, *write) {
                ExecuteOutcome::Bounce => return None,
                ExecuteOutcome::Done(Ok(r)) => SqliteExecuteResult::ExecuteResult(r),
                ExecuteOutcome::Done(Err(e)) => SqliteExecuteResult::SqliteError(e),
            };
            ToEnvoy::SqliteExecuteResponse(ToEnvoySqliteExecuteResponse { request_id: *request_id, result })
        }
        Work::Exec { request_id, sql } => {
            let result = match x.exec(sql) {
                Ok(r) => SqliteExecResult::QueryResult(r),
                Err(e) => SqliteExecResult::SqliteError(e),
            };
            ToEnvoy::SqliteExecResponse(ToEnvoySqliteExecResponse { request_id: *request_id, result })
        }
        Work::Kv { request_id, data } => {
            ToEnvoy::KvResponse(ToEnvoyKvResponse { request_id: *request_id, data: x.kv(data) })
        }
        Work::ExecuteV5 { request_id, sql, params, write, route, v5 } if lane == Lane::Reader => {
            let (outcome, rows) = cost::measure(|| x.execute(lane, sql, route, params, *write));
            let r = match outcome {
                ExecuteOutcome::Bounce => return None,
                ExecuteOutcome::Done(r) => r,
            };
            v5::execute_answer(*request_id, r, v5.clock.cost(rows), v5.executed())
        }
        Work::Batch { request_id, batch, v5 } if lane == Lane::Reader => {
            let (outcome, rows) = cost::measure(|| x.read_session().batch(batch));
            let r = match outcome {
                BatchRead::Bounce => return None,
                BatchRead::Done(r) => r,
            };
            v5::batch_answer(*request_id, r, v5.clock.cost(rows), v5.executed())
        }
        // On the writer, alone (its own transaction, with its key).
        Work::ExecuteV5 { .. } | Work::ExecV5 { .. } | Work::Batch { .. } => {
            crate::sql::group::run_v5_alone(x, &job.work)
        }
    })
}

/// The OVERLOADED answer to `work` (the open-database cap had no room).
fn overloaded(work: &Work, message: String) -> ToEnvoy {
    let sql = || crate::sql::executor::err(envoy_protocol::SqliteErrorCode::Overloaded, &message, Some(false));
    match work {
        Work::Execute { request_id, .. } => ToEnvoy::SqliteExecuteResponse(ToEnvoySqliteExecuteResponse {
            request_id: *request_id,
            result: SqliteExecuteResult::SqliteError(sql()),
        }),
        Work::Exec { request_id, .. } => ToEnvoy::SqliteExecResponse(ToEnvoySqliteExecResponse {
            request_id: *request_id,
            result: SqliteExecResult::SqliteError(sql()),
        }),
        Work::Kv { request_id, .. } => ToEnvoy::KvResponse(ToEnvoyKvResponse {
            request_id: *request_id,
            data: crate::kv::kv_error(envoy_protocol::KvErrorCode::Overloaded, message.clone()),
        }),
        Work::ExecuteV5 { request_id, v5, .. } => {
            v5::execute_answer(*request_id, Err(sql()), v5.clock.cost(cost::Rows::default()), v5.executed())
        }
        Work::ExecV5 { request_id, v5, .. } => {
            v5::exec_answer(*request_id, Err(sql()), v5.clock.cost(cost::Rows::default()), v5.executed())
        }
        Work::Batch { request_id, v5, .. } => {
            v5::batch_answer(*request_id, Err(sql()), v5.clock.cost(cost::Rows::default()), v5.executed())
        }
    }
}
