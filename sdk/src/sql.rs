//! The actor's SQLite database, with a rusqlite-like API.
//!
//! One-statement calls (`execute`, `query`, `exec`) work at every protocol
//! version with SQL (v4+). Protocol v5 adds [`Db::batch`] (atomic batches),
//! [`Db::transaction`] / [`Db::begin`] (interactive transactions) and
//! [`Db::stream`] (streamed results); below v5 they fail with
//! [`Error::RemoteUnavailable`] before anything is sent. On a v5 connection
//! every write is keyed and exactly-once across reconnects (see
//! `specs/client.md`).

use crate::client::Client;
use crate::core::{Request, RequestOptions, Response, SqlMeta};
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
    pub(crate) client: Client,
    pub(crate) actor_id: String,
    pub(crate) generation: u64,
    /// Applied to every request made through this handle.
    pub(crate) opts: RequestOptions,
    /// Lease asked for by `begin`/`transaction` through this handle; `None`:
    /// `ClientConfig::transaction_lease_ms`.
    pub(crate) transaction_lease_ms: Option<u32>,
    /// Credit window of `stream` through this handle; `None`:
    /// `ClientConfig::stream_credit_bytes`.
    pub(crate) stream_credit_bytes: Option<u32>,
}

impl Db {
    pub(crate) fn new(client: Client, actor_id: String, generation: u64) -> Self {
        Db {
            client,
            actor_id,
            generation,
            opts: RequestOptions::default(),
            transaction_lease_ms: None,
            stream_credit_bytes: None,
        }
    }

    /// The same handle with a per-request deadline.
    pub fn with_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.opts.timeout_ms = Some(timeout.as_millis().min(u128::from(u64::MAX)) as u64);
        self
    }

    /// The same handle, promising that its statements only read: if an answer
    /// is lost to a disconnect the statement is sent once more instead of
    /// failing with `IndeterminateResult`. Never applied to `execute_write`.
    /// Do not use it for statements that write. (On a v5 connection every
    /// `execute` is re-sent with its request key anyway.)
    pub fn idempotent(mut self) -> Self {
        self.opts.idempotent = true;
        self
    }

    /// The same handle, asking for this idle lease for the transactions it
    /// begins (v5): the engine rolls a transaction back when no statement
    /// names it for this long. The engine clamps it into its bounds
    /// (`EngineLimits::min/maxTransactionLeaseMs`).
    pub fn with_transaction_lease(mut self, lease: std::time::Duration) -> Self {
        self.transaction_lease_ms = Some(lease.as_millis().min(u128::from(u32::MAX)) as u32);
        self
    }

    /// The same handle, with this credit window (row bytes at their decoded
    /// size) for the streams it opens (v5): at most this much of a stream is
    /// granted to the engine and not yet taken by the consumer.
    pub fn with_stream_credit(mut self, bytes: u32) -> Self {
        self.stream_credit_bytes = Some(bytes.max(1));
        self
    }

    /// Runs one statement; the engine routes read-only statements to a reader.
    /// On a v5 connection it carries a request key (recorded only if it
    /// wrote), so it is re-sent after a reconnect instead of failing with
    /// `IndeterminateResult`.
    pub async fn execute(&self, sql: &str, params: impl Into<Params>) -> Result<ExecuteOutcome> {
        self.run_execute(sql, params.into(), false).await
    }

    /// Runs one statement on the writer connection. Below v5 it is never
    /// retried (a lost answer is `IndeterminateResult`); on a v5 connection it
    /// is re-sent with its request key and runs exactly once.
    pub async fn execute_write(&self, sql: &str, params: impl Into<Params>) -> Result<ExecuteOutcome> {
        self.run_execute(sql, params.into(), true).await
    }

    /// Runs one statement and returns its rows.
    pub async fn query(&self, sql: &str, params: impl Into<Params>) -> Result<Rows> {
        Ok(self.execute(sql, params).await?.rows)
    }

    /// Runs several `;`-separated statements without parameters; returns the
    /// rows of the last one (with the request's cost at v5).
    pub async fn exec(&self, sql: &str) -> Result<Rows> {
        let request =
            Request::SqlExec { actor_id: self.actor_id.clone(), generation: self.generation, sql: sql.to_string() };
        match self.client.submit(request, self.opts).await? {
            Response::Query(q) => Ok(Rows::new(q.columns, q.rows)),
            Response::QueryV5 { result, meta } => Ok(Rows::new(result.columns, result.rows).with_cost(meta.cost)),
            other => Err(unexpected("SQL exec", other)),
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
            Response::Execute(x) => Ok(ExecuteOutcome::from_wire(x, SqlMeta::default())),
            Response::ExecuteV5 { result, meta } => Ok(ExecuteOutcome::from_wire(result, meta)),
            other => Err(unexpected("SQL execute", other)),
        }
    }
}

/// The error for an answer of the wrong kind.
pub(crate) fn unexpected(what: &str, answer: Response) -> Error {
    Error::Protocol(format!("unexpected {what} answer {}", answer.kind()))
}
