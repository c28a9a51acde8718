//! Actor lifecycle driven by envoys: get-or-create (placement), state events, intents.
//!
//! ```text
//!   (new) ──get-or-create──▶ Starting ──event Running──▶ Running
//!                               │                           │
//!      operator stop / intent / replaced / envoy lost / shutdown / event Stopped
//!                               ▼                           ▼
//!                            Stopping ──in-flight 0 or threshold──▶ Stopped ──get-or-create──▶ Starting (generation + 1)
//! ```

use crate::actor::registry::{ActorState, TooManyActors};
use crate::connection::session::Session;
use crate::drain;
use crate::state::EngineState;
use envoy_protocol::{
    ActorErrorCode, ActorIntent, ActorState as WireActorState, Command, CommandStartActor, Event, EventWrapper,
    GetOrCreateActorError, GetOrCreateActorOk, GetOrCreateActorResult, StopReason, ToEngineGetOrCreateActor, ToEnvoy,
    ToEnvoyGetOrCreateActorResponse,
};
use std::sync::Arc;

/// Longest actor name or key accepted.
pub const MAX_NAME_BYTES: usize = 1024;

pub(crate) fn error(request_id: u32, code: ActorErrorCode, message: impl Into<String>) -> ToEnvoy {
    ToEnvoy::GetOrCreateActorResponse(ToEnvoyGetOrCreateActorResponse {
        request_id,
        result: GetOrCreateActorResult::GetOrCreateActorError(GetOrCreateActorError { code, message: message.into() }),
    })
}

/// Finds or creates (namespace, name, key) and places it on `session`'s envoy.
/// If another envoy holds it, that placement is stopped and drained first
/// (reason REPLACED). Returns the response to send.
pub async fn get_or_create(state: &Arc<EngineState>, session: &Arc<Session>, req: ToEngineGetOrCreateActor) -> ToEnvoy {
    let rid = req.request_id;
    if let Err(refused) = check_request(state, session, &req) {
        return *refused;
    }
    let (rec, created) = match state.registry.get_or_insert(&session.namespace, &req.name, &req.key) {
        Ok(x) => x,
        Err(e) => return error(rid, ActorErrorCode::Internal, format!("registry: {e}")),
    };
    let max_placed = state.config.max_actors_per_connection;
    place(state, session, rid, &rec.actor_id, created, |id, envoy| {
        // The generation bump is fsynced: keep it off the async workers.
        let st = state.clone();
        async move {
            tokio::task::spawn_blocking(move || st.registry.start(&id, &envoy, max_placed))
                .await
                .map_err(|e| anyhow::anyhow!("registry task: {e}"))?
        }
    })
    .await
}

/// The checks of a get-or-create before anything is looked up: the engine is
/// not stopping, the name and key fit, the envoy is under its placement cap.
pub(crate) fn check_request(
    state: &Arc<EngineState>,
    session: &Arc<Session>,
    req: &ToEngineGetOrCreateActor,
) -> Result<(), Box<ToEnvoy>> {
    let rid = req.request_id;
    if state.shutdown.is_shutdown() {
        return Err(Box::new(error(rid, ActorErrorCode::EngineStopping, "the engine is shutting down")));
    }
    if req.name.is_empty() || req.name.len() > MAX_NAME_BYTES || req.key.len() > MAX_NAME_BYTES {
        return Err(Box::new(error(
            rid,
            ActorErrorCode::InvalidRequest,
            format!("actor name must be 1..={MAX_NAME_BYTES} bytes and key at most {MAX_NAME_BYTES} bytes"),
        )));
    }
    // The per-envoy cap, checked before anything is created; `Registry::start`
    // checks it again atomically with the placement.
    let max_placed = state.config.max_actors_per_connection;
    if state.registry.placed_count(&session.namespace, &session.envoy_key) >= max_placed {
        let placed_here = state
            .registry
            .find(&session.namespace, &req.name, &req.key)
            .is_some_and(|r| r.envoy.as_deref() == Some(session.envoy_key.as_str()));
        if !placed_here {
            return Err(Box::new(error(
                rid,
                ActorErrorCode::InvalidRequest,
                TooManyActors { max: max_placed }.to_string(),
            )));
        }
    }
    Ok(())
}

/// Places the known actor `actor_id` on `session`'s envoy: answers at once if it
/// is live there, drains another placement first, and starts a Stopped actor
/// with `start(actor_id, envoy key)`, which raises and records its generation
/// (the embedded registry in one node, etcd then the registry in a cluster).
pub(crate) async fn place<F, Fut>(
    state: &Arc<EngineState>,
    session: &Arc<Session>,
    rid: u32,
    actor_id: &str,
    created: bool,
    mut start: F,
) -> ToEnvoy
where
    F: FnMut(String, String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<crate::actor::registry::ActorRecord>>,
{
    let lock = state.placement_lock(actor_id);
    let _placing = lock.lock().await;
    // Bounded: each round either answers or completes a drain that moves the actor to Stopped.
    for _ in 0..8 {
        if state.shutdown.is_shutdown() {
            return error(rid, ActorErrorCode::EngineStopping, "the engine is shutting down");
        }
        let Some(cur) = state.registry.get(actor_id) else {
            return error(rid, ActorErrorCode::Internal, "actor vanished from the registry");
        };
        let mine = cur.envoy.as_deref() == Some(session.envoy_key.as_str());
        match cur.state {
            ActorState::Starting | ActorState::Running if mine => {
                return ok(rid, &cur.actor_id, cur.generation, created);
            }
            ActorState::Starting | ActorState::Running | ActorState::Stopping => {
                let reason = if mine { StopReason::Unspecified } else { StopReason::Replaced };
                if let Err(e) = drain::drain(state, &cur.actor_id, Some(cur.generation), reason, true).await {
                    return error(rid, ActorErrorCode::Internal, format!("stopping the previous placement: {e}"));
                }
            }
            ActorState::Stopped => {
                let started = match start(cur.actor_id.clone(), session.envoy_key.clone()).await {
                    Ok(r) => r,
                    // v4's ActorErrorCode has no LIMIT code (published schemas are frozen).
                    Err(e) if e.is::<TooManyActors>() => {
                        return error(rid, ActorErrorCode::InvalidRequest, e.to_string())
                    }
                    Err(e) => return start_error(rid, e),
                };
                session.send_command(Command::StartActor(CommandStartActor {
                    actor_id: started.actor_id.clone(),
                    generation: started.generation,
                    name: started.name.clone(),
                    key: started.key.clone(),
                }));
                tracing::info!(actor_id = %started.actor_id, generation = started.generation,
                    envoy = %session.envoy_key, "actor placed");
                return ok(rid, &started.actor_id, started.generation, created);
            }
        }
    }
    error(rid, ActorErrorCode::Internal, "could not place the actor (it kept moving)")
}

/// The answer to a failed start: a typed error carried in `e` picks its code.
fn start_error(rid: u32, e: anyhow::Error) -> ToEnvoy {
    #[cfg(feature = "cluster")]
    if let Some(u) = e.downcast_ref::<crate::cluster::Unavailable>() {
        return error(rid, ActorErrorCode::ActorUnavailable, u.to_string());
    }
    error(rid, ActorErrorCode::Internal, format!("registry: {e}"))
}

fn ok(request_id: u32, actor_id: &str, generation: u64, created: bool) -> ToEnvoy {
    ToEnvoy::GetOrCreateActorResponse(ToEnvoyGetOrCreateActorResponse {
        request_id,
        result: GetOrCreateActorResult::GetOrCreateActorOk(GetOrCreateActorOk {
            actor_id: actor_id.to_string(),
            generation,
            created,
        }),
    })
}

/// Applies one event from `session`'s envoy (already deduplicated by index).
/// Events about another envoy's actor or a stale generation are ignored.
pub fn handle_event(state: &Arc<EngineState>, session: &Arc<Session>, event: EventWrapper) {
    let (actor_id, generation) = match &event.inner {
        Event::ActorStateUpdate(u) => (u.actor_id.clone(), u.generation),
        Event::ActorIntent(i) => (i.actor_id.clone(), i.generation),
    };
    let Some(rec) = state.registry.get(&actor_id) else { return };
    if rec.generation != generation
        || rec.namespace != session.namespace
        || rec.envoy.as_deref() != Some(session.envoy_key.as_str())
    {
        tracing::debug!(actor_id, generation, "ignoring an event for a stale or foreign placement");
        return;
    }
    match event.inner {
        Event::ActorStateUpdate(u) => match u.state {
            WireActorState::Running => {
                if rec.state == ActorState::Starting {
                    let _ = state.registry.set_state(&actor_id, generation, ActorState::Running);
                }
            }
            WireActorState::Stopped(s) => {
                if rec.state.is_live() {
                    tracing::info!(actor_id, generation, code = ?s.code, message = ?s.message, "envoy reported the actor stopped");
                    let state = state.clone();
                    tokio::spawn(async move {
                        let _ = drain::drain(&state, &actor_id, Some(generation), StopReason::Unspecified, false).await;
                    });
                }
            }
        },
        Event::ActorIntent(i) => {
            let reason = match i.intent {
                ActorIntent::Stop => StopReason::EnvoyStopIntent,
                ActorIntent::Sleep => StopReason::EnvoySleepIntent,
            };
            if rec.state.is_live() {
                let state = state.clone();
                tokio::spawn(async move {
                    let _ = drain::drain(&state, &actor_id, Some(generation), reason, true).await;
                });
            }
        }
    }
}

/// Unplaces every actor of a lost envoy (no StopActor: nobody is there to receive it).
pub fn envoy_lost(state: &Arc<EngineState>, namespace: &str, envoy_key: &str) {
    for a in state.registry.placed_on(namespace, envoy_key) {
        tracing::warn!(actor_id = %a.actor_id, envoy = envoy_key, "envoy lost: unplacing actor");
        let state = state.clone();
        tokio::spawn(async move {
            let _ = drain::drain(&state, &a.actor_id, Some(a.generation), StopReason::EnvoyLost, false).await;
        });
    }
}
