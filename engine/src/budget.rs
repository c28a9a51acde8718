//! Memory accounting for answers: what a connection has queued toward its
//! socket, and what the whole engine holds in results.
//!
//! Two budgets, both counted in bytes and both carried by one RAII [`Charge`]:
//!
//! - [`ConnBudget`], one per connection: every answer queued toward the socket is
//!   charged from the moment it is built (results) or queued (everything else)
//!   until the writer has flushed it. Past the limit, results are refused with
//!   OVERLOADED and the read loop stops reading the socket until the writer has
//!   flushed enough (see `connection::Conn::read_loop`).
//! - [`ResultBudget`], one per engine: the bytes of SQL rows and KV entries held,
//!   from the first row copied until the answer is flushed. Past the limit,
//!   results are refused with OVERLOADED.
//!
//! Small answers (errors, acks, pings, commands) are charged to the connection
//! without a check ([`Charge::force`]): refusing them could leave a request
//! unanswered, and a connection could then never drain. They are bounded anyway:
//! the read loop stops reading once the connection's budget is full, so no new
//! request can ask for one.
//!
//! Results are built on a scheduler lane (a blocking thread) deep inside the
//! executor; rather than thread a budget through every executor function, the
//! lane opens a [`scope`] for the job it runs, and [`ResultCharge`] (used while
//! rows or KV entries are copied) finds the connection's budget there. Charges are
//! taken in chunks of [`CHUNK`] bytes, so building a result costs one atomic
//! operation per chunk, not per value.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::Notify;

/// Bytes a result builder accumulates before charging them to the budgets.
pub const CHUNK: usize = 64 * 1024;

/// The engine-wide budget of result bytes.
#[derive(Debug)]
pub struct ResultBudget {
    /// Bytes that may be held at once (`Config::max_result_memory_bytes`).
    limit: usize,
    /// Bytes held now.
    used: AtomicUsize,
    /// Highest `used` seen (observability: tests assert it never passed `limit`).
    peak: AtomicUsize,
}

impl ResultBudget {
    pub fn new(limit: usize) -> Self {
        Self { limit, used: AtomicUsize::new(0), peak: AtomicUsize::new(0) }
    }

    /// Takes `n` bytes if they fit under the limit.
    fn try_take(&self, n: usize) -> bool {
        let taken = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| u.checked_add(n).filter(|&t| t <= self.limit))
            .map(|prev| prev + n);
        match taken {
            Ok(now) => {
                self.peak.fetch_max(now, Ordering::AcqRel);
                true
            }
            Err(_) => false,
        }
    }

    fn give_back(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// Highest number of bytes held at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Acquire)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }
}

/// One connection's budget of bytes queued toward its socket.
#[derive(Debug)]
pub struct ConnBudget {
    /// The engine-wide result budget every result of this connection is also charged to.
    engine: Arc<ResultBudget>,
    /// Bytes that may be queued (`Config::max_connection_outbox_bytes`).
    limit: usize,
    /// Bytes queued now (built or queued, not yet flushed).
    used: AtomicUsize,
    /// Bytes released so far: the writer's progress, which tells a peer that reads
    /// slowly from one that does not read at all while the read loop is paused.
    released: AtomicU64,
    /// Set when a result was refused for want of room here: the budget counts as
    /// full (the read loop pauses) until `used` drops below half the limit, so a
    /// connection whose answers just missed fitting also stops being read, and
    /// reading resumes with room for more than one answer.
    saturated: AtomicBool,
    /// Woken when the budget stops being full (the paused read loop waits on it).
    below_limit: Notify,
}

/// Why a result was refused: which budget was full, and its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The connection's outbox budget (`max_connection_outbox_bytes`).
    Connection(usize),
    /// The engine's result memory budget (`max_result_memory_bytes`).
    Engine(usize),
}

impl Refused {
    /// A clear message naming the budget.
    pub fn message(self) -> String {
        match self {
            Refused::Connection(limit) => format!(
                "the result would exceed this connection's budget of {limit} bytes queued toward the socket \
                 (max_connection_outbox_bytes): read the answers already sent, then retry"
            ),
            Refused::Engine(limit) => format!(
                "the result would exceed the engine's budget of {limit} bytes for results being built or sent \
                 (max_result_memory_bytes): retry later"
            ),
        }
    }

    /// The SQL answer (OVERLOADED; nothing about the statement's effect is known here,
    /// the caller sets `committed`).
    pub fn sqlite_error(self) -> envoy_protocol::SqliteError {
        crate::sql::executor::err(envoy_protocol::SqliteErrorCode::Overloaded, &self.message(), Some(false))
    }

    /// The KV answer (OVERLOADED).
    pub fn kv_error(self) -> envoy_protocol::KvResponseData {
        crate::kv::kv_error(envoy_protocol::KvErrorCode::Overloaded, self.message())
    }
}

impl ConnBudget {
    pub fn new(engine: Arc<ResultBudget>, limit: usize) -> Arc<Self> {
        Arc::new(Self {
            engine,
            limit,
            used: AtomicUsize::new(0),
            released: AtomicU64::new(0),
            saturated: AtomicBool::new(false),
            below_limit: Notify::new(),
        })
    }

    /// Bytes queued now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// Whether the connection has queued as much as it may (or a result just did
    /// not fit and it has not drained to half since): its read loop pauses.
    pub fn is_full(&self) -> bool {
        self.saturated.load(Ordering::SeqCst) || self.used.load(Ordering::SeqCst) >= self.limit
    }

    /// Clears `saturated` once `used` is below half the limit, waking the read loop.
    /// Both sides (a refusal setting the flag, a release lowering `used`) call this
    /// after their own change, with SeqCst, so one of them always sees the other's.
    fn maybe_unsaturate(&self) {
        if self.used.load(Ordering::SeqCst) < self.limit / 2
            && self.saturated.compare_exchange(true, false, Ordering::SeqCst, Ordering::SeqCst).is_ok()
            && !self.is_full()
        {
            self.below_limit.notify_waiters();
        }
    }

    /// Bytes released (flushed or dropped) since the connection began.
    pub fn released(&self) -> u64 {
        self.released.load(Ordering::Acquire)
    }

    /// Resolves once the connection is below its limit.
    pub async fn wait_below_limit(&self) {
        loop {
            let notified = self.below_limit.notified();
            tokio::pin!(notified);
            // Arm before re-checking, so a release between the check and the await still wakes us.
            notified.as_mut().enable();
            if !self.is_full() {
                return;
            }
            notified.await;
        }
    }

    fn give_back(&self, n: usize) {
        if n == 0 {
            return;
        }
        let before = self.used.fetch_sub(n, Ordering::SeqCst);
        self.released.fetch_add(n as u64, Ordering::AcqRel);
        if self.saturated.load(Ordering::SeqCst) {
            self.maybe_unsaturate();
        } else if before >= self.limit && before - n < self.limit {
            self.below_limit.notify_waiters();
        }
    }

    /// Charges `n` result bytes to the engine's result budget only, on behalf
    /// of this connection: a result stream's read-ahead, which is not queued
    /// toward the socket (so it must not pause the connection's reading, which
    /// would hold back the very credit that lets it leave). The bytes are charged
    /// to the connection when they are queued ([`Charge::split_off`] + [`Charge::force`]).
    pub fn try_charge_engine(self: &Arc<Self>, n: usize) -> Result<Charge, Refused> {
        if !self.engine.try_take(n) {
            return Err(Refused::Engine(self.engine.limit));
        }
        Ok(Charge { budget: Some(self.clone()), conn_bytes: 0, engine_bytes: n })
    }

    /// Takes `n` bytes of both budgets, or neither.
    fn try_take(&self, n: usize) -> Result<(), Refused> {
        let taken = self
            .used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| u.checked_add(n).filter(|&t| t <= self.limit));
        if taken.is_err() {
            self.saturated.store(true, Ordering::SeqCst);
            self.maybe_unsaturate();
            return Err(Refused::Connection(self.limit));
        }
        if !self.engine.try_take(n) {
            self.give_back(n);
            return Err(Refused::Engine(self.engine.limit));
        }
        Ok(())
    }
}

/// Bytes held on a connection's budget (and, for results, on the engine's),
/// given back when dropped: when the writer has flushed the answer it travels
/// with, or when the answer is dropped unsent.
#[derive(Debug, Default)]
pub struct Charge {
    /// The connection charged (None: nothing is held).
    budget: Option<Arc<ConnBudget>>,
    /// Bytes held on the connection's budget.
    conn_bytes: usize,
    /// Of which also held on the engine's result budget.
    engine_bytes: usize,
}

impl Charge {
    /// Charges `n` bytes to the connection without a check (small answers are never refused).
    pub fn force(budget: &Arc<ConnBudget>, n: usize) -> Charge {
        budget.used.fetch_add(n, Ordering::SeqCst);
        Charge { budget: Some(budget.clone()), conn_bytes: n, engine_bytes: 0 }
    }

    /// Folds `other` into this charge (both must be of the same connection).
    pub fn merge(&mut self, mut other: Charge) {
        if other.budget.is_none() {
            return;
        }
        if self.budget.is_none() {
            self.budget = other.budget.take();
        }
        debug_assert!(
            self.budget.as_ref().zip(other.budget.as_ref()).is_none_or(|(a, b)| Arc::ptr_eq(a, b)),
            "charges of two connections merged"
        );
        self.conn_bytes += std::mem::take(&mut other.conn_bytes);
        self.engine_bytes += std::mem::take(&mut other.engine_bytes);
    }

    /// Bytes held on the connection's budget.
    pub fn bytes(&self) -> usize {
        self.conn_bytes
    }

    /// Bytes held on the engine's result budget.
    pub fn engine_bytes(&self) -> usize {
        self.engine_bytes
    }

    /// Moves up to `n` bytes of each budget this charge holds into a new one, so
    /// part of a reservation can travel with the answer that uses it.
    pub fn split_off(&mut self, n: usize) -> Charge {
        let conn_bytes = n.min(self.conn_bytes);
        let engine_bytes = n.min(self.engine_bytes);
        self.conn_bytes -= conn_bytes;
        self.engine_bytes -= engine_bytes;
        Charge { budget: self.budget.clone(), conn_bytes, engine_bytes }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if let Some(b) = &self.budget {
            b.engine.give_back(self.engine_bytes);
            b.give_back(self.conn_bytes);
        }
    }
}

/// Fixed per-message overhead counted for every queued message (framing, the
/// enum, request ids): keeps even an empty answer from being free.
const MESSAGE_OVERHEAD: usize = 64;

/// The bytes of `msg` not charged by a result builder: everything but SQL rows
/// and KV entries/values (those are charged while they are built). For a
/// control message or an error this is its whole estimated size.
pub fn small_size(msg: &envoy_protocol::ToEnvoy) -> usize {
    use envoy_protocol::{
        Command, GetOrCreateActorResult, KvResponseData, SqliteExecResult, SqliteExecuteResult, ToEnvoy,
    };
    let sql_error = |e: &envoy_protocol::SqliteError| e.message.len();
    MESSAGE_OVERHEAD
        + match msg {
            ToEnvoy::Init(i) => i.envoy_id.len() + 128,
            ToEnvoy::Commands(c) => c
                .commands
                .iter()
                .map(|w| {
                    MESSAGE_OVERHEAD
                        + match &w.inner {
                            Command::StartActor(s) => s.actor_id.len() + s.name.len() + s.key.len(),
                            Command::StopActor(s) => s.actor_id.len(),
                        }
                })
                .sum(),
            ToEnvoy::AckEvents(_) | ToEnvoy::Ping(_) => 0,
            ToEnvoy::KvResponse(r) => match &r.data {
                KvResponseData::KvErrorResponse(e) => e.message.len(),
                KvResponseData::KvLimitExceeded(e) => e.message.len(),
                // Data-carrying answers are charged while they are built (ResultCharge).
                KvResponseData::KvGetResponse(_)
                | KvResponseData::KvPutResponse
                | KvResponseData::KvDeleteResponse
                | KvResponseData::KvListResponse(_)
                | KvResponseData::KvGetBatchResponse(_)
                | KvResponseData::KvPutBatchResponse
                | KvResponseData::KvDeleteBatchResponse
                | KvResponseData::KvDeleteRangeResponse => 0,
            },
            ToEnvoy::GetOrCreateActorResponse(r) => match &r.result {
                GetOrCreateActorResult::GetOrCreateActorOk(ok) => ok.actor_id.len(),
                GetOrCreateActorResult::GetOrCreateActorError(e) => e.message.len(),
            },
            ToEnvoy::SqliteExecResponse(r) => match &r.result {
                SqliteExecResult::SqliteError(e) => sql_error(e),
                SqliteExecResult::QueryResult(_) | SqliteExecResult::SqliteFenceMismatch(_) => 0,
            },
            ToEnvoy::SqliteExecuteResponse(r) => match &r.result {
                SqliteExecuteResult::SqliteError(e) => sql_error(e),
                SqliteExecuteResult::ExecuteResult(_) | SqliteExecuteResult::SqliteFenceMismatch(_) => 0,
            },
            // v5 members: this engine speaks at most v4 and never builds them;
            // only the fixed overhead is counted until it does.
            ToEnvoy::InitV5(_)
            | ToEnvoy::SqliteExecResponseV5(_)
            | ToEnvoy::SqliteExecuteResponseV5(_)
            | ToEnvoy::SqliteBatchResponse(_)
            | ToEnvoy::SqliteBeginResponse(_)
            | ToEnvoy::SqliteTransactionExecuteResponse(_)
            | ToEnvoy::SqliteCommitResponse(_)
            | ToEnvoy::SqliteRollbackResponse(_)
            | ToEnvoy::SqliteTransactionEnded(_) => 0,
            // A stream's chunk is sent with its own charge (sql::stream reserves its rows
            // and adds its overhead); a failure is sized by its message.
            ToEnvoy::SqliteStreamChunk(_) => 0,
            ToEnvoy::SqliteStreamFailed(f) => match &f.failure {
                envoy_protocol::SqliteFailure::SqliteError(e) => sql_error(e),
                envoy_protocol::SqliteFailure::SqliteFenceMismatch(_) => 0,
            },
        }
}

/// What an answer holds on the budgets until it is flushed: the charge its result
/// took while it was built (only if the answer carries that result; an error answer
/// releases it) plus the answer's own small size, charged to `budget` unchecked.
pub fn answer_charge(budget: &Arc<ConnBudget>, answer: &envoy_protocol::ToEnvoy, built: Option<Charge>) -> Charge {
    let mut charge = Charge::default();
    if let Some(built) = built.filter(|_| carries_result(answer)) {
        charge.merge(built);
    }
    charge.merge(Charge::force(budget, small_size(answer)));
    charge
}

/// Whether `msg` is an answer that carries a built result (rows or KV data),
/// whose builder's charge must travel with it; an error answer carries none.
pub fn carries_result(msg: &envoy_protocol::ToEnvoy) -> bool {
    use envoy_protocol::{KvResponseData, SqliteExecResult, SqliteExecuteResult, ToEnvoy};
    match msg {
        ToEnvoy::KvResponse(r) => match r.data {
            KvResponseData::KvErrorResponse(_) | KvResponseData::KvLimitExceeded(_) => false,
            KvResponseData::KvGetResponse(_)
            | KvResponseData::KvPutResponse
            | KvResponseData::KvDeleteResponse
            | KvResponseData::KvListResponse(_)
            | KvResponseData::KvGetBatchResponse(_)
            | KvResponseData::KvPutBatchResponse
            | KvResponseData::KvDeleteBatchResponse
            | KvResponseData::KvDeleteRangeResponse => true,
        },
        ToEnvoy::SqliteExecResponse(r) => match r.result {
            SqliteExecResult::QueryResult(_) => true,
            SqliteExecResult::SqliteError(_) | SqliteExecResult::SqliteFenceMismatch(_) => false,
        },
        ToEnvoy::SqliteExecuteResponse(r) => match r.result {
            SqliteExecuteResult::ExecuteResult(_) => true,
            SqliteExecuteResult::SqliteError(_) | SqliteExecuteResult::SqliteFenceMismatch(_) => false,
        },
        // Nothing else carries a result built under a charge (v5 answers are not built by this engine yet).
        ToEnvoy::Init(_)
        | ToEnvoy::Commands(_)
        | ToEnvoy::AckEvents(_)
        | ToEnvoy::Ping(_)
        | ToEnvoy::GetOrCreateActorResponse(_)
        | ToEnvoy::InitV5(_)
        | ToEnvoy::SqliteExecResponseV5(_)
        | ToEnvoy::SqliteExecuteResponseV5(_)
        | ToEnvoy::SqliteBatchResponse(_)
        | ToEnvoy::SqliteBeginResponse(_)
        | ToEnvoy::SqliteTransactionExecuteResponse(_)
        | ToEnvoy::SqliteCommitResponse(_)
        | ToEnvoy::SqliteRollbackResponse(_)
        | ToEnvoy::SqliteTransactionEnded(_)
        | ToEnvoy::SqliteStreamChunk(_)
        | ToEnvoy::SqliteStreamFailed(_) => false,
    }
}

/// What a lane's scope holds while one job runs.
struct Scope {
    /// The connection the job answers to.
    budget: Arc<ConnBudget>,
    /// The charge of the last result completed in this job (an `Exec` builds one
    /// per statement and answers the last; an earlier one is released when the
    /// next completes).
    result: Option<Charge>,
}

thread_local! {
    /// The scope of the job running on this thread, if any.
    static SCOPE: RefCell<Option<Scope>> = const { RefCell::new(None) };
}

/// Runs `f` (one job on a lane) with `budget` as the budget results are charged
/// to; returns what it returned and the charge of the result it built, if any.
pub fn scope<R>(budget: &Arc<ConnBudget>, f: impl FnOnce() -> R) -> (R, Option<Charge>) {
    /// Restores the previous scope even if `f` unwinds.
    struct Restore(Option<Scope>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let prev = self.0.take();
            SCOPE.with(|s| *s.borrow_mut() = prev);
        }
    }
    let prev = SCOPE.with(|s| s.borrow_mut().replace(Scope { budget: budget.clone(), result: None }));
    let restore = Restore(prev);
    let r = f();
    let charge = SCOPE.with(|s| s.borrow_mut().as_mut().and_then(|sc| sc.result.take()));
    drop(restore);
    (r, charge)
}

/// Charges a result while it is built, in chunks. Outside a [`scope`] (no
/// connection to charge: unit tests, tools) it only counts.
pub struct ResultCharge {
    /// Bytes charged so far, on the scope's connection (None outside a scope).
    charge: Charge,
    /// The scope's connection, when there is one.
    budget: Option<Arc<ConnBudget>>,
    /// Size reported so far by the builder.
    reported: usize,
}

impl ResultCharge {
    /// Starts charging a result for the job running on this thread.
    pub fn start() -> Self {
        let budget = SCOPE.with(|s| s.borrow().as_ref().map(|sc| sc.budget.clone()));
        Self { charge: Charge::default(), budget, reported: 0 }
    }

    /// The result now takes `size` bytes in all; charges the growth once it reaches a chunk.
    pub fn grow_to(&mut self, size: usize) -> Result<(), Refused> {
        self.reported = self.reported.max(size);
        if self.reported - self.charge.conn_bytes >= CHUNK {
            self.settle()?;
        }
        Ok(())
    }

    fn settle(&mut self) -> Result<(), Refused> {
        let Some(budget) = &self.budget else {
            return Ok(());
        };
        let n = self.reported - self.charge.conn_bytes;
        if n == 0 {
            return Ok(());
        }
        budget.try_take(n)?;
        if self.charge.budget.is_none() {
            self.charge.budget = Some(budget.clone());
        }
        self.charge.conn_bytes += n;
        self.charge.engine_bytes += n;
        Ok(())
    }

    /// The result is complete: charges the rest and hands the charge to the
    /// scope, to travel with the answer until it is flushed.
    pub fn finish(mut self) -> Result<(), Refused> {
        self.settle()?;
        let charge = std::mem::take(&mut self.charge);
        SCOPE.with(|s| {
            if let Some(sc) = s.borrow_mut().as_mut() {
                // Replaces (and so releases) an earlier statement's result of the same job.
                sc.result = Some(charge);
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_follow_scope_and_release_on_drop() {
        let engine = Arc::new(ResultBudget::new(10 * CHUNK));
        let conn = ConnBudget::new(engine.clone(), 4 * CHUNK);
        let ((), charge) = scope(&conn, || {
            let mut r = ResultCharge::start();
            r.grow_to(CHUNK / 2).unwrap();
            assert_eq!(conn.used(), 0, "below a chunk nothing is charged yet");
            r.grow_to(CHUNK + 10).unwrap();
            assert_eq!(conn.used(), CHUNK + 10);
            r.finish().unwrap();
        });
        let charge = charge.expect("the result's charge");
        assert_eq!((conn.used(), engine.used()), (CHUNK + 10, CHUNK + 10));
        drop(charge);
        assert_eq!((conn.used(), engine.used(), conn.released()), (0, 0, (CHUNK + 10) as u64));
    }

    #[test]
    fn refuses_past_either_budget_and_gives_back() {
        let engine = Arc::new(ResultBudget::new(3 * CHUNK));
        let a = ConnBudget::new(engine.clone(), 2 * CHUNK);
        let b = ConnBudget::new(engine.clone(), 2 * CHUNK);
        let (r, c) = scope(&a, || {
            let mut r = ResultCharge::start();
            r.grow_to(3 * CHUNK)
        });
        assert_eq!(r, Err(Refused::Connection(2 * CHUNK)));
        assert!(c.is_none());
        assert_eq!((a.used(), engine.used()), (0, 0), "a refused result holds nothing");
        let ((), held) = scope(&a, || {
            let mut r = ResultCharge::start();
            r.grow_to(2 * CHUNK).unwrap();
            r.finish().unwrap();
        });
        let (r, _) = scope(&b, || {
            let mut r = ResultCharge::start();
            r.grow_to(2 * CHUNK)
        });
        assert_eq!(r, Err(Refused::Engine(3 * CHUNK)));
        assert_eq!((b.used(), engine.used()), (0, 2 * CHUNK));
        assert!(a.is_full());
        // Small answers are never refused, even over the limit.
        let small = Charge::force(&a, 100);
        assert_eq!(a.used(), 2 * CHUNK + 100);
        drop(held);
        drop(small);
        assert_eq!((a.used(), engine.used()), (0, 0));
        assert!(engine.peak() <= engine.limit());
    }

    #[test]
    fn a_refusal_marks_the_connection_full_until_half_drained() {
        let engine = Arc::new(ResultBudget::new(100 * CHUNK));
        let conn = ConnBudget::new(engine, 4 * CHUNK);
        let held: Vec<Charge> = (0..3)
            .map(|_| {
                let ((), c) = scope(&conn, || {
                    let mut r = ResultCharge::start();
                    r.grow_to(CHUNK).unwrap();
                    r.finish().unwrap();
                });
                c.unwrap()
            })
            .collect();
        assert!(!conn.is_full());
        let (r, _) = scope(&conn, || ResultCharge::start().grow_to(2 * CHUNK));
        assert_eq!(r, Err(Refused::Connection(4 * CHUNK)));
        assert!(conn.is_full(), "a result did not fit: the read loop must pause");
        let mut held = held.into_iter();
        drop(held.next());
        assert!(conn.is_full(), "at half the limit: still paused");
        drop(held.next());
        assert!(!conn.is_full(), "below half: reading resumes");
    }

    #[test]
    fn an_engine_reservation_splits_and_travels_with_a_connection_charge() {
        let engine = Arc::new(ResultBudget::new(4 * CHUNK));
        let conn = ConnBudget::new(engine.clone(), 2 * CHUNK);
        // The engine's budget only: the connection's reading is not paused by it.
        let mut reserved = conn.try_charge_engine(3 * CHUNK).unwrap();
        assert_eq!((conn.used(), engine.used(), conn.is_full()), (0, 3 * CHUNK, false));
        assert_eq!(conn.try_charge_engine(2 * CHUNK).unwrap_err(), Refused::Engine(4 * CHUNK));
        // Part of it is queued: it moves to a charge that also holds the connection's bytes.
        let mut queued = reserved.split_off(CHUNK);
        queued.merge(Charge::force(&conn, CHUNK + 10));
        assert_eq!((reserved.engine_bytes(), queued.engine_bytes(), queued.bytes()), (2 * CHUNK, CHUNK, CHUNK + 10));
        assert_eq!((conn.used(), engine.used()), (CHUNK + 10, 3 * CHUNK));
        drop(queued);
        assert_eq!((conn.used(), engine.used()), (0, 2 * CHUNK));
        let rest = reserved.split_off(10 * CHUNK);
        assert_eq!((rest.engine_bytes(), reserved.engine_bytes()), (2 * CHUNK, 0));
        drop(rest);
        drop(reserved);
        assert_eq!((conn.used(), engine.used()), (0, 0));
    }

    #[test]
    fn outside_a_scope_nothing_is_charged() {
        let mut r = ResultCharge::start();
        r.grow_to(100 * CHUNK).unwrap();
        r.finish().unwrap();
    }
}
