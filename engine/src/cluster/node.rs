//! This engine as a node of a cluster: its membership, the directory, and
//! what it does when its lease is lost (stops every actor at once).

use super::relay::Resolve;
use super::{ClusterError, ClusterSettings, Directory, Membership};
use crate::config::ClusterConfig;
use crate::state::EngineState;
use envoy_protocol::StopReason;
use futures_util::future::BoxFuture;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A request refused because the actor cannot be served now (answered ACTOR_UNAVAILABLE).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

impl Unavailable {
    /// The refusal for a cluster error: etcd unreachable, this node fenced, or another owner.
    pub fn from_cluster(e: &ClusterError) -> Self {
        Unavailable(match e {
            ClusterError::Fenced => "this node lost its cluster lease and serves nothing until it re-joins".into(),
            ClusterError::NotOwner { owner } => {
                format!("it is now owned by node {owner}; retry (the next get-or-create reaches it)")
            }
            other => format!("the cluster directory cannot be used now ({other})"),
        })
    }
}

/// This engine's part in a cluster.
pub struct ClusterNode {
    /// The settings it joined with.
    pub config: ClusterConfig,
    /// Its registration and lease; `is_serving` gates every request it serves as an owner.
    pub membership: Arc<Membership>,
    /// The actor directory, acting as this node.
    pub directory: Directory,
    /// Set by a node drain: actors created through this node are handed to another one.
    draining: AtomicBool,
}

impl ClusterNode {
    /// Joins the cluster of `config` (registers under a new lease).
    pub async fn join(config: &ClusterConfig) -> anyhow::Result<Arc<Self>> {
        let settings = ClusterSettings {
            endpoints: config.endpoints.clone(),
            node_id: config.node_id.clone(),
            advertise: config.advertise.clone(),
            lease_ttl: config.lease_ttl,
            prefix: config.prefix.clone(),
        };
        let membership = Membership::join(&settings).await?;
        tracing::info!(node_id = %config.node_id, lease = membership.lease_id(), ttl = ?membership.lease_ttl(),
            endpoints = ?config.endpoints, "joined the cluster");
        Ok(Arc::new(Self {
            config: config.clone(),
            directory: Directory::new(membership.clone()),
            membership,
            draining: AtomicBool::new(false),
        }))
    }

    /// This node's id.
    pub fn id(&self) -> &str {
        &self.config.node_id
    }

    /// Whether this node may serve its actors now (its lease cannot have expired yet).
    pub fn is_serving(&self) -> bool {
        self.membership.is_serving()
    }

    /// Whether a node drain began.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Marks this node draining, here and in etcd (other nodes create nothing on it).
    pub async fn begin_draining(&self) {
        self.draining.store(true, Ordering::Release);
        if let Err(e) = self.membership.set_draining(true).await {
            tracing::warn!(error = %e, "cannot publish that this node is draining");
        }
    }

    /// The operator token presented to other nodes (moving actors).
    pub fn token<'a>(&'a self, state: &'a EngineState) -> Option<&'a str> {
        self.config.token.as_deref().or(state.config.auth_token.as_deref())
    }

    /// A node's `http://` base for node-to-node calls, from its `ws://` advertise address.
    pub fn http_base(advertise: &str) -> String {
        if let Some(rest) = advertise.strip_prefix("wss://") {
            format!("https://{}", rest.trim_end_matches('/'))
        } else {
            format!("http://{}", advertise.trim_start_matches("ws://").trim_end_matches('/'))
        }
    }
}

impl Resolve for ClusterNode {
    fn owner_of<'a>(&'a self, actor_id: &'a str) -> BoxFuture<'a, Result<Option<(String, String)>, String>> {
        Box::pin(async move {
            match self.directory.get(actor_id).await {
                Ok(a) => Ok(a.map(|a| (a.namespace, a.owner))),
                Err(e) => Err(e.to_string()),
            }
        })
    }

    fn advertise<'a>(&'a self, node_id: &'a str) -> BoxFuture<'a, Option<String>> {
        Box::pin(async move {
            match self.directory.advertise_of(node_id).await {
                Ok(a) => a.filter(|a| !a.is_empty()),
                Err(e) => {
                    tracing::warn!(node_id, error = %e, "cannot look up a node");
                    None
                }
            }
        })
    }
}

/// Follows the lease: when this node is fenced — or serves under a new lease
/// it was not seen to lose (a quick re-join) — every actor it has placed stops
/// at once (admission already refuses new work; running statements are
/// interrupted and open transactions rolled back, then the drains finish).
/// They are placed again only through a generation bump in etcd.
pub fn spawn_fence_watch(state: Arc<EngineState>, node: Arc<ClusterNode>) {
    tokio::spawn(async move {
        let mut serving = node.membership.serving();
        let mut placed_under = *serving.borrow_and_update();
        let mut shutdown = state.shutdown.clone();
        loop {
            tokio::select! {
                changed = serving.changed() => if changed.is_err() { return },
                _ = shutdown.recv() => return,
            }
            let now = *serving.borrow_and_update();
            if now == placed_under {
                continue;
            }
            match now {
                Some(lease) => tracing::info!(lease, "serving again under a new cluster lease"),
                None => tracing::error!("this node lost its cluster lease: stopping every actor it serves"),
            }
            if placed_under.is_some() {
                stop_everything(&state).await;
            }
            placed_under = now;
        }
    });
}

/// Interrupts and drains every live actor of this node.
async fn stop_everything(state: &Arc<EngineState>) {
    let live: Vec<_> = state.registry.list().into_iter().filter(|a| a.state.is_live()).collect();
    for a in &live {
        if let Some(x) = state.generations.executor(&a.actor_id, a.generation) {
            x.end_transactions(crate::sql::transaction::end_reason(StopReason::EngineShutdown));
            x.interrupt();
        }
    }
    let drains = live
        .iter()
        .map(|a| crate::drain::drain(state, &a.actor_id, Some(a.generation), StopReason::EngineShutdown, true));
    for r in futures_util::future::join_all(drains).await {
        if let Err(e) = r {
            tracing::warn!(error = %e, "stopping an actor after the lease was lost failed");
        }
    }
}
