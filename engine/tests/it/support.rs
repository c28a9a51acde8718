//! Test support: a RAW protocol client (tokio-tungstenite + envoy-protocol, not
//! the SDK), engine start helpers, and a calibrated slow query.

use envoy_engine::{Config, Engine, RunningEngine};
use envoy_protocol::negotiation::client_offer;
use envoy_protocol::*;
use futures_util::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How long a test waits for any one answer before failing.
pub const WAIT: Duration = Duration::from_secs(20);

/// A config with short timings for tests.
pub fn test_config(dir: &Path) -> Config {
    let mut c = Config::for_tests(dir);
    c.ping_interval = Duration::from_millis(200);
    // Long enough that a test which stops reading for a while (HTTP calls, CLI runs)
    // is not dropped as silent; tests about loss use `start_lossy`.
    c.envoy_lost_threshold = Duration::from_secs(10);
    c.actor_stop_threshold = Duration::from_secs(5);
    c
}

pub async fn start(dir: &Path) -> RunningEngine {
    start_with(test_config(dir)).await
}

/// An engine whose envoy lost threshold is 1.5 s (tests of resume and loss).
pub async fn start_lossy(dir: &Path) -> RunningEngine {
    let mut c = test_config(dir);
    c.envoy_lost_threshold = Duration::from_millis(1500);
    start_with(c).await
}

pub async fn start_with(config: Config) -> RunningEngine {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .with_ansi(false)
        .try_init();
    Engine::start(config).await.expect("engine starts")
}

/// A raw envoy connection.
pub struct RawClient {
    pub ws: Ws,
    pub version: u16,
    /// The Init (at v5: the v4 part of InitV5).
    pub init: ToEnvoyInit,
    /// At v5: the InitV5 as received (None below v5).
    pub init_v5: Option<ToEnvoyInitV5>,
    /// Unsolicited `ToEnvoySqliteTransactionEnded` messages, in order (v5).
    pub transactions_ended: Vec<ToEnvoySqliteTransactionEnded>,
    /// Stream messages (chunks and failures) not yet taken, in arrival order (v5).
    stream_messages: Vec<ToEnvoy>,
    /// Every command received, in order.
    pub commands: Vec<CommandWrapper>,
    /// Pings received (ts).
    pub pings: Vec<i64>,
    /// Events acks received.
    pub event_acks: Vec<u64>,
    /// Answers not yet taken, by request id.
    answers: HashMap<u32, ToEnvoy>,
    /// Order in which answers arrived (request ids).
    pub answer_order: Vec<u32>,
    /// Close frame received, if any.
    pub closed: Option<(u16, String)>,
    next_request_id: u32,
    /// Whether pings are answered automatically.
    pub auto_pong: bool,
    /// Whether two answers may share a request id (a fuzzer's mutated frames reuse ids).
    pub duplicate_ids_allowed: bool,
    pub namespace: String,
    pub envoy_key: String,
}

/// Options of a connection.
#[derive(Clone)]
pub struct ConnectOpts {
    pub namespace: String,
    pub envoy_key: String,
    pub pool: String,
    pub min_version: u16,
    pub max_version: u16,
    pub token: Option<String>,
    pub last_command_index: Option<u64>,
}

impl ConnectOpts {
    pub fn new(namespace: &str, envoy_key: &str) -> Self {
        Self {
            namespace: namespace.into(),
            envoy_key: envoy_key.into(),
            pool: "default".into(),
            min_version: 1,
            max_version: IMPLEMENTED_PROTOCOL_VERSION,
            token: None,
            last_command_index: None,
        }
    }
    /// A v5 connection (offers exactly v5).
    pub fn v5(namespace: &str, envoy_key: &str) -> Self {
        Self::new(namespace, envoy_key).version(5)
    }
    pub fn version(mut self, v: u16) -> Self {
        self.min_version = v;
        self.max_version = v;
        self
    }
    pub fn token(mut self, t: &str) -> Self {
        self.token = Some(t.into());
        self
    }
    pub fn resume(mut self, last_command_index: Option<u64>) -> Self {
        self.last_command_index = last_command_index;
        self
    }
}

/// Outcome of an upgrade attempt.
pub enum Upgrade {
    Ok(Box<Ws>, u16),
    Http(u16, HashMap<String, String>),
}

pub async fn upgrade(addr: SocketAddr, o: &ConnectOpts) -> Upgrade {
    upgrade_with_headers(addr, o, &[]).await
}

impl RawClient {
    pub async fn connect(addr: SocketAddr, o: ConnectOpts) -> RawClient {
        let (mut ws, version) = match upgrade(addr, &o).await {
            Upgrade::Ok(ws, v) => (*ws, v),
            Upgrade::Http(status, _) => panic!("upgrade refused with HTTP {status}"),
        };
        let hello = ToEngine::Metadata(ToEngineMetadata {
            envoy_key: o.envoy_key.clone(),
            pool_name: o.pool.clone(),
            version: 1,
            metadata: Default::default(),
            last_command_index: o.last_command_index,
        });
        ws.send(Message::Binary(encode_to_engine(&hello, version).unwrap().into())).await.unwrap();
        let mut c = RawClient {
            ws,
            version,
            init: ToEnvoyInit {
                envoy_id: String::new(),
                last_event_index: None,
                metadata: ProtocolMetadata {
                    ping_interval_ms: 0,
                    envoy_lost_threshold_ms: 0,
                    actor_stop_threshold_ms: 0,
                    max_frame_bytes: 0,
                    limits: None,
                    sql_limits: None,
                },
            },
            init_v5: None,
            transactions_ended: Vec::new(),
            stream_messages: Vec::new(),
            commands: Vec::new(),
            pings: Vec::new(),
            event_acks: Vec::new(),
            answers: HashMap::new(),
            answer_order: Vec::new(),
            closed: None,
            next_request_id: 1,
            auto_pong: true,
            duplicate_ids_allowed: false,
            namespace: o.namespace.clone(),
            envoy_key: o.envoy_key.clone(),
        };
        match c.next_message().await {
            Some(ToEnvoy::Init(init)) if version < 5 => c.init = init,
            Some(ToEnvoy::InitV5(init)) if version >= 5 => {
                c.init = ToEnvoyInit {
                    envoy_id: init.envoy_id.clone(),
                    last_event_index: init.last_event_index,
                    metadata: init.metadata.clone(),
                };
                c.init_v5 = Some(init);
            }
            other => panic!("expected the Init of v{version}, got {other:?}"),
        }
        c
    }

    pub async fn send(&mut self, msg: &ToEngine) {
        let bytes = encode_to_engine(msg, self.version).expect("encodable at this version");
        self.ws.send(Message::Binary(bytes.into())).await.expect("send");
    }

    pub async fn send_raw(&mut self, bytes: Vec<u8>) {
        self.ws.send(Message::Binary(bytes.into())).await.expect("send");
    }

    /// Reads one protocol message (None when the socket closed). Records closes.
    pub async fn next_message(&mut self) -> Option<ToEnvoy> {
        loop {
            let m = tokio::time::timeout(WAIT, self.ws.next()).await.expect("timed out waiting for a frame");
            match m {
                Some(Ok(Message::Binary(b))) => {
                    return Some(decode_to_envoy(&b, self.version, &DecodeLimits::default()).expect("decodable"))
                }
                Some(Ok(Message::Close(f))) => {
                    self.closed = Some(f.map_or((1005, String::new()), |f| (u16::from(f.code), f.reason.to_string())));
                    return None;
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// Reads one message and files it. Returns false once the socket closed.
    pub async fn pump(&mut self) -> bool {
        let Some(m) = self.next_message().await else { return false };
        self.file(m).await;
        true
    }

    async fn file(&mut self, m: ToEnvoy) {
        match m {
            ToEnvoy::Ping(p) => {
                self.pings.push(p.ts);
                if self.auto_pong {
                    self.send(&ToEngine::Pong(ToEnginePong { ts: p.ts })).await;
                }
            }
            ToEnvoy::Commands(c) => self.commands.extend(c.commands),
            ToEnvoy::AckEvents(a) => self.event_acks.push(a.last_event_index),
            ToEnvoy::Init(_) => panic!("a second Init"),
            ToEnvoy::KvResponse(ref r) => self.store(r.request_id, m.clone()),
            ToEnvoy::GetOrCreateActorResponse(ref r) => self.store(r.request_id, m.clone()),
            ToEnvoy::SqliteExecResponse(ref r) => self.store(r.request_id, m.clone()),
            ToEnvoy::SqliteExecuteResponse(ref r) => self.store(r.request_id, m.clone()),
            ToEnvoy::InitV5(_) => panic!("a second Init"),
            ToEnvoy::SqliteExecResponseV5(ref r) => self.store(r.request_id, m.clone()),
            ToEnvoy::SqliteExecuteResponseV5(ref r) => self.store(r.request_id, m.clone()),
            ToEnvoy::SqliteBatchResponse(ref r) => self.store(r.request_id, m.clone()),
            ToEnvoy::SqliteBeginResponse(ref r) => self.store(r.request_id, m.clone()),
            ToEnvoy::SqliteTransactionExecuteResponse(ref r) => self.store(r.request_id, m.clone()),
            ToEnvoy::SqliteCommitResponse(ref r) => self.store(r.request_id, m.clone()),
            ToEnvoy::SqliteRollbackResponse(ref r) => self.store(r.request_id, m.clone()),
            ToEnvoy::SqliteTransactionEnded(e) => self.transactions_ended.push(e),
            // A stream has many messages under one request id: kept in order apart.
            ToEnvoy::SqliteStreamChunk(_) | ToEnvoy::SqliteStreamFailed(_) => self.stream_messages.push(m),
        }
    }

    fn store(&mut self, rid: u32, m: ToEnvoy) {
        self.answer_order.push(rid);
        let first = self.answers.insert(rid, m).is_none();
        assert!(first || self.duplicate_ids_allowed, "two answers for request {rid}");
    }

    pub fn rid(&mut self) -> u32 {
        let r = self.next_request_id;
        self.next_request_id += 1;
        r
    }

    /// Whether the answer to `rid` has arrived (without waiting).
    pub fn answer_ready(&self, rid: u32) -> bool {
        self.answers.contains_key(&rid)
    }

    /// Waits for the answer to `rid`.
    pub async fn answer(&mut self, rid: u32) -> ToEnvoy {
        loop {
            if let Some(a) = self.answers.remove(&rid) {
                return a;
            }
            assert!(self.pump().await, "socket closed while waiting for request {rid}: {:?}", self.closed);
        }
    }

    /// Waits for the next stream message (chunk or failure) of stream `rid`.
    pub async fn stream_message(&mut self, rid: u32) -> ToEnvoy {
        loop {
            let pos = self.stream_messages.iter().position(|m| match m {
                ToEnvoy::SqliteStreamChunk(c) => c.request_id == rid,
                ToEnvoy::SqliteStreamFailed(f) => f.request_id == rid,
                _ => false,
            });
            if let Some(i) = pos {
                return self.stream_messages.remove(i);
            }
            assert!(self.pump().await, "socket closed while waiting for stream {rid}: {:?}", self.closed);
        }
    }

    /// Pumps until `pred` holds on the client.
    pub async fn until(&mut self, mut pred: impl FnMut(&RawClient) -> bool) {
        while !pred(self) {
            assert!(self.pump().await, "socket closed: {:?}", self.closed);
        }
    }

    /// Pumps until the socket closes; returns the close code and reason.
    pub async fn until_closed(&mut self) -> (u16, String) {
        while self.pump().await {}
        self.closed.clone().unwrap_or((1006, "no close frame".into()))
    }

    pub async fn get_or_create(&mut self, name: &str, key: &str) -> GetOrCreateActorOk {
        let rid = self.rid();
        self.send(&ToEngine::GetOrCreateActor(ToEngineGetOrCreateActor {
            request_id: rid,
            name: name.into(),
            key: key.into(),
        }))
        .await;
        match self.answer(rid).await {
            ToEnvoy::GetOrCreateActorResponse(r) => match r.result {
                GetOrCreateActorResult::GetOrCreateActorOk(ok) => ok,
                GetOrCreateActorResult::GetOrCreateActorError(e) => panic!("get-or-create failed: {e:?}"),
            },
            other => panic!("unexpected {other:?}"),
        }
    }

    /// Acks every command received so far.
    pub async fn ack_all(&mut self) {
        if let Some(last) = self.commands.last().map(|c| c.index) {
            self.send(&ToEngine::AckCommands(ToEngineAckCommands { last_command_index: last })).await;
        }
    }

    /// Reports (actor, generation) running with event `index`.
    pub async fn report_running(&mut self, index: u64, actor_id: &str, generation: u64) {
        self.send(&ToEngine::Events(ToEngineEvents {
            events: vec![EventWrapper {
                index,
                inner: Event::ActorStateUpdate(EventActorStateUpdate {
                    actor_id: actor_id.into(),
                    generation,
                    state: ActorState::Running,
                }),
            }],
        }))
        .await;
    }

    pub async fn send_execute(
        &mut self,
        actor: &GetOrCreateActorOk,
        sql: &str,
        params: Vec<Value>,
        write: bool,
    ) -> u32 {
        let gen = actor.generation;
        self.send_execute_gen(&actor.actor_id, gen, sql, params, write).await
    }

    pub async fn send_execute_gen(
        &mut self,
        actor_id: &str,
        generation: u64,
        sql: &str,
        params: Vec<Value>,
        write: bool,
    ) -> u32 {
        let rid = self.rid();
        let request =
            SqliteExecuteRequest { actor_id: actor_id.into(), generation, sql: sql.into(), params: Some(params) };
        let msg = if write {
            ToEngine::SqliteExecuteWrite(ToEngineSqliteExecuteWrite { request_id: rid, request })
        } else {
            ToEngine::SqliteExecute(ToEngineSqliteExecute { request_id: rid, request })
        };
        self.send(&msg).await;
        rid
    }

    pub async fn execute_result(&mut self, rid: u32) -> SqliteExecuteResult {
        match self.answer(rid).await {
            ToEnvoy::SqliteExecuteResponse(r) => r.result,
            other => panic!("unexpected {other:?}"),
        }
    }

    pub async fn execute(&mut self, actor: &GetOrCreateActorOk, sql: &str, params: Vec<Value>) -> SqliteExecuteResult {
        let rid = self.send_execute(actor, sql, params, false).await;
        self.execute_result(rid).await
    }

    pub async fn execute_write(
        &mut self,
        actor: &GetOrCreateActorOk,
        sql: &str,
        params: Vec<Value>,
    ) -> SqliteExecuteResult {
        let rid = self.send_execute(actor, sql, params, true).await;
        self.execute_result(rid).await
    }

    pub async fn send_exec(&mut self, actor_id: &str, generation: u64, sql: &str) -> u32 {
        let rid = self.rid();
        self.send(&ToEngine::SqliteExec(ToEngineSqliteExec {
            request_id: rid,
            request: SqliteExecRequest { actor_id: actor_id.into(), generation, sql: sql.into() },
        }))
        .await;
        rid
    }

    pub async fn exec(&mut self, actor: &GetOrCreateActorOk, sql: &str) -> SqliteExecResult {
        let rid = self.send_exec(&actor.actor_id, actor.generation, sql).await;
        match self.answer(rid).await {
            ToEnvoy::SqliteExecResponse(r) => r.result,
            other => panic!("unexpected {other:?}"),
        }
    }

    pub async fn send_kv(&mut self, actor_id: &str, generation: u64, data: KvRequestData) -> u32 {
        let rid = self.rid();
        self.send(&ToEngine::KvRequest(ToEngineKvRequest {
            request_id: rid,
            actor_id: actor_id.into(),
            generation,
            data,
        }))
        .await;
        rid
    }

    pub async fn kv(&mut self, actor: &GetOrCreateActorOk, data: KvRequestData) -> KvResponseData {
        let rid = self.send_kv(&actor.actor_id, actor.generation, data).await;
        match self.answer(rid).await {
            ToEnvoy::KvResponse(r) => r.data,
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// v5 requests over the raw wire.
impl RawClient {
    /// Sends any ToEngine message with a fresh request id set by `build`; returns the id.
    pub async fn send_with_rid(&mut self, build: impl FnOnce(u32) -> ToEngine) -> u32 {
        let rid = self.rid();
        let msg = build(rid);
        self.send(&msg).await;
        rid
    }

    /// Sends a `ToEngineSqliteExecuteV5` (writer: as ExecuteWrite); returns its request id.
    pub async fn send_execute_v5(
        &mut self,
        actor: &GetOrCreateActorOk,
        sql: &str,
        params: Vec<Value>,
        writer: bool,
        request_key: Option<RequestKey>,
    ) -> u32 {
        let request = SqliteExecuteRequestV5 {
            actor_id: actor.actor_id.clone(),
            generation: actor.generation,
            statement: SqliteStatement { sql: sql.into(), params: Some(params) },
            writer,
            request_key,
        };
        self.send_with_rid(|request_id| ToEngine::SqliteExecuteV5(ToEngineSqliteExecuteV5 { request_id, request }))
            .await
    }

    /// Waits for the `ToEnvoySqliteExecuteResponseV5` of `rid`.
    pub async fn execute_v5_answer(&mut self, rid: u32) -> ToEnvoySqliteExecuteResponseV5 {
        match self.answer(rid).await {
            ToEnvoy::SqliteExecuteResponseV5(r) => r,
            other => panic!("expected ExecuteResponseV5, got {other:?}"),
        }
    }

    /// ExecuteV5 and its answer.
    pub async fn execute_v5(
        &mut self,
        actor: &GetOrCreateActorOk,
        sql: &str,
        params: Vec<Value>,
        writer: bool,
        request_key: Option<RequestKey>,
    ) -> ToEnvoySqliteExecuteResponseV5 {
        let rid = self.send_execute_v5(actor, sql, params, writer, request_key).await;
        self.execute_v5_answer(rid).await
    }

    /// ExecV5 and its answer.
    pub async fn exec_v5(
        &mut self,
        actor: &GetOrCreateActorOk,
        sql: &str,
        request_key: Option<RequestKey>,
    ) -> ToEnvoySqliteExecResponseV5 {
        let request = SqliteExecRequestV5 {
            actor_id: actor.actor_id.clone(),
            generation: actor.generation,
            sql: sql.into(),
            request_key,
        };
        let rid =
            self.send_with_rid(|request_id| ToEngine::SqliteExecV5(ToEngineSqliteExecV5 { request_id, request })).await;
        match self.answer(rid).await {
            ToEnvoy::SqliteExecResponseV5(r) => r,
            other => panic!("expected ExecResponseV5, got {other:?}"),
        }
    }

    /// Sends a `ToEngineSqliteBatch`; returns its request id.
    pub async fn send_batch(
        &mut self,
        actor: &GetOrCreateActorOk,
        mode: SqliteTransactionMode,
        statements: Vec<SqliteStatement>,
        request_key: Option<RequestKey>,
    ) -> u32 {
        let request = SqliteBatchRequest {
            actor_id: actor.actor_id.clone(),
            generation: actor.generation,
            mode,
            statements,
            request_key,
        };
        self.send_with_rid(|request_id| ToEngine::SqliteBatch(ToEngineSqliteBatch { request_id, request })).await
    }

    /// Waits for the `ToEnvoySqliteBatchResponse` of `rid`.
    pub async fn batch_answer(&mut self, rid: u32) -> ToEnvoySqliteBatchResponse {
        match self.answer(rid).await {
            ToEnvoy::SqliteBatchResponse(r) => r,
            other => panic!("expected BatchResponse, got {other:?}"),
        }
    }

    /// A batch and its answer.
    pub async fn batch(
        &mut self,
        actor: &GetOrCreateActorOk,
        mode: SqliteTransactionMode,
        statements: Vec<SqliteStatement>,
        request_key: Option<RequestKey>,
    ) -> ToEnvoySqliteBatchResponse {
        let rid = self.send_batch(actor, mode, statements, request_key).await;
        self.batch_answer(rid).await
    }
}

/// A statement without parameters.
pub fn stmt(sql: &str) -> SqliteStatement {
    SqliteStatement { sql: sql.into(), params: None }
}

/// A statement with parameters.
pub fn stmt_p(sql: &str, params: Vec<Value>) -> SqliteStatement {
    SqliteStatement { sql: sql.into(), params: Some(params) }
}

/// A request key made at `unix_ms` with `tag` as its random part (distinct tags, distinct keys).
pub fn request_key_at(unix_ms: u64, tag: u64) -> RequestKey {
    let mut k = unix_ms.to_be_bytes()[2..8].to_vec();
    k.extend_from_slice(&[0xa5, 0x5a]);
    k.extend_from_slice(&tag.to_be_bytes());
    k
}

/// A fresh request key made now.
pub fn request_key(tag: u64) -> RequestKey {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    request_key_at(now, tag)
}

/// The rows of a successful Execute.
pub fn ok(r: SqliteExecuteResult) -> ExecuteResult {
    match r {
        SqliteExecuteResult::ExecuteResult(r) => r,
        other => panic!("expected a result, got {other:?}"),
    }
}

/// The error of a failed Execute.
pub fn sql_err(r: SqliteExecuteResult) -> SqliteError {
    match r {
        SqliteExecuteResult::SqliteError(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

pub fn exec_ok(r: SqliteExecResult) -> QueryResult {
    match r {
        SqliteExecResult::QueryResult(q) => q,
        other => panic!("expected a result, got {other:?}"),
    }
}

/// SQL that keeps SQLite busy for roughly `d` (a recursive CTE counting to a calibrated number).
pub fn slow_sql(d: Duration) -> String {
    static RATE: OnceLock<f64> = OnceLock::new();
    let rate = *RATE.get_or_init(|| {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let n = 2_000_000u64;
        let t = Instant::now();
        let _: i64 = conn.query_row(&count_sql(n), [], |r| r.get(0)).unwrap();
        n as f64 / t.elapsed().as_secs_f64()
    });
    count_sql((rate * d.as_secs_f64()) as u64)
}

fn count_sql(n: u64) -> String {
    format!("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {n}) SELECT count(*) FROM c")
}

/// SQL that never finishes on its own (until interrupted).
pub const ENDLESS_SQL: &str = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c";

pub fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// Close code helper for comparisons.
pub fn code(c: CloseCode) -> u16 {
    c.into()
}

/// Waits (polling) until `f` holds, up to WAIT.
pub async fn eventually(mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < WAIT, "condition not reached in time");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---- hostile-network helpers (raw HTTP and raw WebSocket frames) ----

/// An upgrade like [`upgrade`] with extra request headers (e.g. `Origin`).
pub async fn upgrade_with_headers(addr: SocketAddr, o: &ConnectOpts, extra: &[(&str, &str)]) -> Upgrade {
    let url = format!(
        "ws://{addr}/envoys/connect?namespace={}&envoy_key={}&pool_name={}&version=1",
        o.namespace, o.envoy_key, o.pool
    );
    let mut req = url.into_client_request().unwrap();
    let offer = client_offer(o.min_version, o.max_version, o.token.as_deref()).join(", ");
    req.headers_mut().insert("sec-websocket-protocol", offer.parse().unwrap());
    for (k, v) in extra {
        req.headers_mut().insert(
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, resp)) => {
            let proto = resp.headers().get("sec-websocket-protocol").unwrap().to_str().unwrap().to_string();
            assert!(!proto.contains("token"), "the engine must never echo the token");
            let v = negotiation::parse_version_subprotocol(&proto).expect("a version subprotocol");
            Upgrade::Ok(Box::new(ws), v)
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let headers = resp
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
                .collect();
            Upgrade::Http(resp.status().as_u16(), headers)
        }
        Err(e) => panic!("upgrade failed: {e}"),
    }
}

/// The HTTP status of an upgrade attempt (101 when it was accepted).
pub async fn upgrade_status(addr: SocketAddr, o: &ConnectOpts) -> u16 {
    match upgrade(addr, o).await {
        Upgrade::Ok(..) => 101,
        Upgrade::Http(status, _) => status,
    }
}

/// Writes `request` on a fresh TCP connection and returns everything the engine
/// sends back until it closes (an error such as a reset also counts as closed).
pub async fn raw_http(addr: SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut out)).await.expect("the engine did not close the connection");
    String::from_utf8_lossy(&out).into_owned()
}

/// A WebSocket upgraded by hand on a plain TCP stream (to write frames tungstenite would refuse to).
pub async fn raw_ws_upgrade(addr: SocketAddr, namespace: &str, envoy_key: &str) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET /envoys/connect?namespace={namespace}&envoy_key={envoy_key}&pool_name=default&version=1 HTTP/1.1\r\n\
         Host: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: {}\r\n\r\n",
        negotiation::version_subprotocol(IMPLEMENTED_PROTOCOL_VERSION)
    );
    s.write_all(req.as_bytes()).await.unwrap();
    // Read the response head byte by byte so no frame byte is consumed.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        let n = tokio::time::timeout(WAIT, s.read(&mut b)).await.expect("upgrade answer").unwrap();
        assert_eq!(n, 1, "closed during the upgrade: {}", String::from_utf8_lossy(&head));
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
    s
}

/// One client frame: `first_byte` is FIN/RSV/opcode as sent; masked unless `mask` is None.
pub fn client_frame(first_byte: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut f = vec![first_byte];
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => f.push(mask_bit | n as u8),
        n if n <= 0xffff => {
            f.push(mask_bit | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(mask_bit | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(m) => {
            f.extend_from_slice(&m);
            f.extend(payload.iter().enumerate().map(|(i, b)| b ^ m[i % 4]));
        }
        None => f.extend_from_slice(payload),
    }
    f
}

/// The hello of `envoy_key` (pool `default`) as a masked binary frame at the newest version.
pub fn hello_frame(envoy_key: &str) -> Vec<u8> {
    let hello = ToEngine::Metadata(ToEngineMetadata {
        envoy_key: envoy_key.into(),
        pool_name: "default".into(),
        version: 1,
        metadata: Default::default(),
        last_command_index: None,
    });
    client_frame(0x82, &encode_to_engine(&hello, IMPLEMENTED_PROTOCOL_VERSION).unwrap(), Some([7, 1, 3, 9]))
}

/// Reads one server frame: (opcode, payload); None once the socket ends.
pub async fn read_server_frame(s: &mut tokio::net::TcpStream) -> Option<(u8, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    let mut h = [0u8; 2];
    tokio::time::timeout(WAIT, s.read_exact(&mut h)).await.expect("timed out waiting for a frame").ok()?;
    let len = match h[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            s.read_exact(&mut b).await.ok()?;
            u16::from_be_bytes(b) as usize
        }
        127 => {
            let mut b = [0u8; 8];
            s.read_exact(&mut b).await.ok()?;
            u64::from_be_bytes(b) as usize
        }
        n => n as usize,
    };
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).await.ok()?;
    Some((h[0] & 0x0f, payload))
}

/// Reads frames until the server's close frame; its code (None if the socket ended without one).
pub async fn read_close_code(s: &mut tokio::net::TcpStream) -> Option<u16> {
    while let Some((opcode, payload)) = read_server_frame(s).await {
        if opcode == 0x8 {
            return (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
        }
    }
    None
}

/// Resident set size of this process in KiB (`VmRSS` in /proc/self/status), for information.
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

/// Descriptors open in this process, and how many of them point under `dir`.
pub fn fds_under(dir: &Path) -> (usize, usize) {
    let mut total = 0;
    let mut under = 0;
    if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
        for e in entries.flatten() {
            total += 1;
            if std::fs::read_link(e.path()).is_ok_and(|p| p.starts_with(dir)) {
                under += 1;
            }
        }
    }
    (total, under)
}

/// v5 result streams: what the raw client holds of them.
impl RawClient {
    /// Stream messages (chunks, failures) of stream `rid` received and not yet taken.
    pub fn stream_messages_of(&self, rid: u32) -> usize {
        self.stream_messages
            .iter()
            .filter(|m| match m {
                ToEnvoy::SqliteStreamChunk(c) => c.request_id == rid,
                ToEnvoy::SqliteStreamFailed(f) => f.request_id == rid,
                _ => false,
            })
            .count()
    }
}
