//! Operators: admin API and CLI while queries run; SIGTERM drain of the real binary.

use crate::support::*;
use envoy_engine::cli::http_request;
use envoy_protocol::*;
use std::io::{BufRead, BufReader};
use std::process::{Command as Proc, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_envoy-engine");

#[tokio::test]
async fn admin_api_and_cli_stop_while_queries_run() {
    let dir = temp_dir();
    let mut cfg = test_config(dir.path());
    cfg.auth_token = Some("tok".into());
    let engine = start_with(cfg).await;
    let url = format!("http://{}", engine.local_addr());
    // The admin API wants the token.
    assert_eq!(http_request(&url, "GET", "/health", None).await.unwrap().0, 401);
    let (status, body) = http_request(&url, "GET", "/health", Some("tok")).await.unwrap();
    assert_eq!((status, body.contains("ok")), (200, true));

    let mut c = RawClient::connect(engine.local_addr(), ConnectOpts::new("ns", "e").token("tok")).await;
    let a = c.get_or_create("api", "k").await;
    let b = c.get_or_create("cli", "k").await;

    // GET /actors shows in-flight work.
    let long_a = c.send_execute(&a, &slow_sql(Duration::from_millis(1000)), vec![], false).await;
    eventually(|| engine.inflight(&a.actor_id, a.generation) == 1).await;
    let (status, body) = http_request(&url, "GET", "/actors", Some("tok")).await.unwrap();
    assert_eq!(status, 200);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    let row = rows.iter().find(|r| r["id"] == a.actor_id.as_str()).unwrap();
    assert_eq!(
        (row["namespace"].as_str(), row["name"].as_str(), row["key"].as_str()),
        (Some("ns"), Some("api"), Some("k"))
    );
    assert_eq!(
        (row["generation"].as_u64(), row["inflight"].as_u64(), row["envoy"].as_str()),
        (Some(1), Some(1), Some("e"))
    );

    // POST /actors/{id}/stop drains and answers when done; the running query completes.
    let (status, body) =
        http_request(&url, "POST", &format!("/actors/{}/stop", a.actor_id), Some("tok")).await.unwrap();
    assert_eq!(status, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["interrupted"].as_u64(), Some(0));
    assert!(report["duration_ms"].as_u64().is_some());
    ok(c.execute_result(long_a).await);
    assert_eq!(http_request(&url, "POST", "/actors/nope/stop", Some("tok")).await.unwrap().0, 404);

    // The CLI: list (table and JSON), then stop while a slow query runs.
    let long_b = c.send_execute(&b, &slow_sql(Duration::from_millis(1000)), vec![], false).await;
    eventually(|| engine.inflight(&b.actor_id, b.generation) == 1).await;
    let cli = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            Proc::new(BIN).args(&args).env("ENVOY_AUTH_TOKEN", "tok").env("RUST_LOG", "warn").output().unwrap()
        })
    };
    let out = cli(vec!["actors".into(), "list".into(), "--url".into(), url.clone()]).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.starts_with("ID"), "{table}");
    assert!(table.contains(&b.actor_id) && table.contains("cli") && table.contains("stopped"), "{table}");
    let out = cli(vec!["actors".into(), "list".into(), "--json".into(), "--url".into(), url.clone()]).await.unwrap();
    let json: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json.len(), 2);
    let out = cli(vec!["actors".into(), "stop".into(), b.actor_id.clone(), "--url".into(), url.clone()]).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 request(s) interrupted"));
    ok(c.execute_result(long_b).await);
    assert_eq!(engine.actors().iter().filter(|r| r.state == envoy_engine::ActorState::Stopped).count(), 2);
    // A wrong token fails clearly.
    let out = tokio::task::spawn_blocking({
        let url = url.clone();
        move || Proc::new(BIN).args(["actors", "list", "--url", &url, "--token", "bad"]).output().unwrap()
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    engine.shutdown().await;
}

/// Starts the real binary on an ephemeral port; returns the child and its address.
#[allow(clippy::zombie_processes)] // the caller waits for the child
fn spawn_engine(
    data_dir: &std::path::Path,
) -> (std::process::Child, std::net::SocketAddr, std::sync::mpsc::Receiver<String>) {
    let mut child = Proc::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(["--actor-stop-threshold-ms", "5000"])
        .env("RUST_LOG", "info")
        .env_remove("ENVOY_AUTH_TOKEN")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    loop {
        let line = rx.recv_timeout(Duration::from_secs(30)).expect("engine logs its address");
        if let Some(i) = line.find("local_addr=") {
            let addr = line[i + "local_addr=".len()..].split_whitespace().next().unwrap();
            return (child, addr.parse().unwrap(), rx);
        }
    }
}

#[tokio::test]
async fn sigterm_drains_then_exits_zero() {
    let dir = temp_dir();
    let (mut child, addr, logs) = spawn_engine(dir.path());
    let mut c = RawClient::connect(addr, ConnectOpts::new("ns", "e")).await;
    let a = c.get_or_create("t", "").await;
    exec_ok(c.exec(&a, "CREATE TABLE t (x); INSERT INTO t VALUES (1)").await);
    let url = format!("http://{addr}");
    let inflight = |n: u64| {
        let url = url.clone();
        async move {
            loop {
                let (_, body) = http_request(&url, "GET", "/actors", None).await.unwrap();
                let rows: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
                if rows[0]["inflight"].as_u64() == Some(n) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    // An answer is queued before its guard drops (so shutdown never closes a
    // socket ahead of it), so the CREATE may still count for a moment: wait for
    // 0 first, so the 1 seen next is the long query, accepted before the SIGTERM.
    inflight(0).await;
    let long = c.send_execute(&a, &slow_sql(Duration::from_millis(1200)), vec![], false).await;
    inflight(1).await;
    // Let it start: a request accepted but not yet running when the stop begins is
    // turned away (ACTOR_STOPPING) instead of run.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // SAFETY: plain kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    // The in-flight query is answered, StopActor(ENGINE_SHUTDOWN) arrives, then GOING_AWAY.
    let r = ok(c.execute_result(long).await);
    assert!(matches!(r.rows[0][0], Value::Integer(n) if n > 0));
    let (code, reason) = c.until_closed().await;
    assert_eq!(code, close::GOING_AWAY, "{reason}");
    assert!(c
        .commands
        .iter()
        .any(|w| matches!(&w.inner, Command::StopActor(s) if s.reason == StopReason::EngineShutdown)));
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
    assert_eq!(status.code(), Some(0), "logs: {:?}", logs.try_iter().collect::<Vec<_>>());

    // Data persists: a restarted binary serves the rows at generation + 1.
    let (mut child, addr, _logs) = spawn_engine(dir.path());
    let mut c = RawClient::connect(addr, ConnectOpts::new("ns", "e")).await;
    let b = c.get_or_create("t", "").await;
    assert_eq!(b.generation, a.generation + 1);
    assert_eq!(ok(c.execute(&b, "SELECT x FROM t", vec![]).await).rows, vec![vec![Value::Integer(1)]]);
    // SAFETY: as above.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
    assert_eq!(status.code(), Some(0));
}

/// `envoy-engine sql --json`: one line per statement, rows as arrays in column
/// order, so duplicate column names keep every value.
#[tokio::test]
async fn sql_shell_json_keeps_every_column() {
    let dir = temp_dir();
    let engine = start(dir.path()).await;
    let url = format!("ws://{}", engine.local_addr());
    let sql = "SELECT 52 AS c, 13 AS c; SELECT x'00ff' AS b, NULL AS n, 1.5 AS f";
    let out = tokio::task::spawn_blocking(move || {
        Proc::new(BIN).args(["sql", "--url", &url, "--actor", "shell:json", "--json", sql]).output().unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let docs: Vec<serde_json::Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(docs.len(), 2, "{docs:?}");
    assert_eq!(docs[0]["columns"], serde_json::json!(["c", "c"]));
    assert_eq!(docs[0]["rows"], serde_json::json!([[52, 13]]));
    assert_eq!(docs[1]["rows"], serde_json::json!([[{ "blob": "00ff" }, null, 1.5]]));
    engine.shutdown().await;
}

/// `envoy-engine sql --actor` on an actor a running envoy hosts: the shell reads it
/// through the operator SQL route, so the actor keeps its host and generation;
/// writes need `--write`; `--as-envoy` still joins as an envoy (and moves it).
#[tokio::test]
async fn sql_shell_inspects_a_hosted_actor_without_moving_it() {
    let dir = temp_dir();
    let engine = start(dir.path()).await;
    let url = format!("ws://{}", engine.local_addr());
    let mut c = RawClient::connect(engine.local_addr(), ConnectOpts::new("ns", "host")).await;
    let a = c.get_or_create("crawler", "1").await;
    exec_ok(c.exec(&a, "CREATE TABLE jobs(t TEXT); INSERT INTO jobs VALUES ('a'), ('b')").await);
    let shell = |extra: Vec<&'static str>| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            let mut args = vec!["sql", "--url", &url, "--namespace", "ns", "--actor", "crawler:1", "--json"];
            args.extend(extra);
            Proc::new(BIN).args(args).output().unwrap()
        })
    };
    let out = shell(vec!["SELECT count(*) AS n FROM jobs"]).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: serde_json::Value = serde_json::from_str(String::from_utf8(out.stdout).unwrap().trim()).unwrap();
    assert_eq!(doc["rows"], serde_json::json!([[2]]));
    // A write is refused without --write, and allowed with it.
    let out = shell(vec!["DELETE FROM jobs WHERE t = 'a'"]).await.unwrap();
    assert!(!out.status.success());
    let out = shell(vec!["--write", "DELETE FROM jobs WHERE t = 'a'"]).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The actor never moved: same host, same generation; the host still serves it and sees the write.
    let rec = engine.actors().into_iter().find(|x| x.actor_id == a.actor_id).unwrap();
    assert_eq!((rec.generation, rec.envoy.as_deref()), (a.generation, Some("host")));
    assert_eq!(ok(c.execute(&a, "SELECT count(*) FROM jobs", vec![]).await).rows, vec![vec![Value::Integer(1)]]);
    assert!(!c.commands.iter().any(|w| matches!(w.inner, Command::StopActor(_))), "{:?}", c.commands);
    // --as-envoy joins as an envoy: the actor is placed on the shell (a new generation).
    let out = shell(vec!["--as-envoy", "SELECT count(*) AS n FROM jobs"]).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rec = engine.actors().into_iter().find(|x| x.actor_id == a.actor_id).unwrap();
    assert!(rec.generation > a.generation);
    engine.shutdown().await;
}

/// The CLI: `actors backup ID -o FILE`, `backup --all DIR`, `actors restore ID FILE`.
#[tokio::test]
async fn cli_backup_and_restore() {
    let dir = temp_dir();
    let engine = start(dir.path()).await;
    let url = format!("http://{}", engine.local_addr());
    let mut c = RawClient::connect(engine.local_addr(), ConnectOpts::new("ns", "host")).await;
    let a = c.get_or_create("notes", "1").await;
    exec_ok(c.exec(&a, "CREATE TABLE n(x); INSERT INTO n VALUES (1), (2)").await);
    let file = dir.path().join("one.sqlite").display().to_string();
    run_cli(vec![
        "actors".into(),
        "backup".into(),
        a.actor_id.clone(),
        "-o".into(),
        file.clone(),
        "--url".into(),
        url.clone(),
    ])
    .await;
    let all = dir.path().join("all");
    let out =
        run_cli(vec!["backup".into(), "--all".into(), all.display().to_string(), "--url".into(), url.clone()]).await;
    assert!(out.contains("1 of 1 actor(s) backed up"), "{out}");
    assert!(all.join(format!("{}.sqlite", a.actor_id)).exists());
    // Change the data, then restore the backup: the change is gone.
    ok(c.execute_write(&a, "DELETE FROM n", vec![]).await);
    run_cli(vec!["actors".into(), "restore".into(), a.actor_id.clone(), file, "--url".into(), url]).await;
    let b = c.get_or_create("notes", "1").await;
    assert_eq!(ok(c.execute(&b, "SELECT count(*) FROM n", vec![]).await).rows, vec![vec![Value::Integer(2)]]);
    engine.shutdown().await;
}

/// Actor management: create in a namespace (not placed), list with filters and
/// database size, inspect, delete (stopped, files gone, name free again).
#[tokio::test]
async fn actors_create_list_inspect_delete() {
    let dir = temp_dir();
    let engine = start(dir.path()).await;
    let url = format!("http://{}", engine.local_addr());
    let out = run_cli(vec![
        "actors".into(),
        "create".into(),
        "crawler".into(),
        "acme".into(),
        "--namespace".into(),
        "jobs".into(),
        "--url".into(),
        url.clone(),
    ])
    .await;
    assert!(out.starts_with("created "), "{out}");
    let id = out.split_whitespace().nth(1).unwrap().to_string();
    let rec = engine.actors().into_iter().find(|a| a.actor_id == id).unwrap();
    assert_eq!(
        (rec.namespace.as_str(), rec.state, rec.envoy.clone()),
        ("jobs", envoy_engine::ActorState::Stopped, None)
    );
    // Creating it again answers the same actor.
    let out = run_cli(vec![
        "actors".into(),
        "create".into(),
        "crawler".into(),
        "acme".into(),
        "--namespace".into(),
        "jobs".into(),
        "--url".into(),
        url.clone(),
    ])
    .await;
    assert!(out.contains(&id) && out.starts_with("exists"), "{out}");
    // An envoy places it (generation 1) and writes.
    let mut c = RawClient::connect(engine.local_addr(), ConnectOpts::new("jobs", "host")).await;
    let a = c.get_or_create("crawler", "acme").await;
    assert_eq!((a.actor_id.as_str(), a.generation), (id.as_str(), 1));
    exec_ok(c.exec(&a, "CREATE TABLE postings(t TEXT); INSERT INTO postings VALUES ('x')").await);
    // Filters and size.
    let (status, body) =
        envoy_engine::cli::http_request(&url, "GET", "/actors?namespace=jobs&state=starting", None).await.unwrap();
    assert_eq!(status, 200, "{body}");
    let list: Vec<envoy_engine::admin::ActorView> = serde_json::from_str(&body).unwrap();
    assert_eq!(list.len(), 1);
    assert!(list[0].db_bytes > 0, "{list:?}");
    let (_, body) = envoy_engine::cli::http_request(&url, "GET", "/actors?namespace=other", None).await.unwrap();
    assert_eq!(body.trim(), "[]");
    let out = run_cli(vec!["actors".into(), "inspect".into(), id.clone(), "--url".into(), url.clone()]).await;
    assert!(out.contains("table postings"), "{out}");
    // Delete: stopped, files gone, forgotten; the name makes a new actor afterwards.
    run_cli(vec!["actors".into(), "delete".into(), id.clone(), "--url".into(), url.clone()]).await;
    assert!(engine.actors().iter().all(|a| a.actor_id != id));
    assert!(!dir.path().join("actors").join(&id).exists());
    let b = c.get_or_create("crawler", "acme").await;
    assert_ne!(b.actor_id, id);
    let e = sql_err(c.execute(&b, "SELECT * FROM postings", vec![]).await);
    assert!(e.message.contains("no such table"), "{e:?}");
    engine.shutdown().await;
}

/// Runs the engine binary with `args` (off the async workers), asserts it succeeded, returns its stdout.
async fn run_cli(args: Vec<String>) -> String {
    tokio::task::spawn_blocking(move || {
        let out = Proc::new(BIN).args(args).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    })
    .await
    .unwrap()
}
