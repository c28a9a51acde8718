//! The running engine: shared state, start and shutdown.

use crate::actor::registry::{ActorRecord, Registry};
use crate::config::Config;
use crate::connection::session::Sessions;
use crate::drain::{DrainReport, Drains};
use crate::shutdown::{ShutdownTrigger, TaskTracker};
use anyhow::Context;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::task::JoinHandle;

pub use crate::state::EngineState;

/// Entry point of the in-process API.
pub struct Engine;

impl Engine {
    /// Opens the data dir, binds the listener and serves until [`RunningEngine::shutdown`].
    pub async fn start(config: Config) -> anyhow::Result<RunningEngine> {
        config.validate()?;
        // Process-wide SQLite state belongs to the engine (actors cannot set it: see sql/sandbox.rs).
        crate::sql::sandbox::set_heap_limits(config.sqlite_soft_heap_limit, config.sqlite_hard_heap_limit);
        let listener =
            tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
        let registry = Registry::open(&config.data_dir)?;
        // A node joins its cluster before it serves anything.
        #[cfg(feature = "cluster")]
        let cluster = match &config.cluster {
            Some(c) => Some(crate::cluster::ClusterNode::join(c).await?),
            None => None,
        };
        let local_addr = listener.local_addr()?;
        let (shutdown_trigger, shutdown) = ShutdownTrigger::new();
        crate::fdlimit::raise_and_check(&config);
        let open_dbs = crate::sql::open_dbs::OpenDbs::new(config.max_open_actor_dbs);
        let result_budget = Arc::new(crate::budget::ResultBudget::new(config.max_result_memory_bytes));
        #[allow(unused_mut)]
        let mut exec_settings = crate::sql::executor::ExecSettings::from_config(&config);
        // Cluster mode: nothing commits once this node cannot know its lease alive.
        #[cfg(feature = "cluster")]
        if let Some(node) = &cluster {
            let membership = node.membership.clone();
            exec_settings.commit_guard =
                Some(crate::sql::executor::CommitGuard(Arc::new(move || membership.is_serving())));
        }
        let state = Arc::new(EngineState {
            exec_settings,
            streams: crate::sql::stream::StreamRegistry::from_config(&config),
            config,
            registry,
            generations: crate::generations::Generations::new(open_dbs),
            result_budget,
            reads_paused: Default::default(),
            read_pauses: AtomicU64::new(0),
            sessions: Sessions::default(),
            drains: Drains::default(),
            shutdown: shutdown.clone(),
            shutdown_trigger,
            tasks: TaskTracker::new(),
            group_stats: Default::default(),
            metrics: Arc::new(crate::metrics::Metrics::new()?),
            next_conn_id: AtomicU64::new(0),
            placement_locks: Default::default(),
            #[cfg(feature = "cluster")]
            cluster,
        });
        #[cfg(feature = "cluster")]
        if let Some(node) = &state.cluster {
            crate::cluster::node::spawn_fence_watch(state.clone(), node.clone());
        }
        tokio::spawn(crate::sql::open_dbs::run_sweeper(
            state.generations.open_dbs().clone(),
            state.config.idle_db_close,
            shutdown.clone(),
        ));
        let router = crate::server::router(state.clone());
        let settings = crate::listener::ListenerSettings {
            tls: crate::tls::acceptor(&state.config)?,
            header_read_timeout: state.config.header_read_timeout,
            max_connections: state.config.max_connections,
        };
        let server = tokio::spawn(crate::listener::serve(listener, router, settings, shutdown.clone()));
        tracing::info!(%local_addr, data_dir = %state.config.data_dir.display(),
            max_protocol_version = state.config.max_protocol_version, "envoy engine listening");
        Ok(RunningEngine { local_addr, state, server })
    }
}

/// A started engine. Dropping it without `shutdown` leaves tasks running until the runtime ends.
pub struct RunningEngine {
    /// The bound address (the real port when configured with port 0).
    local_addr: SocketAddr,
    /// Shared state, for observability and operator actions.
    state: Arc<EngineState>,
    /// The accept loop.
    server: JoinHandle<()>,
}

impl RunningEngine {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `ws://ADDR/envoys/connect` base URL (without query).
    pub fn connect_url(&self) -> String {
        format!("ws://{}/envoys/connect", self.local_addr)
    }

    /// Requests of (actor, generation) accepted and not yet answered (queued ones included).
    pub fn inflight(&self, actor_id: &str, generation: u64) -> usize {
        self.state.generations.inflight(actor_id, generation)
    }

    /// Number of in-flight counters held, across every (actor, generation).
    /// Only live actors have one; a refused request leaves none behind.
    pub fn inflight_entries(&self) -> usize {
        self.state.generations.entries()
    }

    /// v5 result streams open now, engine-wide (each holds a thread and a snapshot).
    pub fn streams_open(&self) -> usize {
        self.state.streams.open()
    }

    /// Bytes of results the engine holds now (built, not yet flushed), exact.
    pub fn result_bytes_held(&self) -> usize {
        self.state.result_budget.used()
    }

    /// The most result bytes the engine has held at once.
    pub fn result_bytes_peak(&self) -> usize {
        self.state.result_budget.peak()
    }

    /// Connections whose read loop is paused now (outbox over budget).
    pub fn reads_paused(&self) -> usize {
        self.state.reads_paused.load(Ordering::Acquire)
    }

    /// Times a read loop paused because its outbox was over budget.
    pub fn read_pauses(&self) -> u64 {
        self.state.read_pauses.load(Ordering::Acquire)
    }

    /// Actor databases open now (executors holding a slot of `max_open_actor_dbs`).
    pub fn open_actor_dbs(&self) -> usize {
        self.state.generations.open_dbs().count()
    }

    /// The most actor databases open at once.
    pub fn open_actor_dbs_peak(&self) -> usize {
        self.state.generations.open_dbs().peak()
    }

    /// Group commits so far: (commits, requests they carried, largest group, failed commits).
    pub fn group_commits(&self) -> (u64, u64, u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let s = &self.state.group_stats;
        (s.commits.load(Relaxed), s.members.load(Relaxed), s.largest.load(Relaxed), s.failed.load(Relaxed))
    }

    /// The Prometheus text `GET /metrics` would serve now.
    pub fn metrics_text(&self) -> Result<String, crate::metrics::MetricsError> {
        self.state.metrics.render(&self.state)
    }

    /// Cluster mode: moves every actor this node owns to other live nodes (as `POST /node/drain`).
    #[cfg(feature = "cluster")]
    pub async fn drain_node(&self) -> Option<crate::cluster::moves::NodeDrainReport> {
        let node = self.state.cluster.clone()?;
        Some(crate::cluster::moves::drain_node(&self.state, &node).await)
    }

    /// Every actor the registry knows.
    pub fn actors(&self) -> Vec<ActorRecord> {
        self.state.registry.list()
    }

    /// Stops one actor as an operator would (drains; answers when done).
    pub async fn stop_actor(&self, actor_id: &str) -> anyhow::Result<DrainReport> {
        crate::drain::stop_actor(&self.state, actor_id, envoy_protocol::StopReason::Operator).await
    }

    /// Drains every actor, closes every socket with GOING_AWAY, and stops serving.
    /// In cluster mode it first moves every actor it owns to other live nodes,
    /// and leaves the cluster last (its lease revoked).
    pub async fn shutdown(self) {
        #[cfg(feature = "cluster")]
        if let Some(node) = self.state.cluster.clone() {
            let report = crate::cluster::moves::drain_node(&self.state, &node).await;
            tracing::info!(moved = report.moved.len(), failed = report.failed.len(), "node drain done");
        }
        crate::drain::shutdown_engine(&self.state).await;
        #[cfg(feature = "cluster")]
        if let Some(node) = &self.state.cluster {
            node.membership.leave().await;
        }
        let _ = self.server.await;
    }
}
