//! The envoy wire protocol.
//!
//! Envoys (actor hosts) and the engine exchange binary WebSocket messages, each
//! one BARE-encoded top-level message: [`ToEngine`] (envoy → engine) or
//! [`ToEnvoy`] (engine → envoy). The schemas in `schemas/v1.bare` … `v6.bare`
//! are the single source of truth; `build.rs` generates the types of every
//! version ([`v1`] … [`v6`]) from them.
//!
//! Code works with the latest types (re-exported at the crate root) and uses
//! [`encode_to_engine`] / [`decode_to_engine`] (and the `to_envoy` pair) to
//! speak any version. A message that cannot be represented at the peer's
//! version fails with a typed [`ProtocolCompatibilityError`].
//!
//! The crate knows every version up to [`PROTOCOL_VERSION`]; the engine and
//! the SDK of this workspace implement up to [`IMPLEMENTED_PROTOCOL_VERSION`]
//! and never offer or accept more, so a version the crate defines before
//! anything implements it is never negotiated.

pub mod bare;
pub mod close;
pub mod negotiation;
mod versioned;

#[cfg(feature = "arbitrary")]
#[doc(hidden)]
pub mod arbitrary;

/// Types of protocol v1 (connection, actors, KV).
#[allow(clippy::all)] // generated code
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/v1.rs"));
}
/// Types of protocol v2 (KV batches, ranges, error codes).
#[allow(clippy::all)] // generated code
pub mod v2 {
    include!(concat!(env!("OUT_DIR"), "/v2.rs"));
}
/// Types of protocol v3 (intents, stop reasons, limits).
#[allow(clippy::all)] // generated code
pub mod v3 {
    include!(concat!(env!("OUT_DIR"), "/v3.rs"));
}
/// Types of protocol v4 (remote SQLite execution).
#[allow(clippy::all)] // generated code
pub mod v4 {
    include!(concat!(env!("OUT_DIR"), "/v4.rs"));
}

/// Types of protocol v5 (request keys, batches, transactions, streams, cost,
/// typed limits, engine metadata).
#[allow(clippy::all)] // generated code
pub mod v5 {
    include!(concat!(env!("OUT_DIR"), "/v5.rs"));
}

/// Types of protocol v6 (cluster mode's answers: ACTOR_UNAVAILABLE, MOVED).
#[allow(clippy::all)] // generated code
pub mod v6 {
    include!(concat!(env!("OUT_DIR"), "/v6.rs"));
}

/// The latest version's types, which the rest of the project uses.
pub use v6::*;

pub use bare::{DecodeError, DecodeErrorKind};
pub use versioned::{
    decode_to_engine, decode_to_envoy, encode_to_engine, encode_to_envoy, DecodeLimits, Direction, EncodeError,
    Feature, ProtocolCompatibilityError, ProtocolDecodeError, IMPLEMENTED_PROTOCOL_VERSION, MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
};

/// Default largest frame either side accepts (16 MiB).
pub const DEFAULT_MAX_FRAME_BYTES: u32 = 16 * 1024 * 1024;
