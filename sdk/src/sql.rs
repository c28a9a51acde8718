//! The actor's SQLite database, with a rusqlite-like API.

use crate::client::Client;
use crate::core::{Request, RequestOptions, Response};
use crate::error::{Error, Result};
use crate::rows::{ExecuteOutcome, Rows};
use crate::value::Params;

/// SQL against one actor generation's database.
///
/// ```no_run
/// # async fn f(db: envoy_client::Db) -> envoy_client::Result<()> {
/// use envoy_client::params;
/// db.exec("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, name TEXT, n INT, b BLOB)").await?;
/// db.execute("INSERT INTO t(name, n, b) VALUES (?, ?, ?)", params!["x", None::<i64>, vec![0u8; 4]]).await?;
/// let rows = db.query("SELECT id, name FROM t WHERE id = ?", params![1]).await?;
/// for row in &rows {
///     let id: i64 = row.get("id")?;
///     let name: String = row.get(1)?;
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Db {
    client: Client,
    actor_id: String,
    generation: u64,
    /// Applied to every request made through this handle.
    opts: RequestOptions,
}

impl Db {
    pub(crate) fn new(client: Client, actor_id: String, generation: u64) -> Self {
        Db { client, actor_id, generation, opts: RequestOptions::default() }
    }

    /// The same handle with a per-request deadline.
    pub fn with_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.opts.timeout_ms = Some(timeout.as_millis().min(u128::from(u64::MAX)) as u64);
        self
    }

    /// The same handle, promising that its statements only read: if an answer
    /// is lost to a disconnect the statement is sent once more instead of
    /// failing with `IndeterminateResult`. Never applied to `execute_write`.
    /// Do not use it for statements that write.
    pub fn idempotent(mut self) -> Self {
        self.opts.idempotent = true;
        self
    }

    /// Runs one statement; the engine routes read-only statements to a reader.
    pub async fn execute(&self, sql: &str, params: impl Into<Params>) -> Result<ExecuteOutcome> {
        self.run_execute(sql, params.into(), false).await
    }

    /// Runs one statement on the writer connection (never retried).
    pub async fn execute_write(&self, sql: &str, params: impl Into<Params>) -> Result<ExecuteOutcome> {
        self.run_execute(sql, params.into(), true).await
    }

    /// Runs one statement and returns its rows.
    pub async fn query(&self, sql: &str, params: impl Into<Params>) -> Result<Rows> {
        Ok(self.execute(sql, params).await?.rows)
    }

    /// Runs several `;`-separated statements without parameters; returns the
    /// rows of the last one.
    pub async fn exec(&self, sql: &str) -> Result<Rows> {
        let request =
            Request::SqlExec { actor_id: self.actor_id.clone(), generation: self.generation, sql: sql.to_string() };
        match self.client.submit(request, self.opts).await? {
            Response::Query(q) => Ok(Rows::new(q.columns, q.rows)),
            other => Err(Error::Protocol(format!("unexpected SQL exec answer {other:?}"))),
        }
    }

    async fn run_execute(&self, sql: &str, params: Params, write: bool) -> Result<ExecuteOutcome> {
        let request = Request::SqlExecute {
            actor_id: self.actor_id.clone(),
            generation: self.generation,
            sql: sql.to_string(),
            params: params.0,
            write,
        };
        match self.client.submit(request, self.opts).await? {
            Response::Execute(x) => Ok(ExecuteOutcome {
                rows: Rows::new(x.columns, x.rows),
                changes: x.changes,
                last_insert_row_id: x.last_insert_row_id,
                route: x.route,
            }),
            other => Err(Error::Protocol(format!("unexpected SQL execute answer {other:?}"))),
        }
    }
}
