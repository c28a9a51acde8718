//! What the core tells its driver: [`Event`]s.

use super::request::{RequestId, Response};
use crate::error::{DisconnectReason, Error};
use envoy_protocol::{Durability, EngineLimits, Limits, SqlLimits, StopReason, Value};

/// An actor the engine started on this envoy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActorInfo {
    /// The engine's id: what requests are routed by.
    pub actor_id: String,
    /// The actor's name and key: how it was found or created.
    pub name: String,
    pub key: String,
    /// The fencing token: requests carry it, and a stale one is refused.
    pub generation: u64,
}

/// What the engine advertised in Init.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionInfo {
    /// The negotiated protocol version.
    pub protocol_version: u16,
    /// The engine's id for this envoy.
    pub envoy_id: String,
    /// How often the engine pings (the default liveness timeout derives from it).
    pub ping_interval_ms: u64,
    /// Reconnect within this to resume the session (actors stay placed).
    pub envoy_lost_threshold_ms: u64,
    /// How long a stopping actor's in-flight work may take.
    pub actor_stop_threshold_ms: u64,
    /// Largest WebSocket message the engine accepts.
    pub max_frame_bytes: u32,
    /// Absent below v3.
    pub limits: Option<Limits>,
    /// Absent below v4.
    pub sql_limits: Option<SqlLimits>,
    /// v5: whether an acknowledged write survives a machine crash (`Fsync`)
    /// or only an engine crash (`Os`). Absent below v5.
    pub durability: Option<Durability>,
    /// v5: the engine's resource limits and timings (batch size, leases, key
    /// retention, stream window...). The client checks `maxBatchStatements`
    /// before sending. Absent below v5.
    pub engine_limits: Option<EngineLimits>,
}

/// The connection's state, as reported to the application.
#[derive(Debug, Clone, PartialEq)]
pub enum ConnectionState {
    /// Opening a socket (attempt counts failures in a row, from 0).
    Connecting { attempt: u32 },
    /// Init received: requests flow.
    Connected(SessionInfo),
    /// Lost; the next attempt starts in `delay_ms`.
    Reconnecting { attempt: u32, delay_ms: u64, cause: String },
    /// Closed for good: by `close()` (reason `None`) or by the engine / a fatal error.
    Closed { error: Option<Error> },
}

/// One output of the core.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Driver: open a socket to the endpoint offering `Core::subprotocols()`.
    Connect,
    /// Driver: close the current socket (or abandon the connect in progress).
    CloseSocket { code: u16, reason: String },
    /// A request finished (for a stream: its last message).
    Response { id: RequestId, result: Result<Response, Error> },
    /// Rows of the stream opened by request `id` (v5), in order. `bytes` is
    /// their size as counted for credit: once the application has taken
    /// them, the driver calls `Core::stream_consumed(id, bytes)`.
    StreamRows { id: RequestId, columns: Option<Vec<String>>, rows: Vec<Vec<Value>>, bytes: u64 },
    /// The engine started an actor here: run the start handler.
    ActorStart(ActorInfo),
    /// The engine is stopping an actor: run the stop handler, then call
    /// `Core::actor_stopped` so the engine learns it is done.
    ActorStop { actor: ActorInfo, reason: StopReason },
    /// The connection changed state.
    State(ConnectionState),
}

impl From<DisconnectReason> for Error {
    fn from(reason: DisconnectReason) -> Self {
        Error::Disconnected { reason }
    }
}
