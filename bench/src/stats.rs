//! What one timed phase measured, and how rounds of it are summed up.

use serde::Serialize;
use std::time::{Duration, Instant};

/// One timed round of one workload.
#[derive(Debug, Default)]
pub struct Round {
    /// Operations completed inside the round.
    pub ops: u64,
    /// Wall time from the first request sent to the last answer received.
    pub elapsed: Duration,
    /// Latency of every operation, in nanoseconds (unsorted), so percentiles
    /// can be taken over all rounds together.
    pub lat_ns: Vec<u64>,
}

impl Round {
    pub fn rate(&self) -> f64 {
        if self.elapsed.is_zero() {
            0.0
        } else {
            self.ops as f64 / self.elapsed.as_secs_f64()
        }
    }
}

/// Records latencies of one closed loop (one request at a time) until a deadline.
pub struct Timer {
    /// When the loop started, for the round's elapsed time.
    start: Instant,
    /// Latencies so far, nanoseconds.
    lat_ns: Vec<u64>,
}

impl Timer {
    pub fn new() -> Self {
        Timer { start: Instant::now(), lat_ns: Vec::with_capacity(1 << 16) }
    }

    pub fn record(&mut self, since: Instant) {
        self.lat_ns.push(since.elapsed().as_nanos() as u64);
    }

    pub fn finish(self) -> Round {
        Round { ops: self.lat_ns.len() as u64, elapsed: self.start.elapsed(), lat_ns: self.lat_ns }
    }
}

/// Joins rounds run concurrently (one per socket or per task) into one round:
/// operations add up, the round lasts as long as its longest part.
pub fn join_parallel(parts: Vec<Round>) -> Round {
    let mut out = Round::default();
    for p in parts {
        out.ops += p.ops;
        out.elapsed = out.elapsed.max(p.elapsed);
        out.lat_ns.extend(p.lat_ns);
    }
    out
}

/// The summary of one workload printed in the table and written to the JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Short id (`W1`, `L1-seq`, …): what ratios and targets refer to.
    pub id: String,
    /// What was measured, in words.
    pub name: String,
    /// Median over rounds of each round's operations per second.
    pub ops_per_sec: f64,
    /// Every round's rate, so the spread behind the median is visible.
    pub round_rates: Vec<f64>,
    /// Median latency over every operation of every round, microseconds.
    pub p50_us: Option<f64>,
    /// 99th percentile latency (same pool), microseconds.
    pub p99_us: Option<f64>,
    /// 99.9th percentile latency (same pool), microseconds: where stalls show.
    pub p999_us: Option<f64>,
    /// Operations measured in total (all rounds), the count behind the percentiles.
    pub count: u64,
    /// Which client did the work and anything else a reader needs to compare it.
    pub notes: String,
}

pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Nearest-rank percentile of sorted nanoseconds, in microseconds.
fn pct(sorted: &[u64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1] as f64 / 1000.0)
}

pub fn summarize(id: &str, name: &str, notes: &str, rounds: Vec<Round>) -> Summary {
    let round_rates: Vec<f64> = rounds.iter().map(Round::rate).collect();
    let mut lat: Vec<u64> = rounds.iter().flat_map(|r| r.lat_ns.iter().copied()).collect();
    lat.sort_unstable();
    Summary {
        id: id.into(),
        name: name.into(),
        ops_per_sec: median(&round_rates),
        p50_us: pct(&lat, 0.50),
        p99_us: pct(&lat, 0.99),
        p999_us: pct(&lat, 0.999),
        count: rounds.iter().map(|r| r.ops).sum(),
        round_rates,
        notes: notes.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_percentiles() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        let v: Vec<u64> = (1..=1000).map(|i| i * 1000).collect();
        assert_eq!(pct(&v, 0.5), Some(500.0));
        assert_eq!(pct(&v, 0.99), Some(990.0));
        assert_eq!(pct(&v, 0.999), Some(999.0));
        assert_eq!(pct(&[], 0.5), None);
    }
}
