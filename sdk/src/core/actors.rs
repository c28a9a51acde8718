//! Actors placed on this envoy: commands from the engine (applied once, acked
//! by index) and events to the engine (indexed, kept until acked, re-sent after
//! a reconnect).

use super::event::ActorInfo;
use envoy_protocol as p;
use std::collections::{HashMap, VecDeque};

/// What the core does with one command.
#[derive(Debug)]
pub enum Applied {
    Start(ActorInfo),
    Stop {
        actor: ActorInfo,
        reason: p::StopReason,
    },
    /// Already applied (a re-send after a reconnect): ignored.
    Duplicate,
}

#[derive(Debug)]
struct Placed {
    info: ActorInfo,
    /// A stop command arrived: new requests fail locally with ActorStopping.
    stopping: bool,
}

#[derive(Debug, Default)]
pub struct Actors {
    /// Highest command index applied; sent in the hello so the engine re-sends only newer ones.
    last_command_index: Option<u64>,
    /// Actors by id (one generation each at a time).
    placed: HashMap<String, Placed>,
    /// Index of the next event.
    next_event_index: u64,
    /// Events not yet acked by the engine, in index order.
    unacked: VecDeque<p::EventWrapper>,
    /// Events recorded since the last `take_new_events` (to send now if connected).
    fresh: Vec<p::EventWrapper>,
}

impl Actors {
    pub fn last_command_index(&self) -> Option<u64> {
        self.last_command_index
    }

    /// Applies one command unless it was applied already.
    pub fn apply(&mut self, cmd: p::CommandWrapper) -> Applied {
        if self.last_command_index.is_some_and(|last| cmd.index <= last) {
            return Applied::Duplicate;
        }
        self.last_command_index = Some(cmd.index);
        match cmd.inner {
            p::Command::StartActor(s) => {
                let info = ActorInfo { actor_id: s.actor_id, name: s.name, key: s.key, generation: s.generation };
                self.placed.insert(info.actor_id.clone(), Placed { info: info.clone(), stopping: false });
                self.record(p::Event::ActorStateUpdate(p::EventActorStateUpdate {
                    actor_id: info.actor_id.clone(),
                    generation: info.generation,
                    state: p::ActorState::Running,
                }));
                Applied::Start(info)
            }
            p::Command::StopActor(s) => {
                let info = match self.placed.get_mut(&s.actor_id) {
                    Some(pl) if pl.info.generation == s.generation => {
                        pl.stopping = true;
                        pl.info.clone()
                    }
                    // Unknown here (or another generation): nothing to run, but the
                    // engine still learns it is stopped once the driver confirms.
                    _ => ActorInfo {
                        actor_id: s.actor_id.clone(),
                        name: String::new(),
                        key: String::new(),
                        generation: s.generation,
                    },
                };
                Applied::Stop { actor: info, reason: s.reason }
            }
        }
    }

    /// The stop handler finished: forget the actor and tell the engine.
    pub fn stopped(&mut self, actor_id: &str, generation: u64, error: Option<String>) {
        if self.placed.get(actor_id).is_some_and(|p| p.info.generation == generation) {
            self.placed.remove(actor_id);
        }
        let state = p::ActorState::Stopped(p::ActorStateStopped {
            code: if error.is_some() { p::StopCode::Error } else { p::StopCode::Ok },
            message: error,
        });
        self.record(p::Event::ActorStateUpdate(p::EventActorStateUpdate {
            actor_id: actor_id.to_string(),
            generation,
            state,
        }));
    }

    /// Asks the engine to stop or put the actor to sleep (v3+).
    pub fn intent(&mut self, actor_id: &str, generation: u64, intent: p::ActorIntent) {
        self.record(p::Event::ActorIntent(p::EventActorIntent { actor_id: actor_id.to_string(), generation, intent }));
    }

    /// Whether requests for this actor generation must fail with ActorStopping.
    pub fn is_stopping(&self, actor_id: &str, generation: u64) -> bool {
        self.placed.get(actor_id).is_some_and(|p| p.info.generation == generation && p.stopping)
    }

    /// Actors currently placed here and not stopping.
    pub fn running(&self) -> impl Iterator<Item = &ActorInfo> {
        self.placed.values().filter(|p| !p.stopping).map(|p| &p.info)
    }

    fn record(&mut self, inner: p::Event) {
        let w = p::EventWrapper { index: self.next_event_index, inner };
        self.next_event_index += 1;
        self.unacked.push_back(w.clone());
        self.fresh.push(w);
    }

    /// Events recorded since the last call (to send now on a live connection).
    pub fn take_fresh(&mut self) -> Vec<p::EventWrapper> {
        std::mem::take(&mut self.fresh)
    }

    /// The engine processed every event up to `index`.
    pub fn acked(&mut self, index: u64) {
        while self.unacked.front().is_some_and(|e| e.index <= index) {
            self.unacked.pop_front();
        }
    }

    /// After Init: drop what the engine already has, return the rest to re-send.
    pub fn resume(&mut self, last_event_index: Option<u64>) -> Vec<p::EventWrapper> {
        if let Some(i) = last_event_index {
            self.acked(i);
        }
        self.fresh.clear();
        self.unacked.iter().cloned().collect()
    }

    pub fn unacked_len(&self) -> usize {
        self.unacked.len()
    }
}
