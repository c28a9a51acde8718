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
/// Highest protocol version spoken by default (the newest this build knows).
pub const DEFAULT_MAX_PROTOCOL_VERSION: u16 = envoy_protocol::PROTOCOL_VERSION;

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

/// Everything the engine needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port (see `RunningEngine::local_addr`).
    pub listen: SocketAddr,
    /// Holds the metadata database and every actor's files.
    pub data_dir: PathBuf,
    /// Shared secret for envoys and operators; required off loopback.
    pub auth_token: Option<String>,
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
}

impl Config {
    /// A configuration with every default, listening on `listen` with data in `data_dir`.
    pub fn new(listen: SocketAddr, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen,
            data_dir: data_dir.into(),
            auth_token: None,
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
            max_connection_outbox_bytes: DEFAULT_MAX_CONNECTION_OUTBOX_BYTES,
            max_result_memory_bytes: DEFAULT_MAX_RESULT_MEMORY_BYTES,
            max_actors_per_connection: DEFAULT_MAX_ACTORS_PER_CONNECTION,
            max_open_actor_dbs: DEFAULT_MAX_OPEN_ACTOR_DBS,
            idle_db_close: DEFAULT_IDLE_DB_CLOSE,
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
        if !(envoy_protocol::MIN_PROTOCOL_VERSION..=envoy_protocol::PROTOCOL_VERSION).contains(&v) {
            bail!(
                "--max-protocol-version {v} is outside {}..={}",
                envoy_protocol::MIN_PROTOCOL_VERSION,
                envoy_protocol::PROTOCOL_VERSION
            );
        }
        if let Some(t) = &self.auth_token {
            if !envoy_protocol::negotiation::is_valid_token(t) {
                bail!("the auth token must be a non-empty RFC 7230 token (letters, digits, !#$%&'*+-.^_`|~)");
            }
        } else if !self.listen.ip().is_loopback() {
            bail!("listening on non-loopback address {} requires --auth-token (or ENVOY_AUTH_TOKEN)", self.listen);
        }
        if self.permits_per_connection == 0 || self.max_batch == 0 || self.readers_per_actor == 0 {
            bail!("permits_per_connection, max_batch and readers_per_actor must be at least 1");
        }
        if self.limits.max_response_bytes > self.limits.max_frame_bytes {
            bail!("max_response_bytes cannot exceed max_frame_bytes");
        }
        // Any single answer within the limits must fit on an idle connection and an
        // idle engine, or it could never be served.
        let max_response = self.limits.max_response_bytes as usize;
        if self.max_connection_outbox_bytes < max_response {
            bail!("max_connection_outbox_bytes ({}) cannot be below max_response_bytes ({max_response})", self.max_connection_outbox_bytes);
        }
        if self.max_result_memory_bytes < self.max_connection_outbox_bytes {
            bail!(
                "max_result_memory_bytes ({}) cannot be below max_connection_outbox_bytes ({})",
                self.max_result_memory_bytes,
                self.max_connection_outbox_bytes
            );
        }
        if self.max_actors_per_connection == 0 || self.max_open_actor_dbs == 0 {
            bail!("max_actors_per_connection and max_open_actor_dbs must be at least 1");
        }
        if self.idle_db_close.is_zero() {
            bail!("idle_db_close must be longer than zero");
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
        let mut v = Config::for_tests("/tmp/x");
        v.max_protocol_version = 5;
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
        let l = Limits::default();
        assert_eq!(l.protocol_limits().max_pending_requests, DEFAULT_MAX_PENDING_REQUESTS);
        assert_eq!(l.sql_limits().max_statement_ms, DEFAULT_MAX_STATEMENT_MS);
    }
}
