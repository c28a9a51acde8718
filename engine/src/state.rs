//! What every task of a running engine shares: configuration, the actor
//! registry, in-flight counters, executors, sessions, drains and shutdown. Its own
//! file so the modules that need it (connections, drains, the admin API) depend on
//! this one leaf rather than on the engine's start-up code.

use crate::actor::registry::Registry;
use crate::config::Config;
use crate::connection::session::Sessions;
use crate::drain::Drains;
use crate::shutdown::{Shutdown, ShutdownTrigger, TaskTracker};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Everything the engine's tasks share.
pub struct EngineState {
    /// Immutable after start.
    pub config: Config,
    /// Executor settings derived from `config` once.
    pub exec_settings: crate::sql::executor::ExecSettings,
    /// Actors, generations, placement (persisted).
    pub registry: Registry,
    /// Every live (actor, generation): its in-flight requests and its executor.
    pub generations: crate::generations::Generations,
    /// Bytes of results held engine-wide (built, not yet flushed); every
    /// connection's budget charges its results here too.
    pub result_budget: Arc<crate::budget::ResultBudget>,
    /// Connections whose read loop is paused now because their outbox is over budget.
    pub reads_paused: std::sync::atomic::AtomicUsize,
    /// Times any read loop paused for that reason (observability).
    pub read_pauses: AtomicU64,
    /// v5 result streams open engine-wide: their bound, and a drain's way to end an actor's.
    pub streams: crate::sql::stream::StreamRegistry,
    /// Envoy sessions by (namespace, envoy key), surviving quick reconnects.
    pub sessions: Sessions,
    /// Drains in progress, so concurrent stops of one actor share one drain.
    pub drains: Drains,
    /// Fires when the engine begins shutting down.
    pub shutdown: Shutdown,
    /// Flips `shutdown`.
    pub shutdown_trigger: ShutdownTrigger,
    /// What group commits did, across every connection.
    pub group_stats: Arc<crate::sql::group::GroupStats>,
    /// Counters and histograms served at `GET /metrics`; shared with connections and lanes.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Connection tasks; shutdown waits for all of them.
    pub tasks: TaskTracker,
    /// Source of connection ids (tell an evicted connection from its successor).
    pub(crate) next_conn_id: AtomicU64,
    /// Cluster mode: this node's membership and the directory in etcd (None: one node).
    #[cfg(feature = "cluster")]
    pub cluster: Option<Arc<crate::cluster::ClusterNode>>,
    /// One async lock per actor id, serialising placements (get-or-create) of that actor.
    pub(crate) placement_locks: parking_lot::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl EngineState {
    pub fn next_conn_id(&self) -> u64 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The placement lock of `actor_id`.
    pub fn placement_lock(&self, actor_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.placement_locks.lock().entry(actor_id.to_string()).or_default().clone()
    }

    /// Whether this node must refuse to serve its actors: in cluster mode, once
    /// its etcd lease cannot be known alive (one atomic load and a clock read).
    pub fn fenced(&self) -> bool {
        #[cfg(feature = "cluster")]
        if let Some(c) = &self.cluster {
            return !c.is_serving();
        }
        false
    }

    /// Directory of one actor's files.
    pub fn actor_dir(&self, actor_id: &str) -> std::path::PathBuf {
        self.config.data_dir.join("actors").join(actor_id)
    }
}
