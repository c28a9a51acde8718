//! A by-hand attack on a running engine, over the raw protocol: the findings of
//! the security review, each printed with the engine's typed answer, then a
//! client that floods results and never reads, while the engine's RSS is sampled.
//!
//! ```sh
//! cargo run --release -p envoy-engine -- serve &
//! cargo run --release -p envoy-engine --example hostile -- 127.0.0.1:6420 [--flood 250] [--pid ENGINE_PID]
//! ```
//! Token: ENVOY_AUTH_TOKEN. Without `--pid` the engine is looked up in /proc by
//! its command line (`envoy-engine … serve`); RSS is only sampled when found.

#[path = "../tests/it/support.rs"]
#[allow(dead_code)]
mod support;

use envoy_protocol::*;
use futures_util::SinkExt;
use std::time::{Duration, Instant};
use support::*;
use tokio_tungstenite::tungstenite::Message;

fn opts(ns: &str, key: &str) -> ConnectOpts {
    let mut o = ConnectOpts::new(ns, key);
    if let Ok(t) = std::env::var("ENVOY_AUTH_TOKEN") {
        o = o.token(&t);
    }
    o
}

fn show(what: &str, r: &SqliteExecuteResult) {
    match r {
        SqliteExecuteResult::SqliteError(e) => println!("  {what:<48} -> {:?}: {}", e.code, e.message),
        SqliteExecuteResult::ExecuteResult(r) => println!("  {what:<48} -> ROWS {:?}", r.rows),
        SqliteExecuteResult::SqliteFenceMismatch(f) => println!("  {what:<48} -> FENCE {f:?}"),
    }
}

fn engine_pid() -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        let is_engine =
            args.first().is_some_and(|a| a.ends_with(b"envoy-engine")) && args.iter().any(|a| *a == b"serve");
        is_engine.then_some(pid)
    })
}

fn rss_mib(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let addr = args.get(1).map_or("127.0.0.1:6420", String::as_str).parse().expect("ADDR as host:port");
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let flood: usize = arg("--flood").and_then(|s| s.parse().ok()).unwrap_or(250);
    let pid: Option<u32> = arg("--pid").and_then(|s| s.parse().ok()).or_else(engine_pid);

    let mut c = RawClient::connect(addr, opts("attacker", "hostile")).await;
    let a = c.get_or_create("victim-of-itself", "1").await;
    println!("connected at v{}; actor {} generation {}", c.version, a.actor_id, a.generation);

    println!("sandbox:");
    let guesses = ["./data/engine.sqlite", "/tmp/envoy-escape.sqlite"];
    for p in guesses {
        let r = c.execute_write(&a, "ATTACH ?1 AS m", vec![Value::Text(p.into())]).await;
        show(&format!("ATTACH ?1 AS m  [?1 = {p}]"), &r);
    }
    let r = c.execute_write(&a, "ATTACH './data/' || 'engine.sqlite' AS m", vec![]).await;
    show("ATTACH './data/' || 'engine.sqlite' AS m", &r);
    let r = c.execute(&a, "SELECT fts3_tokenizer(?1)", vec![Value::Text("simple".into())]).await;
    show("SELECT fts3_tokenizer(?1)  [?1 = 'simple']", &r);
    let r = c
        .execute_write(
            &a,
            "SELECT fts3_tokenizer(?1, ?2)",
            vec![Value::Text("evil".into()), Value::Blob(vec![0x41; 8])],
        )
        .await;
    show("SELECT fts3_tokenizer(?1, ?2)  [8-byte blob]", &r);
    for sql in ["PRAGMA hard_heap_limit = 65536", "PRAGMA soft_heap_limit = 65536", "PRAGMA database_list"] {
        show(sql, &c.execute_write(&a, sql, vec![]).await);
    }
    for sql in ["SELECT randomblob(400000000)", "SELECT printf('%.*c', 900000000, 'x')"] {
        show(sql, &c.execute(&a, sql, vec![]).await);
    }

    // A client that asks for large results and never reads them.
    println!("flood: {flood} x SELECT zeroblob(8000000) on a socket that is never read");
    let mut f = RawClient::connect(addr, opts("flooder", "hostile-flood")).await;
    f.auto_pong = false;
    let fa = f.get_or_create("flood", "1").await;
    let before = pid.and_then(rss_mib);
    let mut bystander = RawClient::connect(addr, opts("bystander", "hostile-bystander")).await;
    let ba = bystander.get_or_create("b", "1").await;
    let started = Instant::now();
    let sender = tokio::spawn(async move {
        for i in 0..flood {
            let request = SqliteExecuteRequest {
                actor_id: fa.actor_id.clone(),
                generation: fa.generation,
                sql: "SELECT zeroblob(8000000)".into(),
                params: None,
            };
            let msg = ToEngine::SqliteExecute(ToEngineSqliteExecute { request_id: i as u32 + 1000, request });
            let bytes = encode_to_engine(&msg, f.version).unwrap();
            // The engine stops reading a connection whose answers pile up: sends then block.
            if tokio::time::timeout(Duration::from_secs(5), f.ws.send(Message::Binary(bytes.into()))).await.is_err() {
                return (i, f);
            }
        }
        (flood, f)
    });
    let mut peak = before.unwrap_or(0.0);
    let mut lat = Vec::new();
    while started.elapsed() < Duration::from_secs(8) {
        let t = Instant::now();
        let r = bystander.execute(&ba, "SELECT 1", vec![]).await;
        lat.push(t.elapsed());
        assert!(matches!(r, SqliteExecuteResult::ExecuteResult(_)), "the bystander failed: {r:?}");
        if let Some(m) = pid.and_then(rss_mib) {
            peak = peak.max(m);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (sent, _f) = sender.await.unwrap();
    lat.sort();
    println!("  requests the engine accepted before it stopped reading the socket: {sent} of {flood}");
    match (pid, before) {
        (Some(pid), Some(b)) => println!(
            "  engine pid {pid}: RSS {b:.1} MiB before, peak {peak:.1} MiB during (budgets: {} MiB per connection, {} MiB engine-wide)",
            envoy_engine::config::DEFAULT_MAX_CONNECTION_OUTBOX_BYTES >> 20,
            envoy_engine::config::DEFAULT_MAX_RESULT_MEMORY_BYTES >> 20
        ),
        _ => println!("  engine process not found: pass --pid to sample its RSS"),
    }
    println!(
        "  bystander tenant: {} queries during the flood, p50 {:?}, max {:?}",
        lat.len(),
        lat[lat.len() / 2],
        lat[lat.len() - 1]
    );
}
