//! Group commit: writes of one actor waiting together commit in one transaction,
//! each in its own savepoint. A failing member affects no other; answers equal
//! those of running the same requests one by one; requests that manage
//! transactions run alone; KV requests group too.

use crate::support::*;
use envoy_protocol::*;

async fn setup() -> (tempfile::TempDir, envoy_engine::RunningEngine, RawClient) {
    let dir = temp_dir();
    let engine = start(dir.path()).await;
    let c = RawClient::connect(engine.local_addr(), ConnectOpts::new("ns", "e")).await;
    (dir, engine, c)
}

const SCHEMA: &str = "CREATE TABLE t(k INTEGER PRIMARY KEY, v TEXT NOT NULL, n INTEGER DEFAULT 0);
     CREATE TABLE parent(id INTEGER PRIMARY KEY);
     CREATE TABLE child(id INTEGER PRIMARY KEY, p INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED);
     INSERT INTO parent VALUES (1);";

/// One request of the workload.
#[derive(Clone)]
enum Req {
    Write(&'static str, Vec<Value>),
    Exec(&'static str),
}

fn workload() -> Vec<Req> {
    let mut w = Vec::new();
    for i in 0..40i64 {
        w.push(Req::Write("INSERT INTO t(k, v) VALUES (?, ?)", vec![Value::Integer(i), Value::Text(format!("v{i}"))]));
        if i % 7 == 3 {
            // A duplicate key: fails, alone among its neighbours.
            w.push(Req::Write("INSERT INTO t(k, v) VALUES (?, 'dup')", vec![Value::Integer(i)]));
        }
        if i % 9 == 4 {
            // NOT NULL violation with OR ROLLBACK: SQLite rolls back the whole transaction.
            w.push(Req::Write("INSERT OR ROLLBACK INTO t(k, v) VALUES (?, NULL)", vec![Value::Integer(1000 + i)]));
        }
        if i % 11 == 5 {
            w.push(Req::Write("UPDATE t SET n = n + 1 WHERE k <= ? RETURNING k", vec![Value::Integer(i)]));
        }
        if i % 13 == 6 {
            // An Exec that fails at its second statement: the first is kept, as alone.
            w.push(Req::Exec("INSERT INTO t(k, v) VALUES (5000, 'exec'); INSERT INTO t(k, v) VALUES (5000, 'again')"));
        }
        if i == 20 {
            // A deferred foreign-key violation: it must fail at its own commit, not the group's.
            w.push(Req::Write("INSERT INTO child VALUES (1, 99)", vec![]));
            w.push(Req::Write("INSERT INTO child VALUES (2, 1)", vec![]));
            // Transaction control runs alone, between groups.
            w.push(Req::Exec("BEGIN; INSERT INTO t(k, v) VALUES (7000, 'tx'); COMMIT"));
            w.push(Req::Write("INSERT INTO t(k, v) VALUES (7001, 'after')", vec![]));
        }
        if i % 10 == 9 {
            w.push(Req::Write("SELECT count(*), total(n) FROM t", vec![]));
        }
    }
    w
}

/// A comparable form of an answer.
fn shape(a: ToEnvoy) -> String {
    match a {
        ToEnvoy::SqliteExecuteResponse(r) => match r.result {
            SqliteExecuteResult::ExecuteResult(r) => {
                format!("ok rows={:?} changes={} rowid={:?}", r.rows, r.changes, r.last_insert_row_id)
            }
            SqliteExecuteResult::SqliteError(e) => {
                format!("err {:?} ext={:?} committed={:?}", e.code, e.extended_code, e.committed)
            }
            SqliteExecuteResult::SqliteFenceMismatch(f) => format!("fence {f:?}"),
        },
        ToEnvoy::SqliteExecResponse(r) => match r.result {
            SqliteExecResult::QueryResult(q) => format!("ok rows={:?}", q.rows),
            SqliteExecResult::SqliteError(e) => format!(
                "err {:?} ext={:?} committed={:?} index={:?}",
                e.code, e.extended_code, e.committed, e.statement_index
            ),
            SqliteExecResult::SqliteFenceMismatch(f) => format!("fence {f:?}"),
        },
        other => format!("{other:?}"),
    }
}

async fn send(c: &mut RawClient, a: &GetOrCreateActorOk, r: &Req) -> u32 {
    match r {
        Req::Write(sql, params) => c.send_execute(a, sql, params.clone(), true).await,
        Req::Exec(sql) => c.send_exec(&a.actor_id, a.generation, sql).await,
    }
}

async fn table(c: &mut RawClient, a: &GetOrCreateActorOk) -> Vec<Vec<Value>> {
    let mut rows = ok(c.execute(a, "SELECT k, v, n FROM t ORDER BY k", vec![]).await).rows;
    rows.extend(ok(c.execute(a, "SELECT id, p FROM child ORDER BY id", vec![]).await).rows);
    rows
}

#[tokio::test]
async fn grouped_answers_equal_one_by_one() {
    let (_d, engine, mut c) = setup().await;
    let grouped = c.get_or_create("db", "grouped").await;
    let alone = c.get_or_create("db", "alone").await;
    for a in [&grouped, &alone] {
        exec_ok(c.exec(a, SCHEMA).await);
    }
    let w = workload();
    // One by one: each request waits for the previous answer (groups of one).
    let mut one_by_one = Vec::new();
    for r in &w {
        let rid = send(&mut c, &alone, r).await;
        one_by_one.push(shape(c.answer(rid).await));
    }
    let before = engine.group_commits();
    // Pipelined: everything in flight at once, so the writer lane takes it in groups.
    let mut rids = Vec::new();
    for r in &w {
        rids.push(send(&mut c, &grouped, r).await);
    }
    let mut pipelined = Vec::new();
    for rid in rids {
        pipelined.push(shape(c.answer(rid).await));
    }
    let after = engine.group_commits();
    for (i, (p, o)) in pipelined.iter().zip(&one_by_one).enumerate() {
        assert_eq!(p, o, "request {i} answered differently in a group");
    }
    assert_eq!(table(&mut c, &grouped).await, table(&mut c, &alone).await);
    let (commits, members, largest, failed) = (after.0 - before.0, after.1 - before.1, after.2, after.3);
    println!(
        "{} requests pipelined: {commits} group commits carried {members} (largest {largest}), {failed} failed",
        w.len()
    );
    assert!(largest > 1, "pipelined writes were never grouped");
    assert!(commits < w.len() as u64, "no two writes shared a commit");
    // A row of each kind of outcome is where it should be.
    let r = ok(c.execute(&grouped, "SELECT v FROM t WHERE k IN (3, 5000, 7000, 7001) ORDER BY k", vec![]).await);
    let v: Vec<Vec<Value>> = ["v3", "exec", "tx", "after"].iter().map(|s| vec![Value::Text(s.to_string())]).collect();
    assert_eq!(r.rows, v);
    engine.shutdown().await;
}

/// A failing member fails alone: its neighbours in the same group are committed
/// and answered with their own changes and rowids.
#[tokio::test]
async fn a_failing_member_does_not_affect_the_others() {
    let (_d, engine, mut c) = setup().await;
    let a = c.get_or_create("db", "1").await;
    exec_ok(c.exec(&a, "CREATE TABLE t(k INTEGER PRIMARY KEY, v TEXT)").await);
    let mut rids = Vec::new();
    for i in 1..=64i64 {
        let k = if i % 8 == 0 { i - 1 } else { i }; // every 8th collides with its predecessor
        rids.push((i, c.send_execute(&a, "INSERT INTO t VALUES (?, 'x')", vec![Value::Integer(k)], true).await));
    }
    for (i, rid) in rids {
        let r = c.execute_result(rid).await;
        if i % 8 == 0 {
            let e = sql_err(r);
            assert_eq!((e.code, e.extended_code, e.committed), (SqliteErrorCode::Sqlite, Some(1555), Some(false)));
        } else {
            let r = ok(r);
            assert_eq!((r.changes, r.last_insert_row_id), (1, Some(i)), "request {i}");
        }
    }
    let n = ok(c.execute(&a, "SELECT count(*) FROM t", vec![]).await).rows;
    assert_eq!(n, vec![vec![Value::Integer(56)]]);
    assert!(engine.group_commits().2 > 1);
    engine.shutdown().await;
}

/// KV requests of one actor group as well, and a failing one fails alone.
#[tokio::test]
async fn kv_requests_group() {
    let (_d, engine, mut c) = setup().await;
    let a = c.get_or_create("db", "1").await;
    let mut rids = Vec::new();
    for i in 0..50u32 {
        let put = KvRequestData::KvPut(KvPut { key: format!("k{i:02}").into_bytes(), value: vec![i as u8] });
        rids.push(c.send_kv(&a.actor_id, a.generation, put).await);
    }
    for rid in rids {
        match c.answer(rid).await {
            ToEnvoy::KvResponse(r) => assert!(matches!(r.data, KvResponseData::KvPutResponse), "{r:?}"),
            other => panic!("{other:?}"),
        }
    }
    let list = c.kv(&a, KvRequestData::KvList(KvList { query: KvQuery::All, reverse: false, limit: None })).await;
    match list {
        KvResponseData::KvListResponse(l) => assert_eq!(l.entries.len(), 50),
        other => panic!("{other:?}"),
    }
    assert!(engine.group_commits().2 > 1, "KV puts were never grouped: {:?}", engine.group_commits());
    engine.shutdown().await;
}
