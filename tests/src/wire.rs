//! A raw envoy connection (envoy-protocol over tokio-tungstenite, not the SDK)
//! that keeps any number of requests in flight at once.
//!
//! Tests of durability need to know exactly which requests were answered: an
//! answer counts only once its frame has been read from the socket. A request
//! whose socket dies first ends with [`NoAnswer`], never with a guess. One task
//! writes frames (batched, one flush per burst), one reads them, answers pings
//! and hands each answer to the caller waiting for its request id.

use envoy_protocol::negotiation::{client_offer, parse_version_subprotocol};
use envoy_protocol::*;
use futures_util::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// The socket closed (or failed) before the answer to a request was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoAnswer;

/// Waiters by request id; `None` once the reader has stopped (nothing more will be answered).
type Waiters = Arc<Mutex<Option<HashMap<u32, oneshot::Sender<ToEnvoy>>>>>;

/// One envoy connection shared by many tasks (`&Wire` is enough to send).
pub struct Wire {
    out: mpsc::UnboundedSender<Vec<u8>>,
    waiters: Waiters,
    next_request_id: AtomicU32,
    version: u16,
    /// A frame the reader could not decode, or an answer to a request nobody asked.
    fault: Arc<Mutex<Option<String>>>,
    tasks: Vec<JoinHandle<()>>,
}

/// The protocol version this raw client speaks.
pub const WIRE_VERSION: u16 = 4;

impl Wire {
    /// Connects as envoy `envoy_key` in `namespace` (pool `default`, protocol v4, no token) and reads `Init`.
    pub async fn connect(addr: SocketAddr, namespace: &str, envoy_key: &str) -> anyhow::Result<Wire> {
        let url = format!(
            "ws://{addr}/envoys/connect?namespace={namespace}&envoy_key={envoy_key}&pool_name=default&version=1"
        );
        let mut request = url.into_client_request()?;
        // v4 on purpose: the crash harness checks what a v4 acknowledgement promises (v5
        // adds request keys on top; tests/tests/exactly_once.rs).
        let offer = client_offer(WIRE_VERSION, WIRE_VERSION, None).join(", ");
        request.headers_mut().insert("sec-websocket-protocol", offer.parse()?);
        let (mut ws, response) = tokio_tungstenite::connect_async(request).await?;
        let chosen = response
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_version_subprotocol)
            .ok_or_else(|| anyhow::anyhow!("the engine chose no version"))?;
        let hello = ToEngine::Metadata(ToEngineMetadata {
            envoy_key: envoy_key.into(),
            pool_name: "default".into(),
            version: 1,
            metadata: Default::default(),
            last_command_index: None,
        });
        ws.send(Message::Binary(encode_to_engine(&hello, chosen)?.into())).await?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Binary(b))) => match decode_to_envoy(&b, chosen, &DecodeLimits::default())? {
                    ToEnvoy::Init(_) => break,
                    other => anyhow::bail!("expected Init, got {other:?}"),
                },
                Some(Ok(Message::Close(f))) => anyhow::bail!("closed during the hello: {f:?}"),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.into()),
                None => anyhow::bail!("socket ended during the hello"),
            }
        }

        let (mut sink, mut stream) = ws.split();
        let (out, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let writer = tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                if sink.feed(Message::Binary(first.into())).await.is_err() {
                    return;
                }
                while let Ok(more) = rx.try_recv() {
                    if sink.feed(Message::Binary(more.into())).await.is_err() {
                        return;
                    }
                }
                if sink.flush().await.is_err() {
                    return;
                }
            }
        });

        let waiters: Waiters = Arc::new(Mutex::new(Some(HashMap::new())));
        let fault = Arc::new(Mutex::new(None));
        let reader = {
            let (waiters, fault, out) = (waiters.clone(), fault.clone(), out.clone());
            tokio::spawn(async move {
                let failed = |why: String| {
                    fault.lock().unwrap().get_or_insert(why);
                };
                while let Some(Ok(frame)) = stream.next().await {
                    let bytes = match frame {
                        Message::Binary(b) => b,
                        Message::Close(_) => break,
                        _ => continue,
                    };
                    let msg = match decode_to_envoy(&bytes, chosen, &DecodeLimits::default()) {
                        Ok(m) => m,
                        Err(e) => {
                            failed(format!("undecodable frame: {e}"));
                            break;
                        }
                    };
                    let rid = match &msg {
                        ToEnvoy::Ping(p) => {
                            if let Ok(pong) = encode_to_engine(&ToEngine::Pong(ToEnginePong { ts: p.ts }), chosen) {
                                let _ = out.send(pong);
                            }
                            continue;
                        }
                        ToEnvoy::KvResponse(r) => r.request_id,
                        ToEnvoy::GetOrCreateActorResponse(r) => r.request_id,
                        ToEnvoy::SqliteExecResponse(r) => r.request_id,
                        ToEnvoy::SqliteExecuteResponse(r) => r.request_id,
                        // Commands (StartActor/StopActor), event acks: nothing to do here.
                        _ => continue,
                    };
                    let waiter = waiters.lock().unwrap().as_mut().and_then(|w| w.remove(&rid));
                    match waiter {
                        // The caller may have given up waiting; the answer is then simply dropped.
                        Some(w) => {
                            let _ = w.send(msg);
                        }
                        None => failed(format!("an answer to request {rid}, which is not pending")),
                    }
                }
                // Dropping every waiter tells each caller its request went unanswered.
                waiters.lock().unwrap().take();
            })
        };
        Ok(Wire {
            out,
            waiters,
            next_request_id: AtomicU32::new(1),
            version: chosen,
            fault,
            tasks: vec![writer, reader],
        })
    }

    /// The first protocol fault seen on this connection, if any.
    pub fn fault(&self) -> Option<String> {
        self.fault.lock().unwrap().clone()
    }

    /// Sends the message `build` makes for a fresh request id and waits for its answer.
    pub async fn call(&self, build: impl FnOnce(u32) -> ToEngine) -> Result<ToEnvoy, NoAnswer> {
        let rid = self.next_request_id.fetch_add(1, Ordering::Relaxed);
        let bytes = encode_to_engine(&build(rid), self.version).expect("encodable at the negotiated version");
        let (tx, rx) = oneshot::channel();
        match self.waiters.lock().unwrap().as_mut() {
            Some(w) => {
                w.insert(rid, tx);
            }
            None => return Err(NoAnswer),
        }
        if self.out.send(bytes).is_err() {
            return Err(NoAnswer);
        }
        rx.await.map_err(|_| NoAnswer)
    }

    pub async fn get_or_create(&self, name: &str, key: &str) -> Result<GetOrCreateActorResult, NoAnswer> {
        let msg = self
            .call(|request_id| {
                ToEngine::GetOrCreateActor(ToEngineGetOrCreateActor { request_id, name: name.into(), key: key.into() })
            })
            .await?;
        match msg {
            ToEnvoy::GetOrCreateActorResponse(r) => Ok(r.result),
            other => panic!("a get-or-create answered with {other:?}"),
        }
    }

    /// `Exec`: several statements, no params.
    pub async fn exec(&self, actor_id: &str, generation: u64, sql: &str) -> Result<SqliteExecResult, NoAnswer> {
        let request = SqliteExecRequest { actor_id: actor_id.into(), generation, sql: sql.into() };
        let msg = self.call(|request_id| ToEngine::SqliteExec(ToEngineSqliteExec { request_id, request })).await?;
        match msg {
            ToEnvoy::SqliteExecResponse(r) => Ok(r.result),
            other => panic!("an Exec answered with {other:?}"),
        }
    }

    /// `Execute` (or `ExecuteWrite` when `write`): one statement with bound params.
    pub async fn execute(
        &self,
        actor_id: &str,
        generation: u64,
        sql: &str,
        params: Vec<Value>,
        write: bool,
    ) -> Result<SqliteExecuteResult, NoAnswer> {
        let request =
            SqliteExecuteRequest { actor_id: actor_id.into(), generation, sql: sql.into(), params: Some(params) };
        let msg = self
            .call(|request_id| {
                if write {
                    ToEngine::SqliteExecuteWrite(ToEngineSqliteExecuteWrite { request_id, request })
                } else {
                    ToEngine::SqliteExecute(ToEngineSqliteExecute { request_id, request })
                }
            })
            .await?;
        match msg {
            ToEnvoy::SqliteExecuteResponse(r) => Ok(r.result),
            other => panic!("an Execute answered with {other:?}"),
        }
    }

    pub async fn kv(&self, actor_id: &str, generation: u64, data: KvRequestData) -> Result<KvResponseData, NoAnswer> {
        let msg = self
            .call(|request_id| {
                ToEngine::KvRequest(ToEngineKvRequest { request_id, actor_id: actor_id.into(), generation, data })
            })
            .await?;
        match msg {
            ToEnvoy::KvResponse(r) => Ok(r.data),
            other => panic!("a KV request answered with {other:?}"),
        }
    }
}

impl Drop for Wire {
    fn drop(&mut self) {
        // Ending both halves closes the socket.
        for t in &self.tasks {
            t.abort();
        }
    }
}
