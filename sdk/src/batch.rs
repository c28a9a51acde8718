//! Atomic batches (protocol v5, §9.4 of `specs/protocol.md`): several
//! statements with parameters in one transaction, all or nothing, in one
//! round trip.

use crate::core::{Request, Response};
use crate::error::Result;
use crate::rows::{ExecuteOutcome, SqlCost};
use crate::sql::{unexpected, Db};
use crate::value::Params;
use envoy_protocol as p;

/// How a batch or an interactive transaction takes its locks (v5):
/// `Read` (one snapshot on a reader, never waits for the writer; a statement
/// that writes fails with SQLite's READONLY), `Write` (takes the actor's
/// writer at the start, `BEGIN IMMEDIATE`), or `Deferred` (starts as a read,
/// takes the writer at its first write).
pub use envoy_protocol::SqliteTransactionMode as TransactionMode;

/// The mode of [`Db::batch`]: the same as a transaction's.
pub type BatchMode = TransactionMode;

/// One statement of a batch: made with [`stmt`].
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    /// Exactly one SQL statement.
    pub sql: String,
    /// Its positional parameters.
    pub params: Params,
}

/// A statement and its parameters, for [`Db::batch`]:
/// `stmt("INSERT INTO t(x) VALUES (?)", params![1])`.
pub fn stmt(sql: impl Into<String>, params: impl Into<Params>) -> Statement {
    Statement { sql: sql.into(), params: params.into() }
}

impl Statement {
    pub(crate) fn to_wire(&self) -> p::SqliteStatement {
        p::SqliteStatement { sql: self.sql.clone(), params: self.params.0.clone() }
    }
}

/// What a committed batch returns: one outcome per statement, in order.
/// Derefs to `[ExecuteOutcome]`.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchOutcome {
    /// One outcome per statement, in request order (their `cost` is `None`:
    /// the engine reports the batch's cost as a whole, in `cost`).
    pub results: Vec<ExecuteOutcome>,
    /// What the whole batch cost the engine.
    pub cost: Option<SqlCost>,
    /// The batch was re-sent after a lost answer and the engine answered the
    /// recorded outcome of the first send (it ran once). See
    /// [`ExecuteOutcome::replayed`].
    pub replayed: bool,
    /// With `replayed`: the recorded result was too large to keep, so every
    /// statement's `rows` is empty (changes and row ids are the recorded ones).
    pub rows_omitted: bool,
}

impl BatchOutcome {
    /// The per-statement outcomes.
    pub fn into_vec(self) -> Vec<ExecuteOutcome> {
        self.results
    }
}

impl std::ops::Deref for BatchOutcome {
    type Target = [ExecuteOutcome];
    fn deref(&self) -> &[ExecuteOutcome] {
        &self.results
    }
}

impl IntoIterator for BatchOutcome {
    type Item = ExecuteOutcome;
    type IntoIter = std::vec::IntoIter<ExecuteOutcome>;
    fn into_iter(self) -> Self::IntoIter {
        self.results.into_iter()
    }
}

impl Db {
    /// Runs `statements` in one transaction of `mode`, in order, all or
    /// nothing (protocol v5). An empty batch succeeds with no results.
    ///
    /// A failing statement fails the batch with [`Error::Sql`](crate::Error::Sql)
    /// whose `statement_index` names it (0-based) and `committed: Some(false)`:
    /// nothing of the batch was applied. More statements than the engine's
    /// `maxBatchStatements` fail with `LimitExceeded { kind: BatchStatements }`
    /// before anything is sent. A `Write`/`Deferred` batch carries a request
    /// key: it is re-sent after a reconnect and runs once. Below v5:
    /// [`Error::RemoteUnavailable`](crate::Error::RemoteUnavailable).
    ///
    /// ```no_run
    /// # async fn f(db: envoy_client::Db) -> envoy_client::Result<()> {
    /// use envoy_client::{params, stmt, BatchMode};
    /// let out = db
    ///     .batch(BatchMode::Write, [
    ///         stmt("INSERT INTO accounts(id, balance) VALUES (?, ?)", params![1, 100]),
    ///         stmt("INSERT INTO accounts(id, balance) VALUES (?, ?)", params![2, 0]),
    ///         stmt("SELECT sum(balance) AS total FROM accounts", ()),
    ///     ])
    ///     .await?;
    /// let total: i64 = out[2].rows.first().unwrap().get("total")?;
    /// # Ok(()) }
    /// ```
    pub async fn batch<I>(&self, mode: BatchMode, statements: I) -> Result<BatchOutcome>
    where
        I: IntoIterator<Item = Statement>,
    {
        let statements = statements.into_iter().map(|s| s.to_wire()).collect();
        let request =
            Request::SqlBatch { actor_id: self.actor_id.clone(), generation: self.generation, mode, statements };
        match self.client.submit(request, self.opts).await? {
            Response::Batch { results, meta } => {
                let key_outcome = meta.key_outcome;
                let results = results
                    .into_iter()
                    .map(|x| ExecuteOutcome::from_wire(x, crate::core::SqlMeta { cost: None, key_outcome }))
                    .collect();
                let (replayed, rows_omitted) = crate::rows::replay_flags(key_outcome);
                Ok(BatchOutcome { results, cost: meta.cost, replayed, rows_omitted })
            }
            other => Err(unexpected("SQL batch", other)),
        }
    }
}
