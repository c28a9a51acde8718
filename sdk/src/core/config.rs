//! Named defaults of the client's settings. The settings themselves are the
//! public [`ClientConfig`](crate::ClientConfig), which the core reads directly.

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
/// Default idle lease asked for an interactive transaction (v5).
pub const DEFAULT_TRANSACTION_LEASE_MS: u32 = 10_000;
/// Default credit window of a result stream (v5): 1 MiB of rows at their decoded size.
pub const DEFAULT_STREAM_CREDIT_BYTES: u32 = 1 << 20;
/// Default lease of a result stream (v5): how long the engine waits for credit.
pub const DEFAULT_STREAM_LEASE_MS: u32 = 30_000;
