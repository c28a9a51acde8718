//! v2 ↔ v3: actor intents, stop reasons and advertised limits.

use super::{Direction, Feature, ProtocolCompatibilityError};
use crate::{v2, v3};

type Result<T> = std::result::Result<T, ProtocolCompatibilityError>;

// ---------------------------------------------------------------- ToEngine

fn event_up(x: v2::Event) -> v3::Event {
    match x {
        v2::Event::ActorStateUpdate(v) => v3::Event::ActorStateUpdate(v),
    }
}

fn event_down(x: v3::Event, t: u16) -> Result<v2::Event> {
    Ok(match x {
        v3::Event::ActorStateUpdate(v) => v2::Event::ActorStateUpdate(v),
        v3::Event::ActorIntent(_) => {
            return Err(ProtocolCompatibilityError::new(Feature::ActorIntents, Direction::ToEngine, t))
        }
    })
}

fn events_up(x: v2::ToEngineEvents) -> v3::ToEngineEvents {
    v3::ToEngineEvents {
        events: x.events.into_iter().map(|w| v3::EventWrapper { index: w.index, inner: event_up(w.inner) }).collect(),
    }
}

fn events_down(x: v3::ToEngineEvents, t: u16) -> Result<v2::ToEngineEvents> {
    Ok(v2::ToEngineEvents {
        events: x
            .events
            .into_iter()
            .map(|w| Ok(v2::EventWrapper { index: w.index, inner: event_down(w.inner, t)? }))
            .collect::<Result<_>>()?,
    })
}

pub(super) fn to_engine_up(x: v2::ToEngine) -> v3::ToEngine {
    use v2::ToEngine as A;
    use v3::ToEngine as B;
    match x {
        A::Metadata(v) => B::Metadata(v),
        A::Events(v) => B::Events(events_up(v)),
        A::AckCommands(v) => B::AckCommands(v),
        A::Stopping => B::Stopping,
        A::Pong(v) => B::Pong(v),
        A::KvRequest(v) => B::KvRequest(v),
        A::GetOrCreateActor(v) => B::GetOrCreateActor(v),
    }
}

pub(super) fn to_engine_down(x: v3::ToEngine, t: u16) -> Result<v2::ToEngine> {
    use v2::ToEngine as A;
    use v3::ToEngine as B;
    Ok(match x {
        B::Metadata(v) => A::Metadata(v),
        B::Events(v) => A::Events(events_down(v, t)?),
        B::AckCommands(v) => A::AckCommands(v),
        B::Stopping => A::Stopping,
        B::Pong(v) => A::Pong(v),
        B::KvRequest(v) => A::KvRequest(v),
        B::GetOrCreateActor(v) => A::GetOrCreateActor(v),
    })
}

// ---------------------------------------------------------------- ToEnvoy

fn init_up(x: v2::ToEnvoyInit) -> v3::ToEnvoyInit {
    let m = x.metadata;
    v3::ToEnvoyInit {
        envoy_id: x.envoy_id,
        last_event_index: x.last_event_index,
        metadata: v3::ProtocolMetadata {
            ping_interval_ms: m.ping_interval_ms,
            envoy_lost_threshold_ms: m.envoy_lost_threshold_ms,
            actor_stop_threshold_ms: m.actor_stop_threshold_ms,
            max_frame_bytes: m.max_frame_bytes,
            // A v2 engine advertises no limits.
            limits: None,
        },
    }
}

fn init_down(x: v3::ToEnvoyInit) -> v2::ToEnvoyInit {
    let m = x.metadata;
    v2::ToEnvoyInit {
        envoy_id: x.envoy_id,
        last_event_index: x.last_event_index,
        // Limits are advisory for the envoy; a v2 envoy is still held to them.
        metadata: v2::ProtocolMetadata {
            ping_interval_ms: m.ping_interval_ms,
            envoy_lost_threshold_ms: m.envoy_lost_threshold_ms,
            actor_stop_threshold_ms: m.actor_stop_threshold_ms,
            max_frame_bytes: m.max_frame_bytes,
        },
    }
}

fn commands_up(x: v2::ToEnvoyCommands) -> v3::ToEnvoyCommands {
    v3::ToEnvoyCommands {
        commands: x
            .commands
            .into_iter()
            .map(|w| v3::CommandWrapper {
                index: w.index,
                inner: match w.inner {
                    v2::Command::StartActor(v) => v3::Command::StartActor(v),
                    v2::Command::StopActor(v) => v3::Command::StopActor(v3::CommandStopActor {
                        actor_id: v.actor_id,
                        generation: v.generation,
                        reason: v3::StopReason::Unspecified,
                    }),
                },
            })
            .collect(),
    }
}

fn commands_down(x: v3::ToEnvoyCommands) -> v2::ToEnvoyCommands {
    v2::ToEnvoyCommands {
        commands: x
            .commands
            .into_iter()
            .map(|w| v2::CommandWrapper {
                index: w.index,
                inner: match w.inner {
                    v3::Command::StartActor(v) => v2::Command::StartActor(v),
                    // The reason only informs; a v2 envoy stops the actor all the same.
                    v3::Command::StopActor(v) => {
                        v2::Command::StopActor(v2::CommandStopActor { actor_id: v.actor_id, generation: v.generation })
                    }
                },
            })
            .collect(),
    }
}

pub(super) fn to_envoy_up(x: v2::ToEnvoy) -> v3::ToEnvoy {
    use v2::ToEnvoy as A;
    use v3::ToEnvoy as B;
    match x {
        A::Init(v) => B::Init(init_up(v)),
        A::Commands(v) => B::Commands(commands_up(v)),
        A::AckEvents(v) => B::AckEvents(v),
        A::Ping(v) => B::Ping(v),
        A::KvResponse(v) => B::KvResponse(v),
        A::GetOrCreateActorResponse(v) => B::GetOrCreateActorResponse(v),
    }
}

pub(super) fn to_envoy_down(x: v3::ToEnvoy, _t: u16) -> Result<v2::ToEnvoy> {
    use v2::ToEnvoy as A;
    use v3::ToEnvoy as B;
    Ok(match x {
        B::Init(v) => A::Init(init_down(v)),
        B::Commands(v) => A::Commands(commands_down(v)),
        B::AckEvents(v) => A::AckEvents(v),
        B::Ping(v) => A::Ping(v),
        B::KvResponse(v) => A::KvResponse(v),
        B::GetOrCreateActorResponse(v) => A::GetOrCreateActorResponse(v),
    })
}
