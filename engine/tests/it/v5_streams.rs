//! v5 result streams (§9.6) over the raw wire: complete and in order, within
//! credit, one snapshot, lease, cancel, limits, refusals, stops and closes.

use crate::support::*;
use envoy_protocol::*;
use std::path::Path;
use std::time::Duration;

/// Decoded size of a row, as the engine counts it against credit.
fn row_size(row: &[Value]) -> usize {
    std::mem::size_of::<Vec<Value>>()
        + row
            .iter()
            .map(|v| {
                std::mem::size_of::<Value>()
                    + match v {
                        Value::Text(s) => s.len(),
                        Value::Blob(b) => b.len(),
                        Value::Null | Value::Integer(_) | Value::Float(_) => 0,
                    }
            })
            .sum::<usize>()
}

/// An engine whose answers are small (16 KiB) and whose streams read at most 8 KiB ahead.
fn small_config(dir: &Path) -> envoy_engine::Config {
    let mut c = test_config(dir);
    c.limits.max_response_bytes = 16 * 1024;
    c.stream_window_bytes = 8 * 1024;
    c
}

async fn open(c: &mut RawClient, a: &GetOrCreateActorOk, sql: &str, credit: u32, lease_ms: u32) -> u32 {
    let request = SqliteStreamRequest {
        actor_id: a.actor_id.clone(),
        generation: a.generation,
        statement: stmt(sql),
        credit_bytes: credit,
        lease_ms,
    };
    c.send_with_rid(|request_id| ToEngine::SqliteStreamOpen(ToEngineSqliteStreamOpen { request_id, request })).await
}

async fn credit(c: &mut RawClient, rid: u32, n: u32) {
    c.send(&ToEngine::SqliteStreamCredit(ToEngineSqliteStreamCredit { request_id: rid, credit_bytes: n })).await;
}

async fn cancel(c: &mut RawClient, rid: u32) {
    c.send(&ToEngine::SqliteStreamCancel(ToEngineSqliteStreamCancel { request_id: rid })).await;
}

async fn chunk(c: &mut RawClient, rid: u32) -> ToEnvoySqliteStreamChunk {
    match c.stream_message(rid).await {
        ToEnvoy::SqliteStreamChunk(ch) => ch,
        other => panic!("expected a chunk of stream {rid}, got {other:?}"),
    }
}

async fn failure(c: &mut RawClient, rid: u32) -> (u32, SqliteError) {
    match c.stream_message(rid).await {
        ToEnvoy::SqliteStreamFailed(f) => match f.failure {
            SqliteFailure::SqliteError(e) => (f.sequence, e),
            SqliteFailure::SqliteFenceMismatch(m) => panic!("fence mismatch {m:?}"),
        },
        other => panic!("expected stream {rid} to fail, got {other:?}"),
    }
}

/// A v5 client with actor `name` holding table `t(id, s, b)` of `n` rows of ~`text` bytes of text each.
async fn setup(
    engine: &envoy_engine::RunningEngine,
    name: &str,
    n: i64,
    text: usize,
) -> (RawClient, GetOrCreateActorOk) {
    let mut c = RawClient::connect(engine.local_addr(), ConnectOpts::v5("ns", "e")).await;
    let a = c.get_or_create(name, "").await;
    let sql = format!(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, s TEXT, b BLOB);
         WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < {n})
         INSERT INTO t SELECT i, printf('%0{text}d', i * 7919), CASE WHEN i % 3 = 0 THEN NULL ELSE randomblob(i % 50) END FROM k;"
    );
    exec_ok(c.exec(&a, &sql).await);
    (c, a)
}

/// The same query run by a local SQLite connection on the actor's file.
fn local_rows(dir: &Path, a: &GetOrCreateActorOk, sql: &str) -> Vec<Vec<Value>> {
    let conn = rusqlite::Connection::open_with_flags(
        dir.join("actors").join(&a.actor_id).join("db.sqlite"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut stmt = conn.prepare(sql).unwrap();
    let n = stmt.column_count();
    let rows = stmt
        .query_map([], |r| {
            Ok((0..n)
                .map(|i| match r.get_ref(i).unwrap() {
                    rusqlite::types::ValueRef::Null => Value::Null,
                    rusqlite::types::ValueRef::Integer(i) => Value::Integer(i),
                    rusqlite::types::ValueRef::Real(f) => Value::Float(f),
                    rusqlite::types::ValueRef::Text(t) => Value::Text(String::from_utf8(t.to_vec()).unwrap()),
                    rusqlite::types::ValueRef::Blob(b) => Value::Blob(b.to_vec()),
                })
                .collect())
        })
        .unwrap();
    rows.map(Result::unwrap).collect()
}

#[tokio::test]
async fn a_result_far_larger_than_a_response_arrives_complete_in_order_and_within_credit() {
    let dir = temp_dir();
    let engine = start_with(small_config(dir.path())).await;
    let (mut c, a) = setup(&engine, "big", 3000, 120).await;
    let sql = "SELECT id, s, b FROM t ORDER BY id";
    let expected = local_rows(dir.path(), &a, sql);
    let total: usize = expected.iter().map(|r| row_size(r)).sum();
    let largest = expected.iter().map(|r| row_size(r)).max().unwrap();
    assert!(total > 20 * 16 * 1024, "the result ({total} bytes) is many times max_response_bytes");

    // Credit in uneven steps, granted only once the previous grant is used up:
    // between grants the engine may overrun by at most one row.
    let steps = [1u32, 700, 5000, 333, 20_000, 64 * 1024];
    let mut granted: usize = 3000;
    let rid = open(&mut c, &a, sql, granted as u32, 60_000).await;
    let (mut received, mut rows, mut sequence, mut grants) = (0usize, Vec::new(), 0u32, 0usize);
    let done = loop {
        let mut ch = chunk(&mut c, rid).await;
        assert_eq!(ch.sequence, sequence, "sequences grow by one");
        assert_eq!(ch.columns.is_some(), sequence == 0, "columns come with the first chunk only");
        if sequence == 0 {
            assert_eq!(ch.columns.as_deref(), Some(&["id".to_string(), "s".into(), "b".into()][..]));
        }
        sequence += 1;
        let bytes: usize = ch.rows.iter().map(|r| row_size(r)).sum();
        assert!(16 + bytes <= 16 * 1024, "a chunk stays within max_response_bytes ({bytes})");
        received += bytes;
        assert!(received <= granted + largest, "sent {received} bytes against {granted} of credit");
        rows.extend(std::mem::take(&mut ch.rows));
        if ch.done {
            break ch;
        }
        assert!(ch.cost.is_none(), "only the last chunk carries the cost");
        // The engine sends while the credit left (granted - received) is positive.
        while received >= granted {
            let step = steps[grants % steps.len()];
            grants += 1;
            granted += step as usize;
            credit(&mut c, rid, step).await;
        }
    };
    assert!(grants > 10, "the stream needed many grants ({grants})");
    assert_eq!(rows.len(), expected.len());
    assert!(rows == expected, "the streamed rows equal a local query's, in order");
    let cost = done.cost.expect("the done chunk carries the whole stream's cost");
    assert!(cost.rows_read >= expected.len() as u64, "{cost:?}");
    assert_eq!(cost.rows_written, 0);
    eventually(|| engine.streams_open() == 0).await;
    eventually(|| engine.inflight(&a.actor_id, a.generation) == 0).await;
    let metrics = engine.metrics_text().unwrap();
    assert!(metrics.contains(&format!("envoy_stream_chunks_total {sequence}")), "{metrics}");
    assert!(metrics.contains(&format!("envoy_stream_row_bytes_total {received}")), "{metrics}");
    assert!(metrics.contains("envoy_stream_ends_total{end=\"done\"} 1"), "{metrics}");
    // An empty result is one done chunk with the columns and no rows, even without credit.
    let rid = open(&mut c, &a, "SELECT id FROM t WHERE id < 0", 0, 1000).await;
    let ch = chunk(&mut c, rid).await;
    assert_eq!((ch.sequence, ch.done, ch.rows.len()), (0, true, 0));
    assert_eq!(ch.columns, Some(vec!["id".to_string()]));
    engine.shutdown().await;
}

#[tokio::test]
async fn a_stream_reads_one_snapshot_while_other_requests_are_served() {
    let dir = temp_dir();
    let engine = start_with(small_config(dir.path())).await;
    let (mut c, a) = setup(&engine, "snap", 2000, 40).await;
    // One row of credit: the stream sends a chunk and waits, holding its snapshot.
    let rid = open(&mut c, &a, "SELECT id FROM t ORDER BY id", 1, 60_000).await;
    let first = chunk(&mut c, rid).await;
    assert_eq!(first.rows.len(), 1);
    eventually(|| engine.streams_open() == 1).await;
    // The same actor and connection keep being served: writes and reads.
    for i in 0..20 {
        ok(c.execute_write(&a, "INSERT INTO t (id, s) VALUES (?, 'late')", vec![Value::Integer(10_000 + i)]).await);
        let n = ok(c.execute(&a, "SELECT count(*) FROM t", vec![]).await).rows;
        assert_eq!(n, vec![vec![Value::Integer(2001 + i)]]);
    }
    // The stream still answers from its snapshot: none of the late rows.
    credit(&mut c, rid, u32::MAX).await;
    let mut ids = first.rows;
    loop {
        let ch = chunk(&mut c, rid).await;
        ids.extend(ch.rows);
        if ch.done {
            break;
        }
    }
    assert_eq!(ids.len(), 2000, "rows inserted during the stream are not seen");
    assert!(ids.iter().all(|r| matches!(r[0], Value::Integer(i) if i <= 2000)));
    engine.shutdown().await;
}

#[tokio::test]
async fn a_stream_without_credit_expires_after_its_lease() {
    let dir = temp_dir();
    let mut cfg = small_config(dir.path());
    cfg.min_stream_lease = Duration::from_millis(200);
    let engine = start_with(cfg).await;
    let (mut c, a) = setup(&engine, "lease", 500, 40).await;
    // Asks for 1 ms: clamped up to the 200 ms minimum.
    let rid = open(&mut c, &a, "SELECT * FROM t", 1, 1).await;
    assert_eq!(chunk(&mut c, rid).await.sequence, 0);
    let (sequence, e) = failure(&mut c, rid).await;
    assert_eq!((sequence, e.code), (1, SqliteErrorCode::StreamExpired), "{e:?}");
    // Its snapshot and thread are freed; credit for it now is ignored.
    eventually(|| engine.streams_open() == 0).await;
    credit(&mut c, rid, 1000).await;
    ok(c.execute(&a, "SELECT 1", vec![]).await);
    assert_eq!(c.stream_messages_of(rid), 0, "nothing follows a stream's last message");
    engine.shutdown().await;
}

#[tokio::test]
async fn cancel_answers_with_the_last_message_and_is_ignored_after_it() {
    let dir = temp_dir();
    let engine = start_with(small_config(dir.path())).await;
    let (mut c, a) = setup(&engine, "cancel", 500, 40).await;
    let rid = open(&mut c, &a, "SELECT * FROM t", 1, 60_000).await;
    assert_eq!(chunk(&mut c, rid).await.sequence, 0);
    cancel(&mut c, rid).await;
    let (sequence, e) = failure(&mut c, rid).await;
    assert_eq!((sequence, e.code, e.committed), (1, SqliteErrorCode::Cancelled, Some(false)), "{e:?}");
    // A stream that finished: cancel and credit are ignored.
    let done = open(&mut c, &a, "SELECT id FROM t WHERE id = 1", 1000, 60_000).await;
    assert!(chunk(&mut c, done).await.done);
    cancel(&mut c, done).await;
    credit(&mut c, done, 10).await;
    cancel(&mut c, 999_999).await;
    ok(c.execute(&a, "SELECT 1", vec![]).await);
    assert_eq!(c.stream_messages_of(rid) + c.stream_messages_of(done), 0);
    // The id is free again once the last message arrived.
    let again = open(&mut c, &a, "SELECT 1", 100, 60_000).await;
    assert!(chunk(&mut c, again).await.done);
    let metrics = engine.metrics_text().unwrap();
    assert!(metrics.contains("envoy_stream_ends_total{end=\"cancelled\"} 1"), "{metrics}");
    engine.shutdown().await;
}

#[tokio::test]
async fn open_streams_are_capped_per_connection() {
    let dir = temp_dir();
    let mut cfg = small_config(dir.path());
    cfg.max_open_streams = 2;
    let engine = start_with(cfg).await;
    let (mut c, a) = setup(&engine, "cap", 500, 40).await;
    let first = open(&mut c, &a, "SELECT * FROM t", 1, 60_000).await;
    let second = open(&mut c, &a, "SELECT * FROM t", 1, 60_000).await;
    let third = open(&mut c, &a, "SELECT * FROM t", 1, 60_000).await;
    let (sequence, e) = failure(&mut c, third).await;
    assert_eq!((sequence, e.code), (0, SqliteErrorCode::LimitExceeded), "{e:?}");
    let limit = e.limit.expect("the limit is named");
    assert_eq!((limit.kind, limit.max), (LimitKind::OpenStreams, 2));
    // Another connection has its own cap.
    let mut other = RawClient::connect(engine.local_addr(), ConnectOpts::v5("ns", "e2")).await;
    let b = other.get_or_create("cap-other", "").await;
    let s = open(&mut other, &b, "SELECT 1", 100, 60_000).await;
    assert!(chunk(&mut other, s).await.done);
    // Once one ends, there is room again.
    assert_eq!(chunk(&mut c, first).await.sequence, 0);
    cancel(&mut c, first).await;
    assert_eq!(failure(&mut c, first).await.1.code, SqliteErrorCode::Cancelled);
    let fourth = open(&mut c, &a, "SELECT 1", 100, 60_000).await;
    assert!(chunk(&mut c, fourth).await.done);
    assert_eq!(chunk(&mut c, second).await.sequence, 0);
    engine.shutdown().await;
}

#[tokio::test]
async fn statements_that_write_or_are_not_one_are_refused() {
    let dir = temp_dir();
    let engine = start_with(small_config(dir.path())).await;
    let (mut c, a) = setup(&engine, "refuse", 10, 10).await;
    for sql in [
        "INSERT INTO t (id) VALUES (100)",
        "DELETE FROM t",
        "WITH x AS (SELECT 1) INSERT INTO t (id) SELECT 200 FROM x",
    ] {
        let rid = open(&mut c, &a, sql, 1000, 60_000).await;
        let (sequence, e) = failure(&mut c, rid).await;
        assert_eq!((sequence, e.code, e.extended_code), (0, SqliteErrorCode::Sqlite, Some(8)), "{sql}: {e:?}");
    }
    for sql in ["BEGIN", "COMMIT"] {
        let rid = open(&mut c, &a, sql, 1000, 60_000).await;
        assert_eq!(failure(&mut c, rid).await.1.extended_code, Some(8), "{sql}");
    }
    let rid = open(&mut c, &a, "SELECT 1; SELECT 2", 1000, 60_000).await;
    assert_eq!(failure(&mut c, rid).await.1.code, SqliteErrorCode::InvalidRequest);
    let rid = open(&mut c, &a, "SELECT * FROM nowhere", 1000, 60_000).await;
    assert_eq!(failure(&mut c, rid).await.1.code, SqliteErrorCode::Sqlite);
    // A stale generation is a fence mismatch with sequence 0.
    let request = SqliteStreamRequest {
        actor_id: a.actor_id.clone(),
        generation: a.generation + 1,
        statement: stmt("SELECT 1"),
        credit_bytes: 100,
        lease_ms: 1000,
    };
    let rid = c
        .send_with_rid(|request_id| ToEngine::SqliteStreamOpen(ToEngineSqliteStreamOpen { request_id, request }))
        .await;
    match c.stream_message(rid).await {
        ToEnvoy::SqliteStreamFailed(f) => {
            assert_eq!(f.sequence, 0);
            assert!(matches!(f.failure, SqliteFailure::SqliteFenceMismatch(m) if m.current_generation == a.generation));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(ok(c.execute(&a, "SELECT count(*) FROM t", vec![]).await).rows, vec![vec![Value::Integer(10)]]);
    engine.shutdown().await;
}

#[tokio::test]
async fn a_closed_connection_frees_its_streams_and_the_actor_stops_promptly() {
    let dir = temp_dir();
    let engine = start_with(small_config(dir.path())).await;
    let (mut c, a) = setup(&engine, "drop", 2000, 40).await;
    for _ in 0..3 {
        let rid = open(&mut c, &a, "SELECT * FROM t", 1, 600_000).await;
        assert_eq!(chunk(&mut c, rid).await.sequence, 0);
    }
    assert_eq!(engine.streams_open(), 3);
    drop(c);
    eventually(|| engine.streams_open() == 0).await;
    eventually(|| engine.inflight(&a.actor_id, a.generation) == 0).await;
    let report = engine.stop_actor(&a.actor_id).await.unwrap();
    assert!(report.drained_in_time, "{report:?}");
    assert_eq!((report.interrupted, report.turned_away), (0, 0), "{report:?}");
    let metrics = engine.metrics_text().unwrap();
    assert!(metrics.contains("envoy_stream_ends_total{end=\"closed\"} 3"), "{metrics}");
    engine.shutdown().await;
}

#[tokio::test]
async fn an_actor_stop_interrupts_its_streams_without_waiting_for_credit() {
    let dir = temp_dir();
    // A long threshold: the drain must not need it.
    let mut cfg = small_config(dir.path());
    cfg.actor_stop_threshold = Duration::from_secs(600);
    let engine = start_with(cfg).await;
    let (mut c, a) = setup(&engine, "stop", 2000, 40).await;
    let waiting = open(&mut c, &a, "SELECT * FROM t", 1, 600_000).await;
    assert_eq!(chunk(&mut c, waiting).await.sequence, 0);
    let report = engine.stop_actor(&a.actor_id).await.unwrap();
    assert!(report.drained_in_time, "{report:?}");
    let (sequence, e) = failure(&mut c, waiting).await;
    assert_eq!((sequence, e.code), (1, SqliteErrorCode::Interrupted), "{e:?}");
    assert_eq!(engine.streams_open(), 0);
    // A stream of the stopped generation is refused at admission.
    let late = open(&mut c, &a, "SELECT 1", 100, 1000).await;
    let (sequence, e) = failure(&mut c, late).await;
    assert_eq!(sequence, 0);
    assert!(matches!(e.code, SqliteErrorCode::ActorNotPlaced | SqliteErrorCode::ActorStopping), "{e:?}");
    engine.shutdown().await;
}

#[tokio::test]
async fn engine_shutdown_ends_open_streams() {
    let dir = temp_dir();
    let mut cfg = small_config(dir.path());
    cfg.actor_stop_threshold = Duration::from_secs(600);
    let engine = start_with(cfg).await;
    let (mut c, a) = setup(&engine, "shutdown", 2000, 40).await;
    let rid = open(&mut c, &a, "SELECT * FROM t", 1, 600_000).await;
    assert_eq!(chunk(&mut c, rid).await.sequence, 0);
    let stopping = tokio::spawn(engine.shutdown());
    let (sequence, e) = failure(&mut c, rid).await;
    assert_eq!((sequence, e.code), (1, SqliteErrorCode::Interrupted), "{e:?}");
    stopping.await.unwrap();
}

#[tokio::test]
async fn a_client_that_grants_credit_but_does_not_read_holds_the_stream_at_its_outbox_budget() {
    let dir = temp_dir();
    let mut cfg = small_config(dir.path());
    cfg.max_connection_outbox_bytes = 64 * 1024;
    cfg.max_result_memory_bytes = 256 * 1024;
    let engine = start_with(cfg).await;
    // ~40 MB of rows: far more than the socket buffers and the outbox budget hold.
    let (mut c, a) = setup(&engine, "unread", 20_000, 2000).await;
    let sql = "SELECT id, s FROM t ORDER BY id";
    let rid = open(&mut c, &a, sql, u32::MAX, 60_000).await;
    // Not reading: the outbox fills and the connection's reading pauses.
    eventually(|| engine.reads_paused() == 1).await;
    let mut ids = 0i64;
    loop {
        let ch = chunk(&mut c, rid).await;
        for r in &ch.rows {
            ids += 1;
            assert_eq!(r[0], Value::Integer(ids), "in order");
        }
        if ch.done {
            break;
        }
    }
    assert_eq!(ids, 20_000);
    assert!(engine.result_bytes_peak() <= 256 * 1024, "the engine's result budget held");
    eventually(|| engine.result_bytes_held() == 0).await;
    engine.shutdown().await;
}

#[tokio::test]
async fn the_engine_opens_no_more_streams_than_its_result_memory_holds_windows() {
    let dir = temp_dir();
    let mut cfg = small_config(dir.path());
    cfg.stream_window_bytes = 64 * 1024;
    cfg.max_connection_outbox_bytes = 160 * 1024;
    cfg.max_result_memory_bytes = 160 * 1024;
    let engine = start_with(cfg).await;
    let (mut c, a) = setup(&engine, "global", 500, 40).await;
    let mut open_ids = Vec::new();
    for _ in 0..2 {
        let rid = open(&mut c, &a, "SELECT * FROM t", 1, 60_000).await;
        assert_eq!(chunk(&mut c, rid).await.sequence, 0);
        open_ids.push(rid);
    }
    // The result memory holds two windows: a third stream is OVERLOADED (not the per-connection cap).
    let third = open(&mut c, &a, "SELECT * FROM t", 1, 60_000).await;
    let (sequence, e) = failure(&mut c, third).await;
    assert_eq!((sequence, e.code), (0, SqliteErrorCode::Overloaded), "{e:?}");
    cancel(&mut c, open_ids[0]).await;
    assert_eq!(failure(&mut c, open_ids[0]).await.1.code, SqliteErrorCode::Cancelled);
    let again = open(&mut c, &a, "SELECT 1", 100, 60_000).await;
    assert!(chunk(&mut c, again).await.done);
    engine.shutdown().await;
}

#[tokio::test]
async fn read_ahead_waiting_for_credit_does_not_pause_its_connection() {
    let dir = temp_dir();
    let mut cfg = small_config(dir.path());
    // One window fills the connection's outbox budget: read-ahead must not count there.
    cfg.stream_window_bytes = 64 * 1024;
    cfg.max_connection_outbox_bytes = 64 * 1024;
    cfg.max_result_memory_bytes = 16 * 1024 * 1024;
    let engine = start_with(cfg).await;
    let (mut c, a) = setup(&engine, "ahead", 3000, 100).await;
    let mut waiting = Vec::new();
    for _ in 0..3 {
        let rid = open(&mut c, &a, "SELECT * FROM t ORDER BY id", 1, 60_000).await;
        assert_eq!(chunk(&mut c, rid).await.sequence, 0);
        waiting.push(rid);
    }
    // Each holds a full window of rows read ahead; the connection is still read and served.
    eventually(|| engine.result_bytes_held() >= 3 * 64 * 1024).await;
    assert_eq!(engine.reads_paused(), 0);
    assert_eq!(ok(c.execute(&a, "SELECT count(*) FROM t", vec![]).await).rows, vec![vec![Value::Integer(3000)]]);
    // And their credit arrives: every stream completes.
    for rid in waiting {
        credit(&mut c, rid, u32::MAX).await;
        let mut rows = 1;
        loop {
            let ch = chunk(&mut c, rid).await;
            rows += ch.rows.len();
            if ch.done {
                break;
            }
        }
        assert_eq!(rows, 3000);
    }
    engine.shutdown().await;
}

#[tokio::test]
async fn cancel_stop_and_the_deadline_end_a_statement_in_a_long_step() {
    let dir = temp_dir();
    let mut cfg = small_config(dir.path());
    cfg.limits.max_statement_ms = 600_000;
    cfg.actor_stop_threshold = Duration::from_secs(600);
    let engine = start_with(cfg).await;
    let (mut c, a) = setup(&engine, "long", 10, 10).await;
    // A statement that never yields a row: only an interrupt ends it.
    let rid = open(&mut c, &a, ENDLESS_SQL, 1_000_000, 600_000).await;
    eventually(|| engine.streams_open() == 1).await;
    cancel(&mut c, rid).await;
    let (sequence, e) = failure(&mut c, rid).await;
    assert_eq!((sequence, e.code), (0, SqliteErrorCode::Cancelled), "{e:?}");
    // The actor's readers are healthy afterwards.
    assert_eq!(ok(c.execute(&a, "SELECT count(*) FROM t", vec![]).await).rows, vec![vec![Value::Integer(10)]]);
    let rid = open(&mut c, &a, "SELECT id FROM t", 1_000_000, 600_000).await;
    assert!(chunk(&mut c, rid).await.done);
    // A stop interrupts it too, without waiting for the (long) threshold.
    let rid = open(&mut c, &a, ENDLESS_SQL, 1_000_000, 600_000).await;
    eventually(|| engine.streams_open() == 1).await;
    let report = engine.stop_actor(&a.actor_id).await.unwrap();
    assert!(report.drained_in_time, "{report:?}");
    let (sequence, e) = failure(&mut c, rid).await;
    assert_eq!((sequence, e.code), (0, SqliteErrorCode::Interrupted), "{e:?}");
    engine.shutdown().await;

    // The statement deadline bounds the work to produce one row.
    let dir = temp_dir();
    let mut cfg = small_config(dir.path());
    cfg.limits.max_statement_ms = 200;
    let engine = start_with(cfg).await;
    let (mut c, a) = setup(&engine, "deadline", 10, 10).await;
    let rid = open(&mut c, &a, ENDLESS_SQL, 1_000_000, 600_000).await;
    let (sequence, e) = failure(&mut c, rid).await;
    assert_eq!((sequence, e.code), (0, SqliteErrorCode::Timeout), "{e:?}");
    engine.shutdown().await;
}
