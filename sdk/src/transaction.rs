//! Interactive transactions (protocol v5, §9.5 of `specs/protocol.md`):
//! statements sent one by one inside one transaction that the client
//! commits or rolls back, held open by an idle lease.

use crate::batch::TransactionMode;
use crate::core::{Request, Response, SqlMeta, TxRef};
use crate::error::Result;
use crate::rows::{ExecuteOutcome, Rows, SqlCost};
use crate::sql::{unexpected, Db};
use crate::value::Params;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// An open interactive transaction (v5). Cheap to clone; every clone names
/// the same transaction. Made by [`Db::begin`] or given to the closure of
/// [`Db::transaction`].
///
/// The transaction lives on the connection that began it: if that connection
/// is lost, the engine rolls it back and its later statements fail with
/// `TransactionAborted { reason: Some(ConnectionClosed) }` — except a commit
/// already sent, which is re-sent with its request key and answers whether it
/// committed. If the engine ends it (lease ran out, actor stopping...), later
/// use fails at once with `TransactionExpired` or `TransactionAborted`. When
/// the last clone is dropped without commit or rollback, a rollback is sent
/// (best effort; the lease would end it anyway).
#[derive(Clone, Debug)]
pub struct Transaction {
    inner: Arc<TxInner>,
}

#[derive(Debug)]
struct TxInner {
    /// The database (actor generation, client, options) it runs against.
    db: Db,
    /// The engine's id for it and the connection it belongs to.
    tx: TxRef,
    /// The lease the engine granted (after clamping), for the caller's pacing.
    lease_ms: u32,
    /// Commit or rollback was sent: nothing to roll back on drop, and the
    /// closure form does not commit again.
    finished: AtomicBool,
}

/// What a committed transaction returns.
#[derive(Debug, Clone, PartialEq)]
pub struct CommitOutcome {
    /// Rows changed by the transaction's statements (the sum of their `changes`).
    pub changes: u64,
    /// What the commit cost the engine.
    pub cost: Option<SqlCost>,
    /// The commit's answer was lost to a disconnect, the client re-sent it
    /// with its request key, and the engine answered that it had committed.
    pub replayed: bool,
}

impl Drop for TxInner {
    fn drop(&mut self) {
        if !self.finished.load(Ordering::Acquire) {
            self.db.client.submit_detached(self.rollback_request(), self.db.opts);
        }
    }
}

impl TxInner {
    fn rollback_request(&self) -> Request {
        Request::SqlRollback { actor_id: self.db.actor_id.clone(), generation: self.db.generation, tx: self.tx }
    }
}

impl Transaction {
    /// The engine's id for this transaction (meaningful on its connection only).
    pub fn id(&self) -> u64 {
        self.inner.tx.id
    }

    /// The idle lease the engine granted: the transaction is rolled back if no
    /// statement names it for this long.
    pub fn lease(&self) -> Duration {
        Duration::from_millis(u64::from(self.inner.lease_ms))
    }

    /// Runs one statement inside the transaction (renews its lease). A
    /// failed statement's own changes are undone and the transaction stays
    /// open, unless the engine ended it (then later use fails with the reason).
    pub async fn execute(&self, sql: &str, params: impl Into<Params>) -> Result<ExecuteOutcome> {
        let db = &self.inner.db;
        let request = Request::SqlTxExecute {
            actor_id: db.actor_id.clone(),
            generation: db.generation,
            tx: self.inner.tx,
            statement: envoy_protocol::SqliteStatement { sql: sql.to_string(), params: params.into().0 },
        };
        match db.client.submit(request, db.opts).await? {
            Response::ExecuteV5 { result, meta } => Ok(ExecuteOutcome::from_wire(result, meta)),
            Response::Execute(x) => Ok(ExecuteOutcome::from_wire(x, SqlMeta::default())),
            other => Err(unexpected("transaction statement", other)),
        }
    }

    /// Runs one statement inside the transaction and returns its rows.
    pub async fn query(&self, sql: &str, params: impl Into<Params>) -> Result<Rows> {
        Ok(self.execute(sql, params).await?.rows)
    }

    /// Commits. The commit carries a request key: if its answer is lost to a
    /// disconnect it is re-sent on the next v5 connection and the engine
    /// answers whether it committed (`replayed`), never `IndeterminateResult`.
    /// A failed commit leaves nothing applied and the transaction over.
    pub async fn commit(self) -> Result<CommitOutcome> {
        self.inner.finished.store(true, Ordering::Release);
        let db = &self.inner.db;
        let request =
            Request::SqlCommit { actor_id: db.actor_id.clone(), generation: db.generation, tx: self.inner.tx };
        match db.client.submit(request, db.opts).await? {
            Response::Committed { changes, meta } => {
                Ok(CommitOutcome { changes, cost: meta.cost, replayed: crate::rows::replay_flags(meta.key_outcome).0 })
            }
            other => Err(unexpected("commit", other)),
        }
    }

    /// Rolls back. Idempotent: rolling back a transaction the engine already
    /// ended, or one whose connection was lost, succeeds.
    pub async fn rollback(self) -> Result<()> {
        self.inner.finished.store(true, Ordering::Release);
        let db = &self.inner.db;
        match db.client.submit(self.inner.rollback_request(), db.opts).await? {
            Response::RolledBack { .. } => Ok(()),
            other => Err(unexpected("rollback", other)),
        }
    }

    fn is_finished(&self) -> bool {
        self.inner.finished.load(Ordering::Acquire)
    }
}

impl Db {
    /// Begins an interactive transaction of `mode` (protocol v5; below v5:
    /// `RemoteUnavailable`). Use [`Transaction::commit`] or
    /// [`Transaction::rollback`] to end it; dropping it rolls it back.
    ///
    /// ```no_run
    /// # async fn f(db: envoy_client::Db) -> envoy_client::Result<()> {
    /// use envoy_client::{params, TransactionMode};
    /// let tx = db.begin(TransactionMode::Write).await?;
    /// let n: i64 = tx.query("SELECT balance FROM accounts WHERE id = ?", params![1]).await?.first().unwrap().get(0)?;
    /// tx.execute("UPDATE accounts SET balance = ? WHERE id = ?", params![n - 10, 1]).await?;
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    pub async fn begin(&self, mode: TransactionMode) -> Result<Transaction> {
        let lease_ms = self.transaction_lease_ms.unwrap_or_else(|| self.client.sql_defaults().transaction_lease_ms);
        let request =
            Request::SqlBegin { actor_id: self.actor_id.clone(), generation: self.generation, mode, lease_ms };
        match self.client.submit(request, self.opts).await? {
            Response::TransactionStarted { tx, lease_ms, .. } => Ok(Transaction {
                inner: Arc::new(TxInner { db: self.clone(), tx, lease_ms, finished: AtomicBool::new(false) }),
            }),
            other => Err(unexpected("begin", other)),
        }
    }

    /// Runs `f` inside a transaction of `mode` (protocol v5): commits if it
    /// returns `Ok`, rolls back if it returns `Err` (and returns that error).
    /// If the returned future is dropped before it finishes, the transaction
    /// is rolled back (best effort). If `f` commits or rolls back itself, its
    /// value is returned as is. For an application error type, see
    /// [`Db::transaction_with_error`].
    ///
    /// ```no_run
    /// # async fn f(db: envoy_client::Db) -> envoy_client::Result<()> {
    /// use envoy_client::{params, TransactionMode};
    /// let moved: i64 = db
    ///     .transaction(TransactionMode::Write, |tx| async move {
    ///         let rows = tx.query("SELECT balance FROM accounts WHERE id = ?", params![1]).await?;
    ///         let balance: i64 = rows.first().unwrap().get(0)?;
    ///         tx.execute("UPDATE accounts SET balance = balance - ? WHERE id = ?", params![balance, 1]).await?;
    ///         tx.execute("UPDATE accounts SET balance = balance + ? WHERE id = ?", params![balance, 2]).await?;
    ///         Ok(balance)
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn transaction<T, F, Fut>(&self, mode: TransactionMode, f: F) -> Result<T>
    where
        F: FnOnce(Transaction) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.transaction_with_error(mode, f).await
    }

    /// [`Db::transaction`] for a closure with its own error type `E` (any
    /// `E: From<Error>`): the closure's `Err` rolls back and is returned as is.
    ///
    /// ```no_run
    /// # async fn f(db: envoy_client::Db) {
    /// use envoy_client::TransactionMode;
    /// #[derive(Debug)]
    /// enum AppError { Db(envoy_client::Error), Insufficient }
    /// impl From<envoy_client::Error> for AppError {
    ///     fn from(e: envoy_client::Error) -> Self { AppError::Db(e) }
    /// }
    /// let r: Result<(), AppError> = db
    ///     .transaction_with_error(TransactionMode::Write, |tx| async move {
    ///         let n: i64 = tx.query("SELECT balance FROM accounts WHERE id = 1", ()).await?.first().unwrap().get(0)?;
    ///         if n < 10 { return Err(AppError::Insufficient); }
    ///         tx.execute("UPDATE accounts SET balance = balance - 10 WHERE id = 1", ()).await?;
    ///         Ok(())
    ///     })
    ///     .await;
    /// # }
    /// ```
    pub async fn transaction_with_error<T, E, F, Fut>(&self, mode: TransactionMode, f: F) -> std::result::Result<T, E>
    where
        F: FnOnce(Transaction) -> Fut,
        Fut: Future<Output = std::result::Result<T, E>>,
        E: From<crate::Error>,
    {
        let tx = self.begin(mode).await?;
        // `tx` stays here: if this future is dropped, its last clone rolls back.
        match f(tx.clone()).await {
            Ok(value) => {
                if !tx.is_finished() {
                    tx.commit().await?;
                }
                Ok(value)
            }
            Err(e) => {
                if !tx.is_finished() {
                    // The closure's error is the one that matters; a failed
                    // rollback leaves the lease to end the transaction.
                    let _ = tx.rollback().await;
                }
                Err(e)
            }
        }
    }
}
