//! v5 ExecuteV5/ExecV5 with costs and exactly-once request keys (§9.1, §9.3), raw wire.

use crate::support::*;
use envoy_protocol::*;
use std::time::Duration;

async fn setup_with(config: envoy_engine::Config) -> (envoy_engine::RunningEngine, RawClient, GetOrCreateActorOk) {
    let engine = start_with(config).await;
    let mut c = RawClient::connect(engine.local_addr(), ConnectOpts::v5("ns", "e")).await;
    let a = c.get_or_create("db", "1").await;
    (engine, c, a)
}

fn ok5(r: ToEnvoySqliteExecuteResponseV5) -> (ExecuteResult, SqlCost, Option<RequestKeyOutcome>) {
    match r.result {
        SqliteExecuteResult::ExecuteResult(x) => (x, r.cost, r.request_key),
        other => panic!("expected a result, got {other:?}"),
    }
}

fn err5(r: ToEnvoySqliteExecuteResponseV5) -> (SqliteError, Option<RequestKeyOutcome>) {
    match r.result {
        SqliteExecuteResult::SqliteError(e) => (e, r.request_key),
        other => panic!("expected an error, got {other:?}"),
    }
}

async fn count(c: &mut RawClient, a: &GetOrCreateActorOk, table: &str) -> i64 {
    let (x, _, _) = ok5(c.execute_v5(a, &format!("SELECT count(*) FROM {table}"), vec![], false, None).await);
    match x.rows[0][0] {
        Value::Integer(n) => n,
        ref other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn every_v5_answer_carries_a_plausible_cost() {
    let dir = temp_dir();
    let (engine, mut c, a) = setup_with(test_config(dir.path())).await;
    let q = c.exec_v5(&a, "CREATE TABLE t(id INTEGER PRIMARY KEY, v); CREATE TABLE log(x); CREATE TRIGGER tr AFTER INSERT ON t BEGIN INSERT INTO log VALUES (new.v); END", None).await;
    assert!(matches!(q.result, SqliteExecResult::QueryResult(_)), "{q:?}");
    assert_eq!(q.request_key, None);
    // Three rows inserted, each with a trigger row: six rows written, changes 3.
    let (x, cost, key) = ok5(c.execute_v5(&a, "INSERT INTO t(v) VALUES (1), (2), (3)", vec![], true, None).await);
    assert_eq!(key, None);
    assert_eq!(x.changes, 3);
    assert_eq!(cost.rows_written, 6);
    // A plain insert: rows written = changes.
    let (x, cost, _) = ok5(c.execute_v5(&a, "INSERT INTO log VALUES (?)", vec![Value::Integer(9)], true, None).await);
    assert_eq!(cost.rows_written, x.changes);
    // A full-scan read on a reader: rows read ≥ rows returned, nothing written.
    let (x, cost, _) = ok5(c.execute_v5(&a, "SELECT v FROM t WHERE v >= 2", vec![], false, None).await);
    assert_eq!(x.route, SqliteRoute::Read);
    assert_eq!(x.rows.len(), 2);
    assert_eq!(cost.rows_read, 3, "a full scan of three rows: {cost:?}");
    assert_eq!(cost.rows_written, 0);
    // A failure still carries a cost.
    let r = c.execute_v5(&a, "SELECT * FROM missing", vec![], false, None).await;
    assert!(matches!(r.result, SqliteExecuteResult::SqliteError(_)));
    assert_eq!(r.cost.rows_written, 0);
    // Refused at admission (fence): a cost too.
    let stale = GetOrCreateActorOk { generation: a.generation + 7, ..a.clone() };
    let r = c.execute_v5(&stale, "SELECT 1", vec![], false, None).await;
    assert!(matches!(r.result, SqliteExecuteResult::SqliteFenceMismatch(_)));
    engine.shutdown().await;
}

#[tokio::test]
async fn a_keyed_write_is_replayed_after_an_engine_restart_and_ran_once() {
    let dir = temp_dir();
    let (engine, mut c, a) = setup_with(test_config(dir.path())).await;
    c.exec_v5(&a, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)", None).await;
    let key = request_key(1);
    let sql = "INSERT INTO t(v) VALUES (?) RETURNING id, v";
    let p = vec![Value::Text("once".into())];
    let (first, cost, outcome) = ok5(c.execute_v5(&a, sql, p.clone(), true, Some(key.clone())).await);
    assert_eq!(outcome, Some(RequestKeyOutcome::Executed));
    assert_eq!((first.changes, cost.rows_written), (1, 1));
    // Same connection: replayed, nothing ran.
    let (again, cost, outcome) = ok5(c.execute_v5(&a, sql, p.clone(), true, Some(key.clone())).await);
    assert_eq!(outcome, Some(RequestKeyOutcome::Replayed));
    assert_eq!(
        (again.rows.clone(), again.changes, again.last_insert_row_id),
        (first.rows.clone(), 1, first.last_insert_row_id)
    );
    assert_eq!(cost.rows_written, 0);
    drop(c);
    engine.shutdown().await;

    // A new engine on the same data dir: the key survived in the actor's file.
    let engine = start_with(test_config(dir.path())).await;
    let mut c = RawClient::connect(engine.local_addr(), ConnectOpts::v5("ns", "e")).await;
    let a = c.get_or_create("db", "1").await;
    let (replayed, _, outcome) = ok5(c.execute_v5(&a, sql, p.clone(), true, Some(key.clone())).await);
    assert_eq!(outcome, Some(RequestKeyOutcome::Replayed));
    assert_eq!(replayed.rows, first.rows);
    assert_eq!(count(&mut c, &a, "t").await, 1);
    // Other SQL or parameters under the same key: a conflict, nothing ran.
    let (e, outcome) = err5(c.execute_v5(&a, sql, vec![Value::Text("other".into())], true, Some(key.clone())).await);
    assert_eq!(e.code, SqliteErrorCode::RequestKeyConflict);
    assert_eq!(outcome, Some(RequestKeyOutcome::Executed));
    let (e, _) = err5(c.execute_v5(&a, "DELETE FROM t", vec![], true, Some(key.clone())).await);
    assert_eq!(e.code, SqliteErrorCode::RequestKeyConflict);
    // Via ExecV5 too (another kind): a conflict.
    let r = c.exec_v5(&a, "DELETE FROM t", Some(key.clone())).await;
    assert!(
        matches!(r.result, SqliteExecResult::SqliteError(ref e) if e.code == SqliteErrorCode::RequestKeyConflict),
        "{r:?}"
    );
    assert_eq!(count(&mut c, &a, "t").await, 1);
    engine.shutdown().await;
}

#[tokio::test]
async fn keys_that_are_malformed_expired_evicted_or_read_only() {
    let dir = temp_dir();
    let mut config = test_config(dir.path());
    config.request_keys_per_actor = 2;
    config.request_key_retention = Duration::from_secs(3600);
    let (engine, mut c, a) = setup_with(config).await;
    c.exec_v5(&a, "CREATE TABLE t(v)", None).await;
    let ins = "INSERT INTO t VALUES (?)";
    // Not 16 bytes; too far in the future: INVALID_REQUEST.
    let (e, outcome) = err5(c.execute_v5(&a, ins, vec![Value::Integer(0)], true, Some(vec![1; 15])).await);
    assert_eq!((e.code, outcome), (SqliteErrorCode::InvalidRequest, Some(RequestKeyOutcome::Executed)));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let future = request_key_at(now + 3 * 3_600_000, 1);
    let (e, _) = err5(c.execute_v5(&a, ins, vec![Value::Integer(0)], true, Some(future)).await);
    assert_eq!(e.code, SqliteErrorCode::InvalidRequest);
    // Older than the retention: EXPIRED and nothing ran.
    let old = request_key_at(now - 2 * 3_600_000, 2);
    let (e, _) = err5(c.execute_v5(&a, ins, vec![Value::Integer(0)], true, Some(old)).await);
    assert_eq!(e.code, SqliteErrorCode::RequestKeyExpired);
    assert_eq!(count(&mut c, &a, "t").await, 0);
    // A keyed read-only Execute is not recorded: the same key then runs a write.
    let k = request_key_at(now - 10, 3);
    let (x, _, outcome) = ok5(c.execute_v5(&a, "SELECT count(*) FROM t", vec![], false, Some(k.clone())).await);
    assert_eq!((x.rows[0][0].clone(), outcome), (Value::Integer(0), Some(RequestKeyOutcome::Executed)));
    // ...and stays on a reader: keying every Execute (as clients do) costs reads nothing.
    assert_eq!(x.route, envoy_protocol::SqliteRoute::Read, "a keyed read runs on a reader");
    let (x, _, outcome) = ok5(c.execute_v5(&a, "SELECT count(*) FROM t", vec![], false, Some(k.clone())).await);
    assert_eq!((x.changes, outcome), (0, Some(RequestKeyOutcome::Executed)), "a read is not recorded");
    // A failed write is not recorded either: its retry runs.
    let (e, _) = err5(c.execute_v5(&a, "INSERT INTO nope VALUES (1)", vec![], true, Some(k.clone())).await);
    assert_eq!(e.committed, Some(false));
    // Count eviction: three keys recorded with room for two; the oldest answers EXPIRED.
    let keys: Vec<_> = (0..3).map(|i| request_key_at(now - 1000 + i, 10 + i)).collect();
    for (i, k) in keys.iter().enumerate() {
        let (_, _, outcome) = ok5(c.execute_v5(&a, ins, vec![Value::Integer(i as i64)], true, Some(k.clone())).await);
        assert_eq!(outcome, Some(RequestKeyOutcome::Executed));
    }
    let (e, _) = err5(c.execute_v5(&a, ins, vec![Value::Integer(0)], true, Some(keys[0].clone())).await);
    assert_eq!(e.code, SqliteErrorCode::RequestKeyExpired, "evicted keys are never run twice");
    // An unseen key not newer than the newest evicted one: EXPIRED too.
    let (e, _) = err5(c.execute_v5(&a, ins, vec![Value::Integer(0)], true, Some(request_key_at(now - 1000, 99))).await);
    assert_eq!(e.code, SqliteErrorCode::RequestKeyExpired);
    let (_, _, outcome) = ok5(c.execute_v5(&a, ins, vec![Value::Integer(2)], true, Some(keys[2].clone())).await);
    assert_eq!(outcome, Some(RequestKeyOutcome::Replayed));
    assert_eq!(count(&mut c, &a, "t").await, 3);
    // A keyed transaction-control statement is refused (it cannot be recorded atomically).
    let (e, _) = err5(c.execute_v5(&a, "BEGIN", vec![], true, Some(request_key(50))).await);
    assert_eq!(e.code, SqliteErrorCode::InvalidRequest);
    engine.shutdown().await;
}

#[tokio::test]
async fn a_large_result_is_replayed_without_rows() {
    let dir = temp_dir();
    let mut config = test_config(dir.path());
    config.max_recorded_result_bytes = 64;
    let (engine, mut c, a) = setup_with(config).await;
    c.exec_v5(&a, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)", None).await;
    let k = request_key(7);
    let sql = "INSERT INTO t(v) VALUES (?) RETURNING v";
    let big = vec![Value::Text("x".repeat(200))];
    let (x, _, _) = ok5(c.execute_v5(&a, sql, big.clone(), true, Some(k.clone())).await);
    assert_eq!(x.rows.len(), 1);
    let (again, _, outcome) = ok5(c.execute_v5(&a, sql, big, true, Some(k)).await);
    assert_eq!(outcome, Some(RequestKeyOutcome::ReplayedWithoutRows));
    assert!(again.rows.is_empty());
    assert_eq!((again.changes, again.last_insert_row_id), (1, x.last_insert_row_id));
    engine.shutdown().await;
}

#[tokio::test]
async fn a_duplicate_key_runs_once_pipelined_and_across_two_connections() {
    let dir = temp_dir();
    let (engine, mut c, a) = setup_with(test_config(dir.path())).await;
    c.exec_v5(&a, "CREATE TABLE t(v)", None).await;
    // Pipelined duplicates on one connection (they share writer batches and groups).
    let k = request_key(3);
    let sql = "INSERT INTO t VALUES (1)";
    let mut rids = Vec::new();
    for _ in 0..8 {
        rids.push(c.send_execute_v5(&a, sql, vec![], true, Some(k.clone())).await);
    }
    let mut outcomes = Vec::new();
    for rid in rids {
        let (_, _, o) = ok5(c.execute_v5_answer(rid).await);
        outcomes.push(o.unwrap());
    }
    assert_eq!(outcomes.iter().filter(|o| **o == RequestKeyOutcome::Executed).count(), 1, "{outcomes:?}");
    assert_eq!(outcomes.iter().filter(|o| **o == RequestKeyOutcome::Replayed).count(), 7);
    // Two connections at once: the first sends duplicates of a new key and, without
    // waiting, a reconnect of the same envoy (which evicts it; its accepted work still
    // runs) sends the same key. Exactly one of them inserts.
    let k2 = request_key(4);
    let sql2 = "INSERT INTO t VALUES (2)";
    for _ in 0..8 {
        c.send_execute_v5(&a, sql2, vec![], true, Some(k2.clone())).await;
    }
    let mut c2 = RawClient::connect(engine.local_addr(), ConnectOpts::v5("ns", "e")).await;
    let (_, _, o) = ok5(c2.execute_v5(&a, sql2, vec![], true, Some(k2.clone())).await);
    assert!(matches!(o, Some(RequestKeyOutcome::Executed | RequestKeyOutcome::Replayed)), "{o:?}");
    // Whatever ran on the evicted connection has run by the time its socket is closed.
    c.until_closed().await;
    let (_, _, o) = ok5(c2.execute_v5(&a, sql2, vec![], true, Some(k2)).await);
    assert_eq!(o, Some(RequestKeyOutcome::Replayed));
    let (x, _, _) =
        ok5(c2.execute_v5(&a, "SELECT v, count(*) FROM t GROUP BY v ORDER BY v", vec![], false, None).await);
    assert_eq!(x.rows, vec![vec![Value::Integer(1), Value::Integer(1)], vec![Value::Integer(2), Value::Integer(1)]]);
    engine.shutdown().await;
}

#[tokio::test]
async fn actor_sql_cannot_reach_the_key_tables() {
    let dir = temp_dir();
    let (engine, mut c, a) = setup_with(test_config(dir.path())).await;
    c.exec_v5(&a, "CREATE TABLE t(v)", None).await;
    let key = request_key(1);
    let (_, _, o) = ok5(c.execute_v5(&a, "INSERT INTO t VALUES (1)", vec![], true, Some(key.clone())).await);
    assert_eq!(o, Some(RequestKeyOutcome::Executed));
    let kt = "sqlite_envoy_request_keys";
    let st = "sqlite_envoy_request_key_state";
    // The visible trace: their rows in sqlite_schema.
    let (x, _, _) = ok5(c
        .execute_v5(
            &a,
            "SELECT name FROM sqlite_schema WHERE name LIKE 'sqlite_envoy%' ORDER BY name",
            vec![],
            false,
            None,
        )
        .await);
    assert_eq!(x.rows, vec![vec![Value::Text(st.into())], vec![Value::Text(kt.into())]]);
    let attempts = [
        format!("SELECT * FROM {kt}"),
        format!("SELECT count(*) FROM {kt}"),
        format!("SELECT * FROM {st}"),
        format!("SELECT * FROM main.{kt}"),
        "SELECT * FROM \"SQLITE_ENVOY_REQUEST_KEYS\"".to_string(),
        format!("INSERT INTO {kt} VALUES (1, x'00', x'00', x'00', 0)"),
        format!("UPDATE {st} SET watermark_ms = 0"),
        format!("DELETE FROM {kt}"),
        format!("DROP TABLE {kt}"),
        format!("ALTER TABLE {kt} RENAME TO mine"),
        format!("ALTER TABLE {kt} ADD COLUMN z"),
        format!("CREATE TABLE {kt}2(a)"),
        format!("CREATE INDEX i ON {kt}(digest)"),
        format!("CREATE TRIGGER tk AFTER INSERT ON {kt} BEGIN SELECT 1; END"),
        format!("PRAGMA table_info({kt})"),
        format!("PRAGMA index_list({kt})"),
        format!("SELECT * FROM pragma_table_info('{kt}')"),
        "ALTER TABLE t RENAME TO sqlite_envoy_mine".to_string(),
    ];
    for (i, sql) in attempts.iter().enumerate() {
        let r = c.execute_v5(&a, sql, vec![], true, None).await;
        match r.result {
            // Reads and writes of its rows are the sandbox's refusals.
            SqliteExecuteResult::SqliteError(e) if i < 8 => {
                assert_eq!(e.code, SqliteErrorCode::Forbidden, "{sql}: {e:?}")
            }
            SqliteExecuteResult::SqliteError(_) => {}
            other => panic!("{sql}: {other:?}"),
        }
    }
    // Views and triggers over them: creating may pass, using them is refused.
    let _ = c.execute_v5(&a, &format!("CREATE VIEW v AS SELECT * FROM {kt}"), vec![], true, None).await;
    let r = c.execute_v5(&a, "SELECT * FROM v", vec![], false, None).await;
    assert!(matches!(r.result, SqliteExecuteResult::SqliteError(_)), "{r:?}");
    let _ = c
        .execute_v5(
            &a,
            &format!("CREATE TRIGGER steal AFTER INSERT ON t BEGIN DELETE FROM {kt}; END"),
            vec![],
            true,
            None,
        )
        .await;
    let r = c.execute_v5(&a, "INSERT INTO t VALUES (2)", vec![], true, None).await;
    assert!(matches!(r.result, SqliteExecuteResult::SqliteError(_)), "{r:?}");
    let _ = c.exec_v5(&a, "DROP TRIGGER IF EXISTS steal; DROP VIEW IF EXISTS v", None).await;
    // Through Exec too.
    let r = c.exec_v5(&a, &format!("SELECT 1; DELETE FROM {kt}"), None).await;
    assert!(matches!(r.result, SqliteExecResult::SqliteError(_)), "{r:?}");
    // The key still replays: nothing above touched it.
    let (_, _, o) = ok5(c.execute_v5(&a, "INSERT INTO t VALUES (1)", vec![], true, Some(key)).await);
    assert_eq!(o, Some(RequestKeyOutcome::Replayed));
    assert_eq!(count(&mut c, &a, "t").await, 1);
    engine.shutdown().await;
}

#[tokio::test]
async fn keys_travel_with_backups_and_restores() {
    use envoy_engine::cli::http_exchange;
    let dir = temp_dir();
    let (engine, mut c, a) = setup_with(test_config(dir.path())).await;
    let url = format!("http://{}", engine.local_addr());
    c.exec_v5(&a, "CREATE TABLE t(v)", None).await;
    let (k1, k2) = (request_key(1), request_key(2));
    let (_, _, o) = ok5(c.execute_v5(&a, "INSERT INTO t VALUES (1)", vec![], true, Some(k1.clone())).await);
    assert_eq!(o, Some(RequestKeyOutcome::Executed));
    let (status, backup) =
        http_exchange(&url, "GET", &format!("/actors/{}/backup", a.actor_id), None, None).await.unwrap();
    assert_eq!(status, 200);
    // Recorded after the backup: not in it.
    let (_, _, o) = ok5(c.execute_v5(&a, "INSERT INTO t VALUES (2)", vec![], true, Some(k2.clone())).await);
    assert_eq!(o, Some(RequestKeyOutcome::Executed));
    let (status, body) = http_exchange(
        &url,
        "POST",
        &format!("/actors/{}/restore", a.actor_id),
        None,
        Some(("application/vnd.sqlite3", &backup)),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let b = c.get_or_create("db", "1").await;
    assert!(b.generation > a.generation);
    // The restored file holds the first key (replayed) and not the second (its write is not there either).
    let (_, _, o) = ok5(c.execute_v5(&b, "INSERT INTO t VALUES (1)", vec![], true, Some(k1)).await);
    assert_eq!(o, Some(RequestKeyOutcome::Replayed));
    let (_, _, o) = ok5(c.execute_v5(&b, "INSERT INTO t VALUES (2)", vec![], true, Some(k2)).await);
    assert_eq!(o, Some(RequestKeyOutcome::Executed));
    let (x, _, _) = ok5(c.execute_v5(&b, "SELECT v FROM t ORDER BY v", vec![], false, None).await);
    assert_eq!(x.rows, vec![vec![Value::Integer(1)], vec![Value::Integer(2)]]);
    engine.shutdown().await;
}

#[tokio::test]
async fn a_group_rolled_back_by_sqlite_reruns_keyed_members_and_records_them_once() {
    let dir = temp_dir();
    let (engine, mut c, a) = setup_with(test_config(dir.path())).await;
    c.exec_v5(&a, "CREATE TABLE t(id INTEGER PRIMARY KEY, v)", None).await;
    c.execute_v5(&a, "INSERT INTO t VALUES (1, 'taken')", vec![], true, None).await;
    // Pipelined: keyed members, then an `OR ROLLBACK` conflict that makes SQLite
    // roll back the whole group transaction; members before it run again alone.
    let keys: Vec<_> = (0..4).map(|i| request_key(100 + i)).collect();
    let mut rids = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        rids.push(
            c.send_execute_v5(&a, "INSERT INTO t(v) VALUES (?)", vec![Value::Integer(i as i64)], true, Some(k.clone()))
                .await,
        );
    }
    let boom = c.send_execute_v5(&a, "INSERT OR ROLLBACK INTO t VALUES (1, 'again')", vec![], true, None).await;
    for rid in rids {
        let (x, _, o) = ok5(c.execute_v5_answer(rid).await);
        assert_eq!((x.changes, o), (1, Some(RequestKeyOutcome::Executed)));
    }
    let (e, _) = err5(c.execute_v5_answer(boom).await);
    assert_eq!(e.code, SqliteErrorCode::Sqlite);
    for (i, k) in keys.iter().enumerate() {
        let (_, _, o) = ok5(c
            .execute_v5(&a, "INSERT INTO t(v) VALUES (?)", vec![Value::Integer(i as i64)], true, Some(k.clone()))
            .await);
        assert_eq!(o, Some(RequestKeyOutcome::Replayed));
    }
    assert_eq!(count(&mut c, &a, "t").await, 5);
    engine.shutdown().await;
}
