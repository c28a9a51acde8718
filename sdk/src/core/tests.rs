//! Deterministic tests of the core over a simulated link, quinn-proto style:
//! a fake engine speaks the protocol in memory and a fake clock advances only
//! when a test says so. No sockets, no sleeps.

use super::*;
use envoy_protocol as p;
use std::collections::{HashMap, HashSet};

/// What the fake engine does with requests.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// Answer every request at once.
    Now,
    /// Record requests and answer nothing (answers lost in a crash, or held).
    Hold,
    /// Run every request (recording keyed writes) but lose every answer: the
    /// engine committed, the client never heard.
    LoseAnswers,
}

/// A keyed outcome the fake engine recorded, replayed for the same key.
#[derive(Clone)]
enum Recorded {
    Exec(p::SqliteExecResult),
    Execute(p::SqliteExecuteResult),
    Batch(p::SqliteBatchResult),
    Commit(p::SqliteCommitResult),
}

/// One open stream in the fake engine.
struct FakeStream {
    /// Rows not sent yet.
    rows: VecDeque<Vec<p::Value>>,
    /// Credit left (may go negative by less than one row: the allowed overrun).
    credit: i64,
    /// Sequence of the next message.
    sequence: u32,
    /// Every credit byte granted (open + credit messages).
    granted: u64,
    /// Every row byte sent.
    sent: u64,
}

/// An in-memory engine speaking the protocol at one version.
struct FakeEngine {
    version: u16,
    answer: Answer,
    /// Every decoded message received, in order.
    received: Vec<p::ToEngine>,
    /// Encoded frames to deliver to the client.
    outbox: VecDeque<Vec<u8>>,
    /// Requests received and not answered yet (with `Answer::Hold`); lost with the connection.
    held: VecDeque<p::ToEngine>,
    /// How many times each request id was received (for exactly-once checks), per connection and total.
    seen: HashMap<u32, u32>,
    /// Highest event index processed (survives reconnects, like the engine's session).
    last_event_index: Option<u64>,
    /// The hello's lastCommandIndex of each connection.
    hellos: Vec<Option<u64>>,
    ping_interval_ms: u64,
    limits: p::Limits,
    next_command_index: u64,
    /// v5: the engine limits sent in InitV5.
    engine_limits: p::EngineLimits,
    /// v5: keyed outcomes by key (they survive reconnects, like the engine's table).
    recorded: HashMap<Vec<u8>, Recorded>,
    /// v5: every (requestId, key) of a keyable request received, in order.
    keys_seen: Vec<(u32, Option<Vec<u8>>)>,
    /// v5: open transactions of the current connection.
    open_tx: HashSet<u64>,
    /// v5: next transaction id; restarts at 1 on every connection (as an
    /// engine may), so an id from a dead connection can name a live one.
    next_tx: u64,
    /// v5: open streams by their opening request id.
    streams: HashMap<u32, FakeStream>,
    /// v5: the rows every stream serves.
    stream_rows: Vec<Vec<p::Value>>,
    /// v5: most rows per chunk.
    chunk_rows: usize,
    /// v5: stream accounting kept after a stream ends: (granted, sent) by id.
    stream_totals: HashMap<u32, (u64, u64)>,
    /// v5: how many times each key's request really ran and committed (not
    /// replays): exactly-once means never more than 1.
    executions: HashMap<Vec<u8>, u32>,
}

fn cost() -> p::SqlCost {
    p::SqlCost { rows_read: 1, rows_written: 0, duration_us: 10 }
}

fn engine_limits() -> p::EngineLimits {
    p::EngineLimits {
        max_connection_outbox_bytes: 1 << 24,
        max_result_memory_bytes: 1 << 24,
        max_actors_per_connection: 0,
        max_open_actor_databases: 1000,
        group_commit_max_requests: 64,
        group_commit_max_delay_us: 1000,
        request_key_retention_ms: 86_400_000,
        max_recorded_result_bytes: 65_536,
        min_transaction_lease_ms: 1_000,
        max_transaction_lease_ms: 60_000,
        max_transaction_wait_ms: 5_000,
        max_open_transactions: 16,
        max_batch_statements: 4,
        stream_window_bytes: 1 << 20,
        min_stream_lease_ms: 1_000,
        max_stream_lease_ms: 60_000,
        max_open_streams: 16,
    }
}

fn sql_error(code: p::SqliteErrorCode, statement_index: Option<u32>) -> p::SqliteError {
    p::SqliteError {
        code,
        message: format!("{code:?}"),
        extended_code: None,
        committed: Some(false),
        statement_index,
        limit: None,
    }
}

fn outcome(key: &Option<Vec<u8>>, replayed: bool) -> Option<p::RequestKeyOutcome> {
    key.as_ref().map(|_| if replayed { p::RequestKeyOutcome::Replayed } else { p::RequestKeyOutcome::Executed })
}

impl FakeEngine {
    fn new(version: u16) -> Self {
        FakeEngine {
            version,
            answer: Answer::Now,
            received: Vec::new(),
            outbox: VecDeque::new(),
            held: VecDeque::new(),
            seen: HashMap::new(),
            last_event_index: None,
            hellos: Vec::new(),
            ping_interval_ms: 1_000,
            limits: p::Limits {
                max_request_bytes: 1 << 20,
                max_response_bytes: 1 << 20,
                max_kv_key_bytes: 2048,
                max_kv_value_bytes: 1 << 16,
                max_kv_batch_entries: 128,
                max_pending_requests: 10_000,
            },
            next_command_index: 0,
            engine_limits: engine_limits(),
            recorded: HashMap::new(),
            keys_seen: Vec::new(),
            open_tx: HashSet::new(),
            next_tx: 1,
            streams: HashMap::new(),
            stream_rows: Vec::new(),
            chunk_rows: 4,
            stream_totals: HashMap::new(),
            executions: HashMap::new(),
        }
    }

    /// Records a keyed outcome of a request that ran now and committed.
    fn record(&mut self, key: &[u8], outcome: Recorded) {
        *self.executions.entry(key.to_vec()).or_default() += 1;
        self.recorded.insert(key.to_vec(), outcome);
    }

    /// Runs up to `n` held requests but loses their answers (the engine
    /// committed; the client never heard).
    fn run_held_losing_answers(&mut self, n: usize) {
        for _ in 0..n {
            let Some(msg) = self.held.pop_front() else { return };
            match msg {
                p::ToEngine::KvRequest(_) | p::ToEngine::SqliteExecute(_) | p::ToEngine::SqliteExecuteWrite(_) => {}
                other => {
                    let _ = self.answer_v5(other);
                }
            }
        }
    }

    fn send(&mut self, msg: p::ToEnvoy) {
        self.outbox.push_back(p::encode_to_envoy(&msg, self.version).expect("encodable at the engine's version"));
    }

    fn receive(&mut self, bytes: &[u8]) {
        let msg = p::decode_to_engine(bytes, self.version, &DecodeLimits::default()).expect("client frames decode");
        self.received.push(msg.clone());
        match msg {
            p::ToEngine::Metadata(m) => {
                self.hellos.push(m.last_command_index);
                // A new connection: the old one's transactions and streams are gone.
                self.open_tx.clear();
                self.next_tx = 1;
                self.streams.clear();
                let metadata = p::ProtocolMetadata {
                    ping_interval_ms: self.ping_interval_ms,
                    envoy_lost_threshold_ms: 10_000,
                    actor_stop_threshold_ms: 5_000,
                    max_frame_bytes: p::DEFAULT_MAX_FRAME_BYTES,
                    limits: Some(self.limits.clone()),
                    sql_limits: Some(p::SqlLimits {
                        max_sql_bytes: 1000,
                        max_params: 10,
                        max_value_bytes: 100,
                        max_statement_ms: 0,
                    }),
                };
                if self.version >= 5 {
                    self.send(p::ToEnvoy::InitV5(p::ToEnvoyInitV5 {
                        envoy_id: "envoy-1".into(),
                        last_event_index: self.last_event_index,
                        metadata,
                        metadata_v5: p::ProtocolMetadataV5 {
                            durability: p::Durability::Fsync,
                            limits: self.engine_limits.clone(),
                        },
                    }));
                } else {
                    self.send(p::ToEnvoy::Init(p::ToEnvoyInit {
                        envoy_id: "envoy-1".into(),
                        last_event_index: self.last_event_index,
                        metadata,
                    }));
                }
            }
            p::ToEngine::Events(ev) => {
                for e in &ev.events {
                    if self.last_event_index.is_none_or(|l| e.index > l) {
                        self.last_event_index = Some(e.index);
                    }
                }
                if let Some(l) = self.last_event_index {
                    self.send(p::ToEnvoy::AckEvents(p::ToEnvoyAckEvents { last_event_index: l }));
                }
            }
            p::ToEngine::AckCommands(_) | p::ToEngine::Stopping | p::ToEngine::Pong(_) => {}
            p::ToEngine::KvRequest(p::ToEngineKvRequest { request_id, .. })
            | p::ToEngine::SqliteExecute(p::ToEngineSqliteExecute { request_id, .. })
            | p::ToEngine::SqliteExecuteWrite(p::ToEngineSqliteExecuteWrite { request_id, .. }) => {
                *self.seen.entry(request_id).or_default() += 1;
                match self.answer {
                    Answer::Now => self.answer_one(msg),
                    // v4 requests carry no key: nothing to record.
                    Answer::Hold | Answer::LoseAnswers => self.held.push_back(msg),
                }
            }
            p::ToEngine::SqliteExec(r) => {
                *self.seen.entry(r.request_id).or_default() += 1;
            }
            p::ToEngine::GetOrCreateActor(r) => {
                *self.seen.entry(r.request_id).or_default() += 1;
            }
            p::ToEngine::SqliteExecV5(_)
            | p::ToEngine::SqliteExecuteV5(_)
            | p::ToEngine::SqliteBatch(_)
            | p::ToEngine::SqliteBegin(_)
            | p::ToEngine::SqliteTransactionExecute(_)
            | p::ToEngine::SqliteCommit(_)
            | p::ToEngine::SqliteRollback(_) => {
                let (request_id, key) = match &msg {
                    p::ToEngine::SqliteExecV5(r) => (r.request_id, Some(r.request.request_key.clone())),
                    p::ToEngine::SqliteExecuteV5(r) => (r.request_id, Some(r.request.request_key.clone())),
                    p::ToEngine::SqliteBatch(r) => (r.request_id, Some(r.request.request_key.clone())),
                    p::ToEngine::SqliteCommit(r) => (r.request_id, Some(r.request.request_key.clone())),
                    p::ToEngine::SqliteBegin(r) => (r.request_id, None),
                    p::ToEngine::SqliteTransactionExecute(r) => (r.request_id, None),
                    p::ToEngine::SqliteRollback(r) => (r.request_id, None),
                    other => unreachable!("{other:?}"),
                };
                *self.seen.entry(request_id).or_default() += 1;
                if let Some(key) = key {
                    self.keys_seen.push((request_id, key));
                }
                match self.answer {
                    Answer::Now => self.answer_one(msg),
                    Answer::Hold => self.held.push_back(msg),
                    Answer::LoseAnswers => {
                        let _ = self.answer_v5(msg);
                    }
                }
            }
            p::ToEngine::SqliteStreamOpen(r) => {
                *self.seen.entry(r.request_id).or_default() += 1;
                let credit = r.request.credit_bytes;
                self.streams.insert(
                    r.request_id,
                    FakeStream {
                        rows: self.stream_rows.iter().cloned().collect(),
                        credit: i64::from(credit),
                        sequence: 0,
                        granted: u64::from(credit),
                        sent: 0,
                    },
                );
                self.pump_stream(r.request_id);
            }
            p::ToEngine::SqliteStreamCredit(c) => {
                if let Some(st) = self.streams.get_mut(&c.request_id) {
                    st.credit += i64::from(c.credit_bytes);
                    st.granted += u64::from(c.credit_bytes);
                    self.pump_stream(c.request_id);
                }
            }
            p::ToEngine::SqliteStreamCancel(c) => {
                if let Some(st) = self.streams.remove(&c.request_id) {
                    self.stream_totals.insert(c.request_id, (st.granted, st.sent));
                    self.send(p::ToEnvoy::SqliteStreamFailed(p::ToEnvoySqliteStreamFailed {
                        request_id: c.request_id,
                        sequence: st.sequence,
                        failure: p::SqliteFailure::SqliteError(sql_error(p::SqliteErrorCode::Cancelled, None)),
                        cost: cost(),
                    }));
                }
            }
        }
    }

    /// Sends chunks of stream `id` while it has credit (a chunk may overrun
    /// the credit by at most one row, as the protocol allows).
    fn pump_stream(&mut self, id: u32) {
        loop {
            let Some(st) = self.streams.get_mut(&id) else { return };
            if st.credit <= 0 && !st.rows.is_empty() {
                return;
            }
            let mut rows = Vec::new();
            while rows.len() < self.chunk_rows && st.credit > 0 {
                let Some(row) = st.rows.pop_front() else { break };
                let b = flow::row_bytes(&row);
                st.credit -= b as i64;
                st.sent += b;
                rows.push(row);
            }
            let done = st.rows.is_empty();
            let sequence = st.sequence;
            st.sequence += 1;
            let (granted, sent) = (st.granted, st.sent);
            if done {
                self.streams.remove(&id);
                self.stream_totals.insert(id, (granted, sent));
            }
            self.send(p::ToEnvoy::SqliteStreamChunk(p::ToEnvoySqliteStreamChunk {
                request_id: id,
                sequence,
                columns: (sequence == 0).then(|| vec!["n".to_string(), "body".to_string()]),
                rows,
                done,
                cost: done.then(cost),
            }));
            if done {
                return;
            }
        }
    }

    /// Runs one v5 request the way an engine would (recording keyed writes
    /// that committed, replaying recorded keys) and returns its answer.
    fn answer_v5(&mut self, msg: p::ToEngine) -> p::ToEnvoy {
        match msg {
            p::ToEngine::SqliteExecuteV5(r) => {
                let key = r.request.request_key.clone();
                if let Some(Recorded::Execute(result)) = key.as_ref().and_then(|k| self.recorded.get(k)).cloned() {
                    return p::ToEnvoy::SqliteExecuteResponseV5(p::ToEnvoySqliteExecuteResponseV5 {
                        request_id: r.request_id,
                        result,
                        cost: cost(),
                        request_key: outcome(&key, true),
                    });
                }
                let writes = r.request.writer || r.request.statement.sql.starts_with("INSERT");
                let result = if r.request.statement.sql == "FAIL" {
                    p::SqliteExecuteResult::SqliteError(sql_error(p::SqliteErrorCode::Sqlite, None))
                } else {
                    p::SqliteExecuteResult::ExecuteResult(p::ExecuteResult {
                        columns: vec!["sql".into()],
                        rows: vec![vec![p::Value::Text(r.request.statement.sql.clone())]],
                        changes: u64::from(writes),
                        last_insert_row_id: writes.then_some(7),
                        route: if writes { p::SqliteRoute::Write } else { p::SqliteRoute::Read },
                    })
                };
                if let (Some(k), true) = (&key, writes) {
                    self.record(k, Recorded::Execute(result.clone()));
                }
                p::ToEnvoy::SqliteExecuteResponseV5(p::ToEnvoySqliteExecuteResponseV5 {
                    request_id: r.request_id,
                    result,
                    cost: cost(),
                    request_key: outcome(&key, false),
                })
            }
            p::ToEngine::SqliteExecV5(r) => {
                let key = r.request.request_key.clone();
                let (result, replayed) = match key.as_ref().and_then(|k| self.recorded.get(k)).cloned() {
                    Some(Recorded::Exec(result)) => (result, true),
                    _ => {
                        let result = p::SqliteExecResult::QueryResult(p::QueryResult {
                            columns: vec!["sql".into()],
                            rows: vec![vec![p::Value::Text(r.request.sql.clone())]],
                        });
                        if let Some(k) = &key {
                            self.record(k, Recorded::Exec(result.clone()));
                        }
                        (result, false)
                    }
                };
                p::ToEnvoy::SqliteExecResponseV5(p::ToEnvoySqliteExecResponseV5 {
                    request_id: r.request_id,
                    result,
                    cost: cost(),
                    request_key: outcome(&key, replayed),
                })
            }
            p::ToEngine::SqliteBatch(r) => {
                let key = r.request.request_key.clone();
                let (result, replayed) = match key.as_ref().and_then(|k| self.recorded.get(k)).cloned() {
                    Some(Recorded::Batch(result)) => (result, true),
                    _ => {
                        let failing = r.request.statements.iter().position(|s| s.sql == "FAIL");
                        let result = match failing {
                            Some(i) => {
                                p::SqliteBatchResult::SqliteError(sql_error(p::SqliteErrorCode::Sqlite, Some(i as u32)))
                            }
                            None => p::SqliteBatchResult::SqliteBatchOk(p::SqliteBatchOk {
                                results: r
                                    .request
                                    .statements
                                    .iter()
                                    .map(|s| p::ExecuteResult {
                                        columns: vec!["sql".into()],
                                        rows: vec![vec![p::Value::Text(s.sql.clone())]],
                                        changes: 1,
                                        last_insert_row_id: None,
                                        route: p::SqliteRoute::Write,
                                    })
                                    .collect(),
                            }),
                        };
                        if let (Some(k), None) = (&key, failing) {
                            self.record(k, Recorded::Batch(result.clone()));
                        }
                        (result, false)
                    }
                };
                p::ToEnvoy::SqliteBatchResponse(p::ToEnvoySqliteBatchResponse {
                    request_id: r.request_id,
                    result,
                    cost: cost(),
                    request_key: outcome(&key, replayed),
                })
            }
            p::ToEngine::SqliteBegin(r) => {
                let id = self.next_tx;
                self.next_tx += 1;
                self.open_tx.insert(id);
                p::ToEnvoy::SqliteBeginResponse(p::ToEnvoySqliteBeginResponse {
                    request_id: r.request_id,
                    result: p::SqliteBeginResult::SqliteTransactionStarted(p::SqliteTransactionStarted {
                        transaction_id: id,
                        lease_ms: r.request.lease_ms.clamp(
                            self.engine_limits.min_transaction_lease_ms,
                            self.engine_limits.max_transaction_lease_ms,
                        ),
                    }),
                    cost: cost(),
                })
            }
            p::ToEngine::SqliteTransactionExecute(r) => {
                let result = if self.open_tx.contains(&r.request.transaction_id) {
                    p::SqliteExecuteResult::ExecuteResult(p::ExecuteResult {
                        columns: vec![],
                        rows: vec![],
                        changes: 1,
                        last_insert_row_id: None,
                        route: p::SqliteRoute::Write,
                    })
                } else {
                    p::SqliteExecuteResult::SqliteError(sql_error(p::SqliteErrorCode::TransactionNotFound, None))
                };
                p::ToEnvoy::SqliteTransactionExecuteResponse(p::ToEnvoySqliteTransactionExecuteResponse {
                    request_id: r.request_id,
                    result,
                    cost: cost(),
                    transaction_end: None,
                })
            }
            p::ToEngine::SqliteCommit(r) => {
                let key = r.request.request_key.clone();
                let (result, replayed) = match key.as_ref().and_then(|k| self.recorded.get(k)).cloned() {
                    Some(Recorded::Commit(result)) => (result, true),
                    _ if self.open_tx.remove(&r.request.transaction_id) => {
                        let result = p::SqliteCommitResult::SqliteCommitted(p::SqliteCommitted { changes: 2 });
                        if let Some(k) = &key {
                            self.record(k, Recorded::Commit(result.clone()));
                        }
                        (result, false)
                    }
                    _ => (
                        p::SqliteCommitResult::SqliteError(sql_error(p::SqliteErrorCode::TransactionNotFound, None)),
                        false,
                    ),
                };
                p::ToEnvoy::SqliteCommitResponse(p::ToEnvoySqliteCommitResponse {
                    request_id: r.request_id,
                    result,
                    cost: cost(),
                    request_key: outcome(&key, replayed),
                })
            }
            p::ToEngine::SqliteRollback(r) => {
                self.open_tx.remove(&r.request.transaction_id);
                p::ToEnvoy::SqliteRollbackResponse(p::ToEnvoySqliteRollbackResponse {
                    request_id: r.request_id,
                    result: p::SqliteRollbackResult::SqliteRolledBack,
                    cost: cost(),
                })
            }
            other => panic!("not a v5 request: {other:?}"),
        }
    }

    /// Answers one KV or SQL execute request successfully.
    fn answer_one(&mut self, msg: p::ToEngine) {
        match msg {
            p::ToEngine::KvRequest(r) => {
                let data = match r.data {
                    p::KvRequestData::KvGet(g) => {
                        p::KvResponseData::KvGetResponse(p::KvGetResponse { value: Some(g.key) })
                    }
                    p::KvRequestData::KvPut(_) => p::KvResponseData::KvPutResponse,
                    p::KvRequestData::KvDelete(_)
                    | p::KvRequestData::KvListPrefix(_)
                    | p::KvRequestData::KvGetBatch(_)
                    | p::KvRequestData::KvPutBatch(_)
                    | p::KvRequestData::KvDeleteBatch(_)
                    | p::KvRequestData::KvDeleteRange(_)
                    | p::KvRequestData::KvList(_) => p::KvResponseData::KvDeleteResponse,
                };
                self.send(p::ToEnvoy::KvResponse(p::ToEnvoyKvResponse { request_id: r.request_id, data }));
            }
            p::ToEngine::SqliteExecute(p::ToEngineSqliteExecute { request_id, request })
            | p::ToEngine::SqliteExecuteWrite(p::ToEngineSqliteExecuteWrite { request_id, request }) => {
                self.send(p::ToEnvoy::SqliteExecuteResponse(p::ToEnvoySqliteExecuteResponse {
                    request_id,
                    result: p::SqliteExecuteResult::ExecuteResult(p::ExecuteResult {
                        columns: vec!["sql".into()],
                        rows: vec![vec![p::Value::Text(request.sql)]],
                        changes: 0,
                        last_insert_row_id: None,
                        route: p::SqliteRoute::Read,
                    }),
                }));
            }
            other @ (p::ToEngine::SqliteExecV5(_)
            | p::ToEngine::SqliteExecuteV5(_)
            | p::ToEngine::SqliteBatch(_)
            | p::ToEngine::SqliteBegin(_)
            | p::ToEngine::SqliteTransactionExecute(_)
            | p::ToEngine::SqliteCommit(_)
            | p::ToEngine::SqliteRollback(_)) => {
                let answer = self.answer_v5(other);
                self.send(answer);
            }
            other => panic!("not an answerable request: {other:?}"),
        }
    }

    /// Answers up to `n` held requests, oldest first.
    fn answer_held(&mut self, n: usize) {
        for _ in 0..n {
            let Some(msg) = self.held.pop_front() else { return };
            self.answer_one(msg);
        }
    }

    fn command(&mut self, inner: p::Command) -> u64 {
        let index = self.next_command_index;
        self.next_command_index += 1;
        self.send(p::ToEnvoy::Commands(p::ToEnvoyCommands { commands: vec![p::CommandWrapper { index, inner }] }));
        index
    }

    fn count<F: Fn(&p::ToEngine) -> bool>(&self, f: F) -> usize {
        self.received.iter().filter(|m| f(m)).count()
    }
}

/// Rows of one stream chunk and their credit bytes.
type Chunk = (Vec<Vec<p::Value>>, u64);

/// The core, the fake engine, a clock and the link between them.
struct Sim {
    core: Core,
    engine: FakeEngine,
    now: u64,
    /// Whether a socket is open between them.
    open: bool,
    /// Whether `Event::Connect` is answered by opening the socket at once.
    auto_connect: bool,
    /// Connect requests seen.
    connects: u32,
    /// Request results by id.
    results: HashMap<RequestId, Result<Response, Error>>,
    starts: Vec<ActorInfo>,
    stops: Vec<ActorInfo>,
    /// Why each stop in `stops` came.
    stop_reasons: Vec<p::StopReason>,
    states: Vec<ConnectionState>,
    /// Request keys, from a seeded generator (no randomness in tests).
    keygen: keys::KeyGen,
    /// The key each keyed request was submitted with.
    keys: HashMap<RequestId, RequestKey>,
    /// Stream rows delivered and not yet consumed, by stream: (rows, bytes) per chunk.
    stream_chunks: HashMap<RequestId, VecDeque<Chunk>>,
    /// Every stream row delivered, by stream.
    stream_delivered: HashMap<RequestId, usize>,
}

fn cfg() -> ClientConfig {
    ClientConfig {
        envoy_key: "key-1".into(),
        pool_name: "pool".into(),
        request_timeout_ms: None,
        ..ClientConfig::default()
    }
}

impl Sim {
    fn new(cfg: ClientConfig, engine_version: u16) -> Self {
        let mut s = Sim {
            core: Core::new(cfg, 7),
            engine: FakeEngine::new(engine_version),
            now: 0,
            open: false,
            auto_connect: true,
            connects: 0,
            results: HashMap::new(),
            starts: Vec::new(),
            stops: Vec::new(),
            stop_reasons: Vec::new(),
            states: Vec::new(),
            keygen: keys::KeyGen::new(99),
            keys: HashMap::new(),
            stream_chunks: HashMap::new(),
            stream_delivered: HashMap::new(),
        };
        s.core.start(0);
        s.run();
        s
    }

    /// Moves frames and events until nothing moves.
    fn run(&mut self) {
        loop {
            let mut moved = false;
            while let Some(f) = self.core.poll_transmit() {
                moved = true;
                if self.open {
                    self.engine.receive(&f);
                }
            }
            while let Some(ev) = self.core.poll_event() {
                moved = true;
                match ev {
                    Event::Connect => {
                        self.connects += 1;
                        if self.auto_connect {
                            self.open = true;
                            self.core.connected(self.engine.version, self.now);
                        }
                    }
                    Event::CloseSocket { .. } => self.open = false,
                    Event::Response { id, result } => {
                        assert!(self.results.insert(id, result).is_none(), "request {id} answered twice");
                    }
                    Event::ActorStart(a) => self.starts.push(a),
                    Event::ActorStop { actor, reason } => {
                        self.stops.push(actor);
                        self.stop_reasons.push(reason);
                    }
                    Event::State(s) => self.states.push(s),
                    Event::StreamRows { id, rows, bytes, .. } => {
                        *self.stream_delivered.entry(id).or_default() += rows.len();
                        self.stream_chunks.entry(id).or_default().push_back((rows, bytes));
                    }
                }
            }
            if self.open {
                while let Some(f) = self.engine.outbox.pop_front() {
                    moved = true;
                    self.core.frame_received(&f, self.now);
                }
            } else {
                self.engine.outbox.clear();
            }
            if !moved {
                break;
            }
        }
    }

    /// Advances the clock by `ms`, firing every deadline on the way.
    fn advance(&mut self, ms: u64) {
        let end = self.now + ms;
        while let Some(t) = self.core.poll_timeout().filter(|t| *t <= end) {
            self.now = self.now.max(t);
            self.core.handle_timeout(self.now);
            self.run();
        }
        self.now = end;
    }

    /// The link dies under both (no close frame).
    fn kill_socket(&mut self) {
        self.open = false;
        self.engine.outbox.clear();
        self.engine.held.clear();
        self.core.disconnected(None, "killed", self.now);
        self.run();
    }

    fn kv_get(&mut self, key: &[u8]) -> RequestId {
        let id = self.core.submit(
            kv(p::KvRequestData::KvGet(p::KvGet { key: key.to_vec() })),
            RequestOptions::default(),
            self.now,
        );
        self.run();
        id
    }

    fn kv_put(&mut self, key: &[u8]) -> RequestId {
        let data = p::KvRequestData::KvPut(p::KvPut { key: key.to_vec(), value: b"v".to_vec() });
        let id = self.core.submit(kv(data), RequestOptions::default(), self.now);
        self.run();
        id
    }

    fn sql(&mut self, sql: &str, write: bool, opts: RequestOptions) -> RequestId {
        let r = Request::SqlExecute { actor_id: "a1".into(), generation: 1, sql: sql.into(), params: None, write };
        let id = self.core.submit(r, opts, self.now);
        self.run();
        id
    }

    /// Submits a request with a fresh key if it wants one (as the driver does).
    fn submit(&mut self, request: Request) -> RequestId {
        let key = request.wants_key().then(|| self.keygen.key(1_800_000_000_000 + self.now));
        let id = self.core.submit_keyed(request, RequestOptions::default(), key, self.now);
        if let Some(k) = key {
            self.keys.insert(id, k);
        }
        self.run();
        id
    }

    /// The application takes `n` chunks of stream `id` (credit flows back).
    fn consume(&mut self, id: RequestId, n: usize) {
        for _ in 0..n {
            let Some((_, bytes)) = self.stream_chunks.get_mut(&id).and_then(|q| q.pop_front()) else { break };
            self.core.stream_consumed(id, bytes);
            self.run();
        }
    }

    /// Advances exactly to the end of the current backoff (no liveness expiry on the way).
    fn reconnect(&mut self) {
        match self.states.last() {
            Some(ConnectionState::Reconnecting { delay_ms, .. }) => {
                let d = *delay_ms;
                self.advance(d);
            }
            other => panic!("not reconnecting: {other:?}"),
        }
    }

    fn result(&self, id: RequestId) -> &Result<Response, Error> {
        self.results.get(&id).unwrap_or_else(|| panic!("request {id} has no result"))
    }

    fn connected(&self) -> bool {
        self.core.session().is_some()
    }
}

fn kv(data: p::KvRequestData) -> Request {
    Request::Kv { actor_id: "a1".into(), generation: 1, data }
}

#[test]
fn handshake_sends_hello_first_and_reports_the_session() {
    let sim = Sim::new(cfg(), 4);
    assert!(sim.connected());
    match &sim.engine.received[0] {
        p::ToEngine::Metadata(m) => {
            assert_eq!(m.envoy_key, "key-1");
            assert_eq!(m.pool_name, "pool");
            assert_eq!(m.last_command_index, None);
        }
        other => panic!("first frame must be the hello, got {other:?}"),
    }
    let session = sim.core.session().unwrap();
    assert_eq!(session.protocol_version, 4);
    assert_eq!(session.envoy_id, "envoy-1");
    assert!(matches!(sim.states.last(), Some(ConnectionState::Connected(_))));
    assert_eq!(
        sim.core.subprotocols(Some("t")),
        ["envoy.v6", "envoy.v5", "envoy.v4", "envoy.v3", "envoy.v2", "envoy.v1", "envoy.token.t"],
        "the SDK offers v6; a v4 engine picks v4"
    );
    assert_eq!(session.durability, None, "no v5 metadata on a v4 session");
    assert_eq!(session.engine_limits, None);
}

#[test]
fn five_hundred_requests_in_flight_answered_out_of_order() {
    let mut sim = Sim::new(cfg(), 4);
    sim.engine.answer = Answer::Hold;
    let ids: Vec<RequestId> =
        (0..500).map(|i| sim.sql(&format!("SELECT {i}"), false, RequestOptions::default())).collect();
    assert_eq!(sim.core.in_flight(), 500, "all 500 go on the wire without waiting for answers");
    // Answer in reverse order.
    let received: Vec<_> = sim.engine.received.clone();
    for m in received.iter().rev() {
        if let p::ToEngine::SqliteExecute(r) = m {
            sim.engine.send(p::ToEnvoy::SqliteExecuteResponse(p::ToEnvoySqliteExecuteResponse {
                request_id: r.request_id,
                result: p::SqliteExecuteResult::ExecuteResult(p::ExecuteResult {
                    columns: vec!["sql".into()],
                    rows: vec![vec![p::Value::Text(r.request.sql.clone())]],
                    changes: 0,
                    last_insert_row_id: None,
                    route: p::SqliteRoute::Read,
                }),
            }));
        }
    }
    sim.run();
    for (i, id) in ids.iter().enumerate() {
        match sim.result(*id) {
            Ok(Response::Execute(x)) => assert_eq!(x.rows[0][0], p::Value::Text(format!("SELECT {i}"))),
            other => panic!("request {i}: {other:?}"),
        }
    }
    assert_eq!(sim.core.pending_len(), 0);
}

#[test]
fn lost_answer_of_a_write_is_indeterminate_and_unsent_requests_go_once_after_init() {
    let mut sim = Sim::new(cfg(), 4);
    sim.engine.answer = Answer::Hold;
    let write = sim.kv_put(b"k");
    let sql_write = sim.sql("INSERT INTO t VALUES (1)", true, RequestOptions::default());
    assert_eq!(sim.engine.seen[&write], 1);
    sim.auto_connect = false;
    sim.kill_socket();
    assert_eq!(sim.result(write), &Err(Error::IndeterminateResult));
    assert_eq!(sim.result(sql_write), &Err(Error::IndeterminateResult));
    assert!(matches!(sim.states.last(), Some(ConnectionState::Reconnecting { attempt: 1, .. })));

    // While disconnected, requests queue; nothing is answered yet.
    sim.engine.answer = Answer::Now;
    let queued: Vec<_> = (0..5).map(|i| sim.kv_put(format!("q{i}").as_bytes())).collect();
    assert!(queued.iter().all(|id| !sim.results.contains_key(id)));

    // Reconnect after the backoff; queued requests are sent exactly once, after Init.
    sim.auto_connect = true;
    sim.reconnect();
    assert!(sim.connected());
    for id in &queued {
        assert_eq!(sim.engine.seen[id], 1, "request {id} delivered exactly once");
        assert_eq!(sim.result(*id), &Ok(Response::KvDone));
    }
    let hello_pos = sim.engine.received.iter().rposition(|m| matches!(m, p::ToEngine::Metadata(_))).unwrap();
    let first_queued = sim
        .engine
        .received
        .iter()
        .position(|m| matches!(m, p::ToEngine::KvRequest(r) if r.request_id == queued[0]))
        .unwrap();
    assert!(first_queued > hello_pos, "queued requests go after the new hello");
    assert_eq!(sim.engine.seen[&write], 1, "the write is never re-sent");
}

#[test]
fn reads_are_retried_once_then_indeterminate() {
    let mut sim = Sim::new(cfg(), 4);
    sim.engine.answer = Answer::Hold;
    let read = sim.kv_get(b"k");
    let sql_read = sim.sql("SELECT 1", false, RequestOptions { idempotent: true, timeout_ms: None });
    let sql_not_marked = sim.sql("SELECT 2", false, RequestOptions::default());
    sim.kill_socket();
    assert!(!sim.results.contains_key(&read), "a read waits for its retry");
    assert!(!sim.results.contains_key(&sql_read));
    assert_eq!(
        sim.result(sql_not_marked),
        &Err(Error::IndeterminateResult),
        "SQL not marked idempotent is not retried"
    );
    sim.reconnect();
    assert_eq!(sim.engine.seen[&read], 2);
    assert_eq!(sim.engine.seen[&sql_read], 2);
    // Lost again: the one retry is used up.
    sim.kill_socket();
    assert_eq!(sim.result(read), &Err(Error::IndeterminateResult));
    assert_eq!(sim.result(sql_read), &Err(Error::IndeterminateResult));

    // With retries off, a read fails at once.
    let mut c = cfg();
    c.retry_idempotent_reads = false;
    let mut sim = Sim::new(c, 4);
    sim.engine.answer = Answer::Hold;
    let read = sim.kv_get(b"k");
    sim.kill_socket();
    assert_eq!(sim.result(read), &Err(Error::IndeterminateResult));
}

#[test]
fn sql_against_a_v3_engine_fails_fast_with_remote_unavailable_and_kv_works() {
    let mut sim = Sim::new(cfg(), 3);
    assert_eq!(sim.core.version(), Some(3));
    let id = sim.sql("SELECT 1", false, RequestOptions::default());
    assert_eq!(
        sim.result(id),
        &Err(Error::RemoteUnavailable(p::ProtocolCompatibilityError {
            feature: p::Feature::RemoteSqlite,
            direction: p::Direction::ToEngine,
            required_version: 4,
            target_version: 3,
        }))
    );
    assert_eq!(sim.engine.seen.get(&id), None, "nothing was sent");
    let get = sim.kv_get(b"hello");
    assert_eq!(sim.result(get), &Ok(Response::KvValue(Some(b"hello".to_vec()))));
    assert!(sim.connected(), "no reconnect loop");
    assert_eq!(sim.connects, 1);
}

#[test]
fn liveness_timeout_notices_a_half_open_socket_and_reconnects() {
    let mut sim = Sim::new(cfg(), 4);
    // Pings keep it alive.
    for _ in 0..10 {
        sim.advance(900);
        sim.engine.send(p::ToEnvoy::Ping(p::ToEnvoyPing { ts: sim.now as i64 }));
        sim.run();
    }
    assert!(sim.connected());
    assert_eq!(sim.engine.count(|m| matches!(m, p::ToEngine::Pong(_))), 10);
    // The link goes silent without any close: half-open.
    sim.auto_connect = false;
    sim.engine.answer = Answer::Hold;
    let write = sim.kv_put(b"k");
    sim.advance(2_999);
    assert!(sim.connected(), "not yet: 3 ping intervals");
    sim.advance(2);
    assert!(!sim.connected());
    assert!(!sim.open, "the core asked to close the socket");
    assert_eq!(sim.result(write), &Err(Error::IndeterminateResult));
    assert!(matches!(sim.states.last(), Some(ConnectionState::Reconnecting { .. })));
}

#[test]
fn backoff_grows_with_jitter_and_is_deterministic() {
    let run = || {
        let mut sim = Sim::new(cfg(), 4);
        sim.auto_connect = false;
        sim.kill_socket();
        let mut delays = Vec::new();
        for _ in 0..8 {
            let delay = match sim.states.last() {
                Some(ConnectionState::Reconnecting { delay_ms, .. }) => *delay_ms,
                other => panic!("{other:?}"),
            };
            delays.push(delay);
            sim.advance(delay);
            // Connect requested; it fails.
            sim.core.connect_failed(ConnectFailure::Other("refused".into()), sim.now);
            sim.run();
        }
        delays
    };
    let a = run();
    assert_eq!(a, run(), "same seed, same delays");
    for (k, d) in a.iter().enumerate() {
        let ceiling = (100u64 << k).min(5_000);
        assert!(*d >= ceiling / 2 && *d <= ceiling, "attempt {k}: {d} outside [{}, {ceiling}]", ceiling / 2);
    }
}

#[test]
fn no_reconnect_after_eviction_or_close_and_426_is_fatal() {
    let mut sim = Sim::new(cfg(), 4);
    let queued_before = sim.connects;
    sim.core.disconnected(Some(p::close::EVICTED), "replaced", sim.now);
    sim.run();
    assert!(sim.core.is_closed());
    sim.advance(60_000);
    assert_eq!(sim.connects, queued_before, "no reconnect after EVICTED");
    let late = sim.kv_get(b"x");
    assert_eq!(sim.result(late), &Err(Error::Closed));
    assert!(matches!(
        sim.states.last(),
        Some(ConnectionState::Closed {
            error: Some(Error::Disconnected {
                reason: crate::error::DisconnectReason::ClosedByEngine { code: 4000, .. }
            })
        })
    ));

    // After close(): the engine hears Stopping, no reconnect.
    let mut sim = Sim::new(cfg(), 4);
    sim.core.close(sim.now);
    sim.run();
    assert_eq!(sim.engine.count(|m| matches!(m, p::ToEngine::Stopping)), 1);
    assert!(sim.core.is_closed());
    sim.advance(60_000);
    assert_eq!(sim.connects, 1);

    // 426 on the first connect: fatal, queued requests fail with NoCommonVersion.
    let mut sim = Sim::new(cfg(), 4);
    sim.kill_socket();
    sim.auto_connect = false;
    let q = sim.kv_get(b"x");
    let state = sim.states.last().cloned();
    let Some(ConnectionState::Reconnecting { delay_ms, .. }) = state else { panic!() };
    sim.advance(delay_ms);
    sim.core.connect_failed(ConnectFailure::NoCommonVersion { engine_versions: Some("7-8".into()) }, sim.now);
    sim.run();
    assert!(sim.core.is_closed());
    assert_eq!(
        sim.result(q),
        &Err(Error::NoCommonVersion {
            client_min: 1,
            client_max: crate::SDK_PROTOCOL_VERSION,
            engine_versions: Some("7-8".into())
        })
    );
    let before = sim.connects;
    sim.advance(60_000);
    assert_eq!(sim.connects, before);

    // A refused TLS certificate: fatal too, with rustls' reason; no reconnect.
    let mut sim = Sim::new(cfg(), 4);
    sim.kill_socket();
    sim.auto_connect = false;
    let q = sim.kv_get(b"x");
    let Some(ConnectionState::Reconnecting { delay_ms, .. }) = sim.states.last().cloned() else { panic!() };
    sim.advance(delay_ms);
    sim.core.connect_failed(ConnectFailure::CertificateRejected("UnknownIssuer".into()), sim.now);
    sim.run();
    assert!(sim.core.is_closed());
    assert_eq!(
        sim.result(q),
        &Err(Error::Disconnected {
            reason: crate::error::DisconnectReason::CertificateRejected { message: "UnknownIssuer".into() }
        })
    );
    let before = sim.connects;
    sim.advance(60_000);
    assert_eq!(sim.connects, before);
}

#[test]
fn graceful_close_waits_for_in_flight_answers() {
    let mut sim = Sim::new(cfg(), 4);
    sim.engine.answer = Answer::Hold;
    let inflight = sim.kv_get(b"k");
    sim.core.close(sim.now);
    sim.run();
    assert!(!sim.core.is_closed(), "waits for the in-flight answer");
    let late = sim.kv_get(b"late");
    assert_eq!(sim.result(late), &Err(Error::Closed));
    sim.engine.send(p::ToEnvoy::KvResponse(p::ToEnvoyKvResponse {
        request_id: inflight,
        data: p::KvResponseData::KvGetResponse(p::KvGetResponse { value: None }),
    }));
    sim.run();
    assert_eq!(sim.result(inflight), &Ok(Response::KvValue(None)));
    assert!(sim.core.is_closed());
}

#[test]
fn request_timeouts_fire_and_say_whether_the_request_was_sent() {
    let mut sim = Sim::new(cfg(), 4);
    sim.engine.answer = Answer::Hold;
    let opts = RequestOptions { timeout_ms: Some(500), idempotent: false };
    let sent = sim.core.submit(kv(p::KvRequestData::KvGet(p::KvGet { key: b"k".to_vec() })), opts, sim.now);
    sim.run();
    sim.auto_connect = false;
    sim.kill_socket();
    // The read waits for its retry; submit one more that is never sent.
    let unsent = sim.core.submit(kv(p::KvRequestData::KvGet(p::KvGet { key: b"j".to_vec() })), opts, sim.now);
    sim.advance(499);
    assert!(!sim.results.contains_key(&sent));
    sim.advance(1);
    assert_eq!(sim.result(sent), &Err(Error::Timeout { timeout_ms: 500, sent: true }));
    assert_eq!(sim.result(unsent), &Err(Error::Timeout { timeout_ms: 500, sent: false }));
}

#[test]
fn commands_are_applied_once_acked_and_events_resent_after_reconnect() {
    let mut sim = Sim::new(cfg(), 4);
    let start = p::Command::StartActor(p::CommandStartActor {
        actor_id: "a1".into(),
        generation: 3,
        name: "counter".into(),
        key: "k".into(),
    });
    let idx = sim.engine.command(start.clone());
    sim.run();
    assert_eq!(sim.starts.len(), 1);
    assert_eq!(sim.starts[0].generation, 3);
    assert!(sim
        .engine
        .received
        .iter()
        .any(|m| matches!(m, p::ToEngine::AckCommands(a) if a.last_command_index == idx)));
    // The Running event reached the engine.
    assert_eq!(sim.engine.last_event_index, Some(0));

    // A duplicate (re-sent after a reconnect) is ignored.
    sim.engine.send(p::ToEnvoy::Commands(p::ToEnvoyCommands {
        commands: vec![p::CommandWrapper { index: idx, inner: start }],
    }));
    sim.run();
    assert_eq!(sim.starts.len(), 1);

    // Stop: requests for the stopping actor fail locally; the stop handler's end records Stopped.
    sim.engine.command(p::Command::StopActor(p::CommandStopActor {
        actor_id: "a1".into(),
        generation: 3,
        reason: p::StopReason::Operator,
    }));
    sim.run();
    assert_eq!(sim.stops.len(), 1);
    let r = Request::SqlExecute {
        actor_id: "a1".into(),
        generation: 3,
        sql: "SELECT 1".into(),
        params: None,
        write: false,
    };
    let id = sim.core.submit(r, RequestOptions::default(), sim.now);
    sim.run();
    assert_eq!(sim.result(id), &Err(Error::ActorStopping));

    // The stop finishes while disconnected: the event waits, and goes after the next Init.
    sim.auto_connect = false;
    sim.kill_socket();
    sim.core.actor_stopped("a1", 3, None);
    sim.run();
    sim.auto_connect = true;
    sim.reconnect();
    assert!(sim.connected());
    assert_eq!(sim.engine.hellos.last(), Some(&Some(idx + 1)), "the hello carries the last applied command");
    assert_eq!(sim.engine.last_event_index, Some(1));
    let stopped = sim.engine.received.iter().any(|m| match m {
        p::ToEngine::Events(e) => e.events.iter().any(|w| {
            matches!(&w.inner, p::Event::ActorStateUpdate(u) if matches!(u.state, p::ActorState::Stopped(_)) && w.index == 1)
        }),
        _ => false,
    });
    assert!(stopped);
    // Event 0 was acked before the reconnect, so it is not re-sent.
    let zero_sent = sim
        .engine
        .received
        .iter()
        .filter(|m| matches!(m, p::ToEngine::Events(e) if e.events.iter().any(|w| w.index == 0)))
        .count();
    assert_eq!(zero_sent, 1);
}

#[test]
fn limits_are_enforced_before_sending() {
    let mut sim = Sim::new(cfg(), 4);
    let big = "x".repeat(2_000);
    let id = sim.sql(&big, false, RequestOptions::default());
    match sim.result(id) {
        Err(Error::LimitExceeded { kind: p::LimitKind::SqlBytes, max: 1000, actual: Some(2000), .. }) => {}
        other => panic!("{other:?}"),
    }
    assert!(!sim.engine.seen.contains_key(&id));

    // The engine's maxPendingRequests caps what is on the wire; the rest waits.
    let mut sim = Sim::new(cfg(), 4);
    sim.engine.limits.max_pending_requests = 2;
    sim.kill_socket();
    sim.reconnect();
    sim.engine.answer = Answer::Hold;
    let ids: Vec<_> = (0..5).map(|i| sim.kv_get(&[i])).collect();
    assert_eq!(sim.core.in_flight(), 2);
    assert_eq!(sim.engine.seen.len(), 2);
    // Answering one lets the next go.
    sim.engine.send(p::ToEnvoy::KvResponse(p::ToEnvoyKvResponse {
        request_id: ids[0],
        data: p::KvResponseData::KvGetResponse(p::KvGetResponse { value: None }),
    }));
    sim.run();
    assert_eq!(sim.engine.seen.len(), 3);

    // The client's own queue cap.
    let mut c = cfg();
    c.max_queued_requests = 1;
    let mut sim = Sim::new(c, 4);
    sim.auto_connect = false;
    sim.kill_socket();
    let _first = sim.kv_get(b"1");
    let second = sim.kv_get(b"2");
    assert!(matches!(sim.result(second), Err(Error::LimitExceeded { kind: p::LimitKind::PendingRequests, .. })));
}

#[test]
fn engine_errors_map_to_typed_variants() {
    let mut sim = Sim::new(cfg(), 4);
    sim.engine.answer = Answer::Hold;
    let a = sim.sql("SELECT 1", false, RequestOptions::default());
    let b = sim.sql("BAD", false, RequestOptions::default());
    let c = sim.kv_get(b"k");
    sim.engine.send(p::ToEnvoy::SqliteExecuteResponse(p::ToEnvoySqliteExecuteResponse {
        request_id: a,
        result: p::SqliteExecuteResult::SqliteFenceMismatch(p::SqliteFenceMismatch { current_generation: 9 }),
    }));
    sim.engine.send(p::ToEnvoy::SqliteExecuteResponse(p::ToEnvoySqliteExecuteResponse {
        request_id: b,
        result: p::SqliteExecuteResult::SqliteError(p::SqliteError {
            code: p::SqliteErrorCode::Sqlite,
            message: "syntax error".into(),
            extended_code: Some(1),
            committed: Some(false),
            statement_index: None,
            limit: None,
        }),
    }));
    sim.engine.send(p::ToEnvoy::KvResponse(p::ToEnvoyKvResponse {
        request_id: c,
        data: p::KvResponseData::KvErrorResponse(p::KvErrorResponse {
            code: p::KvErrorCode::ActorStopping,
            message: "draining".into(),
            current_generation: None,
        }),
    }));
    // An answer with an unknown id is ignored.
    sim.engine.send(p::ToEnvoy::KvResponse(p::ToEnvoyKvResponse {
        request_id: 99_999,
        data: p::KvResponseData::KvPutResponse,
    }));
    sim.run();
    assert_eq!(sim.result(a), &Err(Error::FenceMismatch { current_generation: Some(9) }));
    assert_eq!(
        sim.result(b),
        &Err(Error::Sql {
            code: p::SqliteErrorCode::Sqlite,
            extended_code: Some(1),
            message: "syntax error".into(),
            committed: Some(false),
            statement_index: None
        })
    );
    assert_eq!(sim.result(c), &Err(Error::ActorStopping));
    assert!(sim.connected());
}

#[test]
fn an_undecodable_frame_drops_the_socket_and_reconnects() {
    let mut sim = Sim::new(cfg(), 4);
    sim.auto_connect = false;
    sim.core.frame_received(&[0xff, 0xff, 0xff], sim.now);
    sim.run();
    assert!(!sim.connected());
    assert!(!sim.open);
    assert!(matches!(sim.states.last(), Some(ConnectionState::Reconnecting { .. })));
}

mod properties {
    //! Random interleavings of submissions, answers, link failures and time:
    //! every request gets exactly one result, writes reach the engine at most
    //! once, reads at most twice, and each result agrees with what the engine saw.

    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Step {
        Write,
        Read,
        SqlRead {
            idempotent: bool,
        },
        SqlWrite,
        /// The engine answers up to n held requests.
        Answer(usize),
        /// The link dies (answers in flight are lost).
        Kill,
        /// Time passes (reconnects, timeouts, liveness).
        Advance(u64),
        /// The engine pings.
        Ping,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => Just(Step::Write),
            3 => Just(Step::Read),
            2 => any::<bool>().prop_map(|idempotent| Step::SqlRead { idempotent }),
            2 => Just(Step::SqlWrite),
            4 => (1usize..8).prop_map(Step::Answer),
            1 => Just(Step::Kill),
            2 => (1u64..2_000).prop_map(Step::Advance),
            1 => Just(Step::Ping),
        ]
    }

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Kind {
        Write,
        Read,
        SqlRead { idempotent: bool },
        SqlWrite,
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]
        #[test]
        fn every_request_is_settled_once_and_never_duplicated(
            steps in proptest::collection::vec(step(), 1..60),
            with_timeouts in any::<bool>(),
        ) {
            let mut c = cfg();
            c.request_timeout_ms = if with_timeouts { Some(1_500) } else { None };
            let mut sim = Sim::new(c, 4);
            sim.engine.answer = Answer::Hold;
            let mut kinds: HashMap<RequestId, Kind> = HashMap::new();
            for s in steps {
                match s {
                    Step::Write => { kinds.insert(sim.kv_put(b"k"), Kind::Write); }
                    Step::Read => { kinds.insert(sim.kv_get(b"k"), Kind::Read); }
                    Step::SqlRead { idempotent } => {
                        let id = sim.sql("SELECT 1", false, RequestOptions { idempotent, timeout_ms: None });
                        kinds.insert(id, Kind::SqlRead { idempotent });
                    }
                    Step::SqlWrite => { kinds.insert(sim.sql("INSERT", true, RequestOptions::default()), Kind::SqlWrite); }
                    Step::Answer(n) => { sim.engine.answer_held(n); sim.run(); }
                    Step::Kill => { if sim.open { sim.kill_socket(); } }
                    Step::Advance(ms) => sim.advance(ms),
                    Step::Ping => {
                        if sim.open {
                            sim.engine.send(p::ToEnvoy::Ping(p::ToEnvoyPing { ts: 1 }));
                            sim.run();
                        }
                    }
                }
            }
            // Settle: the link comes back, the engine answers everything, then close.
            sim.auto_connect = true;
            sim.engine.answer = Answer::Now;
            for _ in 0..20 {
                sim.engine.answer_held(usize::MAX);
                sim.run();
                sim.advance(5_000);
            }
            sim.core.close(sim.now);
            sim.run();
            sim.advance(10_000);
            prop_assert!(sim.core.is_closed());
            for (id, kind) in &kinds {
                let seen = sim.engine.seen.get(id).copied().unwrap_or(0);
                let result = sim.results.get(id);
                prop_assert!(result.is_some(), "request {} ({:?}) never settled", id, kind);
                let retryable = matches!(kind, Kind::Read | Kind::SqlRead { idempotent: true });
                prop_assert!(seen <= if retryable { 2 } else { 1 }, "request {} ({:?}) reached the engine {} times", id, kind, seen);
                match result.unwrap() {
                    Ok(_) => prop_assert!(seen >= 1),
                    Err(Error::IndeterminateResult) => prop_assert!(seen >= 1, "indeterminate but never sent"),
                    Err(Error::Timeout { sent: false, .. }) | Err(Error::Closed) => prop_assert_eq!(seen, 0),
                    Err(Error::Timeout { sent: true, .. }) => prop_assert!(seen >= 1),
                    Err(other) => prop_assert!(false, "unexpected {:?}", other),
                }
            }
        }
    }
}

/// Protocol v5 in the core: keys and re-sends, batches, transactions, streams.
mod v5;
/// Protocol v6 in the core: ACTOR_UNAVAILABLE and MOVED, at v6 and as older engines send them.
mod v6;
