//! The engine-wide cap on open actor databases.
//!
//! Every executor with open SQLite connections (its writer, readers, KV store:
//! up to ~12 descriptors with their -wal/-shm files, plus page caches) holds a
//! slot here. An executor takes its slot when a request is about to use it
//! ([`Executor::enter`]); at the cap, the least recently used *idle* executor is
//! closed first: no request running on it, no transaction open on its writer.
//! Closing checkpoints and closes its connections; the executor itself stays
//! (same actor, same generation) and reopens them on its next request, which a
//! client cannot tell apart from a database that stayed open. If no executor
//! can be closed, the request is refused with OVERLOADED. A writer with an open
//! transaction is never closed: that would roll back the client's transaction.
//!
//! A background sweep ([`OpenDbs::sweep`]) also closes databases idle longer
//! than `Config::idle_db_close`.

use super::executor::Executor;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// Executors holding an open-database slot.
pub struct OpenDbs {
    /// The cap (`Config::max_open_actor_dbs`).
    max: usize,
    /// Slot holders by executor address. Weak: an executor's lifetime belongs to
    /// `Executors` and the jobs using it; a slot never keeps one alive.
    open: Mutex<HashMap<usize, Weak<Executor>>>,
    /// Highest number of slots held at once (observability: tests assert the cap held).
    peak: AtomicUsize,
    /// Reference point of executors' last-use stamps (milliseconds since this instant).
    epoch: Instant,
}

impl OpenDbs {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self { max, open: Mutex::new(HashMap::new()), peak: AtomicUsize::new(0), epoch: Instant::now() })
    }

    /// Milliseconds since the engine started: executors stamp their last use with it.
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Slots held now.
    pub fn count(&self) -> usize {
        self.open.lock().len()
    }

    /// Most slots held at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Acquire)
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Gives `x` a slot, closing the least recently used idle executor first if
    /// the cap is reached. Err(message) when every slot holder is busy.
    ///
    /// Blocks while a victim checkpoints: call it from a blocking thread. Lock
    /// order: this map, then a victim's locks, and those only with `try_` (an
    /// executor in use is skipped, never waited for), so it cannot deadlock with
    /// a running request or a drain closing an executor (which takes its own
    /// locks first and this map only after releasing them).
    pub(crate) fn admit(&self, x: &Arc<Executor>) -> Result<(), String> {
        let key = Arc::as_ptr(x) as usize;
        let mut open = self.open.lock();
        if !open.contains_key(&key) {
            if open.len() >= self.max {
                // Dead entries first (cannot normally happen: executors leave on close).
                open.retain(|_, w| w.strong_count() > 0);
            }
            if open.len() >= self.max {
                let mut candidates: Vec<(u64, usize, Arc<Executor>)> = open
                    .iter()
                    .filter(|(k, _)| **k != key)
                    .filter_map(|(k, w)| w.upgrade().map(|e| (e.last_used_ms(), *k, e)))
                    .collect();
                candidates.sort_by_key(|c| c.0);
                let victim = candidates.into_iter().find(|(_, _, e)| e.try_close_idle());
                match victim {
                    Some((_, k, e)) => {
                        tracing::debug!(actor_id = %e.actor_id, generation = e.generation,
                            "closed the least recently used idle actor database to stay under max_open_actor_dbs");
                        open.remove(&k);
                    }
                    None => {
                        return Err(format!(
                            "all {} open actor databases (max_open_actor_dbs) are in use or hold an open transaction; retry later",
                            self.max
                        ))
                    }
                }
            }
            open.insert(key, Arc::downgrade(x));
            self.peak.fetch_max(open.len(), Ordering::AcqRel);
        }
        x.mark_open();
        Ok(())
    }

    /// Releases `x`'s slot (it closed its connections).
    pub(crate) fn forget(&self, x: &Executor) {
        self.open.lock().remove(&(x as *const Executor as usize));
    }

    /// Closes every idle executor unused for `idle` or longer; returns how many.
    /// Blocks while they checkpoint: call it from a blocking thread.
    pub fn sweep(&self, idle: Duration) -> usize {
        let cutoff = self.now_ms().saturating_sub(idle.as_millis() as u64);
        let mut open = self.open.lock();
        let stale: Vec<(usize, Arc<Executor>)> = open
            .iter()
            .filter_map(|(k, w)| w.upgrade().map(|e| (*k, e)))
            .filter(|(_, e)| e.last_used_ms() <= cutoff)
            .collect();
        let mut closed = 0;
        for (k, e) in stale {
            if e.try_close_idle() {
                open.remove(&k);
                closed += 1;
            }
        }
        open.retain(|_, w| w.strong_count() > 0);
        closed
    }
}

/// Runs the idle sweep until the engine shuts down.
pub async fn run_sweeper(open_dbs: Arc<OpenDbs>, idle: Duration, mut shutdown: crate::shutdown::Shutdown) {
    // A quarter of the idle time (within bounds): a database closes between
    // `idle` and `1.25 × idle` after its last use.
    let every = (idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(15));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.recv() => return,
        }
        let dbs = open_dbs.clone();
        match tokio::task::spawn_blocking(move || dbs.sweep(idle)).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(closed = n, "closed idle actor databases"),
            Err(e) => tracing::error!(error = %e, "the idle database sweep panicked"),
        }
    }
}
