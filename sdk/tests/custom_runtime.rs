//! The driver over a custom `Runtime` whose "socket" is a pair of in-memory
//! channels to a fake engine: shows that a platform only has to move bytes,
//! sleep and spawn, and checks the public API end to end without a network.

use envoy_client::core::ConnectFailure;
use envoy_client::protocol as p;
use envoy_client::runtime::{BoxFuture, FrameSender, Incoming, Runtime, Socket};
use envoy_client::{params, Client, ClientConfig, Error};
use futures_channel::mpsc;
use futures_util::StreamExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the fake engine saw, for assertions.
#[derive(Default)]
struct Seen {
    messages: Vec<p::ToEngine>,
    /// Subprotocols offered on each connect.
    offers: Vec<Vec<String>>,
}

/// A runtime whose sockets lead to an in-memory engine speaking `version`.
#[derive(Clone)]
struct Loopback {
    start: Instant,
    version: u16,
    seen: Arc<Mutex<Seen>>,
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
        1
    }
    fn sleep(&self, ms: u64) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(Duration::from_millis(ms)))
    }
    fn spawn(&self, fut: BoxFuture<'static, ()>) {
        tokio::spawn(fut);
    }
    fn connect(&self, _url: String, protocols: Vec<String>) -> BoxFuture<'static, Result<Socket, ConnectFailure>> {
        let (to_engine, from_client) = mpsc::unbounded::<Vec<u8>>();
        let (to_client, from_engine) = mpsc::unbounded::<Incoming>();
        self.seen.lock().unwrap().offers.push(protocols);
        tokio::spawn(fake_engine(self.version, from_client, to_client, self.seen.clone()));
        let protocol = Some(format!("envoy.v{}", self.version));
        Box::pin(async move {
            Ok(Socket { protocol, sender: Box::new(ChannelSender(to_engine)), incoming: Box::pin(from_engine) })
        })
    }
}

/// Answers the hello with Init, get-or-create with an actor, and SQL with the SQL text.
async fn fake_engine(
    version: u16,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    tx: mpsc::UnboundedSender<Incoming>,
    seen: Arc<Mutex<Seen>>,
) {
    let send = |msg: p::ToEnvoy| {
        let _ = tx.unbounded_send(Incoming::Frame(p::encode_to_envoy(&msg, version).unwrap()));
    };
    while let Some(bytes) = rx.next().await {
        let msg = p::decode_to_engine(&bytes, version, &p::DecodeLimits::default()).unwrap();
        seen.lock().unwrap().messages.push(msg.clone());
        match msg {
            p::ToEngine::Metadata(_) => send(p::ToEnvoy::Init(p::ToEnvoyInit {
                envoy_id: "e1".into(),
                last_event_index: None,
                metadata: p::ProtocolMetadata {
                    ping_interval_ms: 1_000,
                    envoy_lost_threshold_ms: 10_000,
                    actor_stop_threshold_ms: 1_000,
                    max_frame_bytes: p::DEFAULT_MAX_FRAME_BYTES,
                    limits: None,
                    sql_limits: None,
                },
            })),
            p::ToEngine::GetOrCreateActor(r) => {
                send(p::ToEnvoy::GetOrCreateActorResponse(p::ToEnvoyGetOrCreateActorResponse {
                    request_id: r.request_id,
                    result: p::GetOrCreateActorResult::GetOrCreateActorOk(p::GetOrCreateActorOk {
                        actor_id: format!("id-{}", r.name),
                        generation: 1,
                        created: true,
                    }),
                }))
            }
            p::ToEngine::SqliteExecute(p::ToEngineSqliteExecute { request_id, request }) => {
                send(p::ToEnvoy::SqliteExecuteResponse(p::ToEnvoySqliteExecuteResponse {
                    request_id,
                    result: p::SqliteExecuteResult::ExecuteResult(p::ExecuteResult {
                        columns: vec!["sql".into(), "param".into()],
                        rows: vec![vec![
                            p::Value::Text(request.sql),
                            request.params.and_then(|p| p.into_iter().next()).unwrap_or(p::Value::Null),
                        ]],
                        changes: 0,
                        last_insert_row_id: None,
                        route: p::SqliteRoute::Read,
                    }),
                }))
            }
            p::ToEngine::Stopping => {
                let _ = tx.unbounded_send(Incoming::Closed { code: Some(p::close::NORMAL), reason: "bye".into() });
            }
            p::ToEngine::Events(_)
            | p::ToEngine::AckCommands(_)
            | p::ToEngine::Pong(_)
            | p::ToEngine::KvRequest(_)
            | p::ToEngine::SqliteExec(_)
            | p::ToEngine::SqliteExecuteWrite(_) => {}
            // v5 members: this engine selected v4, so the SDK never sends them.
            p::ToEngine::SqliteExecV5(_)
            | p::ToEngine::SqliteExecuteV5(_)
            | p::ToEngine::SqliteBatch(_)
            | p::ToEngine::SqliteBegin(_)
            | p::ToEngine::SqliteTransactionExecute(_)
            | p::ToEngine::SqliteCommit(_)
            | p::ToEngine::SqliteRollback(_)
            | p::ToEngine::SqliteStreamOpen(_)
            | p::ToEngine::SqliteStreamCredit(_)
            | p::ToEngine::SqliteStreamCancel(_) => panic!("the SDK sent a v5 message: {}", msg.member_name()),
        }
    }
}

fn config() -> ClientConfig {
    ClientConfig { envoy_key: "loop".into(), token: Some("tok".into()), ..Default::default() }
}

#[tokio::test]
async fn the_client_runs_over_a_custom_runtime() {
    let rt = Loopback { start: Instant::now(), version: 4, seen: Arc::default() };
    let client = Client::connect_with(config(), rt.clone()).await.unwrap();
    assert_eq!(client.session().unwrap().envoy_id, "e1");
    let actor = client.get_or_create_actor("counter", "k").await.unwrap();
    assert_eq!(actor.id(), "id-counter");
    let rows = actor.sql().query("SELECT ?", params![42]).await.unwrap();
    assert_eq!(rows.first().unwrap().get::<String>("sql").unwrap(), "SELECT ?");
    assert_eq!(rows.first().unwrap().get::<i64>("param").unwrap(), 42);
    {
        let seen = rt.seen.lock().unwrap();
        // The SDK offers v6; this engine selected v4 and nothing changes for it.
        assert_eq!(
            seen.offers[0],
            ["envoy.v6", "envoy.v5", "envoy.v4", "envoy.v3", "envoy.v2", "envoy.v1", "envoy.token.tok"]
        );
        assert!(matches!(seen.messages[0], p::ToEngine::Metadata(_)), "hello first");
    }
    // Dropping every handle closes the connection gracefully.
    drop(actor);
    drop(client);
    let stopped = async {
        loop {
            if rt.seen.lock().unwrap().messages.iter().any(|m| matches!(m, p::ToEngine::Stopping)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), stopped)
        .await
        .expect("the engine hears Stopping after the last handle is dropped");
}

#[tokio::test]
async fn sql_over_a_v2_connection_is_remote_unavailable() {
    let rt = Loopback { start: Instant::now(), version: 2, seen: Arc::default() };
    let client = Client::connect_with(config(), rt.clone()).await.unwrap();
    let actor = client.get_or_create_actor("old", "k").await.unwrap();
    match actor.sql().query("SELECT 1", ()).await.unwrap_err() {
        Error::RemoteUnavailable(e) => {
            assert_eq!((e.required_version, e.target_version), (4, 2));
        }
        other => panic!("{other:?}"),
    }
    // Intents need v3.
    assert!(matches!(actor.request_stop().await.unwrap_err(), Error::RemoteUnavailable(_)));
    client.close().await;
}
