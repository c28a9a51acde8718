//! Command line: `envoy-engine serve` and the admin client `envoy-engine actors list|stop`.
//!
//! The admin client speaks a minimal HTTP/1.1 over a tokio `TcpStream`
//! (`Connection: close`, Content-Length or chunked body): enough for the admin
//! API and far lighter than a full HTTP client stack.

use crate::admin::ActorView;
use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Parser)]
#[command(name = "envoy-engine", version, about = "The envoy engine: remote SQLite for actors")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the engine.
    Serve(ServeArgs),
    /// Operate on actors of a running engine (admin API).
    #[command(subcommand)]
    Actors(ActorsCommand),
    /// Run SQL against one actor's database: one statement, a file, or an interactive shell.
    Sql(crate::shell::ShellArgs),
    /// Inspect the configuration `serve` would run with.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Cluster mode: nodes and their health, draining a node, adopting an actor (specs/cluster.md).
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Back up every actor's database into a folder (`--all DIR`), one `<id>.sqlite` each.
    Backup {
        /// The folder to write into (created if missing).
        #[arg(long = "all", value_name = "DIR")]
        all: PathBuf,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration of `serve` with these flags, environment and
    /// --config file, as TOML that loads again with --config (the auth token redacted).
    Print(ServeArgs),
}

/// The settings of `serve`, one field per flag.
///
/// Every field is optional: `None` means "not set at this layer". The same struct
/// is filled from the command line, from `ENVOY_*` variables and from the
/// `--config` file (serde, with the flag names in snake_case as keys); the layers
/// are merged (flag > environment > file) by [`crate::config_file`], and what no
/// layer set takes its `DEFAULT_*` value in [`ServeArgs::into_config`]. Defaults are
/// deliberately not clap defaults, or a flag left out would hide the file's value.
#[derive(Debug, Args, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeArgs {
    /// TOML file of settings (keys: the flag names in snake_case); flags and ENVOY_*
    /// variables override it. See specs/engine.md, "Configuration".
    #[arg(long, value_name = "PATH")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Directory for the metadata database and actor files (created if missing).
    #[arg(long, value_name = "PATH")]
    pub data_dir: Option<PathBuf>,
    /// Token envoys and operators must present: every namespace, every role (identity
    /// `auth-token`). Off loopback, this or --tokens-file is required. May be combined
    /// with --tokens-file.
    #[arg(long)]
    pub auth_token: Option<String>,
    /// TOML file of per-tenant tokens (name, token, namespaces, role); see specs/security.md.
    #[arg(long, value_name = "PATH")]
    pub tokens_file: Option<PathBuf>,
    /// PEM certificate chain: serve TLS (wss://, https://) with it and --tls-key.
    #[arg(long, value_name = "PATH")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "PATH")]
    pub tls_key: Option<PathBuf>,
    /// Browser origin allowed to call the engine (exact match, e.g. https://app.example.com);
    /// repeatable. Requests carrying any other Origin header are refused with 403.
    #[arg(long = "allowed-origin", value_name = "ORIGIN")]
    #[serde(rename = "allowed_origin")]
    pub allowed_origins: Option<Vec<String>>,
    /// Time a client has to send a complete HTTP request head (ms).
    #[arg(long)]
    pub header_read_timeout_ms: Option<u64>,
    /// Time an upgraded envoy connection has to send its hello (ms).
    #[arg(long)]
    pub handshake_timeout_ms: Option<u64>,
    /// Most TCP connections served at once; beyond it new ones get HTTP 503.
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// Highest protocol version to speak (lower values emulate an older engine).
    #[arg(long)]
    pub max_protocol_version: Option<u16>,
    /// How long a stopping actor's in-flight work may run before it is interrupted (ms).
    #[arg(long)]
    pub actor_stop_threshold_ms: Option<u64>,
    /// Silence after which an envoy is dropped (ms).
    #[arg(long)]
    pub envoy_lost_threshold_ms: Option<u64>,
    /// Ping interval (ms).
    #[arg(long)]
    pub ping_interval_ms: Option<u64>,
    /// Blocking permits per connection.
    #[arg(long)]
    pub permits_per_connection: Option<usize>,
    /// Reader lanes one actor may use at once on one connection (besides its writer lane).
    #[arg(long)]
    pub reader_lanes_per_actor: Option<usize>,
    /// Most queued requests one blocking hop takes at once.
    #[arg(long)]
    pub max_batch: Option<usize>,
    /// Reader connections kept per actor database.
    #[arg(long)]
    pub readers_per_actor: Option<usize>,
    /// How long a reader waits for a lock before SQLITE_BUSY (ms).
    #[arg(long)]
    pub busy_timeout_ms: Option<u64>,
    /// When an acknowledged write is on disk: `fsync` (every commit fsynced before its answer) or
    /// `os` (survives an engine crash, not a power loss; for caches and tests).
    #[arg(long, value_enum)]
    pub durability: Option<crate::config::Durability>,
    /// Most requests committed together in one group commit (1 = no grouping).
    #[arg(long)]
    pub group_commit_max_members: Option<usize>,
    /// Longest one group commit stays open collecting requests already queued (ms).
    #[arg(long)]
    pub group_commit_max_open_ms: Option<u64>,
    /// SQLite's process-wide hard heap limit in bytes (0 = none).
    #[arg(long)]
    pub sqlite_hard_heap_limit: Option<i64>,
    /// SQLite's process-wide soft heap limit in bytes: page cache is freed past it (0 = none).
    #[arg(long)]
    pub sqlite_soft_heap_limit: Option<i64>,
    /// Bytes of answers one connection may have queued toward its socket; past it results
    /// get OVERLOADED and the engine stops reading that socket until it drains.
    #[arg(long)]
    pub max_connection_outbox_bytes: Option<usize>,
    /// Bytes of results the whole engine may hold at once (built, not yet flushed).
    #[arg(long)]
    pub max_result_memory_bytes: Option<usize>,
    /// Actors one envoy may have placed at once.
    #[arg(long)]
    pub max_actors_per_connection: Option<usize>,
    /// Actor databases open at once; the least recently used idle one is closed to make room.
    #[arg(long)]
    pub max_open_actor_dbs: Option<usize>,
    /// Close an actor database unused for this long (ms).
    #[arg(long)]
    pub idle_db_close_ms: Option<u64>,
    /// Largest WebSocket message accepted (advertised as maxFrameBytes).
    #[arg(long)]
    pub max_frame_bytes: Option<u32>,
    /// Largest request accepted (LIMIT_EXCEEDED REQUEST_BYTES past it).
    #[arg(long)]
    pub max_request_bytes: Option<u32>,
    /// Largest response built (LIMIT_EXCEEDED RESPONSE_BYTES past it); at most max_frame_bytes.
    #[arg(long)]
    pub max_response_bytes: Option<u32>,
    /// Largest KV key.
    #[arg(long)]
    pub max_kv_key_bytes: Option<u32>,
    /// Largest KV value.
    #[arg(long)]
    pub max_kv_value_bytes: Option<u32>,
    /// Most entries in one KV batch, and most one KV list returns.
    #[arg(long)]
    pub max_kv_batch_entries: Option<u32>,
    /// Accepted but unanswered requests per connection before OVERLOADED.
    #[arg(long)]
    pub max_pending_requests: Option<u32>,
    /// Largest SQL text.
    #[arg(long)]
    pub max_sql_bytes: Option<u32>,
    /// Most bound parameters of one statement.
    #[arg(long)]
    pub max_params: Option<u32>,
    /// Largest single TEXT/BLOB value, bound or returned.
    #[arg(long)]
    pub max_value_bytes: Option<u32>,
    /// Statement deadline (ms; 0 = none).
    #[arg(long)]
    pub max_statement_ms: Option<u32>,
    /// v5: how long a request key and its outcome are kept, from the time in the key (ms).
    #[arg(long)]
    pub request_key_retention_ms: Option<u64>,
    /// v5: most request keys kept per actor; older ones then answer REQUEST_KEY_EXPIRED.
    #[arg(long)]
    pub request_keys_per_actor: Option<usize>,
    /// v5: largest result recorded with a request key (bytes); larger replays carry no rows.
    #[arg(long)]
    pub max_recorded_result_bytes: Option<u32>,
    /// v5: shortest interactive transaction lease (ms).
    #[arg(long)]
    pub min_transaction_lease_ms: Option<u64>,
    /// v5: longest interactive transaction lease (ms).
    #[arg(long)]
    pub max_transaction_lease_ms: Option<u64>,
    /// v5: how long a write waits behind an open transaction before TRANSACTION_BUSY (ms).
    #[arg(long)]
    pub max_transaction_wait_ms: Option<u64>,
    /// v5: interactive transactions open at once per connection.
    #[arg(long)]
    pub max_open_transactions: Option<u32>,
    /// v5: statements in one atomic batch.
    #[arg(long)]
    pub max_batch_statements: Option<u32>,
    /// v5: row bytes the engine reads ahead of a stream's credit.
    #[arg(long)]
    pub stream_window_bytes: Option<u32>,
    /// v5: shortest result stream lease (ms).
    #[arg(long)]
    pub min_stream_lease_ms: Option<u64>,
    /// v5: longest result stream lease (ms).
    #[arg(long)]
    pub max_stream_lease_ms: Option<u64>,
    /// v5: result streams open at once per connection.
    #[arg(long)]
    pub max_open_streams: Option<u32>,
    /// Log lines on stderr: `text` (for people) or `json` (one object per line, for collectors).
    #[arg(long, value_enum)]
    pub log_format: Option<crate::logging::LogFormat>,
    /// Cluster mode: the etcd endpoints, comma-separated (`http://127.0.0.1:2379`). Unset: one
    /// node with its embedded registry. Needs a binary built with `--features cluster`.
    #[arg(long, value_name = "URLS")]
    pub cluster: Option<String>,
    /// Cluster mode: this node's id, stable across restarts (its actors are owned under it).
    #[arg(long)]
    pub node_id: Option<String>,
    /// Cluster mode: the `ws://HOST:PORT` (or `wss://`) other nodes reach this node at.
    #[arg(long, value_name = "URL")]
    pub advertise: Option<String>,
    /// Cluster mode: time to live of this node's etcd lease (ms); it stops serving before it runs out.
    #[arg(long)]
    pub cluster_lease_ms: Option<u64>,
    /// Cluster mode: prefix of every etcd key this engine reads and writes.
    #[arg(long)]
    pub cluster_prefix: Option<String>,
    /// Cluster mode: operator token this node presents to other nodes when it moves actors
    /// to them (default: --auth-token; none on a tokenless loopback cluster).
    #[arg(long)]
    pub cluster_token: Option<String>,
}

impl ServeArgs {
    /// The engine configuration these settings describe: each unset one takes its
    /// `DEFAULT_*` value (reads the tokens file). Not validated: see
    /// [`crate::config_file::load`], which validates the merged result.
    pub fn into_config(self) -> anyhow::Result<crate::config::Config> {
        use crate::config as d;
        use std::time::Duration;
        let ms = Duration::from_millis;
        let listen = match self.listen {
            Some(a) => a,
            None => d::DEFAULT_LISTEN.parse().context("the default listen address")?,
        };
        let mut c = d::Config::new(listen, self.data_dir.unwrap_or_else(|| d::DEFAULT_DATA_DIR.into()));
        c.auth_token = self.auth_token.filter(|t| !t.is_empty());
        if let Some(path) = &self.tokens_file {
            c.tokens = crate::tenants::load_tokens_file(path)?;
        }
        c.allowed_origins = self.allowed_origins.unwrap_or_default();
        c.tls_cert = self.tls_cert;
        c.tls_key = self.tls_key;
        // Each `if let` keeps the default `Config::new` already holds when unset.
        macro_rules! set {
            ($($src:ident => $dst:expr, $conv:expr;)*) => {$(
                if let Some(v) = self.$src { $dst = $conv(v); }
            )*};
        }
        use std::convert::identity as id;
        set! {
            header_read_timeout_ms => c.header_read_timeout, ms;
            handshake_timeout_ms => c.handshake_timeout, ms;
            max_connections => c.max_connections, id;
            max_protocol_version => c.max_protocol_version, id;
            actor_stop_threshold_ms => c.actor_stop_threshold, ms;
            envoy_lost_threshold_ms => c.envoy_lost_threshold, ms;
            ping_interval_ms => c.ping_interval, |v: u64| ms(v.max(1));
            permits_per_connection => c.permits_per_connection, id;
            reader_lanes_per_actor => c.reader_lanes_per_actor, id;
            max_batch => c.max_batch, id;
            readers_per_actor => c.readers_per_actor, id;
            busy_timeout_ms => c.busy_timeout, ms;
            durability => c.durability, id;
            group_commit_max_members => c.group_commit_max_members, id;
            group_commit_max_open_ms => c.group_commit_max_open, ms;
            sqlite_hard_heap_limit => c.sqlite_hard_heap_limit, id;
            sqlite_soft_heap_limit => c.sqlite_soft_heap_limit, id;
            max_connection_outbox_bytes => c.max_connection_outbox_bytes, id;
            max_result_memory_bytes => c.max_result_memory_bytes, id;
            max_actors_per_connection => c.max_actors_per_connection, id;
            max_open_actor_dbs => c.max_open_actor_dbs, id;
            idle_db_close_ms => c.idle_db_close, ms;
            max_frame_bytes => c.limits.max_frame_bytes, id;
            max_request_bytes => c.limits.max_request_bytes, id;
            max_response_bytes => c.limits.max_response_bytes, id;
            max_kv_key_bytes => c.limits.max_kv_key_bytes, id;
            max_kv_value_bytes => c.limits.max_kv_value_bytes, id;
            max_kv_batch_entries => c.limits.max_kv_batch_entries, id;
            max_pending_requests => c.limits.max_pending_requests, id;
            max_sql_bytes => c.limits.max_sql_bytes, id;
            max_params => c.limits.max_params, id;
            max_value_bytes => c.limits.max_value_bytes, id;
            max_statement_ms => c.limits.max_statement_ms, id;
            request_key_retention_ms => c.request_key_retention, ms;
            request_keys_per_actor => c.request_keys_per_actor, id;
            max_recorded_result_bytes => c.max_recorded_result_bytes, id;
            min_transaction_lease_ms => c.min_transaction_lease, ms;
            max_transaction_lease_ms => c.max_transaction_lease, ms;
            max_transaction_wait_ms => c.max_transaction_wait, ms;
            max_open_transactions => c.max_open_transactions, id;
            max_batch_statements => c.max_batch_statements, id;
            stream_window_bytes => c.stream_window_bytes, id;
            min_stream_lease_ms => c.min_stream_lease, ms;
            max_stream_lease_ms => c.max_stream_lease, ms;
            max_open_streams => c.max_open_streams, id;
            log_format => c.log_format, id;
        }
        c.cluster = match self.cluster.filter(|e| !e.trim().is_empty()) {
            Some(endpoints) => Some(d::ClusterConfig {
                endpoints: endpoints.split(',').map(|e| e.trim().to_string()).filter(|e| !e.is_empty()).collect(),
                node_id: self.node_id.context("--cluster needs --node-id (this node's stable id)")?,
                advertise: self
                    .advertise
                    .context("--cluster needs --advertise (the ws://HOST:PORT other nodes reach this one at)")?,
                lease_ttl: ms(self.cluster_lease_ms.unwrap_or(d::DEFAULT_CLUSTER_LEASE_MS)),
                prefix: self.cluster_prefix.unwrap_or_else(|| d::DEFAULT_CLUSTER_PREFIX.to_string()),
                token: self.cluster_token.filter(|t| !t.is_empty()),
            }),
            None => {
                if self.node_id.is_some() || self.advertise.is_some() || self.cluster_token.is_some() {
                    bail!("--node-id, --advertise and --cluster-token only apply with --cluster (etcd endpoints)");
                }
                None
            }
        };
        Ok(c)
    }

    /// Every setting of `c`, all set: what `config print` shows. The tokens of the
    /// tokens file are not settings (only its path is), so they never appear here;
    /// the auth token is copied as is and redacted by the caller.
    pub fn from_config(c: &crate::config::Config) -> Self {
        let ms = |d: std::time::Duration| Some(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let l = &c.limits;
        Self {
            config: None,
            listen: Some(c.listen),
            data_dir: Some(c.data_dir.clone()),
            auth_token: c.auth_token.clone(),
            tokens_file: None,
            tls_cert: c.tls_cert.clone(),
            tls_key: c.tls_key.clone(),
            allowed_origins: Some(c.allowed_origins.clone()),
            header_read_timeout_ms: ms(c.header_read_timeout),
            handshake_timeout_ms: ms(c.handshake_timeout),
            max_connections: Some(c.max_connections),
            max_protocol_version: Some(c.max_protocol_version),
            actor_stop_threshold_ms: ms(c.actor_stop_threshold),
            envoy_lost_threshold_ms: ms(c.envoy_lost_threshold),
            ping_interval_ms: ms(c.ping_interval),
            permits_per_connection: Some(c.permits_per_connection),
            reader_lanes_per_actor: Some(c.reader_lanes_per_actor),
            max_batch: Some(c.max_batch),
            readers_per_actor: Some(c.readers_per_actor),
            busy_timeout_ms: ms(c.busy_timeout),
            durability: Some(c.durability),
            group_commit_max_members: Some(c.group_commit_max_members),
            group_commit_max_open_ms: ms(c.group_commit_max_open),
            sqlite_hard_heap_limit: Some(c.sqlite_hard_heap_limit),
            sqlite_soft_heap_limit: Some(c.sqlite_soft_heap_limit),
            max_connection_outbox_bytes: Some(c.max_connection_outbox_bytes),
            max_result_memory_bytes: Some(c.max_result_memory_bytes),
            max_actors_per_connection: Some(c.max_actors_per_connection),
            max_open_actor_dbs: Some(c.max_open_actor_dbs),
            idle_db_close_ms: ms(c.idle_db_close),
            max_frame_bytes: Some(l.max_frame_bytes),
            max_request_bytes: Some(l.max_request_bytes),
            max_response_bytes: Some(l.max_response_bytes),
            max_kv_key_bytes: Some(l.max_kv_key_bytes),
            max_kv_value_bytes: Some(l.max_kv_value_bytes),
            max_kv_batch_entries: Some(l.max_kv_batch_entries),
            max_pending_requests: Some(l.max_pending_requests),
            max_sql_bytes: Some(l.max_sql_bytes),
            max_params: Some(l.max_params),
            max_value_bytes: Some(l.max_value_bytes),
            max_statement_ms: Some(l.max_statement_ms),
            request_key_retention_ms: ms(c.request_key_retention),
            request_keys_per_actor: Some(c.request_keys_per_actor),
            max_recorded_result_bytes: Some(c.max_recorded_result_bytes),
            min_transaction_lease_ms: ms(c.min_transaction_lease),
            max_transaction_lease_ms: ms(c.max_transaction_lease),
            max_transaction_wait_ms: ms(c.max_transaction_wait),
            max_open_transactions: Some(c.max_open_transactions),
            max_batch_statements: Some(c.max_batch_statements),
            stream_window_bytes: Some(c.stream_window_bytes),
            min_stream_lease_ms: ms(c.min_stream_lease),
            max_stream_lease_ms: ms(c.max_stream_lease),
            max_open_streams: Some(c.max_open_streams),
            log_format: Some(c.log_format),
            cluster: c.cluster.as_ref().map(|k| k.endpoints.join(",")),
            node_id: c.cluster.as_ref().map(|k| k.node_id.clone()),
            advertise: c.cluster.as_ref().map(|k| k.advertise.clone()),
            cluster_lease_ms: ms(c
                .cluster
                .as_ref()
                .map_or(std::time::Duration::from_millis(crate::config::DEFAULT_CLUSTER_LEASE_MS), |k| k.lease_ttl)),
            cluster_prefix: Some(
                c.cluster.as_ref().map_or(crate::config::DEFAULT_CLUSTER_PREFIX.to_string(), |k| k.prefix.clone()),
            ),
            cluster_token: c.cluster.as_ref().and_then(|k| k.token.clone()),
        }
    }
}

#[derive(Debug, Args, Clone)]
pub struct AdminArgs {
    /// Base URL of the engine's admin API.
    #[arg(long, default_value = "http://127.0.0.1:6420")]
    pub url: String,
    /// Admin token.
    #[arg(long, env = "ENVOY_AUTH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// List the cluster's nodes: alive, draining, actors owned (asks one node).
    Status {
        #[command(flatten)]
        admin: AdminArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Move every actor of this node to other live nodes (the node keeps running).
    Drain {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Restore an actor of a node that is down onto this node from a backup file
    /// (refused while the owner's lease lives).
    Adopt {
        /// The actor id.
        id: String,
        /// The backup file (`envoy-engine actors backup`).
        file: PathBuf,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// `envoy-engine cluster …`.
pub async fn run_cluster(cmd: ClusterCommand) -> anyhow::Result<()> {
    match cmd {
        ClusterCommand::Status { admin, json } => {
            let (status, body) = http_request(&admin.url, "GET", "/cluster", admin.token.as_deref()).await?;
            check_status(status, &body)?;
            let v: serde_json::Value = serde_json::from_str(&body).context("decoding the cluster status")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            println!(
                "asked node {} (serving: {}, draining: {})",
                v["node_id"].as_str().unwrap_or("?"),
                v["serving"],
                v["draining"]
            );
            println!("{:<20} {:<7} {:<9} {:>7}  ADVERTISE", "NODE", "ALIVE", "DRAINING", "ACTORS");
            for n in v["nodes"].as_array().into_iter().flatten() {
                // serde_json's Display ignores widths: format each value as a string first.
                println!(
                    "{:<20} {:<7} {:<9} {:>7}  {}",
                    n["node_id"].as_str().unwrap_or("?"),
                    n["alive"].to_string(),
                    n["draining"].to_string(),
                    n["actors"].to_string(),
                    n["advertise"].as_str().unwrap_or("")
                );
            }
        }
        ClusterCommand::Drain { admin } => {
            let (status, body) = http_request(&admin.url, "POST", "/node/drain", admin.token.as_deref()).await?;
            check_status(status, &body)?;
            let v: serde_json::Value = serde_json::from_str(&body).context("decoding the drain report")?;
            for m in v["moved"].as_array().into_iter().flatten() {
                println!(
                    "moved {} to {} (generation {}, {} bytes, {} ms)",
                    m["actor_id"].as_str().unwrap_or("?"),
                    m["to"].as_str().unwrap_or("?"),
                    m["generation"],
                    m["bytes"],
                    m["duration_ms"]
                );
            }
            for f in v["failed"].as_array().into_iter().flatten() {
                println!("NOT moved {}: {}", f[0].as_str().unwrap_or("?"), f[1].as_str().unwrap_or("?"));
            }
        }
        ClusterCommand::Adopt { id, file, admin } => {
            let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let (status, body) = http_exchange(
                &admin.url,
                "POST",
                &format!("/cluster/actors/{id}/adopt"),
                admin.token.as_deref(),
                Some(("application/vnd.sqlite3", &bytes)),
            )
            .await?;
            let body = String::from_utf8_lossy(&body).to_string();
            check_status(status, &body)?;
            println!("{body}");
        }
    }
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum ActorsCommand {
    /// List actors.
    List {
        #[command(flatten)]
        admin: AdminArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Stop (drain) one actor; returns when it is stopped.
    Stop {
        /// The actor id (see `actors list`).
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Create an actor (not placed: the first envoy to get-or-create it starts it).
    Create {
        /// Its name.
        name: String,
        /// Its key.
        #[arg(default_value = "")]
        key: String,
        /// Its namespace.
        #[arg(long, default_value = "default")]
        namespace: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Stop an actor, delete its files and forget it.
    Delete {
        /// The actor id.
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Show one actor: state, generation, host, in-flight, database size and tables (read in place).
    Inspect {
        /// The actor id.
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Write a consistent snapshot of one actor's database to a file (the actor keeps serving).
    Backup {
        /// The actor id.
        id: String,
        /// Where to write it.
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Replace one actor's database with a backup: stops the actor; its next start is a new generation.
    Restore {
        /// The actor id.
        id: String,
        /// The backup file.
        file: PathBuf,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// A parsed `http://host:port[/base]` URL.
fn parse_url(url: &str) -> anyhow::Result<(String, String)> {
    let rest = url.strip_prefix("http://").context("the admin URL must start with http://")?;
    let (hostport, base) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if hostport.is_empty() {
        bail!("the admin URL has no host");
    }
    let hostport = if hostport.contains(':') && !hostport.ends_with(']') {
        hostport.to_string()
    } else {
        format!("{hostport}:80")
    };
    Ok((hostport, base.to_string()))
}

/// Sends one HTTP/1.1 request and returns (status, body).
pub async fn http_request(url: &str, method: &str, path: &str, token: Option<&str>) -> anyhow::Result<(u16, String)> {
    http_request_with_body(url, method, path, token, None).await
}

/// Like [`http_request`], with an optional JSON body.
pub async fn http_request_with_body(
    url: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    json: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    let body = json.map(|j| ("application/json", j.as_bytes()));
    let (status, bytes) = http_exchange(url, method, path, token, body).await?;
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

/// One HTTP/1.1 exchange with bytes in and out: `body` is (content type, bytes).
pub async fn http_exchange(
    url: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<(&str, &[u8])>,
) -> anyhow::Result<(u16, Vec<u8>)> {
    let (hostport, base) = parse_url(url)?;
    let mut stream = tokio::net::TcpStream::connect(&hostport)
        .await
        .with_context(|| format!("connecting to {hostport} (is the engine running?)"))?;
    let mut req = format!(
        "{method} {base}{path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.map_or(0, |(_, b)| b.len())
    );
    if let Some((content_type, _)) = body {
        req.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await?;
    if let Some((_, b)) = body {
        stream.write_all(b).await?;
    }
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").context("malformed HTTP response")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let body = &raw[split + 4..];
    let status: u16 = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .context("malformed HTTP status line")?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    Ok((status, if chunked { dechunk(body)? } else { body.to_vec() }))
}

fn dechunk(mut b: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n").context("malformed chunk")?;
        let size_str = String::from_utf8_lossy(&b[..eol]);
        let size =
            usize::from_str_radix(size_str.split(';').next().unwrap_or("").trim(), 16).context("bad chunk size")?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size.saturating_add(2) {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

fn check_status(status: u16, body: &str) -> anyhow::Result<()> {
    if status == 200 {
        return Ok(());
    }
    let msg = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(String::from))
        .unwrap_or_else(|| body.to_string());
    bail!("engine answered HTTP {status}: {msg}")
}

/// Renders actors as an aligned table.
pub fn table(actors: &[ActorView]) -> String {
    let header = ["ID", "NAMESPACE", "NAME", "KEY", "STATE", "GEN", "ENVOY", "INFLIGHT"];
    let rows: Vec<[String; 8]> = actors
        .iter()
        .map(|a| {
            [
                a.id.clone(),
                a.namespace.clone(),
                a.name.clone(),
                a.key.clone(),
                a.state.clone(),
                a.generation.to_string(),
                a.envoy.clone().unwrap_or_else(|| "-".into()),
                a.inflight.to_string(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    out.push_str(&line(&header.map(String::from)));
    for r in &rows {
        out.push_str(&line(r));
    }
    out
}

/// The snapshot of one actor's database.
async fn backup_one(admin: &AdminArgs, id: &str) -> anyhow::Result<Vec<u8>> {
    let (status, body) =
        http_exchange(&admin.url, "GET", &format!("/actors/{id}/backup"), admin.token.as_deref(), None).await?;
    if status != 200 {
        check_status(status, &String::from_utf8_lossy(&body))?;
    }
    Ok(body)
}

/// `envoy-engine backup --all DIR`: every actor the token can see, one file each (`<id>.sqlite`).
pub async fn backup_all(admin: AdminArgs, dir: PathBuf) -> anyhow::Result<()> {
    let (status, body) = http_request(&admin.url, "GET", "/actors", admin.token.as_deref()).await?;
    check_status(status, &body)?;
    let actors: Vec<ActorView> = serde_json::from_str(&body).context("decoding the actor list")?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = 0;
    for a in &actors {
        match backup_one(&admin, &a.id).await {
            Ok(bytes) => {
                let path = dir.join(format!("{}.sqlite", a.id));
                std::fs::write(&path, &bytes).with_context(|| format!("writing {}", path.display()))?;
                println!(
                    "{} ({} {}:{}) -> {} ({} bytes)",
                    a.id,
                    a.namespace,
                    a.name,
                    a.key,
                    path.display(),
                    bytes.len()
                );
                written += 1;
            }
            // An actor that never wrote has no database: nothing to back up.
            Err(e) if e.to_string().contains("no database yet") => println!("{}: no database yet, skipped", a.id),
            Err(e) => return Err(e.context(format!("backing up {}", a.id))),
        }
    }
    println!("{written} of {} actor(s) backed up into {}", actors.len(), dir.display());
    Ok(())
}

/// Runs an `actors` subcommand, printing to stdout.
pub async fn run_actors(cmd: ActorsCommand) -> anyhow::Result<()> {
    match cmd {
        ActorsCommand::List { admin, json } => {
            let (status, body) = http_request(&admin.url, "GET", "/actors", admin.token.as_deref()).await?;
            check_status(status, &body)?;
            let actors: Vec<ActorView> = serde_json::from_str(&body).context("decoding the actor list")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&actors)?);
            } else {
                print!("{}", table(&actors));
            }
        }
        ActorsCommand::Create { name, key, namespace, admin } => {
            let body = serde_json::json!({ "namespace": namespace, "name": name, "key": key }).to_string();
            let (status, body) =
                http_request_with_body(&admin.url, "POST", "/actors", admin.token.as_deref(), Some(&body)).await?;
            if status != 201 {
                check_status(status, &body)?;
            }
            let v: serde_json::Value = serde_json::from_str(&body).context("decoding the answer")?;
            let verb = if v["created"] == true { "created" } else { "exists:" };
            println!("{verb} {} ({namespace} {name}:{key})", v["id"].as_str().unwrap_or("?"));
        }
        ActorsCommand::Delete { id, admin } => {
            let (status, body) =
                http_request(&admin.url, "DELETE", &format!("/actors/{id}"), admin.token.as_deref()).await?;
            check_status(status, &body)?;
            println!("deleted {id}");
        }
        ActorsCommand::Inspect { id, admin } => {
            let (status, body) = http_request(&admin.url, "GET", "/actors", admin.token.as_deref()).await?;
            check_status(status, &body)?;
            let actors: Vec<ActorView> = serde_json::from_str(&body).context("decoding the actor list")?;
            let a = actors.into_iter().find(|a| a.id == id).with_context(|| format!("no actor with id {id}"))?;
            println!("{}", serde_json::to_string_pretty(&a)?);
            let q = serde_json::json!({ "sql": "SELECT type, name FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name" });
            let (status, body) = http_request_with_body(
                &admin.url,
                "POST",
                &format!("/actors/{id}/sql"),
                admin.token.as_deref(),
                Some(&q.to_string()),
            )
            .await?;
            if status == 200 {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                for row in v["rows"].as_array().into_iter().flatten() {
                    println!("{} {}", row[0].as_str().unwrap_or("?"), row[1].as_str().unwrap_or("?"));
                }
            }
        }
        ActorsCommand::Backup { id, output, admin } => {
            let bytes = backup_one(&admin, &id).await?;
            std::fs::write(&output, &bytes).with_context(|| format!("writing {}", output.display()))?;
            println!("wrote {} ({} bytes)", output.display(), bytes.len());
        }
        ActorsCommand::Restore { id, file, admin } => {
            let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let (status, body) = http_exchange(
                &admin.url,
                "POST",
                &format!("/actors/{id}/restore"),
                admin.token.as_deref(),
                Some(("application/vnd.sqlite3", &bytes)),
            )
            .await?;
            let body = String::from_utf8_lossy(&body).into_owned();
            check_status(status, &body)?;
            println!(
                "restored {id} from {} ({} bytes); its next start is a new generation",
                file.display(),
                bytes.len()
            );
        }
        ActorsCommand::Stop { id, admin } => {
            let (status, body) =
                http_request(&admin.url, "POST", &format!("/actors/{id}/stop"), admin.token.as_deref()).await?;
            check_status(status, &body)?;
            let v: serde_json::Value = serde_json::from_str(&body).context("decoding the stop report")?;
            println!(
                "stopped {} (generation {}) in {} ms; {} request(s) interrupted",
                v["actor_id"].as_str().unwrap_or(&id),
                v["generation"],
                v["duration_ms"],
                v["interrupted"]
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(parse_url("http://127.0.0.1:6420").unwrap(), ("127.0.0.1:6420".into(), "".into()));
        assert_eq!(parse_url("http://localhost/x/").unwrap(), ("localhost:80".into(), "/x".into()));
        assert!(parse_url("https://x").is_err());
    }

    #[test]
    fn chunks() {
        assert_eq!(dechunk(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap(), b"abcde");
    }
}
