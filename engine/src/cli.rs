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
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = crate::config::DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Directory for the metadata database and actor files (created if missing).
    #[arg(long, default_value = crate::config::DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Token envoys and operators must present: every namespace, every role (identity
    /// `auth-token`). Off loopback, this or --tokens-file is required. May be combined
    /// with --tokens-file.
    #[arg(long, env = "ENVOY_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,
    /// TOML file of per-tenant tokens (name, token, namespaces, role); see specs/security.md.
    #[arg(long, value_name = "PATH")]
    pub tokens_file: Option<PathBuf>,
    /// Browser origin allowed to call the engine (exact match, e.g. https://app.example.com);
    /// repeatable. Requests carrying any other Origin header are refused with 403.
    #[arg(long = "allowed-origin", value_name = "ORIGIN")]
    pub allowed_origins: Vec<String>,
    /// Time a client has to send a complete HTTP request head (ms).
    #[arg(long, default_value_t = crate::config::DEFAULT_HEADER_READ_TIMEOUT.as_millis() as u64)]
    pub header_read_timeout_ms: u64,
    /// Time an upgraded envoy connection has to send its hello (ms).
    #[arg(long, default_value_t = crate::config::DEFAULT_HANDSHAKE_TIMEOUT.as_millis() as u64)]
    pub handshake_timeout_ms: u64,
    /// Most TCP connections served at once; beyond it new ones get HTTP 503.
    #[arg(long, default_value_t = crate::config::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Highest protocol version to speak (lower values emulate an older engine).
    #[arg(long, default_value_t = crate::config::DEFAULT_MAX_PROTOCOL_VERSION)]
    pub max_protocol_version: u16,
    /// How long a stopping actor's in-flight work may run before it is interrupted (ms).
    #[arg(long, default_value_t = crate::config::DEFAULT_ACTOR_STOP_THRESHOLD.as_millis() as u64)]
    pub actor_stop_threshold_ms: u64,
    /// Silence after which an envoy is dropped (ms).
    #[arg(long, default_value_t = crate::config::DEFAULT_ENVOY_LOST_THRESHOLD.as_millis() as u64)]
    pub envoy_lost_threshold_ms: u64,
    /// Ping interval (ms).
    #[arg(long, default_value_t = crate::config::DEFAULT_PING_INTERVAL.as_millis() as u64)]
    pub ping_interval_ms: u64,
    /// Blocking permits per connection.
    #[arg(long, default_value_t = crate::config::DEFAULT_PERMITS_PER_CONNECTION)]
    pub permits_per_connection: usize,
    /// When an acknowledged write is on disk: `fsync` (every commit fsynced before its answer) or
    /// `os` (survives an engine crash, not a power loss; for caches and tests).
    #[arg(long, value_enum, default_value_t = crate::config::DEFAULT_DURABILITY)]
    pub durability: crate::config::Durability,
    /// Most requests committed together in one group commit (1 = no grouping).
    #[arg(long, default_value_t = crate::config::DEFAULT_GROUP_COMMIT_MAX_MEMBERS)]
    pub group_commit_max_members: usize,
    /// Longest one group commit stays open collecting requests already queued (ms).
    #[arg(long, default_value_t = crate::config::DEFAULT_GROUP_COMMIT_MAX_OPEN.as_millis() as u64)]
    pub group_commit_max_open_ms: u64,
    /// SQLite's process-wide hard heap limit in bytes (0 = none).
    #[arg(long, default_value_t = crate::config::DEFAULT_SQLITE_HARD_HEAP_LIMIT_BYTES)]
    pub sqlite_hard_heap_limit: i64,
    /// SQLite's process-wide soft heap limit in bytes: page cache is freed past it (0 = none).
    #[arg(long, default_value_t = crate::config::DEFAULT_SQLITE_SOFT_HEAP_LIMIT_BYTES)]
    pub sqlite_soft_heap_limit: i64,
    /// Bytes of answers one connection may have queued toward its socket; past it results
    /// get OVERLOADED and the engine stops reading that socket until it drains.
    #[arg(long, default_value_t = crate::config::DEFAULT_MAX_CONNECTION_OUTBOX_BYTES)]
    pub max_connection_outbox_bytes: usize,
    /// Bytes of results the whole engine may hold at once (built, not yet flushed).
    #[arg(long, default_value_t = crate::config::DEFAULT_MAX_RESULT_MEMORY_BYTES)]
    pub max_result_memory_bytes: usize,
    /// Actors one envoy may have placed at once.
    #[arg(long, default_value_t = crate::config::DEFAULT_MAX_ACTORS_PER_CONNECTION)]
    pub max_actors_per_connection: usize,
    /// Actor databases open at once; the least recently used idle one is closed to make room.
    #[arg(long, default_value_t = crate::config::DEFAULT_MAX_OPEN_ACTOR_DBS)]
    pub max_open_actor_dbs: usize,
    /// Close an actor database unused for this long (ms).
    #[arg(long, default_value_t = crate::config::DEFAULT_IDLE_DB_CLOSE.as_millis() as u64)]
    pub idle_db_close_ms: u64,
    /// Log lines on stderr: `text` (for people) or `json` (one object per line, for collectors).
    #[arg(long, value_enum, default_value_t = crate::logging::LogFormat::Text)]
    pub log_format: crate::logging::LogFormat,
}

impl ServeArgs {
    /// The engine configuration these flags describe (reads the tokens file).
    pub fn into_config(self) -> anyhow::Result<crate::config::Config> {
        let mut c = crate::config::Config::new(self.listen, self.data_dir);
        c.auth_token = self.auth_token.filter(|t| !t.is_empty());
        if let Some(path) = &self.tokens_file {
            c.tokens = crate::tenants::load_tokens_file(path)?;
        }
        c.allowed_origins = self.allowed_origins;
        c.header_read_timeout = std::time::Duration::from_millis(self.header_read_timeout_ms);
        c.handshake_timeout = std::time::Duration::from_millis(self.handshake_timeout_ms);
        c.max_connections = self.max_connections;
        c.max_protocol_version = self.max_protocol_version;
        c.actor_stop_threshold = std::time::Duration::from_millis(self.actor_stop_threshold_ms);
        c.envoy_lost_threshold = std::time::Duration::from_millis(self.envoy_lost_threshold_ms);
        c.ping_interval = std::time::Duration::from_millis(self.ping_interval_ms.max(1));
        c.permits_per_connection = self.permits_per_connection;
        c.durability = self.durability;
        c.group_commit_max_members = self.group_commit_max_members;
        c.group_commit_max_open = std::time::Duration::from_millis(self.group_commit_max_open_ms);
        c.sqlite_hard_heap_limit = self.sqlite_hard_heap_limit;
        c.sqlite_soft_heap_limit = self.sqlite_soft_heap_limit;
        c.max_connection_outbox_bytes = self.max_connection_outbox_bytes;
        c.max_result_memory_bytes = self.max_result_memory_bytes;
        c.max_actors_per_connection = self.max_actors_per_connection;
        c.max_open_actor_dbs = self.max_open_actor_dbs;
        c.idle_db_close = std::time::Duration::from_millis(self.idle_db_close_ms);
        Ok(c)
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
    let hostport = if hostport.contains(':') && !hostport.ends_with(']') { hostport.to_string() } else { format!("{hostport}:80") };
    Ok((hostport, base.to_string()))
}

/// Sends one HTTP/1.1 request and returns (status, body).
pub async fn http_request(url: &str, method: &str, path: &str, token: Option<&str>) -> anyhow::Result<(u16, String)> {
    let (hostport, base) = parse_url(url)?;
    let mut stream = tokio::net::TcpStream::connect(&hostport)
        .await
        .with_context(|| format!("connecting to {hostport} (is the engine running?)"))?;
    let mut req = format!("{method} {base}{path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\nContent-Length: 0\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await?;
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
    let body = if chunked { dechunk(body)? } else { body.to_vec() };
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn dechunk(mut b: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n").context("malformed chunk")?;
        let size_str = String::from_utf8_lossy(&b[..eol]);
        let size = usize::from_str_radix(size_str.split(';').next().unwrap_or("").trim(), 16).context("bad chunk size")?;
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
