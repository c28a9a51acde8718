//! A by-hand smoke check against a running engine, over the raw protocol:
//! get-or-create an actor, create a table, insert with bound params, read the
//! rows back, and optionally run a slow query (to watch `actors stop` drain it).
//!
//! ```sh
//! cargo run --release -p envoy-engine -- serve &
//! cargo run --release -p envoy-engine --example smoke -- 127.0.0.1:6420 [--slow-ms 5000]
//! ```
//! Token: ENVOY_AUTH_TOKEN.

#[path = "../tests/it/support.rs"]
#[allow(dead_code)]
mod support;

use envoy_protocol::{SqliteExecuteResult, Value};
use std::time::Duration;
use support::*;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let addr = args.get(1).map_or("127.0.0.1:6420", String::as_str).parse().expect("ADDR as host:port");
    let slow_ms: Option<u64> =
        args.iter().position(|a| a == "--slow-ms").and_then(|i| args.get(i + 1)).and_then(|s| s.parse().ok());
    let mut opts = ConnectOpts::new("default", "smoke-envoy");
    if let Ok(t) = std::env::var("ENVOY_AUTH_TOKEN") {
        opts = opts.token(&t);
    }
    let mut c = RawClient::connect(addr, opts).await;
    println!("connected at protocol v{}", c.version);
    let a = c.get_or_create("smoke", "demo").await;
    println!("actor {} generation {} (created: {})", a.actor_id, a.generation, a.created);
    c.ack_all().await;
    let event_index = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    c.report_running(event_index, &a.actor_id, a.generation).await;
    ok(c.execute_write(&a, "CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT, at REAL)", vec![])
        .await);
    let w = ok(c
        .execute_write(
            &a,
            "INSERT INTO notes (body, at) VALUES (?, ?)",
            vec![Value::Text(format!("generation {}", a.generation)), Value::Float(1.5)],
        )
        .await);
    println!("inserted rowid {:?} ({} change)", w.last_insert_row_id, w.changes);
    let r = ok(c.execute(&a, "SELECT id, body FROM notes ORDER BY id", vec![]).await);
    println!("route {:?}, columns {:?}", r.route, r.columns);
    for row in &r.rows {
        println!("  {row:?}");
    }
    if let Some(ms) = slow_ms {
        println!("running a ~{ms} ms query; try `envoy-engine actors stop {}` now", a.actor_id);
        let rid = c.send_execute(&a, &slow_sql(Duration::from_millis(ms)), vec![], false).await;
        match c.execute_result(rid).await {
            SqliteExecuteResult::ExecuteResult(r) => println!("slow query completed: {:?}", r.rows),
            other => println!("slow query answered: {other:?}"),
        }
        if let Some(cmd) = c.commands.last() {
            println!("last command from the engine: {:?}", cmd.inner);
        }
    }
}
