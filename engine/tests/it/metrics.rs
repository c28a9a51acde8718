//! `GET /metrics` and the log format: the text is strict Prometheus exposition,
//! counters move by what the workload did, only operator roles may scrape, and
//! `serve --log-format json` writes JSON lines without SQL text.

use crate::support::*;
use envoy_protocol::*;
use std::collections::{HashMap, HashSet};

/// One scrape, parsed strictly.
struct Scrape {
    /// Sample value by metric name and its labels sorted (`name{a="1",b="2"}`).
    samples: HashMap<String, f64>,
}

impl Scrape {
    /// The sample `name` with exactly `labels`; panics if absent.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let key = sample_key(name, labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        *self.samples.get(&key).unwrap_or_else(|| panic!("no sample {key}"))
    }

    /// Sum of every sample of `name` (any labels).
    fn sum(&self, name: &str) -> f64 {
        self.samples.iter().filter(|(k, _)| k.split('{').next() == Some(name)).map(|(_, v)| v).sum()
    }
}

fn sample_key(name: &str, mut labels: Vec<(String, String)>) -> String {
    labels.sort();
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{name}{{{}}}", inner.join(","))
}

fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Parses `k="v",k2="v2"` (the text between braces), with `\\`, `\"`, `\n` escapes.
fn parse_labels(s: &str, line: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let eq = rest.find('=').unwrap_or_else(|| panic!("label without '=': {line}"));
        let key = &rest[..eq];
        assert!(valid_name(key), "bad label name {key:?}: {line}");
        rest = rest[eq + 1..].strip_prefix('"').unwrap_or_else(|| panic!("unquoted label value: {line}"));
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    other => panic!("bad escape {other:?}: {line}"),
                },
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value: {line}"),
            }
        };
        out.push((key.to_string(), value));
        rest = &rest[end + 1..];
        rest = match rest.strip_prefix(',') {
            Some(r) => r,
            None => {
                assert!(rest.is_empty(), "junk after a label: {line}");
                rest
            }
        };
    }
    out
}

/// A strict reader of the Prometheus text format as the engine writes it: every
/// line is empty, a `# HELP`/`# TYPE` comment, or `name{labels} value`; every
/// sample belongs to a family whose HELP and TYPE came first; histogram samples
/// are `_bucket`/`_sum`/`_count` of a histogram family.
fn parse(text: &str) -> Scrape {
    let mut help = HashSet::new();
    let mut types: HashMap<String, String> = HashMap::new();
    let mut samples = HashMap::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(c) = line.strip_prefix('#') {
            let mut parts = c.trim_start().splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("HELP"), Some(name), Some(h)) => {
                    assert!(valid_name(name) && !h.trim().is_empty(), "bad HELP: {line}");
                    assert!(help.insert(name.to_string()), "second HELP for {name}");
                }
                (Some("TYPE"), Some(name), Some(t)) => {
                    assert!(["counter", "gauge", "histogram", "summary", "untyped"].contains(&t), "bad TYPE: {line}");
                    assert!(types.insert(name.to_string(), t.to_string()).is_none(), "second TYPE for {name}");
                }
                _ => {} // other comments are allowed by the format
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value: {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, parse_labels(l.strip_suffix('}').unwrap_or_else(|| panic!("no '}}': {line}")), line)),
            None => (series, Vec::new()),
        };
        assert!(valid_name(name), "bad metric name: {line}");
        assert!(name.starts_with("envoy_"), "not an envoy metric: {line}");
        let family = match types.get(name) {
            Some(_) => name,
            None => ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| types.get(*f).map(String::as_str) == Some("histogram")))
                .unwrap_or_else(|| panic!("sample without TYPE: {line}")),
        };
        assert!(help.contains(family), "sample without HELP: {line}");
        assert!(samples.insert(sample_key(name, labels), value).is_none(), "duplicate sample: {line}");
    }
    Scrape { samples }
}

async fn scrape_as(engine: &envoy_engine::RunningEngine, token: Option<&str>) -> (u16, String) {
    let url = format!("http://{}", engine.local_addr());
    envoy_engine::cli::http_request(&url, "GET", "/metrics", token).await.unwrap()
}

async fn scrape(engine: &envoy_engine::RunningEngine) -> Scrape {
    let (status, body) = scrape_as(engine, None).await;
    assert_eq!(status, 200, "{body}");
    parse(&body)
}

/// A request's latency sample and in-flight count settle just after its answer
/// is queued, so a client may read the answer a moment earlier: poll until
/// nothing is in flight and `answered` requests were timed.
async fn settled(engine: &envoy_engine::RunningEngine, answered: usize) -> Scrape {
    let started = std::time::Instant::now();
    loop {
        let s = scrape(engine).await;
        assert!(started.elapsed() < WAIT, "never settled at {answered} timed requests: {:?}", s.samples);
        if s.get("envoy_requests_inflight", &[]) == 0.0
            && s.sum("envoy_request_duration_seconds_count") == answered as f64
        {
            return s;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn metrics_count_what_the_workload_did() {
    let dir = temp_dir();
    let engine = start(dir.path()).await;
    let before = scrape(&engine).await;
    assert_eq!(before.get("envoy_connections_open", &[]), 0.0);
    assert_eq!(before.sum("envoy_request_errors_total"), 0.0);

    let mut c = RawClient::connect(engine.local_addr(), ConnectOpts::new("ns", "e")).await;
    let a = c.get_or_create("m", "").await;
    exec_ok(c.exec(&a, "CREATE TABLE t(k INTEGER PRIMARY KEY, v TEXT)").await);
    ok(c.execute(&a, "SELECT count(*) FROM t", vec![]).await);
    let failed = sql_err(c.execute(&a, "SELECT no_such_column FROM t", vec![]).await);
    match c.kv(&a, KvRequestData::KvPut(KvPut { key: b"k".to_vec(), value: b"v".to_vec() })).await {
        KvResponseData::KvPutResponse => {}
        other => panic!("{other:?}"),
    }
    // A run of writes in flight together: the writer lane commits them in groups.
    const WRITES: usize = 30;
    let mut rids = Vec::new();
    for i in 0..WRITES as i64 {
        rids.push(c.send_execute(&a, "INSERT INTO t VALUES (?, 'x')", vec![Value::Integer(i)], true).await);
    }
    for rid in rids {
        ok(c.execute_result(rid).await);
    }

    let s = settled(&engine, WRITES + 5).await;
    assert_eq!(s.get("envoy_connections_open", &[]), 1.0);
    assert_eq!(s.get("envoy_envoys_attached", &[]), 1.0);
    assert_eq!(s.sum("envoy_actors"), 1.0);
    assert_eq!(s.get("envoy_open_actor_dbs", &[]), engine.open_actor_dbs() as f64);
    assert_eq!(s.get("envoy_open_actor_dbs", &[]), 1.0);

    // Latency: one sample per answered request, by kind and route.
    let count =
        |kind: &str, route: &str| s.get("envoy_request_duration_seconds_count", &[("kind", kind), ("route", route)]);
    assert_eq!(count("get_or_create", "write"), 1.0);
    assert_eq!(count("exec", "write"), 1.0);
    assert_eq!(count("kv", "write"), 1.0);
    assert_eq!(count("execute_write", "write"), WRITES as f64);
    assert_eq!(count("execute", "read") + count("execute", "write"), 2.0, "the good SELECT and the failing one");
    assert_eq!(s.sum("envoy_request_duration_seconds_count"), (WRITES + 5) as f64);
    // Only Execute can take a reader lane: no read series exists for the other kinds.
    for kind in ["execute_write", "exec", "kv", "get_or_create"] {
        let series = format!("envoy_request_duration_seconds_count{{kind=\"{kind}\",route=\"read\"}}");
        assert!(!s.samples.contains_key(&series), "{series}");
    }

    // Errors: exactly the failing statement, under its wire code.
    assert_eq!(s.sum("envoy_request_errors_total"), 1.0);
    assert_eq!(s.get("envoy_request_errors_total", &[("kind", "execute"), ("code", failed.code.wire_name())]), 1.0);

    // Group commits: every SQL write was a member of exactly one committed group
    // (the CREATE and the INSERTs; reads are not), the KV put of one; the metric
    // agrees with the engine's own group counters.
    assert_eq!(s.get("envoy_group_commit_size_sum", &[("store", "sql")]), (WRITES + 1) as f64);
    assert_eq!(s.get("envoy_group_commit_size_sum", &[("store", "kv")]), 1.0);
    assert_eq!(s.get("envoy_group_commit_size_count", &[("store", "kv")]), 1.0);
    let (commits, members, _, failed_commits) = engine.group_commits();
    assert_eq!(s.sum("envoy_group_commit_size_count"), commits as f64);
    assert_eq!(s.sum("envoy_group_commit_size_sum"), members as f64);
    assert_eq!(s.sum("envoy_group_commits_failed_total"), failed_commits as f64);
    assert_eq!(s.sum("envoy_commit_duration_seconds_count"), (commits + failed_commits) as f64);
    // A group never holds more than its bound, and the size buckets are cumulative.
    let le = |b: &str| s.get("envoy_group_commit_size_bucket", &[("store", "sql"), ("le", b)]);
    assert!(le("1") <= le("2") && le("2") <= le("+Inf"));
    assert_eq!(le("+Inf"), s.get("envoy_group_commit_size_count", &[("store", "sql")]));

    // Bytes: the hello and every request frame came in, every answer went out.
    assert!(s.get("envoy_frames_in_total", &[]) >= (WRITES + 6) as f64);
    assert!(s.get("envoy_frames_out_total", &[]) >= (WRITES + 6) as f64, "Init and every answer");
    assert!(s.get("envoy_bytes_in_total", &[]) > s.get("envoy_frames_in_total", &[]));
    assert!(s.get("envoy_bytes_out_total", &[]) > s.get("envoy_frames_out_total", &[]));

    // A drain is counted once, with its duration.
    assert_eq!(s.sum("envoy_drains_total"), 0.0);
    let report = engine.stop_actor(&a.actor_id).await.unwrap();
    assert_eq!(report.interrupted, 0);
    let s = scrape(&engine).await;
    assert_eq!(s.get("envoy_drains_total", &[("reason", "OPERATOR")]), 1.0);
    assert_eq!(s.get("envoy_drain_duration_seconds_count", &[]), 1.0);
    assert_eq!(s.get("envoy_drain_interrupted_requests_total", &[]), 0.0);
    assert_eq!(s.get("envoy_drains_past_threshold_total", &[]), 0.0);
    assert_eq!(s.get("envoy_actors", &[("state", "stopped")]), 1.0);
    // Stopping an actor that is no longer live drains nothing and counts nothing.
    engine.stop_actor(&a.actor_id).await.unwrap();
    assert_eq!(scrape(&engine).await.sum("envoy_drains_total"), 1.0);

    drop(c);
    engine.shutdown().await;
}

#[tokio::test]
async fn a_rejected_request_is_an_error_of_its_kind() {
    let dir = temp_dir();
    let engine = start(dir.path()).await;
    let mut c = RawClient::connect(engine.local_addr(), ConnectOpts::new("ns", "e")).await;
    let a = c.get_or_create("m", "").await;
    // A stale generation is refused at admission (FENCE_MISMATCH), never timed.
    let rid = c.send_execute_gen(&a.actor_id, a.generation + 7, "SELECT 1", vec![], false).await;
    assert!(matches!(c.execute_result(rid).await, SqliteExecuteResult::SqliteFenceMismatch(_)));
    let rid = c.send_kv(&a.actor_id, a.generation + 7, KvRequestData::KvGet(KvGet { key: b"k".to_vec() })).await;
    match c.answer(rid).await {
        ToEnvoy::KvResponse(r) => assert!(matches!(r.data, KvResponseData::KvErrorResponse(_))),
        other => panic!("{other:?}"),
    }
    let s = settled(&engine, 1).await;
    assert_eq!(s.get("envoy_request_errors_total", &[("kind", "execute"), ("code", "FENCE_MISMATCH")]), 1.0);
    assert_eq!(s.get("envoy_request_errors_total", &[("kind", "kv"), ("code", "FENCE_MISMATCH")]), 1.0);
    assert_eq!(s.sum("envoy_request_errors_total"), 2.0);
    // settled(1): only the get-or-create was admitted and timed; the refusals were not.
    engine.shutdown().await;
}

const TOKENS: &str = r#"
[[token]]
name = "tenant"
token = "tok-envoy"
namespaces = ["a"]
role = "envoy"

[[token]]
name = "ops"
token = "tok-ops"
namespaces = ["*"]
role = "operator"

[[token]]
name = "viewer"
token = "tok-view"
namespaces = ["a"]
role = "read_only_operator"
"#;

#[tokio::test]
async fn only_operator_roles_may_scrape() {
    let dir = temp_dir();
    let path = dir.path().join("tokens.toml");
    std::fs::write(&path, TOKENS).unwrap();
    let mut config = test_config(&dir.path().join("data"));
    config.tokens = envoy_engine::tenants::load_tokens_file(&path).unwrap();
    let engine = start_with(config).await;
    let (status, body) = scrape_as(&engine, Some("tok-view")).await;
    assert_eq!(status, 200, "a read-only operator may scrape: {body}");
    parse(&body);
    assert_eq!(scrape_as(&engine, Some("tok-ops")).await.0, 200);
    assert_eq!(scrape_as(&engine, Some("tok-envoy")).await.0, 403, "an envoy token may not");
    assert_eq!(scrape_as(&engine, None).await.0, 401);
    assert_eq!(scrape_as(&engine, Some("tok-wrong")).await.0, 401);
    engine.shutdown().await;
}

/// `serve --log-format json`: every stderr line is a JSON object; the envoy span's
/// fields ride along; the SQL an actor ran (even failing) is not logged at info.
#[tokio::test]
async fn serve_log_format_json_writes_json_lines_without_sql() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command as Proc, Stdio};
    let dir = temp_dir();
    let mut child = Proc::new(env!("CARGO_BIN_EXE_envoy-engine"))
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json", "--data-dir"])
        .arg(dir.path())
        .env("RUST_LOG", "info")
        .env_remove("ENVOY_AUTH_TOKEN")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = rx.recv_timeout(WAIT).expect("the engine logs at start");
    let v: serde_json::Value = serde_json::from_str(&first).unwrap_or_else(|e| panic!("not JSON ({e}): {first}"));
    assert_eq!(v["level"], "INFO", "{first}");
    assert_eq!(v["fields"]["message"], "envoy engine listening", "{first}");
    let addr: std::net::SocketAddr = v["fields"]["local_addr"].as_str().expect("local_addr").parse().unwrap();

    let mut c = RawClient::connect(addr, ConnectOpts::new("ns", "json-envoy")).await;
    let a = c.get_or_create("m", "").await;
    let secret = "secret_marker_7319";
    exec_ok(c.exec(&a, &format!("CREATE TABLE {secret}(x)")).await);
    sql_err(
        c.execute(&a, &format!("SELECT {secret}_missing FROM {secret} WHERE x = ?"), vec![Value::Text(secret.into())])
            .await,
    );
    drop(c);
    // SAFETY: plain kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
    assert_eq!(status.code(), Some(0));
    let mut lines = vec![first];
    lines.extend(rx.iter());
    let mut saw_conn_span = false;
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(!line.contains(secret), "SQL text or a parameter reached the log: {line}");
        if v["fields"]["message"] == "envoy connected" {
            assert_eq!(v["span"]["name"], "envoy", "{line}");
            assert_eq!(v["span"]["envoy_key"], "json-envoy", "{line}");
            assert_eq!(v["span"]["namespace"], "ns", "{line}");
            assert!(v["span"]["conn_id"].as_u64().is_some(), "{line}");
            saw_conn_span = true;
        }
    }
    assert!(saw_conn_span, "no 'envoy connected' line: {lines:#?}");
}
