//! Hostile clients against bounded resources: nothing a client sends may make
//! the engine hold memory or descriptors without bound.

use crate::support::*;
use envoy_protocol::*;

/// Execute frames naming actors that do not exist get ACTOR_NOT_FOUND and leave
/// no in-flight bookkeeping behind (it used to keep one entry per made-up id,
/// id bytes included, for ever).
#[tokio::test]
async fn made_up_actor_ids_leave_no_inflight_entries() {
    let dir = temp_dir();
    let engine = start(dir.path()).await;
    let mut c = RawClient::connect(engine.local_addr(), ConnectOpts::new("ns", "e")).await;
    let a = c.get_or_create("db", "1").await;
    ok(c.execute(&a, "SELECT 1", vec![]).await);
    let live = engine.inflight_entries();
    assert_eq!(live, 1, "the live actor's generation has its counter");
    let rss_before = rss_kib();

    let mut rids = Vec::new();
    for i in 0..300u32 {
        let id = format!("{i:08}{}", "x".repeat(300 * 1024));
        rids.push(c.send_execute_gen(&id, 1, "SELECT 1", vec![], false).await);
    }
    // A real actor named with a generation that is not current: fenced, not counted either.
    let mut fenced = Vec::new();
    for g in 0..50 {
        fenced.push(c.send_execute_gen(&a.actor_id, a.generation + 1 + g, "SELECT 1", vec![], false).await);
    }
    for rid in rids {
        assert_eq!(sql_err(c.execute_result(rid).await).code, SqliteErrorCode::ActorNotFound);
    }
    for rid in fenced {
        assert!(
            matches!(c.execute_result(rid).await, SqliteExecuteResult::SqliteFenceMismatch(f) if f.current_generation == a.generation)
        );
    }
    println!("RSS before {} KiB, after 300 x 300 KiB made-up ids {} KiB", rss_before, rss_kib());
    assert_eq!(engine.inflight_entries(), live, "refused requests left in-flight entries behind");

    // The live actor still works, and its counter goes away when it stops.
    ok(c.execute(&a, "SELECT 2", vec![]).await);
    engine.stop_actor(&a.actor_id).await.unwrap();
    assert_eq!(engine.inflight_entries(), 0);
}

const BLOB: usize = 1_000_000;

/// A client that asks for many large results and does not read: the engine
/// holds at most its budgets (results beyond them get a typed OVERLOADED), stops
/// reading that socket, keeps serving another tenant, and the socket survives.
#[tokio::test]
async fn non_reading_client_is_bounded_and_survives() {
    let dir = temp_dir();
    let mut cfg = test_config(dir.path());
    cfg.limits.max_value_bytes = 2 * BLOB as u32;
    cfg.limits.max_response_bytes = 2 * 1024 * 1024;
    cfg.max_connection_outbox_bytes = 4 * 1024 * 1024;
    cfg.max_result_memory_bytes = 6 * 1024 * 1024;
    let engine = start_with(cfg.clone()).await;
    let mut a = RawClient::connect(engine.local_addr(), ConnectOpts::new("tenant-a", "ea")).await;
    let mut b = RawClient::connect(engine.local_addr(), ConnectOpts::new("tenant-b", "eb")).await;
    let actor_a = a.get_or_create("big", "1").await;
    let actor_b = b.get_or_create("small", "1").await;
    exec_ok(b.exec(&actor_b, "CREATE TABLE t (v INTEGER); INSERT INTO t VALUES (1), (2), (3)").await);
    let entries = (0..3u8).map(|i| KvEntry { key: vec![i], value: vec![i; 500_000] }).collect();
    assert!(matches!(
        a.kv(&actor_a, KvRequestData::KvPutBatch(KvPutBatch { entries })).await,
        KvResponseData::KvPutBatchResponse
    ));
    let rss_before = rss_kib();

    // Tenant A asks for 60 MB of rows and 30 MB of KV lists, and reads nothing.
    let mut sql_rids = Vec::new();
    for _ in 0..60 {
        sql_rids.push(a.send_execute(&actor_a, &format!("SELECT zeroblob({BLOB}) AS b"), vec![], false).await);
    }
    let mut kv_rids = Vec::new();
    for _ in 0..20 {
        let list = KvRequestData::KvList(KvList { query: KvQuery::All, reverse: false, limit: Some(10) });
        kv_rids.push(a.send_kv(&actor_a.actor_id, actor_a.generation, list).await);
    }

    // Meanwhile tenant B keeps getting answers.
    let mut latencies = Vec::new();
    for _ in 0..50 {
        let t = std::time::Instant::now();
        let r = ok(b.execute(&actor_b, "SELECT sum(v) FROM t", vec![]).await);
        latencies.push(t.elapsed());
        assert_eq!(r.rows, vec![vec![Value::Integer(6)]]);
    }
    latencies.sort();
    println!(
        "tenant B while A does not read: p50 {:?}, max {:?} over {} queries",
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1],
        latencies.len()
    );

    // A's requests are all answered into its outbox (or its read loop paused with the rest unread).
    eventually(|| engine.inflight(&actor_a.actor_id, actor_a.generation) == 0 || engine.reads_paused() > 0).await;
    // Its outbox is full: the next frame it sends is the last one read until it reads.
    for _ in 0..10 {
        sql_rids.push(a.send_execute(&actor_a, &format!("SELECT zeroblob({BLOB}) AS b"), vec![], false).await);
    }
    eventually(|| engine.reads_paused() == 1).await;
    assert!(engine.inflight(&actor_a.actor_id, actor_a.generation) <= 1, "requests after the pause wait unread");
    println!(
        "A not reading: engine holds {} result bytes (peak {}, budget {}), read loop paused {} time(s), RSS {} KiB (was {} KiB)",
        engine.result_bytes_held(),
        engine.result_bytes_peak(),
        cfg.max_result_memory_bytes,
        engine.read_pauses(),
        rss_kib(),
        rss_before
    );
    assert!(engine.result_bytes_peak() <= cfg.max_result_memory_bytes);
    assert!(
        engine.result_bytes_held() <= cfg.max_connection_outbox_bytes,
        "one connection's results stay within its budget"
    );

    // A reads at last: every request got its rows or a typed OVERLOADED naming a budget.
    let (mut rows, mut overloaded) = (0, 0);
    for rid in sql_rids {
        match a.execute_result(rid).await {
            SqliteExecuteResult::ExecuteResult(r) => {
                assert_eq!(r.rows, vec![vec![Value::Blob(vec![0; BLOB])]]);
                rows += 1;
            }
            SqliteExecuteResult::SqliteError(e) => {
                assert_eq!(e.code, SqliteErrorCode::Overloaded, "{e:?}");
                assert!(
                    e.message.contains("max_connection_outbox_bytes") || e.message.contains("max_result_memory_bytes")
                );
                overloaded += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let (mut lists, mut kv_overloaded) = (0, 0);
    for rid in kv_rids {
        match a.answer(rid).await {
            ToEnvoy::KvResponse(r) => match r.data {
                KvResponseData::KvListResponse(l) => {
                    assert_eq!(l.entries.len(), 3);
                    lists += 1;
                }
                KvResponseData::KvErrorResponse(e) => {
                    assert_eq!(e.code, KvErrorCode::Overloaded, "{e:?}");
                    kv_overloaded += 1;
                }
                other => panic!("unexpected {other:?}"),
            },
            other => panic!("unexpected {other:?}"),
        }
    }
    println!("A: {rows} results and {overloaded} OVERLOADED of 70 SQL; {lists} lists and {kv_overloaded} OVERLOADED of 20 KV");
    assert!(rows >= 1 && overloaded >= 1, "some results fit, the rest were refused");
    assert!(kv_overloaded >= 1, "KV results are charged too");
    assert!(engine.read_pauses() >= 1, "the engine stopped reading the socket that did not read");

    // The same socket answers a normal query, and every byte held was given back.
    assert_eq!(ok(a.execute(&actor_a, "SELECT 42", vec![]).await).rows, vec![vec![Value::Integer(42)]]);
    assert!(a.closed.is_none());
    eventually(|| engine.result_bytes_held() == 0).await;
    assert_eq!(engine.reads_paused(), 0);
}

/// Sends a get-or-create and returns its raw result.
async fn get_or_create_result(c: &mut RawClient, name: &str, key: &str) -> GetOrCreateActorResult {
    let rid = c.rid();
    c.send(&ToEngine::GetOrCreateActor(ToEngineGetOrCreateActor {
        request_id: rid,
        name: name.into(),
        key: key.into(),
    }))
    .await;
    match c.answer(rid).await {
        ToEnvoy::GetOrCreateActorResponse(r) => r.result,
        other => panic!("unexpected {other:?}"),
    }
}

/// One envoy may hold at most `max_actors_per_connection` placed actors; more
/// get-or-creates are refused with a typed error naming the limit.
#[tokio::test]
async fn actors_per_connection_are_capped() {
    let dir = temp_dir();
    let mut cfg = test_config(dir.path());
    cfg.max_actors_per_connection = 3;
    let engine = start_with(cfg).await;
    let mut c = RawClient::connect(engine.local_addr(), ConnectOpts::new("ns", "e")).await;
    let mut placed = Vec::new();
    for k in 0..3 {
        placed.push(c.get_or_create("a", &k.to_string()).await);
    }
    let refused = |r: GetOrCreateActorResult| match r {
        GetOrCreateActorResult::GetOrCreateActorError(e) => {
            assert_eq!(e.code, ActorErrorCode::InvalidRequest);
            assert!(e.message.contains("max_actors_per_connection = 3"), "{}", e.message);
        }
        ok => panic!("expected a refusal, got {ok:?}"),
    };
    refused(get_or_create_result(&mut c, "a", "3").await);
    refused(get_or_create_result(&mut c, "other-name", "0").await);
    // An actor already placed here is answered as before.
    assert_eq!(c.get_or_create("a", "1").await.generation, placed[1].generation);
    // Another envoy has its own count.
    let mut d = RawClient::connect(engine.local_addr(), ConnectOpts::new("ns", "e2")).await;
    d.get_or_create("a", "100").await;
    // Stopping one frees its slot.
    engine.stop_actor(&placed[0].actor_id).await.unwrap();
    c.get_or_create("a", "3").await;
    refused(get_or_create_result(&mut c, "a", "4").await);
}

/// Get-or-create work holds a slot of the connection's pending bound while it
/// runs (it used to be spawned per frame with no bound).
#[tokio::test]
async fn get_or_create_counts_against_the_pending_bound() {
    let dir = temp_dir();
    let mut cfg = test_config(dir.path());
    cfg.limits.max_pending_requests = 2;
    let engine = start_with(cfg).await;
    let mut c = RawClient::connect(engine.local_addr(), ConnectOpts::new("ns", "e")).await;
    let a = c.get_or_create("a", "0").await;
    let slow = slow_sql(std::time::Duration::from_millis(1500));
    let busy = [c.send_execute(&a, &slow, vec![], false).await, c.send_execute(&a, &slow, vec![], true).await];
    match get_or_create_result(&mut c, "a", "1").await {
        GetOrCreateActorResult::GetOrCreateActorError(e) => {
            assert_eq!(e.code, ActorErrorCode::InvalidRequest);
            assert!(e.message.contains("maxPendingRequests"), "{}", e.message);
        }
        ok => panic!("expected a refusal while the pending bound is full, got {ok:?}"),
    }
    for rid in busy {
        ok(c.execute_result(rid).await);
    }
    c.get_or_create("a", "1").await;
}

/// More actors than the open-database cap: the least recently used idle
/// databases are closed and reopen invisibly; an actor with a statement running
/// is never closed under it; descriptors stay bounded.
#[tokio::test]
async fn open_actor_databases_are_capped() {
    const CAP: usize = 4;
    const ACTORS: usize = 40;
    let dir = temp_dir();
    let mut cfg = test_config(dir.path());
    cfg.max_open_actor_dbs = CAP;
    let engine = start_with(cfg).await;
    let mut c = RawClient::connect(engine.local_addr(), ConnectOpts::new("ns", "e")).await;

    // One actor keeps a statement running while the others come and go.
    let t = c.get_or_create("busy", "0").await;
    exec_ok(c.exec(&t, "CREATE TABLE t (v TEXT); INSERT INTO t VALUES ('kept')").await);
    let busy = c.send_execute(&t, &slow_sql(std::time::Duration::from_millis(1500)), vec![], true).await;

    let (mut max_open, mut max_fds_under, mut max_fds) = (0, 0, 0);
    let mut actors = Vec::new();
    for i in 0..ACTORS {
        let a = c.get_or_create("a", &i.to_string()).await;
        exec_ok(c.exec(&a, &format!("CREATE TABLE t (v INTEGER); INSERT INTO t VALUES ({i})")).await);
        let put = KvRequestData::KvPut(KvPut { key: b"k".to_vec(), value: i.to_string().into_bytes() });
        assert!(matches!(c.kv(&a, put).await, KvResponseData::KvPutResponse));
        // A read opens reader connections too.
        assert_eq!(ok(c.execute(&a, "SELECT v FROM t", vec![]).await).rows, vec![vec![Value::Integer(i as i64)]]);
        max_open = max_open.max(engine.open_actor_dbs());
        let (total, under) = fds_under(dir.path());
        max_fds_under = max_fds_under.max(under);
        max_fds = max_fds.max(total);
        actors.push(a);
    }
    // Every actor's data is intact after its database was closed and reopened.
    for (i, a) in actors.iter().enumerate() {
        let r = ok(c.execute(a, "SELECT v FROM t", vec![]).await);
        assert_eq!(r.rows, vec![vec![Value::Integer(i as i64)]], "actor {i}");
        let got = c.kv(a, KvRequestData::KvGet(KvGet { key: b"k".to_vec() })).await;
        assert!(matches!(got, KvResponseData::KvGetResponse(g) if g.value == Some(i.to_string().into_bytes())));
    }
    println!(
        "{ACTORS} actors, cap {CAP}: at most {max_open} databases open (peak {}), {max_fds_under} descriptors under the data dir, {max_fds} in the process",
        engine.open_actor_dbs_peak()
    );
    assert!(engine.open_actor_dbs_peak() <= CAP, "open databases exceeded the cap");
    let fd_bound = CAP * envoy_engine::fdlimit::FDS_PER_OPEN_DB as usize + 3; // + engine.sqlite and its -wal/-shm
    assert!(max_fds_under <= fd_bound, "{max_fds_under} descriptors under the data dir (bound {fd_bound})");

    // The running statement finished undisturbed, and its actor's data is intact.
    assert_eq!(ok(c.execute_result(busy).await).rows.len(), 1);
    assert_eq!(ok(c.execute(&t, "SELECT v FROM t", vec![]).await).rows, vec![vec![Value::Text("kept".into())]]);
}

/// When every open database is busy (here: each runs a long statement), a
/// request that needs another gets a typed OVERLOADED; idle databases are closed
/// by the background sweep.
#[tokio::test]
async fn open_database_cap_refuses_when_nothing_is_idle_and_idle_ones_close() {
    let dir = temp_dir();
    let mut cfg = test_config(dir.path());
    cfg.max_open_actor_dbs = 2;
    cfg.idle_db_close = std::time::Duration::from_millis(300);
    let engine = start_with(cfg).await;
    let mut c = RawClient::connect(engine.local_addr(), ConnectOpts::new("ns", "e")).await;
    let t1 = c.get_or_create("t", "1").await;
    let t2 = c.get_or_create("t", "2").await;
    let x = c.get_or_create("x", "0").await;
    let slow = slow_sql(std::time::Duration::from_millis(2500));
    let mut running = Vec::new();
    for t in [&t1, &t2] {
        running.push(c.send_execute(t, &slow, vec![], true).await);
    }
    eventually(|| engine.open_actor_dbs() == 2).await;
    let e = sql_err(c.execute(&x, "SELECT 1", vec![]).await);
    assert_eq!(e.code, SqliteErrorCode::Overloaded);
    assert!(e.message.contains("max_open_actor_dbs"), "{}", e.message);
    let kv = c.kv(&x, KvRequestData::KvGet(KvGet { key: b"k".to_vec() })).await;
    assert!(matches!(kv, KvResponseData::KvErrorResponse(ref e) if e.code == KvErrorCode::Overloaded), "{kv:?}");
    // Running statements outlive the idle sweep (a busy database is never closed).
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    assert_eq!(engine.open_actor_dbs(), 2);
    for rid in running {
        ok(c.execute_result(rid).await);
    }
    assert_eq!(ok(c.execute(&x, "SELECT 1", vec![]).await).rows, vec![vec![Value::Integer(1)]]);
    // Idle now: the sweep closes them all.
    eventually(|| engine.open_actor_dbs() == 0).await;
    assert_eq!(ok(c.execute(&t1, "SELECT 2", vec![]).await).rows, vec![vec![Value::Integer(2)]]);
}
