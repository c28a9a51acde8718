//! Where SQL runs: one executor per (actor, generation).
//!
//! Created on the first request of a generation, reused by every later one,
//! closed when the generation stops. It holds one writer connection (serial,
//! all writes, transactions, DDL) and a small pool of read-only reader
//! connections over WAL. The writer commits at `--durability` (default fsync:
//! `synchronous=FULL`, a commit is on disk before its answer leaves; `os`:
//! `synchronous=NORMAL` — see specs/engine.md). Connections open lazily on a blocking thread.
//!
//! Every method here blocks and must run on a blocking thread (the scheduler
//! calls them inside `spawn_blocking`).
//!
//! Files: this one (the executor and its connections), `writer.rs` (the locked
//! writer: requests alone and as group-commit members), `reader.rs` (a reader
//! batch on one snapshot), `stream.rs` (a v5 result stream's statement),
//! `rows.rs` (copying rows and mapping errors to the protocol's typed errors),
//! `registry.rs` (every open executor).

use super::open_dbs::OpenDbs;
use super::route::{statements, Kind, Lane, Route};
use super::sandbox::{self, Deadline, Sandbox, SandboxLimits};
use super::values::{from_sqlite, response_cost, sqlite_value_bytes, Bind, NotUtf8};
use crate::config::Config;
use crate::kv::KvStore;
use envoy_protocol::{
    ExecuteResult, KvErrorCode, KvErrorResponse, KvRequestData, KvResponseData, LimitExceeded, LimitKind, QueryResult,
    SqliteError, SqliteErrorCode, SqliteRoute, Value,
};
use parking_lot::{Mutex, MutexGuard, RwLock, RwLockReadGuard};
use rusqlite::{ffi, Connection, ErrorCode, InterruptHandle, OpenFlags, Statement};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Prepared statements cached per connection.
const STATEMENT_CACHE: usize = 128;

/// What an executor needs from the engine's configuration.
#[derive(Debug, Clone)]
pub struct ExecSettings {
    /// Response/value limits and the statement deadline.
    pub limits: crate::config::Limits,
    /// Reader busy timeout.
    pub busy_timeout: Duration,
    /// Idle reader connections kept.
    pub readers: usize,
    /// The `SQLITE_LIMIT_*` values of every actor connection.
    pub sandbox: SandboxLimits,
    /// `synchronous` of the writer and the KV store: when an acknowledged write is on disk.
    pub durability: crate::config::Durability,
    /// Request key retention, count and recorded size (v5, `sql::keys`).
    pub keys: crate::sql::keys::KeySettings,
    /// Asked by SQLite's commit hook right before every commit of an actor's
    /// writer (SQL and KV): false turns the COMMIT into a ROLLBACK. Cluster mode
    /// sets it to "this node still serves under its lease", so a write admitted
    /// just before a fence cannot commit after it. None: every commit proceeds.
    pub commit_guard: Option<CommitGuard>,
}

/// Whether a commit may happen now (see [`ExecSettings::commit_guard`]).
#[derive(Clone)]
pub struct CommitGuard(pub std::sync::Arc<dyn Fn() -> bool + Send + Sync>);

impl std::fmt::Debug for CommitGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CommitGuard")
    }
}

impl CommitGuard {
    /// Installs the guard as `conn`'s commit hook.
    pub fn install(&self, conn: &mut Connection) -> rusqlite::Result<()> {
        let may = self.0.clone();
        // The hook returns true to turn the commit into a rollback.
        conn.commit_hook(Some(move || !may()))
    }
}

impl ExecSettings {
    pub fn from_config(c: &Config) -> Self {
        Self {
            limits: c.limits.clone(),
            busy_timeout: c.busy_timeout,
            readers: c.readers_per_actor,
            sandbox: SandboxLimits::from_limits(&c.limits),
            durability: c.durability,
            keys: crate::sql::keys::KeySettings::from_config(c),
            commit_guard: None,
        }
    }
}

/// A connection and the deadline its progress handler watches.
struct SqlConn {
    /// The SQLite connection (sandboxed).
    conn: Connection,
    /// Shared with the connection's progress handler and the watchdog: the running statement's deadline.
    deadline: Deadline,
    /// The connection's authorizer state: why it refused, and VACUUM's one door.
    sandbox: Sandbox,
}

/// Outcome of an `Execute` on a lane.
pub enum ExecuteOutcome {
    /// Answered (success or typed error).
    Done(Result<ExecuteResult, SqliteError>),
    /// Not read-only after all: run it on the writer.
    Bounce,
}

/// One (actor, generation)'s connections.
pub struct Executor {
    /// Actor whose files this executor opens.
    pub actor_id: String,
    /// The generation it serves; a new generation gets a new executor.
    pub generation: u64,
    /// `<data>/actors/<actor_id>`: `db.sqlite` and `kv.sqlite`.
    dir: PathBuf,
    /// Limits and pool sizes, copied from the engine config.
    settings: ExecSettings,
    /// The writer (None until first use, and again after close).
    writer: Mutex<Option<SqlConn>>,
    /// Set once the writer opened (the file exists in WAL mode), so readers
    /// check it without waiting on the writer's lock during a long write.
    writer_opened: AtomicBool,
    /// Idle readers.
    readers: Mutex<Vec<SqlConn>>,
    /// KV store beside the database (None until first use).
    kv: Mutex<Option<KvStore>>,
    /// Interrupt handles of every connection opened, for a drain past its threshold.
    interrupts: Mutex<Vec<InterruptHandle>>,
    /// Set when a drain passed its threshold: running work is interrupted, queued work answered INTERRUPTED.
    closing: AtomicBool,
    /// Set once closed: nothing runs any more.
    closed: AtomicBool,
    /// Whether a transaction is open on the writer (reads then go to the writer).
    in_txn: AtomicBool,
    /// Set when a drain of this generation begins: requests not started yet are turned away.
    draining: AtomicBool,
    /// Requests turned away by a drain (reported by it).
    turned_away: AtomicUsize,
    /// Set by the writer's authorizer once the writer holds connection state of
    /// its own (TEMP objects, connection PRAGMAs): from then on every read of
    /// the actor runs on the writer, so no answer depends on which connection ran it.
    writer_local: Arc<AtomicBool>,
    /// Requests answered INTERRUPTED because of a stop (reported by the drain).
    interrupted: AtomicUsize,
    /// Held shared by every request while it uses the executor ([`Executor::enter`]);
    /// closing an idle executor takes it exclusively (without waiting), so it never
    /// closes connections under a request.
    in_use: RwLock<()>,
    /// Whether the executor holds a slot of the engine's open-database cap.
    open_slot: AtomicBool,
    /// When a request last entered (`OpenDbs::now_ms`): the LRU order and the idle sweep.
    last_used_ms: AtomicU64,
    /// The engine's open-database cap, where this executor takes and gives back its slot.
    open_dbs: Arc<OpenDbs>,
    /// v5 interactive transactions: who holds the writer, waiters, stops (see `txn.rs`).
    txns: txn::TxnState,
}

/// Held while a request uses an executor (see [`Executor::enter`]).
pub type InUse<'a> = RwLockReadGuard<'a, ()>;

impl Executor {
    /// Marks the executor in use for one request, taking a slot of the engine's
    /// open-database cap first if it has none (which may close another, idle,
    /// executor's connections). Err(message) when the cap is reached and nothing
    /// can be closed: the caller answers OVERLOADED.
    pub fn enter(self: &Arc<Self>) -> Result<InUse<'_>, String> {
        let guard = self.in_use.read();
        self.last_used_ms.store(self.open_dbs.now_ms(), Ordering::Release);
        if !self.open_slot.load(Ordering::Acquire) && !self.closed.load(Ordering::Acquire) {
            self.open_dbs.admit(self)?;
        }
        Ok(guard)
    }

    /// Called by `OpenDbs` once the slot is taken.
    pub(crate) fn mark_open(&self) {
        self.open_slot.store(true, Ordering::Release);
    }

    pub(crate) fn last_used_ms(&self) -> u64 {
        self.last_used_ms.load(Ordering::Acquire)
    }

    /// Closes the connections if the executor is idle — no request in it, no
    /// transaction open on its writer, no lock held — and returns whether it did
    /// (or had nothing open). The executor stays usable: its next request
    /// reopens what it needs. Never waits for a lock.
    pub(crate) fn try_close_idle(&self) -> bool {
        let Some(_exclusive) = self.in_use.try_write() else { return false };
        // Closing a writer that holds TEMP objects or connection settings would
        // lose them: such an actor keeps its databases open (documented).
        if self.in_txn() || self.reads_need_writer() || self.open_transactions() > 0 {
            return false;
        }
        let Some(mut writer) = self.writer.try_lock() else { return false };
        if writer.as_ref().is_some_and(|sc| !sc.conn.is_autocommit()) {
            return false;
        }
        let Some(mut readers) = self.readers.try_lock() else { return false };
        let Some(mut kv) = self.kv.try_lock() else { return false };
        // Readers first open the writer again (it recreates the -wal/-shm files a
        // read-only connection needs).
        self.writer_opened.store(false, Ordering::Release);
        readers.clear();
        if let Some(sc) = writer.take() {
            self.checkpoint_and_close(sc);
        }
        if let Some(store) = kv.take() {
            store.close();
        }
        // Every connection is closed: their interrupt handles are spent.
        self.interrupts.lock().clear();
        self.open_slot.store(false, Ordering::Release);
        true
    }

    fn checkpoint_and_close(&self, mut sc: SqlConn) {
        // The engine's own checkpoint: the actor's authorizer (which refuses
        // wal_checkpoint to actors) is lifted first.
        let _ = sc.conn.authorizer(None::<fn(rusqlite::hooks::AuthContext<'_>) -> rusqlite::hooks::Authorization>);
        if let Err(e) = sc.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
            tracing::warn!(actor_id = %self.actor_id, generation = self.generation, error = %e, "checkpoint on close failed");
        }
        if let Err((_, e)) = sc.conn.close() {
            tracing::warn!(actor_id = %self.actor_id, error = %e, "closing the writer failed");
        }
    }
}

impl Executor {
    fn db_path(&self) -> PathBuf {
        self.dir.join("db.sqlite")
    }

    /// Whether reads must run on the writer because it holds connection state the
    /// readers lack (TEMP objects, connection PRAGMAs). Set for good once it does.
    pub fn reads_need_writer(&self) -> bool {
        self.writer_local.load(Ordering::Acquire)
    }

    /// Whether a transaction is open on the writer.
    pub fn in_txn(&self) -> bool {
        self.in_txn.load(Ordering::Acquire)
    }

    pub fn interrupted_count(&self) -> usize {
        self.interrupted.load(Ordering::Acquire)
    }

    fn stopped_error(&self) -> SqliteError {
        self.interrupted.fetch_add(1, Ordering::AcqRel);
        err(SqliteErrorCode::Interrupted, "the actor stopped before this request could run", Some(false))
    }

    fn is_stopping(&self) -> bool {
        self.closing.load(Ordering::Acquire) || self.closed.load(Ordering::Acquire)
    }

    /// Marks the start of a drain: requests of this generation that have not
    /// started yet are answered ACTOR_STOPPING instead of running (they never
    /// ran, so a client may retry them on the next placement); only what
    /// already runs is waited for.
    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Requests answered ACTOR_STOPPING because a drain began before they started.
    pub fn turned_away_count(&self) -> usize {
        self.turned_away.load(Ordering::Acquire)
    }

    /// The answer to a request about to start, if it must not: INTERRUPTED once
    /// the executor closes, ACTOR_STOPPING once a drain began.
    fn refuse_start(&self) -> Option<SqliteError> {
        if self.is_stopping() {
            return Some(self.stopped_error());
        }
        if self.draining.load(Ordering::Acquire) {
            self.turned_away.fetch_add(1, Ordering::AcqRel);
            return Some(err(
                SqliteErrorCode::ActorStopping,
                "the actor is stopping; this request had not started and was not run (safe to retry)",
                Some(false),
            ));
        }
        None
    }

    fn open_writer(&self) -> rusqlite::Result<SqlConn> {
        std::fs::create_dir_all(&self.dir).map_err(|e| {
            rusqlite::Error::SqliteFailure(
                ffi::Error::new(ffi::SQLITE_CANTOPEN),
                Some(format!("creating actor dir: {e}")),
            )
        })?;
        let conn = Connection::open_with_flags(
            self.db_path(),
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", self.settings.durability.synchronous())?;
        let mut conn = conn;
        self.txns.watch_commits(&mut conn)?;
        if let Some(guard) = &self.settings.commit_guard {
            guard.install(&mut conn)?;
        }
        self.prepare_conn(conn, Some(self.writer_local.clone()))
    }

    fn open_reader(&self) -> rusqlite::Result<SqlConn> {
        let conn = Connection::open_with_flags(
            self.db_path(),
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        self.prepare_conn(conn, None)
    }

    /// What every connection of the actor gets: busy timeout, statement cache,
    /// the sandbox with its deadline, and an interrupt handle for drains.
    fn prepare_conn(&self, mut conn: Connection, local: Option<Arc<AtomicBool>>) -> rusqlite::Result<SqlConn> {
        conn.busy_timeout(self.settings.busy_timeout)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let deadline = Deadline::default();
        let sandbox = sandbox::install(&mut conn, &deadline, &self.settings.sandbox, local)?;
        self.interrupts.lock().push(conn.get_interrupt_handle());
        Ok(SqlConn { conn, deadline, sandbox })
    }

    /// The writer, opened on first use (which also creates the file readers need).
    fn writer(&self) -> Result<MutexGuard<'_, Option<SqlConn>>, SqliteError> {
        let mut w = self.writer.lock();
        if w.is_none() {
            if self.closed.load(Ordering::Acquire) {
                return Err(self.stopped_error());
            }
            *w = Some(self.open_writer().map_err(|e| self.scrub(map_error(e, None, Some(self))))?);
            self.writer_opened.store(true, Ordering::Release);
        }
        Ok(w)
    }

    /// Finishes an error of a statement run on `sc`: a FORBIDDEN answer says
    /// what the sandbox refused, and no message carries a path on the engine's disk.
    fn explain(&self, sc: &SqlConn, mut e: SqliteError) -> SqliteError {
        if e.code == SqliteErrorCode::Forbidden {
            if let Some(d) = sc.sandbox.take_denial() {
                e.message = format!("{} (the sandbox keeps an actor's SQL inside its own database)", d.0);
            }
        }
        self.scrub(e)
    }

    /// Removes the engine's file paths from an error.
    fn scrub(&self, mut e: SqliteError) -> SqliteError {
        e.message = self.scrub_text(&e.message);
        e
    }

    /// Replaces the actor's folder and the data folder with placeholders.
    fn scrub_text(&self, message: &str) -> String {
        let mut m = message.replace(&*self.dir.to_string_lossy(), "<actor>");
        if let Some(data) = self.dir.parent().and_then(|p| p.parent()) {
            let data = data.to_string_lossy();
            if !data.is_empty() && data != "." {
                m = m.replace(&*data, "<data>");
            }
        }
        m
    }

    /// Runs one `Execute`/`ExecuteWrite` on `lane`, alone (not in a group).
    pub fn execute(
        &self,
        lane: Lane,
        sql: &str,
        route: &Route,
        params: &[Value],
        write_request: bool,
    ) -> ExecuteOutcome {
        if let Some(e) = self.refuse_start() {
            return ExecuteOutcome::Done(Err(e));
        }
        match lane {
            Lane::Writer => ExecuteOutcome::Done(
                self.lock_writer().and_then(|mut w| w.execute_alone(sql, route, params, write_request)),
            ),
            Lane::Reader => self.read_session().execute(sql, route, params),
        }
    }

    /// A reader connection for a run of reads (a batch of a reader lane).
    pub fn read_session(&self) -> ReadSession<'_> {
        ReadSession { x: self, sc: None, snapshot: false }
    }

    /// A reader from the pool, or a new one.
    fn take_reader(&self) -> Result<SqlConn, SqliteError> {
        // Make sure the database exists (in WAL mode) before a read-only open.
        if !self.writer_opened.load(Ordering::Acquire) {
            drop(self.writer()?);
        }
        let pooled = self.readers.lock().pop();
        match pooled {
            Some(sc) => Ok(sc),
            None => self.open_reader().map_err(|e| self.scrub(map_error(e, None, Some(self)))),
        }
    }

    /// Returns a reader to the pool (or closes it).
    fn give_back_reader(&self, sc: SqlConn) {
        let mut pool = self.readers.lock();
        if pool.len() < self.settings.readers && !self.closed.load(Ordering::Acquire) {
            pool.push(sc);
        }
    }

    /// Runs an `Exec` (several statements) on the writer, alone; answers the last statement's rows.
    pub fn exec(&self, sql: &str) -> Result<QueryResult, SqliteError> {
        if let Some(e) = self.refuse_start() {
            return Err(e);
        }
        self.lock_writer()?.exec_alone(sql)
    }

    /// The writer, locked for a run of requests (a batch of the writer lane, see `sql::group`).
    pub fn lock_writer(&self) -> Result<WriterLock<'_>, SqliteError> {
        let guard = self.writer()?;
        if guard.is_none() {
            return Err(self.stopped_error());
        }
        Ok(WriterLock { x: self, guard })
    }

    /// Runs one statement. `write_request`: None on a reader (returns None if the
    /// statement must move to the writer), Some(true) for ExecuteWrite.
    fn run_execute(
        &self,
        sc: &mut SqlConn,
        sql: &str,
        route: &Route,
        params: &[Value],
        write_request: Option<bool>,
    ) -> Option<Result<ExecuteResult, SqliteError>> {
        let limits = &self.settings.limits;
        let conn = &sc.conn;
        let on_writer = write_request.is_some();
        // Exactly one statement, found at admission (what followed it was refused there).
        let sql = route.statement(sql);
        sc.sandbox.clear_denial();
        // The deadline covers the prepare too (the watchdog interrupts a slow parse).
        sc.deadline.arm(limits.max_statement_ms);
        let mut stmt = match conn.prepare_cached(sql) {
            Ok(s) => s,
            Err(e) => {
                sc.deadline.disarm();
                return Some(Err(self.explain(sc, map_error(e, Some(&sc.deadline), Some(self)))));
            }
        };
        let readonly = stmt.readonly() && route.kind != Kind::Transaction;
        if !on_writer && !readonly {
            sc.deadline.disarm();
            return None;
        }
        let reported = match write_request {
            None => SqliteRoute::Read,
            Some(true) => SqliteRoute::Write,
            Some(false) if readonly && route.kind == Kind::Read => SqliteRoute::WriteFallback,
            Some(false) => SqliteRoute::Write,
        };
        let expected = stmt.parameter_count();
        if expected != params.len() {
            sc.deadline.disarm();
            return Some(Err(err(
                SqliteErrorCode::InvalidRequest,
                &format!("the statement takes {expected} parameter(s) but {} were given", params.len()),
                Some(false),
            )));
        }
        for (i, p) in params.iter().enumerate() {
            if let Err(e) = stmt.raw_bind_parameter(i + 1, Bind(p)) {
                sc.deadline.disarm();
                return Some(Err(self.explain(sc, map_error(e, None, Some(self)))));
            }
        }
        let total_before = super::cost::before_statement(conn, &stmt);
        let rowid_before = conn.last_insert_rowid();
        let rows = sc.sandbox.vacuum(conn, route.kind == Kind::Vacuum, || collect_rows(&mut stmt, limits));
        sc.deadline.disarm();
        let returned = rows.as_ref().map_or(0, |(_, r)| r.len() as u64);
        super::cost::note_statement(conn, &stmt, total_before, returned);
        drop(stmt);
        // SQLite's own count for the statement (`sqlite3_changes`: rows it changed
        // directly, not those of its triggers or foreign-key actions). That count
        // is only set by a statement that changed something, so one that did not
        // (a SELECT, DDL, a DML that matched nothing) reports 0, never a stale value.
        let changes = if conn.total_changes() != total_before { conn.changes() } else { 0 };
        // This statement inserted iff the connection's last rowid moved, or it is an
        // INSERT/REPLACE that changed rows (re-inserting the same rowid leaves it unchanged).
        let rowid_after = conn.last_insert_rowid();
        let inserted = on_writer && (rowid_after != rowid_before || (changes > 0 && route.kind == Kind::Insert));
        let last_insert_row_id = inserted.then_some(rowid_after);
        Some(match rows {
            Ok((columns, rows)) => Ok(ExecuteResult { columns, rows, changes, last_insert_row_id, route: reported }),
            // A failed statement is rolled back (statement-level); inside a
            // transaction nothing was committed either.
            Err(RowsError::Sqlite(e)) => Err(self.explain(sc, map_error(e, Some(&sc.deadline), Some(self)))),
            Err(RowsError::Limit(e)) => {
                let mut e = e;
                e.committed = if readonly { Some(false) } else { None };
                Err(e)
            }
        })
    }

    /// Runs the statements of an `Exec` in order on `sc`. Returns the last
    /// statement's rows, or the error with the index of the failing statement and
    /// how many statements before it completed in autocommit mode.
    /// `in_group`: the statements run inside a group transaction, where SQLite
    /// does not always undo a failing statement's earlier rows (a multi-row
    /// INSERT failing a STRICT check keeps them inside an explicit transaction);
    /// each statement then gets a savepoint, so a failing one leaves nothing, as
    /// it would in autocommit mode.
    fn exec_statements(
        &self,
        sc: &mut SqlConn,
        sql: &str,
        in_group: bool,
    ) -> Result<QueryResult, (SqliteError, u32, u32)> {
        let limits = &self.settings.limits;
        let conn = &sc.conn;
        let control = |sql: &str| conn.prepare_cached(sql).and_then(|mut s| s.raw_execute()).map(|_| ());
        let mut last = QueryResult { columns: Vec::new(), rows: Vec::new() };
        let mut index: u32 = 0;
        // How many leading statements ran to completion in autocommit mode (each committed on its own).
        let mut committed_alone: u32 = 0;
        // Statements as sqlite3_complete splits them; each is prepared only when its turn comes.
        for piece in statements(sql) {
            sc.sandbox.clear_denial();
            if in_group {
                if let Err(e) = control("SAVEPOINT envoy_group_statement") {
                    return Err((self.scrub(map_error(e, None, Some(self))), index, committed_alone));
                }
            }
            sc.deadline.arm(limits.max_statement_ms);
            let step = match conn.prepare(piece) {
                Ok(mut stmt) => {
                    let before = super::cost::before_statement(conn, &stmt);
                    let r =
                        sc.sandbox.vacuum(conn, Kind::of(piece) == Kind::Vacuum, || collect_rows(&mut stmt, limits));
                    let returned = r.as_ref().map_or(0, |(_, rows)| rows.len() as u64);
                    super::cost::note_statement(conn, &stmt, before, returned);
                    r
                }
                Err(e) => Err(RowsError::Sqlite(e)),
            };
            sc.deadline.disarm();
            if in_group && !conn.is_autocommit() {
                if step.is_err() {
                    let _ = control("ROLLBACK TO envoy_group_statement");
                }
                let _ = control("RELEASE envoy_group_statement");
            }
            match step {
                Ok((columns, rows)) => last = QueryResult { columns, rows },
                Err(e) => {
                    let e = match e {
                        RowsError::Sqlite(e) => self.explain(sc, map_error(e, Some(&sc.deadline), Some(self))),
                        RowsError::Limit(e) => e,
                    };
                    return Err((e, index, committed_alone));
                }
            }
            index += 1;
            if conn.is_autocommit() && committed_alone + 1 == index {
                committed_alone = index;
            }
        }
        Ok(last)
    }

    /// Ends a transaction a request left open on the writer by rolling it back;
    /// returns whether there was one. In protocol v≤4 requests carry no
    /// transaction id, so the engine cannot tell whose statement would continue
    /// a transaction: a transaction lives within one request, and nothing of it
    /// can be acknowledged to, joined by, or undone by another request.
    fn end_open_transaction(&self, sc: &SqlConn) -> bool {
        if sc.conn.is_autocommit() {
            return false;
        }
        sc.sandbox.clear_denial();
        if let Err(e) = sc.conn.execute_batch("ROLLBACK") {
            tracing::error!(actor_id = %self.actor_id, error = %e, "rolling back a transaction left open failed");
        }
        true
    }

    /// Runs one KV request against the actor's KV store, alone.
    pub fn kv(&self, data: &KvRequestData) -> KvResponseData {
        self.with_kv(|store, limits| store.handle(data, limits)).unwrap_or_else(|e| e)
    }

    /// Runs `f` on the actor's KV store (opened on first use). Err is the answer
    /// when the actor is stopping or the store cannot open.
    pub fn with_kv<T>(&self, f: impl FnOnce(&mut KvStore, &crate::config::Limits) -> T) -> Result<T, KvResponseData> {
        if let Some(e) = self.refuse_start() {
            return Err(KvResponseData::KvErrorResponse(KvErrorResponse {
                code: KvErrorCode::ActorStopping,
                message: e.message,
                current_generation: None,
            }));
        }
        self.with_kv_store(f)
    }

    /// Like [`Executor::with_kv`] without the start check: for finishing work
    /// already begun (committing a KV group), which a stop must not skip.
    pub fn with_kv_store<T>(
        &self,
        f: impl FnOnce(&mut KvStore, &crate::config::Limits) -> T,
    ) -> Result<T, KvResponseData> {
        let mut kv = self.kv.lock();
        if kv.is_none() {
            match KvStore::open(
                &self.dir.join("kv.sqlite"),
                self.settings.durability,
                self.settings.commit_guard.as_ref(),
            ) {
                Ok(s) => {
                    self.interrupts.lock().push(s.interrupt_handle());
                    *kv = Some(s);
                }
                Err(e) => {
                    return Err(KvResponseData::KvErrorResponse(KvErrorResponse {
                        code: KvErrorCode::Internal,
                        message: self.scrub_text(&format!("opening the KV store: {e}")),
                        current_generation: None,
                    }))
                }
            }
        }
        let Some(store) = kv.as_mut() else { unreachable!("opened above") };
        Ok(f(store, &self.settings.limits))
    }

    /// Marks the executor closing and interrupts whatever runs now. Queued work
    /// that starts later is answered INTERRUPTED.
    pub fn interrupt(&self) {
        self.closing.store(true, Ordering::Release);
        for h in self.interrupts.lock().iter() {
            h.interrupt();
        }
    }

    /// Checkpoints (TRUNCATE) and closes every connection. Blocks until running
    /// statements return: it takes the same locks they hold, so the database is
    /// never closed under a running statement.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let writer = self.writer.lock().take();
        let readers: Vec<SqlConn> = std::mem::take(&mut *self.readers.lock());
        drop(readers);
        if let Some(sc) = writer {
            self.checkpoint_and_close(sc);
        }
        if let Some(kv) = self.kv.lock().take() {
            kv.close();
        }
        // Every lock above is released: only now take the cap's map (see OpenDbs::admit).
        self.open_slot.store(false, Ordering::Release);
        self.open_dbs.forget(self);
    }
}

impl Executor {
    /// A new executor of (actor, generation) with its files in `dir`; nothing is
    /// opened until its first request. Made by [`crate::generations::Generations`],
    /// which holds one per live generation.
    pub(crate) fn new(
        actor_id: &str,
        generation: u64,
        dir: PathBuf,
        settings: &ExecSettings,
        open_dbs: Arc<OpenDbs>,
    ) -> Arc<Executor> {
        Arc::new(Executor {
            actor_id: actor_id.to_string(),
            generation,
            dir,
            settings: settings.clone(),
            writer: Mutex::new(None),
            writer_opened: AtomicBool::new(false),
            readers: Mutex::new(Vec::new()),
            kv: Mutex::new(None),
            interrupts: Mutex::new(Vec::new()),
            closing: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            in_txn: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            turned_away: AtomicUsize::new(0),
            writer_local: Arc::new(AtomicBool::new(false)),
            interrupted: AtomicUsize::new(0),
            in_use: RwLock::new(()),
            open_slot: AtomicBool::new(false),
            last_used_ms: AtomicU64::new(open_dbs.now_ms()),
            open_dbs,
            txns: Default::default(),
        })
    }
}

mod keyed;
mod reader;
mod rows;
mod stream;
mod txn;
mod writer;

pub use keyed::BatchRead;
pub use reader::ReadSession;
use rows::{collect_rows, map_error, transaction_left_open, RowsError};
pub use rows::{err, limit_error};
pub use stream::{ReaderHook, SizedRow, StreamCursor};
pub use txn::{CommitDone, StatementOutcome, TxnConn, TxnRefusal};
pub use writer::{MemberOutcome, WriterLock};

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    #[test]
    fn a_refusing_commit_guard_turns_every_commit_into_a_rollback() {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = ExecSettings::from_config(&crate::config::Config::for_tests(dir.path()));
        let serving = Arc::new(AtomicBool::new(true));
        let s = serving.clone();
        settings.commit_guard = Some(CommitGuard(Arc::new(move || s.load(Ordering::SeqCst))));
        let x = Executor::new("a", 1, dir.path().join("a"), &settings, crate::sql::open_dbs::OpenDbs::new(4));
        x.exec("CREATE TABLE t(v)").unwrap();
        x.exec("INSERT INTO t VALUES (1)").unwrap();
        serving.store(false, Ordering::SeqCst);
        let refused = x.exec("INSERT INTO t VALUES (2)").unwrap_err();
        assert_eq!(refused.extended_code, Some(ffi::SQLITE_CONSTRAINT_COMMITHOOK), "{refused:?}");
        assert_eq!(refused.code, envoy_protocol::SqliteErrorCode::ActorUnavailable);
        assert_eq!(refused.committed, Some(false));
        serving.store(true, Ordering::SeqCst);
        let rows = x.exec("SELECT count(*) FROM t").unwrap().rows;
        assert_eq!(rows, vec![vec![envoy_protocol::Value::Integer(1)]], "the refused write left nothing");
        x.close();
    }
}
