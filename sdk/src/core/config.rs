//! Settings of the sans-IO core, with their named defaults.

use std::collections::BTreeMap;

/// Default time allowed for the WebSocket upgrade.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 10_000;
/// Default time allowed between the upgrade and the engine's Init.
pub const DEFAULT_HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
/// Default liveness timeout, as a multiple of the engine's ping interval: no
/// frame for this many ping intervals means the socket is dead (half-open).
pub const DEFAULT_LIVENESS_PING_FACTOR: u64 = 3;
/// The liveness timeout is never shorter than this.
pub const MIN_LIVENESS_TIMEOUT_MS: u64 = 500;
/// Default per-request deadline.
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 60_000;
/// First reconnect delay (before jitter).
pub const DEFAULT_BACKOFF_INITIAL_MS: u64 = 100;
/// Largest reconnect delay (before jitter).
pub const DEFAULT_BACKOFF_MAX_MS: u64 = 5_000;
/// Requests waiting to be sent (not yet on the wire) at most; past it, `LimitExceeded{PendingRequests}`.
pub const DEFAULT_MAX_QUEUED_REQUESTS: usize = 100_000;
/// Requests on the wire at once at most (also capped by the engine's advertised `maxPendingRequests`).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 4_096;
/// How long `close()` waits for in-flight answers before closing the socket anyway.
pub const DEFAULT_CLOSE_TIMEOUT_MS: u64 = 5_000;

/// What the core needs to know; the public `ClientConfig` builds it.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Stable identity across reconnects, so the engine resumes the session.
    pub envoy_key: String,
    /// Pool this envoy belongs to (sent in the hello and the URL).
    pub pool_name: String,
    /// Version of the host software (not the protocol), for rollouts.
    pub host_version: u32,
    /// Free-form metadata sent in the hello.
    pub metadata: BTreeMap<String, String>,
    /// Lowest protocol version offered.
    pub min_protocol_version: u16,
    /// Highest protocol version offered (pin lower to behave as an older client).
    pub max_protocol_version: u16,
    /// Upgrade deadline: a connect that hangs longer is abandoned and retried.
    pub connect_timeout_ms: u64,
    /// Deadline for the Init after the upgrade.
    pub handshake_timeout_ms: u64,
    /// No frame from the engine for this long ⇒ the socket is dead. `None`:
    /// `DEFAULT_LIVENESS_PING_FACTOR` × the engine's ping interval.
    pub liveness_timeout_ms: Option<u64>,
    /// Deadline of requests that do not set their own; `None`: no deadline.
    pub default_request_timeout_ms: Option<u64>,
    /// Whether reads (KV get/list, SQL marked idempotent) whose answer was lost
    /// to a disconnect are sent once more after the reconnect instead of failing
    /// with `IndeterminateResult`. Never applies to writes.
    pub retry_idempotent_reads: bool,
    /// First reconnect delay.
    pub backoff_initial_ms: u64,
    /// Cap on the reconnect delay.
    pub backoff_max_ms: u64,
    /// Give up after this many failed attempts in a row; `None`: never.
    pub max_reconnect_attempts: Option<u32>,
    /// Cap on requests waiting to be sent.
    pub max_queued_requests: usize,
    /// Cap on requests on the wire at once.
    pub max_in_flight: usize,
    /// Largest frame accepted from the engine (decode limit).
    pub max_frame_bytes: u32,
    /// How long a graceful close waits for in-flight answers.
    pub close_timeout_ms: u64,
}

impl CoreConfig {
    /// Defaults for everything but the identity.
    pub fn new(envoy_key: impl Into<String>, pool_name: impl Into<String>) -> Self {
        CoreConfig {
            envoy_key: envoy_key.into(),
            pool_name: pool_name.into(),
            host_version: 1,
            metadata: BTreeMap::new(),
            min_protocol_version: envoy_protocol::MIN_PROTOCOL_VERSION,
            max_protocol_version: envoy_protocol::PROTOCOL_VERSION,
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            handshake_timeout_ms: DEFAULT_HANDSHAKE_TIMEOUT_MS,
            liveness_timeout_ms: None,
            default_request_timeout_ms: Some(DEFAULT_REQUEST_TIMEOUT_MS),
            retry_idempotent_reads: true,
            backoff_initial_ms: DEFAULT_BACKOFF_INITIAL_MS,
            backoff_max_ms: DEFAULT_BACKOFF_MAX_MS,
            max_reconnect_attempts: None,
            max_queued_requests: DEFAULT_MAX_QUEUED_REQUESTS,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_frame_bytes: envoy_protocol::DEFAULT_MAX_FRAME_BYTES,
            close_timeout_ms: DEFAULT_CLOSE_TIMEOUT_MS,
        }
    }
}
