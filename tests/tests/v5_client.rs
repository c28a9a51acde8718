//! envoy-client at protocol v5 against a real envoy-engine: negotiation and
//! InitV5, cost, atomic batches, interactive transactions, exactly-once
//! writes across a cut link, and streamed results.
//!
//! Part of the README's test command (with the exactly-once chaos test in
//! `exactly_once.rs` and the 5×5 matrix in `compat_matrix.rs`).

use envoy_client::protocol as p;
use envoy_client::{params, stmt, BatchMode, Client, Error, TransactionMode};
use envoy_tests::proxy::Proxy;
use envoy_tests::{eventually, TestEngine};
use std::time::Duration;

/// A write that keeps SQLite busy for a while (≈ hundreds of ms here).
const SLOW_INSERT: &str = "INSERT INTO t(v) SELECT count(*) FROM \
     (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3000000) SELECT x FROM c)";

async fn v5_engine() -> TestEngine {
    TestEngine::start(|c| {
        c.max_protocol_version = 5;
        c.min_transaction_lease = Duration::from_millis(100);
    })
    .await
}

async fn count(db: &envoy_client::Db) -> i64 {
    db.query("SELECT count(*) FROM t", ()).await.unwrap().first().unwrap().get(0).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negotiates_v5_and_reports_durability_limits_and_cost() {
    let te = v5_engine().await;
    let client = te.client().await;
    let session = client.session().unwrap();
    assert_eq!(session.protocol_version, 5);
    assert!(session.durability.is_some());
    let limits = session.engine_limits.expect("EngineLimits at v5");
    assert!(limits.max_batch_statements > 0);
    let db = client.get_or_create_actor("v5", "basics").await.unwrap().sql();
    db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v INT)").await.unwrap();
    let out = db.execute_write("INSERT INTO t(v) VALUES (?)", params![7]).await.unwrap();
    assert_eq!(out.changes, 1);
    assert!(!out.replayed);
    let cost = out.cost.expect("every v5 answer has a cost");
    assert_eq!(cost.rows_written, 1);
    let rows = db.query("SELECT v FROM t", ()).await.unwrap();
    assert!(rows.cost().is_some());
    // Statements no key can cover still work (sent without a key).
    db.execute("PRAGMA user_version = 3", ()).await.unwrap();
    client.close().await;
    te.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_all_or_nothing_and_names_its_failing_statement() {
    let te = v5_engine().await;
    let client = te.client().await;
    let db = client.get_or_create_actor("v5", "batch").await.unwrap().sql();
    db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v INT)").await.unwrap();
    let out = db
        .batch(
            BatchMode::Write,
            [
                stmt("INSERT INTO t(v) VALUES (?)", params![1]),
                stmt("INSERT INTO t(v) VALUES (?)", params![2]),
                stmt("SELECT sum(v) FROM t", ()),
            ],
        )
        .await
        .unwrap();
    assert_eq!(out.len(), 3);
    assert_eq!(out[2].rows.first().unwrap().get::<i64>(0).unwrap(), 3);
    assert!(out.cost.is_some());
    let err = db
        .batch(BatchMode::Write, [stmt("INSERT INTO t(v) VALUES (3)", ()), stmt("INSERT INTO missing VALUES (1)", ())])
        .await
        .unwrap_err();
    assert_eq!(err.statement_index(), Some(1), "{err:?}");
    assert!(matches!(err, Error::Sql { committed: Some(false), .. }), "{err:?}");
    assert_eq!(count(&db).await, 2, "nothing of the failed batch was applied");
    let max = client.session().unwrap().engine_limits.unwrap().max_batch_statements as usize;
    let err =
        db.batch(BatchMode::Write, (0..=max).map(|i| stmt("INSERT INTO t(v) VALUES (?)", params![i as i64]))).await;
    assert!(matches!(err, Err(Error::LimitExceeded { kind: p::LimitKind::BatchStatements, .. })), "{err:?}");
    client.close().await;
    te.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_commit_roll_back_release_the_writer_and_expire() {
    let te = v5_engine().await;
    let client = te.client().await;
    let db = client.get_or_create_actor("v5", "tx").await.unwrap().sql();
    db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v INT)").await.unwrap();

    let n = db
        .transaction(TransactionMode::Write, |tx| async move {
            tx.execute("INSERT INTO t(v) VALUES (1)", ()).await?;
            tx.execute("INSERT INTO t(v) VALUES (2)", ()).await?;
            let rows = tx.query("SELECT count(*) FROM t", ()).await?;
            rows.first().unwrap().get::<i64>(0)
        })
        .await
        .unwrap();
    assert_eq!(n, 2, "the transaction sees its own writes");
    assert_eq!(count(&db).await, 2, "committed");

    let err = db
        .transaction(TransactionMode::Write, |tx| async move {
            tx.execute("INSERT INTO t(v) VALUES (3)", ()).await?;
            Err::<(), _>(Error::Config("the application changed its mind".into()))
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)));
    assert_eq!(count(&db).await, 2, "rolled back");

    let tx = db.begin(TransactionMode::Deferred).await.unwrap();
    tx.execute("INSERT INTO t(v) VALUES (4)", ()).await.unwrap();
    let done = tx.commit().await.unwrap();
    assert_eq!(done.changes, 1);
    assert!(done.cost.is_some() && !done.replayed);

    // Dropped while holding the writer: the rollback sent on drop frees it
    // for the next write long before the lease would.
    let tx = db.begin(TransactionMode::Write).await.unwrap();
    tx.execute("INSERT INTO t(v) VALUES (5)", ()).await.unwrap();
    drop(tx);
    db.execute_write("INSERT INTO t(v) VALUES (6)", ()).await.unwrap();
    assert_eq!(count(&db).await, 4);

    // A lease that runs out: the engine ends the transaction, later use fails typed.
    let short = db.clone().with_transaction_lease(Duration::from_millis(100));
    let tx = short.begin(TransactionMode::Write).await.unwrap();
    tx.execute("INSERT INTO t(v) VALUES (7)", ()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let err = tx.execute("INSERT INTO t(v) VALUES (8)", ()).await.unwrap_err();
    assert!(matches!(err, Error::TransactionExpired { .. }), "{err:?}");
    assert_eq!(count(&db).await, 4);
    client.close().await;
    te.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_link_is_cut_mid_flight_runs_exactly_once() {
    let te = v5_engine().await;
    let proxy = Proxy::start(te.engine.local_addr()).await;
    let mut cfg = TestEngine::client_config(&proxy.endpoint());
    cfg.backoff_initial_ms = 20;
    let client = Client::connect(cfg).await.unwrap();
    let db = client.get_or_create_actor("v5", "cut").await.unwrap().sql();
    db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v INT)").await.unwrap();
    for _ in 0..3 {
        let write = tokio::spawn({
            let db = db.clone();
            async move { db.execute_write(SLOW_INSERT, ()).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        proxy.kill();
        let out = write.await.unwrap().expect("a keyed write is never IndeterminateResult at v5");
        assert_eq!(out.changes, 1);
    }
    assert!(eventually(5_000, || client.session().is_some()).await);
    assert_eq!(count(&db).await, 3, "each write ran exactly once");
    client.close().await;
    te.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_deliver_every_row_in_order_and_cancel_on_drop() {
    let te = v5_engine().await;
    let client = te.client().await;
    let db = client.get_or_create_actor("v5", "stream").await.unwrap().sql().with_stream_credit(16 * 1024);
    db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)").await.unwrap();
    db.exec(
        "INSERT INTO t(id, v) WITH RECURSIVE c(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM c WHERE x < 1999) \
         SELECT x, printf('%064d', x) FROM c",
    )
    .await
    .unwrap();
    let mut rows = db.stream("SELECT id, v FROM t ORDER BY id", ());
    let mut next = 0i64;
    while let Some(row) = rows.next().await {
        let row = row.unwrap();
        assert_eq!(row.get::<i64>("id").unwrap(), next);
        next += 1;
    }
    assert_eq!(next, 2_000);
    assert!(rows.cost().is_some());

    let mut rows = db.stream("SELECT id, v FROM t ORDER BY id", ());
    rows.next().await.unwrap().unwrap();
    drop(rows);
    // The connection stays usable and the engine ends the stream.
    db.execute("SELECT 1", ()).await.unwrap();
    client.close().await;
    te.engine.shutdown().await;
}
