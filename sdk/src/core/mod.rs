//! The sans-IO core of the client, in the style of quinn-proto: no sockets, no
//! clocks, no tasks. A driver feeds it inputs (`connected`, `frame_received`,
//! `disconnected`, `submit`, `handle_timeout`, `close`) with the current time in
//! milliseconds, and drains its outputs (`poll_transmit`, `poll_event`,
//! `poll_timeout`). Everything the protocol decides lives here: the handshake,
//! request ids, the pending map and unsent queue, command acks, event indexes
//! and their re-send, pongs, the liveness timeout, and reconnect decisions.

pub mod actors;
pub mod backoff;
pub mod config;
pub mod event;
pub mod flow;
pub mod keys;
pub mod pending;
pub mod request;
pub mod sql_kind;

#[cfg(test)]
mod tests;

use crate::config::ClientConfig;
use crate::error::{DisconnectReason, Error};
use actors::{Actors, Applied};
use backoff::Backoff;
use envoy_protocol as p;
use envoy_protocol::{close, DecodeLimits, EncodeError, ToEngine, ToEnvoy};
pub use event::{ActorInfo, ConnectionState, Event, SessionInfo};
use flow::StreamFlow;
pub use keys::RequestKey;
use pending::{OnLost, Pending, Stage};
pub use request::{Request, RequestId, RequestOptions, Response, SqlMeta, TxRef};
use std::collections::{HashMap, VecDeque};

/// Why a connection attempt failed before the WebSocket was open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectFailure {
    /// HTTP 426: the engine speaks none of the offered versions. Fatal.
    NoCommonVersion { engine_versions: Option<String> },
    /// HTTP 401/403: the token was refused. Fatal.
    Unauthorized { status: u16 },
    /// The engine's TLS certificate was refused (untrusted, wrong name, expired,
    /// a CA certificate served as the engine's own). Fatal: retrying cannot
    /// change what the client trusts.
    CertificateRejected(String),
    /// Anything else (refused, DNS, timeout, 5xx): retried with backoff.
    Other(String),
}

/// Where the connection is.
#[derive(Debug, Clone, PartialEq)]
enum Conn {
    /// Created, `start` not called yet.
    Idle,
    /// `Event::Connect` emitted; waiting for `connected` or a failure.
    Connecting { deadline: u64 },
    /// Socket open at `version`, hello sent, waiting for Init.
    Handshaking { version: u16, deadline: u64 },
    /// Init received: requests flow.
    Ready { version: u16, session: Box<SessionInfo> },
    /// Waiting to reconnect.
    Backoff { until: u64 },
    /// For good.
    Closed,
}

/// The client state machine. See the module docs.
pub struct Core {
    cfg: ClientConfig,
    conn: Conn,
    pending: Pending,
    actors: Actors,
    /// Encoded frames to write, in order.
    transmits: VecDeque<Vec<u8>>,
    events: VecDeque<Event>,
    backoff: Backoff,
    /// Failed connection attempts in a row (reset by Init).
    attempt: u32,
    /// The last failure, for `DisconnectReason::GaveUp`.
    last_error: String,
    /// When the last frame arrived (liveness).
    last_rx_ms: u64,
    /// `close()` was called: no new requests, close when in-flight drains or at this deadline.
    closing: Option<u64>,
    /// The session of the last Init (kept across reconnects for limits).
    last_session: Option<SessionInfo>,
    /// Counts connections that ended (from 1): the epoch a transaction begun
    /// now belongs to. A transaction dies with its connection, so a request
    /// naming an older epoch fails before it is sent.
    connection: u64,
    /// Transactions of the live connection the engine ended on its own
    /// (ToEnvoySqliteTransactionEnded, or an answer's transactionEnd): later
    /// requests naming them fail at once with the reason.
    ended_transactions: HashMap<TxRef, p::TransactionEndReason>,
    /// Credit state of the open result streams, by their opening request id.
    streams: HashMap<RequestId, StreamFlow>,
    /// Whether keyed requests whose answer a lost connection took are sent
    /// again; off only while settling a connection the engine closed as a
    /// protocol error, so a request the engine refuses cannot close every
    /// following connection until its deadline.
    resend_keyed_after_loss: bool,
}

impl Core {
    /// A new core; `seed` drives the backoff jitter (pass anything random in
    /// production, a constant in tests).
    pub fn new(cfg: ClientConfig, seed: u64) -> Self {
        let backoff = Backoff::new(cfg.backoff_initial_ms, cfg.backoff_max_ms, seed);
        Core {
            cfg,
            conn: Conn::Idle,
            pending: Pending::default(),
            actors: Actors::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            backoff,
            attempt: 0,
            last_error: String::new(),
            last_rx_ms: 0,
            closing: None,
            last_session: None,
            connection: 1,
            ended_transactions: HashMap::new(),
            streams: HashMap::new(),
            resend_keyed_after_loss: true,
        }
    }

    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    /// The subprotocols to offer in the upgrade (versions high to low, then the token).
    pub fn subprotocols(&self, token: Option<&str>) -> Vec<String> {
        p::negotiation::client_offer(self.cfg.min_protocol_version, self.cfg.max_protocol_version, token)
    }

    /// Starts the first connection.
    pub fn start(&mut self, now: u64) {
        if self.conn == Conn::Idle {
            self.begin_connect(now);
        }
    }

    /// The negotiated version of the live connection, if any.
    pub fn version(&self) -> Option<u16> {
        match &self.conn {
            Conn::Handshaking { version, .. } | Conn::Ready { version, .. } => Some(*version),
            Conn::Idle | Conn::Connecting { .. } | Conn::Backoff { .. } | Conn::Closed => None,
        }
    }

    /// The session of the current connection (Init received).
    pub fn session(&self) -> Option<&SessionInfo> {
        match &self.conn {
            Conn::Ready { session, .. } => Some(session),
            Conn::Idle | Conn::Connecting { .. } | Conn::Handshaking { .. } | Conn::Backoff { .. } | Conn::Closed => {
                None
            }
        }
    }

    pub fn is_closed(&self) -> bool {
        self.conn == Conn::Closed
    }

    /// Requests not yet answered (queued + in flight).
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Requests on the wire.
    pub fn in_flight(&self) -> usize {
        self.pending.in_flight()
    }

    /// Actors placed here and running.
    pub fn running_actors(&self) -> Vec<ActorInfo> {
        self.actors.running().cloned().collect()
    }

    // ------------------------------------------------------------ inputs

    /// The WebSocket is open and the engine selected `version`.
    pub fn connected(&mut self, version: u16, now: u64) {
        if !matches!(self.conn, Conn::Connecting { .. }) {
            return;
        }
        if version < self.cfg.min_protocol_version || version > self.cfg.max_protocol_version {
            self.events
                .push_back(Event::CloseSocket { code: close::PROTOCOL_ERROR, reason: "version not offered".into() });
            self.fail_for_good(Error::Disconnected { reason: DisconnectReason::NoVersionSelected });
            return;
        }
        self.last_rx_ms = now;
        self.conn = Conn::Handshaking { version, deadline: now + self.cfg.handshake_timeout_ms };
        let hello = ToEngine::Metadata(p::ToEngineMetadata {
            envoy_key: self.cfg.envoy_key.clone(),
            pool_name: self.cfg.pool_name.clone(),
            version: self.cfg.host_version,
            metadata: self.cfg.metadata.clone(),
            last_command_index: self.actors.last_command_index(),
        });
        self.transmit(&hello, version);
    }

    /// The upgrade failed.
    pub fn connect_failed(&mut self, failure: ConnectFailure, now: u64) {
        if !matches!(self.conn, Conn::Connecting { .. }) {
            return;
        }
        match failure {
            ConnectFailure::NoCommonVersion { engine_versions } => self.fail_for_good(Error::NoCommonVersion {
                client_min: self.cfg.min_protocol_version,
                client_max: self.cfg.max_protocol_version,
                engine_versions,
            }),
            ConnectFailure::Unauthorized { status } => {
                self.fail_for_good(Error::Disconnected { reason: DisconnectReason::Unauthorized { status } })
            }
            ConnectFailure::CertificateRejected(message) => {
                self.fail_for_good(Error::Disconnected { reason: DisconnectReason::CertificateRejected { message } })
            }
            ConnectFailure::Other(msg) => self.lost(format!("connect failed: {msg}"), now),
        }
    }

    /// A binary frame arrived.
    pub fn frame_received(&mut self, bytes: &[u8], now: u64) {
        let version = match self.conn {
            Conn::Handshaking { version, .. } | Conn::Ready { version, .. } => version,
            Conn::Idle | Conn::Connecting { .. } | Conn::Backoff { .. } | Conn::Closed => return,
        };
        self.last_rx_ms = now;
        let limits = DecodeLimits::for_frame(self.cfg.max_frame_bytes as usize);
        match p::decode_to_envoy(bytes, version, &limits) {
            Ok(msg) => self.handle_message(msg, version, now),
            Err(e) => {
                tracing::warn!(error = %e, "undecodable frame from the engine; reconnecting");
                self.drop_socket(close::PROTOCOL_ERROR, format!("undecodable frame: {e}"), now);
            }
        }
    }

    /// The socket closed (`code` from the close frame, `None` if it just died).
    pub fn disconnected(&mut self, code: Option<u16>, reason: &str, now: u64) {
        match self.conn {
            Conn::Connecting { .. } | Conn::Handshaking { .. } | Conn::Ready { .. } => {}
            Conn::Idle | Conn::Backoff { .. } | Conn::Closed => return,
        }
        match code {
            Some(c) if !close::should_reconnect(c) => {
                self.fail_in_flight();
                self.fail_for_good(Error::Disconnected {
                    reason: DisconnectReason::ClosedByEngine { code: c, reason: reason.to_string() },
                });
            }
            Some(close::PROTOCOL_ERROR) => {
                // The engine found something it cannot accept among what was
                // sent; re-sending the same keyed requests would only close the
                // next connection too. They settle as unknown instead.
                self.resend_keyed_after_loss = false;
                self.lost(format!("closed by the engine as a protocol error: {reason}"), now);
                self.resend_keyed_after_loss = true;
            }
            _ => self
                .lost(format!("socket closed ({}): {reason}", code.map_or("no code".into(), |c| c.to_string())), now),
        }
    }

    /// Submits a request without a request key. Its answer comes as
    /// `Event::Response { id, .. }` (possibly right away, e.g. `RemoteUnavailable`).
    pub fn submit(&mut self, request: Request, opts: RequestOptions, now: u64) -> RequestId {
        self.submit_keyed(request, opts, None, now)
    }

    /// Submits a request with its request key (made by the driver when the
    /// request was made, see [`RequestKey`]). On a v5 connection the key goes
    /// with every send of the request, so a write whose answer was lost is
    /// re-sent after a reconnect and runs at most once. Below v5 the key is
    /// not sent. A key given for a request that carries none on the wire
    /// (`!request.wants_key()`) is ignored.
    pub fn submit_keyed(
        &mut self,
        request: Request,
        opts: RequestOptions,
        key: Option<RequestKey>,
        now: u64,
    ) -> RequestId {
        let id = self.pending.allocate_id();
        if self.closing.is_some() || self.conn == Conn::Closed {
            self.respond(id, Err(Error::Closed));
            return id;
        }
        if let Some((actor_id, generation)) = request.actor() {
            if self.actors.is_stopping(actor_id, generation) {
                self.respond(id, Err(Error::ActorStopping));
                return id;
            }
        }
        if self.pending.queued() >= self.cfg.max_queued_requests {
            self.respond(
                id,
                Err(Error::LimitExceeded {
                    kind: p::LimitKind::PendingRequests,
                    max: self.cfg.max_queued_requests as u64,
                    actual: None,
                    message: "too many requests waiting to be sent (ClientConfig::max_queued_requests)".into(),
                }),
            );
            return id;
        }
        if let Some(refusal) = self.transaction_refusal(&request, false) {
            self.respond(id, refusal);
            return id;
        }
        // A stream lives as long as its consumer reads: the engine's stream
        // lease bounds it, not the request deadline.
        let timeout = match request {
            Request::SqlStream { .. } => opts.timeout_ms,
            _ => opts.timeout_ms.or(self.cfg.request_timeout_ms),
        };
        let deadline = timeout.map(|t| (now.saturating_add(t), t));
        // Only a request whose wire form carries the key may be re-sent by it.
        let key = key.filter(|_| request.wants_key());
        self.pending.insert_queued(id, request, opts, deadline, key);
        self.flush_queue();
        id
    }

    /// The application took `bytes` of the rows of stream `id` (as given in
    /// `Event::StreamRows`): credit is returned to the engine when enough has
    /// been taken.
    pub fn stream_consumed(&mut self, id: RequestId, bytes: u64) {
        let Some(flow) = self.streams.get_mut(&id) else { return };
        let Some(credit) = flow.consumed(bytes) else { return };
        if let Conn::Ready { version, .. } = self.conn {
            let msg =
                ToEngine::SqliteStreamCredit(p::ToEngineSqliteStreamCredit { request_id: id, credit_bytes: credit });
            self.transmit(&msg, version);
        }
    }

    /// The application dropped stream `id`: a stream not sent yet is
    /// forgotten; an open one is cancelled (its id stays reserved until the
    /// engine's last message, and rows that still arrive are dropped).
    pub fn stream_cancel(&mut self, id: RequestId) {
        match self.pending.get(id).map(|e| e.stage) {
            Some(Stage::Queued) => {
                self.pending.remove(id);
                self.respond(id, Err(Error::Cancelled { message: "the stream was dropped before it was sent".into() }));
            }
            Some(Stage::Sent) => {
                let Some(flow) = self.streams.get_mut(&id) else { return };
                if flow.cancelled {
                    return;
                }
                flow.cancelled = true;
                if let Conn::Ready { version, .. } = self.conn {
                    let msg = ToEngine::SqliteStreamCancel(p::ToEngineSqliteStreamCancel { request_id: id });
                    self.transmit(&msg, version);
                }
            }
            None => {}
        }
    }

    /// Credit state of stream `id` while it is open (for tests and metrics).
    pub fn stream_flow(&self, id: RequestId) -> Option<&StreamFlow> {
        self.streams.get(&id)
    }

    /// Why a request naming a transaction cannot be sent (`sent_keyed`: it is
    /// a commit already sent with its key, which may go to any connection):
    /// the transaction died with its connection, or the engine ended it. A
    /// rollback of such a transaction simply succeeds (it is rolled back).
    fn transaction_refusal(&mut self, request: &Request, sent_keyed: bool) -> Option<Result<Response, Error>> {
        let tx = request.transaction()?;
        let rollback = matches!(request, Request::SqlRollback { .. });
        self.transaction_refusal_of(tx, rollback, sent_keyed)
    }

    /// [`Self::transaction_refusal`] for transaction `tx` (`rollback`: the
    /// request is its rollback).
    fn transaction_refusal_of(
        &mut self,
        tx: TxRef,
        rollback: bool,
        sent_keyed: bool,
    ) -> Option<Result<Response, Error>> {
        if tx.connection != self.connection {
            if sent_keyed {
                return None;
            }
            return Some(if rollback {
                Ok(Response::RolledBack { cost: None })
            } else {
                Err(Error::TransactionAborted {
                    reason: Some(p::TransactionEndReason::ConnectionClosed),
                    message: "the connection that began the transaction closed; it was rolled back".into(),
                })
            });
        }
        let reason = *self.ended_transactions.get(&tx)?;
        if rollback {
            self.ended_transactions.remove(&tx);
            return Some(Ok(Response::RolledBack { cost: None }));
        }
        Some(Err(ended_error(reason)))
    }

    /// Deadlines: request timeouts, liveness, handshake, backoff, close.
    pub fn handle_timeout(&mut self, now: u64) {
        for id in self.pending.expired(now) {
            if let Some(e) = self.pending.remove(id) {
                if self.streams.remove(&id).is_some() {
                    // The engine would keep streaming to nobody.
                    if let Conn::Ready { version, .. } = self.conn {
                        let msg = ToEngine::SqliteStreamCancel(p::ToEngineSqliteStreamCancel { request_id: id });
                        self.transmit(&msg, version);
                    }
                }
                let timeout_ms = e.deadline.map_or(0, |(_, t)| t);
                self.respond(id, Err(Error::Timeout { timeout_ms, sent: e.ever_sent }));
            }
        }
        match self.conn.clone() {
            Conn::Connecting { deadline } if now >= deadline => {
                self.events.push_back(Event::CloseSocket { code: close::NORMAL, reason: "connect timed out".into() });
                self.lost("connect timed out".into(), now);
            }
            Conn::Handshaking { deadline, .. } if now >= deadline => {
                self.drop_socket(close::PROTOCOL_ERROR, "no Init before the handshake deadline".into(), now);
            }
            Conn::Ready { .. } if now >= self.last_rx_ms.saturating_add(self.liveness_ms()) => {
                tracing::warn!(silent_ms = now - self.last_rx_ms, "no frame from the engine: socket presumed dead");
                self.drop_socket(close::GOING_AWAY, "liveness timeout: no frame from the engine".into(), now);
            }
            Conn::Backoff { until } if now >= until => self.begin_connect(now),
            Conn::Idle
            | Conn::Connecting { .. }
            | Conn::Handshaking { .. }
            | Conn::Ready { .. }
            | Conn::Backoff { .. }
            | Conn::Closed => {}
        }
        if let Some(deadline) = self.closing {
            if now >= deadline && self.conn != Conn::Closed {
                self.finish_close();
            }
        }
    }

    /// Closes gracefully: new requests fail with `Closed`, queued ones too;
    /// in-flight ones get their answers (up to `close_timeout_ms`), then the
    /// engine is told we are stopping and the socket closes.
    pub fn close(&mut self, now: u64) {
        if self.closing.is_some() || self.conn == Conn::Closed {
            return;
        }
        self.closing = Some(now.saturating_add(self.cfg.close_timeout_ms));
        while let Some(id) = self.pending.pop_queued() {
            if let Some(e) = self.pending.remove(id) {
                // A keyed write waiting for its re-send was sent once: it may have run.
                let result = if e.sent_keyed { lost_answer(&e.request) } else { Err(Error::Closed) };
                self.respond(id, result);
            }
        }
        match self.conn {
            Conn::Ready { .. } if self.pending.in_flight() > 0 => {}
            Conn::Idle
            | Conn::Connecting { .. }
            | Conn::Handshaking { .. }
            | Conn::Ready { .. }
            | Conn::Backoff { .. }
            | Conn::Closed => self.finish_close(),
        }
    }

    /// The stop handler of an actor finished (`error` if it failed): the engine
    /// is told the actor stopped.
    pub fn actor_stopped(&mut self, actor_id: &str, generation: u64, error: Option<String>) {
        self.actors.stopped(actor_id, generation, error);
        self.send_fresh_events();
    }

    /// Asks the engine to stop (or put to sleep) an actor. Needs v3; on an
    /// older connection fails with `RemoteUnavailable`.
    pub fn actor_intent(&mut self, actor_id: &str, generation: u64, intent: p::ActorIntent) -> Result<(), Error> {
        if let Some(v) = self.version() {
            let required = p::Feature::ActorIntents.required_version();
            if v < required {
                return Err(Error::RemoteUnavailable(p::ProtocolCompatibilityError {
                    feature: p::Feature::ActorIntents,
                    direction: p::Direction::ToEngine,
                    required_version: required,
                    target_version: v,
                }));
            }
        }
        self.actors.intent(actor_id, generation, intent);
        self.send_fresh_events();
        Ok(())
    }

    // ------------------------------------------------------------ outputs

    /// The next frame to write.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When `handle_timeout` must be called next.
    pub fn poll_timeout(&self) -> Option<u64> {
        let conn = match &self.conn {
            Conn::Connecting { deadline } | Conn::Handshaking { deadline, .. } => Some(*deadline),
            Conn::Ready { .. } => Some(self.last_rx_ms.saturating_add(self.liveness_ms())),
            Conn::Backoff { until } => Some(*until),
            Conn::Idle | Conn::Closed => None,
        };
        let close = if self.conn == Conn::Closed { None } else { self.closing };
        [conn, self.pending.next_deadline(), close].into_iter().flatten().min()
    }

    // ------------------------------------------------------------ internals

    fn liveness_ms(&self) -> u64 {
        match (&self.cfg.liveness_timeout_ms, &self.conn) {
            (Some(ms), _) => *ms,
            (None, Conn::Ready { session, .. }) => session
                .ping_interval_ms
                .saturating_mul(config::DEFAULT_LIVENESS_PING_FACTOR)
                .max(config::MIN_LIVENESS_TIMEOUT_MS),
            (None, _) => self.cfg.handshake_timeout_ms,
        }
    }

    fn begin_connect(&mut self, now: u64) {
        self.conn = Conn::Connecting { deadline: now.saturating_add(self.cfg.connect_timeout_ms) };
        self.events.push_back(Event::State(ConnectionState::Connecting { attempt: self.attempt }));
        self.events.push_back(Event::Connect);
    }

    fn handle_message(&mut self, msg: ToEnvoy, version: u16, now: u64) {
        match msg {
            ToEnvoy::Init(init) => self.on_init(init, None, version),
            ToEnvoy::Ping(ping) => self.transmit(&ToEngine::Pong(p::ToEnginePong { ts: ping.ts }), version),
            ToEnvoy::Commands(cmds) => {
                let mut last = None;
                for cmd in cmds.commands {
                    let index = cmd.index;
                    match self.actors.apply(cmd) {
                        Applied::Start(info) => {
                            last = Some(index);
                            self.events.push_back(Event::ActorStart(info));
                        }
                        Applied::Stop { actor, reason } => {
                            last = Some(index);
                            self.events.push_back(Event::ActorStop { actor, reason });
                        }
                        Applied::Duplicate => {}
                    }
                }
                if let Some(last) = self.actors.last_command_index().or(last) {
                    self.transmit(&ToEngine::AckCommands(p::ToEngineAckCommands { last_command_index: last }), version);
                }
                self.send_fresh_events();
            }
            ToEnvoy::AckEvents(ack) => self.actors.acked(ack.last_event_index),
            ToEnvoy::InitV5(init) => self.on_init(
                p::ToEnvoyInit {
                    envoy_id: init.envoy_id,
                    last_event_index: init.last_event_index,
                    metadata: init.metadata,
                },
                Some(init.metadata_v5),
                version,
            ),
            ToEnvoy::SqliteTransactionEnded(ended) => {
                // A later request naming that transaction fails at once with the reason.
                let tx = TxRef { connection: self.connection, id: ended.transaction_id };
                tracing::debug!(transaction_id = ended.transaction_id, reason = ?ended.reason, "the engine ended a transaction");
                self.ended_transactions.insert(tx, ended.reason);
            }
            ToEnvoy::SqliteStreamChunk(c) => self.on_stream_chunk(c),
            ToEnvoy::SqliteStreamFailed(f) => self.on_stream_failed(f),
            ToEnvoy::KvResponse(_)
            | ToEnvoy::GetOrCreateActorResponse(_)
            | ToEnvoy::SqliteExecResponse(_)
            | ToEnvoy::SqliteExecuteResponse(_)
            | ToEnvoy::SqliteExecResponseV5(_)
            | ToEnvoy::SqliteExecuteResponseV5(_)
            | ToEnvoy::SqliteBatchResponse(_)
            | ToEnvoy::SqliteBeginResponse(_)
            | ToEnvoy::SqliteTransactionExecuteResponse(_)
            | ToEnvoy::SqliteCommitResponse(_)
            | ToEnvoy::SqliteRollbackResponse(_) => self.on_response(msg, now),
        }
    }

    fn on_init(&mut self, init: p::ToEnvoyInit, v5: Option<p::ProtocolMetadataV5>, version: u16) {
        if !matches!(self.conn, Conn::Handshaking { .. }) {
            tracing::warn!("second Init on one connection ignored");
            return;
        }
        let m = init.metadata;
        let session = SessionInfo {
            protocol_version: version,
            envoy_id: init.envoy_id,
            ping_interval_ms: m.ping_interval_ms,
            envoy_lost_threshold_ms: m.envoy_lost_threshold_ms,
            actor_stop_threshold_ms: m.actor_stop_threshold_ms,
            max_frame_bytes: m.max_frame_bytes,
            limits: m.limits,
            sql_limits: m.sql_limits,
            durability: v5.as_ref().map(|v| v.durability),
            engine_limits: v5.map(|v| v.limits),
        };
        self.attempt = 0;
        self.last_session = Some(session.clone());
        self.conn = Conn::Ready { version, session: Box::new(session.clone()) };
        self.events.push_back(Event::State(ConnectionState::Connected(session)));
        let resend = self.actors.resume(init.last_event_index);
        self.send_events(resend, version);
        self.flush_queue();
    }

    fn on_response(&mut self, msg: ToEnvoy, _now: u64) {
        let id = match request::routing(&msg) {
            request::Routing::Answer(id) => id,
            request::Routing::Stream(_) | request::Routing::Connection => return,
        };
        match self.pending.get(id) {
            Some(e) if e.stage == Stage::Sent && !matches!(e.request, Request::SqlStream { .. }) => {}
            // Answer to a request that timed out, or was never sent on this socket: stale.
            Some(_) | None => {
                tracing::debug!(request_id = id, "answer to an unknown or timed-out request ignored");
                return;
            }
        }
        let entry = self.pending.remove(id).expect("checked above");
        if let ToEnvoy::SqliteTransactionExecuteResponse(r) = &msg {
            if let (Some(reason), Some(tx)) = (r.transaction_end, entry.request.transaction()) {
                self.ended_transactions.insert(tx, reason);
            }
        }
        if let Some(tx) = entry.request.transaction() {
            if matches!(entry.request, Request::SqlCommit { .. } | Request::SqlRollback { .. }) {
                self.ended_transactions.remove(&tx);
            }
        }
        let result = request::map_response(&entry.request, msg, self.connection);
        self.respond(id, result);
        self.after_answer();
    }

    /// An answer settled a request: send what waited for room, finish a close.
    fn after_answer(&mut self) {
        self.flush_queue();
        if self.closing.is_some() && self.pending.in_flight() == 0 {
            self.finish_close();
        }
    }

    /// The flow state of stream `id` if it is open, after checking the
    /// message's sequence.
    fn open_stream(&mut self, id: RequestId, sequence: u32) -> Option<&mut StreamFlow> {
        if !self.pending.get(id).is_some_and(|e| e.stage == Stage::Sent) {
            tracing::debug!(request_id = id, "stream message for no open stream ignored");
            return None;
        }
        let flow = self.streams.get_mut(&id)?;
        if sequence != flow.next_sequence {
            tracing::warn!(request_id = id, sequence, expected = flow.next_sequence, "stream message out of sequence");
        }
        flow.next_sequence = sequence.wrapping_add(1);
        Some(flow)
    }

    /// Rows of an open stream (and, with `done`, its end).
    fn on_stream_chunk(&mut self, c: p::ToEnvoySqliteStreamChunk) {
        let id = c.request_id;
        let Some(flow) = self.open_stream(id, c.sequence) else { return };
        let bytes: u64 = c.rows.iter().map(|r| flow::row_bytes(r)).sum();
        flow.received(bytes);
        // Rows of a cancelled stream have no reader: dropped here.
        if !flow.cancelled && (!c.rows.is_empty() || c.columns.is_some()) {
            self.events.push_back(Event::StreamRows { id, columns: c.columns, rows: c.rows, bytes });
        }
        if c.done {
            self.streams.remove(&id);
            self.pending.remove(id);
            self.respond(id, Ok(Response::StreamDone { cost: c.cost }));
            self.after_answer();
        }
    }

    /// The last message of a stream that did not finish.
    fn on_stream_failed(&mut self, f: p::ToEnvoySqliteStreamFailed) {
        let id = f.request_id;
        if self.open_stream(id, f.sequence).is_none() {
            return;
        }
        self.streams.remove(&id);
        self.pending.remove(id);
        self.respond(id, Err(request::map_failure(f.failure)));
        self.after_answer();
    }

    /// Sends queued requests while the connection is ready and under the in-flight cap.
    fn flush_queue(&mut self) {
        let (version, session) = match &self.conn {
            Conn::Ready { version, session } => (*version, session.clone()),
            Conn::Idle | Conn::Connecting { .. } | Conn::Handshaking { .. } | Conn::Backoff { .. } | Conn::Closed => {
                return
            }
        };
        let engine_cap = session.limits.as_ref().map_or(usize::MAX, |l| l.max_pending_requests as usize);
        let cap = self.cfg.max_in_flight.min(engine_cap).max(1);
        let max_request = session
            .limits
            .as_ref()
            .map_or(session.max_frame_bytes, |l| l.max_request_bytes.min(session.max_frame_bytes));
        let keys = version >= p::Feature::RequestKeys.required_version();
        while self.pending.in_flight() < cap {
            let Some(id) = self.pending.pop_queued() else { break };
            let entry = self.pending.get(id).expect("queued ids are entries");
            let sent_keyed = entry.sent_keyed;
            // A keyed write whose answer was lost can only be re-sent safely
            // with its key: below v5 it stays unknown, as before v5.
            if sent_keyed && !keys {
                self.fail_queued(id, Err(Error::IndeterminateResult));
                continue;
            }
            let named_tx =
                entry.request.transaction().map(|tx| (tx, matches!(entry.request, Request::SqlRollback { .. })));
            if let Some((tx, rollback)) = named_tx {
                if let Some(refusal) = self.transaction_refusal_of(tx, rollback, sent_keyed) {
                    self.fail_queued(id, refusal);
                    continue;
                }
            }
            let entry = self.pending.get(id).expect("queued ids are entries");
            if let Some(limits) = &session.sql_limits {
                if let Err(e) = request::check_sql_limits(&entry.request, limits) {
                    self.fail_queued(id, Err(e));
                    continue;
                }
            }
            if let Some(limits) = &session.engine_limits {
                if let Err(e) = request::check_engine_limits(&entry.request, limits) {
                    self.fail_queued(id, Err(e));
                    continue;
                }
            }
            let key = if keys { entry.key } else { None };
            let msg = entry.request.to_message(id, version, key.as_ref(), self.connection);
            match p::encode_to_engine(&msg, version) {
                Ok(bytes) if bytes.len() > max_request as usize => {
                    let actual = bytes.len() as u64;
                    self.fail_queued(
                        id,
                        Err(Error::LimitExceeded {
                            kind: p::LimitKind::RequestBytes,
                            max: u64::from(max_request),
                            actual: Some(actual),
                            message: format!(
                                "the request frame is {actual} bytes, the engine accepts at most {max_request}"
                            ),
                        }),
                    );
                }
                Ok(bytes) => {
                    if let ToEngine::SqliteStreamOpen(open) = &msg {
                        self.streams.insert(id, StreamFlow::new(open.request.credit_bytes));
                    }
                    self.pending.mark_sent(id, key.is_some());
                    self.transmits.push_back(bytes);
                }
                Err(EncodeError::Compatibility(c)) => self.fail_queued(id, Err(Error::RemoteUnavailable(c))),
                Err(EncodeError::UnsupportedVersion(v)) => {
                    self.fail_queued(id, Err(Error::Protocol(format!("cannot encode at protocol v{v}"))))
                }
            }
        }
    }

    /// Settles a request already popped off the queue without sending it.
    fn fail_queued(&mut self, id: RequestId, result: Result<Response, Error>) {
        self.pending.remove(id);
        self.respond(id, result);
    }

    fn respond(&mut self, id: RequestId, result: Result<Response, Error>) {
        self.events.push_back(Event::Response { id, result });
    }

    fn transmit(&mut self, msg: &ToEngine, version: u16) {
        match p::encode_to_engine(msg, version) {
            Ok(bytes) => self.transmits.push_back(bytes),
            Err(e) => tracing::error!(error = %e, "cannot encode a connection message"),
        }
    }

    fn send_fresh_events(&mut self) {
        let fresh = self.actors.take_fresh();
        if let Conn::Ready { version, .. } = self.conn {
            self.send_events(fresh, version);
        }
        // Otherwise they stay unacked and go out after the next Init.
    }

    fn send_events(&mut self, events: Vec<p::EventWrapper>, version: u16) {
        if events.is_empty() {
            return;
        }
        // Intents need v3: drop them on an older connection instead of failing the batch.
        let (ok, dropped): (Vec<_>, Vec<_>) = events.into_iter().partition(|e| match e.inner {
            p::Event::ActorStateUpdate(_) => true,
            p::Event::ActorIntent(_) => version >= p::Feature::ActorIntents.required_version(),
        });
        if !dropped.is_empty() {
            tracing::warn!(count = dropped.len(), version, "actor intents cannot travel at this version; dropped");
        }
        if !ok.is_empty() {
            self.transmit(&ToEngine::Events(p::ToEngineEvents { events: ok }), version);
        }
    }

    /// The core itself gives up on the socket (liveness, bad frame, no Init).
    fn drop_socket(&mut self, code: u16, reason: String, now: u64) {
        self.events.push_back(Event::CloseSocket { code, reason: reason.clone() });
        self.lost(reason, now);
    }

    /// The connection is gone but may come back: settle in-flight requests,
    /// then back off (or stop, if closing / out of attempts).
    fn lost(&mut self, cause: String, now: u64) {
        self.transmits.clear();
        self.fail_in_flight();
        self.end_connection();
        self.last_error = cause.clone();
        if self.closing.is_some() {
            self.finish_close();
            return;
        }
        if let Some(max) = self.cfg.max_reconnect_attempts {
            if self.attempt >= max {
                let reason = DisconnectReason::GaveUp { attempts: self.attempt + 1, last_error: cause };
                self.fail_for_good(Error::Disconnected { reason });
                return;
            }
        }
        let delay = self.backoff.delay(self.attempt);
        self.attempt += 1;
        self.conn = Conn::Backoff { until: now.saturating_add(delay) };
        self.events.push_back(Event::State(ConnectionState::Reconnecting {
            attempt: self.attempt,
            delay_ms: delay,
            cause,
        }));
    }

    /// Sent requests lose their answer: keyed writes (sent at v5) go back to
    /// the queue to be re-sent with their key, reads get their one retry, the
    /// rest are settled by [`lost_answer`].
    fn fail_in_flight(&mut self) {
        let open = self.closing.is_none();
        let retry_reads = self.cfg.retry_idempotent_reads && open;
        let lost = self.pending.connection_lost(|e| {
            if open && self.resend_keyed_after_loss && e.sent_keyed && !matches!(e.request, Request::SqlStream { .. }) {
                OnLost::Resend
            } else if retry_reads && e.request.is_retryable_read(&e.opts) {
                OnLost::RetryOnce
            } else {
                OnLost::Settle
            }
        });
        for id in lost {
            if let Some(e) = self.pending.remove(id) {
                self.respond(id, lost_answer(&e.request));
            }
        }
        self.streams.clear();
    }

    /// The connection ended: its transactions with it.
    fn end_connection(&mut self) {
        self.connection += 1;
        self.ended_transactions.clear();
        self.streams.clear();
    }

    /// Closed for good with `err`: every unanswered request fails with it.
    fn fail_for_good(&mut self, err: Error) {
        self.transmits.clear();
        for id in self.pending.all_ids() {
            if let Some(e) = self.pending.remove(id) {
                let result =
                    if e.stage == Stage::Sent || e.sent_keyed { lost_answer(&e.request) } else { Err(err.clone()) };
                self.respond(id, result);
            }
        }
        self.end_connection();
        self.conn = Conn::Closed;
        self.events.push_back(Event::State(ConnectionState::Closed { error: Some(err) }));
    }

    fn finish_close(&mut self) {
        if let Conn::Ready { version, .. } = self.conn {
            self.transmit(&ToEngine::Stopping, version);
        }
        let had_socket = matches!(self.conn, Conn::Connecting { .. } | Conn::Handshaking { .. } | Conn::Ready { .. });
        for id in self.pending.all_ids() {
            if let Some(e) = self.pending.remove(id) {
                let result =
                    if e.stage == Stage::Sent || e.sent_keyed { lost_answer(&e.request) } else { Err(Error::Closed) };
                self.respond(id, result);
            }
        }
        self.end_connection();
        if had_socket {
            self.events.push_back(Event::CloseSocket { code: close::NORMAL, reason: "client closed".into() });
        }
        self.conn = Conn::Closed;
        self.events.push_back(Event::State(ConnectionState::Closed { error: None }));
    }
}

/// What a request whose answer was lost with its connection (and that is not
/// sent again) becomes: a write may or may not have run; a statement of a
/// transaction, or a stream, died with the connection; a rollback is done
/// (the transaction was rolled back with the connection).
fn lost_answer(request: &Request) -> Result<Response, Error> {
    match request {
        Request::SqlTxExecute { .. } => Err(Error::TransactionAborted {
            reason: Some(p::TransactionEndReason::ConnectionClosed),
            message: "the connection was lost during the statement; the transaction was rolled back".into(),
        }),
        Request::SqlRollback { .. } => Ok(Response::RolledBack { cost: None }),
        Request::SqlStream { .. } => Err(Error::StreamInterrupted),
        Request::Kv { .. }
        | Request::SqlExec { .. }
        | Request::SqlExecute { .. }
        | Request::GetOrCreateActor { .. }
        | Request::SqlBatch { .. }
        | Request::SqlBegin { .. }
        | Request::SqlCommit { .. } => Err(Error::IndeterminateResult),
    }
}

/// The error for a request naming a transaction the engine ended.
fn ended_error(reason: p::TransactionEndReason) -> Error {
    match reason {
        p::TransactionEndReason::LeaseExpired => {
            Error::TransactionExpired { message: "the transaction's lease ran out; the engine rolled it back".into() }
        }
        p::TransactionEndReason::StatementFailed
        | p::TransactionEndReason::ActorStopping
        | p::TransactionEndReason::EngineStopping
        | p::TransactionEndReason::ConnectionClosed
        | p::TransactionEndReason::Fenced => {
            Error::TransactionAborted { reason: Some(reason), message: "the engine rolled the transaction back".into() }
        }
    }
}
