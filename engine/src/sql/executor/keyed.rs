//! v5 requests on the actor's connections: ExecuteV5, ExecV5 and batches as
//! group-commit members with their request keys (`sql::keys`), and READ
//! batches on a reader snapshot.

use super::*;
use crate::sql::batch::{readonly_error, BatchReq};
use crate::sql::keys::{self, KeyedRequest, Lookup};
use crate::sql::v5::{self, Keyed, NO_COST};
use envoy_protocol::ToEnvoy;

/// How a READ batch ended on a reader.
pub enum BatchRead {
    /// Answered (results, or the failing statement's error).
    Done(Result<Vec<ExecuteResult>, SqliteError>),
    /// A DEFERRED batch's statement writes after all: run the whole batch on the writer.
    Bounce,
}

/// What shows that a request wrote: the connection's change total (rows, with
/// triggers) and the schema cookie (DDL). Compared before and after a keyed
/// request to decide whether it is recorded (§9.3 rule 1: it committed something).
fn write_marks(conn: &Connection) -> (u64, i64) {
    let schema = conn
        .prepare_cached("PRAGMA schema_version")
        .and_then(|mut s| s.query_row([], |r| r.get::<_, i64>(0)))
        .unwrap_or(-1);
    (conn.total_changes(), schema)
}

/// The key hooks for other writer-side code of the executor (an interactive
/// transaction's commit with a key): look the key up inside the transaction,
/// and record the whole answer in it right before its COMMIT, so the commit
/// keeps both or neither. Replays are built with `sql::v5::replay_answer`.
impl SqlConn {
    /// Looks `k` up on this connection (the actor's writer, under its lock).
    #[allow(dead_code)] // used by the interactive-transaction part
    pub(super) fn lookup_key(&self, k: &KeyedRequest, settings: &keys::KeySettings) -> Lookup {
        keys::lookup(&self.conn, &self.sandbox, k, settings)
    }

    /// Records `k` → `answer` in the open transaction of this connection.
    #[allow(dead_code)] // used by the interactive-transaction part
    pub(super) fn record_key(
        &self,
        k: &KeyedRequest,
        answer: &ToEnvoy,
        settings: &keys::KeySettings,
    ) -> Result<(), SqliteError> {
        keys::record(&self.conn, &self.sandbox, k, answer, settings)
    }
}

impl Executor {
    /// The request key settings (retention, count, recorded size) of this executor.
    #[allow(dead_code)] // used by the interactive-transaction part
    pub(super) fn key_settings(&self) -> &keys::KeySettings {
        &self.settings.keys
    }

    /// Runs a batch's statements in order on `sc` (the transaction is the
    /// caller's). `read_only`: a statement that would write fails READONLY
    /// before it runs. An error carries the failing statement's index.
    fn run_batch_on_writer(
        &self,
        sc: &mut SqlConn,
        b: &BatchReq,
        read_only: bool,
    ) -> Result<Vec<ExecuteResult>, SqliteError> {
        let mut out = Vec::with_capacity(b.statements.len());
        for (i, s) in b.statements.iter().enumerate() {
            let at = |mut e: SqliteError| {
                e.statement_index = Some(i as u32);
                e.committed = Some(false);
                e
            };
            if read_only {
                let writes = sc.conn.prepare_cached(s.route.statement(&s.sql)).map(|st| !st.readonly());
                if let Ok(true) = writes {
                    return Err(readonly_error(i));
                }
            }
            // WRITE batches report WRITE; READ ones that run here WRITE_FALLBACK.
            let r = self.run_execute(sc, &s.sql, &s.route, &s.params, Some(!read_only));
            match r {
                Some(Ok(x)) => out.push(x),
                Some(Err(e)) => return Err(at(e)),
                None => return Err(at(err(SqliteErrorCode::Internal, "writer refused a statement", None))),
            }
        }
        Ok(out)
    }
}

impl ReadSession<'_> {
    /// Runs a READ batch in this session's snapshot.
    pub fn batch(&mut self, b: &BatchReq) -> BatchRead {
        let mut out = Vec::with_capacity(b.statements.len());
        for (i, s) in b.statements.iter().enumerate() {
            match self.execute(&s.sql, &s.route, &s.params) {
                ExecuteOutcome::Done(Ok(x)) => out.push(x),
                ExecuteOutcome::Done(Err(mut e)) => {
                    e.statement_index = Some(i as u32);
                    e.committed = Some(false);
                    return BatchRead::Done(Err(e));
                }
                ExecuteOutcome::Bounce if b.deferred => return BatchRead::Bounce,
                ExecuteOutcome::Bounce => return BatchRead::Done(Err(readonly_error(i))),
            }
        }
        BatchRead::Done(Ok(out))
    }
}

impl WriterLock<'_> {
    /// Runs `run` as one member of the open group (its own savepoint). With a
    /// key: the key is looked up first (a recorded one is replayed and nothing
    /// runs; an expired or conflicting one is refused), and if the request
    /// committed something its answer (`recorded`) is recorded in the same
    /// savepoint, so the group's commit keeps both or neither.
    fn v5_member<T: Clone>(
        &mut self,
        key: Option<&KeyedRequest>,
        keep_partial: bool,
        run: impl FnOnce(&Executor, &mut SqlConn) -> Result<T, SqliteError>,
        recorded: impl FnOnce(Result<T, SqliteError>) -> ToEnvoy,
    ) -> MemberOutcome<Keyed<T>> {
        let settings = self.x.settings.keys.clone();
        self.member(keep_partial, move |x, sc| {
            let Some(k) = key else { return run(x, sc).map(Keyed::Ran) };
            match keys::lookup(&sc.conn, &sc.sandbox, k, &settings) {
                Lookup::Fresh => {}
                Lookup::Replay(rec) => return Ok(Keyed::Replayed(Box::new(rec))),
                Lookup::Refused(e) => return Err(e),
            }
            let before = write_marks(&sc.conn);
            let r = run(x, sc);
            if sc.conn.is_autocommit() {
                // SQLite rolled the whole group back: nothing to record (the group reruns it).
                return r.map(Keyed::Ran);
            }
            let wrote = write_marks(&sc.conn) != before;
            let committed = match &r {
                Ok(_) => true,
                Err(e) => e.committed == Some(true),
            };
            if committed && wrote {
                if let Err(mut e) = keys::record(&sc.conn, &sc.sandbox, k, &recorded(r.clone()), &settings) {
                    // Undone with the member's savepoint: nothing commits unrecorded.
                    e.committed = None;
                    return Err(e);
                }
            }
            r.map(Keyed::Ran)
        })
    }

    /// An ExecuteV5 (`write`: sent with writer = true) as a member of the open group.
    pub fn execute_v5_member(
        &mut self,
        sql: &str,
        route: &Route,
        params: &[Value],
        write: bool,
        key: Option<&KeyedRequest>,
    ) -> MemberOutcome<Keyed<ExecuteResult>> {
        self.v5_member(
            key,
            false,
            |x, sc| {
                x.run_execute(sc, sql, route, params, Some(write))
                    .unwrap_or_else(|| Err(err(SqliteErrorCode::Internal, "writer refused a statement", None)))
            },
            |r| v5::execute_answer(0, r, NO_COST, None),
        )
    }

    /// An ExecV5 as a member of the open group (statements before a failing one are kept, as in v4).
    pub fn exec_v5_member(&mut self, sql: &str, key: Option<&KeyedRequest>) -> MemberOutcome<Keyed<QueryResult>> {
        self.v5_member(
            key,
            true,
            |x, sc| {
                x.exec_statements(sc, sql, true).map_err(|(mut e, index, _)| {
                    e.committed = Some(index > 0);
                    e.statement_index = Some(index);
                    e
                })
            },
            |r| v5::exec_answer(0, r, NO_COST, None),
        )
    }

    /// A batch as a member of the open group: all its statements in the
    /// member's savepoint; the first failure rolls all of them back. A READ
    /// batch (keyed, or whose actor's reads need the writer) writes nothing; a
    /// DEFERRED one already holds the writer here, so it may write.
    pub fn batch_member(
        &mut self,
        b: &BatchReq,
        key: Option<&KeyedRequest>,
    ) -> MemberOutcome<Keyed<Vec<ExecuteResult>>> {
        self.v5_member(
            key,
            false,
            |x, sc| x.run_batch_on_writer(sc, b, b.read && !b.deferred),
            |r| v5::batch_answer(0, r, NO_COST, None),
        )
    }
}
