//! Hostile SQL: each finding of the security review as a test through the wire.
//! Every refusal is a typed answer, the engine stays up, and a second tenant's
//! SQL keeps succeeding throughout.

use crate::support::*;
use envoy_protocol::*;
use std::time::{Duration, Instant};

async fn setup_with(cfg: envoy_engine::Config) -> (envoy_engine::RunningEngine, RawClient, GetOrCreateActorOk) {
    let engine = start_with(cfg).await;
    let mut c = RawClient::connect(engine.local_addr(), ConnectOpts::new("attacker", "e")).await;
    let a = c.get_or_create("db", "1").await;
    (engine, c, a)
}

fn forbidden(r: SqliteExecuteResult, what: &str) -> SqliteError {
    let e = sql_err(r);
    assert_eq!(e.code, SqliteErrorCode::Forbidden, "{what}: {e:?}");
    assert_eq!(e.committed, Some(false), "{what}");
    e
}

/// A second tenant on its own connection and namespace, with its own data.
struct Bystander {
    c: RawClient,
    a: GetOrCreateActorOk,
    latencies: Vec<Duration>,
}

impl Bystander {
    async fn join(engine: &envoy_engine::RunningEngine) -> Bystander {
        let mut c = RawClient::connect(engine.local_addr(), ConnectOpts::new("victim", "v")).await;
        let a = c.get_or_create("db", "1").await;
        exec_ok(c.exec(&a, "CREATE TABLE secrets(s TEXT); INSERT INTO secrets VALUES ('hunter2')").await);
        Bystander { c, a, latencies: Vec::new() }
    }

    /// Its SQL still succeeds and still sees exactly its own row.
    async fn check(&mut self) {
        let t = Instant::now();
        let r = ok(self.c.execute(&self.a, "SELECT s FROM secrets", vec![]).await);
        self.latencies.push(t.elapsed());
        assert_eq!(r.rows, vec![vec![Value::Text("hunter2".into())]]);
    }

    fn report(&mut self, what: &str) {
        self.latencies.sort();
        let n = self.latencies.len();
        if n > 0 {
            println!(
                "second tenant during {what}: {n} queries, p50 {:?}, max {:?}",
                self.latencies[n / 2],
                self.latencies[n - 1]
            );
        }
    }
}

/// Finding 1: ATTACH in every form, whatever its argument, and nothing that names files.
#[tokio::test]
async fn attach_in_any_form_is_forbidden() {
    let dir = temp_dir();
    let (engine, mut c, a) = setup_with(test_config(dir.path())).await;
    let mut other = Bystander::join(&engine).await;
    let data = dir.path().display().to_string();
    let target = dir.path().join("escaped.sqlite");
    let target_s = target.display().to_string();
    let concat = format!("ATTACH '{data}/' || 'engine.sqlite' AS m");
    let literal = format!("ATTACH DATABASE '{target_s}' AS m");
    let uri = format!("ATTACH 'file:{target_s}?mode=rwc' AS m");
    for sql in
        [concat.as_str(), literal.as_str(), uri.as_str(), "ATTACH '' AS m", "ATTACH ':memory:' AS m", "DETACH main"]
    {
        forbidden(c.execute_write(&a, sql, vec![]).await, sql);
        forbidden(c.execute(&a, sql, vec![]).await, sql);
    }
    // The path bound as a parameter: SQLite's authorizer sees no file name at all.
    for p in [target_s.clone(), format!("{data}/engine.sqlite")] {
        let e = forbidden(c.execute_write(&a, "ATTACH ?1 AS m", vec![Value::Text(p.clone())]).await, "ATTACH ?1");
        assert!(e.message.contains("ATTACH"), "{e:?}");
        forbidden(c.execute_write(&a, "ATTACH ? || '' AS m", vec![Value::Text(p)]).await, "ATTACH ? || ''");
    }
    forbidden(c.execute_write(&a, "VACUUM INTO ?1", vec![Value::Text(target_s.clone())]).await, "VACUUM INTO ?1");
    match c.exec(&a, &format!("SELECT 1; {concat}; SELECT 2")).await {
        SqliteExecResult::SqliteError(e) => {
            assert_eq!((e.code, e.statement_index), (SqliteErrorCode::Forbidden, Some(1)), "{e:?}")
        }
        other => panic!("{other:?}"),
    }
    // Nothing that tells where files live.
    for sql in ["PRAGMA database_list", "SELECT * FROM pragma_database_list", "SELECT file FROM pragma_database_list"] {
        forbidden(c.execute(&a, sql, vec![]).await, sql);
    }
    assert!(!target.exists(), "ATTACH created a file");
    // Plain VACUUM is the actor's own business and still works, in Execute and in Exec.
    exec_ok(c.exec(&a, "CREATE TABLE t(x); INSERT INTO t VALUES (1); VACUUM; SELECT 1").await);
    ok(c.execute_write(&a, "VACUUM", vec![]).await);
    // ...and after it the door is shut again.
    forbidden(c.execute_write(&a, "ATTACH '' AS m", vec![]).await, "ATTACH after VACUUM");
    other.check().await;
    other.report("ATTACH attempts");
    engine.shutdown().await;
}

/// Finding 2: fts3_tokenizer with bound arguments (pointer leak, then a crash).
#[tokio::test]
async fn fts3_tokenizer_is_forbidden_even_with_bound_arguments() {
    let dir = temp_dir();
    let (engine, mut c, a) = setup_with(test_config(dir.path())).await;
    let mut other = Bystander::join(&engine).await;
    forbidden(c.execute(&a, "SELECT fts3_tokenizer(?1)", vec![Value::Text("simple".into())]).await, "leak");
    forbidden(c.execute(&a, "SELECT fts3_tokenizer('simple')", vec![]).await, "leak literal");
    forbidden(
        c.execute_write(
            &a,
            "SELECT fts3_tokenizer(?1, ?2)",
            vec![Value::Text("evil".into()), Value::Blob(vec![0x41; 8])],
        )
        .await,
        "register",
    );
    // The crash the registration led to: the tokenizer does not exist, so this is a plain error.
    let e = sql_err(c.execute_write(&a, "CREATE VIRTUAL TABLE f USING fts3(tokenize=evil)", vec![]).await);
    assert_eq!(e.code, SqliteErrorCode::Sqlite, "{e:?}");
    // FTS3/4/5 with built-in tokenizers are fine.
    exec_ok(
        c.exec(
            &a,
            "CREATE VIRTUAL TABLE g USING fts4(body, tokenize=porter); INSERT INTO g VALUES ('running crawlers');
             CREATE VIRTUAL TABLE h USING fts5(body, tokenize='porter unicode61'); INSERT INTO h VALUES ('running');",
        )
        .await,
    );
    let r = ok(c.execute(&a, "SELECT count(*) FROM g WHERE g MATCH 'run'", vec![]).await);
    assert_eq!(r.rows, vec![vec![Value::Integer(1)]]);
    other.check().await;
    other.report("fts3_tokenizer attempts");
    engine.shutdown().await;
}

/// Finding 3: process-wide PRAGMAs are the engine's alone.
#[tokio::test]
async fn process_wide_pragmas_are_forbidden() {
    let dir = temp_dir();
    let (engine, mut c, a) = setup_with(test_config(dir.path())).await;
    let mut other = Bystander::join(&engine).await;
    let before = envoy_engine::sql::sandbox::heap_limits();
    assert!(before.1 > 0, "the engine sets a hard heap limit itself: {before:?}");
    for sql in [
        "PRAGMA hard_heap_limit = 65536",
        "PRAGMA soft_heap_limit = 65536",
        "PRAGMA threads = 8",
        "PRAGMA shrink_memory",
        "PRAGMA hard_heap_limit",
        "SELECT * FROM pragma_hard_heap_limit",
    ] {
        forbidden(c.execute_write(&a, sql, vec![]).await, sql);
    }
    assert_eq!(envoy_engine::sql::sandbox::heap_limits(), before);
    // The engine's storage contract and the schema guard.
    for sql in [
        "PRAGMA journal_mode = DELETE",
        "PRAGMA synchronous = OFF",
        "PRAGMA locking_mode = EXCLUSIVE",
        "PRAGMA mmap_size = 1000000000",
        "PRAGMA cache_size = -10000000",
        "PRAGMA wal_checkpoint(TRUNCATE)",
        "PRAGMA busy_timeout = 0",
        "PRAGMA query_only = 1",
        "PRAGMA writable_schema = ON",
        "PRAGMA trusted_schema = ON",
        "PRAGMA temp_store_directory = '/tmp'",
        "PRAGMA encoding = 'UTF-16'",
    ] {
        forbidden(c.execute_write(&a, sql, vec![]).await, sql);
    }
    // Reading the engine's settings is fine, and so are the actor's own knobs.
    let r = ok(c.execute(&a, "PRAGMA journal_mode", vec![]).await);
    assert_eq!(r.rows, vec![vec![Value::Text("wal".into())]]);
    ok(c.execute_write(&a, "PRAGMA user_version = 7", vec![]).await);
    assert_eq!(ok(c.execute(&a, "PRAGMA user_version", vec![]).await).rows, vec![vec![Value::Integer(7)]]);
    for _ in 0..5 {
        other.check().await;
    }
    other.report("PRAGMA attempts");
    engine.shutdown().await;
}

/// Finding 5 (the SQLite part): one request cannot make SQLite build a huge value.
#[tokio::test]
async fn huge_values_are_refused_before_they_are_built() {
    let dir = temp_dir();
    let (engine, mut c, a) = setup_with(test_config(dir.path())).await;
    let mut other = Bystander::join(&engine).await;
    for sql in [
        "SELECT randomblob(400000000)",
        "SELECT length(randomblob(400000000))",
        "SELECT printf('%.*c', 900000000, 'x')",
        "SELECT length(printf('%.*c', 900000000, 'x'))",
        "SELECT zeroblob(400000000) || x'00'",
        "SELECT length(replace(hex(zeroblob(5000000)), '0', '00'))",
    ] {
        let e = sql_err(c.execute(&a, sql, vec![]).await);
        assert_eq!(e.code, SqliteErrorCode::LimitExceeded, "{sql}: {e:?}");
        assert_eq!(e.limit.as_ref().map(|l| l.kind), Some(LimitKind::ValueBytes), "{sql}");
        other.check().await;
    }
    other.report("huge-value attempts");
    engine.shutdown().await;
}

/// Finding 9: NUL bytes, text after the one statement, the schema guard, prepare under the deadline.
#[tokio::test]
async fn smaller_findings() {
    let dir = temp_dir();
    let mut cfg = test_config(dir.path());
    cfg.limits.max_statement_ms = 300;
    let (engine, mut c, a) = setup_with(cfg).await;
    exec_ok(c.exec(&a, "CREATE TABLE t(x); INSERT INTO t VALUES (1)").await);

    // A NUL byte is refused, not silently cut (the DROP after it would have been ignored).
    let e = sql_err(c.execute_write(&a, "SELECT 1\0; DROP TABLE t", vec![]).await);
    assert_eq!(e.code, SqliteErrorCode::InvalidRequest, "{e:?}");
    assert!(e.message.contains("NUL"), "{e:?}");
    match c.exec(&a, "DROP TABLE t;\0").await {
        SqliteExecResult::SqliteError(e) => assert_eq!(e.code, SqliteErrorCode::InvalidRequest),
        other => panic!("{other:?}"),
    }
    assert_eq!(ok(c.execute(&a, "SELECT count(*) FROM t", vec![]).await).rows, vec![vec![Value::Integer(1)]]);

    // Text after the one statement of Execute is refused without being prepared.
    for sql in ["SELECT 1; SELECT * FROM q", "SELECT 1; DROP TABLE t", "INSERT INTO t VALUES (2); garbage"] {
        let e = sql_err(c.execute_write(&a, sql, vec![]).await);
        assert_eq!(e.code, SqliteErrorCode::InvalidRequest, "{sql}: {e:?}");
    }
    assert_eq!(ok(c.execute(&a, "SELECT count(*) FROM t", vec![]).await).rows, vec![vec![Value::Integer(1)]]);
    // Empty statements are skipped as SQLite skips them.
    assert_eq!(ok(c.execute(&a, ";SELECT 1;;", vec![]).await).rows, vec![vec![Value::Integer(1)]]);

    // The schema cannot be edited by hand.
    forbidden(c.execute_write(&a, "PRAGMA writable_schema = ON", vec![]).await, "writable_schema");
    let e = sql_err(
        c.execute_write(&a, "UPDATE sqlite_master SET sql = 'CREATE TABLE t(y)' WHERE name = 't'", vec![]).await,
    );
    assert_ne!(e.code, SqliteErrorCode::Internal, "{e:?}");
    let e = sql_err(c.execute_write(&a, "DELETE FROM sqlite_schema", vec![]).await);
    assert_ne!(e.code, SqliteErrorCode::Internal, "{e:?}");
    assert_eq!(ok(c.execute(&a, "PRAGMA integrity_check", vec![]).await).rows, vec![vec![Value::Text("ok".into())]]);

    // The deadline covers prepare: a view tree that takes seconds to expand is stopped.
    let mut ddl = String::from("CREATE VIEW v0 AS SELECT x FROM t;");
    for n in 1..=14 {
        ddl.push_str(&format!("CREATE VIEW v{n} AS SELECT x FROM v{p} UNION ALL SELECT x FROM v{p};", p = n - 1));
    }
    exec_ok(c.exec(&a, &ddl).await);
    let t = Instant::now();
    let e = sql_err(c.execute(&a, "SELECT count(*) FROM v14", vec![]).await);
    println!("expanding a 2^14 view tree was stopped after {:?}", t.elapsed());
    assert_eq!(e.code, SqliteErrorCode::Timeout, "{e:?}");
    assert_eq!(ok(c.execute(&a, "SELECT 1", vec![]).await).rows, vec![vec![Value::Integer(1)]]);
    engine.shutdown().await;
}

/// Finding 8 (messages): no SQLite error carries a path on the engine's disk.
#[tokio::test]
async fn errors_never_carry_paths() {
    let dir = temp_dir();
    let (engine, mut c, a) = setup_with(test_config(dir.path())).await;
    let data = std::fs::canonicalize(dir.path()).unwrap().display().to_string();
    let raw = dir.path().display().to_string();
    let attach = format!("ATTACH '{raw}/actors' AS x");
    let vacuum = format!("VACUUM INTO '{raw}/x.db'");
    let mut messages = Vec::new();
    for sql in [attach.as_str(), vacuum.as_str(), "SELECT * FROM nope", "PRAGMA database_list", "SELEC"] {
        messages.push(sql_err(c.execute_write(&a, sql, vec![]).await).message);
    }
    for m in &messages {
        assert!(!m.contains(&data) && !m.contains(&raw) && !m.contains("/actors/"), "a path leaked: {m}");
    }
    engine.shutdown().await;
}
