//! `ActorContext`: one actor generation placed on this envoy, with its KV and SQL.

use crate::client::Client;
use crate::core::ActorInfo;
use crate::error::Result;
use crate::kv::Kv;
use crate::sql::Db;

/// An actor placed on this envoy, as given to the start/stop handlers or
/// returned by `get_or_create_actor`. Every request it makes carries its
/// generation: after the actor moved on, requests fail with `FenceMismatch`.
#[derive(Clone, Debug)]
pub struct ActorContext {
    client: Client,
    info: ActorInfo,
    /// Set only in the context given to `on_actor_stop`, so a host can tell
    /// a move (Replaced) from an operator stop or an engine shutdown.
    stop_reason: Option<envoy_protocol::StopReason>,
}

/// What `get_or_create_actor` returns: the same as a handler's context.
pub type ActorHandle = ActorContext;

impl ActorContext {
    pub(crate) fn new(client: Client, info: ActorInfo) -> Self {
        ActorContext { client, info, stop_reason: None }
    }

    pub fn id(&self) -> &str {
        &self.info.actor_id
    }

    pub fn name(&self) -> &str {
        &self.info.name
    }

    pub fn key(&self) -> &str {
        &self.info.key
    }

    pub fn generation(&self) -> u64 {
        self.info.generation
    }

    pub fn info(&self) -> &ActorInfo {
        &self.info
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The same actor at another generation (e.g. to show fencing at work).
    pub fn with_generation(&self, generation: u64) -> ActorContext {
        ActorContext {
            client: self.client.clone(),
            info: ActorInfo { generation, ..self.info.clone() },
            stop_reason: None,
        }
    }

    /// Why the engine is stopping this actor: set in the context handed to
    /// `on_actor_stop`, `None` elsewhere. Engines older than protocol v3 send
    /// no reason (`StopReason::Unspecified`).
    pub fn stop_reason(&self) -> Option<envoy_protocol::StopReason> {
        self.stop_reason
    }

    pub(crate) fn stopping_because(mut self, reason: envoy_protocol::StopReason) -> Self {
        self.stop_reason = Some(reason);
        self
    }

    /// The actor's key-value store.
    pub fn kv(&self) -> Kv {
        Kv::new(self.client.clone(), self.info.actor_id.clone(), self.info.generation)
    }

    /// The actor's SQLite database.
    pub fn sql(&self) -> Db {
        Db::new(self.client.clone(), self.info.actor_id.clone(), self.info.generation)
    }

    /// Asks the engine to stop this actor (needs protocol v3; `RemoteUnavailable` otherwise).
    pub async fn request_stop(&self) -> Result<()> {
        self.client.intent(&self.info, envoy_protocol::ActorIntent::Stop).await
    }

    /// Asks the engine to put this actor to sleep (needs protocol v3).
    pub async fn request_sleep(&self) -> Result<()> {
        self.client.intent(&self.info, envoy_protocol::ActorIntent::Sleep).await
    }
}
