//! Protocol v5 interactive transactions (specs/protocol.md §9.5): the async
//! half. The blocking half (what runs on the connections) is
//! `sql::executor::txn`; specs/engine.md ("v5: interactive transactions")
//! describes both.
//!
//! Each open transaction has one driver task that owns its SQL state
//! ([`TxnConn`]) and its in-flight guard (a drain counts open transactions). The
//! read loop hands it the requests naming the transaction through an unbounded
//! channel (bounded in practice by the connection's pending bound, each request
//! holds a pending slot until answered), so they run one at a time in arrival
//! order; each step runs on a blocking thread. Between requests the driver
//! waits for the next one, for its lease (an idle timer restarted after each
//! answer), or for a stop of its executor (a drain past its threshold, a fence).
//! Waiting for the writer (held by another transaction) is an async wait on the
//! executor's release notification, bounded by `max_transaction_wait`: no
//! blocking thread and no read loop waits.
//!
//! The connection's [`Transactions`] table names the open transactions (their
//! channels) and remembers how recent ones ended, so a later request naming one
//! gets TRANSACTION_EXPIRED / TRANSACTION_ABORTED / TRANSACTION_NOT_FOUND (and a
//! rollback of a rolled-back one succeeds). Dropping the table (the connection
//! ended) closes every channel: drivers roll back with CONNECTION_CLOSED and
//! send nothing.

use crate::budget::{self, Charge};
use crate::connection::admission::{self, Pending, PendingGuard, Rejection};
use crate::connection::writer::Outbox;
use crate::generations::InflightGuard;
use crate::metrics::{Metrics, RequestKind, RequestTimer, RouteLabel};
use crate::sql::cost::{self as sqlcost, CostClock, Rows};
use crate::sql::executor::{err, CommitDone, Executor, StatementOutcome, TxnConn, TxnRefusal};
use crate::sql::keys::{self, KeyedRequest, Lookup, RequestDigest};
use crate::sql::route::{Kind, Route};
use crate::state::EngineState;
use envoy_protocol::{
    LimitKind, RequestKeyOutcome, SqlCost, SqliteBeginResult, SqliteCommitResult, SqliteCommitted, SqliteError,
    SqliteErrorCode, SqliteExecuteResult, SqliteFenceMismatch, SqliteRollbackResult, SqliteTransactionMode,
    SqliteTransactionStarted, StopReason, ToEngineSqliteBegin, ToEngineSqliteCommit, ToEngineSqliteRollback,
    ToEngineSqliteTransactionExecute, ToEnvoy, ToEnvoySqliteBeginResponse, ToEnvoySqliteCommitResponse,
    ToEnvoySqliteRollbackResponse, ToEnvoySqliteTransactionEnded, ToEnvoySqliteTransactionExecuteResponse,
    TransactionEndReason, Value,
};
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The request kind in a commit key's digest (`sql::keys::RequestDigest`).
const COMMIT_DIGEST_KIND: &str = "commit";

/// Sets the key outcome of a commit answer (`EXECUTED` for a keyed commit
/// that did not replay: it ran, or was refused, now).
fn with_key_outcome(mut answer: ToEnvoy, keyed: bool) -> ToEnvoy {
    if let ToEnvoy::SqliteCommitResponse(r) = &mut answer {
        r.request_key = keyed.then_some(RequestKeyOutcome::Executed);
    }
    answer
}

/// Ends remembered per connection, so a request naming a recently ended
/// transaction gets the precise answer (expired, aborted, or rolled back);
/// older ones answer TRANSACTION_NOT_FOUND. Bounds the table's memory on a
/// long-lived connection.
const REMEMBERED_ENDS: usize = 4096;

/// The transaction end a drain's stop reason means for the open transactions.
pub fn end_reason(stop: StopReason) -> TransactionEndReason {
    match stop {
        StopReason::EngineShutdown => TransactionEndReason::EngineStopping,
        // Another placement took the actor (on another envoy, or with MOVED on
        // another engine node): it restarts there with a newer generation.
        StopReason::Replaced | StopReason::Moved => TransactionEndReason::Fenced,
        StopReason::Unspecified
        | StopReason::Operator
        | StopReason::EnvoyStopIntent
        | StopReason::EnvoySleepIntent
        | StopReason::EnvoyLost => TransactionEndReason::ActorStopping,
    }
}

/// How a transaction that is no longer open ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// The engine rolled it back (and told the envoy, except CONNECTION_CLOSED).
    Engine(TransactionEndReason),
    /// The envoy rolled it back, or its commit failed (nothing applied).
    Envoy,
    /// It committed.
    Committed,
}

/// A request naming an open transaction, on its way to the driver.
struct Req {
    /// The envoy's request id (the answer carries it).
    request_id: u32,
    /// What to do.
    op: Op,
    /// When it was admitted: its cost's duration, and its writer wait's start.
    started: Started,
    /// Its slot of the connection's pending bound, until answered.
    _pending: PendingGuard,
    /// Its latency sample (`envoy_request_duration_seconds`, kind `transaction`), taken when it is dropped.
    _timer: RequestTimer,
}

/// What a request asks of its transaction.
enum Op {
    /// One statement (checked at admission: one statement, within the limits).
    Execute { sql: String, params: Vec<Value>, route: Route },
    /// Commit, exactly once with a key (checked at admission, `sql::keys`).
    Commit { key: Option<KeyedRequest> },
    /// Roll back.
    Rollback,
}

impl Op {
    fn name(&self) -> OpName {
        match self {
            Op::Execute { .. } => OpName::Execute,
            Op::Commit { key: None } => OpName::Commit,
            Op::Commit { key: Some(_) } => OpName::KeyedCommit,
            Op::Rollback => OpName::Rollback,
        }
    }
}

/// Which answer message a request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpName {
    Execute,
    Commit,
    /// A commit with a request key: its answer always carries a key outcome.
    KeyedCommit,
    Rollback,
}

/// An open transaction as the table knows it.
struct Open {
    /// Its actor: a request naming another actor does not reach it.
    actor_id: String,
    /// Its generation.
    generation: u64,
    /// Where its requests go, in arrival order.
    tx: mpsc::UnboundedSender<Req>,
    /// Its requests' latency route: `read` for a READ transaction.
    route: RouteLabel,
}

/// The table's state.
#[derive(Default)]
struct Inner {
    /// Last id issued (ids start at 1 and are never reused on the connection).
    last_id: u64,
    /// Open transactions by id.
    open: HashMap<u64, Open>,
    /// How recent transactions ended, by id.
    ended: HashMap<u64, Ended>,
    /// Ids of `ended` in the order they ended (the oldest is forgotten first).
    ended_order: VecDeque<u64>,
    /// Set when the connection ended: nothing opens any more.
    closed: bool,
}

impl Inner {
    fn end(&mut self, id: u64, how: Option<Ended>) {
        self.open.remove(&id);
        if let Some(how) = how {
            if self.ended.insert(id, how).is_none() {
                self.ended_order.push_back(id);
            }
            while self.ended_order.len() > REMEMBERED_ENDS {
                if let Some(old) = self.ended_order.pop_front() {
                    self.ended.remove(&old);
                }
            }
        }
    }
}

/// Shared by the connection's table handle and its transactions' drivers.
#[derive(Default)]
struct Table {
    /// Locked briefly by the read loop (lookups, sends) and by drivers (ends).
    inner: Mutex<Inner>,
}

/// One connection's interactive transactions. Dropped with the connection:
/// every open transaction then rolls back (CONNECTION_CLOSED, no message).
#[derive(Default)]
pub struct Transactions {
    /// Shared with the drivers, which record how their transaction ended.
    table: Arc<Table>,
}

impl Drop for Transactions {
    fn drop(&mut self) {
        let mut t = self.table.inner.lock();
        t.closed = true;
        // Dropping the senders ends each driver's channel once it has answered what was queued.
        t.open.clear();
    }
}

/// What the read loop passes about the connection.
pub struct ConnCtx<'a> {
    /// Engine state (config, registry, executors).
    pub state: &'a Arc<EngineState>,
    /// The connection's namespace (requests are checked against it).
    pub namespace: &'a str,
    /// The connection's envoy key (the actor must be placed on it).
    pub envoy_key: &'a str,
    /// Where answers go.
    pub outbox: &'a Outbox,
    /// The connection's pending bound.
    pub pending: &'a Arc<Pending>,
    /// Size of the request's frame (maxRequestBytes).
    pub frame_len: usize,
}

/// A request's cost (`sql::cost`): rows its statements read and wrote, and the
/// time since its admission.
fn cost(started: &Started, rows: Rows) -> SqlCost {
    started.clock.cost(rows)
}

/// When a request was admitted: its cost's clock, and the start of its wait for the writer.
#[derive(Debug, Clone, Copy)]
struct Started {
    /// The cost clock (`durationUs`).
    clock: CostClock,
    /// The same moment as an `Instant`, for the `max_transaction_wait` deadline.
    at: Instant,
}

impl Started {
    fn now() -> Self {
        Self { clock: CostClock::start(), at: Instant::now() }
    }
}

/// A failure answer: a fence mismatch or an error.
enum Failure {
    Fence(SqliteFenceMismatch),
    Error(SqliteError),
}

impl From<Rejection> for Failure {
    fn from(r: Rejection) -> Self {
        match r.to_sqlite() {
            Ok(f) => Failure::Fence(f),
            Err(e) => Failure::Error(e),
        }
    }
}

/// The failure answer to a request of kind `op`.
fn failure_answer(op: OpName, request_id: u32, started: Started, f: Failure) -> ToEnvoy {
    let cost = cost(&started, Rows::default());
    match op {
        OpName::Execute => ToEnvoy::SqliteTransactionExecuteResponse(ToEnvoySqliteTransactionExecuteResponse {
            request_id,
            result: match f {
                Failure::Fence(m) => SqliteExecuteResult::SqliteFenceMismatch(m),
                Failure::Error(e) => SqliteExecuteResult::SqliteError(e),
            },
            cost,
            transaction_end: None,
        }),
        OpName::Commit | OpName::KeyedCommit => ToEnvoy::SqliteCommitResponse(ToEnvoySqliteCommitResponse {
            request_id,
            result: match f {
                Failure::Fence(m) => SqliteCommitResult::SqliteFenceMismatch(m),
                Failure::Error(e) => SqliteCommitResult::SqliteError(e),
            },
            cost,
            // Present exactly when the request had a key (nothing replayed here: EXECUTED).
            request_key: (op == OpName::KeyedCommit).then_some(RequestKeyOutcome::Executed),
        }),
        OpName::Rollback => ToEnvoy::SqliteRollbackResponse(ToEnvoySqliteRollbackResponse {
            request_id,
            result: match f {
                Failure::Fence(m) => SqliteRollbackResult::SqliteFenceMismatch(m),
                Failure::Error(e) => SqliteRollbackResult::SqliteError(e),
            },
            cost,
        }),
    }
}

fn begin_failure(request_id: u32, started: Started, f: Failure) -> ToEnvoy {
    ToEnvoy::SqliteBeginResponse(ToEnvoySqliteBeginResponse {
        request_id,
        result: match f {
            Failure::Fence(m) => SqliteBeginResult::SqliteFenceMismatch(m),
            Failure::Error(e) => SqliteBeginResult::SqliteError(e),
        },
        cost: cost(&started, Rows::default()),
    })
}

fn rolled_back(request_id: u32, started: Started) -> ToEnvoy {
    ToEnvoy::SqliteRollbackResponse(ToEnvoySqliteRollbackResponse {
        request_id,
        result: SqliteRollbackResult::SqliteRolledBack,
        cost: cost(&started, Rows::default()),
    })
}

/// The answer to a request naming a transaction that is not open (`how`: how it
/// ended, if remembered).
fn gone_answer(op: OpName, request_id: u32, started: Started, how: Option<Ended>) -> ToEnvoy {
    let e = |code, message: &str| Failure::Error(err(code, message, Some(false)));
    match (op, how) {
        (OpName::Rollback, Some(Ended::Engine(_) | Ended::Envoy)) => rolled_back(request_id, started),
        (_, Some(Ended::Engine(TransactionEndReason::LeaseExpired))) => failure_answer(
            op,
            request_id,
            started,
            e(SqliteErrorCode::TransactionExpired, "the transaction's lease ran out; it was rolled back"),
        ),
        (
            _,
            Some(Ended::Engine(
                r @ (TransactionEndReason::StatementFailed
                | TransactionEndReason::ActorStopping
                | TransactionEndReason::EngineStopping
                | TransactionEndReason::ConnectionClosed
                | TransactionEndReason::Fenced),
            )),
        ) => failure_answer(
            op,
            request_id,
            started,
            e(
                SqliteErrorCode::TransactionAborted,
                &format!("the engine rolled the transaction back ({})", r.wire_name()),
            ),
        ),
        (_, Some(Ended::Envoy | Ended::Committed) | None) => failure_answer(
            op,
            request_id,
            started,
            e(
                SqliteErrorCode::TransactionNotFound,
                "no open transaction with this id on this connection (never begun, committed, or rolled back)",
            ),
        ),
    }
}

/// Answers a request naming a transaction that is not open here. A keyed
/// commit first looks its key up (a retry after a lost answer, perhaps from
/// another connection): a recorded one is replayed; otherwise it is answered
/// as the transaction's state says.
#[allow(clippy::too_many_arguments)]
fn gone(
    c: &ConnCtx<'_>,
    op: Op,
    request_id: u32,
    started: Started,
    how: Option<Ended>,
    pending: PendingGuard,
    actor_id: &str,
    generation: u64,
) {
    let Op::Commit { key: Some(k) } = op else {
        c.outbox.send(gone_answer(op.name(), request_id, started, how));
        return;
    };
    let state = c.state;
    // The lookup uses the actor's database: counted in flight like any request (a drain
    // waits for it; a stopping actor refuses it, so no executor is made for a stopped one).
    let inflight = match admission::check_and_count(state, c.namespace, c.envoy_key, actor_id, generation) {
        Ok(g) => g,
        Err(rej) => {
            c.outbox.send(with_key_outcome(failure_answer(OpName::Commit, request_id, started, rej.into()), true));
            return;
        }
    };
    let x =
        state.generations.executor_or_create(actor_id, generation, || state.actor_dir(actor_id), &state.exec_settings);
    let outbox = c.outbox.clone();
    tokio::spawn(async move {
        let found = tokio::task::spawn_blocking(move || {
            let _in_use = x.enter().map_err(|m| err(SqliteErrorCode::Overloaded, &m, Some(false)))?;
            Ok::<_, SqliteError>(sqlcost::measure(|| x.lookup_key(&k)))
        })
        .await;
        let answer = match found {
            Ok(Ok((Lookup::Replay(rec), rows))) => {
                crate::sql::v5::replay_answer(request_id, &rec, cost(&started, rows))
            }
            Ok(Ok((Lookup::Fresh, _))) => with_key_outcome(gone_answer(OpName::Commit, request_id, started, how), true),
            Ok(Ok((Lookup::Refused(e), _))) | Ok(Err(e)) => {
                with_key_outcome(failure_answer(OpName::Commit, request_id, started, Failure::Error(e)), true)
            }
            Err(e) => with_key_outcome(
                failure_answer(
                    OpName::Commit,
                    request_id,
                    started,
                    Failure::Error(err(SqliteErrorCode::Internal, &format!("request key lookup failed: {e}"), None)),
                ),
                true,
            ),
        };
        outbox.send(answer);
        drop(pending);
        drop(inflight);
    });
}

/// Placement and generation of a request naming a transaction. Unlike other
/// requests, one for a Stopping actor is let through: its transaction (if
/// open) is what the drain is waiting for, so it may still commit or roll back.
fn check_actor(c: &ConnCtx<'_>, actor_id: &str, generation: u64) -> Result<(), Rejection> {
    admission::check_serving(c.state)?;
    c.state.registry.with(actor_id, |rec| {
        let rec = rec.filter(|r| r.namespace == c.namespace).ok_or(Rejection::NotFound)?;
        if rec.envoy.as_deref() != Some(c.envoy_key) {
            return Err(Rejection::NotPlaced);
        }
        if rec.generation != generation {
            return Err(Rejection::Fence(rec.generation));
        }
        match rec.state {
            crate::actor::registry::ActorState::Starting
            | crate::actor::registry::ActorState::Running
            | crate::actor::registry::ActorState::Stopping => Ok(()),
            crate::actor::registry::ActorState::Stopped => Err(Rejection::NotPlaced),
        }
    })
}

/// The latency route of a transaction's requests: `read` for a READ transaction.
fn route_of(mode: SqliteTransactionMode) -> RouteLabel {
    match mode {
        SqliteTransactionMode::Read => RouteLabel::Read,
        SqliteTransactionMode::Write | SqliteTransactionMode::Deferred => RouteLabel::Write,
    }
}

/// The frame-size check every request passes.
fn check_frame(c: &ConnCtx<'_>) -> Result<(), Rejection> {
    let max = c.state.config.limits.max_request_bytes;
    if c.frame_len > max as usize {
        return Err(Rejection::Limit {
            kind: LimitKind::RequestBytes,
            max: max.into(),
            actual: Some(c.frame_len as u64),
        });
    }
    Ok(())
}

impl Transactions {
    /// `ToEngineSqliteBegin`: admits it and starts the transaction's driver, which answers.
    pub fn begin(&self, c: &ConnCtx<'_>, r: ToEngineSqliteBegin) {
        let started = Started::now();
        let request_id = r.request_id;
        let req = r.request;
        let state = c.state;
        let cfg = &state.config;
        let admitted = (|| -> Result<_, Rejection> {
            let inflight = admission::check_and_count(state, c.namespace, c.envoy_key, &req.actor_id, req.generation)?;
            check_frame(c)?;
            let pending = c.pending.try_acquire(cfg.limits.max_pending_requests)?;
            let mut t = self.table.inner.lock();
            let max = cfg.max_open_transactions;
            if t.closed || t.open.len() >= max as usize {
                return Err(Rejection::Limit {
                    kind: LimitKind::OpenTransactions,
                    max: max.into(),
                    actual: Some(t.open.len() as u64 + 1),
                });
            }
            t.last_id += 1;
            let id = t.last_id;
            let (tx, rx) = mpsc::unbounded_channel();
            let route = route_of(req.mode);
            t.open.insert(id, Open { actor_id: req.actor_id.clone(), generation: req.generation, tx, route });
            Ok((inflight, pending, id, rx))
        })();
        let (inflight, pending, id, rx) = match admitted {
            Ok(a) => a,
            Err(rej) => return c.outbox.send(begin_failure(request_id, started, rej.into())),
        };
        let x = state.generations.executor_or_create(
            &req.actor_id,
            req.generation,
            || state.actor_dir(&req.actor_id),
            &state.exec_settings,
        );
        let lease = Duration::from_millis(req.lease_ms.into())
            .clamp(cfg.min_transaction_lease, cfg.max_transaction_lease.max(cfg.min_transaction_lease));
        let driver = Driver {
            x,
            outbox: c.outbox.clone(),
            table: self.table.clone(),
            id,
            actor_id: req.actor_id,
            generation: req.generation,
            lease,
            max_wait: cfg.max_transaction_wait,
            metrics: state.metrics.clone(),
            _inflight: inflight,
        };
        let timer = state.metrics.request(RequestKind::Transaction, route_of(req.mode));
        let span = tracing::debug_span!("transaction", transaction_id = id);
        tokio::spawn(tracing::Instrument::instrument(
            driver.run(request_id, req.mode, started, (pending, timer), rx),
            span,
        ));
    }

    /// `ToEngineSqliteTransactionExecute`.
    pub fn execute(&self, c: &ConnCtx<'_>, r: ToEngineSqliteTransactionExecute) {
        let req = r.request;
        let statement = req.statement;
        self.naming(c, r.request_id, &req.actor_id, req.generation, req.transaction_id, OpName::Execute, || {
            let params = statement.params.unwrap_or_default();
            admission::check_sql(&c.state.config.limits, &statement.sql, &params)?;
            let route = Route::of_execute(&statement.sql, true).map_err(|m| Rejection::Invalid(m.into()))?;
            match route.kind {
                Kind::Transaction | Kind::Vacuum => Err(Rejection::Invalid(
                    "inside an interactive transaction the engine manages the transaction: BEGIN, COMMIT, END, \
                     ROLLBACK, SAVEPOINT, RELEASE and VACUUM are refused (use Commit / Rollback)"
                        .into(),
                )),
                Kind::Read | Kind::Insert | Kind::Pragma | Kind::Other => {
                    Ok(Op::Execute { sql: statement.sql, params, route })
                }
            }
        });
    }

    /// `ToEngineSqliteCommit`.
    pub fn commit(&self, c: &ConnCtx<'_>, r: ToEngineSqliteCommit) {
        let req = r.request;
        let key = req.request_key;
        let actor_id = req.actor_id.clone();
        let name = if key.is_some() { OpName::KeyedCommit } else { OpName::Commit };
        self.naming(c, r.request_id, &req.actor_id, req.generation, req.transaction_id, name, || {
            let key = match key {
                None => None,
                Some(k) => {
                    // What a commit's key names: a commit on this actor (the transaction id
                    // means nothing on another connection, where a retry comes from).
                    let digest = RequestDigest::new(COMMIT_DIGEST_KIND, &actor_id).finish();
                    Some(keys::admit(k, digest, &c.state.exec_settings.keys).map_err(Rejection::Invalid)?)
                }
            };
            Ok(Op::Commit { key })
        });
    }

    /// `ToEngineSqliteRollback`.
    pub fn rollback(&self, c: &ConnCtx<'_>, r: ToEngineSqliteRollback) {
        let req = r.request;
        self.naming(c, r.request_id, &req.actor_id, req.generation, req.transaction_id, OpName::Rollback, || {
            Ok(Op::Rollback)
        });
    }

    /// Admits a request naming a transaction and hands it to the transaction's
    /// driver, or answers it at once (refused, or the transaction is not open).
    #[allow(clippy::too_many_arguments)]
    fn naming(
        &self,
        c: &ConnCtx<'_>,
        request_id: u32,
        actor_id: &str,
        generation: u64,
        transaction_id: u64,
        name: OpName,
        op: impl FnOnce() -> Result<Op, Rejection>,
    ) {
        let started = Started::now();
        let admitted = (|| -> Result<_, Rejection> {
            check_actor(c, actor_id, generation)?;
            check_frame(c)?;
            let op = op()?;
            let pending = c.pending.try_acquire(c.state.config.limits.max_pending_requests)?;
            Ok((op, pending))
        })();
        let (op, pending) = match admitted {
            Ok(a) => a,
            Err(rej) => return c.outbox.send(failure_answer(name, request_id, started, rej.into())),
        };
        let how = {
            let t = self.table.inner.lock();
            match t.open.get(&transaction_id) {
                Some(open) if open.actor_id == actor_id && open.generation == generation => {
                    let timer = c.state.metrics.request(RequestKind::Transaction, open.route);
                    let req = Req { request_id, op, started, _pending: pending, _timer: timer };
                    // Sent under the table's lock: a driver marks its end under it before
                    // closing its channel, so a send either reaches the driver or sees the end.
                    if let Err(mpsc::error::SendError(req)) = open.tx.send(req) {
                        // Cannot happen (see above); answer as if it had ended unremembered.
                        c.outbox.send(gone_answer(name, req.request_id, req.started, None));
                    }
                    return;
                }
                // Another actor's (or generation's) transaction: unknown for this one.
                Some(_) => None,
                None => t.ended.get(&transaction_id).copied(),
            }
        };
        gone(c, op, request_id, started, how, pending, actor_id, generation);
    }
}

/// Owns one open transaction: runs its requests in order, keeps its lease, ends it.
struct Driver {
    /// The (actor, generation)'s executor.
    x: Arc<Executor>,
    /// The connection's answers.
    outbox: Outbox,
    /// The connection's table (the driver records how the transaction ended).
    table: Arc<Table>,
    /// The transaction's id on its connection.
    id: u64,
    /// Its actor (TransactionEnded names it).
    actor_id: String,
    /// Its generation (TransactionEnded names it).
    generation: u64,
    /// The granted lease: idle time after an answer before the engine rolls it back.
    lease: Duration,
    /// How long a step waits for another transaction to release the writer.
    max_wait: Duration,
    /// Open-transaction gauge and end counters.
    metrics: Arc<Metrics>,
    /// Counts the open transaction in flight: a drain waits for it (up to its threshold).
    _inflight: InflightGuard,
}

/// Why the driver stops waiting for requests.
enum Next {
    /// A request to run.
    Req(Req),
    /// The engine ends it.
    End(TransactionEndReason),
}

/// Runs `f` on a blocking thread with results charged to the connection's
/// budget and rows counted (`sql::cost`). `admit`: take the executor's slot of
/// the open-database cap first (Begin; Err OVERLOADED when there is no room).
/// Later steps skip that: an executor with an open transaction keeps its slot
/// (`try_close_idle` refuses it), so they always run and their `TxnConn` is
/// never dropped unrun. Err INTERNAL: the step panicked.
async fn blocking<R: Send + 'static>(
    x: &Arc<Executor>,
    outbox: &Outbox,
    admit: bool,
    f: impl FnOnce(&Executor) -> R + Send + 'static,
) -> Result<((R, Rows), Option<Charge>), SqliteError> {
    let x = x.clone();
    let budget = outbox.budget().clone();
    let r = tokio::task::spawn_blocking(move || {
        let _in_use = if admit {
            match x.enter() {
                Ok(g) => Some(g),
                Err(message) => return Err(err(SqliteErrorCode::Overloaded, &message, Some(false))),
            }
        } else {
            None
        };
        Ok(budget::scope(&budget, || sqlcost::measure(|| f(&x))))
    })
    .await;
    match r {
        Ok(r) => r,
        Err(e) => Err(err(SqliteErrorCode::Internal, &format!("a transaction step failed: {e}"), None)),
    }
}

/// Waits until no transaction holds the writer, `deadline` passes or the executor's
/// transactions are told to end; returns whether the writer was released.
async fn wait_writer(
    x: &Executor,
    deadline: Instant,
    stops: &mut tokio::sync::watch::Receiver<Option<TransactionEndReason>>,
) -> bool {
    loop {
        let released = x.writer_free().notified();
        tokio::pin!(released);
        released.as_mut().enable();
        if !x.writer_held_by_transaction() {
            return true;
        }
        tokio::select! {
            _ = &mut released => {}
            _ = tokio::time::sleep_until(deadline.into()) => return !x.writer_held_by_transaction(),
            // A stop ends the wait at once (the driver then sees the stop and ends).
            _ = stops.wait_for(Option::is_some) => return false,
        }
    }
}

fn busy_error() -> SqliteError {
    err(
        SqliteErrorCode::TransactionBusy,
        "the actor's writer is held by another interactive transaction for longer than maxTransactionWaitMs; \
         this request did not run",
        Some(false),
    )
}

impl Driver {
    fn send(&self, answer: ToEnvoy, built: Option<Charge>) {
        let charge = budget::answer_charge(self.outbox.budget(), &answer, built);
        self.outbox.send_batch(vec![answer], charge);
    }

    async fn run(
        self,
        request_id: u32,
        mode: SqliteTransactionMode,
        started: Started,
        // The Begin's pending slot and latency timer, until it is answered.
        pending: (PendingGuard, RequestTimer),
        mut rx: mpsc::UnboundedReceiver<Req>,
    ) {
        let mut stops = self.x.transaction_stops();
        let deadline = started.at + self.max_wait;
        let begun = loop {
            match blocking(&self.x, &self.outbox, true, move |x| x.txn_begin(mode)).await {
                Ok(((Ok(t), _), _)) => break Ok(t),
                Ok(((Err(TxnRefusal::WriterBusy), _), _)) => {
                    if !wait_writer(&self.x, deadline, &mut stops).await {
                        if stops.borrow().is_some() {
                            break Err(err(
                                SqliteErrorCode::ActorStopping,
                                "the actor is stopping; the transaction was not begun",
                                Some(false),
                            ));
                        }
                        break Err(busy_error());
                    }
                }
                Ok(((Err(TxnRefusal::Error(e)), _), _)) | Err(e) => break Err(e),
            }
        };
        let mut t = match begun {
            Ok(t) => t,
            Err(e) => {
                // Never opened: its id is unknown from now on (and frees its open slot before the answer leaves).
                self.table.inner.lock().end(self.id, None);
                self.send(begin_failure(request_id, started, Failure::Error(e)), None);
                drop(pending);
                return self.answer_queued(&mut rx, None);
            }
        };
        let lease_ms = u32::try_from(self.lease.as_millis()).unwrap_or(u32::MAX);
        // Counted before the answer leaves: a client that saw it sees the gauge.
        let _open = Metrics::hold(&self.metrics.transactions_open);
        self.send(
            ToEnvoy::SqliteBeginResponse(ToEnvoySqliteBeginResponse {
                request_id,
                result: SqliteBeginResult::SqliteTransactionStarted(SqliteTransactionStarted {
                    transaction_id: self.id,
                    lease_ms,
                }),
                cost: cost(&started, Rows::default()),
            }),
            None,
        );
        drop(pending);
        loop {
            let next = tokio::select! {
                biased;
                s = stops.wait_for(Option::is_some) => {
                    Next::End(s.ok().and_then(|s| *s).unwrap_or(TransactionEndReason::ActorStopping))
                }
                req = rx.recv() => match req {
                    Some(req) => Next::Req(req),
                    None => Next::End(TransactionEndReason::ConnectionClosed),
                },
                _ = tokio::time::sleep(self.lease) => Next::End(TransactionEndReason::LeaseExpired),
            };
            let req = match next {
                Next::Req(req) => req,
                Next::End(reason) => return self.end_by_engine(t, reason, &mut rx).await,
            };
            match req.op {
                Op::Execute { sql, params, route } => {
                    let wait_until = req.started.at + self.max_wait;
                    // Shared by the attempts (a retry after waiting for the writer).
                    let statement = Arc::new((sql, params));
                    // Rows of every attempt (one, or more after waits for the writer).
                    let mut ran = Rows::default();
                    let token = t.token();
                    let (back, outcome) = loop {
                        let statement = statement.clone();
                        let step = blocking(&self.x, &self.outbox, false, move |x| {
                            let mut t = t;
                            let r = x.txn_execute(&mut t, &statement.0, &route, &statement.1);
                            (t, r)
                        })
                        .await;
                        let (((back, r), rows), built) = match step {
                            Ok(s) => s,
                            Err(e) => {
                                // The step panicked and its state is lost: roll back by token.
                                self.abandon(token).await;
                                self.send(
                                    ToEnvoy::SqliteTransactionExecuteResponse(
                                        ToEnvoySqliteTransactionExecuteResponse {
                                            request_id: req.request_id,
                                            result: SqliteExecuteResult::SqliteError(e),
                                            cost: cost(&req.started, ran),
                                            transaction_end: Some(TransactionEndReason::StatementFailed),
                                        },
                                    ),
                                    None,
                                );
                                return self.ended_by_engine(TransactionEndReason::StatementFailed, &mut rx);
                            }
                        };
                        t = back;
                        ran.add(rows);
                        match r {
                            Ok(o) => break (t, Ok((o, built))),
                            Err(TxnRefusal::WriterBusy) => {
                                if !wait_writer(&self.x, wait_until, &mut stops).await {
                                    break (t, Err(busy_error()));
                                }
                            }
                            Err(TxnRefusal::Error(e)) => break (t, Err(e)),
                        }
                    };
                    t = back;
                    match outcome {
                        Ok((StatementOutcome { result, ended }, built)) => {
                            let answer =
                                ToEnvoy::SqliteTransactionExecuteResponse(ToEnvoySqliteTransactionExecuteResponse {
                                    request_id: req.request_id,
                                    result: match result {
                                        Ok(r) => SqliteExecuteResult::ExecuteResult(r),
                                        Err(e) => SqliteExecuteResult::SqliteError(e),
                                    },
                                    cost: cost(&req.started, ran),
                                    transaction_end: ended.then_some(TransactionEndReason::StatementFailed),
                                });
                            if ended {
                                // Over before the answer leaves: a request sent after it sees the end.
                                let how = Ended::Engine(TransactionEndReason::StatementFailed);
                                self.table.inner.lock().end(self.id, Some(how));
                            }
                            self.send(answer, built);
                            drop(req._pending);
                            if ended {
                                return self.end_by_engine(t, TransactionEndReason::StatementFailed, &mut rx).await;
                            }
                        }
                        Err(e) => {
                            self.send(
                                failure_answer(OpName::Execute, req.request_id, req.started, Failure::Error(e)),
                                None,
                            );
                        }
                    }
                }
                Op::Commit { key } => {
                    let keyed = key.is_some();
                    let token = t.token();
                    let r = blocking(&self.x, &self.outbox, false, move |x| x.txn_commit(t, key.as_ref())).await;
                    if r.is_err() {
                        self.abandon(token).await;
                    }
                    let (answer, how) = match r {
                        Ok(((Ok(CommitDone::Committed(changes)), rows), _)) => (
                            ToEnvoy::SqliteCommitResponse(ToEnvoySqliteCommitResponse {
                                request_id: req.request_id,
                                result: SqliteCommitResult::SqliteCommitted(SqliteCommitted { changes }),
                                cost: cost(&req.started, rows),
                                request_key: keyed.then_some(RequestKeyOutcome::Executed),
                            }),
                            Ended::Committed,
                        ),
                        // The key was recorded by another commit: this one ran nothing and was rolled back.
                        Ok(((Ok(CommitDone::Replayed(rec)), rows), _)) => (
                            crate::sql::v5::replay_answer(req.request_id, &rec, cost(&req.started, rows)),
                            Ended::Envoy,
                        ),
                        Ok(((Err(e), _), _)) | Err(e) => (
                            with_key_outcome(
                                failure_answer(OpName::Commit, req.request_id, req.started, Failure::Error(e)),
                                keyed,
                            ),
                            Ended::Envoy,
                        ),
                    };
                    // Recorded before the answer leaves: a request sent after it sees the end.
                    self.table.inner.lock().end(self.id, Some(how));
                    let label = match (&answer, how) {
                        (_, Ended::Committed) => "committed",
                        (ToEnvoy::SqliteCommitResponse(r), _)
                            if r.request_key.is_some_and(|k| k != RequestKeyOutcome::Executed) =>
                        {
                            "commit_replayed"
                        }
                        _ => "commit_failed",
                    };
                    self.metrics.transaction_ended(label);
                    self.send(answer, None);
                    return self.answer_queued(&mut rx, Some(how));
                }
                Op::Rollback => {
                    let token = t.token();
                    if blocking(&self.x, &self.outbox, false, move |x| x.txn_rollback(t)).await.is_err() {
                        self.abandon(token).await;
                    }
                    self.table.inner.lock().end(self.id, Some(Ended::Envoy));
                    self.metrics.transaction_ended("rolled_back");
                    self.send(rolled_back(req.request_id, req.started), None);
                    return self.answer_queued(&mut rx, Some(Ended::Envoy));
                }
            }
        }
    }

    /// Rolls back by token a transaction whose step panicked (its `TxnConn` is lost).
    async fn abandon(&self, token: u64) {
        tracing::error!(transaction_id = self.id, "a transaction step failed; rolling it back by its token");
        let x = self.x.clone();
        let _ = tokio::task::spawn_blocking(move || x.txn_abandon(token)).await;
    }

    /// Rolls the transaction back on the engine's initiative and tells the envoy
    /// (except when the connection is gone).
    async fn end_by_engine(self, t: TxnConn, reason: TransactionEndReason, rx: &mut mpsc::UnboundedReceiver<Req>) {
        let token = t.token();
        if blocking(&self.x, &self.outbox, false, move |x| x.txn_rollback(t)).await.is_err() {
            self.abandon(token).await;
        }
        self.ended_by_engine(reason, rx);
    }

    /// Records an end the engine decided (the transaction is rolled back) and tells the envoy.
    fn ended_by_engine(&self, reason: TransactionEndReason, rx: &mut mpsc::UnboundedReceiver<Req>) {
        let how = Ended::Engine(reason);
        self.table.inner.lock().end(self.id, Some(how));
        self.metrics.transaction_ended(reason.wire_name());
        tracing::debug!(transaction_id = self.id, reason = reason.wire_name(), "transaction ended by the engine");
        match reason {
            TransactionEndReason::ConnectionClosed => {}
            TransactionEndReason::LeaseExpired
            | TransactionEndReason::StatementFailed
            | TransactionEndReason::ActorStopping
            | TransactionEndReason::EngineStopping
            | TransactionEndReason::Fenced => {
                self.send(
                    ToEnvoy::SqliteTransactionEnded(ToEnvoySqliteTransactionEnded {
                        actor_id: self.actor_id.clone(),
                        generation: self.generation,
                        transaction_id: self.id,
                        reason,
                    }),
                    None,
                );
            }
        }
        self.answer_queued(rx, Some(how));
    }

    /// Answers the requests that reached the channel before it closed (the
    /// table already records the end, so nothing more arrives).
    fn answer_queued(&self, rx: &mut mpsc::UnboundedReceiver<Req>, how: Option<Ended>) {
        rx.close();
        while let Ok(req) = rx.try_recv() {
            self.send(gone_answer(req.op.name(), req.request_id, req.started, how), None);
        }
    }
}
