//! envoy-client against a real envoy-engine on an ephemeral port.

use envoy_client::protocol::{Direction, Feature, ProtocolCompatibilityError};
use envoy_client::{params, Client, ConnectionState, Error, Value};
use envoy_tests::proxy::Proxy;
use envoy_tests::{eventually, TestEngine};
use futures_util::future::join_all;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A query that keeps SQLite busy for a while (≈ hundreds of ms here).
const SLOW_QUERY: &str =
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3000000) SELECT count(*) AS n FROM c";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_concurrent_executes_on_one_socket() {
    let te = TestEngine::start(|_| {}).await;
    let client = te.client().await;
    let actor = client.get_or_create_actor("bulk", "k1").await.unwrap();
    let db = actor.sql();
    db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, n INT, b BLOB)").await.unwrap();

    let started = Instant::now();
    let writes = join_all((0..500).map(|i| {
        let db = db.clone();
        async move {
            db.execute("INSERT INTO t(name, n, b) VALUES (?, ?, ?)", params![format!("row{i}"), i, vec![0u8; 4]]).await
        }
    }))
    .await;
    let write_elapsed = started.elapsed();
    for (i, w) in writes.iter().enumerate() {
        let w = w.as_ref().unwrap_or_else(|e| panic!("insert {i}: {e}"));
        assert_eq!(w.changes, 1);
        assert!(w.last_insert_row_id.is_some());
    }
    let started = Instant::now();
    let reads = join_all((0..500).map(|i| {
        let db = db.clone();
        async move { db.query("SELECT n FROM t WHERE name = ?", params![format!("row{i}")]).await }
    }))
    .await;
    let read_elapsed = started.elapsed();
    for (i, r) in reads.into_iter().enumerate() {
        let rows = r.unwrap();
        assert_eq!(rows.first().unwrap().get::<i64>("n").unwrap(), i as i64);
    }
    let n: i64 = db.query("SELECT count(*) AS n FROM t", ()).await.unwrap().first().unwrap().get("n").unwrap();
    assert_eq!(n, 500);
    eprintln!(
        "figures: 500 concurrent inserts in {:?} ({:.0}/s), 500 concurrent point selects in {:?} ({:.0}/s)",
        write_elapsed,
        500.0 / write_elapsed.as_secs_f64(),
        read_elapsed,
        500.0 / read_elapsed.as_secs_f64()
    );
    client.close().await;
    te.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_v4_a_killed_socket_gives_indeterminate_and_queued_requests_go_once_after_reconnect() {
    let te = TestEngine::start(|_| {}).await;
    let proxy = Proxy::start(te.engine.local_addr()).await;
    let mut cfg = TestEngine::client_config(&proxy.endpoint());
    // v4 has no request keys: a write whose answer is lost is indeterminate. (At v5 it is
    // re-sent with its key and answered once: tests/tests/exactly_once.rs, v5_client.rs.)
    cfg.max_protocol_version = 4;
    cfg.envoy_key = "killer-envoy".into();
    cfg.backoff_initial_ms = 20;
    cfg.backoff_max_ms = 100;
    let client = Client::connect(cfg).await.unwrap();
    let actor = client.get_or_create_actor("kill", "k").await.unwrap();
    let db = actor.sql();
    db.exec("CREATE TABLE t(marker TEXT)").await.unwrap();

    // A write that takes a while is on the wire when the link is cut.
    let slow = {
        let db = db.clone();
        tokio::spawn(async move {
            db.execute_write(
                "INSERT INTO t SELECT 'slow' WHERE (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3000000) SELECT count(*) FROM c) > 0",
                (),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    proxy.refuse(true);
    proxy.kill();
    let slow = slow.await.unwrap();
    assert_eq!(slow.unwrap_err(), Error::IndeterminateResult);
    assert!(eventually(2_000, || matches!(client.state(), ConnectionState::Reconnecting { .. })).await);

    // Submitted while disconnected: they wait, and are delivered exactly once after Init.
    let queued: Vec<_> = (0..20)
        .map(|i| {
            let db = db.clone();
            tokio::spawn(
                async move { db.execute_write("INSERT INTO t(marker) VALUES (?)", params![format!("q{i}")]).await },
            )
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(queued.iter().all(|h| !h.is_finished()), "queued requests wait for the reconnect");
    proxy.refuse(false);
    for h in queued {
        h.await.unwrap().expect("queued insert succeeds after reconnect");
    }
    assert!(matches!(client.state(), ConnectionState::Connected(_)));
    let rows =
        db.query("SELECT marker, count(*) AS n FROM t WHERE marker LIKE 'q%' GROUP BY marker", ()).await.unwrap();
    assert_eq!(rows.len(), 20, "every queued insert ran");
    for row in &rows {
        assert_eq!(row.get::<i64>("n").unwrap(), 1, "{} ran more than once", row.get::<String>("marker").unwrap());
    }
    client.close().await;
    te.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_generation_is_fenced() {
    let te = TestEngine::start(|_| {}).await;
    let client = te.client().await;
    let old = client.get_or_create_actor("fenced", "k").await.unwrap();
    old.sql().exec("CREATE TABLE t(x)").await.unwrap();
    old.kv().put(b"a", b"1").await.unwrap();
    te.engine.stop_actor(old.id()).await.unwrap();
    let new = client.get_or_create_actor("fenced", "k").await.unwrap();
    assert_eq!(new.id(), old.id());
    assert!(new.generation() > old.generation(), "a new placement has a new generation");

    let err = old.sql().query("SELECT * FROM t", ()).await.unwrap_err();
    assert_eq!(err, Error::FenceMismatch { current_generation: Some(new.generation()) });
    let err = old.kv().get(b"a").await.unwrap_err();
    assert!(matches!(err, Error::FenceMismatch { .. }), "{err:?}");
    // The current generation works, and the data survived.
    assert_eq!(new.kv().get(b"a").await.unwrap(), Some(b"1".to_vec()));
    new.sql().query("SELECT * FROM t", ()).await.unwrap();
    client.close().await;
    te.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_during_in_flight_work_answers_it_and_rejects_new_requests() {
    let te = TestEngine::start(|c| c.actor_stop_threshold = Duration::from_secs(30)).await;
    let client = te.client().await;
    let stops = Arc::new(AtomicUsize::new(0));
    let s = stops.clone();
    client.on_actor_stop(move |ctx| {
        let s = s.clone();
        async move {
            // An operator stop through the engine says so (v3+ carries the reason).
            assert_eq!(ctx.stop_reason(), Some(envoy_client::protocol::StopReason::Operator));
            s.fetch_add(1, Ordering::SeqCst);
        }
    });
    let actor = client.get_or_create_actor("drain", "k").await.unwrap();
    let db = actor.sql();
    db.exec("CREATE TABLE t(x)").await.unwrap();

    let slow = {
        let db = db.clone();
        tokio::spawn(async move { db.query(SLOW_QUERY, ()).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let engine = Arc::new(te.engine);
    let stop = {
        let engine = engine.clone();
        let id = actor.id().to_string();
        tokio::spawn(async move { engine.stop_actor(&id).await })
    };
    assert!(eventually(5_000, || stops.load(Ordering::SeqCst) == 1).await, "the stop handler ran");
    let err = db.query("SELECT 1", ()).await.unwrap_err();
    assert_eq!(err, Error::ActorStopping);
    let err = actor.kv().put(b"k", b"v").await.unwrap_err();
    assert_eq!(err, Error::ActorStopping);

    let rows = slow.await.unwrap().expect("the in-flight query is answered");
    assert_eq!(rows.first().unwrap().get::<i64>("n").unwrap(), 3_000_000);
    stop.await.unwrap().expect("the drain completes");
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_pinned_to_v3_serves_kv_and_sql_is_remote_unavailable() {
    let te = TestEngine::start(|c| c.max_protocol_version = 3).await;
    let client = te.client().await;
    assert_eq!(client.session().unwrap().protocol_version, 3);
    assert!(client.session().unwrap().sql_limits.is_none());
    let actor = client.get_or_create_actor("old", "k").await.unwrap();
    actor.kv().put(b"hello", b"world").await.unwrap();
    assert_eq!(actor.kv().get(b"hello").await.unwrap(), Some(b"world".to_vec()));
    let entries = actor.kv().list_prefix(b"hel").await.unwrap();
    assert_eq!(entries.len(), 1);

    let err = actor.sql().query("SELECT 1", ()).await.unwrap_err();
    assert_eq!(
        err,
        Error::RemoteUnavailable(ProtocolCompatibilityError {
            feature: Feature::RemoteSqlite,
            direction: Direction::ToEngine,
            required_version: 4,
            target_version: 3,
        })
    );
    let err = actor.sql().exec("CREATE TABLE t(x)").await.unwrap_err();
    assert!(matches!(err, Error::RemoteUnavailable(_)));
    // Still connected, no reconnect loop; KV keeps working.
    assert!(matches!(client.state(), ConnectionState::Connected(_)));
    assert_eq!(actor.kv().get(b"hello").await.unwrap(), Some(b"world".to_vec()));
    client.close().await;
    te.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_socket_is_detected_by_the_liveness_timeout() {
    let te = TestEngine::start(|c| c.ping_interval = Duration::from_millis(100)).await;
    let proxy = Proxy::start(te.engine.local_addr()).await;
    let mut cfg = TestEngine::client_config(&proxy.endpoint());
    cfg.envoy_key = "half-open".into();
    cfg.liveness_timeout_ms = Some(1_000);
    cfg.backoff_initial_ms = 20;
    cfg.backoff_max_ms = 100;
    let client = Client::connect(cfg).await.unwrap();
    let actor = client.get_or_create_actor("ho", "k").await.unwrap();
    actor.kv().put(b"a", b"1").await.unwrap();
    // Pings keep an idle connection alive well past the liveness timeout.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert!(matches!(client.state(), ConnectionState::Connected(_)), "pings keep it alive");
    let accepted = proxy.accepted();

    proxy.freeze();
    let frozen_at = Instant::now();
    // A write sent into the dead link: its answer never comes.
    let write = {
        let kv = actor.kv();
        tokio::spawn(async move { kv.put(b"b", b"2").await })
    };
    assert!(
        eventually(5_000, || !matches!(client.state(), ConnectionState::Connected(_)) || proxy.accepted() > accepted)
            .await,
        "the dead link is noticed"
    );
    let noticed = frozen_at.elapsed();
    assert_eq!(write.await.unwrap().unwrap_err(), Error::IndeterminateResult);
    eprintln!("figures: half-open link noticed after {noticed:?} (liveness timeout 1000 ms)");
    assert!(eventually(5_000, || matches!(client.state(), ConnectionState::Connected(_))).await, "reconnects");
    assert_eq!(actor.kv().get(b"a").await.unwrap(), Some(b"1".to_vec()));
    client.close().await;
    te.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_round_trip() {
    let te = TestEngine::start(|_| {}).await;
    let client = te.client().await;
    let actor = client.get_or_create_actor("values", "k").await.unwrap();
    let db = actor.sql();
    db.exec("CREATE TABLE v(id INTEGER PRIMARY KEY, x)").await.unwrap();

    let large_text = "é".repeat(1 << 20);
    let large_blob: Vec<u8> = (0..(2 << 20)).map(|i| (i % 251) as u8).collect();
    let cases: Vec<(&str, Value, Value)> = vec![
        ("i64 min", Value::Integer(i64::MIN), Value::Integer(i64::MIN)),
        ("i64 max", Value::Integer(i64::MAX), Value::Integer(i64::MAX)),
        ("zero", Value::Integer(0), Value::Integer(0)),
        ("-0.0", Value::Float(-0.0), Value::Float(-0.0)),
        ("NaN (SQLite stores NULL)", Value::Float(f64::NAN), Value::Null),
        ("+inf", Value::Float(f64::INFINITY), Value::Float(f64::INFINITY)),
        ("-inf", Value::Float(f64::NEG_INFINITY), Value::Float(f64::NEG_INFINITY)),
        ("pi", Value::Float(std::f64::consts::PI), Value::Float(std::f64::consts::PI)),
        ("empty text", Value::Text(String::new()), Value::Text(String::new())),
        ("NUL inside text", Value::Text("a\0b\0".into()), Value::Text("a\0b\0".into())),
        ("large text", Value::Text(large_text.clone()), Value::Text(large_text)),
        ("empty blob", Value::Blob(Vec::new()), Value::Blob(Vec::new())),
        ("large blob", Value::Blob(large_blob.clone()), Value::Blob(large_blob)),
        ("null", Value::Null, Value::Null),
    ];
    for (name, input, expected) in &cases {
        // Through a parameter straight back.
        let rows = db.query("SELECT ?1 AS x", params![input]).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_same(name, rows.first().unwrap().get_ref("x").unwrap(), expected);
        // Stored and read back.
        let id = db
            .execute_write("INSERT INTO v(x) VALUES (?)", params![input])
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .last_insert_row_id
            .unwrap();
        let rows = db.query("SELECT x FROM v WHERE id = ?", params![id]).await.unwrap();
        assert_same(name, rows.first().unwrap().get_ref(0).unwrap(), expected);
    }
    // Typed getters on the same values.
    let rows = db
        .query(
            "SELECT ? AS a, ? AS b, ? AS c, ? AS d, ? AS e",
            params![i64::MIN, -0.0f64, "a\0b", vec![1u8, 2], None::<i64>],
        )
        .await
        .unwrap();
    let r = rows.first().unwrap();
    assert_eq!(r.get::<i64>("a").unwrap(), i64::MIN);
    assert!(r.get::<f64>("b").unwrap().is_sign_negative());
    assert_eq!(r.get::<&str>("c").unwrap(), "a\0b");
    assert_eq!(r.get::<Vec<u8>>("d").unwrap(), vec![1, 2]);
    assert_eq!(r.get::<Option<i64>>("e").unwrap(), None);
    client.close().await;
    te.engine.shutdown().await;
}

/// Equal, with floats compared bit for bit (so -0.0 ≠ 0.0).
fn assert_same(name: &str, got: &Value, expected: &Value) {
    match (got, expected) {
        (Value::Float(a), Value::Float(b)) => assert_eq!(a.to_bits(), b.to_bits(), "{name}: got {a:?}, expected {b:?}"),
        (Value::Text(a), Value::Text(b)) => assert!(a == b, "{name}: text differs (len {} vs {})", a.len(), b.len()),
        (Value::Blob(a), Value::Blob(b)) => assert!(a == b, "{name}: blob differs (len {} vs {})", a.len(), b.len()),
        (a, b) => assert_eq!(a, b, "{name}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_errors_for_sql_failures_and_actor_start_handlers() {
    let te = TestEngine::start(|_| {}).await;
    let client = te.client().await;
    let started = Arc::new(AtomicUsize::new(0));
    let s = started.clone();
    client.on_actor_start(move |ctx| {
        let s = s.clone();
        async move {
            assert_eq!(ctx.name(), "errs");
            // The handler can use its context right away.
            ctx.kv().put(b"started", b"yes").await.unwrap();
            s.fetch_add(1, Ordering::SeqCst);
        }
    });
    let actor = client.get_or_create_actor("errs", "k").await.unwrap();
    assert!(eventually(5_000, || started.load(Ordering::SeqCst) == 1).await, "start handler ran");
    assert_eq!(actor.kv().get(b"started").await.unwrap(), Some(b"yes".to_vec()));
    let db = actor.sql();
    match db.exec("SELEC nonsense").await.unwrap_err() {
        Error::Sql { code, message, .. } => {
            assert_eq!(code, envoy_client::protocol::SqliteErrorCode::Sqlite);
            assert!(message.contains("syntax"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    match db.exec("ATTACH DATABASE '/tmp/x.db' AS x").await.unwrap_err() {
        Error::Sql { code, .. } => assert_eq!(code, envoy_client::protocol::SqliteErrorCode::Forbidden),
        other => panic!("{other:?}"),
    }
    // Multi-statement exec returns the last statement's rows.
    let rows = db.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1), (2); SELECT sum(x) AS s FROM t").await.unwrap();
    assert_eq!(rows.first().unwrap().get::<i64>("s").unwrap(), 3);
    client.close().await;
    te.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_v4_an_idempotent_read_whose_answer_is_lost_is_retried_once() {
    let te = TestEngine::start(|_| {}).await;
    let proxy = Proxy::start(te.engine.local_addr()).await;
    let mut cfg = TestEngine::client_config(&proxy.endpoint());
    // At v5 every Execute is keyed and re-sent, marked or not; v4 keeps the distinction.
    cfg.max_protocol_version = 4;
    cfg.envoy_key = "retry-envoy".into();
    cfg.backoff_initial_ms = 20;
    cfg.backoff_max_ms = 100;
    let client = Client::connect(cfg).await.unwrap();
    let actor = client.get_or_create_actor("retry", "k").await.unwrap();
    actor.kv().put(b"k", b"v").await.unwrap();
    let db = actor.sql();
    let read = {
        let db = db.clone().idempotent();
        tokio::spawn(async move { db.query(SLOW_QUERY, ()).await })
    };
    let not_marked = {
        let db = db.clone();
        tokio::spawn(async move { db.query(SLOW_QUERY, ()).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let accepted = proxy.accepted();
    proxy.kill();
    let rows = read.await.unwrap().expect("the read is sent again after the reconnect");
    assert_eq!(rows.first().unwrap().get::<i64>("n").unwrap(), 3_000_000);
    assert!(proxy.accepted() > accepted, "it went over a new connection");
    assert_eq!(
        not_marked.await.unwrap().unwrap_err(),
        Error::IndeterminateResult,
        "SQL not marked idempotent is not retried"
    );
    assert_eq!(actor.kv().get(b"k").await.unwrap(), Some(b"v".to_vec()));
    client.close().await;
    te.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failures_are_typed_and_fatal_ones_are_not_retried() {
    // No common version: HTTP 426 with the engine's versions, no retry.
    let te = TestEngine::start(|c| {
        c.max_protocol_version = 3;
        c.auth_token = Some("s3cret".into());
    })
    .await;
    let mut cfg = TestEngine::client_config(&te.endpoint());
    cfg.token = Some("s3cret".into());
    cfg.min_protocol_version = 4;
    let started = Instant::now();
    let err = Client::connect(cfg.clone()).await.unwrap_err();
    assert_eq!(
        err,
        Error::NoCommonVersion {
            client_min: 4,
            client_max: envoy_client::SDK_PROTOCOL_VERSION,
            engine_versions: Some("1-3".into())
        }
    );
    assert!(started.elapsed() < Duration::from_secs(5), "fails fast, no retry loop");

    // Wrong token: refused, not retried.
    cfg.min_protocol_version = 1;
    cfg.token = Some("wrong".into());
    let err = Client::connect(cfg.clone()).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Disconnected { reason: envoy_client::DisconnectReason::Unauthorized { .. } }
                | Error::Disconnected { reason: envoy_client::DisconnectReason::ClosedByEngine { code: 4001, .. } }
        ),
        "{err:?}"
    );
    // The right token works.
    cfg.token = Some("s3cret".into());
    let client = Client::connect(cfg).await.unwrap();
    assert_eq!(client.session().unwrap().protocol_version, 3);
    client.close().await;
    te.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connection_with_the_same_envoy_key_evicts_the_first_for_good() {
    let te = TestEngine::start(|_| {}).await;
    let mut cfg = TestEngine::client_config(&te.endpoint());
    cfg.envoy_key = "same-key".into();
    cfg.backoff_initial_ms = 20;
    let first = Client::connect(cfg.clone()).await.unwrap();
    let second = Client::connect(cfg).await.unwrap();
    assert!(
        eventually(5_000, || matches!(first.state(), ConnectionState::Closed { .. })).await,
        "the first is evicted: {:?}",
        first.state()
    );
    match first.state() {
        ConnectionState::Closed {
            error: Some(Error::Disconnected { reason: envoy_client::DisconnectReason::ClosedByEngine { code, .. } }),
        } => assert_eq!(code, envoy_client::protocol::close::EVICTED),
        other => panic!("{other:?}"),
    }
    // It does not come back and take the key again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(matches!(second.state(), ConnectionState::Connected(_)));
    let actor = second.get_or_create_actor("evict", "k").await.unwrap();
    actor.kv().put(b"k", b"v").await.unwrap();
    assert!(matches!(first.get_or_create_actor("evict", "k").await.unwrap_err(), Error::Closed));
    second.close().await;
    te.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_waits_for_an_engine_that_comes_up() {
    let te = TestEngine::start(|_| {}).await;
    let proxy = Proxy::start(te.engine.local_addr()).await;
    proxy.refuse(true);
    let mut cfg = TestEngine::client_config(&proxy.endpoint());
    cfg.backoff_initial_ms = 20;
    cfg.backoff_max_ms = 100;
    let connecting = tokio::spawn(Client::connect(cfg));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!connecting.is_finished(), "retries while the engine is unreachable");
    proxy.refuse(false);
    let client = connecting.await.unwrap().expect("connects once reachable");
    let actor = client.get_or_create_actor("late", "k").await.unwrap();
    actor.kv().put(b"a", b"b").await.unwrap();
    client.close().await;
    te.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_gives_up_after_the_initial_connect_timeout() {
    let te = TestEngine::start(|_| {}).await;
    let proxy = Proxy::start(te.engine.local_addr()).await;
    proxy.refuse(true);
    let mut cfg = TestEngine::client_config(&proxy.endpoint());
    cfg.backoff_initial_ms = 20;
    cfg.backoff_max_ms = 50;
    cfg.initial_connect_timeout_ms = 400;
    match Client::connect(cfg).await.unwrap_err() {
        Error::Disconnected { reason: envoy_client::DisconnectReason::GaveUp { attempts, last_error } } => {
            assert!(attempts >= 2, "it retried before giving up ({attempts} attempts)");
            assert!(last_error.contains("400 ms"), "{last_error}");
        }
        other => panic!("{other:?}"),
    }
    te.engine.shutdown().await;
}
