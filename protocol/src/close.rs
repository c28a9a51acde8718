//! WebSocket close codes the engine uses, and what a client does on each.
//!
//! Both sides share these so a client never has to parse a close reason.

/// Normal closure (the client called `close()`, or the engine drained).
pub const NORMAL: u16 = 1000;
/// The engine is shutting down; reconnect with backoff (another engine may take over).
pub const GOING_AWAY: u16 = 1001;
/// A frame could not be decoded or broke the connection sequence (hello first,
/// at most one hello). The reason names the decode failure. Reconnect: the bug
/// may have been in one frame.
pub const PROTOCOL_ERROR: u16 = 1002;
/// A frame exceeded the advertised maximum frame size.
pub const MESSAGE_TOO_BIG: u16 = 1009;
/// Another connection with the same envoy key replaced this one. Do not reconnect.
pub const EVICTED: u16 = 4000;
/// The token was missing or wrong. Do not reconnect.
pub const UNAUTHORIZED: u16 = 4001;
/// The hello did not match the connection's query (namespace, envoy key, pool).
/// Do not reconnect.
pub const INVALID_HELLO: u16 = 4002;

/// Whether a client should reconnect after the engine closed with `code`.
pub fn should_reconnect(code: u16) -> bool {
    !matches!(code, EVICTED | UNAUTHORIZED | INVALID_HELLO)
}

/// HTTP status the engine answers an upgrade with when no offered version is
/// spoken. The response carries [`VERSIONS_HEADER`]; a client must not retry.
pub const NO_COMMON_VERSION_STATUS: u16 = 426;
/// Response header listing the versions the engine speaks, e.g. `1-4`.
pub const VERSIONS_HEADER: &str = "x-envoy-protocol-versions";
