//! `envoy-engine sql`: a SQL shell for one actor's database, like `sqlite3`.
//!
//! It connects as an envoy with the client crate (native transport), gets or
//! creates the actor `NAME[:KEY]` — which places the actor on the shell's own
//! envoy, moving it from wherever it ran — and runs SQL: one statement given
//! on the command line, a file (`-f`), or an interactive session with history,
//! multi-line input (a statement ends with `;`) and `.tables` / `.schema`.

mod render;
mod repl;
mod statements;

use anyhow::Context;
use envoy_client::{ActorHandle, Client, ClientConfig, Db};
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
    let config = ClientConfig {
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
    let db = actor.sql();
    let mode = if args.json { Mode::Json } else { Mode::Table };
    let result = match (&args.sql, &args.file) {
        (Some(sql), _) => run_batch(&db, sql, mode).await,
        (None, Some(file)) => {
            let sql = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
            run_batch(&db, &sql, mode).await
        }
        (None, None) => repl::run(&db, &actor, mode).await,
    };
    client.close().await;
    result
}

/// Runs every statement of `sql` in order, printing each result; stops at the first error.
async fn run_batch(db: &Db, sql: &str, mode: Mode) -> anyhow::Result<()> {
    for stmt in statements::split(sql) {
        let out = run_one(db, stmt).await.map_err(|e| anyhow::anyhow!("{e}"))?;
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

/// Runs one statement (the text between two top-level `;`).
async fn run_one(db: &Db, stmt: &str) -> envoy_client::Result<Output> {
    if statements::needs_exec(stmt) {
        // e.g. CREATE TRIGGER … BEGIN …; END: several `;` but one statement.
        let rows = db.exec(stmt).await?;
        return Ok(Output { rows, changes: None });
    }
    let out = db.execute(stmt, ()).await?;
    Ok(Output { rows: out.rows, changes: Some(out.changes) })
}
