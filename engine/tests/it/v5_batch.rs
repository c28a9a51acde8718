//! v5 atomic batches (§9.4) and typed KV limits (§9.7), raw wire.

use crate::support::*;
use envoy_protocol::*;
use SqliteTransactionMode::{Deferred, Read, Write};

async fn setup(config: envoy_engine::Config) -> (envoy_engine::RunningEngine, RawClient, GetOrCreateActorOk) {
    let engine = start_with(config).await;
    let mut c = RawClient::connect(engine.local_addr(), ConnectOpts::v5("ns", "e")).await;
    let a = c.get_or_create("db", "1").await;
    let r = c.exec_v5(&a, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT UNIQUE)", None).await;
    assert!(matches!(r.result, SqliteExecResult::QueryResult(_)), "{r:?}");
    (engine, c, a)
}

fn batch_ok(r: &ToEnvoySqliteBatchResponse) -> Vec<ExecuteResult> {
    match &r.result {
        SqliteBatchResult::SqliteBatchOk(ok) => ok.results.clone(),
        other => panic!("expected results, got {other:?}"),
    }
}

fn batch_err(r: &ToEnvoySqliteBatchResponse) -> SqliteError {
    match &r.result {
        SqliteBatchResult::SqliteError(e) => e.clone(),
        other => panic!("expected an error, got {other:?}"),
    }
}

fn ins(v: &str) -> SqliteStatement {
    stmt_p("INSERT INTO t(v) VALUES (?)", vec![Value::Text(v.into())])
}

async fn values(c: &mut RawClient, a: &GetOrCreateActorOk) -> Vec<String> {
    let r = c.execute_v5(a, "SELECT v FROM t ORDER BY v", vec![], false, None).await;
    match r.result {
        SqliteExecuteResult::ExecuteResult(x) => x
            .rows
            .into_iter()
            .map(|row| match &row[0] {
                Value::Text(t) => t.clone(),
                other => panic!("{other:?}"),
            })
            .collect(),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_batch_is_all_or_nothing_and_names_the_failing_statement() {
    let dir = temp_dir();
    let (engine, mut c, a) = setup(test_config(dir.path())).await;
    // Success: one result per statement, in order, with their own changes and rowids.
    let r = c
        .batch(
            &a,
            Write,
            vec![ins("a"), ins("b"), stmt("SELECT count(*) FROM t"), stmt("UPDATE t SET v = v || '!'")],
            None,
        )
        .await;
    let res = batch_ok(&r);
    assert_eq!(res.len(), 4);
    assert_eq!((res[0].changes, res[0].last_insert_row_id), (1, Some(1)));
    assert_eq!((res[1].changes, res[1].last_insert_row_id), (1, Some(2)));
    assert_eq!(res[2].rows, vec![vec![Value::Integer(2)]], "a statement sees the batch's earlier writes");
    assert_eq!(res[3].changes, 2);
    assert_eq!(r.cost.rows_written, 4);
    assert_eq!(r.request_key, None);
    // A failing third statement (UNIQUE): nothing of the batch is applied.
    let r = c.batch(&a, Write, vec![ins("c"), ins("d"), ins("a!"), ins("e")], None).await;
    let e = batch_err(&r);
    assert_eq!((e.code, e.statement_index, e.committed), (SqliteErrorCode::Sqlite, Some(2), Some(false)));
    assert_eq!(values(&mut c, &a).await, vec!["a!", "b!"]);
    // A statement failing to prepare: same.
    let r = c.batch(&a, Deferred, vec![ins("c"), stmt("SELECT * FROM missing")], None).await;
    assert_eq!(batch_err(&r).statement_index, Some(1));
    assert_eq!(values(&mut c, &a).await, vec!["a!", "b!"]);
    // An empty batch succeeds with no results.
    assert!(batch_ok(&c.batch(&a, Write, vec![], None).await).is_empty());
    // Batches have their own kind in the request metrics: four ran on the writer.
    let url = format!("http://{}", engine.local_addr());
    let series = "envoy_request_duration_seconds_count{kind=\"batch\",route=\"write\"} 4";
    let t = std::time::Instant::now();
    loop {
        let (status, text) = envoy_engine::cli::http_request(&url, "GET", "/metrics", None).await.unwrap();
        assert_eq!(status, 200);
        if text.lines().any(|l| l == series) {
            break;
        }
        assert!(t.elapsed() < WAIT, "no {series} in:\n{text}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    engine.shutdown().await;
}

#[tokio::test]
async fn read_and_deferred_modes() {
    let dir = temp_dir();
    let (engine, mut c, a) = setup(test_config(dir.path())).await;
    batch_ok(&c.batch(&a, Write, vec![ins("a"), ins("b")], None).await);
    // READ: on a reader, one snapshot.
    let r = c.batch(&a, Read, vec![stmt("SELECT count(*) FROM t"), stmt("SELECT v FROM t ORDER BY v")], None).await;
    let res = batch_ok(&r);
    assert!(res.iter().all(|x| x.route == SqliteRoute::Read), "{res:?}");
    assert_eq!(res[1].rows.len(), 2);
    assert!(r.cost.rows_read >= 2);
    // READ with a write: SQLITE / READONLY (8) at its index, nothing applied.
    let r = c.batch(&a, Read, vec![stmt("SELECT 1"), ins("c")], None).await;
    let e = batch_err(&r);
    assert_eq!(
        (e.code, e.extended_code, e.statement_index, e.committed),
        (SqliteErrorCode::Sqlite, Some(8), Some(1), Some(false))
    );
    // DEFERRED of reads runs as READ; with a write, as WRITE.
    let res = batch_ok(&c.batch(&a, Deferred, vec![stmt("SELECT 1")], None).await);
    assert_eq!(res[0].route, SqliteRoute::Read);
    let res = batch_ok(&c.batch(&a, Deferred, vec![stmt("SELECT 1"), ins("c")], None).await);
    assert_eq!(res[1].changes, 1);
    // A read candidate that writes after all moves the whole batch to the writer.
    let res = batch_ok(
        &c.batch(
            &a,
            Deferred,
            vec![stmt("SELECT 1"), stmt("WITH x(v) AS (VALUES ('d')) INSERT INTO t(v) SELECT v FROM x")],
            None,
        )
        .await,
    );
    assert_eq!(res[1].changes, 1);
    assert_eq!(values(&mut c, &a).await, vec!["a", "b", "c", "d"]);
    engine.shutdown().await;
}

#[tokio::test]
async fn batch_limits_and_admission_come_before_any_work() {
    let dir = temp_dir();
    let mut config = test_config(dir.path());
    config.max_batch_statements = 3;
    config.limits.max_sql_bytes = 1000;
    let (engine, mut c, a) = setup(config).await;
    assert_eq!(c.init_v5.as_ref().unwrap().metadata_v5.limits.max_batch_statements, 3);
    let r = c.batch(&a, Write, vec![ins("a"), ins("b"), ins("c"), ins("d")], None).await;
    let e = batch_err(&r);
    assert_eq!((e.code, e.statement_index), (SqliteErrorCode::LimitExceeded, None));
    let limit = e.limit.expect("the limit is named");
    assert_eq!((limit.kind, limit.max, limit.actual), (LimitKind::BatchStatements, 3, Some(4)));
    // Each statement passes Execute's checks: its SQL bytes, exactly one statement, no transaction control.
    let long = format!("SELECT '{}'", "x".repeat(2000));
    let e = batch_err(&c.batch(&a, Write, vec![ins("a"), stmt(&long)], None).await);
    assert_eq!((e.code, e.statement_index), (SqliteErrorCode::LimitExceeded, Some(1)));
    let e = batch_err(&c.batch(&a, Write, vec![ins("a"), stmt("SELECT 1; SELECT 2")], None).await);
    assert_eq!((e.code, e.statement_index), (SqliteErrorCode::InvalidRequest, Some(1)));
    let e = batch_err(&c.batch(&a, Write, vec![stmt("BEGIN"), ins("a")], None).await);
    assert_eq!((e.code, e.statement_index), (SqliteErrorCode::InvalidRequest, Some(0)));
    assert!(values(&mut c, &a).await.is_empty(), "nothing ran");
    engine.shutdown().await;
}

#[tokio::test]
async fn batches_mixed_with_group_commit_members_and_keys() {
    let dir = temp_dir();
    let (engine, mut c, a) = setup(test_config(dir.path())).await;
    // Pipelined: they share writer batches (one group commit); a failing batch
    // rolls back only itself.
    let r1 = c.send_execute_v5(&a, "INSERT INTO t(v) VALUES ('a')", vec![], true, None).await;
    let r2 = c.send_batch(&a, Write, vec![ins("b"), ins("a")], None).await;
    let r3 = c.send_execute_v5(&a, "INSERT INTO t(v) VALUES ('c')", vec![], true, None).await;
    let r4 = c.send_batch(&a, Write, vec![ins("d"), ins("e")], None).await;
    let key = request_key(1);
    let r5 = c.send_batch(&a, Deferred, vec![ins("f")], Some(key.clone())).await;
    assert!(matches!(c.execute_v5_answer(r1).await.result, SqliteExecuteResult::ExecuteResult(_)));
    let e = batch_err(&c.batch_answer(r2).await);
    assert_eq!((e.statement_index, e.committed), (Some(1), Some(false)));
    assert!(matches!(c.execute_v5_answer(r3).await.result, SqliteExecuteResult::ExecuteResult(_)));
    assert_eq!(batch_ok(&c.batch_answer(r4).await).len(), 2);
    let keyed = c.batch_answer(r5).await;
    assert_eq!(keyed.request_key, Some(RequestKeyOutcome::Executed));
    assert_eq!(values(&mut c, &a).await, vec!["a", "c", "d", "e", "f"]);
    // The keyed batch again: replayed with the same results, nothing ran.
    let again = c.batch(&a, Deferred, vec![ins("f")], Some(key)).await;
    assert_eq!(again.request_key, Some(RequestKeyOutcome::Replayed));
    assert_eq!(batch_ok(&again), batch_ok(&keyed));
    assert_eq!(values(&mut c, &a).await, vec!["a", "c", "d", "e", "f"]);
    // A keyed batch that only reads is not recorded: its key then runs a write.
    let k = request_key(2);
    let r = c.batch(&a, Read, vec![stmt("SELECT count(*) FROM t")], Some(k.clone())).await;
    assert_eq!(
        (batch_ok(&r)[0].rows.clone(), r.request_key),
        (vec![vec![Value::Integer(5)]], Some(RequestKeyOutcome::Executed))
    );
    let r = c.batch(&a, Read, vec![stmt("SELECT count(*) FROM t")], Some(k.clone())).await;
    assert_eq!(r.request_key, Some(RequestKeyOutcome::Executed), "a read is not recorded");
    // A keyed DEFERRED batch of read candidates that writes after all (it runs on the writer).
    let cte = "WITH x(v) AS (VALUES ('g')) INSERT INTO t(v) SELECT v FROM x";
    let r = c.batch(&a, Deferred, vec![stmt("SELECT 1"), stmt(cte)], Some(request_key(3))).await;
    assert_eq!(batch_ok(&r)[1].changes, 1);
    c.execute_v5(&a, "DELETE FROM t WHERE v = 'g'", vec![], true, None).await;
    // A keyed READ batch that writes fails READONLY even on the writer.
    let e = batch_err(&c.batch(&a, Read, vec![ins("g")], Some(k)).await);
    assert_eq!((e.extended_code, e.statement_index), (Some(8), Some(0)));
    assert_eq!(values(&mut c, &a).await, vec!["a", "c", "d", "e", "f"]);
    engine.shutdown().await;
}

#[tokio::test]
async fn kv_limits_are_typed_on_v5_and_v4_shaped_on_v4() {
    let dir = temp_dir();
    let mut config = test_config(dir.path());
    config.limits.max_kv_key_bytes = 8;
    let engine = start_with(config).await;
    let put = |n: usize| KvRequestData::KvPut(KvPut { key: vec![7; n], value: vec![1] });
    let mut v5 = RawClient::connect(engine.local_addr(), ConnectOpts::v5("ns", "e5")).await;
    let a5 = v5.get_or_create("kv", "5").await;
    match v5.kv(&a5, put(20)).await {
        KvResponseData::KvLimitExceeded(l) => {
            assert_eq!((l.limit.kind, l.limit.max, l.limit.actual), (LimitKind::KvKeyBytes, 8, Some(20)));
            assert!(l.message.contains("maxKvKeyBytes"), "{}", l.message);
        }
        other => panic!("expected KvLimitExceeded, got {other:?}"),
    }
    assert!(matches!(v5.kv(&a5, put(8)).await, KvResponseData::KvPutResponse));
    let mut v4 = RawClient::connect(engine.local_addr(), ConnectOpts::new("ns", "e4").version(4)).await;
    let a4 = v4.get_or_create("kv", "4").await;
    match v4.kv(&a4, put(20)).await {
        KvResponseData::KvErrorResponse(e) => {
            assert_eq!(e.code, KvErrorCode::LimitExceeded);
            assert!(e.message.contains("maxKvKeyBytes"), "{}", e.message);
        }
        other => panic!("expected the v4 error, got {other:?}"),
    }
    engine.shutdown().await;
}
