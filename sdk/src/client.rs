//! `Client`: a cheap, cloneable handle to one connection (driver task).

use crate::actor::{ActorContext, ActorHandle};
use crate::config::ClientConfig;
use crate::core::{ActorInfo, ConnectionState, Core, Request, RequestOptions, Response, SessionInfo};
use crate::driver::{Command, Driver};
use crate::error::{Error, Result};
use crate::runtime::{boxed, Handler, MaybeSend, MaybeSync, Runtime};
use futures_channel::{mpsc, oneshot};
use futures_util::future::{select, Either};
use std::future::Future;
use std::sync::{Arc, Mutex};

/// State shared by every handle of one client.
pub(crate) struct Shared {
    /// To the driver task; when every `Shared` is dropped the driver closes the connection.
    pub(crate) commands: mpsc::UnboundedSender<Command>,
    /// Last state the driver reported.
    pub(crate) state: Mutex<ConnectionState>,
    /// Defaults of the v5 SQL features (leases, stream credit), from the config.
    pub(crate) sql_defaults: SqlDefaults,
}

/// The v5 SQL settings of `ClientConfig` that request builders need.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SqlDefaults {
    /// Lease `Db::begin` asks for unless the handle overrides it.
    pub(crate) transaction_lease_ms: u32,
    /// Credit window `Db::stream` opens with unless the handle overrides it.
    pub(crate) stream_credit_bytes: u32,
    /// Lease `Db::stream` asks for: how long the engine waits for credit.
    pub(crate) stream_lease_ms: u32,
}

/// A connection to the engine, shared by every clone. Requests from any
/// number of tasks go out on one socket, pipelined.
#[derive(Clone)]
pub struct Client {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("state", &self.state()).finish()
    }
}

impl Client {
    /// Connects with the transport this build was compiled with, and waits for
    /// the engine's Init (up to `initial_connect_timeout_ms`).
    #[cfg(feature = "native-transport")]
    pub async fn connect(config: ClientConfig) -> Result<Client> {
        let runtime = crate::transport::native::TokioRuntime::with_root_ca_pem(config.tls_root_ca_pem.as_deref())
            .map_err(crate::Error::Config)?;
        Self::connect_with(config, runtime).await
    }

    /// Connects with the transport this build was compiled with, and waits for
    /// the engine's Init (up to `initial_connect_timeout_ms`).
    #[cfg(all(feature = "wasm-transport", not(feature = "native-transport")))]
    pub async fn connect(config: ClientConfig) -> Result<Client> {
        Self::connect_with(config, crate::transport::wasm::WasmRuntime::new()).await
    }

    /// Connects over any [`Runtime`] (a custom transport, or a test double).
    pub async fn connect_with<R: Runtime>(config: ClientConfig, rt: R) -> Result<Client> {
        config.validate()?;
        let seed = rt.seed();
        let envoy_key =
            if config.envoy_key.is_empty() { format!("envoy-{seed:016x}") } else { config.envoy_key.clone() };
        let url = config.connect_url(&envoy_key);
        let core = Core::new(config.core_config(envoy_key), seed);
        let (tx, rx) = mpsc::unbounded();
        let sql_defaults = SqlDefaults {
            transaction_lease_ms: config.transaction_lease_ms,
            stream_credit_bytes: config.stream_credit_bytes,
            stream_lease_ms: config.stream_lease_ms,
        };
        let shared = Arc::new(Shared {
            commands: tx,
            state: Mutex::new(ConnectionState::Connecting { attempt: 0 }),
            sql_defaults,
        });
        let (ready_tx, ready_rx) = oneshot::channel();
        let driver = Driver::new(rt.clone(), core, url, config.token.clone(), rx, Arc::downgrade(&shared), ready_tx);
        rt.spawn(boxed(driver.run()));
        let client = Client { shared };
        let timeout = rt.sleep(config.initial_connect_timeout_ms);
        match select(ready_rx, timeout).await {
            Either::Left((Ok(Ok(())), _)) => Ok(client),
            Either::Left((Ok(Err(e)), _)) => Err(e),
            Either::Left((Err(_), _)) => Err(Error::Closed),
            Either::Right(((), _)) => {
                let (attempts, cause) = match client.state() {
                    ConnectionState::Reconnecting { attempt, cause, .. } => (attempt, cause),
                    ConnectionState::Connecting { attempt } => (attempt + 1, "connect in progress".to_string()),
                    ConnectionState::Connected(_) => (0, "connected".to_string()),
                    ConnectionState::Closed { error: Some(e) } => (0, format!("closed: {e}")),
                    ConnectionState::Closed { error: None } => (0, "closed".to_string()),
                };
                client.close().await;
                Err(Error::Disconnected {
                    reason: crate::error::DisconnectReason::GaveUp {
                        attempts,
                        last_error: format!(
                            "no Init within {} ms (initial_connect_timeout_ms): {cause}",
                            config.initial_connect_timeout_ms
                        ),
                    },
                })
            }
        }
    }

    pub(crate) fn from_shared(shared: Arc<Shared>) -> Client {
        Client { shared }
    }

    /// The connection's current state.
    pub fn state(&self) -> ConnectionState {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// What the engine advertised while connected: the negotiated version,
    /// limits, and from v5 the engine's durability and `EngineLimits`.
    pub fn session(&self) -> Option<SessionInfo> {
        match self.state() {
            ConnectionState::Connected(s) => Some(s),
            ConnectionState::Connecting { .. }
            | ConnectionState::Reconnecting { .. }
            | ConnectionState::Closed { .. } => None,
        }
    }

    /// Runs `f` for every actor the engine starts on this envoy (also for
    /// actors started before it was registered).
    pub fn on_actor_start<F, Fut>(&self, f: F)
    where
        F: Fn(ActorContext) -> Fut + MaybeSend + MaybeSync + 'static,
        Fut: Future<Output = ()> + MaybeSend + 'static,
    {
        let h: Handler = Arc::new(move |ctx| boxed(f(ctx)));
        let _ = self.shared.commands.unbounded_send(Command::SetStartHandler(h));
    }

    /// Runs `f` when the engine stops an actor; the engine is told the actor
    /// stopped once `f` returns. Requests for a stopping actor fail with
    /// `ActorStopping` (in-flight ones still get their answers).
    pub fn on_actor_stop<F, Fut>(&self, f: F)
    where
        F: Fn(ActorContext) -> Fut + MaybeSend + MaybeSync + 'static,
        Fut: Future<Output = ()> + MaybeSend + 'static,
    {
        let h: Handler = Arc::new(move |ctx| boxed(f(ctx)));
        let _ = self.shared.commands.unbounded_send(Command::SetStopHandler(h));
    }

    /// Finds or creates the actor `(name, key)` and places it on this envoy
    /// (for short-lived hosts that do not wait for start commands).
    pub async fn get_or_create_actor(&self, name: &str, key: &str) -> Result<ActorHandle> {
        let request = Request::GetOrCreateActor { name: name.to_string(), key: key.to_string() };
        match self.submit(request, RequestOptions::default()).await? {
            Response::Actor(ok) => Ok(ActorContext::new(
                self.clone(),
                ActorInfo {
                    actor_id: ok.actor_id,
                    name: name.to_string(),
                    key: key.to_string(),
                    generation: ok.generation,
                },
            )),
            other => Err(Error::Protocol(format!("get-or-create answered with {}", other.kind()))),
        }
    }

    /// A handle to an actor whose id and generation are known.
    pub fn actor(&self, info: ActorInfo) -> ActorHandle {
        ActorContext::new(self.clone(), info)
    }

    /// Sends any request and waits for its answer (the typed APIs build on
    /// this). A write-capable request gets a request key here, so on a v5
    /// connection it is exactly-once across reconnects. Streams need
    /// [`Db::stream`](crate::Db::stream), which receives their rows.
    pub async fn submit(&self, request: Request, opts: RequestOptions) -> Result<Response> {
        let (reply, rx) = oneshot::channel();
        self.shared.commands.unbounded_send(Command::Submit { request, opts, reply }).map_err(|_| Error::Closed)?;
        rx.await.unwrap_or(Err(Error::Closed))
    }

    /// Sends a request whose answer nobody waits for (a best-effort rollback
    /// from a destructor). Write-capable requests still get their key.
    pub(crate) fn submit_detached(&self, request: Request, opts: RequestOptions) {
        let (reply, _) = oneshot::channel();
        let _ = self.shared.commands.unbounded_send(Command::Submit { request, opts, reply });
    }

    pub(crate) fn sql_defaults(&self) -> SqlDefaults {
        self.shared.sql_defaults
    }

    pub(crate) async fn intent(&self, actor: &ActorInfo, intent: envoy_protocol::ActorIntent) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.shared
            .commands
            .unbounded_send(Command::ActorIntent {
                actor_id: actor.actor_id.clone(),
                generation: actor.generation,
                intent,
                reply,
            })
            .map_err(|_| Error::Closed)?;
        rx.await.unwrap_or(Err(Error::Closed))
    }

    /// Closes gracefully: queued requests fail with `Closed`, in-flight ones
    /// are answered (up to `close_timeout_ms`), the engine is told this envoy
    /// is stopping, and no reconnect follows. Returns once closed.
    pub async fn close(&self) {
        let (done, rx) = oneshot::channel();
        if self.shared.commands.unbounded_send(Command::Close { done }).is_ok() {
            let _ = rx.await;
        }
    }
}
