//! `envoy-engine sql`: a SQL shell for one actor's database, like `sqlite3`.
//!
//! An actor that exists is reached through the engine's operator SQL route
//! (`POST /actors/{id}/sql`): it stays on its host at its generation, and the
//! shell is read-only unless `--write`. An actor that does not exist, or
//! `--as-envoy`, makes the shell join as an envoy with the client crate and get
//! or create the actor — which places it on the shell, moving it from wherever it
//! ran. Either way it runs SQL: one statement given on the command line, a file
//! (`-f`), or an interactive session with history, multi-line input (a
//! statement ends with `;`) and `.tables` / `.schema`.

mod backend;
mod render;
mod repl;
mod statements;

use anyhow::Context;
use backend::Backend;
use envoy_client::{ActorHandle, Client, ClientConfig};
use std::path::PathBuf;

/// How long the shell waits for the engine before giving up.
pub const SHELL_CONNECT_TIMEOUT_MS: u64 = 5_000;

/// Default engine endpoint of the shell.
pub const DEFAULT_URL: &str = "ws://127.0.0.1:6420";

/// Arguments of `envoy-engine sql`.
#[derive(Debug, Clone, clap::Args)]
pub struct ShellArgs {
    /// Engine endpoint (ws:// or http://).
    #[arg(long, env = "ENVOY_URL", default_value = DEFAULT_URL)]
    pub url: String,
    /// Auth token (sent as the `envoy.token.<TOKEN>` subprotocol).
    #[arg(long, env = "ENVOY_AUTH_TOKEN")]
    pub token: Option<String>,
    /// Namespace of the actor.
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// The actor: `NAME` or `NAME:KEY` (created if it does not exist).
    #[arg(long)]
    pub actor: String,
    /// Run the SQL in this file (several statements allowed) and exit.
    #[arg(short = 'f', long = "file", conflicts_with = "sql")]
    pub file: Option<PathBuf>,
    /// Print results as JSON instead of a table: one line per statement,
    /// {"columns": [...], "rows": [[...], ...], "changes": n}, each row an array in column
    /// order (duplicate column names keep every value; blobs are {"blob": "<hex>"}).
    #[arg(long)]
    pub json: bool,
    /// Per-statement timeout in milliseconds.
    #[arg(long, default_value_t = 60_000)]
    pub timeout_ms: u64,
    /// PEM file of a root certificate to trust for `wss://` (an engine's own or private CA).
    #[arg(long, value_name = "PATH")]
    pub tls_ca: Option<PathBuf>,
    /// Join as an envoy even when the actor exists (places it on the shell, moving it
    /// from its host). Without it an existing actor is reached through the operator
    /// SQL route and stays where it runs.
    #[arg(long)]
    pub as_envoy: bool,
    /// Allow statements that write, on an actor reached through the operator SQL route
    /// (operator role); without it that route is read-only.
    #[arg(long)]
    pub write: bool,
    /// SQL to run; without it (and without -f) an interactive shell starts.
    pub sql: Option<String>,
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Table,
    Json,
}

/// Runs the shell.
pub async fn run(args: ShellArgs) -> anyhow::Result<()> {
    let (name, key) = match args.actor.split_once(':') {
        Some((n, k)) => (n.to_string(), k.to_string()),
        None => (args.actor.clone(), String::new()),
    };
    anyhow::ensure!(!name.is_empty(), "--actor needs a name: NAME or NAME:KEY");
    let mode = if args.json { Mode::Json } else { Mode::Table };
    // An actor that exists is reached through the operator SQL route (it is not moved).
    if !args.as_envoy {
        if let Some((actor_id, generation)) = find_actor(&args, &name, &key).await? {
            let backend = Backend::Admin {
                url: http_url(&args.url),
                token: args.token.clone(),
                actor_id,
                generation,
                write: args.write,
            };
            return run_with(&backend, &args, mode).await;
        }
    }
    let tls_root_ca_pem = match &args.tls_ca {
        Some(p) => Some(std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?),
        None => None,
    };
    let config = ClientConfig {
        tls_root_ca_pem,
        endpoint: args.url.clone(),
        namespace: args.namespace.clone(),
        token: args.token.clone(),
        pool_name: "sql-shell".into(),
        request_timeout_ms: Some(args.timeout_ms),
        // A shell should say quickly that the engine is not there.
        initial_connect_timeout_ms: SHELL_CONNECT_TIMEOUT_MS,
        ..Default::default()
    };
    let client = Client::connect(config).await.with_context(|| format!("cannot connect to {}", args.url))?;
    let actor: ActorHandle =
        client.get_or_create_actor(&name, &key).await.with_context(|| format!("cannot get actor {}", args.actor))?;
    let backend = Backend::Envoy { db: actor.sql(), actor };
    let result = run_with(&backend, &args, mode).await;
    client.close().await;
    result
}

async fn run_with(backend: &Backend, args: &ShellArgs, mode: Mode) -> anyhow::Result<()> {
    match (&args.sql, &args.file) {
        (Some(sql), _) => run_batch(backend, sql, mode).await,
        (None, Some(file)) => {
            let sql = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
            run_batch(backend, &sql, mode).await
        }
        (None, None) => repl::run(backend, mode).await,
    }
}

/// `http://host:port` of an engine given as `ws://host:port` (or already http).
fn http_url(url: &str) -> String {
    let url = url.trim_end_matches('/');
    let url = url.strip_suffix("/envoys/connect").unwrap_or(url);
    match url.strip_prefix("ws://") {
        Some(rest) => format!("http://{rest}"),
        None => url.to_string(),
    }
}

/// The id and generation of the actor `name:key` in the shell's namespace, if it
/// exists and the admin API is reachable with the shell's token.
async fn find_actor(args: &ShellArgs, name: &str, key: &str) -> anyhow::Result<Option<(String, u64)>> {
    let url = http_url(&args.url);
    let (status, body) = match crate::cli::http_request(&url, "GET", "/actors", args.token.as_deref()).await {
        Ok(r) => r,
        // No admin API on that address (e.g. wss://): join as an envoy.
        Err(_) => return Ok(None),
    };
    if status != 200 {
        // A token that may not read the admin API (an envoy token): join as an envoy as before.
        return Ok(None);
    }
    let actors: Vec<crate::admin::ActorView> = serde_json::from_str(&body).context("decoding the actor list")?;
    Ok(actors
        .into_iter()
        .find(|a| a.namespace == args.namespace && a.name == name && a.key == key)
        .map(|a| (a.id, a.generation)))
}

/// Runs every statement of `sql` in order, printing each result; stops at the first error.
async fn run_batch(backend: &Backend, sql: &str, mode: Mode) -> anyhow::Result<()> {
    for stmt in statements::split(sql) {
        let out = backend.run_one(stmt).await?;
        print!("{}", render::render(&out, mode));
    }
    Ok(())
}

/// What one statement produced.
pub struct Output {
    pub rows: envoy_client::Rows,
    /// Rows changed (absent for statements run through `exec`).
    pub changes: Option<u64>,
}
