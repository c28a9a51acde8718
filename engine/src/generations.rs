//! Every live (actor, generation) of the engine, in one concurrent map: its
//! in-flight counter and its executor, created and torn down together.
//!
//! Every accepted request holds an [`InflightGuard`] from acceptance (before it
//! waits for a permit) until its response is handed to the writer. A drain
//! waits for the count to reach zero with [`Generations::wait_zero`], which arms
//! a `Notify` before re-checking the count, so a wake-up is never missed; then
//! [`Generations::retire`] takes the executor out and forgets the entry.
//!
//! The map is an [`scc::HashMap`]: lookups and inserts lock one bucket, not the
//! whole map, so connections admitting requests for different actors do not
//! contend. A lookup by `(&str, u64)` allocates nothing ([`GenRef`] is
//! `Equivalent` to the owned key); only a generation's first use builds its key.

use crate::sql::executor::{ExecSettings, Executor};
use crate::sql::open_dbs::OpenDbs;
use parking_lot::Mutex;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Owned key of an entry. Its derived `Hash` equals [`GenRef`]'s (a `String`
/// hashes as its `str`), which `scc` relies on for borrowed lookups.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct GenKey {
    actor_id: String,
    generation: u64,
}

/// Borrowed key: what every per-request lookup uses.
#[derive(Hash)]
struct GenRef<'a> {
    actor_id: &'a str,
    generation: u64,
}

impl scc::Equivalent<GenKey> for GenRef<'_> {
    fn equivalent(&self, key: &GenKey) -> bool {
        self.generation == key.generation && self.actor_id == key.actor_id
    }
}

/// One (actor, generation).
#[derive(Default)]
struct Generation {
    /// Requests accepted and not yet answered.
    count: AtomicUsize,
    /// Woken whenever the count drops to zero.
    zero: Notify,
    /// Its SQL/KV executor, made on the first request that needs one (without
    /// opening files) and taken out by [`Generations::retire`], which closes it.
    executor: Mutex<Option<Arc<Executor>>>,
}

impl std::fmt::Debug for Generation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generation")
            .field("count", &self.count.load(Ordering::Relaxed))
            .field("has_executor", &self.executor.lock().is_some())
            .finish()
    }
}

/// Counts one request while alive.
#[derive(Debug)]
pub struct InflightGuard {
    /// The generation whose count this guard incremented.
    generation: Arc<Generation>,
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        if self.generation.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.generation.zero.notify_waiters();
        }
    }
}

/// Every live (actor, generation).
pub struct Generations {
    /// The one map; an entry lives from a generation's first request until its
    /// drain retires it.
    map: scc::HashMap<GenKey, Arc<Generation>>,
    /// The engine's open-database cap, handed to every executor made.
    open_dbs: Arc<OpenDbs>,
}

impl Generations {
    pub fn new(open_dbs: Arc<OpenDbs>) -> Self {
        Self { map: scc::HashMap::new(), open_dbs }
    }

    /// The engine's open-database cap.
    pub fn open_dbs(&self) -> &Arc<OpenDbs> {
        &self.open_dbs
    }

    fn find(&self, actor_id: &str, generation: u64) -> Option<Arc<Generation>> {
        self.map.read_sync(&GenRef { actor_id, generation }, |_, g| g.clone())
    }

    fn entry(&self, actor_id: &str, generation: u64) -> Arc<Generation> {
        if let Some(g) = self.find(actor_id, generation) {
            return g;
        }
        let key = GenKey { actor_id: actor_id.to_string(), generation };
        self.map.entry_sync(key).or_default().get().clone()
    }

    /// Counts a newly accepted request.
    pub fn acquire(&self, actor_id: &str, generation: u64) -> InflightGuard {
        let generation = self.entry(actor_id, generation);
        generation.count.fetch_add(1, Ordering::AcqRel);
        InflightGuard { generation }
    }

    /// Requests of (actor, generation) accepted and not yet answered.
    pub fn inflight(&self, actor_id: &str, generation: u64) -> usize {
        self.find(actor_id, generation).map_or(0, |g| g.count.load(Ordering::Acquire))
    }

    /// Number of (actor, generation) entries held (observability: refused
    /// requests must not leave any behind).
    pub fn entries(&self) -> usize {
        self.map.len()
    }

    /// Requests accepted and not yet answered, across every (actor, generation)
    /// (`envoy_requests_inflight`, read at scrape).
    pub fn total_inflight(&self) -> usize {
        let mut total = 0;
        self.map.iter_sync(|_, g| {
            total += g.count.load(Ordering::Acquire);
            true
        });
        total
    }

    /// Waits until the count is zero or `timeout` passes; returns whether it reached zero.
    pub async fn wait_zero(&self, actor_id: &str, generation: u64, timeout: Duration) -> bool {
        let g = self.entry(actor_id, generation);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = g.zero.notified();
            tokio::pin!(notified);
            // Arm before re-checking: a drop to zero between the check and the await still wakes us.
            notified.as_mut().enable();
            if g.count.load(Ordering::Acquire) == 0 {
                return true;
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(deadline) => {
                    return g.count.load(Ordering::Acquire) == 0;
                }
            }
        }
    }

    /// The executor of (actor, generation), made (without opening files) if it
    /// has none. `dir` is only called then (no path is built per request).
    pub fn executor_or_create(
        &self,
        actor_id: &str,
        generation: u64,
        dir: impl FnOnce() -> PathBuf,
        settings: &ExecSettings,
    ) -> Arc<Executor> {
        let g = self.entry(actor_id, generation);
        let mut slot = g.executor.lock();
        slot.get_or_insert_with(|| Executor::new(actor_id, generation, dir(), settings, self.open_dbs.clone())).clone()
    }

    /// The executor of (actor, generation), if it has one.
    pub fn executor(&self, actor_id: &str, generation: u64) -> Option<Arc<Executor>> {
        self.find(actor_id, generation).and_then(|g| g.executor.lock().clone())
    }

    /// An executor that is not registered: for an operator's inspection of an
    /// actor that is not running (closed by the caller when done).
    pub fn detached_executor(
        &self,
        actor_id: &str,
        generation: u64,
        dir: PathBuf,
        settings: &ExecSettings,
    ) -> Arc<Executor> {
        Executor::new(actor_id, generation, dir, settings, self.open_dbs.clone())
    }

    /// The end of a drain: takes the executor out (for the caller to close) and
    /// forgets the entry if nothing is in flight (a request still counted keeps
    /// it, executor-less, until a later retire).
    pub fn retire(&self, actor_id: &str, generation: u64) -> Option<Arc<Executor>> {
        let g = self.find(actor_id, generation)?;
        let executor = g.executor.lock().take();
        self.map.remove_if_sync(&GenRef { actor_id, generation }, |g| {
            g.count.load(Ordering::Acquire) == 0 && g.executor.lock().is_none()
        });
        executor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generations() -> Arc<Generations> {
        Arc::new(Generations::new(OpenDbs::new(4)))
    }

    #[tokio::test]
    async fn wait_zero_wakes_on_last_drop() {
        let gens = generations();
        let a = gens.acquire("a", 1);
        let b = gens.acquire("a", 1);
        assert_eq!(gens.inflight("a", 1), 2);
        assert_eq!(gens.inflight("a", 2), 0);
        assert_eq!(gens.total_inflight(), 2);
        let waiter = {
            let gens = gens.clone();
            tokio::spawn(async move { gens.wait_zero("a", 1, Duration::from_secs(5)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(a);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        drop(b);
        assert!(waiter.await.unwrap());
        assert!(gens.wait_zero("a", 1, Duration::from_millis(1)).await);
    }

    #[tokio::test]
    async fn wait_zero_times_out() {
        let gens = generations();
        let _g = gens.acquire("x", 3);
        assert!(!gens.wait_zero("x", 3, Duration::from_millis(30)).await);
    }

    #[test]
    fn one_entry_holds_counter_and_executor_and_retire_forgets_it() {
        let gens = generations();
        let settings = ExecSettings::from_config(&crate::config::Config::for_tests("/tmp/x"));
        let guard = gens.acquire("a", 7);
        let x = gens.executor_or_create("a", 7, || "/tmp/x/a".into(), &settings);
        let again = gens.executor_or_create("a", 7, || unreachable!("made once"), &settings);
        assert!(Arc::ptr_eq(&x, &again));
        assert_eq!(gens.entries(), 1, "counter and executor share one entry");
        assert!(gens.executor("a", 8).is_none());
        // Retired while a request is still counted: the executor leaves, the entry stays.
        assert!(Arc::ptr_eq(&gens.retire("a", 7).unwrap(), &x));
        assert_eq!(gens.entries(), 1);
        assert!(gens.executor("a", 7).is_none());
        drop(guard);
        assert!(gens.retire("a", 7).is_none());
        assert_eq!(gens.entries(), 0, "nothing left behind");
    }
}
