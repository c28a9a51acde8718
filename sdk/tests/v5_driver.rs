//! The v5 public API (keys, batches, transactions, streams, cost) through the
//! real driver, over an in-memory runtime whose "socket" leads to a scripted
//! v5 engine. End-to-end tests against the real engine live in
//! `tests/tests/v5_client.rs` once the engine speaks v5.

use envoy_client::core::ConnectFailure;
use envoy_client::protocol as p;
use envoy_client::runtime::{BoxFuture, FrameSender, Incoming, Runtime, Socket};
use envoy_client::{params, stmt, BatchMode, Client, ClientConfig, Error, TransactionMode};
use futures_channel::mpsc;
use futures_util::StreamExt;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Rows every stream serves.
const STREAM_ROWS: usize = 500;

/// The scripted engine's state, shared with the test for assertions.
#[derive(Default)]
struct Engine {
    /// Every message received, in order.
    messages: Vec<p::ToEngine>,
    /// Open transactions.
    open_tx: HashSet<u64>,
    next_tx: u64,
    /// Open streams: rows left, credit left, next sequence.
    streams: HashMap<u32, (VecDeque<Vec<p::Value>>, i64, u32)>,
    /// Row bytes sent and credit granted, over every stream.
    stream_sent: u64,
    stream_granted: u64,
    /// Cut the link (no answer, no close frame) when the next ExecuteV5 arrives.
    cut_on_next_execute: bool,
}

#[derive(Clone)]
struct Loopback {
    start: Instant,
    engine: Arc<Mutex<Engine>>,
}

struct ChannelSender(mpsc::UnboundedSender<Vec<u8>>);

impl FrameSender for ChannelSender {
    fn send(&mut self, frames: Vec<Vec<u8>>) {
        for f in frames {
            let _ = self.0.unbounded_send(f);
        }
    }
    fn close(&mut self, _code: u16, _reason: &str) {
        self.0.close_channel();
    }
}

impl Runtime for Loopback {
    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }
    fn seed(&self) -> u64 {
        5
    }
    fn sleep(&self, ms: u64) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(Duration::from_millis(ms)))
    }
    fn spawn(&self, fut: BoxFuture<'static, ()>) {
        tokio::spawn(fut);
    }
    fn connect(&self, _url: String, _protocols: Vec<String>) -> BoxFuture<'static, Result<Socket, ConnectFailure>> {
        let (to_engine, from_client) = mpsc::unbounded::<Vec<u8>>();
        let (to_client, from_engine) = mpsc::unbounded::<Incoming>();
        tokio::spawn(run_engine(from_client, to_client, self.engine.clone()));
        Box::pin(async move {
            Ok(Socket {
                protocol: Some("envoy.v5".into()),
                sender: Box::new(ChannelSender(to_engine)),
                incoming: Box::pin(from_engine),
            })
        })
    }
}

fn cost() -> p::SqlCost {
    p::SqlCost { rows_read: 3, rows_written: 1, duration_us: 42 }
}

fn ok_result(sql: &str) -> p::ExecuteResult {
    p::ExecuteResult {
        columns: vec!["sql".into()],
        rows: vec![vec![p::Value::Text(sql.into())]],
        changes: 1,
        last_insert_row_id: None,
        route: p::SqliteRoute::Write,
    }
}

fn key_outcome(key: &Option<Vec<u8>>) -> Option<p::RequestKeyOutcome> {
    key.as_ref().map(|_| p::RequestKeyOutcome::Executed)
}

/// A row's decoded size, as the engine counts it for credit.
fn row_bytes(row: &[p::Value]) -> u64 {
    std::mem::size_of::<Vec<p::Value>>() as u64
        + row
            .iter()
            .map(|v| {
                let heap = match v {
                    p::Value::Text(s) => s.len(),
                    p::Value::Blob(b) => b.len(),
                    p::Value::Null | p::Value::Integer(_) | p::Value::Float(_) => 0,
                };
                (std::mem::size_of::<p::Value>() + heap) as u64
            })
            .sum::<u64>()
}

/// Sends chunks of a stream while it has credit.
fn pump(engine: &mut Engine, id: u32, out: &mut Vec<p::ToEnvoy>) {
    loop {
        let Some((rows_left, credit, seq)) = engine.streams.get_mut(&id) else { return };
        if *credit <= 0 && !rows_left.is_empty() {
            return;
        }
        let mut rows = Vec::new();
        while rows.len() < 16 && *credit > 0 {
            let Some(r) = rows_left.pop_front() else { break };
            let b = row_bytes(&r);
            *credit -= b as i64;
            engine.stream_sent += b;
            rows.push(r);
        }
        let done = rows_left.is_empty();
        let sequence = *seq;
        *seq += 1;
        if done {
            engine.streams.remove(&id);
        }
        out.push(p::ToEnvoy::SqliteStreamChunk(p::ToEnvoySqliteStreamChunk {
            request_id: id,
            sequence,
            columns: (sequence == 0).then(|| vec!["n".into(), "pad".into()]),
            rows,
            done,
            cost: done.then(cost),
        }));
        if done {
            return;
        }
    }
}

/// What the engine does with a message: answer with `out`, or cut the link.
fn answer(engine: &mut Engine, msg: p::ToEngine, out: &mut Vec<p::ToEnvoy>) -> bool {
    if matches!(msg, p::ToEngine::SqliteExecuteV5(_)) && std::mem::take(&mut engine.cut_on_next_execute) {
        return false;
    }
    answer_one(engine, msg, out);
    true
}

fn answer_one(engine: &mut Engine, msg: p::ToEngine, out: &mut Vec<p::ToEnvoy>) {
    match msg {
        p::ToEngine::Metadata(_) => out.push(p::ToEnvoy::InitV5(p::ToEnvoyInitV5 {
            envoy_id: "e5".into(),
            last_event_index: None,
            metadata: p::ProtocolMetadata {
                ping_interval_ms: 1_000,
                envoy_lost_threshold_ms: 10_000,
                actor_stop_threshold_ms: 1_000,
                max_frame_bytes: p::DEFAULT_MAX_FRAME_BYTES,
                limits: None,
                sql_limits: None,
            },
            metadata_v5: p::ProtocolMetadataV5 {
                durability: p::Durability::Os,
                limits: p::EngineLimits {
                    max_connection_outbox_bytes: 1 << 25,
                    max_result_memory_bytes: 1 << 28,
                    max_actors_per_connection: 0,
                    max_open_actor_databases: 256,
                    group_commit_max_requests: 256,
                    group_commit_max_delay_us: 20_000,
                    request_key_retention_ms: 86_400_000,
                    max_recorded_result_bytes: 65_536,
                    min_transaction_lease_ms: 1_000,
                    max_transaction_lease_ms: 60_000,
                    max_transaction_wait_ms: 5_000,
                    max_open_transactions: 16,
                    max_batch_statements: 3,
                    stream_window_bytes: 1 << 20,
                    min_stream_lease_ms: 1_000,
                    max_stream_lease_ms: 60_000,
                    max_open_streams: 16,
                },
            },
        })),
        p::ToEngine::GetOrCreateActor(r) => {
            out.push(p::ToEnvoy::GetOrCreateActorResponse(p::ToEnvoyGetOrCreateActorResponse {
                request_id: r.request_id,
                result: p::GetOrCreateActorResult::GetOrCreateActorOk(p::GetOrCreateActorOk {
                    actor_id: format!("id-{}", r.name),
                    generation: 1,
                    created: true,
                }),
            }))
        }
        p::ToEngine::SqliteExecuteV5(r) => {
            out.push(p::ToEnvoy::SqliteExecuteResponseV5(p::ToEnvoySqliteExecuteResponseV5 {
                request_id: r.request_id,
                result: p::SqliteExecuteResult::ExecuteResult(ok_result(&r.request.statement.sql)),
                cost: cost(),
                request_key: key_outcome(&r.request.request_key),
            }))
        }
        p::ToEngine::SqliteBatch(r) => {
            let failing = r.request.statements.iter().position(|s| s.sql == "FAIL");
            let result = match failing {
                Some(i) => p::SqliteBatchResult::SqliteError(p::SqliteError {
                    code: p::SqliteErrorCode::Sqlite,
                    message: "no such table".into(),
                    extended_code: Some(1),
                    committed: Some(false),
                    statement_index: Some(i as u32),
                    limit: None,
                }),
                None => p::SqliteBatchResult::SqliteBatchOk(p::SqliteBatchOk {
                    results: r.request.statements.iter().map(|s| ok_result(&s.sql)).collect(),
                }),
            };
            out.push(p::ToEnvoy::SqliteBatchResponse(p::ToEnvoySqliteBatchResponse {
                request_id: r.request_id,
                result,
                cost: cost(),
                request_key: key_outcome(&r.request.request_key),
            }))
        }
        p::ToEngine::SqliteBegin(r) => {
            engine.next_tx += 1;
            engine.open_tx.insert(engine.next_tx);
            out.push(p::ToEnvoy::SqliteBeginResponse(p::ToEnvoySqliteBeginResponse {
                request_id: r.request_id,
                result: p::SqliteBeginResult::SqliteTransactionStarted(p::SqliteTransactionStarted {
                    transaction_id: engine.next_tx,
                    lease_ms: r.request.lease_ms,
                }),
                cost: cost(),
            }))
        }
        p::ToEngine::SqliteTransactionExecute(r) => {
            out.push(p::ToEnvoy::SqliteTransactionExecuteResponse(p::ToEnvoySqliteTransactionExecuteResponse {
                request_id: r.request_id,
                result: p::SqliteExecuteResult::ExecuteResult(ok_result(&r.request.statement.sql)),
                cost: cost(),
                transaction_end: None,
            }))
        }
        p::ToEngine::SqliteCommit(r) => {
            engine.open_tx.remove(&r.request.transaction_id);
            out.push(p::ToEnvoy::SqliteCommitResponse(p::ToEnvoySqliteCommitResponse {
                request_id: r.request_id,
                result: p::SqliteCommitResult::SqliteCommitted(p::SqliteCommitted { changes: 2 }),
                cost: cost(),
                request_key: key_outcome(&r.request.request_key),
            }))
        }
        p::ToEngine::SqliteRollback(r) => {
            engine.open_tx.remove(&r.request.transaction_id);
            out.push(p::ToEnvoy::SqliteRollbackResponse(p::ToEnvoySqliteRollbackResponse {
                request_id: r.request_id,
                result: p::SqliteRollbackResult::SqliteRolledBack,
                cost: cost(),
            }))
        }
        p::ToEngine::SqliteStreamOpen(r) => {
            let rows =
                (0..STREAM_ROWS).map(|i| vec![p::Value::Integer(i as i64), p::Value::Text("y".repeat(100))]).collect();
            engine.stream_granted += u64::from(r.request.credit_bytes);
            engine.streams.insert(r.request_id, (rows, i64::from(r.request.credit_bytes), 0));
            pump(engine, r.request_id, out);
        }
        p::ToEngine::SqliteStreamCredit(c) => {
            if let Some(s) = engine.streams.get_mut(&c.request_id) {
                s.1 += i64::from(c.credit_bytes);
                engine.stream_granted += u64::from(c.credit_bytes);
                pump(engine, c.request_id, out);
            }
        }
        p::ToEngine::SqliteStreamCancel(c) => {
            if let Some((_, _, sequence)) = engine.streams.remove(&c.request_id) {
                out.push(p::ToEnvoy::SqliteStreamFailed(p::ToEnvoySqliteStreamFailed {
                    request_id: c.request_id,
                    sequence,
                    failure: p::SqliteFailure::SqliteError(p::SqliteError {
                        code: p::SqliteErrorCode::Cancelled,
                        message: "cancelled".into(),
                        extended_code: None,
                        committed: None,
                        statement_index: None,
                        limit: None,
                    }),
                    cost: cost(),
                }))
            }
        }
        p::ToEngine::Events(_)
        | p::ToEngine::AckCommands(_)
        | p::ToEngine::Pong(_)
        | p::ToEngine::Stopping
        | p::ToEngine::KvRequest(_)
        | p::ToEngine::SqliteExecV5(_) => {}
        p::ToEngine::SqliteExec(_) | p::ToEngine::SqliteExecute(_) | p::ToEngine::SqliteExecuteWrite(_) => {
            panic!("a v4 SQL message on a v5 connection: {}", msg.member_name())
        }
    }
}

async fn run_engine(
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    tx: mpsc::UnboundedSender<Incoming>,
    engine: Arc<Mutex<Engine>>,
) {
    while let Some(bytes) = rx.next().await {
        let msg = p::decode_to_engine(&bytes, 5, &p::DecodeLimits::default()).unwrap();
        let mut out = Vec::new();
        let keep = {
            let mut e = engine.lock().unwrap();
            e.messages.push(msg.clone());
            answer(&mut e, msg, &mut out)
        };
        if !keep {
            let _ = tx.unbounded_send(Incoming::Closed { code: None, reason: "cut".into() });
            return;
        }
        for m in out {
            let _ = tx.unbounded_send(Incoming::Frame(p::encode_to_envoy(&m, 5).unwrap()));
        }
    }
}

async fn connect() -> (Client, Arc<Mutex<Engine>>) {
    let engine = Arc::new(Mutex::new(Engine::default()));
    let rt = Loopback { start: Instant::now(), engine: engine.clone() };
    let cfg = ClientConfig { envoy_key: "v5".into(), ..Default::default() };
    (Client::connect_with(cfg, rt).await.unwrap(), engine)
}

fn count(engine: &Arc<Mutex<Engine>>, f: impl Fn(&p::ToEngine) -> bool) -> usize {
    engine.lock().unwrap().messages.iter().filter(|m| f(m)).count()
}

/// Waits (bounded) until `f` holds: for effects of destructors, which the
/// driver applies asynchronously.
async fn eventually(f: impl Fn() -> bool) -> bool {
    for _ in 0..500 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    f()
}

#[tokio::test]
async fn session_execute_and_keys() {
    let (client, engine) = connect().await;
    let session = client.session().unwrap();
    assert_eq!(session.protocol_version, 5);
    assert_eq!(session.durability, Some(p::Durability::Os));
    assert_eq!(session.engine_limits.as_ref().unwrap().max_batch_statements, 3);
    let db = client.get_or_create_actor("a", "k").await.unwrap().sql();
    let out = db.execute_write("INSERT INTO t VALUES (?)", params![1]).await.unwrap();
    assert_eq!(out.cost, Some(cost()));
    assert_eq!(out.rows.cost(), Some(cost()));
    assert!(!out.replayed && !out.rows_omitted);
    db.execute("SELECT 1", ()).await.unwrap();
    let keys: Vec<Vec<u8>> = engine
        .lock()
        .unwrap()
        .messages
        .iter()
        .filter_map(|m| match m {
            p::ToEngine::SqliteExecuteV5(r) => r.request.request_key.clone(),
            _ => None,
        })
        .collect();
    assert_eq!(keys.len(), 2, "every Execute carries a key, a read-only one too");
    assert_ne!(keys[0], keys[1]);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    for k in &keys {
        assert_eq!(k.len(), 16);
        let mut t = [0u8; 8];
        t[2..].copy_from_slice(&k[..6]);
        let made = u64::from_be_bytes(t);
        assert!(now.abs_diff(made) < 60_000, "the key's first six bytes are the Unix time in ms ({made} vs {now})");
    }
    client.close().await;
}

#[tokio::test]
async fn batch_results_errors_and_limits() {
    let (client, engine) = connect().await;
    let db = client.get_or_create_actor("a", "k").await.unwrap().sql();
    let out =
        db.batch(BatchMode::Write, [stmt("INSERT INTO t VALUES (?)", params![1]), stmt("SELECT 2", ())]).await.unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(out[1].rows.first().unwrap().get::<String>(0).unwrap(), "SELECT 2");
    assert_eq!(out.cost, Some(cost()));
    assert!(out[0].cost.is_none(), "the cost is the batch's");
    let err = db.batch(BatchMode::Write, [stmt("INSERT 1", ()), stmt("FAIL", ())]).await.unwrap_err();
    assert_eq!(err.statement_index(), Some(1));
    assert!(matches!(err, Error::Sql { committed: Some(false), .. }));
    // maxBatchStatements = 3 from InitV5, checked before sending.
    let before = count(&engine, |m| matches!(m, p::ToEngine::SqliteBatch(_)));
    let err = db.batch(BatchMode::Deferred, (0..4).map(|i| stmt(format!("INSERT {i}"), ()))).await.unwrap_err();
    assert!(matches!(err, Error::LimitExceeded { kind: p::LimitKind::BatchStatements, max: 3, .. }), "{err:?}");
    assert_eq!(count(&engine, |m| matches!(m, p::ToEngine::SqliteBatch(_))), before);
    // A read batch carries no key.
    db.batch(BatchMode::Read, [stmt("SELECT 1", ())]).await.unwrap();
    let last_key = engine.lock().unwrap().messages.iter().rev().find_map(|m| match m {
        p::ToEngine::SqliteBatch(b) => Some(b.request.request_key.clone()),
        _ => None,
    });
    assert_eq!(last_key, Some(None));
    client.close().await;
}

#[tokio::test]
async fn transactions_commit_on_ok_roll_back_on_err_and_on_drop() {
    let (client, engine) = connect().await;
    let db = client.get_or_create_actor("a", "k").await.unwrap().sql().with_transaction_lease(Duration::from_secs(3));
    let n = db
        .transaction(TransactionMode::Write, |tx| async move {
            tx.execute("UPDATE t SET x = 1", ()).await?;
            let rows = tx.query("SELECT x FROM t", ()).await?;
            Ok(rows.len())
        })
        .await
        .unwrap();
    assert_eq!(n, 1);
    {
        let e = engine.lock().unwrap();
        let begin = e.messages.iter().find_map(|m| match m {
            p::ToEngine::SqliteBegin(b) => Some(b.request.lease_ms),
            _ => None,
        });
        assert_eq!(begin, Some(3_000), "the configured lease is asked for");
        let commit = e.messages.iter().find_map(|m| match m {
            p::ToEngine::SqliteCommit(c) => Some(c.request.request_key.clone()),
            _ => None,
        });
        assert_eq!(commit.flatten().map(|k| k.len()), Some(16), "the commit is keyed");
        assert!(e.open_tx.is_empty());
    }

    // An error rolls back and is returned as is.
    #[derive(Debug, PartialEq)]
    enum AppError {
        Db,
        Business,
    }
    impl From<Error> for AppError {
        fn from(_: Error) -> Self {
            AppError::Db
        }
    }
    let err = db
        .transaction_with_error(TransactionMode::Deferred, |tx| async move {
            tx.execute("UPDATE t SET x = 2", ()).await?;
            Err::<(), _>(AppError::Business)
        })
        .await
        .unwrap_err();
    assert_eq!(err, AppError::Business);
    assert_eq!(count(&engine, |m| matches!(m, p::ToEngine::SqliteRollback(_))), 1);
    assert!(engine.lock().unwrap().open_tx.is_empty());

    // The lower-level handle: explicit commit with its outcome.
    let tx = db.begin(TransactionMode::Write).await.unwrap();
    assert_eq!(tx.lease(), Duration::from_secs(3));
    tx.execute("INSERT 1", ()).await.unwrap();
    let done = tx.commit().await.unwrap();
    assert_eq!((done.changes, done.cost, done.replayed), (2, Some(cost()), false));

    // Dropped without commit: rolled back.
    let tx = db.begin(TransactionMode::Write).await.unwrap();
    let id = tx.id();
    drop(tx);
    assert!(eventually(|| !engine.lock().unwrap().open_tx.contains(&id)).await, "dropping rolls back");

    // A `transaction` future dropped mid-way rolls back too.
    let pending = db.transaction(TransactionMode::Write, |tx| async move {
        tx.execute("UPDATE t SET x = 3", ()).await?;
        futures_util::future::pending::<()>().await;
        Ok(())
    });
    let _ = tokio::time::timeout(Duration::from_millis(50), pending).await;
    assert!(eventually(|| engine.lock().unwrap().open_tx.is_empty()).await, "a dropped transaction future rolls back");
    client.close().await;
}

#[tokio::test]
async fn streams_flow_with_bounded_credit_and_cancel_on_drop() {
    let (client, engine) = connect().await;
    let row = row_bytes(&[p::Value::Integer(0), p::Value::Text("y".repeat(100))]);
    let window = (row * 20) as u32;
    let db = client.get_or_create_actor("a", "k").await.unwrap().sql().with_stream_credit(window);

    let mut rows = db.stream("SELECT n, pad FROM big", ());
    let mut taken = 0i64;
    while let Some(r) = rows.next().await {
        let r = r.unwrap();
        assert_eq!(r.get::<i64>("n").unwrap(), taken, "rows in order");
        taken += 1;
        if taken % 50 == 0 {
            // A slow consumer: the engine never gets ahead by more than the
            // window (plus one row of overrun).
            tokio::time::sleep(Duration::from_millis(5)).await;
            let e = engine.lock().unwrap();
            let consumed = taken as u64 * row;
            assert!(e.stream_sent <= consumed + u64::from(window) + row, "sent {} consumed {consumed}", e.stream_sent);
        }
    }
    assert_eq!(taken as usize, STREAM_ROWS);
    assert_eq!(rows.columns(), ["n", "pad"]);
    assert_eq!(rows.cost(), Some(cost()));
    {
        let e = engine.lock().unwrap();
        assert!(e.stream_sent <= e.stream_granted + row);
        assert!(e.messages.iter().any(|m| matches!(m, p::ToEngine::SqliteStreamCredit(_))));
    }

    // Dropped mid-way: cancelled in the engine.
    let mut rows = db.stream("SELECT n, pad FROM big", ());
    rows.next().await.unwrap().unwrap();
    drop(rows);
    assert!(
        eventually(|| count(&engine, |m| matches!(m, p::ToEngine::SqliteStreamCancel(_))) == 1).await,
        "dropping a stream cancels it"
    );
    assert!(eventually(|| engine.lock().unwrap().streams.is_empty()).await);
    // The connection is fine afterwards.
    db.execute("SELECT 1", ()).await.unwrap();
    client.close().await;
}

#[tokio::test]
async fn a_write_whose_link_dies_is_resent_with_the_same_key_on_the_next_connection() {
    let (client, engine) = connect().await;
    let db = client.get_or_create_actor("a", "k").await.unwrap().sql();
    engine.lock().unwrap().cut_on_next_execute = true;
    let out = db.execute_write("INSERT INTO t VALUES (1)", ()).await.expect("re-sent, not IndeterminateResult");
    assert_eq!(out.changes, 1);
    let keys: Vec<Option<Vec<u8>>> = engine
        .lock()
        .unwrap()
        .messages
        .iter()
        .filter_map(|m| match m {
            p::ToEngine::SqliteExecuteV5(r) => Some(r.request.request_key.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(keys.len(), 2, "sent, cut, sent again");
    assert!(keys[0].is_some());
    assert_eq!(keys[0], keys[1], "the same key on both connections");
    let hellos = count(&engine, |m| matches!(m, p::ToEngine::Metadata(_)));
    assert_eq!(hellos, 2, "over a new connection");
    client.close().await;
}
