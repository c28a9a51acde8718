//! One envoy connection: the read loop.
//!
//! Frames are decoded here and dispatched; nothing slow runs on this task:
//! SQL/KV go to the [`scheduler`] (blocking threads), get-or-create and drains
//! run in their own tasks, answers leave through the [`writer`]. A malformed
//! frame closes only this connection (PROTOCOL_ERROR with the decode error as
//! reason); work it already accepted still completes.

pub mod admission;
pub mod scheduler;
pub mod session;
mod v5;
pub mod writer;

use crate::actor::lifecycle;
use crate::metrics::{RequestKind, RouteLabel};
use crate::sql::route::{Lane, Route};
use crate::state::EngineState;
use admission::{Pending, Rejection};
use axum::extract::ws::{Message, WebSocket};
use envoy_protocol::{
    close, decode_to_engine, DecodeLimits, ProtocolMetadata, SqliteExecResult, SqliteExecuteResult, ToEngine, ToEnvoy,
    ToEnvoyAckEvents, ToEnvoyInit, ToEnvoyKvResponse, ToEnvoyPing, ToEnvoySqliteExecResponse,
    ToEnvoySqliteExecuteResponse,
};
use futures_util::StreamExt;
use scheduler::{Job, Scheduler, SchedulerConfig, Work};
use session::Session;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;
use writer::Outbox;

/// The connection's query parameters (`/envoys/connect?namespace=..&envoy_key=..&pool_name=..&version=..`).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ConnectParams {
    /// Actors this connection may see and place.
    pub namespace: String,
    /// Stable envoy identity (resume, eviction, placement).
    pub envoy_key: String,
    /// Envoy pool (must match the hello).
    pub pool_name: String,
    /// Host software version (not the protocol version).
    #[serde(default)]
    pub version: Option<u32>,
}

/// A frame that decoded but breaks the protocol: the connection closes with
/// PROTOCOL_ERROR and this as the reason.
#[derive(Debug, thiserror::Error)]
enum DispatchError {
    /// The hello (`ToEngineMetadata`) comes once, first.
    #[error("a second hello on one connection")]
    SecondHello,
}

/// What the read loop knows about its connection.
struct Conn {
    /// Engine-wide state (registry, sessions, executors).
    state: Arc<EngineState>,
    /// Tells this connection apart from others with the same envoy key.
    conn_id: u64,
    /// Namespace and envoy key every request is checked against.
    params: ConnectParams,
    /// Negotiated protocol version.
    version: u16,
    /// Queue to this connection's writer task.
    outbox: Outbox,
    /// The envoy session (command log, event index) this connection serves.
    session: Arc<Session>,
    /// Runs accepted SQL/KV work on blocking lanes.
    scheduler: Scheduler,
    /// Accepted, unanswered requests on this connection (maxPendingRequests).
    pending: Arc<Pending>,
    /// v5 interactive transactions of this connection; dropped with it (they roll back).
    transactions: crate::sql::transaction::Transactions,
    /// v5 result streams open on this connection; dropped with it, which ends them.
    streams: crate::sql::stream::ConnStreams,
    /// Set when the envoy said it is going away on purpose (`ToEngineStopping`):
    /// when its socket ends, its session is dropped at once, without waiting out
    /// the lost threshold for a resume that will not come.
    envoy_stopping: std::sync::atomic::AtomicBool,
    /// Cluster mode: the links to the owner nodes of this envoy's actors placed
    /// elsewhere, and their routes (`cluster::relay`). None on one node.
    #[cfg(feature = "cluster")]
    relays: Option<Arc<crate::cluster::relay::Relays>>,
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Serves one upgraded socket of `identity` until it closes. `presented_token`:
/// what the envoy authenticated with (cluster mode presents it again to owner nodes).
pub async fn serve(
    socket: WebSocket,
    state: Arc<EngineState>,
    params: ConnectParams,
    version: u16,
    identity: crate::auth::Identity,
    presented_token: Option<String>,
) {
    let Some(token) = state.tasks.token() else { return };
    let _open = crate::metrics::Metrics::hold(&state.metrics.connections_open);
    let conn_id = state.next_conn_id();
    let span = tracing::info_span!("envoy", conn_id, identity = %identity.name, namespace = %params.namespace,
        envoy_key = %params.envoy_key, version, host_version = ?params.version);
    serve_inner(socket, state, params, version, conn_id, &identity.name, presented_token).instrument(span).await;
    drop(token);
}

/// The close a failed read of the socket deserves, if the peer can still be told.
/// WebSocket protocol violations (unmasked client frame, reserved opcode or bits,
/// continuation without a start, invalid UTF-8 in text) are 1002; a message or
/// frame over maxFrameBytes is 1009; I/O errors and resets get no close frame.
/// tungstenite reports a violation without changing its state, so the close frame
/// queued here is still written (its state is still Active).
fn close_for_read_error(e: axum::Error) -> Option<(u16, String)> {
    use tungstenite::error::Error as WsError;
    let inner = e.into_inner();
    let ws = match inner.downcast::<WsError>() {
        Ok(ws) => *ws,
        Err(other) => {
            tracing::debug!(error = %other, "socket read failed");
            return None;
        }
    };
    match ws {
        WsError::Capacity(c) => Some((close::MESSAGE_TOO_BIG, format!("frame exceeds maxFrameBytes: {c}"))),
        WsError::Protocol(p) => Some((close::PROTOCOL_ERROR, format!("WebSocket protocol violation: {p}"))),
        WsError::Utf8(_) => Some((close::PROTOCOL_ERROR, "WebSocket protocol violation: invalid UTF-8".into())),
        other => {
            tracing::debug!(error = %other, "socket read failed");
            None
        }
    }
}

async fn serve_inner(
    socket: WebSocket,
    state: Arc<EngineState>,
    params: ConnectParams,
    version: u16,
    conn_id: u64,
    owner: &str,
    token: Option<String>,
) {
    #[cfg(not(feature = "cluster"))]
    let _ = token;
    let (sink, mut stream) = socket.split();
    let budget = crate::budget::ConnBudget::new(state.result_budget.clone(), state.config.max_connection_outbox_bytes);
    let (outbox, rx) = Outbox::new(budget, state.metrics.clone());
    let mut writer = tokio::spawn(writer::run(sink, rx, version, state.metrics.clone()));
    let limits = DecodeLimits::for_frame(state.config.limits.max_frame_bytes as usize);

    // The hello comes first.
    let mut shutdown = state.shutdown.clone();
    let hello = tokio::select! {
        r = tokio::time::timeout(state.config.handshake_timeout, stream.next()) => r,
        _ = writer_finished(&mut writer) => return,
        _ = shutdown.recv() => return outbox.close(close::GOING_AWAY, "engine shutting down"),
    };
    let hello = match hello {
        Err(_) => return outbox.close(close::PROTOCOL_ERROR, "no hello (ToEngineMetadata) in time"),
        Ok(Some(Ok(Message::Binary(b)))) => match decode_to_engine(&b, version, &limits) {
            Ok(ToEngine::Metadata(m)) => m,
            Ok(_) => {
                return outbox.close(close::PROTOCOL_ERROR, "the first frame must be the hello (ToEngineMetadata)")
            }
            Err(e) => return outbox.close(close::PROTOCOL_ERROR, e.to_string()),
        },
        Ok(Some(Ok(_))) => return outbox.close(close::PROTOCOL_ERROR, "the first frame must be a binary hello"),
        Ok(Some(Err(e))) => {
            if let Some((code, reason)) = close_for_read_error(e) {
                outbox.close(code, reason);
            }
            return;
        }
        Ok(None) => return,
    };
    if hello.envoy_key != params.envoy_key || hello.pool_name != params.pool_name {
        return outbox
            .close(close::INVALID_HELLO, "the hello's envoy key or pool name differs from the connection's query");
    }
    if state.shutdown.is_shutdown() {
        return outbox.close(close::GOING_AWAY, "engine shutting down");
    }
    let cfg = &state.config;
    let init_meta = ProtocolMetadata {
        ping_interval_ms: cfg.ping_interval.as_millis() as u64,
        envoy_lost_threshold_ms: cfg.envoy_lost_threshold.as_millis() as u64,
        actor_stop_threshold_ms: cfg.actor_stop_threshold.as_millis() as u64,
        max_frame_bytes: cfg.limits.max_frame_bytes,
        limits: Some(cfg.limits.protocol_limits()),
        sql_limits: Some(cfg.limits.sql_limits()),
    };
    let attachment = state.sessions.attach(
        &params.namespace,
        &params.envoy_key,
        session::Attaching { conn_id, owner, outbox: &outbox },
        hello.last_command_index,
        |last_event_index| {
            // v5 answers with InitV5: the v4 metadata plus durability and the engine's limits.
            if version >= 5 {
                ToEnvoy::InitV5(envoy_protocol::ToEnvoyInitV5 {
                    envoy_id: params.envoy_key.clone(),
                    last_event_index,
                    metadata: init_meta,
                    metadata_v5: cfg.protocol_metadata_v5(),
                })
            } else {
                ToEnvoy::Init(ToEnvoyInit { envoy_id: params.envoy_key.clone(), last_event_index, metadata: init_meta })
            }
        },
    );
    let attachment = match attachment {
        Ok(a) => a,
        Err(e) => {
            // Another identity created this session between our upgrade check and now.
            tracing::warn!(error = %e, "envoy connection refused after the upgrade");
            return outbox.close(close::UNAUTHORIZED, e.to_string());
        }
    };
    let _attached = crate::metrics::Metrics::hold(&state.metrics.envoys_attached);
    tracing::info!(resumed = attachment.resumed, pool = %params.pool_name, "envoy connected");
    let scheduler = Scheduler::new(
        SchedulerConfig {
            permits: cfg.permits_per_connection,
            reader_lanes: cfg.reader_lanes_per_actor,
            max_batch: cfg.max_batch,
            group: crate::sql::group::GroupLimits {
                max_members: cfg.group_commit_max_members,
                max_open: cfg.group_commit_max_open,
                stats: state.group_stats.clone(),
                metrics: state.metrics.clone(),
            },
            max_transaction_wait: cfg.max_transaction_wait,
            version,
        },
        outbox.clone(),
    );
    // Cluster mode: links to the owners of this envoy's actors placed through other nodes.
    #[cfg(feature = "cluster")]
    let relays = state.cluster.as_ref().map(|node| {
        Arc::new(crate::cluster::relay::Relays::new(
            node.id().to_string(),
            crate::cluster::relay::Presented {
                namespace: params.namespace.clone(),
                envoy_key: params.envoy_key.clone(),
                pool_name: params.pool_name.clone(),
                token,
                version,
            },
            outbox.clone(),
            attachment.session.clone(),
            node.clone(),
            crate::cluster::relay::Bounds {
                max_pending: cfg.limits.max_pending_requests as usize,
                decode_limits: limits,
                // The owner pings every ping interval: a link is dead only once a whole
                // lost threshold passed on top of one.
                silence: cfg.envoy_lost_threshold + cfg.ping_interval,
            },
        ))
    });
    let conn = Conn {
        state: state.clone(),
        conn_id,
        params,
        version,
        outbox: outbox.clone(),
        session: attachment.session,
        scheduler,
        pending: Arc::new(Pending::default()),
        transactions: Default::default(),
        streams: crate::sql::stream::ConnStreams::new(state.clone(), outbox.clone()),
        envoy_stopping: std::sync::atomic::AtomicBool::new(false),
        #[cfg(feature = "cluster")]
        relays,
    };
    let mut lost = conn.read_loop(&mut stream, &mut writer, &limits).await;
    if !lost && conn.envoy_stopping.load(std::sync::atomic::Ordering::Acquire) {
        lost = state.sessions.drop_now(&conn.params.namespace, &conn.params.envoy_key, conn_id);
    }
    let session = conn.session.clone();
    let params = conn.params.clone();
    // Dropping the connection drops its scheduler handle (running lanes finish the
    // accepted work) and its outbox clone.
    drop(conn);
    if lost {
        lifecycle::envoy_lost(&state, &params.namespace, &params.envoy_key);
    } else if let Some(epoch) = session.detach(conn_id) {
        let state = state.clone();
        let threshold = state.config.envoy_lost_threshold;
        tokio::spawn(async move {
            tokio::time::sleep(threshold).await;
            if state.sessions.drop_if_lost(&params.namespace, &params.envoy_key, epoch) {
                tracing::warn!(envoy_key = %params.envoy_key, "envoy did not reconnect within the lost threshold");
                lifecycle::envoy_lost(&state, &params.namespace, &params.envoy_key);
            }
        });
    }
    // The writer ends once every outbox clone is gone (in-flight lanes may still
    // answer into it) or after a queued close frame; wait briefly for that.
    drop(outbox);
    let _ = tokio::time::timeout(Duration::from_secs(1), writer_finished(&mut writer)).await;
    tracing::info!("envoy connection ended");
}

/// Counts a connection whose read loop is paused (its outbox is over budget) while alive.
struct PauseMark(Arc<EngineState>);

impl PauseMark {
    fn new(state: &Arc<EngineState>) -> Self {
        tracing::debug!("outbox over its budget; reading paused");
        state.reads_paused.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        state.read_pauses.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Self(state.clone())
    }
}

impl Drop for PauseMark {
    fn drop(&mut self) {
        self.0.reads_paused.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Resolves when the writer task has ended (pending forever after that, so it can be re-polled safely).
async fn writer_finished(writer: &mut tokio::task::JoinHandle<()>) {
    if writer.is_finished() {
        return;
    }
    let _ = writer.await;
}

impl Conn {
    /// Returns true if the envoy was dropped as silent (lost), false on a normal end.
    async fn read_loop(
        &self,
        stream: &mut futures_util::stream::SplitStream<WebSocket>,
        writer: &mut tokio::task::JoinHandle<()>,
        limits: &DecodeLimits,
    ) -> bool {
        let cfg = &self.state.config;
        let mut ping = tokio::time::interval(cfg.ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_seen = Instant::now();
        // Backpressure: while the bytes queued toward this socket are over the
        // connection's budget, stop reading it (its requests wait in the socket
        // buffers, and the peer's own writes eventually block) until the writer
        // has flushed enough. Pongs are not read meanwhile, so the writer's
        // progress is what shows the peer alive; a peer that neither reads nor is
        // read from for the lost threshold is dropped as lost.
        let budget = self.outbox.budget().clone();
        let mut released_seen = budget.released();
        let mut pause_mark: Option<PauseMark> = None;
        loop {
            let paused = budget.is_full();
            if paused != pause_mark.is_some() {
                pause_mark = paused.then(|| PauseMark::new(&self.state));
            }
            tokio::select! {
                _ = budget.wait_below_limit(), if paused => last_seen = Instant::now(),
                msg = stream.next(), if !paused => match msg {
                    Some(Ok(Message::Binary(b))) => {
                        last_seen = Instant::now();
                        self.state.metrics.frame_in(b.len());
                        match decode_to_engine(&b, self.version, limits) {
                            Ok(m) => {
                                if let Err(e) = self.dispatch(m, b.len()) {
                                    self.outbox.close(close::PROTOCOL_ERROR, e.to_string());
                                    return false;
                                }
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "malformed frame; closing this connection");
                                self.outbox.close(close::PROTOCOL_ERROR, e.to_string());
                                return false;
                            }
                        }
                    }
                    Some(Ok(Message::Text(_))) => {
                        self.outbox.close(close::PROTOCOL_ERROR, "text frames are not part of the envoy protocol");
                        return false;
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => last_seen = Instant::now(),
                    Some(Ok(Message::Close(_))) | None => return false,
                    Some(Err(e)) => {
                        if let Some((code, reason)) = close_for_read_error(e) {
                            tracing::warn!(code, %reason, "closing the connection");
                            self.outbox.close(code, reason);
                        }
                        return false;
                    }
                },
                _ = ping.tick() => {
                    let released = budget.released();
                    if paused && released != released_seen {
                        last_seen = Instant::now();
                    }
                    released_seen = released;
                    if last_seen.elapsed() > cfg.envoy_lost_threshold {
                        tracing::warn!("envoy silent past the lost threshold; dropping it");
                        self.outbox.close(close::GOING_AWAY, "envoy lost: silent past the lost threshold");
                        return self.state.sessions.drop_now(&self.params.namespace, &self.params.envoy_key, self.conn_id);
                    }
                    self.outbox.send(ToEnvoy::Ping(ToEnvoyPing { ts: unix_ms() }));
                }
                _ = writer_finished(writer) => return false,
            }
        }
    }

    /// Handles one decoded frame. Err closes the connection with PROTOCOL_ERROR.
    fn dispatch(&self, msg: ToEngine, frame_len: usize) -> Result<(), DispatchError> {
        let state = &self.state;
        // Cluster mode: a request for an actor placed through another node goes there.
        #[cfg(feature = "cluster")]
        let msg = match &self.relays {
            Some(relays) => match relays.try_forward(msg, |id| state.registry.with(id, |r| r.is_some())) {
                Some(local) => local,
                None => return Ok(()),
            },
            None => msg,
        };
        match msg {
            ToEngine::Metadata(_) => return Err(DispatchError::SecondHello),
            ToEngine::Events(e) => {
                let mut last = None;
                let mut accepted = Vec::with_capacity(e.events.len());
                for w in e.events {
                    last = Some(w.index);
                    if self.session.accept_event(w.index) {
                        accepted.push(w);
                    }
                }
                // Cluster mode: events about actors placed through another node go there.
                #[cfg(feature = "cluster")]
                let accepted = match &self.relays {
                    Some(relays) => relays.split_events(accepted),
                    None => accepted,
                };
                for w in accepted {
                    lifecycle::handle_event(state, &self.session, w);
                }
                if last.is_some() {
                    if let Some(l) = self.session.last_event_index() {
                        self.outbox.send(ToEnvoy::AckEvents(ToEnvoyAckEvents { last_event_index: l }));
                    }
                }
            }
            ToEngine::AckCommands(a) => self.session.ack_commands(a.last_command_index),
            ToEngine::Stopping => {
                tracing::info!("envoy says it is stopping; its actors are unplaced when its socket ends");
                self.envoy_stopping.store(true, std::sync::atomic::Ordering::Release);
                #[cfg(feature = "cluster")]
                if let Some(relays) = &self.relays {
                    relays.stopping();
                }
            }
            ToEngine::Pong(_) => {}
            ToEngine::GetOrCreateActor(req) => {
                // Placement work counts against the pending bound like any request:
                // the guard lives in the task until its answer is queued.
                let max = state.config.limits.max_pending_requests;
                let pending = match self.pending.try_acquire(max) {
                    Ok(p) => p,
                    Err(_) => {
                        // v4's ActorErrorCode has no OVERLOADED/LIMIT code (published schemas are frozen).
                        let e = envoy_protocol::GetOrCreateActorError {
                            code: envoy_protocol::ActorErrorCode::InvalidRequest,
                            message: format!(
                                "more than {max} requests pending on this connection (maxPendingRequests); retry once some are answered"
                            ),
                        };
                        self.outbox.send(ToEnvoy::GetOrCreateActorResponse(
                            envoy_protocol::ToEnvoyGetOrCreateActorResponse {
                                request_id: req.request_id,
                                result: envoy_protocol::GetOrCreateActorResult::GetOrCreateActorError(e),
                            },
                        ));
                        return Ok(());
                    }
                };
                let state = state.clone();
                let session = self.session.clone();
                let outbox = self.outbox.clone();
                let timer = state.metrics.request(RequestKind::GetOrCreate, RouteLabel::Write);
                let span = tracing::debug_span!("request", request_id = req.request_id, kind = "get_or_create");
                #[cfg(feature = "cluster")]
                let cluster = state.cluster.clone().zip(self.relays.clone());
                tokio::spawn(
                    async move {
                        // Cluster mode: etcd's directory decides where it is placed (maybe relayed).
                        #[cfg(feature = "cluster")]
                        if let Some((node, relays)) = cluster {
                            let answer =
                                crate::cluster::placement::get_or_create(&state, &node, &session, &relays, req).await;
                            if let Some(answer) = answer {
                                outbox.send(answer);
                            }
                            drop(timer);
                            drop(pending);
                            return;
                        }
                        let answer = lifecycle::get_or_create(&state, &session, req).await;
                        outbox.send(answer);
                        drop(timer);
                        drop(pending);
                    }
                    .instrument(span),
                );
            }
            ToEngine::KvRequest(r) => {
                let request_id = r.request_id;
                let data = r.data;
                let checked = self
                    .admit(&r.actor_id, r.generation, frame_len, || {
                        crate::kv::check_limits(&data, &state.config.limits).map_err(Rejection::KvLimit)
                    })
                    .map(|admitted| (admitted, data));
                match checked {
                    Ok((admitted, data)) => {
                        let timer = state.metrics.request(RequestKind::Kv, RouteLabel::Write);
                        self.scheduler.submit(Job::admitted(
                            Work::Kv { request_id, data },
                            Lane::Writer,
                            timer,
                            admitted,
                        ))
                    }
                    Err(rej) => {
                        self.outbox.send(ToEnvoy::KvResponse(ToEnvoyKvResponse { request_id, data: rej.to_kv() }))
                    }
                }
            }
            ToEngine::SqliteExec(r) => {
                let request_id = r.request_id;
                let req = r.request;
                match self.admit(&req.actor_id, req.generation, frame_len, || {
                    admission::check_sql(&state.config.limits, &req.sql, &[])
                }) {
                    Ok(admitted) => {
                        let timer = state.metrics.request(RequestKind::Exec, RouteLabel::Write);
                        let work = Work::Exec { request_id, sql: req.sql };
                        self.scheduler.submit(Job::admitted(work, Lane::Writer, timer, admitted))
                    }
                    Err(rej) => {
                        let result = match rej.to_sqlite() {
                            Ok(f) => SqliteExecResult::SqliteFenceMismatch(f),
                            Err(e) => SqliteExecResult::SqliteError(e),
                        };
                        self.outbox.send(ToEnvoy::SqliteExecResponse(ToEnvoySqliteExecResponse { request_id, result }));
                    }
                }
            }
            ToEngine::SqliteExecute(r) => self.execute(r.request_id, r.request, false, frame_len),
            // v5 interactive transactions (sql/transaction.rs).
            ToEngine::SqliteBegin(r) => self.transactions.begin(&self.txn_ctx(frame_len), r),
            ToEngine::SqliteTransactionExecute(r) => self.transactions.execute(&self.txn_ctx(frame_len), r),
            ToEngine::SqliteCommit(r) => self.transactions.commit(&self.txn_ctx(frame_len), r),
            ToEngine::SqliteRollback(r) => self.transactions.rollback(&self.txn_ctx(frame_len), r),
            ToEngine::SqliteExecuteWrite(r) => self.execute(r.request_id, r.request, true, frame_len),
            // v5 (a frame decoded below v5 never holds these members).
            ToEngine::SqliteExecV5(r) => self.exec_v5(r.request_id, r.request, frame_len),
            ToEngine::SqliteExecuteV5(r) => self.execute_v5(r.request_id, r.request, frame_len),
            ToEngine::SqliteBatch(r) => self.batch(r.request_id, r.request, frame_len),
            // v5 result streams (sql/stream.rs).
            ToEngine::SqliteStreamOpen(r) => self.stream_open(r, frame_len),
            ToEngine::SqliteStreamCredit(c) => self.streams.credit(c.request_id, c.credit_bytes),
            ToEngine::SqliteStreamCancel(c) => self.streams.cancel(c.request_id),
        }
        Ok(())
    }

    /// What a transaction request needs to know about this connection.
    fn txn_ctx(&self, frame_len: usize) -> crate::sql::transaction::ConnCtx<'_> {
        crate::sql::transaction::ConnCtx {
            state: &self.state,
            namespace: &self.params.namespace,
            envoy_key: &self.params.envoy_key,
            outbox: &self.outbox,
            pending: &self.pending,
            frame_len,
        }
    }

    fn execute(&self, request_id: u32, req: envoy_protocol::SqliteExecuteRequest, write: bool, frame_len: usize) {
        let params = req.params.unwrap_or_default();
        // The route is decided here, once, and travels with the request.
        let mut route = None;
        match self.admit(&req.actor_id, req.generation, frame_len, || {
            admission::check_sql(&self.state.config.limits, &req.sql, &params)?;
            route = Some(Route::of_execute(&req.sql, write).map_err(|m| Rejection::Invalid(m.into()))?);
            Ok(())
        }) {
            Ok(admitted) => {
                let Some(route) = route else { unreachable!("admitted requests have a route") };
                let kind = if write { RequestKind::ExecuteWrite } else { RequestKind::Execute };
                let timer = self.state.metrics.request(kind, RouteLabel::of(route.lane));
                let work = Work::Execute { request_id, sql: req.sql, params, write, route };
                self.scheduler.submit(Job::admitted(work, route.lane, timer, admitted));
            }
            Err(rej) => {
                let result = match rej.to_sqlite() {
                    Ok(f) => SqliteExecuteResult::SqliteFenceMismatch(f),
                    Err(e) => SqliteExecuteResult::SqliteError(e),
                };
                self.outbox.send(ToEnvoy::SqliteExecuteResponse(ToEnvoySqliteExecuteResponse { request_id, result }));
            }
        }
    }

    /// A v5 result stream: Execute's admission (placement, generation, sizes,
    /// one statement, the pending bound) plus the connection's open-stream cap;
    /// then it runs on its own thread (`sql::stream`).
    fn stream_open(&self, r: envoy_protocol::ToEngineSqliteStreamOpen, frame_len: usize) {
        let request_id = r.request_id;
        let req = r.request;
        let params = req.statement.params.unwrap_or_default();
        let sql = req.statement.sql;
        let mut route = None;
        let admitted = self.admit(&req.actor_id, req.generation, frame_len, || {
            admission::check_sql(&self.state.config.limits, &sql, &params)?;
            route = Some(Route::of_execute(&sql, false).map_err(|m| Rejection::Invalid(m.into()))?);
            self.streams.check_room(request_id)
        });
        match (admitted, route) {
            (Ok((executor, inflight, pending)), Some(route)) => {
                let clock = crate::sql::cost::CostClock::start();
                self.streams.start(crate::sql::stream::Open {
                    request_id,
                    executor,
                    sql,
                    route,
                    params,
                    credit: req.credit_bytes,
                    lease_ms: req.lease_ms,
                    clock,
                    inflight,
                    pending,
                });
            }
            (Err(rej), _) => {
                let clock = crate::sql::cost::CostClock::start();
                self.outbox.send(crate::sql::stream::refused(request_id, &rej, clock))
            }
            (Ok(_), None) => unreachable!("admitted requests have a route"),
        }
    }

    /// All checks before work: placement, generation and stopping (the in-flight
    /// guard is taken inside that check, see admission), the request's own
    /// limits, then the pending bound.
    #[allow(clippy::type_complexity)]
    fn admit(
        &self,
        actor_id: &str,
        generation: u64,
        frame_len: usize,
        limits: impl FnOnce() -> Result<(), Rejection>,
    ) -> Result<scheduler::Admitted, Rejection> {
        let state = &self.state;
        let inflight =
            admission::check_and_count(state, &self.params.namespace, &self.params.envoy_key, actor_id, generation)?;
        let max_request = state.config.limits.max_request_bytes;
        if frame_len > max_request as usize {
            return Err(Rejection::Limit {
                kind: envoy_protocol::LimitKind::RequestBytes,
                max: max_request.into(),
                actual: Some(frame_len as u64),
            });
        }
        limits()?;
        let pending = self.pending.try_acquire(state.config.limits.max_pending_requests)?;
        let executor = state.generations.executor_or_create(
            actor_id,
            generation,
            || state.actor_dir(actor_id),
            &state.exec_settings,
        );
        Ok((executor, inflight, pending))
    }
}
