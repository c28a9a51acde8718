//! Reconnect delays: exponential backoff with jitter from a seedable PRNG, so
//! tests are deterministic and wasm needs no `getrandom`.

/// SplitMix64: tiny, fast, good enough for jitter (not for secrets).
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Exponential backoff: attempt `k` (from 0) waits a uniformly random time in
/// `[d/2, d]` where `d = min(initial × 2^k, max)` ("equal jitter"), so delays
/// grow but reconnecting clients spread out.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial_ms: u64,
    max_ms: u64,
    rng: Rng,
}

impl Backoff {
    pub fn new(initial_ms: u64, max_ms: u64, seed: u64) -> Self {
        Backoff { initial_ms: initial_ms.max(1), max_ms: max_ms.max(initial_ms.max(1)), rng: Rng::new(seed) }
    }

    /// The ceiling of the delay before attempt `attempt` (0-based), before jitter.
    pub fn ceiling(&self, attempt: u32) -> u64 {
        let shift = attempt.min(32);
        self.initial_ms.saturating_mul(1u64 << shift).min(self.max_ms)
    }

    /// The delay before attempt `attempt`.
    pub fn delay(&mut self, attempt: u32) -> u64 {
        let d = self.ceiling(attempt);
        let half = d / 2;
        half + self.rng.below(d - half + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_within_jitter_bounds_and_caps() {
        let mut b = Backoff::new(100, 5_000, 42);
        let mut last_ceiling = 0;
        for attempt in 0..12 {
            let c = b.ceiling(attempt);
            assert!(c >= last_ceiling);
            last_ceiling = c;
            let d = b.delay(attempt);
            assert!(d >= c / 2 && d <= c, "attempt {attempt}: {d} not in [{}, {c}]", c / 2);
        }
        assert_eq!(b.ceiling(3), 800);
        assert_eq!(b.ceiling(11), 5_000);
        assert_eq!(b.ceiling(u32::MAX), 5_000);
    }

    #[test]
    fn same_seed_same_delays_different_seed_differs() {
        let seq = |seed| {
            let mut b = Backoff::new(100, 60_000, seed);
            (0..10).map(|a| b.delay(a)).collect::<Vec<_>>()
        };
        assert_eq!(seq(7), seq(7));
        assert_ne!(seq(7), seq(8));
    }
}
