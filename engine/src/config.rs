//! Engine configuration: where to listen, where data lives, and every limit.
//!
//! Every limit is a named constant with a default here, configurable through
//! [`Config`], enforced before work starts, and advertised to envoys in
//! `ToEnvoyInit` (see [`Limits::protocol_limits`] and [`Limits::sql_limits`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Default address: loopback only, so no token is needed to try the engine.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:6420";
/// Default data directory (relative to the working directory).
pub const DEFAULT_DATA_DIR: &str = "./data";
/// Cluster mode: time to live of a node's etcd lease. The node stops serving a
/// margin before it would run out (specs/cluster.md, "Fencing").
pub const DEFAULT_CLUSTER_LEASE_MS: u64 = 10_000;
/// Cluster mode: prefix of every etcd key (several clusters may share one etcd).
pub const DEFAULT_CLUSTER_PREFIX: &str = "/envoy/";
/// Highest protocol version spoken by default: the newest this workspace
/// implements (v5; see specs/engine.md, "Protocol v5").
pub const DEFAULT_MAX_PROTOCOL_VERSION: u16 = envoy_protocol::IMPLEMENTED_PROTOCOL_VERSION;

/// How often the engine pings each envoy.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(3);
/// An envoy silent (or disconnected) for this long is dropped and its actors unplaced.
pub const DEFAULT_ENVOY_LOST_THRESHOLD: Duration = Duration::from_secs(15);
/// How long a stopping actor's in-flight work may run before it is interrupted.
pub const DEFAULT_ACTOR_STOP_THRESHOLD: Duration = Duration::from_secs(30);
/// Blocking-thread permits per connection (SQL/KV batches running at once).
pub const DEFAULT_PERMITS_PER_CONNECTION: usize = 32;
/// Reader lanes one actor may use at once on one connection (plus its writer lane),
/// so one busy actor holds at most `1 + this` of the connection's permits.
pub const DEFAULT_READER_LANES_PER_ACTOR: usize = 3;
/// Most queued requests one blocking hop takes at once.
pub const DEFAULT_MAX_BATCH: usize = 256;

/// Largest WebSocket message either side accepts (advertised as maxFrameBytes).
pub const DEFAULT_MAX_FRAME_BYTES: u32 = envoy_protocol::DEFAULT_MAX_FRAME_BYTES;
/// Largest request frame accepted.
pub const DEFAULT_MAX_REQUEST_BYTES: u32 = envoy_protocol::DEFAULT_MAX_FRAME_BYTES;
/// Largest response the engine builds (must fit in a frame with some room for framing).
pub const DEFAULT_MAX_RESPONSE_BYTES: u32 = envoy_protocol::DEFAULT_MAX_FRAME_BYTES - 64 * 1024;
/// Largest KV key.
pub const DEFAULT_MAX_KV_KEY_BYTES: u32 = 2 * 1024;
/// Largest KV value.
pub const DEFAULT_MAX_KV_VALUE_BYTES: u32 = 1024 * 1024;
/// Most keys/entries in one KV batch, and most entries one list returns.
pub const DEFAULT_MAX_KV_BATCH_ENTRIES: u32 = 1024;
/// Accepted but unanswered requests per connection before OVERLOADED.
pub const DEFAULT_MAX_PENDING_REQUESTS: u32 = 4096;
/// Largest SQL text.
pub const DEFAULT_MAX_SQL_BYTES: u32 = 1024 * 1024;
/// Most bound parameters (SQLite's own default cap is 32766).
pub const DEFAULT_MAX_PARAMS: u32 = 32_766;
/// Largest single bound or returned TEXT/BLOB value.
pub const DEFAULT_MAX_VALUE_BYTES: u32 = 8 * 1024 * 1024;
/// Statement deadline; 0 means none.
pub const DEFAULT_MAX_STATEMENT_MS: u32 = 60_000;
/// Readers wait this long for a lock before SQLITE_BUSY.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Reader connections kept per actor executor.
pub const DEFAULT_READERS_PER_ACTOR: usize = 3;

/// SQLite's process-wide hard heap limit: past it every SQLite allocation of the
/// process fails (NOMEM), so it is the engine's alone to set and sits well above
/// what the caches and result budgets use; it only stops runaway growth.
pub const DEFAULT_SQLITE_HARD_HEAP_LIMIT_BYTES: i64 = 2 * 1024 * 1024 * 1024;
/// SQLite's process-wide soft heap limit: past it SQLite frees page cache before
/// growing, which keeps many open actor databases from adding up.
pub const DEFAULT_SQLITE_SOFT_HEAP_LIMIT_BYTES: i64 = 512 * 1024 * 1024;
/// How long a client has to send a complete HTTP request head (request line and
/// headers), from the moment the engine starts waiting for one (a new connection,
/// or an idle keep-alive one). Real clients send the head in one packet; a peer
/// that trickles it (or sends nothing) only holds a socket, before any auth.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an upgraded envoy connection has to send its hello (`ToEngineMetadata`).
/// An envoy sends it right after the upgrade; separate from the lost threshold so
/// an idle socket that never says who it is is not kept as long as a known envoy.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most TCP connections served at once (HTTP and upgraded WebSockets together).
/// Bounds the descriptors the network can take: each actor database also holds
/// several (db, WAL, shm, KV, readers), and 1024 is a common soft `ulimit -n`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
/// Bytes of answers one connection may have queued toward its socket (built,
/// not yet flushed). A peer that stops reading would otherwise make the engine
/// buffer every answer it asked for: past this budget a result is refused with
/// OVERLOADED and the read loop stops reading that socket until the writer has
/// flushed enough. Twice the largest response, so one answer in flight never
/// blocks the next.
pub const DEFAULT_MAX_CONNECTION_OUTBOX_BYTES: usize = 32 * 1024 * 1024;
/// Bytes of SQL/KV results the whole engine may hold at once, from the first
/// row copied until the answer is flushed to its socket. Bounds the memory many
/// connections together can pin (each is also bounded by its outbox budget);
/// past it a result is refused with OVERLOADED.
pub const DEFAULT_MAX_RESULT_MEMORY_BYTES: usize = 256 * 1024 * 1024;
/// Actors one envoy (one connection's namespace and envoy key) may have placed
/// at once. Each placed actor costs registry memory and, when used, a database;
/// a get-or-create past it is refused (INVALID_REQUEST naming the limit).
pub const DEFAULT_MAX_ACTORS_PER_CONNECTION: usize = 1024;
/// Actor databases (executors with open SQLite connections) open at once,
/// engine-wide. Each costs up to ~12 file descriptors (writer, readers, KV, with
/// their -wal/-shm files) and page caches; past the cap the least recently used
/// idle one is checkpointed and closed (it reopens on its next request).
pub const DEFAULT_MAX_OPEN_ACTOR_DBS: usize = 256;
/// An actor database unused for this long is checkpointed and closed by a
/// background sweep, so idle actors do not hold descriptors and caches.
pub const DEFAULT_IDLE_DB_CLOSE: Duration = Duration::from_secs(60);

/// When an acknowledged write is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// `synchronous=FULL`: every commit is fsynced before its answer leaves the
    /// engine, so an acknowledged write survives a machine crash or power loss.
    #[default]
    Fsync,
    /// `synchronous=NORMAL`: an acknowledged write survives a crash of the engine
    /// process, but the last ones before an OS crash or power loss may be lost.
    /// For caches and tests.
    Os,
}

impl Durability {
    /// The `PRAGMA synchronous` value of actor databases and KV stores.
    pub fn synchronous(self) -> &'static str {
        match self {
            Durability::Fsync => "FULL",
            Durability::Os => "NORMAL",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Fsync => "fsync",
            Durability::Os => "os",
        }
    }
}

/// Most requests committed together in one group commit: bounds how many
/// answers wait for one commit (and how much one failed commit answers).
pub const DEFAULT_GROUP_COMMIT_MAX_MEMBERS: usize = 256;
/// Longest a group stays open taking members that were already queued before it
/// commits: bounds how long the first member's answer waits for the last.
pub const DEFAULT_GROUP_COMMIT_MAX_OPEN: Duration = Duration::from_millis(20);

/// Acknowledged means on disk by default.
pub const DEFAULT_DURABILITY: Durability = Durability::Fsync;

// ---------------------------------------------------------------- v5 settings
// Advertised to v5 envoys in `ToEnvoyInitV5.metadataV5.limits` (`Config::engine_limits`).

/// How long a request key and its recorded outcome are kept, from the time in the
/// key. A retry within it gets the recorded outcome; an older key gets
/// REQUEST_KEY_EXPIRED (never a second execution). A day covers any client that
/// retries across a restart or an outage.
pub const DEFAULT_REQUEST_KEY_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);
/// Most request keys kept per actor. Past it the oldest are dropped, and every key
/// not newer than the newest dropped one answers REQUEST_KEY_EXPIRED, so a count
/// eviction can never lead to a second execution either.
pub const DEFAULT_REQUEST_KEYS_PER_ACTOR: usize = 100_000;
/// Largest result (rows at their decoded size) recorded with a request key; a
/// replay of a larger one has no rows (REPLAYED_WITHOUT_ROWS). Bounds what keys add
/// to an actor's database.
pub const DEFAULT_MAX_RECORDED_RESULT_BYTES: u32 = 64 * 1024;
/// Shortest lease an interactive transaction gets (asked-for leases are clamped).
pub const DEFAULT_MIN_TRANSACTION_LEASE: Duration = Duration::from_millis(100);
/// Longest lease an interactive transaction gets: bounds how long an idle client
/// can hold an actor's writer.
pub const DEFAULT_MAX_TRANSACTION_LEASE: Duration = Duration::from_secs(60);
/// How long a write waits for an interactive transaction holding the actor's writer
/// before it fails with TRANSACTION_BUSY (it did not run).
pub const DEFAULT_MAX_TRANSACTION_WAIT: Duration = Duration::from_secs(5);
/// Interactive transactions open at once on one connection (OPEN_TRANSACTIONS).
pub const DEFAULT_MAX_OPEN_TRANSACTIONS: u32 = 16;
/// Statements in one atomic batch (BATCH_STATEMENTS).
pub const DEFAULT_MAX_BATCH_STATEMENTS: u32 = 1024;
/// Row bytes (decoded size) the engine reads ahead of a stream's credit: what one
/// open stream may pin in engine memory beyond what the client asked for.
pub const DEFAULT_STREAM_WINDOW_BYTES: u32 = 1024 * 1024;
/// Shortest lease a result stream gets.
pub const DEFAULT_MIN_STREAM_LEASE: Duration = Duration::from_secs(1);
/// Longest lease a result stream gets: an abandoned stream frees its snapshot
/// (and the WAL it pins) within it.
pub const DEFAULT_MAX_STREAM_LEASE: Duration = Duration::from_secs(300);
/// Result streams open at once on one connection (OPEN_STREAMS).
pub const DEFAULT_MAX_OPEN_STREAMS: u32 = 16;

/// Limits enforced before work starts; all are advertised in `ToEnvoyInit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Caps the WebSocket message size, so a peer cannot make us buffer more.
    pub max_frame_bytes: u32,
    /// Caps one decoded request (bounded decode allocation).
    pub max_request_bytes: u32,
    /// Caps the response we build, so one query cannot exhaust memory or the frame.
    pub max_response_bytes: u32,
    /// Keeps KV keys index-friendly.
    pub max_kv_key_bytes: u32,
    /// Keeps one KV value from filling memory.
    pub max_kv_value_bytes: u32,
    /// Bounds one KV batch / list, so one request's work is bounded.
    pub max_kv_batch_entries: u32,
    /// Bounds the per-connection queue, so a flood gets OVERLOADED, not memory growth.
    pub max_pending_requests: u32,
    /// Bounds SQL text before it is prepared.
    pub max_sql_bytes: u32,
    /// Bounds bound parameters.
    pub max_params: u32,
    /// Bounds a single TEXT/BLOB value, in or out.
    pub max_value_bytes: u32,
    /// Statement deadline (progress handler); 0 = none.
    pub max_statement_ms: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            max_kv_key_bytes: DEFAULT_MAX_KV_KEY_BYTES,
            max_kv_value_bytes: DEFAULT_MAX_KV_VALUE_BYTES,
            max_kv_batch_entries: DEFAULT_MAX_KV_BATCH_ENTRIES,
            max_pending_requests: DEFAULT_MAX_PENDING_REQUESTS,
            max_sql_bytes: DEFAULT_MAX_SQL_BYTES,
            max_params: DEFAULT_MAX_PARAMS,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            max_statement_ms: DEFAULT_MAX_STATEMENT_MS,
        }
    }
}

impl Limits {
    /// The v3 `Limits` advertised in Init.
    pub fn protocol_limits(&self) -> envoy_protocol::Limits {
        envoy_protocol::Limits {
            max_request_bytes: self.max_request_bytes,
            max_response_bytes: self.max_response_bytes,
            max_kv_key_bytes: self.max_kv_key_bytes,
            max_kv_value_bytes: self.max_kv_value_bytes,
            max_kv_batch_entries: self.max_kv_batch_entries,
            max_pending_requests: self.max_pending_requests,
        }
    }

    /// The v4 `SqlLimits` advertised in Init.
    pub fn sql_limits(&self) -> envoy_protocol::SqlLimits {
        envoy_protocol::SqlLimits {
            max_sql_bytes: self.max_sql_bytes,
            max_params: self.max_params,
            max_value_bytes: self.max_value_bytes,
            max_statement_ms: self.max_statement_ms,
        }
    }
}

fn ms_u32(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

impl Config {
    /// The v5 `ProtocolMetadataV5` advertised in `ToEnvoyInitV5`: durability and
    /// every engine-side limit, so a v5 envoy can check before it sends.
    pub fn protocol_metadata_v5(&self) -> envoy_protocol::ProtocolMetadataV5 {
        let to_u32 = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
        envoy_protocol::ProtocolMetadataV5 {
            durability: match self.durability {
                Durability::Fsync => envoy_protocol::Durability::Fsync,
                Durability::Os => envoy_protocol::Durability::Os,
            },
            limits: envoy_protocol::EngineLimits {
                max_connection_outbox_bytes: self.max_connection_outbox_bytes as u64,
                max_result_memory_bytes: self.max_result_memory_bytes as u64,
                max_actors_per_connection: to_u32(self.max_actors_per_connection),
                max_open_actor_databases: to_u32(self.max_open_actor_dbs),
                group_commit_max_requests: to_u32(self.group_commit_max_members),
                group_commit_max_delay_us: u32::try_from(self.group_commit_max_open.as_micros()).unwrap_or(u32::MAX),
                request_key_retention_ms: u64::try_from(self.request_key_retention.as_millis()).unwrap_or(u64::MAX),
                max_recorded_result_bytes: self.max_recorded_result_bytes,
                min_transaction_lease_ms: ms_u32(self.min_transaction_lease),
                max_transaction_lease_ms: ms_u32(self.max_transaction_lease),
                max_transaction_wait_ms: ms_u32(self.max_transaction_wait),
                max_open_transactions: self.max_open_transactions,
                max_batch_statements: self.max_batch_statements,
                stream_window_bytes: self.stream_window_bytes,
                min_stream_lease_ms: ms_u32(self.min_stream_lease),
                max_stream_lease_ms: ms_u32(self.max_stream_lease),
                max_open_streams: self.max_open_streams,
            },
        }
    }
}

/// Everything the engine needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port (see `RunningEngine::local_addr`).
    pub listen: SocketAddr,
    /// Holds the metadata database and every actor's files.
    pub data_dir: PathBuf,
    /// Shared secret for envoys and operators: every namespace, every role (identity
    /// `auth-token`). Off loopback, this or `tokens` is required.
    pub auth_token: Option<String>,
    /// Per-tenant tokens (`--tokens-file`): each limited to namespaces and a role, so
    /// one tenant's envoys can neither read another's data nor operate the engine.
    pub tokens: Vec<crate::tenants::Grant>,
    /// Browser origins allowed to call the engine (exact match of the `Origin`
    /// header). A request carrying another `Origin` is refused: a web page must not
    /// reach a tokenless loopback engine. Non-browser clients send no `Origin`.
    pub allowed_origins: Vec<String>,
    /// Limit on receiving a request head, so half-sent requests cannot hold sockets.
    pub header_read_timeout: Duration,
    /// Limit on receiving the hello after the upgrade, so silent sockets are shed early.
    pub handshake_timeout: Duration,
    /// Cap on concurrent TCP connections, so the network cannot exhaust descriptors.
    pub max_connections: usize,
    /// Highest protocol version to speak: lower values emulate an older engine.
    pub max_protocol_version: u16,
    /// Limits enforced before work starts and advertised to envoys.
    pub limits: Limits,
    /// How often the engine pings envoys (liveness and clock).
    pub ping_interval: Duration,
    /// Silence (or disconnection) after which an envoy's actors are unplaced.
    pub envoy_lost_threshold: Duration,
    /// How long a drain waits for in-flight work before interrupting it.
    pub actor_stop_threshold: Duration,
    /// Blocking permits per connection: bounds threads one socket can occupy.
    pub permits_per_connection: usize,
    /// Reader lanes one actor may use at once on one connection (fairness).
    pub reader_lanes_per_actor: usize,
    /// Most queued requests drained in one blocking hop.
    pub max_batch: usize,
    /// Reader connections per actor executor.
    pub readers_per_actor: usize,
    /// Reader busy timeout (waiting on the writer's checkpoint or locks).
    pub busy_timeout: std::time::Duration,
    /// PEM certificate chain to serve TLS with (with `tls_key`); None: plain TCP.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// When an acknowledged write is on disk: fsync (default) or OS buffers.
    pub durability: Durability,
    /// How the binary writes its log lines (read by `main` before the engine starts).
    pub log_format: crate::logging::LogFormat,
    /// Most requests in one group commit.
    pub group_commit_max_members: usize,
    /// Longest one group commit stays open collecting queued requests.
    pub group_commit_max_open: Duration,
    /// SQLite's process-wide hard heap limit in bytes (0 = none); set by the engine only.
    pub sqlite_hard_heap_limit: i64,
    /// SQLite's process-wide soft heap limit in bytes (0 = none); set by the engine only.
    pub sqlite_soft_heap_limit: i64,
    /// Bytes one connection may have queued toward its socket before results are
    /// refused (OVERLOADED) and its read loop pauses: a peer that does not read
    /// cannot make the engine buffer without bound.
    pub max_connection_outbox_bytes: usize,
    /// Bytes of results the engine holds at once (built, not yet flushed), across
    /// every connection; past it results are refused with OVERLOADED.
    pub max_result_memory_bytes: usize,
    /// Actors one envoy may have placed at once; more get-or-creates are refused.
    pub max_actors_per_connection: usize,
    /// Actor databases open at once; the least recently used idle one is closed
    /// to make room, so descriptors stay bounded however many actors exist.
    pub max_open_actor_dbs: usize,
    /// Actor databases unused this long are closed by a background sweep.
    pub idle_db_close: Duration,
    /// v5: request keys are kept this long from the time in the key.
    pub request_key_retention: Duration,
    /// v5: most request keys kept per actor (oldest dropped first, then refused as expired).
    pub request_keys_per_actor: usize,
    /// v5: largest result recorded with a request key.
    pub max_recorded_result_bytes: u32,
    /// v5: bounds of an interactive transaction's lease.
    pub min_transaction_lease: Duration,
    pub max_transaction_lease: Duration,
    /// v5: how long a write waits behind an open transaction before TRANSACTION_BUSY.
    pub max_transaction_wait: Duration,
    /// v5: interactive transactions open at once per connection.
    pub max_open_transactions: u32,
    /// v5: statements per atomic batch.
    pub max_batch_statements: u32,
    /// v5: row bytes read ahead of a stream's credit.
    pub stream_window_bytes: u32,
    /// v5: bounds of a result stream's lease.
    pub min_stream_lease: Duration,
    pub max_stream_lease: Duration,
    /// v5: result streams open at once per connection.
    pub max_open_streams: u32,
    /// Cluster mode (directory, placement and generations in etcd); None: one node.
    pub cluster: Option<ClusterConfig>,
}

impl ClusterConfig {
    /// Checks the settings; a binary built without the `cluster` feature refuses them all.
    pub fn validate(&self) -> anyhow::Result<()> {
        if !cfg!(feature = "cluster") {
            anyhow::bail!(
                "--cluster needs an engine built with cluster mode: cargo build --release -p envoy-engine --features cluster (it needs protoc: scripts/install-cluster-deps.sh)"
            );
        }
        if self.endpoints.is_empty()
            || self.endpoints.iter().any(|e| !e.starts_with("http://") && !e.starts_with("https://"))
        {
            anyhow::bail!("--cluster takes etcd endpoints as http://HOST:PORT, comma-separated");
        }
        if self.node_id.is_empty()
            || self.node_id.len() > 128
            || !self.node_id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            anyhow::bail!("--node-id must be 1..=128 characters of letters, digits, '-', '_' or '.'");
        }
        if !(self.advertise.starts_with("ws://") || self.advertise.starts_with("wss://")) {
            anyhow::bail!("--advertise must be a ws:// or wss:// URL (the address other nodes reach this one at)");
        }
        if self.lease_ttl < Duration::from_secs(1) {
            anyhow::bail!("--cluster-lease-ms must be at least 1000 (etcd leases have whole seconds)");
        }
        if !self.prefix.starts_with('/') || !self.prefix.ends_with('/') {
            anyhow::bail!("--cluster-prefix must start and end with '/'");
        }
        Ok(())
    }
}

/// Cluster mode settings (specs/cluster.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// etcd endpoints (`http://host:port`); the client fails over between them.
    pub endpoints: Vec<String>,
    /// This node's id: actors are owned under it, so it must stay the same across restarts.
    pub node_id: String,
    /// `ws://HOST:PORT` (or `wss://`) where other nodes open relay links and send moved databases.
    pub advertise: String,
    /// Time to live of the node's etcd lease; the node stops serving a margin before it runs out.
    pub lease_ttl: Duration,
    /// Prefix of every etcd key.
    pub prefix: String,
    /// Operator token presented to other nodes when moving actors (else `auth_token`).
    pub token: Option<String>,
}

impl Config {
    /// A configuration with every default, listening on `listen` with data in `data_dir`.
    pub fn new(listen: SocketAddr, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen,
            data_dir: data_dir.into(),
            auth_token: None,
            tokens: Vec::new(),
            allowed_origins: Vec::new(),
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_protocol_version: DEFAULT_MAX_PROTOCOL_VERSION,
            limits: Limits::default(),
            ping_interval: DEFAULT_PING_INTERVAL,
            envoy_lost_threshold: DEFAULT_ENVOY_LOST_THRESHOLD,
            actor_stop_threshold: DEFAULT_ACTOR_STOP_THRESHOLD,
            permits_per_connection: DEFAULT_PERMITS_PER_CONNECTION,
            reader_lanes_per_actor: DEFAULT_READER_LANES_PER_ACTOR,
            max_batch: DEFAULT_MAX_BATCH,
            readers_per_actor: DEFAULT_READERS_PER_ACTOR,
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            tls_cert: None,
            tls_key: None,
            durability: DEFAULT_DURABILITY,
            log_format: crate::logging::LogFormat::Text,
            group_commit_max_members: DEFAULT_GROUP_COMMIT_MAX_MEMBERS,
            group_commit_max_open: DEFAULT_GROUP_COMMIT_MAX_OPEN,
            sqlite_hard_heap_limit: DEFAULT_SQLITE_HARD_HEAP_LIMIT_BYTES,
            sqlite_soft_heap_limit: DEFAULT_SQLITE_SOFT_HEAP_LIMIT_BYTES,
            max_connection_outbox_bytes: DEFAULT_MAX_CONNECTION_OUTBOX_BYTES,
            max_result_memory_bytes: DEFAULT_MAX_RESULT_MEMORY_BYTES,
            max_actors_per_connection: DEFAULT_MAX_ACTORS_PER_CONNECTION,
            max_open_actor_dbs: DEFAULT_MAX_OPEN_ACTOR_DBS,
            idle_db_close: DEFAULT_IDLE_DB_CLOSE,
            request_key_retention: DEFAULT_REQUEST_KEY_RETENTION,
            request_keys_per_actor: DEFAULT_REQUEST_KEYS_PER_ACTOR,
            max_recorded_result_bytes: DEFAULT_MAX_RECORDED_RESULT_BYTES,
            min_transaction_lease: DEFAULT_MIN_TRANSACTION_LEASE,
            max_transaction_lease: DEFAULT_MAX_TRANSACTION_LEASE,
            max_transaction_wait: DEFAULT_MAX_TRANSACTION_WAIT,
            max_open_transactions: DEFAULT_MAX_OPEN_TRANSACTIONS,
            max_batch_statements: DEFAULT_MAX_BATCH_STATEMENTS,
            stream_window_bytes: DEFAULT_STREAM_WINDOW_BYTES,
            min_stream_lease: DEFAULT_MIN_STREAM_LEASE,
            max_stream_lease: DEFAULT_MAX_STREAM_LEASE,
            max_open_streams: DEFAULT_MAX_OPEN_STREAMS,
            cluster: None,
        }
    }

    /// A configuration for tests: ephemeral loopback port, every default.
    pub fn for_tests(data_dir: impl Into<PathBuf>) -> Self {
        Self::new(SocketAddr::from(([127, 0, 0, 1], 0)), data_dir)
    }

    /// Checks what cannot be enforced by types.
    pub fn validate(&self) -> anyhow::Result<()> {
        use anyhow::bail;
        let v = self.max_protocol_version;
        // Bounded by what the protocol crate defines: the engine speaks every
        // version up to IMPLEMENTED_PROTOCOL_VERSION (v6).
        if !(envoy_protocol::MIN_PROTOCOL_VERSION..=envoy_protocol::IMPLEMENTED_PROTOCOL_VERSION).contains(&v) {
            anyhow::bail!(
                "--max-protocol-version {v} is outside {}..={}",
                envoy_protocol::MIN_PROTOCOL_VERSION,
                envoy_protocol::IMPLEMENTED_PROTOCOL_VERSION
            );
        }
        if let Some(t) = &self.auth_token {
            if !envoy_protocol::negotiation::is_valid_token(t) {
                bail!("the auth token must be a non-empty RFC 7230 token (letters, digits, !#$%&'*+-.^_`|~)");
            }
            if self.tokens.iter().any(|g| &g.token == t) {
                bail!("--auth-token is also a token of the tokens file; one token must map to one identity");
            }
        }
        if self.auth_token.is_none() && self.tokens.is_empty() && !self.listen.ip().is_loopback() {
            anyhow::bail!(
                "listening on non-loopback address {} requires --auth-token (or ENVOY_AUTH_TOKEN) or --tokens-file",
                self.listen
            );
        }
        for t in &self.tokens {
            if !envoy_protocol::negotiation::is_valid_token(&t.token) {
                bail!("the token of {:?} must be a non-empty RFC 7230 token", t.name);
            }
        }
        if let Some(k) = &self.cluster {
            k.validate()?;
        }
        for o in &self.allowed_origins {
            if o == "*" {
                bail!("--allowed-origin takes exact origins (e.g. https://app.example.com); \"*\" is not accepted");
            }
            if o.is_empty() || !o.bytes().all(|b| b.is_ascii_graphic()) {
                bail!(
                    "--allowed-origin {o:?} must be a non-empty origin without spaces (e.g. https://app.example.com)"
                );
            }
            if o.ends_with('/') {
                bail!("--allowed-origin {o:?}: an origin has no path; drop the trailing '/'");
            }
        }
        if self.header_read_timeout.is_zero() || self.handshake_timeout.is_zero() {
            anyhow::bail!("the header read timeout and the handshake timeout must be above 0");
        }
        if self.max_connections == 0 {
            anyhow::bail!("max_connections must be at least 1");
        }
        if self.permits_per_connection == 0
            || self.max_batch == 0
            || self.readers_per_actor == 0
            || self.group_commit_max_members == 0
        {
            anyhow::bail!(
                "permits_per_connection, max_batch, readers_per_actor and group_commit_max_members must be at least 1"
            );
        }
        if self.sqlite_hard_heap_limit < 0 || self.sqlite_soft_heap_limit < 0 {
            anyhow::bail!("SQLite heap limits cannot be negative (0 means none)");
        }
        if self.sqlite_hard_heap_limit > 0 && self.sqlite_hard_heap_limit < 64 * 1024 * 1024 {
            anyhow::bail!("the SQLite hard heap limit must be at least 64 MiB (or 0 for none): below that the engine's own registry fails");
        }
        // Now that every limit is a flag, a 0 is one typo away: none of these has a
        // "none" meaning, and at 0 every request of its kind would fail (or, for the
        // reader lanes, reads would wait forever).
        let l = &self.limits;
        for (name, value) in [
            ("max_frame_bytes", l.max_frame_bytes),
            ("max_request_bytes", l.max_request_bytes),
            ("max_response_bytes", l.max_response_bytes),
            ("max_kv_key_bytes", l.max_kv_key_bytes),
            ("max_kv_value_bytes", l.max_kv_value_bytes),
            ("max_kv_batch_entries", l.max_kv_batch_entries),
            ("max_pending_requests", l.max_pending_requests),
            ("max_sql_bytes", l.max_sql_bytes),
            ("max_value_bytes", l.max_value_bytes),
            ("reader_lanes_per_actor", u32::try_from(self.reader_lanes_per_actor).unwrap_or(u32::MAX)),
        ] {
            if value == 0 {
                bail!("{name} must be at least 1");
            }
        }
        if self.limits.max_response_bytes > self.limits.max_frame_bytes {
            anyhow::bail!("max_response_bytes cannot exceed max_frame_bytes");
        }
        // Any single answer within the limits must fit on an idle connection and an
        // idle engine, or it could never be served.
        let max_response = self.limits.max_response_bytes as usize;
        if self.max_connection_outbox_bytes < max_response {
            anyhow::bail!(
                "max_connection_outbox_bytes ({}) cannot be below max_response_bytes ({max_response})",
                self.max_connection_outbox_bytes
            );
        }
        if self.max_result_memory_bytes < self.max_connection_outbox_bytes {
            anyhow::bail!(
                "max_result_memory_bytes ({}) cannot be below max_connection_outbox_bytes ({})",
                self.max_result_memory_bytes,
                self.max_connection_outbox_bytes
            );
        }
        if self.max_actors_per_connection == 0 || self.max_open_actor_dbs == 0 {
            anyhow::bail!("max_actors_per_connection and max_open_actor_dbs must be at least 1");
        }
        if self.idle_db_close.is_zero() {
            anyhow::bail!("idle_db_close must be longer than zero");
        }
        if self.request_key_retention.is_zero() || self.request_keys_per_actor == 0 {
            anyhow::bail!("request_key_retention_ms and request_keys_per_actor must be above 0");
        }
        for (name, value) in [
            ("max_open_transactions", self.max_open_transactions),
            ("max_batch_statements", self.max_batch_statements),
            ("stream_window_bytes", self.stream_window_bytes),
            ("max_open_streams", self.max_open_streams),
        ] {
            if value == 0 {
                bail!("{name} must be at least 1");
            }
        }
        if self.min_transaction_lease.is_zero() || self.min_transaction_lease > self.max_transaction_lease {
            anyhow::bail!(
                "the transaction lease bounds must satisfy 0 < min_transaction_lease_ms <= max_transaction_lease_ms"
            );
        }
        if self.min_stream_lease.is_zero() || self.min_stream_lease > self.max_stream_lease {
            anyhow::bail!("the stream lease bounds must satisfy 0 < min_stream_lease_ms <= max_stream_lease_ms");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        let ok = Config::for_tests("/tmp/x");
        assert!(ok.validate().is_ok());
        let mut open = Config::new("0.0.0.0:6420".parse().unwrap(), "/tmp/x");
        assert!(open.validate().unwrap_err().to_string().contains("requires --auth-token"));
        open.auth_token = Some("t0ken".into());
        assert!(open.validate().is_ok());
        open.auth_token = Some("has space".into());
        assert!(open.validate().is_err());
        let mut tenants = Config::new("0.0.0.0:6420".parse().unwrap(), "/tmp/x");
        tenants.tokens = vec![crate::tenants::Grant {
            name: "a".into(),
            token: "t0ken".into(),
            namespaces: crate::tenants::Namespaces::All,
            role: crate::tenants::Role::Envoy,
        }];
        assert!(tenants.validate().is_ok(), "a tokens file alone is enough off loopback");
        tenants.auth_token = Some("t0ken".into());
        assert!(tenants.validate().unwrap_err().to_string().contains("one identity"));
        let mut o = Config::for_tests("/tmp/x");
        for bad in ["*", "", "https://a.example/", "has space"] {
            o.allowed_origins = vec![bad.into()];
            assert!(o.validate().is_err(), "{bad:?}");
        }
        o.allowed_origins = vec!["https://a.example".into()];
        assert!(o.validate().is_ok());
        o.max_connections = 0;
        assert!(o.validate().is_err());
        let mut v = Config::for_tests("/tmp/x");
        v.max_protocol_version = envoy_protocol::PROTOCOL_VERSION;
        assert!(v.validate().is_ok());
        v.max_protocol_version = envoy_protocol::PROTOCOL_VERSION + 1;
        assert!(v.validate().is_err());
        v.max_protocol_version = 0;
        assert!(v.validate().is_err());
        let mut b = Config::for_tests("/tmp/x");
        b.max_connection_outbox_bytes = b.limits.max_response_bytes as usize - 1;
        assert!(b.validate().unwrap_err().to_string().contains("max_connection_outbox_bytes"));
        let mut b = Config::for_tests("/tmp/x");
        b.max_result_memory_bytes = b.max_connection_outbox_bytes - 1;
        assert!(b.validate().unwrap_err().to_string().contains("max_result_memory_bytes"));
        let mut b = Config::for_tests("/tmp/x");
        b.max_open_actor_dbs = 0;
        assert!(b.validate().is_err());
        b.max_open_actor_dbs = 1;
        b.max_actors_per_connection = 0;
        assert!(b.validate().is_err());
        b.max_actors_per_connection = 1;
        b.idle_db_close = Duration::ZERO;
        assert!(b.validate().is_err());
        let mut z = Config::for_tests("/tmp/x");
        z.limits.max_sql_bytes = 0;
        assert!(z.validate().unwrap_err().to_string().contains("max_sql_bytes"));
        let mut z = Config::for_tests("/tmp/x");
        z.reader_lanes_per_actor = 0;
        assert!(z.validate().unwrap_err().to_string().contains("reader_lanes_per_actor"));
        let l = Limits::default();
        assert_eq!(l.protocol_limits().max_pending_requests, DEFAULT_MAX_PENDING_REQUESTS);
        assert_eq!(l.sql_limits().max_statement_ms, DEFAULT_MAX_STATEMENT_MS);
    }
}
