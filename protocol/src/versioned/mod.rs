//! Encoding and decoding at any protocol version.
//!
//! Every message travels through the chain v1 ↔ v2 ↔ v3 ↔ v4 ↔ v5. Upgrades never
//! fail: every older message has a newer form. Downgrades fail with a
//! [`ProtocolCompatibilityError`] where the target version cannot carry the
//! message; fields that only inform (a stop reason, advertised limits, a
//! KV error's limit detail) are
//! dropped instead. Every match over a message enum is exhaustive, so a new
//! variant forces a decision here at every gate.

mod v1_v2;
mod v2_v3;
mod v3_v4;
mod v4_v5;

use crate::bare::{self, DecodeError, Encode};
use crate::{v1, v2, v3, v4, v5};
use std::fmt;

/// The newest protocol version this crate speaks (encodes, decodes, converts).
pub const PROTOCOL_VERSION: u16 = 5;
/// The newest protocol version the engine and the SDK of this workspace
/// implement. They offer and accept at most this version (their defaults, and
/// the bound their configuration is checked against), so a version this crate
/// already defines is not negotiated before its behaviour exists.
pub const IMPLEMENTED_PROTOCOL_VERSION: u16 = 5;
/// The oldest protocol version this crate speaks.
pub const MIN_PROTOCOL_VERSION: u16 = 1;

/// Which way a message travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Engine → envoy.
    ToEnvoy,
    /// Envoy → engine.
    ToEngine,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::ToEnvoy => "engine → envoy",
            Direction::ToEngine => "envoy → engine",
        })
    }
}

/// A capability that only exists from some protocol version on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Feature {
    /// KV get/put/delete of several keys at once (v2).
    KvBatch,
    /// KV delete of a key range (v2).
    KvDeleteRange,
    /// KV list with a query, direction and limit (v2).
    KvList,
    /// Envoy-side intents to stop or sleep an actor (v3).
    ActorIntents,
    /// Remote SQLite execution: Exec, Execute, ExecuteWrite (v4).
    RemoteSqlite,
    /// Exec and Execute with an exactly-once request key and a cost in the
    /// answer; the REQUEST_KEY_* error codes (v5).
    RequestKeys,
    /// Atomic batches of statements (v5).
    AtomicBatch,
    /// Interactive transactions with a lease: begin, statements, commit,
    /// rollback, the end notice; the TRANSACTION_* error codes (v5).
    Transactions,
    /// Streamed query results with credit and cancel; the STREAM_EXPIRED and
    /// CANCELLED error codes (v5).
    ResultStreams,
    /// The limit kinds added in v5, and LIMIT_EXCEEDED / OVERLOADED for
    /// get-or-create (v5).
    LimitErrors,
}

impl Feature {
    /// The first protocol version that carries this feature.
    pub fn required_version(self) -> u16 {
        match self {
            Feature::KvBatch | Feature::KvDeleteRange | Feature::KvList => 2,
            Feature::ActorIntents => 3,
            Feature::RemoteSqlite => 4,
            Feature::RequestKeys
            | Feature::AtomicBatch
            | Feature::Transactions
            | Feature::ResultStreams
            | Feature::LimitErrors => 5,
        }
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Feature::KvBatch => "KV batch operations",
            Feature::KvDeleteRange => "KV delete-range",
            Feature::KvList => "KV list with query, limit and direction",
            Feature::ActorIntents => "actor intents",
            Feature::RemoteSqlite => "remote SQLite execution",
            Feature::RequestKeys => "SQL request keys and cost",
            Feature::AtomicBatch => "atomic SQL batches",
            Feature::Transactions => "interactive SQL transactions",
            Feature::ResultStreams => "streamed SQL results",
            Feature::LimitErrors => "typed limit and overload errors",
        })
    }
}

/// A message that cannot travel at the peer's protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[error(
    "{feature} requires envoy protocol v{required_version}, but this connection speaks v{target_version} ({direction})"
)]
pub struct ProtocolCompatibilityError {
    pub feature: Feature,
    pub direction: Direction,
    pub required_version: u16,
    pub target_version: u16,
}

impl ProtocolCompatibilityError {
    pub(crate) fn new(feature: Feature, direction: Direction, target_version: u16) -> Self {
        Self { feature, direction, required_version: feature.required_version(), target_version }
    }
}

/// Why a message could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error(transparent)]
    Compatibility(#[from] ProtocolCompatibilityError),
    #[error("envoy protocol v{0} is not supported (this build speaks v{MIN_PROTOCOL_VERSION}–v{PROTOCOL_VERSION})")]
    UnsupportedVersion(u16),
}

/// Why a frame could not be decoded: the version and message it was read as,
/// and where in the bytes it failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolDecodeError {
    #[error("cannot decode {message} at envoy protocol v{version}: {source}")]
    Malformed {
        version: u16,
        /// `ToEngine` or `ToEnvoy`.
        message: &'static str,
        #[source]
        source: DecodeError,
    },
    #[error("envoy protocol v{0} is not supported (this build speaks v{MIN_PROTOCOL_VERSION}–v{PROTOCOL_VERSION})")]
    UnsupportedVersion(u16),
}

/// Bounds on what a decode may consume and allocate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Frames longer than this are rejected before any decoding.
    pub max_frame_bytes: usize,
    /// Heap bytes one decode may allocate (strings, blobs, list elements).
    pub max_alloc_bytes: usize,
}

impl DecodeLimits {
    /// Decoded values can be larger than their encoding (a NULL is one byte on
    /// the wire and a few words in memory): allow this many times the frame.
    pub const ALLOC_FACTOR: usize = 8;

    pub fn for_frame(max_frame_bytes: usize) -> Self {
        Self { max_frame_bytes, max_alloc_bytes: max_frame_bytes.saturating_mul(Self::ALLOC_FACTOR) }
    }
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self::for_frame(crate::DEFAULT_MAX_FRAME_BYTES as usize)
    }
}

fn decode_at<T: bare::Decode>(
    bytes: &[u8],
    version: u16,
    message: &'static str,
    limits: &DecodeLimits,
) -> Result<T, ProtocolDecodeError> {
    bare::decode_frame(bytes, limits.max_frame_bytes, limits.max_alloc_bytes)
        .map_err(|source| ProtocolDecodeError::Malformed { version, message, source })
}

fn check_version<E>(version: u16, unsupported: fn(u16) -> E) -> Result<(), E> {
    if (MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&version) {
        Ok(())
    } else {
        Err(unsupported(version))
    }
}

/// Encodes an envoy → engine message for a peer speaking `version`: down the
/// chain one version at a time, stopping at `version`.
pub fn encode_to_engine(msg: &v5::ToEngine, version: u16) -> Result<Vec<u8>, EncodeError> {
    let t = version;
    check_version(version, EncodeError::UnsupportedVersion)?;
    if t == 5 {
        return Ok(msg.to_bytes());
    }
    let m4 = v4_v5::to_engine_down(msg.clone(), t)?;
    if t == 4 {
        return Ok(m4.to_bytes());
    }
    let m3 = v3_v4::to_engine_down(m4, t)?;
    if t == 3 {
        return Ok(m3.to_bytes());
    }
    let m2 = v2_v3::to_engine_down(m3, t)?;
    if t == 2 {
        return Ok(m2.to_bytes());
    }
    Ok(v1_v2::to_engine_down(m2, t)?.to_bytes())
}

/// Encodes an engine → envoy message for a peer speaking `version`.
pub fn encode_to_envoy(msg: &v5::ToEnvoy, version: u16) -> Result<Vec<u8>, EncodeError> {
    let t = version;
    check_version(version, EncodeError::UnsupportedVersion)?;
    if t == 5 {
        return Ok(msg.to_bytes());
    }
    let m4 = v4_v5::to_envoy_down(msg.clone(), t)?;
    if t == 4 {
        return Ok(m4.to_bytes());
    }
    let m3 = v3_v4::to_envoy_down(m4, t)?;
    if t == 3 {
        return Ok(m3.to_bytes());
    }
    let m2 = v2_v3::to_envoy_down(m3, t)?;
    if t == 2 {
        return Ok(m2.to_bytes());
    }
    Ok(v1_v2::to_envoy_down(m2, t)?.to_bytes())
}

/// Decodes an envoy → engine frame sent at `version`, upgraded to the latest types.
pub fn decode_to_engine(
    bytes: &[u8],
    version: u16,
    limits: &DecodeLimits,
) -> Result<v5::ToEngine, ProtocolDecodeError> {
    const M: &str = "ToEngine";
    let m2 = match version {
        5 => return decode_at::<v5::ToEngine>(bytes, 5, M, limits),
        4 => return Ok(v4_v5::to_engine_up(decode_at::<v4::ToEngine>(bytes, 4, M, limits)?)),
        3 => return Ok(v4_v5::to_engine_up(v3_v4::to_engine_up(decode_at::<v3::ToEngine>(bytes, 3, M, limits)?))),
        2 => decode_at::<v2::ToEngine>(bytes, 2, M, limits)?,
        1 => v1_v2::to_engine_up(decode_at::<v1::ToEngine>(bytes, 1, M, limits)?),
        other => return Err(ProtocolDecodeError::UnsupportedVersion(other)),
    };
    Ok(v4_v5::to_engine_up(v3_v4::to_engine_up(v2_v3::to_engine_up(m2))))
}

/// Decodes an engine → envoy frame sent at `version`, upgraded to the latest types.
pub fn decode_to_envoy(bytes: &[u8], version: u16, limits: &DecodeLimits) -> Result<v5::ToEnvoy, ProtocolDecodeError> {
    const M: &str = "ToEnvoy";
    let m2 = match version {
        5 => return decode_at::<v5::ToEnvoy>(bytes, 5, M, limits),
        4 => return Ok(v4_v5::to_envoy_up(decode_at::<v4::ToEnvoy>(bytes, 4, M, limits)?)),
        3 => return Ok(v4_v5::to_envoy_up(v3_v4::to_envoy_up(decode_at::<v3::ToEnvoy>(bytes, 3, M, limits)?))),
        2 => decode_at::<v2::ToEnvoy>(bytes, 2, M, limits)?,
        1 => v1_v2::to_envoy_up(decode_at::<v1::ToEnvoy>(bytes, 1, M, limits)?),
        other => return Err(ProtocolDecodeError::UnsupportedVersion(other)),
    };
    Ok(v4_v5::to_envoy_up(v3_v4::to_envoy_up(v2_v3::to_envoy_up(m2))))
}
