//! The engine's machinery must not show through: result shapes after schema
//! changes, connection state across requests, text that is not UTF-8. (The
//! broad differential comparison against local SQLite is tests/tests/fidelity.rs.)

use crate::support::*;
use envoy_protocol::*;

async fn setup() -> (tempfile::TempDir, envoy_engine::RunningEngine, RawClient, GetOrCreateActorOk) {
    let dir = temp_dir();
    let engine = start(dir.path()).await;
    let mut c = RawClient::connect(engine.local_addr(), ConnectOpts::new("ns", "e")).await;
    let a = c.get_or_create("db", "1").await;
    (dir, engine, c, a)
}

fn shape(r: ExecuteResult) -> (Vec<String>, Vec<Vec<Value>>) {
    (r.columns, r.rows)
}

fn cols(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn result_shape_follows_schema_changes() {
    let (_d, engine, mut c, a) = setup().await;
    exec_ok(c.exec(&a, "CREATE TABLE t(a); INSERT INTO t VALUES(1)").await);
    for _ in 0..3 {
        assert_eq!(
            shape(ok(c.execute(&a, "SELECT * FROM t", vec![]).await)),
            (cols(&["a"]), vec![vec![Value::Integer(1)]])
        );
    }
    ok(c.execute(&a, "ALTER TABLE t ADD COLUMN b DEFAULT 2", vec![]).await);
    for _ in 0..3 {
        // Readers and cached statements alike see the new shape.
        assert_eq!(
            shape(ok(c.execute(&a, "SELECT * FROM t", vec![]).await)),
            (cols(&["a", "b"]), vec![vec![Value::Integer(1), Value::Integer(2)]])
        );
        assert_eq!(ok(c.execute_write(&a, "SELECT * FROM t", vec![]).await).columns, cols(&["a", "b"]));
    }
    exec_ok(c.exec(&a, "DROP TABLE t; CREATE TABLE t(c); INSERT INTO t VALUES ('x')").await);
    assert_eq!(
        shape(ok(c.execute(&a, "SELECT * FROM t", vec![]).await)),
        (cols(&["c"]), vec![vec![Value::Text("x".into())]])
    );
    ok(c.execute(&a, "ALTER TABLE t RENAME COLUMN c TO d", vec![]).await);
    assert_eq!(ok(c.execute(&a, "SELECT * FROM t", vec![]).await).columns, cols(&["d"]));
    // Inside one transaction on the writer, and with no rows at all.
    let q = exec_ok(c.exec(&a, "BEGIN; SELECT * FROM t; ALTER TABLE t ADD COLUMN e; SELECT * FROM t WHERE 0; COMMIT; SELECT * FROM t WHERE 0").await);
    assert_eq!(q.columns, cols(&["d", "e"]));
    assert_eq!(ok(c.execute(&a, "SELECT * FROM t WHERE 0", vec![]).await).columns, cols(&["d", "e"]));
    engine.shutdown().await;
}

#[tokio::test]
async fn connection_state_is_the_writers() {
    let (_d, engine, mut c, a) = setup().await;
    exec_ok(c.exec(&a, "CREATE TABLE t(k INTEGER PRIMARY KEY, s TEXT); INSERT INTO t(s) VALUES ('a'); INSERT INTO t(s) VALUES ('b')").await);
    let r = ok(c.execute(&a, "SELECT last_insert_rowid(), changes(), total_changes()", vec![]).await);
    assert_eq!(r.rows, vec![vec![Value::Integer(2), Value::Integer(1), Value::Integer(2)]]);
    // TEMP objects live on the writer's connection; later reads see them.
    exec_ok(
        c.exec(
            &a,
            "CREATE TEMP TABLE tt(x); INSERT INTO tt VALUES (1); CREATE TEMP VIEW tv AS SELECT x + 1 AS y FROM tt",
        )
        .await,
    );
    assert_eq!(ok(c.execute(&a, "SELECT * FROM tt", vec![]).await).rows, vec![vec![Value::Integer(1)]]);
    assert_eq!(ok(c.execute(&a, "SELECT y FROM tv", vec![]).await).rows, vec![vec![Value::Integer(2)]]);
    // A connection PRAGMA is seen by the next LIKE.
    let like = "SELECT count(*) FROM t WHERE s LIKE 'A'";
    assert_eq!(ok(c.execute(&a, like, vec![]).await).rows, vec![vec![Value::Integer(1)]]);
    ok(c.execute(&a, "PRAGMA case_sensitive_like = 1", vec![]).await);
    assert_eq!(ok(c.execute(&a, like, vec![]).await).rows, vec![vec![Value::Integer(0)]]);
    engine.shutdown().await;
}

#[tokio::test]
async fn text_that_is_not_utf8_is_never_changed_silently() {
    let (_d, engine, mut c, a) = setup().await;
    let e = sql_err(c.execute(&a, "SELECT CAST(x'ff41' AS TEXT) AS bad", vec![]).await);
    assert_eq!((e.code, e.extended_code), (SqliteErrorCode::Sqlite, Some(20)), "{e:?}");
    assert!(e.message.contains("\"bad\"") && e.message.contains("BLOB"), "{e:?}");
    // Read as a BLOB, the bytes come back exactly.
    let r = ok(c.execute(&a, "SELECT CAST(CAST(x'ff41' AS TEXT) AS BLOB)", vec![]).await);
    assert_eq!(r.rows, vec![vec![Value::Blob(vec![0xff, 0x41])]]);
    engine.shutdown().await;
}
