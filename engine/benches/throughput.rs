//! Prints throughput figures of the engine over one WebSocket (loopback, client
//! and engine in one process sharing the machine's cores):
//! - sequential round trips of a point SELECT (one request at a time);
//! - pipelined point SELECTs with 64 requests in flight on one socket;
//! - pipelined autocommit INSERTs (ExecuteWrite) with 64 in flight;
//! - 16 sockets (16 envoys, one actor each), each doing sequential point SELECTs.
//!
//! Run: `cargo bench -p envoy-engine --bench throughput` (BENCH_SECS=N to change
//! the duration of each phase, default 3). BENCH_ADDR=host:port measures an
//! engine running in another process (e.g. `envoy-engine serve`) instead of an
//! in-process one. Figures, not assertions.

#[path = "../tests/it/support.rs"]
#[allow(dead_code)]
mod support;

use envoy_protocol::*;
use futures_util::{SinkExt, StreamExt};
use std::time::{Duration, Instant};
use support::*;
use tokio_tungstenite::tungstenite::Message;

const IN_FLIGHT: usize = 64;
const ROWS: i64 = 10_000;

fn select_frame(actor: &GetOrCreateActorOk, rid: u32, id: i64, version: u16) -> Message {
    let msg = ToEngine::SqliteExecute(ToEngineSqliteExecute {
        request_id: rid,
        request: SqliteExecuteRequest {
            actor_id: actor.actor_id.clone(),
            generation: actor.generation,
            sql: "SELECT v FROM t WHERE id = ?".into(),
            params: Some(vec![Value::Integer(id)]),
        },
    });
    Message::Binary(encode_to_engine(&msg, version).unwrap().into())
}

fn insert_frame(actor: &GetOrCreateActorOk, rid: u32, version: u16) -> Message {
    let msg = ToEngine::SqliteExecuteWrite(ToEngineSqliteExecuteWrite {
        request_id: rid,
        request: SqliteExecuteRequest {
            actor_id: actor.actor_id.clone(),
            generation: actor.generation,
            sql: "INSERT INTO w (v) VALUES (?)".into(),
            params: Some(vec![Value::Text("x".repeat(32))]),
        },
    });
    Message::Binary(encode_to_engine(&msg, version).unwrap().into())
}

/// Reads frames until one answer arrives (answering pings); returns its request id.
async fn next_answer(c: &mut RawClient) -> u32 {
    loop {
        let Some(Ok(Message::Binary(b))) = c.ws.next().await else { panic!("socket closed") };
        match decode_to_envoy(&b, c.version, &DecodeLimits::default()).unwrap() {
            ToEnvoy::SqliteExecuteResponse(r) => {
                if let SqliteExecuteResult::SqliteError(e) = &r.result {
                    panic!("request failed: {e:?}");
                }
                return r.request_id;
            }
            ToEnvoy::Ping(p) => c.send(&ToEngine::Pong(ToEnginePong { ts: p.ts })).await,
            _ => {}
        }
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p) as usize]
}

async fn sequential(c: &mut RawClient, a: &GetOrCreateActorOk, secs: u64) {
    let mut lat = Vec::new();
    let start = Instant::now();
    let mut rid = 1_000_000u32;
    while start.elapsed() < Duration::from_secs(secs) {
        rid += 1;
        let t = Instant::now();
        c.ws.send(select_frame(a, rid, (rid as i64 % ROWS) + 1, c.version)).await.unwrap();
        assert_eq!(next_answer(c).await, rid);
        lat.push(t.elapsed());
    }
    let n = lat.len();
    lat.sort();
    println!(
        "sequential point SELECT:        {:>9.0} req/s   p50 {:>4} µs   p99 {:>4} µs   ({n} requests)",
        n as f64 / start.elapsed().as_secs_f64(),
        pct(&lat, 0.5).as_micros(),
        pct(&lat, 0.99).as_micros()
    );
}

async fn pipelined(c: &mut RawClient, a: &GetOrCreateActorOk, secs: u64, write: bool) {
    let mut rid = 2_000_000u32;
    let frame = |rid: u32, v: u16| {
        if write {
            insert_frame(a, rid, v)
        } else {
            select_frame(a, rid, (rid as i64 % ROWS) + 1, v)
        }
    };
    for _ in 0..IN_FLIGHT {
        rid += 1;
        c.ws.feed(frame(rid, c.version)).await.unwrap();
    }
    c.ws.flush().await.unwrap();
    let start = Instant::now();
    let mut done = 0u64;
    while start.elapsed() < Duration::from_secs(secs) {
        // Take every answer already here, then refill the window with one flush.
        next_answer(c).await;
        let mut got = 1;
        while let Some(Some(Ok(Message::Binary(b)))) = futures_util::FutureExt::now_or_never(c.ws.next()) {
            if let ToEnvoy::SqliteExecuteResponse(r) = decode_to_envoy(&b, c.version, &DecodeLimits::default()).unwrap()
            {
                assert!(!matches!(r.result, SqliteExecuteResult::SqliteError(_)), "{:?}", r.result);
                got += 1;
            }
        }
        done += got;
        for _ in 0..got {
            rid += 1;
            c.ws.feed(frame(rid, c.version)).await.unwrap();
        }
        c.ws.flush().await.unwrap();
    }
    let rate = done as f64 / start.elapsed().as_secs_f64();
    for _ in 0..IN_FLIGHT {
        next_answer(c).await;
    }
    let what = if write { "pipelined INSERT (ExecuteWrite)" } else { "pipelined point SELECT" };
    println!("{what:<31} {rate:>9.0} req/s   ({IN_FLIGHT} in flight, one socket, {done} requests)");
}

/// 16 envoys, each with its own actor and table, each one request at a time.
async fn many_sockets(addr: std::net::SocketAddr, secs: u64) {
    const SOCKETS: usize = 16;
    let mut tasks = Vec::new();
    for i in 0..SOCKETS {
        tasks.push(tokio::spawn(async move {
            let mut c = RawClient::connect(addr, ConnectOpts::new("bench", &format!("many-{i}"))).await;
            let a = c.get_or_create("many", &format!("{i}-{:?}", std::time::SystemTime::now())).await;
            exec_ok(
                c.exec(&a, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'one')").await,
            );
            let start = Instant::now();
            let mut n = 0u64;
            let mut rid = 10u32;
            while start.elapsed() < Duration::from_secs(secs) {
                rid += 1;
                c.ws.send(select_frame(&a, rid, 1, c.version)).await.unwrap();
                next_answer(&mut c).await;
                n += 1;
            }
            (n, start.elapsed())
        }));
    }
    let mut total = 0u64;
    let mut longest = Duration::ZERO;
    for t in tasks {
        let (n, d) = t.await.unwrap();
        total += n;
        longest = longest.max(d);
    }
    println!(
        "16 sockets, each sequential:    {:>9.0} req/s   (total, {total} requests)",
        total as f64 / longest.as_secs_f64()
    );
}

fn main() {
    let secs: u64 = std::env::var("BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let dir = temp_dir();
        let mut cfg = test_config(dir.path());
        cfg.ping_interval = Duration::from_secs(3);
        cfg.envoy_lost_threshold = Duration::from_secs(30);
        if let Some(n) = std::env::var("BENCH_READER_LANES").ok().and_then(|s| s.parse().ok()) {
            cfg.reader_lanes_per_actor = n;
        }
        let external: Option<std::net::SocketAddr> =
            std::env::var("BENCH_ADDR").ok().map(|a| a.parse().expect("BENCH_ADDR host:port"));
        let engine = match external {
            Some(_) => None,
            None => {
                println!("in-process engine, reader lanes per actor: {}", cfg.reader_lanes_per_actor);
                Some(start_with(cfg).await)
            }
        };
        let addr = external.unwrap_or_else(|| engine.as_ref().unwrap().local_addr());
        let mut c = RawClient::connect(addr, ConnectOpts::new("bench", "bench-envoy")).await;
        // A fresh table per run, so an external engine can be measured repeatedly.
        let a = c.get_or_create("bench", &format!("{:?}", std::time::SystemTime::now())).await;
        let mut setup = String::from(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); CREATE TABLE w (id INTEGER PRIMARY KEY, v TEXT); BEGIN;",
        );
        for i in 1..=ROWS {
            setup.push_str(&format!("INSERT INTO t VALUES ({i}, 'value-{i:08}');"));
        }
        setup.push_str("COMMIT;");
        exec_ok(c.exec(&a, &setup).await);
        let where_ = if external.is_some() { "engine in another process" } else { "client in the same process" };
        println!("envoy-engine throughput ({secs} s per phase, loopback, {where_})");
        sequential(&mut c, &a, secs).await;
        pipelined(&mut c, &a, secs, false).await;
        pipelined(&mut c, &a, secs, true).await;
        many_sockets(addr, secs).await;
        if let Some(engine) = engine {
            engine.shutdown().await;
        }
    });
}
