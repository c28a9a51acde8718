//! Acknowledged means committed: in protocol v≤4 a transaction lives within one
//! request. A request that ends with a transaction open is rolled back and
//! answered with a typed error, so no later write can join it, be acknowledged
//! inside it, and then be lost — and no request can undo another's write.

use crate::support::*;
use envoy_protocol::*;

async fn setup() -> (tempfile::TempDir, envoy_engine::RunningEngine, RawClient, GetOrCreateActorOk) {
    let dir = temp_dir();
    let engine = start(dir.path()).await;
    let mut c = RawClient::connect(engine.local_addr(), ConnectOpts::new("ns", "e")).await;
    let a = c.get_or_create("db", "1").await;
    exec_ok(c.exec(&a, "CREATE TABLE t(k INTEGER PRIMARY KEY, who TEXT)").await);
    (dir, engine, c, a)
}

/// Stops the actor (drain, database closed) and places it again: what survives is what was committed.
async fn restart(
    engine: &envoy_engine::RunningEngine,
    c: &mut RawClient,
    a: &GetOrCreateActorOk,
) -> GetOrCreateActorOk {
    engine.stop_actor(&a.actor_id).await.expect("stop");
    let b = c.get_or_create("db", "1").await;
    assert!(b.generation > a.generation);
    b
}

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

fn exec_err(r: SqliteExecResult) -> SqliteError {
    match r {
        SqliteExecResult::SqliteError(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

/// The Worker repro: BEGIN; INSERT; INSERT <duplicate>; COMMIT fails at its third
/// statement. Before, its transaction stayed open, the next write joined it, was
/// answered {changes: 1}, and was lost when the actor stopped.
#[tokio::test]
async fn a_failed_exec_does_not_leave_its_transaction_open() {
    let (_d, engine, mut c, a) = setup().await;
    let e =
        exec_err(c.exec(&a, "BEGIN; INSERT INTO t VALUES (1, 'exec'); INSERT INTO t VALUES (1, 'dup'); COMMIT").await);
    assert_eq!(
        (e.code, e.extended_code, e.statement_index, e.committed),
        (SqliteErrorCode::Sqlite, Some(1555), Some(2), Some(false)),
        "{e:?}"
    );
    assert!(e.message.contains("rolled back"), "{e:?}");
    // Another caller's write: acknowledged, and so committed.
    let w = ok(c.execute_write(&a, "INSERT INTO t VALUES (5, 'other')", vec![]).await);
    assert_eq!(w.changes, 1);
    assert_eq!(keys(&mut c, &a).await, vec![5], "a reader sees the acknowledged write at once");
    let b = restart(&engine, &mut c, &a).await;
    assert_eq!(keys(&mut c, &b).await, vec![5], "the acknowledged write survived; nothing of the failed Exec did");
    engine.shutdown().await;
}

/// A write of one task must not be undone by another task's ROLLBACK.
#[tokio::test]
async fn one_requests_rollback_cannot_undo_anothers_write() {
    let (_d, engine, mut c, a) = setup().await;
    // Task A opens a transaction on its own: refused and rolled back at once.
    let e = sql_err(c.execute_write(&a, "BEGIN", vec![]).await);
    assert_eq!((e.code, e.committed), (SqliteErrorCode::InvalidRequest, Some(false)), "{e:?}");
    // Task B writes and is acknowledged.
    assert_eq!(ok(c.execute_write(&a, "INSERT INTO t VALUES (7, 'b')", vec![]).await).changes, 1);
    // Task A's ROLLBACK finds no transaction to roll back.
    let e = sql_err(c.execute_write(&a, "ROLLBACK", vec![]).await);
    assert_eq!(e.code, SqliteErrorCode::Sqlite, "{e:?}");
    // Pipelined, the same story.
    let r1 = c.send_execute(&a, "BEGIN", vec![], true).await;
    let r2 = c.send_execute(&a, "INSERT INTO t VALUES (8, 'b')", vec![], true).await;
    let r3 = c.send_execute(&a, "ROLLBACK", vec![], true).await;
    sql_err(c.execute_result(r1).await);
    assert_eq!(ok(c.execute_result(r2).await).changes, 1);
    sql_err(c.execute_result(r3).await);
    let b = restart(&engine, &mut c, &a).await;
    assert_eq!(keys(&mut c, &b).await, vec![7, 8]);
    engine.shutdown().await;
}

/// Every way a request can end inside a transaction, and the ways that are fine.
#[tokio::test]
async fn transactions_begin_and_end_within_one_request() {
    let (_d, engine, mut c, a) = setup().await;
    // Left open by an Exec: rolled back, typed error.
    let e = exec_err(c.exec(&a, "BEGIN; INSERT INTO t VALUES (1, 'x')").await);
    assert_eq!((e.code, e.committed), (SqliteErrorCode::InvalidRequest, Some(false)), "{e:?}");
    // A SAVEPOINT outside a transaction starts one: the same.
    let e = exec_err(c.exec(&a, "SAVEPOINT s; INSERT INTO t VALUES (2, 'x')").await);
    assert_eq!(e.code, SqliteErrorCode::InvalidRequest, "{e:?}");
    // Statements before the BEGIN committed on their own, and the answer says so.
    let e = exec_err(c.exec(&a, "INSERT INTO t VALUES (3, 'alone'); BEGIN; INSERT INTO t VALUES (4, 'x')").await);
    assert_eq!((e.code, e.committed), (SqliteErrorCode::InvalidRequest, Some(true)), "{e:?}");
    assert_eq!(keys(&mut c, &a).await, vec![3]);
    // Whole transactions in one request work, SAVEPOINT ... RELEASE too.
    exec_ok(c.exec(&a, "BEGIN; INSERT INTO t VALUES (10, 'tx'); INSERT INTO t VALUES (11, 'tx'); COMMIT").await);
    exec_ok(c.exec(&a, "SAVEPOINT s; INSERT INTO t VALUES (12, 'sp'); RELEASE s").await);
    exec_ok(c.exec(&a, "BEGIN; INSERT INTO t VALUES (13, 'gone'); ROLLBACK").await);
    // A failing statement inside a transaction that the request itself handles is the request's business.
    let e =
        exec_err(c.exec(&a, "BEGIN; INSERT INTO t VALUES (14, 'x'); INSERT INTO t VALUES (10, 'dup'); COMMIT").await);
    assert_eq!((e.statement_index, e.committed), (Some(2), Some(false)), "{e:?}");
    let b = restart(&engine, &mut c, &a).await;
    assert_eq!(keys(&mut c, &b).await, vec![3, 10, 11, 12]);
    engine.shutdown().await;
}
