//! The actor registry: which actors exist, their generation, state and placement.
//!
//! Persisted in `<data>/engine.sqlite`. Generation bumps commit with
//! synchronous=FULL (fsync): a generation is on disk before `StartActor` leaves
//! the engine, so no generation is ever reused, across restarts and power loss
//! too. Other state changes commit with synchronous=NORMAL (they survive an
//! engine crash; after a power loss the last ones may be lost, which is
//! harmless: on start every actor is recorded Stopped anyway). An in-memory
//! mirror answers the hot-path checks (placement, generation, stopping)
//! without touching the database.

use anyhow::Context;
use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use std::collections::HashMap;
use std::path::Path;

/// Lifecycle state of an actor (see specs/engine.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorState {
    /// Placed, `StartActor` sent, the envoy has not reported Running yet.
    Starting,
    /// The envoy reported the actor running.
    Running,
    /// Draining: new requests get ACTOR_STOPPING; in-flight ones finish.
    Stopping,
    /// Not placed anywhere; the next get-or-create starts generation + 1.
    Stopped,
}

impl ActorState {
    fn as_str(self) -> &'static str {
        match self {
            ActorState::Starting => "starting",
            ActorState::Running => "running",
            ActorState::Stopping => "stopping",
            ActorState::Stopped => "stopped",
        }
    }

    fn parse(s: &str) -> ActorState {
        match s {
            "starting" => ActorState::Starting,
            "running" => ActorState::Running,
            "stopping" => ActorState::Stopping,
            _ => ActorState::Stopped,
        }
    }

    /// Whether the actor is placed on an envoy and accepting requests.
    pub fn is_live(self) -> bool {
        matches!(self, ActorState::Starting | ActorState::Running)
    }
}

/// One actor as the registry knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActorRecord {
    /// Envoys of another namespace never see this actor.
    pub namespace: String,
    /// Engine-assigned, unique, stable across restarts; names the actor's folder.
    #[serde(rename = "id")]
    pub actor_id: String,
    /// Together with `key`, what envoys address the actor by.
    pub name: String,
    /// With `name`, the actor's address within its namespace.
    pub key: String,
    /// Raised by one on every start; requests must name the current one.
    pub generation: u64,
    /// Lifecycle state (decides which requests are served).
    pub state: ActorState,
    /// Envoy key of the envoy it is placed on (None when stopped).
    pub envoy: Option<String>,
}

/// The registry: metadata DB plus its in-memory mirror.
pub struct Registry {
    /// The metadata database; only touched on state changes.
    db: Mutex<Connection>,
    /// Mirror of every row, by actor id; the source of truth for checks.
    actors: Mutex<HashMap<String, ActorRecord>>,
    /// (namespace, name, key) → actor id, so get-or-create does not scan.
    by_name: Mutex<HashMap<(String, String, String), String>>,
    /// Actors placed per (namespace, envoy key), kept with `actors` (always locked
    /// after it) so the per-envoy cap is checked and taken in one step.
    placed: Mutex<HashMap<(String, String), usize>>,
}

/// A placement refused because the envoy already holds its cap of actors.
#[derive(Debug, thiserror::Error)]
#[error(
    "this envoy already has {max} actors placed (max_actors_per_connection = {max}); stop one before placing another"
)]
pub struct TooManyActors {
    /// The cap (`Config::max_actors_per_connection`).
    pub max: usize,
}

impl Registry {
    /// Opens (or creates) the metadata DB. Actors left live by a previous run
    /// are recorded Stopped and unplaced: their envoys' sessions died with it.
    pub fn open(data_dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data_dir).with_context(|| format!("creating data dir {}", data_dir.display()))?;
        let path = data_dir.join("engine.sqlite");
        let db = Connection::open(&path).with_context(|| format!("opening {}", path.display()))?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "NORMAL")?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS actors (
                actor_id   TEXT PRIMARY KEY,
                namespace  TEXT NOT NULL,
                name       TEXT NOT NULL,
                key        TEXT NOT NULL,
                generation INTEGER NOT NULL,
                state      TEXT NOT NULL,
                envoy      TEXT,
                UNIQUE (namespace, name, key)
            );
            UPDATE actors SET state = 'stopped', envoy = NULL WHERE state <> 'stopped';",
        )?;
        let mut actors = HashMap::new();
        {
            let mut stmt = db.prepare("SELECT actor_id, namespace, name, key, generation, state, envoy FROM actors")?;
            let rows = stmt.query_map([], |r| {
                Ok(ActorRecord {
                    actor_id: r.get(0)?,
                    namespace: r.get(1)?,
                    name: r.get(2)?,
                    key: r.get(3)?,
                    generation: r.get::<_, i64>(4)? as u64,
                    state: ActorState::parse(&r.get::<_, String>(5)?),
                    envoy: r.get(6)?,
                })
            })?;
            for row in rows {
                let rec = row?;
                actors.insert(rec.actor_id.clone(), rec);
            }
        }
        let by_name = actors
            .values()
            .map(|a| ((a.namespace.clone(), a.name.clone(), a.key.clone()), a.actor_id.clone()))
            .collect();
        Ok(Self {
            db: Mutex::new(db),
            actors: Mutex::new(actors),
            by_name: Mutex::new(by_name),
            // Every actor is Stopped (unplaced) after open.
            placed: Mutex::new(HashMap::new()),
        })
    }

    /// Runs `f` on the record without cloning it (the hot-path admission check).
    pub fn with<R>(&self, actor_id: &str, f: impl FnOnce(Option<&ActorRecord>) -> R) -> R {
        f(self.actors.lock().get(actor_id))
    }

    pub fn get(&self, actor_id: &str) -> Option<ActorRecord> {
        self.actors.lock().get(actor_id).cloned()
    }

    pub fn find(&self, namespace: &str, name: &str, key: &str) -> Option<ActorRecord> {
        let actors = self.actors.lock();
        let id = self.by_name.lock().get(&(namespace.to_string(), name.to_string(), key.to_string())).cloned()?;
        actors.get(&id).cloned()
    }

    /// Every actor, sorted by namespace, name, key.
    pub fn list(&self) -> Vec<ActorRecord> {
        let mut v: Vec<_> = self.actors.lock().values().cloned().collect();
        v.sort_by(|a, b| (&a.namespace, &a.name, &a.key).cmp(&(&b.namespace, &b.name, &b.key)));
        v
    }

    /// Actors placed on `envoy` in `namespace`.
    pub fn placed_on(&self, namespace: &str, envoy: &str) -> Vec<ActorRecord> {
        self.actors
            .lock()
            .values()
            .filter(|a| a.namespace == namespace && a.envoy.as_deref() == Some(envoy))
            .cloned()
            .collect()
    }

    /// Creates a Stopped actor (generation 0) if (namespace, name, key) is new; returns it and whether it was created.
    pub fn get_or_insert(&self, namespace: &str, name: &str, key: &str) -> anyhow::Result<(ActorRecord, bool)> {
        let mut actors = self.actors.lock();
        let mut by_name = self.by_name.lock();
        let name_key = (namespace.to_string(), name.to_string(), key.to_string());
        if let Some(a) = by_name.get(&name_key).and_then(|id| actors.get(id)) {
            return Ok((a.clone(), false));
        }
        let db = self.db.lock();
        let actor_id: String = db.query_row("SELECT lower(hex(randomblob(12)))", [], |r| r.get(0))?;
        db.execute(
            "INSERT INTO actors (actor_id, namespace, name, key, generation, state, envoy) VALUES (?1, ?2, ?3, ?4, 0, 'stopped', NULL)",
            params![actor_id, namespace, name, key],
        )?;
        let rec = ActorRecord {
            namespace: namespace.into(),
            actor_id: actor_id.clone(),
            name: name.into(),
            key: key.into(),
            generation: 0,
            state: ActorState::Stopped,
            envoy: None,
        };
        by_name.insert(name_key, actor_id.clone());
        actors.insert(actor_id, rec.clone());
        Ok((rec, true))
    }

    /// Cluster mode: makes the local record of an actor the directory in etcd
    /// names (this node owns it or is receiving it). Creates it Stopped at
    /// `generation` if missing; a local record of the same (namespace, name,
    /// key) under another id (an actor deleted and made again elsewhere) is
    /// replaced. An existing record is left as it is: its generation changes
    /// only with a placement ([`Registry::start_at`], under the placement lock),
    /// and every generation etcd hands out later is above it anyway.
    pub fn ensure(
        &self,
        actor_id: &str,
        namespace: &str,
        name: &str,
        key: &str,
        generation: u64,
    ) -> anyhow::Result<ActorRecord> {
        let mut actors = self.actors.lock();
        let mut by_name = self.by_name.lock();
        let name_key = (namespace.to_string(), name.to_string(), key.to_string());
        if let Some(rec) = actors.get(actor_id) {
            return Ok(rec.clone());
        }
        let db = self.db.lock();
        if let Some(stale) = by_name.get(&name_key).cloned() {
            if actors.get(&stale).is_some_and(|a| a.state.is_live() || a.state == ActorState::Stopping) {
                anyhow::bail!("another actor of this name and key is still live here");
            }
            db.execute("DELETE FROM actors WHERE actor_id = ?1", params![stale])?;
            actors.remove(&stale);
        }
        db.execute(
            "INSERT INTO actors (actor_id, namespace, name, key, generation, state, envoy) VALUES (?1, ?2, ?3, ?4, ?5, 'stopped', NULL)",
            params![actor_id, namespace, name, key, generation as i64],
        )?;
        let rec = ActorRecord {
            namespace: namespace.into(),
            actor_id: actor_id.into(),
            name: name.into(),
            key: key.into(),
            generation,
            state: ActorState::Stopped,
            envoy: None,
        };
        by_name.insert(name_key, actor_id.to_string());
        actors.insert(actor_id.to_string(), rec.clone());
        Ok(rec)
    }

    /// Forgets a Stopped actor for good (its files are the caller's to delete).
    /// Returns false when it does not exist or is not Stopped. Its name and key
    /// become free; a later get-or-create of them makes a new actor with a new id,
    /// so no (actor id, generation) is ever reused.
    pub fn remove(&self, actor_id: &str) -> anyhow::Result<bool> {
        let mut actors = self.actors.lock();
        let mut by_name = self.by_name.lock();
        let Some(rec) = actors.get(actor_id).filter(|a| a.state == ActorState::Stopped).cloned() else {
            return Ok(false);
        };
        self.db.lock().execute("DELETE FROM actors WHERE actor_id = ?1", params![actor_id])?;
        by_name.remove(&(rec.namespace, rec.name, rec.key));
        actors.remove(actor_id);
        Ok(true)
    }

    /// Actors placed on `envoy` in `namespace` now.
    pub fn placed_count(&self, namespace: &str, envoy: &str) -> usize {
        let _actors = self.actors.lock();
        self.placed.lock().get(&(namespace.to_string(), envoy.to_string())).copied().unwrap_or(0)
    }

    /// Raises the generation, places the actor on `envoy` as Starting, and
    /// persists it (fsync) before returning the new record. Refused with
    /// [`TooManyActors`] if `envoy` already holds `max_placed` other actors.
    /// Blocks on the fsync: call it from a blocking thread.
    pub fn start(&self, actor_id: &str, envoy: &str, max_placed: usize) -> anyhow::Result<ActorRecord> {
        self.start_with(actor_id, envoy, max_placed, None)
    }

    /// Cluster mode: [`Registry::start`] at the generation etcd just recorded
    /// (the compare-and-swap there is what makes it unique cluster-wide; it must
    /// be above the local one).
    pub fn start_at(
        &self,
        actor_id: &str,
        envoy: &str,
        max_placed: usize,
        generation: u64,
    ) -> anyhow::Result<ActorRecord> {
        self.start_with(actor_id, envoy, max_placed, Some(generation))
    }

    fn start_with(
        &self,
        actor_id: &str,
        envoy: &str,
        max_placed: usize,
        at: Option<u64>,
    ) -> anyhow::Result<ActorRecord> {
        let mut actors = self.actors.lock();
        let rec = actors.get_mut(actor_id).context("unknown actor")?;
        let mut placed = self.placed.lock();
        let here = (rec.namespace.clone(), envoy.to_string());
        let already_here = rec.envoy.as_deref() == Some(envoy);
        if !already_here && placed.get(&here).copied().unwrap_or(0) >= max_placed {
            return Err(TooManyActors { max: max_placed }.into());
        }
        let db = self.db.lock();
        // This commit must reach the disk before StartActor is sent: fsync it.
        db.pragma_update(None, "synchronous", "FULL")?;
        if let Some(g) = at {
            anyhow::ensure!(g > rec.generation, "generation {g} is not above the local {}", rec.generation);
        }
        let bumped = db
            .query_row(
                "UPDATE actors SET generation = coalesce(?3, generation + 1), state = 'starting', envoy = ?2 WHERE actor_id = ?1 RETURNING generation",
                params![actor_id, envoy, at.map(|g| g as i64)],
                |r| r.get::<_, i64>(0),
            )
            .optional();
        db.pragma_update(None, "synchronous", "NORMAL")?;
        let generation = bumped?.context("actor missing from the metadata database")?;
        rec.generation = generation as u64;
        rec.state = ActorState::Starting;
        if !already_here {
            if let Some(old) = rec.envoy.take() {
                unplace(&mut placed, &rec.namespace, old);
            }
            *placed.entry(here).or_default() += 1;
        }
        rec.envoy = Some(envoy.to_string());
        Ok(rec.clone())
    }

    /// Moves (actor, generation) to `state` if that generation is still current.
    /// Stopped also unplaces. Returns the updated record, or None if stale.
    pub fn set_state(&self, actor_id: &str, generation: u64, state: ActorState) -> anyhow::Result<Option<ActorRecord>> {
        let mut actors = self.actors.lock();
        let Some(rec) = actors.get_mut(actor_id) else { return Ok(None) };
        if rec.generation != generation {
            return Ok(None);
        }
        rec.state = state;
        if state == ActorState::Stopped {
            if let Some(old) = rec.envoy.take() {
                unplace(&mut self.placed.lock(), &rec.namespace, old);
            }
        }
        self.db.lock().execute(
            "UPDATE actors SET state = ?2, envoy = ?3 WHERE actor_id = ?1",
            params![actor_id, state.as_str(), rec.envoy],
        )?;
        Ok(Some(rec.clone()))
    }

    /// Atomically moves a live (Starting/Running) actor to Stopping; returns the
    /// record as it was if it did, or None if the actor was not live (or, with
    /// `only_generation`, if its generation is another one).
    pub fn begin_stop(&self, actor_id: &str, only_generation: Option<u64>) -> anyhow::Result<Option<ActorRecord>> {
        let mut actors = self.actors.lock();
        let Some(rec) = actors.get_mut(actor_id) else { return Ok(None) };
        if !rec.state.is_live() || only_generation.is_some_and(|g| g != rec.generation) {
            return Ok(None);
        }
        let before = rec.clone();
        rec.state = ActorState::Stopping;
        self.db.lock().execute("UPDATE actors SET state = 'stopping' WHERE actor_id = ?1", params![actor_id])?;
        Ok(Some(before))
    }
}

/// Counts one actor fewer on (namespace, envoy), forgetting the entry at zero.
fn unplace(placed: &mut HashMap<(String, String), usize>, namespace: &str, envoy: String) {
    let key = (namespace.to_string(), envoy);
    if let Some(n) = placed.get_mut(&key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            placed.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_survive_reopen_and_live_actors_become_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let (a, created) = {
            let reg = Registry::open(dir.path()).unwrap();
            let (a, created) = reg.get_or_insert("ns", "counter", "k1").unwrap();
            assert!(created);
            assert_eq!(reg.start(&a.actor_id, "e1", 10).unwrap().generation, 1);
            assert_eq!(reg.start(&a.actor_id, "e1", 10).unwrap().generation, 2);
            (a, created)
        };
        assert!(created);
        let reg = Registry::open(dir.path()).unwrap();
        let (again, created) = reg.get_or_insert("ns", "counter", "k1").unwrap();
        assert!(!created);
        assert_eq!(again.actor_id, a.actor_id);
        assert_eq!(again.generation, 2);
        assert_eq!(again.state, ActorState::Stopped);
        assert_eq!(again.envoy, None);
        assert_eq!(reg.start(&a.actor_id, "e2", 10).unwrap().generation, 3);
    }

    #[test]
    fn placements_per_envoy_are_capped_and_released() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(dir.path()).unwrap();
        let (a, _) = reg.get_or_insert("ns", "n", "a").unwrap();
        let (b, _) = reg.get_or_insert("ns", "n", "b").unwrap();
        let (c, _) = reg.get_or_insert("other", "n", "c").unwrap();
        reg.start(&a.actor_id, "e", 1).unwrap();
        let e = reg.start(&b.actor_id, "e", 1).unwrap_err();
        assert!(e.downcast_ref::<TooManyActors>().is_some(), "{e}");
        // Restarting the same actor on the same envoy is not a new placement.
        reg.start(&a.actor_id, "e", 1).unwrap();
        // Another namespace's envoy of the same key has its own count.
        reg.start(&c.actor_id, "e", 1).unwrap();
        assert_eq!(reg.placed_count("ns", "e"), 1);
        let g = reg.get(&a.actor_id).unwrap().generation;
        reg.set_state(&a.actor_id, g, ActorState::Stopped).unwrap();
        assert_eq!(reg.placed_count("ns", "e"), 0);
        reg.start(&b.actor_id, "e", 1).unwrap();
    }

    #[test]
    fn cluster_records_are_made_once_and_move_only_with_placements() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(dir.path()).unwrap();
        let a = reg.ensure("id1", "ns", "n", "k", 4).unwrap();
        assert_eq!((a.generation, a.state), (4, ActorState::Stopped));
        // An existing record is left alone (only a placement changes its generation).
        assert_eq!(reg.ensure("id1", "ns", "n", "k", 2).unwrap().generation, 4);
        assert_eq!(reg.ensure("id1", "ns", "n", "k", 6).unwrap().generation, 4);
        assert!(reg.start_at("id1", "e", 10, 4).is_err(), "a generation not above the local one is refused");
        assert_eq!(reg.start_at("id1", "e", 10, 7).unwrap().generation, 7);
        reg.set_state("id1", 7, ActorState::Stopped).unwrap();
        // The same name under a new id (deleted and made again elsewhere) replaces the stale record.
        let b = reg.ensure("id2", "ns", "n", "k", 1).unwrap();
        assert_eq!(b.actor_id, "id2");
        assert!(reg.get("id1").is_none());
        assert_eq!(reg.find("ns", "n", "k").unwrap().actor_id, "id2");
        drop(reg);
        let reg = Registry::open(dir.path()).unwrap();
        assert_eq!(reg.get("id2").unwrap().generation, 1);
    }
}
