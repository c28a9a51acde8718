//! RAII in-flight accounting per (actor, generation).
//!
//! Every accepted request holds an [`InflightGuard`] from acceptance (before it
//! waits for a permit) until its response is handed to the writer. A drain
//! waits for the count to reach zero with [`Inflight::wait_zero`], which arms a
//! `Notify` before re-checking the count, so a wake-up is never missed.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// The counter of one (actor, generation).
#[derive(Debug, Default)]
struct Counter {
    /// Requests accepted and not yet answered.
    count: AtomicUsize,
    /// Woken whenever the count drops to zero.
    zero: Notify,
}

/// Key of a counter.
pub type ActorGen = (String, u64);

/// All counters of the engine.
#[derive(Debug, Default)]
pub struct Inflight {
    /// Counters by actor id, then generation (nested so a lookup by `&str` allocates nothing);
    /// a generation's counter is removed when it stops.
    counters: Mutex<HashMap<String, HashMap<u64, Arc<Counter>>>>,
}

/// Counts one request while alive.
#[derive(Debug)]
pub struct InflightGuard {
    /// The counter this guard incremented.
    counter: Arc<Counter>,
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        if self.counter.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.counter.zero.notify_waiters();
        }
    }
}

impl Inflight {
    fn counter(&self, actor_id: &str, generation: u64) -> Arc<Counter> {
        let mut map = self.counters.lock();
        if let Some(c) = map.get(actor_id).and_then(|g| g.get(&generation)) {
            return c.clone();
        }
        map.entry(actor_id.to_string()).or_default().entry(generation).or_default().clone()
    }

    /// Counts a newly accepted request.
    pub fn acquire(&self, actor_id: &str, generation: u64) -> InflightGuard {
        let counter = self.counter(actor_id, generation);
        counter.count.fetch_add(1, Ordering::AcqRel);
        InflightGuard { counter }
    }

    /// Requests of (actor, generation) accepted and not yet answered.
    pub fn count(&self, actor_id: &str, generation: u64) -> usize {
        self.counters
            .lock()
            .get(actor_id)
            .and_then(|g| g.get(&generation))
            .map_or(0, |c| c.count.load(Ordering::Acquire))
    }

    /// Number of (actor, generation) counters held (observability: refused
    /// requests must not leave any behind).
    pub fn entries(&self) -> usize {
        self.counters.lock().values().map(HashMap::len).sum()
    }

    /// Requests accepted and not yet answered, across every (actor, generation)
    /// (`envoy_requests_inflight`, read at scrape).
    pub fn total(&self) -> usize {
        self.counters.lock().values().flat_map(HashMap::values).map(|c| c.count.load(Ordering::Acquire)).sum()
    }

    /// Waits until the count is zero or `timeout` passes; returns whether it reached zero.
    pub async fn wait_zero(&self, actor_id: &str, generation: u64, timeout: Duration) -> bool {
        let counter = self.counter(actor_id, generation);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = counter.zero.notified();
            tokio::pin!(notified);
            // Arm before re-checking: a drop to zero between the check and the await still wakes us.
            notified.as_mut().enable();
            if counter.count.load(Ordering::Acquire) == 0 {
                return true;
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(deadline) => {
                    return counter.count.load(Ordering::Acquire) == 0;
                }
            }
        }
    }

    /// Forgets a stopped generation's counter (only when it is zero).
    pub fn forget(&self, actor_id: &str, generation: u64) {
        let mut map = self.counters.lock();
        if let Some(gens) = map.get_mut(actor_id) {
            if gens.get(&generation).is_some_and(|c| c.count.load(Ordering::Acquire) == 0) {
                gens.remove(&generation);
            }
            if gens.is_empty() {
                map.remove(actor_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wait_zero_wakes_on_last_drop() {
        let inflight = Arc::new(Inflight::default());
        let a = inflight.acquire("a", 1);
        let b = inflight.acquire("a", 1);
        assert_eq!(inflight.count("a", 1), 2);
        assert_eq!(inflight.count("a", 2), 0);
        let waiter = {
            let inflight = inflight.clone();
            tokio::spawn(async move { inflight.wait_zero("a", 1, Duration::from_secs(5)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(a);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        drop(b);
        assert!(waiter.await.unwrap());
        assert!(inflight.wait_zero("a", 1, Duration::from_millis(1)).await);
    }

    #[tokio::test]
    async fn wait_zero_times_out() {
        let inflight = Inflight::default();
        let _g = inflight.acquire("x", 3);
        assert!(!inflight.wait_zero("x", 3, Duration::from_millis(30)).await);
    }
}
