//! Remote SQL: routing, read-your-writes, changes/rowids, errors, sandbox, limits.

use crate::support::*;
use envoy_protocol::*;

async fn setup() -> (tempfile::TempDir, envoy_engine::RunningEngine, RawClient, GetOrCreateActorOk) {
    let dir = temp_dir();
    let engine = start(dir.path()).await;
    let mut c = RawClient::connect(engine.local_addr(), ConnectOpts::new("ns", "e")).await;
    let a = c.get_or_create("db", "1").await;
    (dir, engine, c, a)
}

#[tokio::test]
async fn routing_and_read_your_writes() {
    let (_d, engine, mut c, a) = setup().await;
    let q = exec_ok(c.exec(&a, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t (v) VALUES ('a'); SELECT count(*) AS n FROM t").await);
    assert_eq!((q.columns.clone(), q.rows.clone()), (vec!["n".to_string()], vec![vec![Value::Integer(1)]]));

    // A write through Execute is routed to the writer; changes and rowid are its own.
    let w = ok(c
        .execute(&a, "INSERT INTO t (v) VALUES (?), (?)", vec![Value::Text("b".into()), Value::Text("c".into())])
        .await);
    assert_eq!((w.route, w.changes, w.last_insert_row_id), (SqliteRoute::Write, 2, Some(3)));
    // A SELECT right after: READ, 0 changes, no rowid.
    let r = ok(c.execute(&a, "SELECT v FROM t ORDER BY id", vec![]).await);
    assert_eq!((r.route, r.changes, r.last_insert_row_id), (SqliteRoute::Read, 0, None));
    assert_eq!(r.rows.len(), 3);
    // ExecuteWrite always uses the writer, even for a read.
    let r = ok(c.execute_write(&a, "SELECT 1", vec![]).await);
    assert_eq!(r.route, SqliteRoute::Write);
    // A CTE that writes is caught by sqlite3_stmt_readonly and moved to the writer.
    let w = ok(c.execute(&a, "WITH x(v) AS (VALUES ('d')) INSERT INTO t (v) SELECT v FROM x", vec![]).await);
    assert_eq!((w.route, w.changes, w.last_insert_row_id), (SqliteRoute::Write, 1, Some(4)));
    // UPDATE: changes counted, no insert rowid.
    let u = ok(c.execute(&a, "UPDATE t SET v = upper(v)", vec![]).await);
    assert_eq!((u.changes, u.last_insert_row_id), (4, None));
    // last_insert_rowid() still reports the connection's last insert (restored after the UPDATE).
    let r = ok(c.execute_write(&a, "SELECT last_insert_rowid()", vec![]).await);
    assert_eq!(r.rows, vec![vec![Value::Integer(4)]]);

    // v≤4: a transaction lives within one request. A BEGIN sent on its own is rolled back at the
    // end of its request and answered with a typed error; nothing stays open on the writer.
    let e = sql_err(c.execute(&a, "BEGIN", vec![]).await);
    assert_eq!((e.code, e.committed), (SqliteErrorCode::InvalidRequest, Some(false)), "{e:?}");
    let r = ok(c.execute(&a, "SELECT count(*) FROM t", vec![]).await);
    assert_eq!((r.route, r.rows), (SqliteRoute::Read, vec![vec![Value::Integer(4)]]));
    // Inside one Exec, a transaction works as usual.
    let q = exec_ok(
        c.exec(
            &a,
            "BEGIN; INSERT INTO t (v) VALUES ('in-tx'); SELECT count(*) FROM t; ROLLBACK; SELECT count(*) FROM t",
        )
        .await,
    );
    assert_eq!(q.rows, vec![vec![Value::Integer(4)]]);

    // Pipelined: 50 writes then a read, sent without waiting, the read sees all of them.
    let mut rids = Vec::new();
    for i in 0..50 {
        rids.push(c.send_execute(&a, "INSERT INTO t (v) VALUES (?)", vec![Value::Integer(i)], true).await);
    }
    let read = c.send_execute(&a, "SELECT count(*) FROM t", vec![], false).await;
    for rid in rids {
        ok(c.execute_result(rid).await);
    }
    assert_eq!(ok(c.execute_result(read).await).rows, vec![vec![Value::Integer(54)]]);

    // Values round-trip: integer, float, text, blob, null; NaN is stored as NULL by SQLite.
    let r = ok(c
        .execute(
            &a,
            "SELECT ?, ?, ?, ?, ?, ?",
            vec![
                Value::Integer(i64::MIN),
                Value::Float(-0.5),
                Value::Text("é".into()),
                Value::Blob(vec![0, 255]),
                Value::Null,
                Value::Float(f64::NAN),
            ],
        )
        .await);
    assert_eq!(
        r.rows[0][..5],
        [Value::Integer(i64::MIN), Value::Float(-0.5), Value::Text("é".into()), Value::Blob(vec![0, 255]), Value::Null]
    );
    assert_eq!(r.rows[0][5], Value::Null);
    engine.shutdown().await;
}

#[tokio::test]
async fn typed_errors() {
    let (_d, engine, mut c, a) = setup().await;
    // Several statements in Execute.
    let e = sql_err(c.execute(&a, "SELECT 1; SELECT 2", vec![]).await);
    assert_eq!(e.code, SqliteErrorCode::InvalidRequest);
    // Empty SQL.
    assert_eq!(sql_err(c.execute(&a, "  -- nothing\n", vec![]).await).code, SqliteErrorCode::InvalidRequest);
    // Wrong parameter count.
    assert_eq!(sql_err(c.execute(&a, "SELECT ?", vec![]).await).code, SqliteErrorCode::InvalidRequest);
    // SQLite errors carry the extended code.
    let e = sql_err(c.execute(&a, "SELEC 1", vec![]).await);
    assert_eq!((e.code, e.extended_code), (SqliteErrorCode::Sqlite, Some(1)));
    ok(c.execute(&a, "CREATE TABLE u (x INTEGER PRIMARY KEY)", vec![]).await);
    ok(c.execute(&a, "INSERT INTO u VALUES (1)", vec![]).await);
    let e = sql_err(c.execute(&a, "INSERT INTO u VALUES (1)", vec![]).await);
    assert_eq!((e.code, e.extended_code, e.committed), (SqliteErrorCode::Sqlite, Some(1555), Some(false))); // SQLITE_CONSTRAINT_PRIMARYKEY

    // Exec: the failing statement's index; earlier statements committed (autocommit).
    let r = c.exec(&a, "INSERT INTO u VALUES (2); INSERT INTO u VALUES (2); INSERT INTO u VALUES (3)").await;
    match r {
        SqliteExecResult::SqliteError(e) => assert_eq!((e.statement_index, e.committed), (Some(1), Some(true))),
        other => panic!("{other:?}"),
    }
    assert_eq!(ok(c.execute(&a, "SELECT count(*) FROM u", vec![]).await).rows, vec![vec![Value::Integer(2)]]);

    // The sandbox: no other files, no extensions.
    let evil = _d.path().join("evil.db");
    let evil_vacuum = _d.path().join("evil-vacuum.db");
    let attach = format!("ATTACH DATABASE '{}' AS evil", evil.display());
    for sql in
        [attach.as_str(), "DETACH DATABASE main", "SELECT load_extension('/tmp/x.so')", "PRAGMA journal_mode = DELETE"]
    {
        let e = sql_err(c.execute_write(&a, sql, vec![]).await);
        assert_eq!(e.code, SqliteErrorCode::Forbidden, "{sql}: {e:?}");
    }
    match c.exec(&a, "SELECT 1; ATTACH 'x.db' AS x").await {
        SqliteExecResult::SqliteError(e) => {
            assert_eq!((e.code, e.statement_index), (SqliteErrorCode::Forbidden, Some(1)))
        }
        other => panic!("{other:?}"),
    }
    assert!(!evil.exists());
    // VACUUM is the actor's own business; VACUUM INTO another file is not.
    let e = sql_err(c.execute_write(&a, &format!("VACUUM INTO '{}'", evil_vacuum.display()), vec![]).await);
    assert_eq!(e.code, SqliteErrorCode::Forbidden, "{e:?}");
    assert!(!evil_vacuum.exists());
    ok(c.execute_write(&a, "VACUUM", vec![]).await);
    engine.shutdown().await;
}

#[tokio::test]
async fn limits_are_enforced_before_work() {
    let dir = temp_dir();
    let mut cfg = test_config(dir.path());
    cfg.limits.max_sql_bytes = 128;
    cfg.limits.max_params = 2;
    cfg.limits.max_value_bytes = 10;
    cfg.limits.max_response_bytes = 4096;
    cfg.limits.max_statement_ms = 300;
    let engine = start_with(cfg).await;
    let mut c = RawClient::connect(engine.local_addr(), ConnectOpts::new("ns", "e")).await;
    assert_eq!(c.init.metadata.sql_limits.as_ref().unwrap().max_sql_bytes, 128);
    let a = c.get_or_create("db", "1").await;
    let check = |e: SqliteError, kind: LimitKind| {
        assert_eq!(e.code, SqliteErrorCode::LimitExceeded, "{e:?}");
        assert_eq!(e.limit.unwrap().kind, kind);
    };
    let long = format!("SELECT '{}'", "x".repeat(200));
    let e = sql_err(c.execute(&a, &long, vec![]).await);
    assert_eq!(e.limit.as_ref().unwrap().actual, Some(long.len() as u64));
    check(e, LimitKind::SqlBytes);
    check(
        sql_err(c.execute(&a, "SELECT ?, ?, ?", vec![Value::Null, Value::Null, Value::Null]).await),
        LimitKind::Params,
    );
    check(sql_err(c.execute(&a, "SELECT ?", vec![Value::Text("x".repeat(11))]).await), LimitKind::ValueBytes);
    // A returned value over the limit, and a response over the limit.
    check(sql_err(c.execute(&a, "SELECT hex(zeroblob(8))", vec![]).await), LimitKind::ValueBytes);
    check(
        sql_err(
            c.execute(
                &a,
                "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 5000) SELECT x FROM c",
                vec![],
            )
            .await,
        ),
        LimitKind::ResponseBytes,
    );
    // Statement deadline: TIMEOUT.
    let e = sql_err(c.execute(&a, ENDLESS_SQL, vec![]).await);
    assert_eq!(e.code, SqliteErrorCode::Timeout);
    assert_eq!(e.limit.unwrap().kind, LimitKind::StatementMs);
    // Still healthy afterwards.
    assert_eq!(ok(c.execute(&a, "SELECT 1", vec![]).await).rows, vec![vec![Value::Integer(1)]]);
    engine.shutdown().await;
}

#[tokio::test]
async fn pending_requests_bound_answers_overloaded() {
    let dir = temp_dir();
    let mut cfg = test_config(dir.path());
    cfg.limits.max_pending_requests = 2;
    let engine = start_with(cfg).await;
    let mut c = RawClient::connect(engine.local_addr(), ConnectOpts::new("ns", "e")).await;
    let a = c.get_or_create("db", "1").await;
    let slow = slow_sql(std::time::Duration::from_millis(800));
    let r1 = c.send_execute(&a, &slow, vec![], true).await;
    let r2 = c.send_execute(&a, "SELECT 2", vec![], true).await;
    let r3 = c.send_execute(&a, "SELECT 3", vec![], true).await;
    let e = sql_err(c.execute_result(r3).await);
    assert_eq!((e.code, e.limit.unwrap().kind), (SqliteErrorCode::Overloaded, LimitKind::PendingRequests));
    ok(c.execute_result(r1).await);
    ok(c.execute_result(r2).await);
    engine.shutdown().await;
}
