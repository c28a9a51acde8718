//! Stop and drain an actor; drain the whole engine on shutdown.
//!
//! A drain: mark the actor Stopping (new requests get ACTOR_STOPPING), send
//! `StopActor(reason)` to its envoy, wait until its in-flight count is zero or
//! the actor stop threshold passes, only then interrupt what still runs, wait
//! for those statements to return, checkpoint and close the database, record
//! Stopped (unplaced). Concurrent stops of one actor share one drain.

use crate::actor::registry::ActorState;
use crate::state::EngineState;
use envoy_protocol::{close, Command, CommandStopActor, StopReason};
use parking_lot::Mutex;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How often a drain past its threshold re-interrupts while waiting for statements to return.
const REINTERRUPT_EVERY: Duration = Duration::from_millis(100);
/// How long shutdown waits for sockets to finish closing after the drains.
const SOCKET_CLOSE_GRACE: Duration = Duration::from_secs(5);

/// What a drain did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DrainReport {
    /// The actor drained.
    pub actor_id: String,
    /// The generation that was stopped (the current one if nothing was live).
    pub generation: u64,
    /// Wall time from the stop request to Stopped.
    pub duration_ms: u64,
    /// Requests answered INTERRUPTED because they outlived the threshold (or were still queued then).
    pub interrupted: u64,
    /// Whether in-flight work reached zero before the threshold.
    pub drained_in_time: bool,
    /// Requests that had not started when the stop began: answered ACTOR_STOPPING
    /// at once (never run, safe to retry) instead of being run first.
    pub turned_away: u64,
    /// False when the actor was not live (nothing to drain).
    pub was_running: bool,
}

/// Drains in progress by actor id.
#[derive(Default)]
pub struct Drains {
    /// Receivers of running drains by actor id: a second stop waits on the first one's report instead of draining twice.
    map: Mutex<HashMap<String, watch::Receiver<Option<DrainReport>>>>,
}

/// Why a stop could not be done.
#[derive(Debug, thiserror::Error)]
pub enum StopError {
    #[error("no actor with id {0}")]
    NotFound(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// Operator / intent stop: sends StopActor and drains.
pub async fn stop_actor(state: &Arc<EngineState>, actor_id: &str, reason: StopReason) -> anyhow::Result<DrainReport> {
    Ok(drain(state, actor_id, None, reason, true).await?)
}

/// Drains `actor_id` (only if its generation is `only_generation`, when given:
/// a drain decided about one placement never stops a newer one). `send_stop`:
/// whether to send StopActor (not when the envoy already reported the actor
/// stopped or is gone).
pub async fn drain(
    state: &Arc<EngineState>,
    actor_id: &str,
    only_generation: Option<u64>,
    reason: StopReason,
    send_stop: bool,
) -> Result<DrainReport, StopError> {
    let started = Instant::now();
    enum Start {
        Join(watch::Receiver<Option<DrainReport>>),
        Own(watch::Sender<Option<DrainReport>>, crate::actor::registry::ActorRecord),
        NotLive,
    }
    let start = {
        let mut map = state.drains.map.lock();
        if let Some(rx) = map.get(actor_id).cloned() {
            Start::Join(rx)
        } else {
            match state.registry.begin_stop(actor_id, only_generation)? {
                Some(rec) => {
                    let (tx, rx) = watch::channel(None);
                    map.insert(actor_id.to_string(), rx);
                    Start::Own(tx, rec)
                }
                None => Start::NotLive,
            }
        }
    };
    let (tx, rec) = match start {
        Start::Join(rx) => return Ok(wait_for(rx).await),
        Start::Own(tx, rec) => (tx, rec),
        Start::NotLive => {
            let Some(rec) = state.registry.get(actor_id) else {
                return Err(StopError::NotFound(actor_id.to_string()));
            };
            if rec.state == ActorState::Stopping && only_generation.is_none_or(|g| g == rec.generation) {
                // Stopping with no drain running (cannot normally happen): finish it.
                state.registry.set_state(actor_id, rec.generation, ActorState::Stopped)?;
            }
            return Ok(DrainReport {
                actor_id: actor_id.to_string(),
                generation: rec.generation,
                duration_ms: 0,
                interrupted: 0,
                drained_in_time: true,
                turned_away: 0,
                was_running: false,
            });
        }
    };
    let generation = rec.generation;
    tracing::info!(actor_id, generation, ?reason, "draining actor");
    if send_stop {
        if let Some(envoy) = rec.envoy.as_deref() {
            if let Some(session) = state.sessions.get(&rec.namespace, envoy) {
                session.send_command(Command::StopActor(CommandStopActor {
                    actor_id: actor_id.to_string(),
                    generation,
                    reason,
                }));
            }
        }
    }
    // Queued requests that have not started are turned away from here on; a stop
    // takes as long as the work running, not the work queued.
    let executor = state.generations.executor(actor_id, generation);
    if let Some(x) = &executor {
        x.begin_drain();
    }
    // Result streams wait on their clients, not on the engine: they end now
    // (INTERRUPTED) rather than hold the stop until the threshold.
    state.streams.stop_actor(actor_id, generation);
    let threshold = state.config.actor_stop_threshold;
    let drained_in_time = state.generations.wait_zero(actor_id, generation, threshold).await;
    if !drained_in_time {
        tracing::warn!(
            actor_id,
            generation,
            inflight = state.generations.inflight(actor_id, generation),
            "stop threshold passed; interrupting in-flight work"
        );
        if let Some(x) = &executor {
            // Open interactive transactions (v5) roll back now and their envoys are told why.
            x.end_transactions(crate::sql::transaction::end_reason(reason));
            x.interrupt();
        }
        // Interrupted statements return quickly; keep interrupting until every request is answered.
        while !state.generations.wait_zero(actor_id, generation, REINTERRUPT_EVERY).await {
            if let Some(x) = &executor {
                x.interrupt();
            }
        }
    }
    let mut interrupted = 0;
    let mut turned_away = 0;
    if let Some(x) = state.generations.retire(actor_id, generation) {
        interrupted = x.interrupted_count() as u64;
        turned_away = x.turned_away_count() as u64;
        // close() takes the connection locks, so it waits for any statement still on them.
        let closing = x.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || closing.close()).await {
            tracing::error!(actor_id, error = %e, "closing the executor panicked");
        }
        interrupted = interrupted.max(x.interrupted_count() as u64);
    }
    let _ = state.registry.set_state(actor_id, generation, ActorState::Stopped);
    let report = DrainReport {
        actor_id: actor_id.to_string(),
        generation,
        duration_ms: started.elapsed().as_millis() as u64,
        interrupted,
        drained_in_time,
        turned_away,
        was_running: true,
    };
    tracing::info!(actor_id, generation, duration_ms = report.duration_ms, interrupted, "actor stopped");
    state.metrics.drain_finished(reason, &report);
    state.drains.map.lock().remove(actor_id);
    let _ = tx.send(Some(report.clone()));
    Ok(report)
}

async fn wait_for(mut rx: watch::Receiver<Option<DrainReport>>) -> DrainReport {
    loop {
        if let Some(r) = rx.borrow().clone() {
            return r;
        }
        if rx.changed().await.is_err() {
            // The draining task vanished (cannot happen without a panic); report what we know.
            return rx.borrow().clone().unwrap_or(DrainReport {
                actor_id: String::new(),
                generation: 0,
                duration_ms: 0,
                interrupted: 0,
                drained_in_time: false,
                turned_away: 0,
                was_running: false,
            });
        }
    }
}

/// Drains every live actor concurrently, then closes every socket with GOING_AWAY.
pub async fn shutdown_engine(state: &Arc<EngineState>) {
    tracing::info!("engine shutting down: draining every actor");
    state.shutdown_trigger.trigger();
    let live: Vec<String> = state
        .registry
        .list()
        .into_iter()
        .filter(|a| a.state.is_live() || a.state == ActorState::Stopping)
        .map(|a| a.actor_id)
        .collect();
    let drains = live.iter().map(|id| drain(state, id, None, StopReason::EngineShutdown, true));
    for r in futures_util::future::join_all(drains).await {
        if let Err(e) = r {
            tracing::warn!(error = %e, "drain during shutdown failed");
        }
    }
    for s in state.sessions.all() {
        s.close(close::GOING_AWAY, "engine shutting down");
    }
    if tokio::time::timeout(SOCKET_CLOSE_GRACE, state.tasks.wait()).await.is_err() {
        tracing::warn!("some connections did not close in time");
    }
    tracing::info!("engine stopped");
}
