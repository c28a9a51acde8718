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
use std::collections::HashMap;
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
}

impl ExecSettings {
    pub fn from_config(c: &Config) -> Self {
        Self {
            limits: c.limits.clone(),
            busy_timeout: c.busy_timeout,
            readers: c.readers_per_actor,
            sandbox: SandboxLimits::from_limits(&c.limits),
            durability: c.durability,
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
        if self.in_txn() || self.reads_need_writer() {
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
        let total_before = conn.total_changes();
        let rowid_before = conn.last_insert_rowid();
        let rows = sc.sandbox.vacuum(conn, route.kind == Kind::Vacuum, || collect_rows(&mut stmt, limits));
        sc.deadline.disarm();
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
                    sc.sandbox.vacuum(conn, Kind::of(piece) == Kind::Vacuum, || collect_rows(&mut stmt, limits))
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
            match KvStore::open(&self.dir.join("kv.sqlite"), self.settings.durability) {
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

/// The actor's writer, locked: requests run on it one after another, alone or
/// as members of a group commit (`sql::group`). Holding it keeps the executor
/// from closing the connection underneath.
pub struct WriterLock<'a> {
    /// The executor whose writer this is.
    x: &'a Executor,
    /// The locked writer; `Some` for the lock's whole life.
    guard: MutexGuard<'a, Option<SqlConn>>,
}

/// A reader connection held for a batch of reads, all answered from one WAL
/// snapshot: one read transaction (and its file locks) for the batch instead of
/// one per statement. Every read of the batch was admitted before the batch
/// began, so the snapshot (taken at its first statement) already holds every
/// write acknowledged before any of them was sent.
pub struct ReadSession<'a> {
    /// The executor whose reader this is.
    x: &'a Executor,
    /// The reader, taken on first use.
    sc: Option<SqlConn>,
    /// Whether a read transaction is open on it.
    snapshot: bool,
}

impl ReadSession<'_> {
    /// Runs one read-candidate `Execute`; Bounce if it turns out to write.
    pub fn execute(&mut self, sql: &str, route: &Route, params: &[Value]) -> ExecuteOutcome {
        let x = self.x;
        if let Some(e) = x.refuse_start() {
            return ExecuteOutcome::Done(Err(e));
        }
        if self.sc.is_none() {
            match x.take_reader() {
                Ok(sc) => self.sc = Some(sc),
                Err(e) => return ExecuteOutcome::Done(Err(e)),
            }
        }
        let Some(sc) = self.sc.as_mut() else { unreachable!("taken above") };
        if !self.snapshot {
            self.snapshot = sc.conn.prepare_cached("BEGIN").and_then(|mut s| s.raw_execute()).is_ok();
        }
        match x.run_execute(sc, sql, route, params, None) {
            Some(r) => ExecuteOutcome::Done(r),
            None => ExecuteOutcome::Bounce,
        }
    }
}

impl Drop for ReadSession<'_> {
    fn drop(&mut self) {
        if let Some(sc) = self.sc.take() {
            if !sc.conn.is_autocommit() {
                if let Err(e) = sc.conn.execute_batch("COMMIT") {
                    tracing::warn!(actor_id = %self.x.actor_id, error = %e, "ending a read snapshot failed");
                    return; // dropped, not pooled
                }
            }
            self.x.give_back_reader(sc);
        }
    }
}

/// How a group member ended (see `sql::group`).
pub enum MemberOutcome<T> {
    /// Answered; its effects (if any) are part of the open group.
    Done(Result<T, SqliteError>),
    /// SQLite rolled back the whole group transaction while this member ran
    /// (an interrupted write, `OR ROLLBACK`, an I/O error): this member's answer
    /// stands, the members before it must run again.
    Vanished(Result<T, SqliteError>),
    /// It would leave a deferred foreign-key violation: its effects were undone;
    /// run it alone, after the group's commit, where its own COMMIT decides.
    RunAlone,
}

/// Name of the savepoint around each group member: members never manage
/// transactions themselves (those requests run alone), so the name is free.
const MEMBER_SAVEPOINT: &str = "SAVEPOINT envoy_group_member";
const MEMBER_RELEASE: &str = "RELEASE envoy_group_member";
const MEMBER_ROLLBACK: &str = "ROLLBACK TO envoy_group_member";

impl WriterLock<'_> {
    fn sc(&mut self) -> &mut SqlConn {
        self.guard.as_mut().expect("a WriterLock holds an open writer")
    }

    /// Whether the executor is stopping (members not started yet are answered INTERRUPTED).
    pub fn stopping(&self) -> Result<(), SqliteError> {
        match self.x.refuse_start() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Runs one `Execute`/`ExecuteWrite` alone. v≤4: a transaction it leaves open is rolled back.
    pub fn execute_alone(
        &mut self,
        sql: &str,
        route: &Route,
        params: &[Value],
        write_request: bool,
    ) -> Result<ExecuteResult, SqliteError> {
        let x = self.x;
        let sc = self.sc();
        let r = x.run_execute(sc, sql, route, params, Some(write_request));
        let rolled_back = x.end_open_transaction(sc);
        x.in_txn.store(!sc.conn.is_autocommit(), Ordering::Release);
        match (r, rolled_back) {
            (Some(Ok(_)), true) => Err(transaction_left_open(None)),
            (Some(Err(mut e)), true) => {
                e.committed = Some(false);
                e.message.push_str("; the transaction this request opened was rolled back");
                Err(e)
            }
            (Some(r), false) => r,
            (None, _) => Err(err(SqliteErrorCode::Internal, "writer refused a statement", None)),
        }
    }

    /// Runs an `Exec` alone. v≤4: a transaction it leaves open is rolled back.
    pub fn exec_alone(&mut self, sql: &str) -> Result<QueryResult, SqliteError> {
        let x = self.x;
        let sc = self.sc();
        let result = x.exec_statements(sc, sql, false);
        let rolled_back = x.end_open_transaction(sc);
        x.in_txn.store(!sc.conn.is_autocommit(), Ordering::Release);
        match result {
            Ok(_) if rolled_back => {
                // Only statements before the transaction's BEGIN could have committed; count them.
                let committed_alone = statements(sql)
                    .take_while(|s| !super::route::first_keyword_is(s, &["BEGIN", "SAVEPOINT"]))
                    .count() as u32;
                Err(transaction_left_open(Some(committed_alone)))
            }
            Ok(last) => Ok(last),
            Err((mut e, index, committed_alone)) => {
                // Statements before the failing one that ran in autocommit mode committed
                // one by one; what ran inside a transaction was rolled back with it.
                e.committed = Some(committed_alone > 0);
                e.statement_index = Some(index);
                if rolled_back {
                    e.message.push_str(&format!(
                        "; the transaction this request opened was rolled back{}",
                        if committed_alone > 0 {
                            format!(" (statements 0..{committed_alone} before it had committed on their own)")
                        } else {
                            String::new()
                        }
                    ));
                }
                Err(e)
            }
        }
    }

    /// Runs the engine's own transaction-control statement (BEGIN/COMMIT/ROLLBACK/savepoints of a group).
    fn control(&mut self, sql: &str) -> Result<(), SqliteError> {
        let x = self.x;
        let sc = self.sc();
        sc.sandbox.clear_denial();
        let r = sc.conn.prepare_cached(sql).and_then(|mut st| st.raw_execute());
        r.map(|_| ()).map_err(|e| x.scrub(map_error(e, None, Some(x))))
    }

    /// Opens a group transaction (IMMEDIATE: the write lock is taken now, so no
    /// member waits for it).
    pub fn begin_group(&mut self) -> Result<(), SqliteError> {
        self.control("BEGIN IMMEDIATE")
    }

    /// Commits the group transaction: one commit (one fsync at `--durability fsync`) for every member.
    pub fn commit_group(&mut self) -> Result<(), SqliteError> {
        let r = self.control("COMMIT");
        if r.is_err() && !self.sc().conn.is_autocommit() {
            let _ = self.control("ROLLBACK");
        }
        r
    }

    /// Whether the group transaction is still open (SQLite may have rolled it back).
    pub fn in_transaction(&mut self) -> bool {
        !self.sc().conn.is_autocommit()
    }

    /// Whether the open transaction holds unresolved deferred foreign-key violations.
    fn deferred_fk_violations(&mut self) -> bool {
        let (mut cur, mut hi) = (0, 0);
        // SAFETY: the handle is open while the lock is held; out-pointers are valid.
        let rc = unsafe {
            ffi::sqlite3_db_status(self.sc().conn.handle(), ffi::SQLITE_DBSTATUS_DEFERRED_FKS, &mut cur, &mut hi, 0)
        };
        rc == ffi::SQLITE_OK && cur > 0
    }

    /// Runs `f` as one member of the open group, inside its own savepoint.
    /// `keep_partial`: on an error, keep what the member did before failing
    /// (an `Exec` whose earlier statements would have committed on their own).
    fn member<T>(
        &mut self,
        keep_partial: bool,
        f: impl FnOnce(&Executor, &mut SqlConn) -> Result<T, SqliteError>,
    ) -> MemberOutcome<T> {
        if let Err(e) = self.stopping() {
            return MemberOutcome::Done(Err(e));
        }
        if let Err(e) = self.control(MEMBER_SAVEPOINT) {
            return MemberOutcome::Done(Err(e));
        }
        let x = self.x;
        let r = f(x, self.sc());
        if !self.in_transaction() {
            return MemberOutcome::Vanished(r);
        }
        match r {
            Ok(v) => {
                if self.deferred_fk_violations() {
                    let _ = self.control(MEMBER_ROLLBACK);
                    let _ = self.control(MEMBER_RELEASE);
                    return MemberOutcome::RunAlone;
                }
                match self.control(MEMBER_RELEASE) {
                    Ok(()) => MemberOutcome::Done(Ok(v)),
                    Err(e) => MemberOutcome::Done(Err(e)),
                }
            }
            Err(mut e) => {
                if !keep_partial || e.committed.is_none() {
                    let _ = self.control(MEMBER_ROLLBACK);
                    if e.committed.is_none() {
                        // A result that failed after its statement wrote: undone now.
                        e.committed = Some(false);
                    }
                }
                let _ = self.control(MEMBER_RELEASE);
                MemberOutcome::Done(Err(e))
            }
        }
    }

    /// Runs an `Execute`/`ExecuteWrite` as a member of the open group.
    pub fn execute_member(
        &mut self,
        sql: &str,
        route: &Route,
        params: &[Value],
        write_request: bool,
    ) -> MemberOutcome<ExecuteResult> {
        self.member(false, |x, sc| {
            x.run_execute(sc, sql, route, params, Some(write_request))
                .unwrap_or_else(|| Err(err(SqliteErrorCode::Internal, "writer refused a statement", None)))
        })
    }

    /// Runs an `Exec` as a member of the open group: statements before a failing
    /// one are kept (they would have committed on their own), as alone.
    pub fn exec_member(&mut self, sql: &str) -> MemberOutcome<QueryResult> {
        self.member(true, |x, sc| {
            x.exec_statements(sc, sql, true).map_err(|(mut e, index, _)| {
                e.committed = Some(index > 0);
                e.statement_index = Some(index);
                e
            })
        })
    }
}

enum RowsError {
    Sqlite(rusqlite::Error),
    Limit(SqliteError),
}

impl From<rusqlite::Error> for RowsError {
    fn from(e: rusqlite::Error) -> Self {
        RowsError::Sqlite(e)
    }
}

/// Steps a statement to the end, copying rows once into wire values while
/// accounting value and response sizes. The bytes are charged, as they are
/// copied, to the connection's outbox budget and the engine's result budget
/// (see `crate::budget`); a result that does not fit is refused with OVERLOADED.
fn collect_rows(
    stmt: &mut Statement<'_>,
    limits: &crate::config::Limits,
) -> Result<(Vec<String>, Vec<Vec<Value>>), RowsError> {
    let max_value = limits.max_value_bytes as usize;
    let max_response = limits.max_response_bytes as usize;
    let mut charge = crate::budget::ResultCharge::start();
    let refused = |r: crate::budget::Refused| RowsError::Limit(r.sqlite_error());
    // The result's shape is read after the first step: a step re-prepares a
    // statement whose schema changed (a cached statement, another connection's
    // ALTER TABLE), and only then are its columns the current ones.
    let mut columns: Option<Vec<String>> = None;
    let mut size: usize = 32;
    let mut out = Vec::new();
    let mut rows = stmt.raw_query();
    while let Some(row) = rows.next()? {
        let names = columns.get_or_insert_with(|| {
            let names: Vec<String> = AsRef::<Statement<'_>>::as_ref(row).column_names().map(String::from).collect();
            size += names.iter().map(|c| c.len() + 5).sum::<usize>();
            names
        });
        let n = names.len();
        let mut r = Vec::with_capacity(n);
        for i in 0..n {
            let v = row.get_ref(i)?;
            let vb = sqlite_value_bytes(&v);
            if vb > max_value {
                return Err(RowsError::Limit(limit_error(LimitKind::ValueBytes, max_value as u64, Some(vb as u64))));
            }
            let v = match from_sqlite(v) {
                Ok(v) => v,
                Err(NotUtf8) => {
                    // What a local connection would see first wins: if a later row
                    // fails in SQLite itself, that error is the answer.
                    let e = not_utf8(names, i);
                    while rows.next()?.is_some() {}
                    return Err(RowsError::Limit(e));
                }
            };
            size += response_cost(&v);
            r.push(v);
        }
        size += std::mem::size_of::<Vec<Value>>();
        if size > max_response {
            return Err(RowsError::Limit(limit_error(LimitKind::ResponseBytes, max_response as u64, None)));
        }
        charge.grow_to(size).map_err(refused)?;
        out.push(r);
    }
    drop(rows);
    // No row: the statement ran to its end (and was re-prepared if it had to be).
    let columns = columns.unwrap_or_else(|| stmt.column_names().map(String::from).collect());
    charge.grow_to(size).and_then(|()| charge.finish()).map_err(refused)?;
    Ok((columns, out))
}

/// The answer to a TEXT value that is not UTF-8: the protocol's text is UTF-8,
/// so the bytes cannot travel as TEXT, and changing them silently is not an option.
fn not_utf8(columns: &[String], i: usize) -> SqliteError {
    let name = columns.get(i).map_or("?", String::as_str);
    let mut e = err(
        SqliteErrorCode::Sqlite,
        &format!(
            "column {i} ({name:?}) holds TEXT that is not valid UTF-8, which the protocol cannot carry as text; \
             read it as a BLOB instead, e.g. CAST({name} AS BLOB)"
        ),
        Some(false),
    );
    e.extended_code = Some(ffi::SQLITE_MISMATCH);
    e
}

/// A typed SQLite error.
pub fn err(code: SqliteErrorCode, message: &str, committed: Option<bool>) -> SqliteError {
    SqliteError {
        code,
        message: message.to_string(),
        extended_code: None,
        committed,
        statement_index: None,
        limit: None,
    }
}

/// The answer to a request that ended with a transaction still open (now rolled back).
fn transaction_left_open(committed_alone: Option<u32>) -> SqliteError {
    let mut e = err(
        SqliteErrorCode::InvalidRequest,
        "the request ended inside a transaction it opened, so the transaction was rolled back: in protocol v4 and \
         earlier a transaction must begin and end within one request (send BEGIN … COMMIT in one Exec)",
        Some(false),
    );
    if let Some(n) = committed_alone.filter(|n| *n > 0) {
        e.committed = Some(true);
        e.message.push_str(&format!("; statements 0..{n} before it had committed on their own"));
    }
    e
}

/// LIMIT_EXCEEDED with its details.
pub fn limit_error(kind: LimitKind, max: u64, actual: Option<u64>) -> SqliteError {
    let mut e = err(
        SqliteErrorCode::LimitExceeded,
        &match actual {
            Some(a) => format!("{kind:?} limit exceeded: {a} > {max}"),
            None => format!("{kind:?} limit exceeded (max {max})"),
        },
        Some(false),
    );
    e.limit = Some(LimitExceeded { kind, max, actual });
    e
}

/// Maps a rusqlite error to the protocol's typed error.
fn map_error(e: rusqlite::Error, deadline: Option<&Deadline>, exec: Option<&Executor>) -> SqliteError {
    let failure = match e {
        rusqlite::Error::SqliteFailure(fe, msg) => Ok((fe, msg.unwrap_or_else(|| fe.to_string()))),
        rusqlite::Error::SqlInputError { error, msg, offset, .. } => Ok((error, format!("{msg} (at byte {offset})"))),
        other => Err(other),
    };
    match failure {
        Ok((fe, message)) => {
            // SQLite reports some authorizer denials (functions) as plain SQLITE_ERROR.
            if fe.extended_code == ffi::SQLITE_AUTH || message.contains("not authorized") {
                let mut e = err(
                    SqliteErrorCode::Forbidden,
                    &format!("{message} (an actor's SQL may only reach its own database)"),
                    Some(false),
                );
                e.extended_code = Some(fe.extended_code);
                return e;
            }
            if fe.code == ErrorCode::OperationInterrupted {
                if exec.is_some_and(|x| x.closing.load(Ordering::Acquire)) {
                    if let Some(x) = exec {
                        x.interrupted.fetch_add(1, Ordering::AcqRel);
                    }
                    return err(SqliteErrorCode::Interrupted, "interrupted: the actor is stopping", Some(false));
                }
                // Not stopping: only the deadline's progress handler interrupts.
                if deadline.is_some() {
                    if let Some(x) = exec {
                        let max = u64::from(x.settings.limits.max_statement_ms);
                        let mut e = limit_error(LimitKind::StatementMs, max, None);
                        e.code = SqliteErrorCode::Timeout;
                        e.message = format!("the statement ran past its deadline of {max} ms and was interrupted");
                        return e;
                    }
                }
                return err(SqliteErrorCode::Interrupted, "interrupted", Some(false));
            }
            if fe.code == ErrorCode::TooBig {
                let max = exec.map_or(0, |x| u64::from(x.settings.limits.max_value_bytes));
                let mut e = limit_error(LimitKind::ValueBytes, max, None);
                e.message = format!("a string, BLOB or row would exceed maxValueBytes ({max} bytes): {message}");
                e.extended_code = Some(fe.extended_code);
                return e;
            }
            let mut e = err(SqliteErrorCode::Sqlite, &message, Some(false));
            e.extended_code = Some(fe.extended_code);
            e
        }
        Err(rusqlite::Error::MultipleStatement) => err(
            SqliteErrorCode::InvalidRequest,
            "Execute takes exactly one statement; use Exec for several",
            Some(false),
        ),
        Err(rusqlite::Error::InvalidParameterCount(given, expected)) => err(
            SqliteErrorCode::InvalidRequest,
            &format!("the statement takes {expected} parameter(s) but {given} were given"),
            Some(false),
        ),
        Err(rusqlite::Error::NulError(_)) => {
            err(SqliteErrorCode::InvalidRequest, "SQL contains a NUL byte", Some(false))
        }
        Err(other) => err(SqliteErrorCode::Internal, &other.to_string(), None),
    }
}

/// Every open executor.
pub struct Executors {
    /// By actor id, then generation (nested so a lookup by `&str` allocates nothing).
    map: Mutex<HashMap<String, HashMap<u64, Arc<Executor>>>>,
    /// The engine's open-database cap, handed to every executor created.
    open_dbs: Arc<OpenDbs>,
}

impl Executors {
    pub fn new(open_dbs: Arc<OpenDbs>) -> Self {
        Self { map: Mutex::new(HashMap::new()), open_dbs }
    }

    /// The engine's open-database cap.
    pub fn open_dbs(&self) -> &Arc<OpenDbs> {
        &self.open_dbs
    }

    /// The executor of (actor, generation), created (without opening files) if new.
    /// `dir` is only called when the executor is new (no path is built per request).
    pub fn get_or_create(
        &self,
        actor_id: &str,
        generation: u64,
        dir: impl FnOnce() -> PathBuf,
        settings: &ExecSettings,
    ) -> Arc<Executor> {
        let mut map = self.map.lock();
        if let Some(x) = map.get(actor_id).and_then(|g| g.get(&generation)) {
            return x.clone();
        }
        map.entry(actor_id.to_string())
            .or_default()
            .entry(generation)
            .or_insert_with(|| self.new_executor(actor_id, generation, dir(), settings))
            .clone()
    }

    /// An executor that is not registered: for an operator's inspection of an
    /// actor that is not running (closed by the caller when done).
    pub fn detached(&self, actor_id: &str, generation: u64, dir: PathBuf, settings: &ExecSettings) -> Arc<Executor> {
        self.new_executor(actor_id, generation, dir, settings)
    }

    fn new_executor(&self, actor_id: &str, generation: u64, dir: PathBuf, settings: &ExecSettings) -> Arc<Executor> {
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
            last_used_ms: AtomicU64::new(self.open_dbs.now_ms()),
            open_dbs: self.open_dbs.clone(),
        })
    }

    pub fn get(&self, actor_id: &str, generation: u64) -> Option<Arc<Executor>> {
        self.map.lock().get(actor_id).and_then(|g| g.get(&generation)).cloned()
    }

    pub fn remove(&self, actor_id: &str, generation: u64) -> Option<Arc<Executor>> {
        let mut map = self.map.lock();
        let gens = map.get_mut(actor_id)?;
        let x = gens.remove(&generation);
        if gens.is_empty() {
            map.remove(actor_id);
        }
        x
    }
}
