//! Protocol v5 interactive transactions (specs/protocol.md §9.5) over the raw
//! wire: begin / statements / commit / rollback, the writer held between
//! requests, other writes waiting then TRANSACTION_BUSY, readers on their own
//! snapshot, DEFERRED conflicts, leases, connection loss, stops and limits.
//! No timed assertions: a lease is made tiny and the test waits for the
//! engine's TransactionEnded message.

use crate::support::*;
use envoy_protocol::*;
use std::time::Duration;

async fn setup_with(
    tune: impl FnOnce(&mut envoy_engine::Config),
) -> (tempfile::TempDir, envoy_engine::RunningEngine, RawClient, GetOrCreateActorOk) {
    let dir = temp_dir();
    let mut config = test_config(dir.path());
    tune(&mut config);
    let engine = start_with(config).await;
    let mut c = RawClient::connect(engine.local_addr(), ConnectOpts::v5("ns", "e")).await;
    let a = c.get_or_create("db", "1").await;
    exec_ok(c.exec(&a, "CREATE TABLE t(k INTEGER PRIMARY KEY, who TEXT)").await);
    (dir, engine, c, a)
}

async fn setup() -> (tempfile::TempDir, envoy_engine::RunningEngine, RawClient, GetOrCreateActorOk) {
    setup_with(|_| {}).await
}

async fn send_begin(c: &mut RawClient, a: &GetOrCreateActorOk, mode: SqliteTransactionMode, lease_ms: u32) -> u32 {
    let request = SqliteBeginRequest { actor_id: a.actor_id.clone(), generation: a.generation, mode, lease_ms };
    c.send_with_rid(|request_id| ToEngine::SqliteBegin(ToEngineSqliteBegin { request_id, request })).await
}

async fn begin_result(c: &mut RawClient, rid: u32) -> SqliteBeginResult {
    match c.answer(rid).await {
        ToEnvoy::SqliteBeginResponse(r) => r.result,
        other => panic!("expected BeginResponse, got {other:?}"),
    }
}

/// Begins a transaction and returns its id.
async fn begin(c: &mut RawClient, a: &GetOrCreateActorOk, mode: SqliteTransactionMode) -> u64 {
    let rid = send_begin(c, a, mode, 60_000).await;
    match begin_result(c, rid).await {
        SqliteBeginResult::SqliteTransactionStarted(s) => s.transaction_id,
        other => panic!("begin failed: {other:?}"),
    }
}

async fn send_tx(c: &mut RawClient, a: &GetOrCreateActorOk, id: u64, sql: &str, params: Vec<Value>) -> u32 {
    let request = SqliteTransactionExecuteRequest {
        actor_id: a.actor_id.clone(),
        generation: a.generation,
        transaction_id: id,
        statement: stmt_p(sql, params),
    };
    c.send_with_rid(|request_id| {
        ToEngine::SqliteTransactionExecute(ToEngineSqliteTransactionExecute { request_id, request })
    })
    .await
}

async fn tx_answer(c: &mut RawClient, rid: u32) -> ToEnvoySqliteTransactionExecuteResponse {
    match c.answer(rid).await {
        ToEnvoy::SqliteTransactionExecuteResponse(r) => r,
        other => panic!("expected TransactionExecuteResponse, got {other:?}"),
    }
}

/// One statement in the transaction and its answer.
async fn tx(c: &mut RawClient, a: &GetOrCreateActorOk, id: u64, sql: &str) -> ToEnvoySqliteTransactionExecuteResponse {
    let rid = send_tx(c, a, id, sql, vec![]).await;
    tx_answer(c, rid).await
}

async fn commit(c: &mut RawClient, a: &GetOrCreateActorOk, id: u64) -> ToEnvoySqliteCommitResponse {
    let request = SqliteCommitRequest {
        actor_id: a.actor_id.clone(),
        generation: a.generation,
        transaction_id: id,
        request_key: None,
    };
    let rid = c.send_with_rid(|request_id| ToEngine::SqliteCommit(ToEngineSqliteCommit { request_id, request })).await;
    match c.answer(rid).await {
        ToEnvoy::SqliteCommitResponse(r) => r,
        other => panic!("expected CommitResponse, got {other:?}"),
    }
}

async fn rollback(c: &mut RawClient, a: &GetOrCreateActorOk, id: u64) -> SqliteRollbackResult {
    let request = SqliteRollbackRequest { actor_id: a.actor_id.clone(), generation: a.generation, transaction_id: id };
    let rid =
        c.send_with_rid(|request_id| ToEngine::SqliteRollback(ToEngineSqliteRollback { request_id, request })).await;
    match c.answer(rid).await {
        ToEnvoy::SqliteRollbackResponse(r) => r.result,
        other => panic!("expected RollbackResponse, got {other:?}"),
    }
}

fn committed(r: &ToEnvoySqliteCommitResponse) -> u64 {
    match &r.result {
        SqliteCommitResult::SqliteCommitted(c) => c.changes,
        other => panic!("expected a commit, got {other:?}"),
    }
}

fn commit_err(r: ToEnvoySqliteCommitResponse) -> SqliteError {
    match r.result {
        SqliteCommitResult::SqliteError(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

/// The keys in t, read outside any transaction.
async fn keys(c: &mut RawClient, a: &GetOrCreateActorOk) -> Vec<i64> {
    ok(c.execute(a, "SELECT k FROM t ORDER BY k", vec![]).await)
        .rows
        .into_iter()
        .map(|r| match r[0] {
            Value::Integer(k) => k,
            ref other => panic!("{other:?}"),
        })
        .collect()
}

/// Waits for the engine's TransactionEnded about `id`.
async fn ended(c: &mut RawClient, id: u64) -> ToEnvoySqliteTransactionEnded {
    c.until(|c| c.transactions_ended.iter().any(|e| e.transaction_id == id)).await;
    let i = c.transactions_ended.iter().position(|e| e.transaction_id == id).unwrap();
    c.transactions_ended.remove(i)
}

#[tokio::test]
async fn commit_applies_every_statement_and_reports_changes_and_cost() {
    let (_d, engine, mut c, a) = setup().await;
    let id = begin(&mut c, &a, SqliteTransactionMode::Write).await;
    let r = tx(&mut c, &a, id, "INSERT INTO t VALUES (1, 'a'), (2, 'b')").await;
    let res = ok(r.result);
    assert_eq!((res.changes, r.transaction_end, r.cost.rows_written), (2, None, 2));
    let r = tx(&mut c, &a, id, "UPDATE t SET who = 'c' WHERE k = 2").await;
    assert_eq!(ok(r.result).changes, 1);
    let r = tx(&mut c, &a, id, "SELECT k, who FROM t ORDER BY k").await;
    assert_eq!(r.cost.rows_read, 2, "{:?}", r.cost);
    let res = ok(r.result);
    assert_eq!(
        res.rows,
        vec![vec![Value::Integer(1), Value::Text("a".into())], vec![Value::Integer(2), Value::Text("c".into())]]
    );
    let done = commit(&mut c, &a, id).await;
    assert_eq!((committed(&done), done.request_key), (3, None));
    assert_eq!(keys(&mut c, &a).await, vec![1, 2]);
    // Committed: the id is gone.
    let e = sql_err(tx(&mut c, &a, id, "SELECT 1").await.result);
    assert_eq!(e.code, SqliteErrorCode::TransactionNotFound);
    let e = commit_err(commit(&mut c, &a, id).await);
    assert_eq!(e.code, SqliteErrorCode::TransactionNotFound);
    match rollback(&mut c, &a, id).await {
        SqliteRollbackResult::SqliteError(e) => assert_eq!(e.code, SqliteErrorCode::TransactionNotFound),
        other => panic!("{other:?}"),
    }
    // Ids are never reused on the connection.
    let next = begin(&mut c, &a, SqliteTransactionMode::Read).await;
    assert!(next > id);
    engine.shutdown().await;
}

#[tokio::test]
async fn rollback_applies_nothing_and_is_idempotent() {
    let (_d, engine, mut c, a) = setup().await;
    let id = begin(&mut c, &a, SqliteTransactionMode::Write).await;
    ok(tx(&mut c, &a, id, "INSERT INTO t VALUES (1, 'a')").await.result);
    assert_eq!(rollback(&mut c, &a, id).await, SqliteRollbackResult::SqliteRolledBack);
    assert_eq!(rollback(&mut c, &a, id).await, SqliteRollbackResult::SqliteRolledBack);
    let e = sql_err(tx(&mut c, &a, id, "SELECT 1").await.result);
    assert_eq!(e.code, SqliteErrorCode::TransactionNotFound);
    assert_eq!(keys(&mut c, &a).await, Vec::<i64>::new());
    // The writer is free again: a plain write runs at once.
    assert_eq!(ok(c.execute_write(&a, "INSERT INTO t VALUES (9, 'w')", vec![]).await).changes, 1);
    // An id never issued.
    match rollback(&mut c, &a, 12345).await {
        SqliteRollbackResult::SqliteError(e) => assert_eq!(e.code, SqliteErrorCode::TransactionNotFound),
        other => panic!("{other:?}"),
    }
    engine.shutdown().await;
}

#[tokio::test]
async fn a_failed_statement_undoes_only_itself_and_the_transaction_stays_open() {
    let (_d, engine, mut c, a) = setup().await;
    let id = begin(&mut c, &a, SqliteTransactionMode::Write).await;
    ok(tx(&mut c, &a, id, "INSERT INTO t VALUES (1, 'a')").await.result);
    // A multi-row insert whose second row conflicts: its first row (3) must not stay.
    let r = tx(&mut c, &a, id, "INSERT INTO t VALUES (3, 'x'), (1, 'dup')").await;
    assert_eq!(r.transaction_end, None);
    let e = sql_err(r.result);
    assert_eq!((e.code, e.extended_code, e.committed), (SqliteErrorCode::Sqlite, Some(1555), Some(false)), "{e:?}");
    let e = sql_err(tx(&mut c, &a, id, "SELECT * FROM no_such_table").await.result);
    assert_eq!(e.code, SqliteErrorCode::Sqlite);
    ok(tx(&mut c, &a, id, "INSERT INTO t VALUES (2, 'b')").await.result);
    // Statements that manage the transaction themselves are refused.
    for sql in ["COMMIT", "ROLLBACK", "BEGIN", "SAVEPOINT s", "RELEASE envoy_txn_statement"] {
        let e = sql_err(tx(&mut c, &a, id, sql).await.result);
        assert_eq!(e.code, SqliteErrorCode::InvalidRequest, "{sql}: {e:?}");
    }
    assert_eq!(committed(&commit(&mut c, &a, id).await), 2);
    assert_eq!(keys(&mut c, &a).await, vec![1, 2]);
    engine.shutdown().await;
}

#[tokio::test]
async fn an_idle_transaction_expires_and_later_requests_say_so() {
    let (_d, engine, mut c, a) = setup_with(|cfg| cfg.min_transaction_lease = Duration::from_millis(1)).await;
    let rid = send_begin(&mut c, &a, SqliteTransactionMode::Write, 1).await;
    let id = match begin_result(&mut c, rid).await {
        SqliteBeginResult::SqliteTransactionStarted(s) => {
            assert_eq!(s.lease_ms, 1, "a lease inside the bounds is granted as asked");
            s.transaction_id
        }
        other => panic!("{other:?}"),
    };
    // The statement may beat the lease or not; either way the transaction ends, unapplied.
    let r = tx(&mut c, &a, id, "INSERT INTO t VALUES (1, 'a')").await;
    let e = ended(&mut c, id).await;
    assert_eq!(
        (e.reason, e.actor_id.as_str(), e.generation),
        (TransactionEndReason::LeaseExpired, a.actor_id.as_str(), a.generation)
    );
    if let SqliteExecuteResult::SqliteError(err) = r.result {
        assert_eq!(err.code, SqliteErrorCode::TransactionExpired);
    }
    let e = sql_err(tx(&mut c, &a, id, "SELECT 1").await.result);
    assert_eq!(e.code, SqliteErrorCode::TransactionExpired);
    let e = commit_err(commit(&mut c, &a, id).await);
    assert_eq!(e.code, SqliteErrorCode::TransactionExpired);
    assert_eq!(rollback(&mut c, &a, id).await, SqliteRollbackResult::SqliteRolledBack);
    assert_eq!(keys(&mut c, &a).await, Vec::<i64>::new());
    // The writer was released.
    assert_eq!(ok(c.execute_write(&a, "INSERT INTO t VALUES (2, 'w')", vec![]).await).changes, 1);
    engine.shutdown().await;
}

#[tokio::test]
async fn a_lease_is_clamped_into_its_bounds() {
    let (_d, engine, mut c, a) = setup_with(|cfg| {
        cfg.min_transaction_lease = Duration::from_millis(500);
        cfg.max_transaction_lease = Duration::from_millis(2000);
    })
    .await;
    for (asked, granted) in [(0, 500), (1000, 1000), (u32::MAX, 2000)] {
        let rid = send_begin(&mut c, &a, SqliteTransactionMode::Read, asked).await;
        match begin_result(&mut c, rid).await {
            SqliteBeginResult::SqliteTransactionStarted(s) => {
                assert_eq!(s.lease_ms, granted);
                assert_eq!(rollback(&mut c, &a, s.transaction_id).await, SqliteRollbackResult::SqliteRolledBack);
            }
            other => panic!("{other:?}"),
        }
    }
    engine.shutdown().await;
}

#[tokio::test]
async fn another_write_waits_then_gets_transaction_busy_and_did_not_run() {
    let (_d, engine, mut c, a) = setup_with(|cfg| cfg.max_transaction_wait = Duration::from_millis(50)).await;
    let id = begin(&mut c, &a, SqliteTransactionMode::Write).await;
    ok(tx(&mut c, &a, id, "INSERT INTO t VALUES (1, 'tx')").await.result);
    let e = sql_err(c.execute_write(&a, "INSERT INTO t VALUES (2, 'outside')", vec![]).await);
    assert_eq!((e.code, e.committed), (SqliteErrorCode::TransactionBusy, Some(false)), "{e:?}");
    let e = match c.exec(&a, "INSERT INTO t VALUES (3, 'exec')").await {
        SqliteExecResult::SqliteError(e) => e,
        other => panic!("{other:?}"),
    };
    assert_eq!(e.code, SqliteErrorCode::TransactionBusy);
    // Another transaction's BEGIN WRITE waits and fails the same way.
    let rid = send_begin(&mut c, &a, SqliteTransactionMode::Write, 60_000).await;
    match begin_result(&mut c, rid).await {
        SqliteBeginResult::SqliteError(e) => assert_eq!(e.code, SqliteErrorCode::TransactionBusy),
        other => panic!("{other:?}"),
    }
    // KV is another file: it does not wait.
    let kv = c.kv(&a, KvRequestData::KvPut(KvPut { key: b"k".to_vec(), value: b"v".to_vec() })).await;
    assert_eq!(kv, KvResponseData::KvPutResponse);
    // The transaction itself is untouched.
    ok(tx(&mut c, &a, id, "INSERT INTO t VALUES (4, 'tx')").await.result);
    assert_eq!(committed(&commit(&mut c, &a, id).await), 2);
    assert_eq!(keys(&mut c, &a).await, vec![1, 4]);
    engine.shutdown().await;
}

#[tokio::test]
async fn a_waiting_write_runs_once_the_transaction_commits() {
    let (_d, engine, mut c, a) = setup().await;
    let id = begin(&mut c, &a, SqliteTransactionMode::Write).await;
    ok(tx(&mut c, &a, id, "INSERT INTO t VALUES (1, 'tx')").await.result);
    // Queued behind the transaction (default wait: seconds); answered after the commit.
    let waiting = c.send_execute(&a, "INSERT INTO t VALUES (2, 'after')", vec![], true).await;
    let done = commit(&mut c, &a, id).await;
    assert_eq!(committed(&done), 1);
    assert_eq!(ok(c.execute_result(waiting).await).changes, 1);
    assert_eq!(keys(&mut c, &a).await, vec![1, 2]);
    engine.shutdown().await;
}

#[tokio::test]
async fn readers_are_not_blocked_and_do_not_see_uncommitted_rows() {
    let (_d, engine, mut c, a) = setup().await;
    exec_ok(c.exec(&a, "INSERT INTO t VALUES (1, 'before')").await);
    let id = begin(&mut c, &a, SqliteTransactionMode::Write).await;
    ok(tx(&mut c, &a, id, "INSERT INTO t VALUES (2, 'uncommitted')").await.result);
    let r = ok(c.execute(&a, "SELECT k FROM t ORDER BY k", vec![]).await);
    assert_eq!((r.rows, r.route), (vec![vec![Value::Integer(1)]], SqliteRoute::Read));
    // A READ transaction of the same actor opens and reads its own snapshot meanwhile.
    let reader = begin(&mut c, &a, SqliteTransactionMode::Read).await;
    assert_eq!(ok(tx(&mut c, &a, reader, "SELECT count(*) FROM t").await.result).rows, vec![vec![Value::Integer(1)]]);
    assert_eq!(committed(&commit(&mut c, &a, id).await), 1);
    // The READ snapshot predates the commit.
    assert_eq!(ok(tx(&mut c, &a, reader, "SELECT count(*) FROM t").await.result).rows, vec![vec![Value::Integer(1)]]);
    assert_eq!(committed(&commit(&mut c, &a, reader).await), 0);
    assert_eq!(keys(&mut c, &a).await, vec![1, 2]);
    engine.shutdown().await;
}

#[tokio::test]
async fn a_read_transaction_refuses_writes() {
    let (_d, engine, mut c, a) = setup().await;
    let id = begin(&mut c, &a, SqliteTransactionMode::Read).await;
    let r = tx(&mut c, &a, id, "INSERT INTO t VALUES (1, 'x')").await;
    assert_eq!(r.transaction_end, None);
    let e = sql_err(r.result);
    assert_eq!((e.code, e.extended_code), (SqliteErrorCode::Sqlite, Some(8)), "{e:?}");
    ok(tx(&mut c, &a, id, "SELECT 1").await.result);
    assert_eq!(committed(&commit(&mut c, &a, id).await), 0);
    assert_eq!(keys(&mut c, &a).await, Vec::<i64>::new());
    engine.shutdown().await;
}

#[tokio::test]
async fn deferred_takes_the_writer_at_its_first_write() {
    let (_d, engine, mut c, a) = setup().await;
    let id = begin(&mut c, &a, SqliteTransactionMode::Deferred).await;
    assert_eq!(ok(tx(&mut c, &a, id, "SELECT count(*) FROM t").await.result).rows, vec![vec![Value::Integer(0)]]);
    // Nothing committed since its snapshot: the write takes the writer.
    ok(tx(&mut c, &a, id, "INSERT INTO t VALUES (1, 'deferred')").await.result);
    assert_eq!(committed(&commit(&mut c, &a, id).await), 1);
    assert_eq!(keys(&mut c, &a).await, vec![1]);
    engine.shutdown().await;
}

#[tokio::test]
async fn deferred_whose_snapshot_is_stale_gets_transaction_busy() {
    let (_d, engine, mut c, a) = setup().await;
    let id = begin(&mut c, &a, SqliteTransactionMode::Deferred).await;
    assert_eq!(ok(tx(&mut c, &a, id, "SELECT count(*) FROM t").await.result).rows, vec![vec![Value::Integer(0)]]);
    // A write commits after the snapshot (the transaction does not hold the writer yet).
    assert_eq!(ok(c.execute_write(&a, "INSERT INTO t VALUES (1, 'outside')", vec![]).await).changes, 1);
    let r = tx(&mut c, &a, id, "INSERT INTO t VALUES (2, 'deferred')").await;
    assert_eq!(r.transaction_end, None);
    let e = sql_err(r.result);
    assert_eq!((e.code, e.committed), (SqliteErrorCode::TransactionBusy, Some(false)), "{e:?}");
    // Still open, still on its snapshot.
    assert_eq!(ok(tx(&mut c, &a, id, "SELECT count(*) FROM t").await.result).rows, vec![vec![Value::Integer(0)]]);
    assert_eq!(rollback(&mut c, &a, id).await, SqliteRollbackResult::SqliteRolledBack);
    assert_eq!(keys(&mut c, &a).await, vec![1]);
    engine.shutdown().await;
}

#[tokio::test]
async fn a_dropped_connection_rolls_back_and_frees_the_writer() {
    let (_d, engine, mut c, a) = setup().await;
    let id = begin(&mut c, &a, SqliteTransactionMode::Write).await;
    ok(tx(&mut c, &a, id, "INSERT INTO t VALUES (1, 'lost')").await.result);
    drop(c);
    // The same envoy reconnects (inside the lost threshold, so the actor stays placed).
    let mut c2 = RawClient::connect(engine.local_addr(), ConnectOpts::v5("ns", "e")).await;
    assert_eq!(ok(c2.execute_write(&a, "INSERT INTO t VALUES (2, 'next')", vec![]).await).changes, 1);
    assert_eq!(keys(&mut c2, &a).await, vec![2]);
    assert!(c2.transactions_ended.is_empty(), "CONNECTION_CLOSED is not sent: {:?}", c2.transactions_ended);
    // Its id means nothing on the new connection.
    let e = sql_err(tx(&mut c2, &a, id, "SELECT 1").await.result);
    assert_eq!(e.code, SqliteErrorCode::TransactionNotFound);
    engine.shutdown().await;
}

#[tokio::test]
async fn a_stop_lets_the_transaction_commit_within_the_threshold() {
    let (_d, engine, mut c, a) = setup().await;
    let engine = std::sync::Arc::new(engine);
    let id = begin(&mut c, &a, SqliteTransactionMode::Write).await;
    ok(tx(&mut c, &a, id, "INSERT INTO t VALUES (1, 'a')").await.result);
    assert_eq!(engine.inflight(&a.actor_id, a.generation), 1, "an open transaction is in flight");
    let stop = {
        let engine = engine.clone();
        let id = a.actor_id.clone();
        tokio::spawn(async move { engine.stop_actor(&id).await.unwrap() })
    };
    eventually(|| engine.actors()[0].state == envoy_engine::ActorState::Stopping).await;
    // New work is refused, the open transaction may finish.
    let e = sql_err(c.execute_write(&a, "INSERT INTO t VALUES (5, 'new')", vec![]).await);
    assert_eq!(e.code, SqliteErrorCode::ActorStopping);
    ok(tx(&mut c, &a, id, "INSERT INTO t VALUES (2, 'b')").await.result);
    assert_eq!(committed(&commit(&mut c, &a, id).await), 2);
    let report = stop.await.unwrap();
    assert!(report.drained_in_time, "{report:?}");
    let b = c.get_or_create("db", "1").await;
    assert_eq!(keys(&mut c, &b).await, vec![1, 2]);
    let Ok(engine) = std::sync::Arc::try_unwrap(engine) else { panic!("the stop task ended") };
    engine.shutdown().await;
}

#[tokio::test]
async fn a_stop_past_its_threshold_aborts_the_transaction() {
    let (_d, engine, mut c, a) = setup_with(|cfg| cfg.actor_stop_threshold = Duration::from_millis(100)).await;
    let id = begin(&mut c, &a, SqliteTransactionMode::Write).await;
    ok(tx(&mut c, &a, id, "INSERT INTO t VALUES (1, 'a')").await.result);
    let report = engine.stop_actor(&a.actor_id).await.unwrap();
    assert!(!report.drained_in_time, "{report:?}");
    let e = ended(&mut c, id).await;
    assert_eq!(e.reason, TransactionEndReason::ActorStopping);
    assert_eq!(engine.inflight(&a.actor_id, a.generation), 0);
    let b = c.get_or_create("db", "1").await;
    assert_eq!(keys(&mut c, &b).await, Vec::<i64>::new());
    // At the old generation a request is fenced; at the new one the id (a connection's) is
    // remembered as aborted by the engine.
    assert!(matches!(tx(&mut c, &a, id, "SELECT 1").await.result, SqliteExecuteResult::SqliteFenceMismatch(_)));
    let e = sql_err(tx(&mut c, &b, id, "SELECT 1").await.result);
    assert_eq!(e.code, SqliteErrorCode::TransactionAborted);
    assert_eq!(rollback(&mut c, &b, id).await, SqliteRollbackResult::SqliteRolledBack);
    engine.shutdown().await;
}

#[tokio::test]
async fn shutdown_ends_open_transactions_with_engine_stopping() {
    let (_d, engine, mut c, a) = setup_with(|cfg| cfg.actor_stop_threshold = Duration::from_millis(100)).await;
    let id = begin(&mut c, &a, SqliteTransactionMode::Write).await;
    ok(tx(&mut c, &a, id, "INSERT INTO t VALUES (1, 'a')").await.result);
    let shutdown = tokio::spawn(engine.shutdown());
    let e = ended(&mut c, id).await;
    assert_eq!(e.reason, TransactionEndReason::EngineStopping);
    shutdown.await.unwrap();
}

#[tokio::test]
async fn open_transactions_are_limited_per_connection() {
    let (_d, engine, mut c, a) = setup_with(|cfg| cfg.max_open_transactions = 2).await;
    let one = begin(&mut c, &a, SqliteTransactionMode::Read).await;
    let _two = begin(&mut c, &a, SqliteTransactionMode::Read).await;
    let rid = send_begin(&mut c, &a, SqliteTransactionMode::Read, 1000).await;
    match begin_result(&mut c, rid).await {
        SqliteBeginResult::SqliteError(e) => {
            assert_eq!(e.code, SqliteErrorCode::LimitExceeded);
            let l = e.limit.expect("names the limit");
            assert_eq!((l.kind, l.max), (LimitKind::OpenTransactions, 2));
        }
        other => panic!("{other:?}"),
    }
    // Ending one makes room.
    assert_eq!(committed(&commit(&mut c, &a, one).await), 0);
    begin(&mut c, &a, SqliteTransactionMode::Read).await;
    engine.shutdown().await;
}

#[tokio::test]
async fn a_stale_generation_gets_a_fence_mismatch() {
    let (_d, engine, mut c, a) = setup().await;
    let stale = GetOrCreateActorOk { generation: a.generation + 7, ..a.clone() };
    let rid = send_begin(&mut c, &stale, SqliteTransactionMode::Write, 1000).await;
    match begin_result(&mut c, rid).await {
        SqliteBeginResult::SqliteFenceMismatch(f) => assert_eq!(f.current_generation, a.generation),
        other => panic!("{other:?}"),
    }
    let id = begin(&mut c, &a, SqliteTransactionMode::Write).await;
    let r = tx(&mut c, &stale, id, "SELECT 1").await;
    assert!(matches!(r.result, SqliteExecuteResult::SqliteFenceMismatch(_)), "{r:?}");
    assert_eq!(rollback(&mut c, &a, id).await, SqliteRollbackResult::SqliteRolledBack);
    engine.shutdown().await;
}

#[tokio::test]
async fn statements_of_one_transaction_run_in_arrival_order() {
    let (_d, engine, mut c, a) = setup().await;
    let id = begin(&mut c, &a, SqliteTransactionMode::Write).await;
    // Pipelined: every statement sent before any answer is read.
    let mut rids = Vec::new();
    for k in 0..20 {
        rids.push(send_tx(&mut c, &a, id, "INSERT INTO t VALUES (?, 'p')", vec![Value::Integer(k)]).await);
    }
    let check = send_tx(&mut c, &a, id, "SELECT count(*) FROM t", vec![]).await;
    for rid in rids {
        assert_eq!(ok(tx_answer(&mut c, rid).await.result).changes, 1);
    }
    assert_eq!(ok(tx_answer(&mut c, check).await.result).rows, vec![vec![Value::Integer(20)]]);
    assert_eq!(committed(&commit(&mut c, &a, id).await), 20);
    engine.shutdown().await;
}

#[tokio::test]
async fn a_replaced_placement_fences_the_transaction() {
    let (_d, engine, mut c, a) = setup_with(|cfg| cfg.actor_stop_threshold = Duration::from_millis(100)).await;
    let id = begin(&mut c, &a, SqliteTransactionMode::Write).await;
    ok(tx(&mut c, &a, id, "INSERT INTO t VALUES (1, 'a')").await.result);
    // Another envoy takes the actor: the old placement is drained (REPLACED) and the
    // actor restarts with a newer generation.
    let mut other = RawClient::connect(engine.local_addr(), ConnectOpts::v5("ns", "other")).await;
    let b = other.get_or_create("db", "1").await;
    assert!(b.generation > a.generation);
    let e = ended(&mut c, id).await;
    assert_eq!((e.reason, e.generation), (TransactionEndReason::Fenced, a.generation));
    assert_eq!(keys(&mut other, &b).await, Vec::<i64>::new());
    engine.shutdown().await;
}

/// `GET /metrics` as text.
async fn metrics_text(engine: &envoy_engine::RunningEngine) -> String {
    let url = format!("http://{}", engine.local_addr());
    let (status, body) = envoy_engine::cli::http_request(&url, "GET", "/metrics", None).await.unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

/// Polls `GET /metrics` until `pred` holds on its text (up to WAIT).
async fn metrics_until(engine: &envoy_engine::RunningEngine, pred: impl Fn(&str) -> bool) {
    let started = std::time::Instant::now();
    loop {
        let text = metrics_text(engine).await;
        if pred(&text) {
            return;
        }
        assert!(started.elapsed() < WAIT, "metrics never matched:\n{text}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn open_transactions_and_their_ends_are_metrics() {
    let (_d, engine, mut c, a) = setup_with(|cfg| cfg.min_transaction_lease = Duration::from_millis(1)).await;
    let one = begin(&mut c, &a, SqliteTransactionMode::Write).await;
    let two = begin(&mut c, &a, SqliteTransactionMode::Read).await;
    assert!(metrics_text(&engine).await.contains("envoy_transactions_open 2"));
    assert_eq!(committed(&commit(&mut c, &a, one).await), 0);
    assert_eq!(rollback(&mut c, &a, two).await, SqliteRollbackResult::SqliteRolledBack);
    let rid = send_begin(&mut c, &a, SqliteTransactionMode::Read, 1).await;
    let SqliteBeginResult::SqliteTransactionStarted(s) = begin_result(&mut c, rid).await else { panic!("begin") };
    ended(&mut c, s.transaction_id).await;
    let text = metrics_text(&engine).await;
    for line in [
        "envoy_transaction_ends_total{reason=\"committed\"} 1",
        "envoy_transaction_ends_total{reason=\"rolled_back\"} 1",
        "envoy_transaction_ends_total{reason=\"LEASE_EXPIRED\"} 1",
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
    // Answered requests are timed (3 Begins, a Commit, a Rollback); a sample is taken just
    // after its answer is queued, so poll until they are in.
    metrics_until(&engine, |text| {
        text.contains("envoy_request_duration_seconds_count{kind=\"transaction\",route=\"write\"} 2")
            && text.contains("envoy_request_duration_seconds_count{kind=\"transaction\",route=\"read\"} 3")
    })
    .await;
    // A refused request is an error answer of kind `transaction`.
    match rollback(&mut c, &a, 424242).await {
        SqliteRollbackResult::SqliteError(e) => assert_eq!(e.code, SqliteErrorCode::TransactionNotFound),
        other => panic!("{other:?}"),
    }
    let text = metrics_text(&engine).await;
    let line = "envoy_request_errors_total{code=\"TRANSACTION_NOT_FOUND\",kind=\"transaction\"} 1";
    assert!(text.contains(line), "{line} missing from:\n{text}");
    // The gauge drops once each driver has finished (just after its last message).
    metrics_until(&engine, |text| text.contains("envoy_transactions_open 0")).await;
    engine.shutdown().await;
}

async fn keyed_commit(
    c: &mut RawClient,
    a: &GetOrCreateActorOk,
    id: u64,
    key: RequestKey,
) -> ToEnvoySqliteCommitResponse {
    let request = SqliteCommitRequest {
        actor_id: a.actor_id.clone(),
        generation: a.generation,
        transaction_id: id,
        request_key: Some(key),
    };
    let rid = c.send_with_rid(|request_id| ToEngine::SqliteCommit(ToEngineSqliteCommit { request_id, request })).await;
    match c.answer(rid).await {
        ToEnvoy::SqliteCommitResponse(r) => r,
        other => panic!("expected CommitResponse, got {other:?}"),
    }
}

#[tokio::test]
async fn a_keyed_commit_is_exactly_once_across_connections() {
    let (_d, engine, mut c, a) = setup().await;
    let key = request_key(1);
    let id = begin(&mut c, &a, SqliteTransactionMode::Write).await;
    ok(tx(&mut c, &a, id, "INSERT INTO t VALUES (1, 'a'), (2, 'b')").await.result);
    let first = keyed_commit(&mut c, &a, id, key.clone()).await;
    assert_eq!((committed(&first), first.request_key), (2, Some(RequestKeyOutcome::Executed)));
    // A retry on the same connection (the id is committed) replays.
    let again = keyed_commit(&mut c, &a, id, key.clone()).await;
    assert_eq!((committed(&again), again.request_key), (2, Some(RequestKeyOutcome::Replayed)));
    // The answer was "lost": the client reconnects and retries with the same key.
    drop(c);
    let mut c2 = RawClient::connect(engine.local_addr(), ConnectOpts::v5("ns", "e")).await;
    let retry = keyed_commit(&mut c2, &a, id, key.clone()).await;
    assert_eq!((committed(&retry), retry.request_key), (2, Some(RequestKeyOutcome::Replayed)));
    // A new transaction committing with the used key runs nothing: replayed, its write rolled back.
    let other = begin(&mut c2, &a, SqliteTransactionMode::Write).await;
    ok(tx(&mut c2, &a, other, "INSERT INTO t VALUES (3, 'c')").await.result);
    let dup = keyed_commit(&mut c2, &a, other, key.clone()).await;
    assert_eq!((committed(&dup), dup.request_key), (2, Some(RequestKeyOutcome::Replayed)));
    assert_eq!(keys(&mut c2, &a).await, vec![1, 2]);
    // The same key on another kind of request is a conflict.
    let e = c2.execute_v5(&a, "INSERT INTO t VALUES (4, 'd')", vec![], true, Some(key.clone())).await;
    match e.result {
        SqliteExecuteResult::SqliteError(e) => assert_eq!(e.code, SqliteErrorCode::RequestKeyConflict),
        other => panic!("{other:?}"),
    }
    // An unknown id with a fresh key: nothing recorded, so not found.
    let unknown = keyed_commit(&mut c2, &a, 999, request_key(2)).await;
    assert_eq!(unknown.request_key, Some(RequestKeyOutcome::Executed));
    assert_eq!(commit_err(unknown).code, SqliteErrorCode::TransactionNotFound);
    // A malformed key is refused before anything.
    let bad = keyed_commit(&mut c2, &a, 999, vec![1, 2, 3]).await;
    assert_eq!(bad.request_key, Some(RequestKeyOutcome::Executed), "keyed: the outcome is present");
    assert_eq!(commit_err(bad).code, SqliteErrorCode::InvalidRequest);
    // An unkeyed commit's answer has no key outcome.
    let plain = commit(&mut c2, &a, 999).await;
    assert_eq!(plain.request_key, None);
    engine.shutdown().await;
}

#[tokio::test]
async fn an_evicted_connection_rolls_back_and_its_successor_writes() {
    let (_d, engine, mut c, a) = setup().await;
    let id = begin(&mut c, &a, SqliteTransactionMode::Write).await;
    ok(tx(&mut c, &a, id, "INSERT INTO t VALUES (1, 'evicted')").await.result);
    // A newer connection with the same envoy key evicts this one (the test keeps its socket).
    let mut c2 = RawClient::connect(engine.local_addr(), ConnectOpts::v5("ns", "e")).await;
    assert_eq!(ok(c2.execute_write(&a, "INSERT INTO t VALUES (2, 'successor')", vec![]).await).changes, 1);
    assert_eq!(keys(&mut c2, &a).await, vec![2]);
    let (code, _) = c.until_closed().await;
    assert_eq!(code, close::EVICTED);
    assert!(c.transactions_ended.is_empty(), "CONNECTION_CLOSED is not sent");
    engine.shutdown().await;
}

#[tokio::test]
async fn a_statement_that_rolls_back_the_whole_transaction_ends_it() {
    let (_d, engine, mut c, a) = setup().await;
    exec_ok(c.exec(&a, "INSERT INTO t VALUES (1, 'committed')").await);
    let id = begin(&mut c, &a, SqliteTransactionMode::Write).await;
    ok(tx(&mut c, &a, id, "INSERT INTO t VALUES (2, 'tx')").await.result);
    // OR ROLLBACK makes SQLite roll the whole transaction back on the conflict.
    let r = tx(&mut c, &a, id, "INSERT OR ROLLBACK INTO t VALUES (1, 'dup')").await;
    assert_eq!(r.transaction_end, Some(TransactionEndReason::StatementFailed));
    let e = sql_err(r.result);
    assert_eq!((e.code, e.committed), (SqliteErrorCode::Sqlite, Some(false)), "{e:?}");
    assert_eq!(ended(&mut c, id).await.reason, TransactionEndReason::StatementFailed);
    let e = sql_err(tx(&mut c, &a, id, "SELECT 1").await.result);
    assert_eq!(e.code, SqliteErrorCode::TransactionAborted);
    // Nothing of it stayed, and the writer is free.
    assert_eq!(ok(c.execute_write(&a, "INSERT INTO t VALUES (3, 'next')", vec![]).await).changes, 1);
    assert_eq!(keys(&mut c, &a).await, vec![1, 3]);
    engine.shutdown().await;
}

#[tokio::test]
async fn a_read_sent_after_a_waiting_write_sees_it() {
    let (_d, engine, mut c, a) = setup().await;
    let id = begin(&mut c, &a, SqliteTransactionMode::Write).await;
    ok(tx(&mut c, &a, id, "INSERT INTO t VALUES (1, 'tx')").await.result);
    // Pipelined: a write that must wait for the transaction, then a read of the same actor.
    let write = c.send_execute(&a, "INSERT INTO t VALUES (2, 'waited')", vec![], true).await;
    let read = c.send_execute(&a, "SELECT count(*) FROM t", vec![], false).await;
    assert_eq!(committed(&commit(&mut c, &a, id).await), 1);
    assert_eq!(ok(c.execute_result(write).await).changes, 1);
    // The read did not overtake the write it followed.
    assert_eq!(ok(c.execute_result(read).await).rows, vec![vec![Value::Integer(2)]]);
    engine.shutdown().await;
}

#[tokio::test]
async fn a_deferred_write_behind_a_write_transaction_gets_busy() {
    let (_d, engine, mut c, a) = setup_with(|cfg| cfg.max_transaction_wait = Duration::from_millis(50)).await;
    let writer = begin(&mut c, &a, SqliteTransactionMode::Write).await;
    ok(tx(&mut c, &a, writer, "INSERT INTO t VALUES (1, 'w')").await.result);
    let deferred = begin(&mut c, &a, SqliteTransactionMode::Deferred).await;
    assert_eq!(ok(tx(&mut c, &a, deferred, "SELECT count(*) FROM t").await.result).rows, vec![vec![Value::Integer(0)]]);
    // It cannot take the writer while the other holds it (and once that one commits, its snapshot is stale).
    let e = sql_err(tx(&mut c, &a, deferred, "INSERT INTO t VALUES (2, 'd')").await.result);
    assert_eq!((e.code, e.committed), (SqliteErrorCode::TransactionBusy, Some(false)));
    assert_eq!(committed(&commit(&mut c, &a, writer).await), 1);
    let e = sql_err(tx(&mut c, &a, deferred, "INSERT INTO t VALUES (2, 'd')").await.result);
    assert_eq!(e.code, SqliteErrorCode::TransactionBusy);
    assert_eq!(rollback(&mut c, &a, deferred).await, SqliteRollbackResult::SqliteRolledBack);
    assert_eq!(keys(&mut c, &a).await, vec![1]);
    engine.shutdown().await;
}
