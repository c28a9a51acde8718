//! Client throughput and latency against an in-process engine. Prints figures;
//! asserts nothing about speed.
//!
//! `cargo run --release -p envoy-tests --example client_bench`

use envoy_client::{params, Db};
use envoy_tests::TestEngine;
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::time::{Duration, Instant};

/// Length of each throughput round.
const ROUND: Duration = Duration::from_secs(3);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let te = TestEngine::start(|_| {}).await;
    let client = te.client().await;
    let actor = client.get_or_create_actor("bench", "k").await.unwrap();
    let db = actor.sql();
    db.exec("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT)").await.unwrap();
    db.execute_write("INSERT INTO t(id, v) VALUES (1, 'hello')", ()).await.unwrap();

    // Sequential point selects: one request at a time.
    let mut lat = Vec::new();
    let end = Instant::now() + ROUND;
    while Instant::now() < end {
        let t = Instant::now();
        db.query("SELECT v FROM t WHERE id = ?", params![1]).await.unwrap();
        lat.push(t.elapsed());
    }
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p) as usize];
    println!(
        "sequential point SELECT: {:.0}/s, p50 {:?}, p99 {:?} ({} requests)",
        lat.len() as f64 / ROUND.as_secs_f64(),
        pct(0.5),
        pct(0.99),
        lat.len()
    );

    // Pipelined: keep N requests in flight from one task.
    for depth in [64usize, 512] {
        let mut inflight = FuturesUnordered::new();
        let mut done = 0u64;
        let start = Instant::now();
        let end = start + ROUND;
        for _ in 0..depth {
            inflight.push(point(db.clone()));
        }
        while let Some(r) = inflight.next().await {
            r.unwrap();
            done += 1;
            if Instant::now() < end {
                inflight.push(point(db.clone()));
            }
        }
        println!(
            "pipelined point SELECT, {depth} in flight on one socket: {:.0}/s",
            done as f64 / start.elapsed().as_secs_f64()
        );
    }

    // Pipelined inserts (autocommit each).
    let mut inflight = FuturesUnordered::new();
    let mut done = 0u64;
    let start = Instant::now();
    let end = start + ROUND;
    let mut next = 10u64;
    for _ in 0..64 {
        next += 1;
        inflight.push(insert(db.clone(), next as i64));
    }
    while let Some(r) = inflight.next().await {
        r.unwrap();
        done += 1;
        if Instant::now() < end {
            next += 1;
            inflight.push(insert(db.clone(), next as i64));
        }
    }
    println!("pipelined INSERT, 64 in flight: {:.0}/s", done as f64 / start.elapsed().as_secs_f64());

    client.close().await;
    te.engine.shutdown().await;
}

async fn point(db: Db) -> envoy_client::Result<envoy_client::Rows> {
    db.query("SELECT v FROM t WHERE id = ?", params![1]).await
}

async fn insert(db: Db, id: i64) -> envoy_client::Result<envoy_client::ExecuteOutcome> {
    db.execute_write("INSERT INTO t(id, v) VALUES (?, 'x')", params![id]).await
}
