//! A scripted engine: speaks the envoy protocol over a real WebSocket and
//! answers each request the way the test says, encoded at whatever version the
//! upgrade negotiated (so the protocol crate's downgrades apply exactly as in
//! the engine). For answers the real engine cannot give on demand, such as
//! v6's `ACTOR_UNAVAILABLE` before cluster mode exists.
//!
//! It answers the hello with `ToEnvoyInitV5` (an `Init` below v5), ignores
//! events, acks and pongs, never pings (its advertised ping interval is long),
//! and sends whatever the script returns for every other message.

use envoy_protocol::negotiation::{version_subprotocol, Offer};
use envoy_protocol::*;
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::Message;

/// What the engine sends in answer to one message from the envoy (in the
/// latest types; encoded at the connection's version).
pub type Script = Arc<dyn Fn(&ToEngine) -> Vec<ToEnvoy> + Send + Sync>;

/// A scripted engine on 127.0.0.1; stops when dropped.
pub struct ScriptedEngine {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl ScriptedEngine {
    /// Listens on an ephemeral port, negotiating at most `max_version`.
    pub async fn start(max_version: u16, script: Script) -> ScriptedEngine {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, max_version, script.clone()));
            }
        });
        ScriptedEngine { addr, task }
    }

    /// `ws://ADDR` of the engine.
    pub fn endpoint(&self) -> String {
        format!("ws://{}", self.addr)
    }
}

impl Drop for ScriptedEngine {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(stream: tokio::net::TcpStream, max_version: u16, script: Script) {
    let mut chosen = None;
    // The callback's type is tungstenite's (its error is an HTTP response).
    #[allow(clippy::result_large_err)]
    let select = |request: &Request, mut response: Response| -> Result<Response, ErrorResponse> {
        let offered = request.headers().get_all("sec-websocket-protocol").iter().filter_map(|v| v.to_str().ok());
        let Some(version) = Offer::parse(offered).select(MIN_PROTOCOL_VERSION, max_version) else {
            let mut refused = ErrorResponse::new(Some("no common version".into()));
            *refused.status_mut() = StatusCode::UPGRADE_REQUIRED;
            return Err(refused);
        };
        let value = HeaderValue::from_str(&version_subprotocol(version)).expect("a header value");
        response.headers_mut().insert("sec-websocket-protocol", value);
        chosen = Some(version);
        Ok(response)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, select).await else { return };
    let Some(version) = chosen else { return };
    while let Some(Ok(message)) = ws.next().await {
        let Message::Binary(bytes) = message else { continue };
        let msg = decode_to_engine(&bytes, version, &DecodeLimits::default()).expect("the envoy's frames decode");
        let answers = match &msg {
            ToEngine::Metadata(_) => vec![init()],
            _ => script(&msg),
        };
        for answer in answers {
            let frame = encode_to_envoy(&answer, version).expect("the script's answers travel at this version");
            if ws.send(Message::Binary(frame.into())).await.is_err() {
                return;
            }
        }
    }
}

fn init() -> ToEnvoy {
    ToEnvoy::InitV5(ToEnvoyInitV5 {
        envoy_id: "scripted".into(),
        last_event_index: None,
        metadata: ProtocolMetadata {
            ping_interval_ms: 60_000,
            envoy_lost_threshold_ms: 180_000,
            actor_stop_threshold_ms: 5_000,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            limits: Some(Limits {
                max_request_bytes: 1 << 20,
                max_response_bytes: 1 << 20,
                max_kv_key_bytes: 2048,
                max_kv_value_bytes: 1 << 16,
                max_kv_batch_entries: 128,
                max_pending_requests: 1000,
            }),
            sql_limits: Some(SqlLimits {
                max_sql_bytes: 100_000,
                max_params: 999,
                max_value_bytes: 1 << 20,
                max_statement_ms: 0,
            }),
        },
        metadata_v5: ProtocolMetadataV5 {
            durability: Durability::Fsync,
            limits: EngineLimits {
                max_connection_outbox_bytes: 64 << 20,
                max_result_memory_bytes: 64 << 20,
                max_actors_per_connection: 0,
                max_open_actor_databases: 1000,
                group_commit_max_requests: 64,
                group_commit_max_delay_us: 500,
                request_key_retention_ms: 24 * 3600 * 1000,
                max_recorded_result_bytes: 64 * 1024,
                min_transaction_lease_ms: 100,
                max_transaction_lease_ms: 60_000,
                max_transaction_wait_ms: 5_000,
                max_open_transactions: 16,
                max_batch_statements: 1000,
                stream_window_bytes: 1 << 20,
                min_stream_lease_ms: 100,
                max_stream_lease_ms: 60_000,
                max_open_streams: 16,
            },
        },
    })
}
