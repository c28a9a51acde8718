//! Protocol v5 interactive transactions on the executor's connections: the
//! blocking half (BEGIN, one statement, COMMIT, ROLLBACK). The async half —
//! leases, arrival order, waiting for the writer, ends — is `sql::transaction`.
//!
//! How the writer is held: a WRITE transaction (or a DEFERRED one after its
//! first write) runs `BEGIN IMMEDIATE` on the actor's one writer connection and
//! records its token in [`TxnState::holder`]. The writer's mutex is only held
//! while one of its statements runs; between statements the connection stays
//! inside the transaction and every other use of the writer sees the token and
//! stays off it (a group batch parks its SQL jobs, see `sql::group`; another
//! transaction waits). The token only changes while the writer's mutex is held,
//! so whoever holds the mutex reads a value that cannot change under it. v4's
//! `end_open_transaction` therefore never meets a v5 transaction: no v4 request
//! runs on the writer while one is held.
//!
//! READ transactions, and DEFERRED ones until their first write, hold a reader
//! connection with one open read transaction (one WAL snapshot) and never touch
//! the writer. A DEFERRED transaction's first write takes the writer only if the
//! writer committed nothing since just before its snapshot began
//! ([`TxnState::epoch`], counted by the writer's WAL hook, which SQLite calls
//! after each commit, before the committing statement returns — so before its
//! answer can leave); otherwise a newer commit may exist and the statement gets
//! TRANSACTION_BUSY. A commit that became visible after the count was read is
//! always counted after it, so a stale snapshot is never missed; a commit
//! counted after the read but already in the snapshot answers BUSY
//! conservatively.

use super::*;
use crate::sql::keys::{self, KeyedRequest, Lookup, Recorded};
use envoy_protocol::{
    SqliteCommitResult, SqliteCommitted, SqliteTransactionMode, ToEnvoy, ToEnvoySqliteCommitResponse,
    TransactionEndReason,
};
use tokio::sync::{watch, Notify};

/// Source of transaction tokens, unique in the process (0 means "none").
static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

/// Savepoint around each statement of an interactive transaction, so a failed
/// statement undoes only its own changes. Actor SQL cannot name it: statements
/// that manage transactions are refused inside an interactive transaction.
const STATEMENT_SAVEPOINT: &str = "SAVEPOINT envoy_txn_statement";
const STATEMENT_RELEASE: &str = "RELEASE envoy_txn_statement";
const STATEMENT_ROLLBACK: &str = "ROLLBACK TO envoy_txn_statement";

/// What an executor knows about the interactive transactions on it.
pub struct TxnState {
    /// Token of the interactive transaction holding the writer (0: none).
    /// Written only while the writer's mutex is held (see the module doc), so a
    /// writer batch that holds the mutex can trust what it reads.
    holder: AtomicU64,
    /// Commits of the writer connection (its WAL hook counts them): a DEFERRED
    /// transaction compares it with the value read before its snapshot began to
    /// know whether a newer commit may exist. Shared with the hook.
    epoch: Arc<AtomicU64>,
    /// Woken when a transaction releases the writer: writes parked behind it
    /// (scheduler waiters, other transactions) retry without polling.
    free: Notify,
    /// Interactive transactions open on this executor: the open-database cap
    /// must not close connections a transaction is using.
    open: AtomicUsize,
    /// Set by a drain past its threshold (or a fence): every open transaction of
    /// the executor rolls back with this reason.
    stop: watch::Sender<Option<TransactionEndReason>>,
}

impl Default for TxnState {
    fn default() -> Self {
        Self {
            holder: AtomicU64::new(0),
            epoch: Arc::new(AtomicU64::new(0)),
            free: Notify::new(),
            open: AtomicUsize::new(0),
            stop: watch::channel(None).0,
        }
    }
}

/// Which connection a transaction holds.
enum Side {
    /// A reader inside one read transaction (READ, or DEFERRED before its first write).
    Reader(SqlConn),
    /// The writer, inside `BEGIN IMMEDIATE` (its token is the holder).
    Writer,
}

/// One open interactive transaction's SQL state. Owned by its driver task and
/// moved into the blocking thread for each step.
pub struct TxnConn {
    /// Names this transaction as the writer's holder.
    token: u64,
    /// READ refuses writes; DEFERRED takes the writer at its first write.
    mode: SqliteTransactionMode,
    /// The connection it holds.
    side: Side,
    /// [`TxnState::epoch`] read just before the snapshot began (DEFERRED's conflict check).
    epoch: u64,
    /// Sum of the statements' `changes` (what the commit reports).
    changes: u64,
}

impl TxnConn {
    /// The token naming this transaction as the writer's holder (see [`Executor::txn_abandon`]).
    pub fn token(&self) -> u64 {
        self.token
    }

    /// Whether this transaction holds the actor's writer now.
    pub fn holds_writer(&self) -> bool {
        matches!(self.side, Side::Writer)
    }
}

/// Why a step could not run now.
pub enum TxnRefusal {
    /// Another interactive transaction holds the writer: wait for it to be
    /// released ([`Executor::writer_free`]) and try again, up to the wait bound.
    WriterBusy,
    /// Answered with this error.
    Error(SqliteError),
}

/// How a commit ended (its errors are the `Err` side).
pub enum CommitDone {
    /// Committed now, with the sum of the statements' `changes`; recorded with
    /// its key if it had one and held the writer.
    Committed(u64),
    /// The key was already recorded: this transaction was rolled back (it ran
    /// nothing now) and this is the recorded answer.
    Replayed(Box<Recorded>),
}

/// What is recorded with a commit's key: the answer whose `result` a replay returns.
fn recorded_commit(changes: u64) -> ToEnvoy {
    ToEnvoy::SqliteCommitResponse(ToEnvoySqliteCommitResponse {
        request_id: 0,
        result: SqliteCommitResult::SqliteCommitted(SqliteCommitted { changes }),
        cost: crate::sql::v5::NO_COST,
        request_key: None,
    })
}

/// What one statement did.
pub struct StatementOutcome {
    /// Its answer.
    pub result: Result<ExecuteResult, SqliteError>,
    /// Set when SQLite rolled the whole transaction back while it ran: the
    /// transaction is over (STATEMENT_FAILED).
    pub ended: bool,
}

/// Frames in the WAL past which a commit checkpoints (PASSIVE), as SQLite's own
/// auto-checkpoint does by default: installing a WAL hook replaces it.
const AUTO_CHECKPOINT_PAGES: i32 = 1000;

impl TxnState {
    /// Counts the commits of the writer `conn` (see [`TxnState::epoch`]) and keeps
    /// SQLite's default auto-checkpoint, which the hook replaces. Actors cannot
    /// replace the hook (`PRAGMA wal_autocheckpoint` is denied by the sandbox).
    pub(super) fn watch_commits(&self, conn: &mut Connection) -> rusqlite::Result<()> {
        let epoch = self.epoch.clone();
        conn.wal_hook(Some(move |wal: &mut rusqlite::hooks::Wal, pages: std::ffi::c_int| {
            epoch.fetch_add(1, Ordering::AcqRel);
            if pages >= AUTO_CHECKPOINT_PAGES {
                // As SQLite's default: best effort, a busy checkpoint is retried at a later commit.
                let _ = wal.checkpoint();
            }
            Ok(())
        }))
    }
}

/// Runs one of the engine's own control statements on `sc`.
fn control(x: &Executor, sc: &SqlConn, sql: &str) -> Result<(), SqliteError> {
    sc.sandbox.clear_denial();
    let r = sc.conn.prepare_cached(sql).and_then(|mut st| st.raw_execute());
    r.map(|_| ()).map_err(|e| x.scrub(map_error(e, None, Some(x))))
}

impl Executor {
    /// Whether an interactive transaction holds the writer now. A caller holding
    /// the writer's mutex (a `WriterLock`) reads a value that cannot change under it.
    pub fn writer_held_by_transaction(&self) -> bool {
        self.txns.holder.load(Ordering::Acquire) != 0
    }

    /// Woken when an interactive transaction releases the writer.
    pub fn writer_free(&self) -> &Notify {
        &self.txns.free
    }

    /// Interactive transactions open on this executor.
    pub fn open_transactions(&self) -> usize {
        self.txns.open.load(Ordering::Acquire)
    }

    /// Where open transactions learn that they must end (a drain past its threshold, a fence).
    pub fn transaction_stops(&self) -> watch::Receiver<Option<TransactionEndReason>> {
        self.txns.stop.subscribe()
    }

    /// Ends every open interactive transaction of this executor with `reason`
    /// (their drivers roll them back and tell their envoys). Later ones too: a
    /// stopped executor takes no new transactions anyway.
    pub fn end_transactions(&self, reason: TransactionEndReason) {
        self.txns.stop.send_replace(Some(reason));
    }

    /// Refuses a request that would run on the writer (alone or as a group)
    /// while an interactive transaction holds it: such a request would run
    /// inside that transaction, and v4's `end_open_transaction` would roll it
    /// back. Writer batches park such requests before getting here (`sql::group`),
    /// so this is a guard for other paths; the answer says it did not run.
    pub(super) fn refuse_if_writer_held(&self) -> Result<(), SqliteError> {
        if self.writer_held_by_transaction() {
            return Err(err(
                SqliteErrorCode::Overloaded,
                "the actor's writer is held by an interactive transaction; this request did not run (retry later)",
                Some(false),
            ));
        }
        Ok(())
    }

    /// Whether `t` holds the writer now (read under the writer's mutex).
    fn holds(&self, t: &TxnConn) -> bool {
        self.txns.holder.load(Ordering::Acquire) == t.token
    }

    /// Clears the writer's holder (the caller holds the writer's mutex) and wakes waiters.
    fn release_writer(&self, token: u64) {
        if self.txns.holder.compare_exchange(token, 0, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            self.txns.free.notify_waiters();
        }
    }

    /// Opens an interactive transaction of `mode`.
    pub fn txn_begin(&self, mode: SqliteTransactionMode) -> Result<TxnConn, TxnRefusal> {
        if let Some(e) = self.refuse_start() {
            return Err(TxnRefusal::Error(e));
        }
        let token = NEXT_TOKEN.fetch_add(1, Ordering::Relaxed);
        let t = match mode {
            SqliteTransactionMode::Write => {
                let w = self.lock_writer().map_err(TxnRefusal::Error)?;
                if self.writer_held_by_transaction() {
                    return Err(TxnRefusal::WriterBusy);
                }
                let Some(sc) = w.guard.as_ref() else { return Err(TxnRefusal::Error(self.stopped_error())) };
                control(self, sc, "BEGIN IMMEDIATE").map_err(TxnRefusal::Error)?;
                self.txns.holder.store(token, Ordering::Release);
                TxnConn { token, mode, side: Side::Writer, epoch: 0, changes: 0 }
            }
            SqliteTransactionMode::Read | SqliteTransactionMode::Deferred => {
                // Read before the snapshot begins: any commit the writer's WAL hook counts
                // after this point makes the DEFERRED conflict check fail (see the module doc).
                let epoch = self.txns.epoch.load(Ordering::Acquire);
                let sc = self.take_reader().map_err(TxnRefusal::Error)?;
                // BEGIN, then one read of the database header: the snapshot starts now.
                let started = control(self, &sc, "BEGIN").and_then(|()| {
                    sc.conn
                        .query_row("PRAGMA schema_version", [], |_| Ok(()))
                        .map_err(|e| map_error(e, None, Some(self)))
                });
                if let Err(e) = started {
                    finish_reader(self, sc);
                    return Err(TxnRefusal::Error(e));
                }
                TxnConn { token, mode, side: Side::Reader(sc), epoch, changes: 0 }
            }
        };
        self.txns.open.fetch_add(1, Ordering::AcqRel);
        Ok(t)
    }

    /// Runs one statement of the transaction (admission already checked it is
    /// one statement that does not manage transactions itself).
    pub fn txn_execute(
        &self,
        t: &mut TxnConn,
        sql: &str,
        route: &Route,
        params: &[Value],
    ) -> Result<StatementOutcome, TxnRefusal> {
        if let Side::Reader(sc) = &mut t.side {
            match self.run_execute(sc, sql, route, params, None) {
                Some(result) => {
                    // A read that SQLite aborted (an interrupt) may have ended the snapshot.
                    let ended = sc.conn.is_autocommit();
                    return Ok(StatementOutcome { result, ended });
                }
                None if t.mode == SqliteTransactionMode::Read => {
                    let mut e = err(
                        SqliteErrorCode::Sqlite,
                        "attempt to write a readonly database (this is a READ transaction)",
                        Some(false),
                    );
                    e.extended_code = Some(ffi::SQLITE_READONLY);
                    return Ok(StatementOutcome { result: Err(e), ended: false });
                }
                None => {}
            }
        }
        let mut w = self.lock_writer().map_err(TxnRefusal::Error)?;
        if let Side::Reader(_) = t.side {
            // DEFERRED's first write: take the writer if its snapshot is still the newest.
            if self.writer_held_by_transaction() {
                return Err(TxnRefusal::WriterBusy);
            }
            if self.txns.epoch.load(Ordering::Acquire) != t.epoch {
                let e = err(
                    SqliteErrorCode::TransactionBusy,
                    "another write committed since this DEFERRED transaction's snapshot; this statement did not run \
                     (the transaction is still open, reading its snapshot)",
                    Some(false),
                );
                return Ok(StatementOutcome { result: Err(e), ended: false });
            }
            let Some(wsc) = w.guard.as_ref() else { return Err(TxnRefusal::Error(self.stopped_error())) };
            control(self, wsc, "BEGIN IMMEDIATE").map_err(TxnRefusal::Error)?;
            self.txns.holder.store(t.token, Ordering::Release);
            if let Side::Reader(sc) = std::mem::replace(&mut t.side, Side::Writer) {
                finish_reader(self, sc);
            }
        }
        if !self.holds(t) {
            // Cannot happen: only this transaction clears its own token.
            let e = err(SqliteErrorCode::Internal, "the transaction lost the writer", Some(false));
            return Ok(StatementOutcome { result: Err(e), ended: true });
        }
        let Some(sc) = w.guard.as_mut() else { return Err(TxnRefusal::Error(self.stopped_error())) };
        if let Err(e) = control(self, sc, STATEMENT_SAVEPOINT) {
            return Ok(StatementOutcome { result: Err(e), ended: sc.conn.is_autocommit() });
        }
        let r = self
            .run_execute(sc, sql, route, params, Some(true))
            .unwrap_or_else(|| Err(err(SqliteErrorCode::Internal, "writer refused a statement", None)));
        if sc.conn.is_autocommit() {
            // SQLite rolled the whole transaction back (an interrupt, OR ROLLBACK, an I/O error).
            self.release_writer(t.token);
            let result =
                r.and(Err(err(SqliteErrorCode::TransactionAborted, "SQLite rolled the transaction back", Some(false))));
            let result = result.map_err(|mut e| {
                e.committed = Some(false);
                e
            });
            return Ok(StatementOutcome { result, ended: true });
        }
        let result = match r {
            Ok(v) => match control(self, sc, STATEMENT_RELEASE) {
                Ok(()) => {
                    t.changes += v.changes;
                    Ok(v)
                }
                Err(e) => Err(e),
            },
            Err(mut e) => {
                // Undo this statement's own changes; the transaction stays open.
                let _ = control(self, sc, STATEMENT_ROLLBACK);
                let _ = control(self, sc, STATEMENT_RELEASE);
                e.committed = Some(false);
                Err(e)
            }
        };
        let ended = sc.conn.is_autocommit();
        if ended {
            self.release_writer(t.token);
        }
        Ok(StatementOutcome { result, ended })
    }

    /// Looks a commit's key up outside any transaction (on a reader, which sees
    /// every committed recording): for a keyed commit naming a transaction that
    /// is not open on its connection (a retry after a lost answer).
    pub fn lookup_key(&self, k: &KeyedRequest) -> Lookup {
        let sc = match self.take_reader() {
            Ok(sc) => sc,
            Err(e) => return Lookup::Refused(e),
        };
        let found = keys::lookup(&sc.conn, &sc.sandbox, k, &self.settings.keys);
        finish_reader(self, sc);
        found
    }

    /// Commits the transaction once COMMIT returned (on disk at `--durability
    /// fsync`). A failed commit rolls back: nothing applied. With a key: a key
    /// already recorded rolls this transaction back and answers the record; an
    /// expired or conflicting key fails the commit; otherwise the key is
    /// recorded inside the transaction, so its COMMIT keeps both or neither
    /// (only for a transaction that held the writer: one that never wrote
    /// commits nothing and is not recorded, as §9.3 rule 3).
    pub fn txn_commit(&self, t: TxnConn, key: Option<&KeyedRequest>) -> Result<CommitDone, SqliteError> {
        let r = self.commit_inner(t, key);
        // Counted down once done (a step that panicked is counted down by `txn_abandon`).
        self.txns.open.fetch_sub(1, Ordering::AcqRel);
        r
    }

    fn commit_inner(&self, t: TxnConn, key: Option<&KeyedRequest>) -> Result<CommitDone, SqliteError> {
        match t.side {
            Side::Reader(sc) => {
                // End the snapshot first: the lookup then sees every recorded key.
                let sc =
                    if sc.conn.is_autocommit() || sc.conn.execute_batch("COMMIT").is_ok() { Some(sc) } else { None };
                let found = match (key, &sc) {
                    (Some(k), Some(sc)) => keys::lookup(&sc.conn, &sc.sandbox, k, &self.settings.keys),
                    (Some(k), None) => self.lookup_key(k),
                    (None, _) => Lookup::Fresh,
                };
                if let Some(sc) = sc {
                    self.give_back_reader(sc);
                }
                match found {
                    Lookup::Fresh => Ok(CommitDone::Committed(0)),
                    Lookup::Replay(rec) => Ok(CommitDone::Replayed(Box::new(rec))),
                    Lookup::Refused(e) => Err(e),
                }
            }
            Side::Writer => {
                let w = match self.lock_writer() {
                    Ok(w) => w,
                    Err(e) => {
                        self.release_writer(t.token);
                        return Err(e);
                    }
                };
                let Some(sc) = w.guard.as_ref() else {
                    self.release_writer(t.token);
                    return Err(self.stopped_error());
                };
                let r = if sc.conn.is_autocommit() || !self.holds(&t) {
                    // SQLite rolled it back earlier (the writer is then no longer this transaction's).
                    Err(err(SqliteErrorCode::TransactionAborted, "SQLite had rolled the transaction back", None))
                } else {
                    let settings = &self.settings.keys;
                    match key.map(|k| (k, keys::lookup(&sc.conn, &sc.sandbox, k, settings))) {
                        None | Some((_, Lookup::Fresh)) => key
                            .map_or(Ok(()), |k| {
                                keys::record(&sc.conn, &sc.sandbox, k, &recorded_commit(t.changes), settings)
                            })
                            .and_then(|()| control(self, sc, "COMMIT"))
                            .map(|()| CommitDone::Committed(t.changes)),
                        Some((_, Lookup::Replay(rec))) => {
                            // This transaction runs nothing now: rolled back below.
                            let _ = control(self, sc, "ROLLBACK");
                            Ok(CommitDone::Replayed(Box::new(rec)))
                        }
                        Some((_, Lookup::Refused(e))) => Err(e),
                    }
                };
                if r.is_err() && !sc.conn.is_autocommit() && self.holds(&t) {
                    let _ = control(self, sc, "ROLLBACK");
                }
                self.release_writer(t.token);
                r.map_err(|mut e| {
                    e.committed = Some(false);
                    e
                })
            }
        }
    }

    /// Rolls the transaction back (whatever state it is in).
    pub fn txn_rollback(&self, t: TxnConn) {
        self.rollback_inner(t);
        self.txns.open.fetch_sub(1, Ordering::AcqRel);
    }

    fn rollback_inner(&self, t: TxnConn) {
        match t.side {
            Side::Reader(sc) => finish_reader(self, sc),
            Side::Writer => {
                if let Ok(w) = self.lock_writer() {
                    if let Some(sc) = w.guard.as_ref() {
                        // Only its own transaction: after SQLite rolled it back the writer may be another's.
                        if !sc.conn.is_autocommit() && self.holds(&t) {
                            if let Err(e) = control(self, sc, "ROLLBACK") {
                                tracing::error!(actor_id = %self.actor_id, error = %e.message,
                                    "rolling back an interactive transaction failed");
                            }
                        }
                    }
                    self.release_writer(t.token);
                } else {
                    // The writer is closed (it rolled back with it).
                    self.release_writer(t.token);
                }
            }
        }
    }
}

impl Executor {
    /// Rolls back the transaction `token` names when its `TxnConn` was lost (a
    /// step panicked): if it holds the writer, the writer is rolled back and
    /// released, so the actor's writes do not wait for it forever. A reader it
    /// held was dropped with it.
    pub fn txn_abandon(&self, token: u64) {
        self.txns.open.fetch_sub(1, Ordering::AcqRel);
        if let Ok(w) = self.lock_writer() {
            if self.txns.holder.load(Ordering::Acquire) == token {
                if let Some(sc) = w.guard.as_ref() {
                    if !sc.conn.is_autocommit() {
                        let _ = control(self, sc, "ROLLBACK");
                    }
                }
                self.release_writer(token);
            }
        }
    }
}

/// Ends a reader's read transaction and gives it back to the pool (or drops it).
fn finish_reader(x: &Executor, sc: SqlConn) {
    if !sc.conn.is_autocommit() {
        if let Err(e) = sc.conn.execute_batch("COMMIT") {
            tracing::warn!(actor_id = %x.actor_id, error = %e, "ending a transaction's snapshot failed");
            return; // dropped, not pooled
        }
    }
    x.give_back_reader(sc);
}
