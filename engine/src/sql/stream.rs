//! v5 result streams with credit flow control (`specs/protocol.md` §9.6; the
//! engine's rules are in `specs/engine.md`, "Protocol v5: result streams").
//!
//! A stream runs one read-only statement in one snapshot on a reader
//! connection of its actor and sends its rows as `ToEnvoySqliteStreamChunk`s,
//! only while the envoy has granted credit.
//!
//! **Threads.** Every open stream steps its statement on a thread of its own
//! (`envoy-stream`), which owns the reader connection, the statement and the
//! snapshot for the stream's whole life and parks on a condition variable
//! while it waits for credit. The alternatives were worse: a stream cannot
//! wait inside the scheduler's lanes or tokio's blocking pool (a lane per
//! waiting stream would take the connection's permits and the actor's reader
//! lanes from every other request for as long as a client sits on its
//! credit), and re-stepping in short pool jobs would have to hand a live
//! SQLite statement between threads between jobs and re-queue behind other
//! work for every window. A parked thread costs its stack (reserved, mostly
//! untouched) and nothing else; stepping a statement is blocking work that
//! needs a thread anyway. Threads are bounded twice: `max_open_streams` per
//! connection (LIMIT_EXCEEDED `OPEN_STREAMS`) and, engine-wide,
//! [`StreamRegistry::max`] = `max_result_memory_bytes / (stream_window_bytes
//! × 9/8)` (clamped to `[1, MAX_STREAM_THREADS]`): every open stream may pin a
//! window (plus a reservation step) of the engine's result memory, so no more
//! can be open than that memory holds (past it: OVERLOADED).
//!
//! **Flow control and memory** ([`Flow`]). Credit is counted in row bytes at
//! their decoded size (`SizedRow`, as `collect_rows` counts them). The thread
//! reads a row only while fewer than `stream_window_bytes` are buffered, and
//! sends a chunk only while credit is left; a chunk takes rows while its bytes
//! are below the credit left (so it overruns by at most its last row) and its
//! size stays within `max_response_bytes`. So a stream holds at most a window
//! plus one row, reserved while buffered (in steps of an eighth of the window,
//! at most `budget::CHUNK`) on the engine's result budget only
//! (`budget::ConnBudget::try_charge_engine`): read-ahead is not queued toward
//! the socket, and charging it to the connection's outbox budget would pause
//! the connection's reading — and with it the credit that lets the rows leave.
//! A sent chunk carries its rows' reservation to the writer and is charged to
//! the connection's outbox budget too, like any answer, until flushed. A chunk
//! is not sent while that budget is full (a client that grants credit but does
//! not read its socket): the stream waits for the writer to drain it, so it
//! overshoots the budget by at most one chunk. When the engine's result budget
//! is full the stream ends OVERLOADED (`RESULT_MEMORY_BYTES`).
//!
//! **Lease.** Any wait (for credit, or for the connection's outbox) is bounded
//! by the stream's lease; a stream that waited that long ends STREAM_EXPIRED,
//! which frees its snapshot and thread. Any progress (credit, a row read, a
//! chunk sent) starts the count again.
//!
//! **Ends.** A stream's last message is a chunk with `done` or a
//! `ToEnvoySqliteStreamFailed`; it is removed from its connection's table
//! before that message is queued (so its id may be reused once the envoy has
//! it) and its in-flight guard is dropped after. Cancel, a stop and a closed
//! connection are signals on its [`Ctl`]: they wake a waiting thread and
//! interrupt a running step. Cancel ends it CANCELLED; a drain
//! ([`StreamRegistry::stop_actor`], called when a drain begins, so a stop does
//! not wait for a client's credit) ends it INTERRUPTED; a closed connection
//! ends it silently. Its snapshot ends as soon as its last row is read, even
//! if buffered rows still wait for credit.

use crate::budget::{Charge, ConnBudget, CHUNK};
use crate::connection::admission::{PendingGuard, Rejection};
use crate::connection::writer::Outbox;
use crate::generations::InflightGuard;
use crate::sql::cost::{measure, CostClock, Rows};
use crate::sql::executor::{err, limit_error, Executor, SizedRow, StreamCursor};
use crate::sql::route::Route;
use crate::state::EngineState;
use envoy_protocol::{
    LimitKind, SqlCost, SqliteError, SqliteErrorCode, SqliteFailure, ToEnvoy, ToEnvoySqliteStreamChunk,
    ToEnvoySqliteStreamFailed, Value,
};
use parking_lot::{Condvar, Mutex};
use rusqlite::InterruptHandle;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most stream threads the engine runs at once, whatever the memory budget
/// allows: a ceiling on threads for configurations with a huge result budget
/// and a tiny window.
pub const MAX_STREAM_THREADS: usize = 4096;

/// Buffered rows leave as a chunk once the oldest waited this long, even if the
/// chunk is not full: a slow statement's rows reach the client as they come.
const EARLY_SEND: Duration = Duration::from_millis(2);

/// Per-message overhead charged to the outbox for a chunk beyond its rows.
const CHUNK_OVERHEAD: usize = 64;

/// A row's decoded size is counted as `collect_rows` counts it; so is the
/// fixed part of a response (`32` plus each column name and 5).
fn header_bytes(columns: &[String]) -> usize {
    32 + columns.iter().map(|c| c.len() + 5).sum::<usize>()
}

/// The flow-control state of one stream: credit, the read-ahead buffer and
/// the chunking rules (see the module doc). Pure: no I/O, no clock but the
/// `now` it is given.
#[derive(Debug)]
pub struct Flow {
    /// Row bytes the envoy still accepts; below zero by at most one row after
    /// a chunk overran it.
    credit: i64,
    /// Most row bytes buffered before reading stops (`stream_window_bytes`).
    window: usize,
    /// Most row bytes one chunk may carry (`max_response_bytes` less the header).
    max_rows: usize,
    /// Rows read and not sent, with their sizes.
    rows: VecDeque<SizedRow>,
    /// Sum of the buffered rows' sizes.
    bytes: usize,
    /// When the oldest buffered row was read (for [`EARLY_SEND`]).
    oldest: Option<Instant>,
}

impl Flow {
    /// A stream opened with `credit` bytes.
    pub fn new(credit: u32, window: usize, max_rows: usize) -> Self {
        Self { credit: i64::from(credit), window, max_rows, rows: VecDeque::new(), bytes: 0, oldest: None }
    }

    /// Adds credit.
    pub fn grant(&mut self, n: u64) {
        self.credit = self.credit.saturating_add(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Sets the per-chunk row bound once the header is known.
    pub fn set_max_rows(&mut self, max_rows: usize) {
        self.max_rows = max_rows;
    }

    /// Whether another row may be read now (the buffer is below the window).
    pub fn may_read(&self) -> bool {
        self.bytes < self.window
    }

    /// Buffers a row read at `now`.
    pub fn push(&mut self, row: SizedRow, now: Instant) {
        self.bytes += row.1;
        self.oldest.get_or_insert(now);
        self.rows.push_back(row);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Row bytes buffered.
    pub fn buffered(&self) -> usize {
        self.bytes
    }

    /// Credit left (negative after an overrun).
    #[cfg(test)]
    pub fn credit(&self) -> i64 {
        self.credit
    }

    /// Whether a chunk should leave now: there is credit and a buffered row,
    /// and the chunk cannot grow usefully (the statement ended, the buffer
    /// holds the credit, a full chunk or a window) or its oldest row has waited
    /// [`EARLY_SEND`].
    pub fn should_send(&self, eof: bool, now: Instant) -> bool {
        self.credit > 0
            && !self.rows.is_empty()
            && (eof
                || !self.may_read()
                || self.bytes as i64 >= self.credit
                || self.bytes >= self.max_rows
                || self.oldest.is_some_and(|t| now.duration_since(t) >= EARLY_SEND))
    }

    /// Takes the next chunk's rows: at least one, then more while the chunk's
    /// bytes are below the credit left and the next row keeps it within
    /// `max_rows`. Returns the rows and their bytes (spent from the credit).
    pub fn take_chunk(&mut self, now: Instant) -> (Vec<Vec<Value>>, usize) {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        while let Some(&(_, size)) = self.rows.front() {
            if !out.is_empty() && (bytes as i64 >= self.credit || bytes + size > self.max_rows) {
                break;
            }
            let Some((row, _)) = self.rows.pop_front() else { break };
            bytes += size;
            out.push(row);
        }
        self.bytes -= bytes;
        self.credit -= bytes as i64;
        self.oldest = if self.rows.is_empty() { None } else { Some(now) };
        (out, bytes)
    }
}

/// Why a stream is asked to end from outside its thread. Later variants win
/// over earlier ones when several arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stop {
    /// The envoy cancelled it: CANCELLED.
    Cancel,
    /// A drain of its actor began: INTERRUPTED.
    ActorStopping,
    /// Its connection closed: nobody to answer.
    Closed,
}

/// What other threads hand a stream's thread.
#[derive(Debug, Default)]
struct Signals {
    /// Credit granted since the thread last looked.
    credit: u64,
    /// Set once the stream must end.
    stop: Option<Stop>,
    /// Set by anyone with news (credit, a stop, a drained outbox); the thread
    /// clears it when it looks. Checked under the lock before waiting, so no
    /// wake-up is lost.
    attention: bool,
}

/// A stream's control block, shared by its thread, its connection's table and
/// the engine's registry.
#[derive(Default)]
pub struct Ctl {
    /// Credit and stop requests not yet seen by the thread.
    signals: Mutex<Signals>,
    /// Wakes the thread when `signals` changes.
    wake: Condvar,
    /// Lock-free copy of `signals.attention`, read by the thread between rows.
    news: AtomicBool,
    /// The stream's reader's interrupt handle while its statement runs (a stop
    /// interrupts a long step with it); taken back before the reader returns
    /// to the pool, so no late stop can interrupt someone else's statement.
    reader: Mutex<Option<InterruptHandle>>,
    /// Whether the reader was interrupted (it is then closed, not pooled).
    interrupted: AtomicBool,
}

impl Ctl {
    fn notify(&self, f: impl FnOnce(&mut Signals)) {
        let mut s = self.signals.lock();
        f(&mut s);
        s.attention = true;
        self.news.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// Adds credit (and so renews the lease).
    fn credit(&self, n: u32) {
        self.notify(|s| s.credit = s.credit.saturating_add(u64::from(n)));
    }

    /// Asks the stream to end, interrupting a step in progress.
    fn stop(&self, why: Stop) {
        self.notify(|s| s.stop = s.stop.max(Some(why)));
        let reader = self.reader.lock();
        if let Some(h) = reader.as_ref() {
            self.interrupted.store(true, Ordering::Release);
            h.interrupt();
        }
    }

    /// Wakes the thread to look again (its connection's outbox drained).
    fn poke(&self) {
        self.notify(|_| {});
    }

    /// Takes what arrived since the last look.
    fn take(&self) -> (u64, Option<Stop>) {
        let mut s = self.signals.lock();
        s.attention = false;
        self.news.store(false, Ordering::Release);
        (std::mem::take(&mut s.credit), s.stop)
    }

    /// Waits until something arrives or `timeout` passes.
    fn wait(&self, timeout: Duration) {
        let mut s = self.signals.lock();
        if !s.attention {
            let _ = self.wake.wait_for(&mut s, timeout);
        }
    }

    /// Whether something arrived (lock-free; between rows).
    fn has_news(&self) -> bool {
        self.news.load(Ordering::Acquire)
    }

    /// The stop asked for, if any.
    fn stopped(&self) -> Option<Stop> {
        self.signals.lock().stop
    }
}

impl crate::sql::executor::ReaderHook for Ctl {
    fn attach(&self, h: InterruptHandle) {
        let mut reader = self.reader.lock();
        // A stop that came before the reader existed still interrupts it.
        if self.signals.lock().stop.is_some() {
            self.interrupted.store(true, Ordering::Release);
            h.interrupt();
        }
        *reader = Some(h);
    }

    fn detach(&self) -> bool {
        self.reader.lock().take();
        self.interrupted.load(Ordering::Acquire)
    }
}

/// A live stream as the engine-wide registry knows it.
struct Live {
    /// Its actor (a drain of it ends the stream).
    actor_id: String,
    /// Its actor's generation.
    generation: u64,
    /// Where to signal it.
    ctl: Arc<Ctl>,
}

/// Every open stream of the engine: bounds them and lets a drain end an actor's.
pub struct StreamRegistry {
    /// Most streams open at once engine-wide (see the module doc).
    max: usize,
    /// Open streams by a registry-wide id.
    live: Mutex<HashMap<u64, Live>>,
    /// Source of those ids.
    next_id: AtomicU64,
}

impl StreamRegistry {
    /// A registry bounded by how many streams' read-ahead the engine's result
    /// memory holds: a window plus its last reservation step (an eighth of it).
    pub fn from_config(c: &crate::config::Config) -> Self {
        let window = (c.stream_window_bytes as usize).max(1);
        let per_stream = window + window / 8;
        Self::new((c.max_result_memory_bytes / per_stream).clamp(1, MAX_STREAM_THREADS))
    }

    pub fn new(max: usize) -> Self {
        Self { max, live: Mutex::new(HashMap::new()), next_id: AtomicU64::new(0) }
    }

    /// Most streams open at once.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Streams open now (`envoy_streams_open`).
    pub fn open(&self) -> usize {
        self.live.lock().len()
    }

    /// Ends every stream of (actor, generation) with INTERRUPTED: a drain of it
    /// began. Streams admitted but not registered yet see the drain when they
    /// start (the executor refuses to start them: ACTOR_STOPPING).
    pub fn stop_actor(&self, actor_id: &str, generation: u64) {
        let ctls: Vec<Arc<Ctl>> = self
            .live
            .lock()
            .values()
            .filter(|l| l.actor_id == actor_id && l.generation == generation)
            .map(|l| l.ctl.clone())
            .collect();
        for c in ctls {
            c.stop(Stop::ActorStopping);
        }
    }

    fn register(&self, actor_id: &str, generation: u64, ctl: Arc<Ctl>) -> Option<u64> {
        let mut live = self.live.lock();
        if live.len() >= self.max {
            return None;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        live.insert(id, Live { actor_id: actor_id.to_string(), generation, ctl });
        Some(id)
    }

    fn forget(&self, id: u64) {
        self.live.lock().remove(&id);
    }
}

/// What a stream needs from the engine's configuration.
#[derive(Debug, Clone)]
struct Settings {
    /// `stream_window_bytes`.
    window: usize,
    /// `max_response_bytes`: a chunk's bound.
    max_response: usize,
    /// `[min_stream_lease, max_stream_lease]`.
    lease: (Duration, Duration),
    /// `max_open_streams` per connection.
    max_open: u32,
}

/// An admitted `ToEngineSqliteStreamOpen`, ready to start.
pub struct Open {
    /// The stream's id on its connection.
    pub request_id: u32,
    /// The (actor, generation)'s executor.
    pub executor: Arc<Executor>,
    /// The request's SQL (one statement, found by `route`).
    pub sql: String,
    /// Where the statement is within `sql` (checked at admission).
    pub route: Route,
    /// Its parameters.
    pub params: Vec<Value>,
    /// Credit granted by the open.
    pub credit: u32,
    /// The lease asked for (clamped here).
    pub lease_ms: u32,
    /// Started at admission: the cost's duration counts from it.
    pub clock: CostClock,
    /// Counts the stream in flight until its last message is queued (a drain waits for it).
    pub inflight: InflightGuard,
    /// Counts it against the connection's pending bound until its statement starts.
    pub pending: PendingGuard,
}

/// One connection's open streams. Dropped with the connection: every stream
/// still open ends at once (its snapshot and thread are freed).
pub struct ConnStreams {
    /// The engine (registry, metrics, config).
    state: Arc<EngineState>,
    /// Where the streams' messages go.
    outbox: Outbox,
    /// Runs the small task that wakes a stream when the outbox drains.
    runtime: tokio::runtime::Handle,
    /// Open streams by request id; a stream removes itself before its last message.
    table: Arc<Mutex<HashMap<u32, Arc<Ctl>>>>,
    /// Window, chunk bound, lease bounds and the per-connection cap.
    settings: Settings,
    /// The connection's span, entered by stream threads.
    span: tracing::Span,
}

impl ConnStreams {
    /// The streams of a connection whose messages go to `outbox`. Call on the runtime.
    pub fn new(state: Arc<EngineState>, outbox: Outbox) -> Self {
        let c = &state.config;
        let settings = Settings {
            window: (c.stream_window_bytes as usize).max(1),
            max_response: c.limits.max_response_bytes as usize,
            lease: (c.min_stream_lease, c.max_stream_lease),
            max_open: c.max_open_streams,
        };
        Self {
            state,
            outbox,
            runtime: tokio::runtime::Handle::current(),
            table: Arc::new(Mutex::new(HashMap::new())),
            settings,
            span: tracing::Span::current(),
        }
    }

    /// The admission check of an open: the id is not in use by an open stream,
    /// and the connection has room for one more (`max_open_streams`).
    pub fn check_room(&self, request_id: u32) -> Result<(), Rejection> {
        let table = self.table.lock();
        if table.contains_key(&request_id) {
            return Err(Rejection::Invalid(format!(
                "request id {request_id} names a stream that is still open; a stream's id is in use until its last \
                 message"
            )));
        }
        let max = self.settings.max_open;
        if table.len() >= max as usize {
            return Err(Rejection::Limit {
                kind: LimitKind::OpenStreams,
                max: u64::from(max),
                actual: Some(table.len() as u64 + 1),
            });
        }
        Ok(())
    }

    /// Adds credit to an open stream; ignored for an ended or unknown one.
    pub fn credit(&self, request_id: u32, bytes: u32) {
        if let Some(c) = self.table.lock().get(&request_id) {
            c.credit(bytes);
        }
    }

    /// Asks an open stream to end (its last message answers); ignored for an ended or unknown one.
    pub fn cancel(&self, request_id: u32) {
        let ctl = self.table.lock().get(&request_id).cloned();
        if let Some(c) = ctl {
            c.stop(Stop::Cancel);
        }
    }

    /// Starts an admitted stream on a thread of its own (see the module doc).
    pub fn start(&self, open: Open) {
        let request_id = open.request_id;
        let ctl = Arc::new(Ctl::default());
        let registry = &self.state.streams;
        let Some(live_id) = registry.register(&open.executor.actor_id, open.executor.generation, ctl.clone()) else {
            let e = err(
                SqliteErrorCode::Overloaded,
                &format!(
                    "the engine has {} result streams open, as many as its result memory holds windows \
                     (max_result_memory_bytes / stream_window_bytes); retry later",
                    registry.max()
                ),
                Some(false),
            );
            self.outbox.send(failed(request_id, 0, SqliteFailure::SqliteError(e), open.clock.cost(Rows::default())));
            return;
        };
        self.table.lock().insert(request_id, ctl.clone());
        let (lo, hi) = self.settings.lease;
        let lease = Duration::from_millis(u64::from(open.lease_ms)).clamp(lo, hi);
        let clock = open.clock;
        let stream = Stream {
            open,
            ctl,
            lease,
            live_id,
            state: self.state.clone(),
            outbox: self.outbox.clone(),
            runtime: self.runtime.clone(),
            table: self.table.clone(),
            settings: self.settings.clone(),
        };
        let span = tracing::debug_span!(parent: &self.span, "stream", request_id);
        let spawned = std::thread::Builder::new().name("envoy-stream".into()).spawn(move || {
            let _span = span.entered();
            stream.run();
        });
        if let Err(e) = spawned {
            // The closure (and with it the stream's guards) is gone; answer for it.
            tracing::error!(error = %e, "cannot start a stream thread");
            self.table.lock().remove(&request_id);
            registry.forget(live_id);
            let e = err(SqliteErrorCode::Overloaded, &format!("cannot start a stream thread: {e}"), Some(false));
            self.outbox.send(failed(request_id, 0, SqliteFailure::SqliteError(e), clock.cost(Rows::default())));
        }
    }
}

impl Drop for ConnStreams {
    fn drop(&mut self) {
        let open: Vec<Arc<Ctl>> = self.table.lock().values().cloned().collect();
        for c in open {
            c.stop(Stop::Closed);
        }
    }
}

/// The answer to an open refused at admission: a `ToEnvoySqliteStreamFailed`
/// with sequence 0.
pub fn refused(request_id: u32, rejection: &Rejection, clock: CostClock) -> ToEnvoy {
    let failure = match rejection.to_sqlite() {
        Ok(f) => SqliteFailure::SqliteFenceMismatch(f),
        Err(e) => SqliteFailure::SqliteError(e),
    };
    failed(request_id, 0, failure, clock.cost(Rows::default()))
}

/// The wire answer of a stream that did not finish.
fn failed(request_id: u32, sequence: u32, failure: SqliteFailure, cost: SqlCost) -> ToEnvoy {
    ToEnvoy::SqliteStreamFailed(ToEnvoySqliteStreamFailed { request_id, sequence, failure, cost })
}

/// An open stream, owned by its thread.
struct Stream {
    /// The admitted request and its guards.
    open: Open,
    /// Its control block.
    ctl: Arc<Ctl>,
    /// The granted lease.
    lease: Duration,
    /// Its id in the engine's registry.
    live_id: u64,
    /// The engine (registry, metrics).
    state: Arc<EngineState>,
    /// Where its messages go.
    outbox: Outbox,
    /// Runs the outbox waiter.
    runtime: tokio::runtime::Handle,
    /// Its connection's table (it removes itself before its last message).
    table: Arc<Mutex<HashMap<u32, Arc<Ctl>>>>,
    /// Window, chunk bound.
    settings: Settings,
}

/// How a stream ended.
enum End {
    /// Every row was read; these are the last chunk's rows and bytes.
    Done(Vec<Vec<Value>>, usize),
    /// An error of the statement or of a limit.
    Failed(SqliteError),
    /// Ended from outside.
    Stopped(Stop),
}

/// What the stepping phase returns.
enum Phase {
    /// The stream ended while its statement ran.
    Ended(End),
    /// The statement has no more rows; buffered rows may still wait for credit.
    Exhausted,
}

impl Stream {
    fn run(self) {
        let Stream { open, ctl, lease, live_id, state, outbox, runtime, table, settings } = self;
        let Open { request_id, executor, sql, route, params, credit, clock, inflight, pending, .. } = open;
        drop(pending);
        let budget = outbox.budget().clone();
        let mut pump = Pump {
            flow: Flow::new(credit, settings.window, settings.max_response),
            settings,
            ctl: ctl.clone(),
            request_id,
            outbox: outbox.clone(),
            budget,
            runtime,
            metrics: state.metrics.clone(),
            lease,
            sequence: 0,
            columns: None,
            header: 0,
            reserve: Charge::default(),
            waiting_since: None,
            outbox_watch: None,
        };
        // The statement's rows are measured as it runs (sql::cost). Rows still
        // buffered when it ends are sent after its snapshot and reader are released.
        let (end, rows) = measure(|| match executor.enter() {
            Err(message) => End::Failed(err(SqliteErrorCode::Overloaded, &message, Some(false))),
            Ok(in_use) => {
                let r = executor.stream_statement(&sql, &route, &params, &*ctl, |cur| pump.step(cur));
                drop(in_use);
                match r {
                    Ok(Phase::Ended(end)) => end,
                    Ok(Phase::Exhausted) => pump.finish(),
                    Err(e) => End::Failed(e),
                }
            }
        });
        // A stop that interrupted the statement is the reason, not the interrupt's
        // error; but a stream refused before it started says so (ACTOR_STOPPING: it never ran).
        let end = match (end, ctl.stopped()) {
            (End::Failed(e), Some(stop)) if e.code != SqliteErrorCode::ActorStopping => End::Stopped(stop),
            (end, _) => end,
        };
        // Forgotten before the last message: the id is free once the envoy has it.
        table.lock().remove(&request_id);
        state.streams.forget(live_id);
        let cost = clock.cost(rows);
        let sequence = pump.sequence;
        let reason = match end {
            End::Done(rows, bytes) => {
                pump.send_chunk(rows, bytes, Some(cost));
                "done"
            }
            End::Failed(e) => {
                let reason = match e.code {
                    SqliteErrorCode::StreamExpired => "expired",
                    _ => "failed",
                };
                outbox.send(failed(request_id, sequence, SqliteFailure::SqliteError(e), cost));
                reason
            }
            End::Stopped(Stop::Cancel) => {
                let e = err(SqliteErrorCode::Cancelled, "the stream was cancelled", Some(false));
                outbox.send(failed(request_id, sequence, SqliteFailure::SqliteError(e), cost));
                "cancelled"
            }
            End::Stopped(Stop::ActorStopping) => {
                let e = err(
                    SqliteErrorCode::Interrupted,
                    "the actor is stopping; the stream was interrupted (the rows already sent stay valid)",
                    Some(false),
                );
                outbox.send(failed(request_id, sequence, SqliteFailure::SqliteError(e), cost));
                "interrupted"
            }
            End::Stopped(Stop::Closed) => "closed",
        };
        state.metrics.stream_ended(reason);
        drop(pump);
        drop(inflight);
    }
}

/// The stepping and sending loop of one stream (see the module doc).
struct Pump {
    /// Credit, buffer and chunking.
    flow: Flow,
    /// Window and chunk bound.
    settings: Settings,
    /// Where credit and stops arrive.
    ctl: Arc<Ctl>,
    /// The stream's id.
    request_id: u32,
    /// Where chunks go.
    outbox: Outbox,
    /// The connection's budget (reservations, waits).
    budget: Arc<ConnBudget>,
    /// Runs the outbox waiter.
    runtime: tokio::runtime::Handle,
    /// Chunks and bytes streamed.
    metrics: Arc<crate::metrics::Metrics>,
    /// Longest wait before STREAM_EXPIRED.
    lease: Duration,
    /// The next message's sequence.
    sequence: u32,
    /// The result's columns (sent with the first chunk), known at the first row or the end.
    columns: Option<Vec<String>>,
    /// Fixed bytes of a chunk (`header_bytes` of the columns).
    header: usize,
    /// What the buffered rows hold on the engine's result budget (at least their bytes).
    reserve: Charge,
    /// When the current wait began (the lease counts from it).
    waiting_since: Option<Instant>,
    /// Drops (and so ends) the task waiting for the outbox to drain.
    outbox_watch: Option<tokio::sync::oneshot::Sender<()>>,
}

/// What the loop does next when it cannot send.
enum Next {
    /// Go round again.
    Again,
    /// The stream ended.
    End(End),
    /// Nothing to do until credit, a stop or room in the outbox arrives.
    Wait,
}

impl Pump {
    /// Runs while the statement has rows.
    fn step(&mut self, cur: &mut StreamCursor<'_>) -> Phase {
        loop {
            match self.turn(Some(&mut *cur), false) {
                Ok(()) => {}
                Err(Some(end)) => return Phase::Ended(end),
                Err(None) => {
                    if self.columns.is_none() {
                        self.set_columns(cur.columns().to_vec());
                    }
                    return Phase::Exhausted;
                }
            }
        }
    }

    /// Runs after the statement ended, until every buffered row is sent.
    fn finish(&mut self) -> End {
        loop {
            match self.turn(None, true) {
                Ok(()) => {}
                Err(Some(end)) => return end,
                // Not returned once the source is gone; treat it as the end anyway.
                Err(None) => return End::Done(Vec::new(), 0),
            }
        }
    }

    fn set_columns(&mut self, columns: Vec<String>) {
        self.header = header_bytes(&columns);
        self.flow.set_max_rows(self.settings.max_response.saturating_sub(self.header).max(1));
        self.columns = Some(columns);
    }

    /// One turn of the loop. Err(Some) ends the stream; Err(None): the statement has no more rows.
    fn turn(&mut self, mut source: Option<&mut StreamCursor<'_>>, eof: bool) -> Result<(), Option<End>> {
        if self.ctl.has_news() {
            let (credit, stop) = self.ctl.take();
            if let Some(stop) = stop {
                return Err(Some(End::Stopped(stop)));
            }
            if credit > 0 {
                self.flow.grant(credit);
                self.waiting_since = None;
            }
        }
        let now = Instant::now();
        // Whether a chunk is ready but the connection's outbox is full.
        let mut outbox_full = false;
        if self.flow.should_send(eof, now) {
            if !self.budget.is_full() {
                let (rows, bytes) = self.flow.take_chunk(now);
                if eof && self.flow.is_empty() {
                    return Err(Some(End::Done(rows, bytes)));
                }
                self.send_chunk(rows, bytes, None);
                self.waiting_since = None;
                self.outbox_watch = None;
                return Ok(());
            }
            // The client is not reading its socket: the chunk waits for the writer
            // to flush (reading may go on up to the window meanwhile).
            outbox_full = true;
        }
        if eof && self.flow.is_empty() {
            // The last chunk carries no rows: it needs no credit.
            return Err(Some(End::Done(Vec::new(), 0)));
        }
        let next = if !eof && self.flow.may_read() {
            match source.as_mut() {
                Some(cur) => match cur.next_row() {
                    Ok(Some(row)) => {
                        if self.columns.is_none() {
                            self.set_columns(cur.columns().to_vec());
                        }
                        let size = self.header + row.1;
                        if size > self.settings.max_response {
                            let max = self.settings.max_response as u64;
                            return Err(Some(End::Failed(limit_error(
                                LimitKind::ResponseBytes,
                                max,
                                Some(size as u64),
                            ))));
                        }
                        self.buffer(row, now)
                    }
                    Ok(None) => return Err(None),
                    Err(e) => return Err(Some(End::Failed(e))),
                },
                None => return Err(None),
            }
        } else {
            Next::Wait
        };
        match next {
            Next::Again => Ok(()),
            Next::End(end) => Err(Some(end)),
            Next::Wait => {
                if let Some(cur) = source {
                    cur.pause();
                }
                if outbox_full {
                    self.watch_outbox();
                }
                let since = *self.waiting_since.get_or_insert(now);
                let waited = now.duration_since(since);
                if waited >= self.lease {
                    let e = err(
                        SqliteErrorCode::StreamExpired,
                        &format!(
                            "the stream waited {} ms (its lease) for credit or for its connection to read; it was \
                             closed and its snapshot freed",
                            self.lease.as_millis()
                        ),
                        Some(false),
                    );
                    return Err(Some(End::Failed(e)));
                }
                self.ctl.wait(self.lease - waited);
                Ok(())
            }
        }
    }

    /// Buffers a row once its bytes are reserved on the engine's result budget.
    fn buffer(&mut self, row: SizedRow, now: Instant) -> Next {
        let need = self.flow.buffered() + row.1;
        if self.reserve.engine_bytes() < need {
            // In steps of an eighth of the window (at most CHUNK): few atomic
            // operations, and a stream never reserves much more than it buffers.
            let step = (need - self.reserve.engine_bytes()).max(CHUNK.min(self.settings.window / 8).max(1));
            match self.budget.try_charge_engine(step) {
                Ok(c) => self.reserve.merge(c),
                Err(refused) => {
                    let limit = match refused {
                        crate::budget::Refused::Connection(l) | crate::budget::Refused::Engine(l) => l,
                    };
                    let mut e = refused.sqlite_error();
                    e.limit = Some(envoy_protocol::LimitExceeded {
                        kind: LimitKind::ResultMemoryBytes,
                        max: limit as u64,
                        actual: None,
                    });
                    return Next::End(End::Failed(e));
                }
            }
        }
        self.flow.push(row, now);
        self.waiting_since = None;
        Next::Again
    }

    /// Wakes the thread once the connection's outbox is below its limit (a
    /// watcher set up earlier is dropped, and so ends).
    fn watch_outbox(&mut self) {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let budget = self.budget.clone();
        let ctl = self.ctl.clone();
        self.runtime.spawn(async move {
            tokio::select! {
                _ = budget.wait_below_limit() => ctl.poke(),
                _ = rx => {}
            }
        });
        self.outbox_watch = Some(tx);
    }

    /// Queues a chunk with its part of the reservation.
    fn send_chunk(&mut self, rows: Vec<Vec<Value>>, bytes: usize, cost: Option<SqlCost>) {
        let columns = if self.sequence == 0 { Some(self.columns.clone().unwrap_or_default()) } else { None };
        // The rows' engine reservation travels with the chunk, and the chunk is now
        // charged to the connection too (unchecked, like any answer being queued: the
        // stream does not send while the outbox is full, so it overshoots by at most
        // this chunk).
        let mut charge = self.reserve.split_off(bytes);
        let overhead = CHUNK_OVERHEAD + if columns.is_some() { self.header } else { 0 };
        charge.merge(Charge::force(&self.budget, bytes + overhead));
        let done = cost.is_some();
        let msg = ToEnvoy::SqliteStreamChunk(ToEnvoySqliteStreamChunk {
            request_id: self.request_id,
            sequence: self.sequence,
            columns,
            rows,
            done,
            cost,
        });
        self.sequence += 1;
        self.metrics.stream_chunk(bytes);
        self.outbox.send_batch(vec![msg], charge);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(size: usize) -> SizedRow {
        (vec![Value::Integer(size as i64)], size)
    }

    #[test]
    fn chunks_stay_within_credit_plus_one_row_and_the_response_bound() {
        let t = Instant::now();
        let mut f = Flow::new(250, 1000, 10_000);
        let mut sent = 0usize;
        for _ in 0..6 {
            f.push(row(100), t);
        }
        assert!(f.should_send(false, t), "the buffer holds the credit");
        let (rows, bytes) = f.take_chunk(t);
        sent += bytes;
        assert_eq!((rows.len(), bytes), (3, 300), "rows while below the credit: the last one overruns");
        assert!(sent <= 250 + 100);
        assert!(f.credit() < 0);
        assert!(!f.should_send(true, t), "no credit left: nothing leaves");
        f.grant(50);
        assert!(!f.should_send(true, t), "credit back to 0: still nothing");
        f.grant(10);
        assert!(f.should_send(true, t));
        let (rows, _) = f.take_chunk(t);
        assert_eq!(rows.len(), 1, "a row larger than the credit still progresses");
        // The response bound holds whatever the credit.
        let mut f = Flow::new(u32::MAX, 1_000_000, 250);
        for _ in 0..5 {
            f.push(row(100), t);
        }
        let (rows, bytes) = f.take_chunk(t);
        assert_eq!((rows.len(), bytes), (2, 200));
    }

    #[test]
    fn reading_stops_at_the_window_and_waits_for_credit() {
        let t = Instant::now();
        let mut f = Flow::new(0, 300, 10_000);
        while f.may_read() {
            f.push(row(120), t);
        }
        assert_eq!(f.buffered(), 360, "a window plus at most one row");
        assert!(!f.should_send(false, t), "no credit");
        f.grant(1);
        assert!(f.should_send(false, t), "credit and a full window: send");
        let (rows, _) = f.take_chunk(t);
        assert_eq!(rows.len(), 1);
        assert!(f.may_read());
    }

    #[test]
    fn a_slow_statement_sends_early() {
        let t = Instant::now();
        let mut f = Flow::new(10_000, 10_000, 10_000);
        f.push(row(10), t);
        assert!(!f.should_send(false, t));
        assert!(f.should_send(false, t + EARLY_SEND));
    }

    #[test]
    fn stops_keep_the_strongest_reason_and_wake_a_waiter() {
        let ctl = Arc::new(Ctl::default());
        ctl.credit(10);
        ctl.stop(Stop::Cancel);
        ctl.stop(Stop::Closed);
        ctl.stop(Stop::ActorStopping);
        assert!(ctl.has_news());
        assert_eq!(ctl.take(), (10, Some(Stop::Closed)));
        assert!(!ctl.has_news());
        let waiter = {
            let ctl = ctl.clone();
            std::thread::spawn(move || {
                ctl.wait(Duration::from_secs(600));
                ctl.take()
            })
        };
        ctl.credit(7);
        assert_eq!(waiter.join().unwrap(), (7, Some(Stop::Closed)));
    }

    #[test]
    fn the_registry_bounds_streams_and_stops_an_actors_streams() {
        let r = StreamRegistry::new(2);
        let (a, b) = (Arc::new(Ctl::default()), Arc::new(Ctl::default()));
        let ia = r.register("a", 1, a.clone()).unwrap();
        r.register("b", 1, b.clone()).unwrap();
        assert!(r.register("c", 1, Arc::new(Ctl::default())).is_none());
        r.stop_actor("a", 2);
        assert_eq!(a.stopped(), None, "another generation is not touched");
        r.stop_actor("a", 1);
        assert_eq!((a.stopped(), b.stopped()), (Some(Stop::ActorStopping), None));
        r.forget(ia);
        assert_eq!(r.open(), 1);
    }
}
