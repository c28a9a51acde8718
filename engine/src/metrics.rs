//! The engine's metrics, served as Prometheus text at `GET /metrics`.
//!
//! One [`Metrics`] per running engine (tests run several engines in one process,
//! so nothing here is global). Every handle used on the request path is made
//! once at start: counting is an atomic add or a histogram observe, with no
//! label lookup, allocation or lock. Label lookups happen only on paths that are
//! already slow or rare (an error answer, a drain) and at scrape time.
//!
//! Gauges that describe state the engine already keeps (actors by state, open
//! actor databases, requests in flight, result bytes held, paused reads) are not
//! counted twice:
//! [`Metrics::render`] reads them from the engine when scraped.
//!
//! specs/engine.md ("Metrics and logs") lists every metric and its labels.

use crate::state::EngineState;
use envoy_protocol::{GetOrCreateActorResult, KvResponseData, SqliteExecResult, SqliteExecuteResult, ToEnvoy};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Content type of the Prometheus text exposition format this module writes.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Why the metric set could not be built or rendered.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The prometheus crate refused a metric definition or the encoding.
    #[error("metrics: {0}")]
    Prometheus(#[from] prometheus::Error),
    /// The encoder wrote bytes that are not UTF-8 (cannot happen with the text encoder).
    #[error("metrics output is not UTF-8: {0}")]
    Utf8(#[from] std::string::FromUtf8Error),
}

/// What kind of request a latency sample or an in-flight count belongs to
/// (the `kind` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// `SqliteExecute` (read-only intent).
    Execute,
    /// `SqliteExecuteWrite`.
    ExecuteWrite,
    /// `SqliteExec` (one or more statements, no parameters).
    Exec,
    /// A KV request.
    Kv,
    /// `GetOrCreateActor` (placement).
    GetOrCreate,
    /// v5 `SqliteBatch` (an atomic batch; READ batches may run on a reader).
    Batch,
    /// v5 interactive transaction requests (Begin, TransactionExecute, Commit,
    /// Rollback); `read` for those of READ transactions.
    Transaction,
}

impl RequestKind {
    /// Every kind, in the order of [`Metrics::latency`]'s first index.
    pub const ALL: [RequestKind; 7] = [
        RequestKind::Execute,
        RequestKind::ExecuteWrite,
        RequestKind::Exec,
        RequestKind::Kv,
        RequestKind::GetOrCreate,
        RequestKind::Batch,
        RequestKind::Transaction,
    ];

    /// Position in [`RequestKind::ALL`].
    fn index(self) -> usize {
        match self {
            RequestKind::Execute => 0,
            RequestKind::ExecuteWrite => 1,
            RequestKind::Exec => 2,
            RequestKind::Kv => 3,
            RequestKind::GetOrCreate => 4,
            RequestKind::Batch => 5,
            RequestKind::Transaction => 6,
        }
    }

    /// The `kind` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::Execute => "execute",
            RequestKind::ExecuteWrite => "execute_write",
            RequestKind::Exec => "exec",
            RequestKind::Kv => "kv",
            RequestKind::GetOrCreate => "get_or_create",
            RequestKind::Batch => "batch",
            RequestKind::Transaction => "transaction",
        }
    }
}

/// Which lane a request was admitted to (the `route` label): `read` for
/// statements the router sent to a reader lane, `write` for everything else
/// (writes, Exec, KV, placement).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteLabel {
    /// A reader lane.
    Read,
    /// The writer lane (or, for placement, the registry).
    Write,
}

impl RouteLabel {
    /// Every route, in the order of [`Metrics::latency`]'s second index.
    pub const ALL: [RouteLabel; 2] = [RouteLabel::Read, RouteLabel::Write];

    /// Position in [`RouteLabel::ALL`].
    fn index(self) -> usize {
        match self {
            RouteLabel::Read => 0,
            RouteLabel::Write => 1,
        }
    }

    /// The `route` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteLabel::Read => "read",
            RouteLabel::Write => "write",
        }
    }

    /// The label of a scheduler lane.
    pub fn of(lane: crate::sql::route::Lane) -> Self {
        match lane {
            crate::sql::route::Lane::Reader => RouteLabel::Read,
            crate::sql::route::Lane::Writer => RouteLabel::Write,
        }
    }
}

/// Which store a group commit committed (the `store` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// The actor's SQL database.
    Sql,
    /// The actor's KV store.
    Kv,
}

impl Store {
    fn index(self) -> usize {
        match self {
            Store::Sql => 0,
            Store::Kv => 1,
        }
    }
}

/// Bucket bounds (seconds) for request and commit latencies: 50 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Bucket bounds for the number of requests in one group commit.
const GROUP_SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
/// Bucket bounds (seconds) for drain durations: 1 ms to 2 min.
const DRAIN_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];

/// Actor states as the `state` label of `envoy_actors` (every one is always present).
const ACTOR_STATES: [(crate::ActorState, &str); 4] = [
    (crate::ActorState::Starting, "starting"),
    (crate::ActorState::Running, "running"),
    (crate::ActorState::Stopping, "stopping"),
    (crate::ActorState::Stopped, "stopped"),
];

/// Every metric of one engine, and the registry that renders them.
pub struct Metrics {
    /// Owns every metric below; `render` gathers from it.
    registry: Registry,
    /// Upgraded envoy WebSocket connections being served (hello or not).
    pub connections_open: IntGauge,
    /// Connections whose hello attached an envoy session (the envoys this engine serves now).
    pub envoys_attached: IntGauge,
    /// SQL and KV requests admitted and not yet answered, engine-wide; summed from the
    /// engine's in-flight counters at scrape (a second count on the request path
    /// would cost two contended atomics per request).
    requests_inflight: IntGauge,
    /// Request latency from admission to answer queued, `[kind][route]`, made once so
    /// observing needs no label lookup. Only `execute` has a `read` series; the other
    /// kinds always run on the writer lane, and their read slot is their write series.
    latency: [[Histogram; 2]; 7],
    /// Error answers by request kind and code; looked up per error (errors are not the fast path).
    errors: IntCounterVec,
    /// Requests per successful group commit, `[store]`.
    group_size: [Histogram; 2],
    /// Time of the group's COMMIT (the fsync at `--durability fsync`), `[store]`.
    commit_seconds: [Histogram; 2],
    /// Group commits that failed, `[store]`: every member was answered with the error.
    commits_failed: [IntCounter; 2],
    /// Drains finished, by stop reason (a drain of an actor that was not live is not counted).
    drains: IntCounterVec,
    /// Wall time of each drain from the stop request to Stopped.
    drain_seconds: Histogram,
    /// Drains whose in-flight work outlived the stop threshold and was interrupted.
    drains_past_threshold: IntCounter,
    /// Requests answered INTERRUPTED by drains.
    drain_interrupted_requests: IntCounter,
    /// Bytes of binary frames read from envoy sockets.
    bytes_in: IntCounter,
    /// Bytes of binary frames written to envoy sockets.
    bytes_out: IntCounter,
    /// Binary frames read from envoy sockets.
    frames_in: IntCounter,
    /// Binary frames written to envoy sockets.
    frames_out: IntCounter,
    /// Actors by state, refreshed from the registry at scrape.
    actors: IntGaugeVec,
    /// Actor databases open now, read from the open-database cap at scrape.
    open_actor_dbs: IntGauge,
    /// Result bytes held engine-wide (built, not flushed), read at scrape.
    result_bytes_held: IntGauge,
    /// Connections whose reading is paused by backpressure, read at scrape.
    reads_paused: IntGauge,
    /// v5 interactive transactions open now (held by each transaction's driver).
    pub transactions_open: IntGauge,
    /// v5 interactive transactions ended, by how (committed, rolled_back,
    /// commit_failed, or the engine's TransactionEndReason).
    transaction_ends: IntCounterVec,
    /// v5 result streams open now, read from the engine's stream registry at scrape.
    streams_open: IntGauge,
    /// Chunks sent by result streams (how finely results were cut).
    stream_chunks: IntCounter,
    /// Row bytes (decoded size, what credit counts) sent by result streams.
    stream_row_bytes: IntCounter,
    /// Result streams ended, by how (done, cancelled, expired, interrupted, failed, closed).
    stream_ends: IntCounterVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Registers `c` and hands it back.
fn reg<C: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: C) -> Result<C, MetricsError> {
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

impl Metrics {
    /// Builds and registers every metric.
    pub fn new() -> Result<Self, MetricsError> {
        let r = Registry::new();
        let gauge = |name: &str, help: &str| reg(&r, IntGauge::new(name, help)?);
        let counter = |name: &str, help: &str| reg(&r, IntCounter::new(name, help)?);

        let latency_vec = reg(
            &r,
            HistogramVec::new(
                HistogramOpts::new(
                    "envoy_request_duration_seconds",
                    "Time from a request's admission to its answer being queued for the socket, by kind and route",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["kind", "route"],
            )?,
        )?;
        // Only Execute, Batch and Transaction (READ) can run on a reader; every other kind takes the
        // writer lane (or the registry), so its read slot shares the write series
        // and no series that can never move is exported.
        let latency = RequestKind::ALL.map(|k| {
            let write = latency_vec.with_label_values(&[k.as_str(), RouteLabel::Write.as_str()]);
            let read = match k {
                RequestKind::Execute | RequestKind::Batch | RequestKind::Transaction => {
                    latency_vec.with_label_values(&[k.as_str(), RouteLabel::Read.as_str()])
                }
                RequestKind::ExecuteWrite | RequestKind::Exec | RequestKind::Kv | RequestKind::GetOrCreate => {
                    write.clone()
                }
            };
            [read, write]
        });

        let group_vec = reg(
            &r,
            HistogramVec::new(
                HistogramOpts::new(
                    "envoy_group_commit_size",
                    "Requests carried by one successful group commit, by store",
                )
                .buckets(GROUP_SIZE_BUCKETS.to_vec()),
                &["store"],
            )?,
        )?;
        let commit_vec = reg(
            &r,
            HistogramVec::new(
                HistogramOpts::new(
                    "envoy_commit_duration_seconds",
                    "Time of a group commit's COMMIT (includes the fsync at --durability fsync), by store",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["store"],
            )?,
        )?;
        let failed_vec = reg(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "envoy_group_commits_failed_total",
                    "Group commits that failed (every member got the error), by store",
                ),
                &["store"],
            )?,
        )?;
        let stores = ["sql", "kv"];

        Ok(Self {
            connections_open: gauge("envoy_connections_open", "Envoy WebSocket connections being served")?,
            envoys_attached: gauge("envoy_envoys_attached", "Connections whose hello attached an envoy session")?,
            requests_inflight: gauge("envoy_requests_inflight", "SQL and KV requests admitted and not yet answered")?,
            latency,
            errors: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "envoy_request_errors_total",
                        "Error answers (rejections included) by request kind and wire error code",
                    ),
                    &["kind", "code"],
                )?,
            )?,
            group_size: stores.map(|s| group_vec.with_label_values(&[s])),
            commit_seconds: stores.map(|s| commit_vec.with_label_values(&[s])),
            commits_failed: stores.map(|s| failed_vec.with_label_values(&[s])),
            drains: reg(
                &r,
                IntCounterVec::new(
                    Opts::new("envoy_drains_total", "Drains of live actors finished, by stop reason"),
                    &["reason"],
                )?,
            )?,
            drain_seconds: reg(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "envoy_drain_duration_seconds",
                        "Wall time of a drain, from stop request to Stopped",
                    )
                    .buckets(DRAIN_BUCKETS.to_vec()),
                )?,
            )?,
            drains_past_threshold: counter(
                "envoy_drains_past_threshold_total",
                "Drains whose in-flight work outlived the stop threshold and was interrupted",
            )?,
            drain_interrupted_requests: counter(
                "envoy_drain_interrupted_requests_total",
                "Requests answered INTERRUPTED by drains",
            )?,
            bytes_in: counter("envoy_bytes_in_total", "Bytes of binary frames read from envoy sockets")?,
            bytes_out: counter("envoy_bytes_out_total", "Bytes of binary frames written to envoy sockets")?,
            frames_in: counter("envoy_frames_in_total", "Binary frames read from envoy sockets")?,
            frames_out: counter("envoy_frames_out_total", "Binary frames written to envoy sockets")?,
            actors: reg(
                &r,
                IntGaugeVec::new(Opts::new("envoy_actors", "Actors the registry knows, by state"), &["state"])?,
            )?,
            open_actor_dbs: gauge("envoy_open_actor_dbs", "Actor databases open now (slots of --max-open-actor-dbs)")?,
            result_bytes_held: gauge(
                "envoy_result_bytes_held",
                "Bytes of results built and not yet flushed, engine-wide",
            )?,
            reads_paused: gauge(
                "envoy_reads_paused",
                "Connections whose reading is paused because their outbox is over budget",
            )?,
            transactions_open: gauge("envoy_transactions_open", "Interactive transactions (v5) open now")?,
            transaction_ends: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "envoy_transaction_ends_total",
                        "Interactive transactions (v5) ended, by how: committed, rolled_back, commit_failed, or the \
                         engine's end reason",
                    ),
                    &["reason"],
                )?,
            )?,
            streams_open: gauge("envoy_streams_open", "v5 result streams open now")?,
            stream_chunks: counter("envoy_stream_chunks_total", "Chunks sent by v5 result streams")?,
            stream_row_bytes: counter(
                "envoy_stream_row_bytes_total",
                "Row bytes (decoded size, as credit counts them) sent by v5 result streams",
            )?,
            stream_ends: reg(
                &r,
                IntCounterVec::new(
                    Opts::new("envoy_stream_ends_total", "v5 result streams ended, by how they ended"),
                    &["end"],
                )?,
            )?,
            registry: r,
        })
    }

    /// Starts timing an admitted request; the latency is recorded when the returned
    /// timer is dropped (once the request's answer has been queued).
    pub fn request(self: &Arc<Self>, kind: RequestKind, route: RouteLabel) -> RequestTimer {
        RequestTimer { metrics: self.clone(), kind, route, started: Instant::now() }
    }

    /// Counts `msg` if it is an error answer to a request. Called for every message
    /// queued toward an envoy; anything that is not an error costs one match.
    pub fn count_answer(&self, msg: &ToEnvoy) {
        let (kind, code) = match msg {
            ToEnvoy::SqliteExecuteResponse(r) => match &r.result {
                SqliteExecuteResult::ExecuteResult(_) => return,
                SqliteExecuteResult::SqliteError(e) => ("execute", e.code.wire_name()),
                SqliteExecuteResult::SqliteFenceMismatch(_) => ("execute", "FENCE_MISMATCH"),
            },
            ToEnvoy::SqliteExecResponse(r) => match &r.result {
                SqliteExecResult::QueryResult(_) => return,
                SqliteExecResult::SqliteError(e) => ("exec", e.code.wire_name()),
                SqliteExecResult::SqliteFenceMismatch(_) => ("exec", "FENCE_MISMATCH"),
            },
            ToEnvoy::KvResponse(r) => match &r.data {
                KvResponseData::KvErrorResponse(e) => ("kv", e.code.wire_name()),
                _ => return,
            },
            ToEnvoy::GetOrCreateActorResponse(r) => match &r.result {
                GetOrCreateActorResult::GetOrCreateActorError(e) => ("get_or_create", e.code.wire_name()),
                GetOrCreateActorResult::GetOrCreateActorOk(_) => return,
            },
            // v5 interactive transactions (kind `transaction`).
            ToEnvoy::SqliteBeginResponse(r) => match &r.result {
                envoy_protocol::SqliteBeginResult::SqliteTransactionStarted(_) => return,
                envoy_protocol::SqliteBeginResult::SqliteError(e) => ("transaction", e.code.wire_name()),
                envoy_protocol::SqliteBeginResult::SqliteFenceMismatch(_) => ("transaction", "FENCE_MISMATCH"),
            },
            ToEnvoy::SqliteTransactionExecuteResponse(r) => match &r.result {
                SqliteExecuteResult::ExecuteResult(_) => return,
                SqliteExecuteResult::SqliteError(e) => ("transaction", e.code.wire_name()),
                SqliteExecuteResult::SqliteFenceMismatch(_) => ("transaction", "FENCE_MISMATCH"),
            },
            ToEnvoy::SqliteCommitResponse(r) => match &r.result {
                envoy_protocol::SqliteCommitResult::SqliteCommitted(_) => return,
                envoy_protocol::SqliteCommitResult::SqliteError(e) => ("transaction", e.code.wire_name()),
                envoy_protocol::SqliteCommitResult::SqliteFenceMismatch(_) => ("transaction", "FENCE_MISMATCH"),
            },
            ToEnvoy::SqliteRollbackResponse(r) => match &r.result {
                envoy_protocol::SqliteRollbackResult::SqliteRolledBack => return,
                envoy_protocol::SqliteRollbackResult::SqliteError(e) => ("transaction", e.code.wire_name()),
                envoy_protocol::SqliteRollbackResult::SqliteFenceMismatch(_) => ("transaction", "FENCE_MISMATCH"),
            },
            _ => return,
        };
        self.errors.with_label_values(&[kind, code]).inc();
    }

    /// Records one group commit of `members` requests that took `took`.
    pub fn group_commit(&self, store: Store, members: u64, took: Duration, ok: bool) {
        let i = store.index();
        self.commit_seconds[i].observe(took.as_secs_f64());
        if ok {
            self.group_size[i].observe(members as f64);
        } else {
            self.commits_failed[i].inc();
        }
    }

    /// Records a finished drain (only drains of live actors: `report.was_running`).
    pub fn drain_finished(&self, reason: envoy_protocol::StopReason, report: &crate::DrainReport) {
        if !report.was_running {
            return;
        }
        self.drains.with_label_values(&[reason.wire_name()]).inc();
        self.drain_seconds.observe(report.duration_ms as f64 / 1000.0);
        self.drain_interrupted_requests.inc_by(report.interrupted);
        if !report.drained_in_time {
            self.drains_past_threshold.inc();
        }
    }

    /// Counts one interactive transaction ended `how` (a rare path: a label lookup).
    pub fn transaction_ended(&self, how: &str) {
        self.transaction_ends.with_label_values(&[how]).inc();
    }

    /// Counts one binary frame read from an envoy socket.
    pub fn frame_in(&self, bytes: usize) {
        self.frames_in.inc();
        self.bytes_in.inc_by(bytes as u64);
    }

    /// Counts one binary frame written to an envoy socket.
    pub fn frame_out(&self, bytes: usize) {
        self.frames_out.inc();
        self.bytes_out.inc_by(bytes as u64);
    }

    /// Counts one chunk of a result stream carrying `row_bytes`.
    pub fn stream_chunk(&self, row_bytes: usize) {
        self.stream_chunks.inc();
        self.stream_row_bytes.inc_by(row_bytes as u64);
    }

    /// Counts a result stream's end (`end`: done, cancelled, expired, interrupted, failed, closed).
    pub fn stream_ended(&self, end: &str) {
        self.stream_ends.with_label_values(&[end]).inc();
    }

    /// Raises `gauge` until the returned guard is dropped.
    pub fn hold(gauge: &IntGauge) -> GaugeHold {
        gauge.inc();
        GaugeHold(gauge.clone())
    }

    /// The Prometheus text of every metric, refreshing the gauges read from `state`.
    pub fn render(&self, state: &EngineState) -> Result<String, MetricsError> {
        let mut by_state = [0i64; ACTOR_STATES.len()];
        for a in state.registry.list() {
            if let Some(i) = ACTOR_STATES.iter().position(|(s, _)| *s == a.state) {
                by_state[i] += 1;
            }
        }
        for ((_, label), n) in ACTOR_STATES.iter().zip(by_state) {
            self.actors.with_label_values(&[label]).set(n);
        }
        self.open_actor_dbs.set(state.generations.open_dbs().count() as i64);
        self.requests_inflight.set(state.generations.total_inflight() as i64);
        self.result_bytes_held.set(state.result_budget.used() as i64);
        self.reads_paused.set(state.reads_paused.load(std::sync::atomic::Ordering::Acquire) as i64);
        self.streams_open.set(state.streams.open() as i64);
        let mut out = Vec::with_capacity(16 * 1024);
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(String::from_utf8(out)?)
    }
}

/// An admitted request being timed. Dropped once its answer is queued (it lives
/// in the scheduler's `Job`, dropped before its in-flight guard, or in the
/// placement task): the drop observes the latency.
pub struct RequestTimer {
    /// Where to record; one reference count per request, no allocation.
    metrics: Arc<Metrics>,
    /// The `kind` label.
    kind: RequestKind,
    /// The `route` label (the lane chosen at admission; see [`RequestTimer::rerouted`]).
    route: RouteLabel,
    /// When the request was admitted.
    started: Instant,
}

impl RequestTimer {
    /// The same timer, now counted on the writer lane (a read candidate that turned out to write).
    pub fn rerouted(mut self, route: RouteLabel) -> Self {
        self.route = route;
        self
    }
}

impl Drop for RequestTimer {
    fn drop(&mut self) {
        self.metrics.latency[self.kind.index()][self.route.index()].observe(self.started.elapsed().as_secs_f64());
    }
}

impl std::fmt::Debug for RequestTimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestTimer").field("kind", &self.kind).field("route", &self.route).finish()
    }
}

/// Keeps a gauge raised while alive (an open connection, an attached envoy).
#[derive(Debug)]
pub struct GaugeHold(IntGauge);

impl Drop for GaugeHold {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_has_help_and_a_prefix() {
        let m = Arc::new(Metrics::new().unwrap());
        drop(m.request(RequestKind::Kv, RouteLabel::Write));
        m.group_commit(Store::Sql, 3, Duration::from_millis(1), true);
        let mut out = Vec::new();
        TextEncoder::new().encode(&m.registry.gather(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
            assert!(line.starts_with("envoy_"), "{line}");
        }
        assert!(text.contains("envoy_request_duration_seconds_count{kind=\"kv\",route=\"write\"} 1"), "{text}");
        assert!(text.contains("envoy_group_commit_size_sum{store=\"sql\"} 3"), "{text}");
    }
}
