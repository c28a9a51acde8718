//! v3 ↔ v4: remote SQLite execution and SQL limits.

use super::{Direction, Feature, ProtocolCompatibilityError};
use crate::{v3, v4};

type Result<T> = std::result::Result<T, ProtocolCompatibilityError>;

fn sql_gate<T>(direction: Direction, t: u16) -> Result<T> {
    Err(ProtocolCompatibilityError::new(Feature::RemoteSqlite, direction, t))
}

pub(super) fn to_engine_up(x: v3::ToEngine) -> v4::ToEngine {
    use v3::ToEngine as A;
    use v4::ToEngine as B;
    match x {
        A::Metadata(v) => B::Metadata(v),
        A::Events(v) => B::Events(v),
        A::AckCommands(v) => B::AckCommands(v),
        A::Stopping => B::Stopping,
        A::Pong(v) => B::Pong(v),
        A::KvRequest(v) => B::KvRequest(v),
        A::GetOrCreateActor(v) => B::GetOrCreateActor(v),
    }
}

pub(super) fn to_engine_down(x: v4::ToEngine, t: u16) -> Result<v3::ToEngine> {
    use v3::ToEngine as A;
    use v4::ToEngine as B;
    let d = Direction::ToEngine;
    Ok(match x {
        B::Metadata(v) => A::Metadata(v),
        B::Events(v) => A::Events(v),
        B::AckCommands(v) => A::AckCommands(v),
        B::Stopping => A::Stopping,
        B::Pong(v) => A::Pong(v),
        B::KvRequest(v) => A::KvRequest(v),
        B::GetOrCreateActor(v) => A::GetOrCreateActor(v),
        B::SqliteExec(_) | B::SqliteExecute(_) | B::SqliteExecuteWrite(_) => return sql_gate(d, t),
    })
}

fn init_up(x: v3::ToEnvoyInit) -> v4::ToEnvoyInit {
    let m = x.metadata;
    v4::ToEnvoyInit {
        envoy_id: x.envoy_id,
        last_event_index: x.last_event_index,
        metadata: v4::ProtocolMetadata {
            ping_interval_ms: m.ping_interval_ms,
            envoy_lost_threshold_ms: m.envoy_lost_threshold_ms,
            actor_stop_threshold_ms: m.actor_stop_threshold_ms,
            max_frame_bytes: m.max_frame_bytes,
            limits: m.limits,
            // A v3 engine has no SQL, so no SQL limits.
            sql_limits: None,
        },
    }
}

fn init_down(x: v4::ToEnvoyInit) -> v3::ToEnvoyInit {
    let m = x.metadata;
    v3::ToEnvoyInit {
        envoy_id: x.envoy_id,
        last_event_index: x.last_event_index,
        // SQL limits mean nothing to a peer that cannot send SQL.
        metadata: v3::ProtocolMetadata {
            ping_interval_ms: m.ping_interval_ms,
            envoy_lost_threshold_ms: m.envoy_lost_threshold_ms,
            actor_stop_threshold_ms: m.actor_stop_threshold_ms,
            max_frame_bytes: m.max_frame_bytes,
            limits: m.limits,
        },
    }
}

pub(super) fn to_envoy_up(x: v3::ToEnvoy) -> v4::ToEnvoy {
    use v3::ToEnvoy as A;
    use v4::ToEnvoy as B;
    match x {
        A::Init(v) => B::Init(init_up(v)),
        A::Commands(v) => B::Commands(v),
        A::AckEvents(v) => B::AckEvents(v),
        A::Ping(v) => B::Ping(v),
        A::KvResponse(v) => B::KvResponse(v),
        A::GetOrCreateActorResponse(v) => B::GetOrCreateActorResponse(v),
    }
}

pub(super) fn to_envoy_down(x: v4::ToEnvoy, t: u16) -> Result<v3::ToEnvoy> {
    use v3::ToEnvoy as A;
    use v4::ToEnvoy as B;
    let d = Direction::ToEnvoy;
    Ok(match x {
        B::Init(v) => A::Init(init_down(v)),
        B::Commands(v) => A::Commands(v),
        B::AckEvents(v) => A::AckEvents(v),
        B::Ping(v) => A::Ping(v),
        B::KvResponse(v) => A::KvResponse(v),
        B::GetOrCreateActorResponse(v) => A::GetOrCreateActorResponse(v),
        B::SqliteExecResponse(_) | B::SqliteExecuteResponse(_) => return sql_gate(d, t),
    })
}
