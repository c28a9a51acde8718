//! Keeps an actor's SQL inside its own database file: deny by default.
//!
//! Every connection an executor opens gets, before any actor SQL reaches it:
//! - an **authorizer** ([`decide`]) that allows an explicit list of actions,
//!   functions ([`ALLOWED_FUNCTIONS`]), PRAGMAs ([`PRAGMAS`]) and virtual-table
//!   modules ([`ALLOWED_MODULES`]), and refuses everything else — including any
//!   action code it does not recognise, every ATTACH and DETACH whatever the
//!   argument (a NULL file name included), and objects of any schema other than
//!   `main` and `temp`. A refusal fails the statement with SQLITE_AUTH and is
//!   answered FORBIDDEN with the reason recorded here;
//! - **C-level walls** that hold even if the authorizer had a hole:
//!   `SQLITE_LIMIT_ATTACHED = 0`, `SQLITE_DBCONFIG_DEFENSIVE`, trusted schema
//!   off, extension loading and the two-argument `fts3_tokenizer` off,
//!   ATTACH unable to create or write files, and every `SQLITE_LIMIT_*` set
//!   from the engine's own limits ([`SandboxLimits`]);
//! - a **deadline** ([`Deadline`]) watched twice: by a progress handler while a
//!   statement runs and by a [`watchdog`] thread that interrupts a prepare that
//!   takes too long (SQLite calls no progress handler while it parses);
//! - the **process-wide** heap limits are the engine's alone ([`set_heap_limits`]);
//!   the PRAGMAs that would change them are not on the list.
//!
//! Plain `VACUUM` attaches a private temporary database internally; the
//! executor runs it through [`Sandbox::vacuum`], which opens exactly that door
//! (one attachment, empty file name) for the one statement and closes it after.
//! The lists and the reason for each choice are in `specs/security.md`.

use parking_lot::Mutex;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::limits::Limit;
use rusqlite::{ffi, Connection, InterruptHandle};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

/// VM instructions between progress-handler calls: frequent enough for ms deadlines, cheap enough not to show.
pub const PROGRESS_OPS: i32 = 10_000;

/// How often the watchdog looks for a prepare past its deadline. Statements
/// that run are stopped sooner by the progress handler; only parsing and
/// planning (no VM instructions yet) rely on this tick.
pub const WATCHDOG_TICK: Duration = Duration::from_millis(20);

/// Functions an actor may call: SQLite's core scalar, aggregate, window, date
/// and JSON functions, the math functions, and the FTS3/FTS5/R*Tree helpers,
/// plus the internal functions SQLite's own ALTER TABLE uses (user SQL cannot
/// call those; the authorizer still sees them when ALTER rewrites the schema).
/// Everything else, including any function a future SQLite adds, is refused
/// until it is reviewed and listed here (a test lists every function the
/// linked SQLite has and fails on one that is on neither list).
pub const ALLOWED_FUNCTIONS: &[&str] = &[
    // core scalar
    "abs",
    "changes",
    "char",
    "coalesce",
    "concat",
    "concat_ws",
    "format",
    "glob",
    "hex",
    "if",
    "ifnull",
    "iif",
    "instr",
    "last_insert_rowid",
    "length",
    "like",
    "likelihood",
    "likely",
    "lower",
    "ltrim",
    "max",
    "min",
    "nullif",
    "octet_length",
    "printf",
    "quote",
    "random",
    "randomblob",
    "replace",
    "round",
    "rtrim",
    "sign",
    "soundex",
    "sqlite_compileoption_get",
    "sqlite_compileoption_used",
    "sqlite_offset",
    "sqlite_source_id",
    "sqlite_version",
    "substr",
    "substring",
    "total_changes",
    "trim",
    "typeof",
    "unhex",
    "unicode",
    "unistr",
    "unistr_quote",
    "unlikely",
    "upper",
    "zeroblob",
    "match",
    "subtype",
    // aggregates
    "avg",
    "count",
    "group_concat",
    "string_agg",
    "sum",
    "total",
    "median",
    "percentile",
    "percentile_cont",
    "percentile_disc",
    // window
    "row_number",
    "rank",
    "dense_rank",
    "percent_rank",
    "cume_dist",
    "ntile",
    "lag",
    "lead",
    "first_value",
    "last_value",
    "nth_value",
    // date and time
    "date",
    "time",
    "datetime",
    "julianday",
    "unixepoch",
    "strftime",
    "timediff",
    "current_date",
    "current_time",
    "current_timestamp",
    // math
    "acos",
    "acosh",
    "asin",
    "asinh",
    "atan",
    "atan2",
    "atanh",
    "ceil",
    "ceiling",
    "cos",
    "cosh",
    "degrees",
    "exp",
    "floor",
    "ln",
    "log",
    "log10",
    "log2",
    "mod",
    "pi",
    "pow",
    "power",
    "radians",
    "sin",
    "sinh",
    "sqrt",
    "tan",
    "tanh",
    "trunc",
    // JSON (the -> and ->> operators are functions too)
    "json",
    "jsonb",
    "json_array",
    "jsonb_array",
    "json_array_length",
    "json_error_position",
    "json_extract",
    "jsonb_extract",
    "json_insert",
    "jsonb_insert",
    "json_object",
    "jsonb_object",
    "json_patch",
    "jsonb_patch",
    "json_pretty",
    "json_quote",
    "json_remove",
    "jsonb_remove",
    "json_replace",
    "jsonb_replace",
    "json_set",
    "jsonb_set",
    "json_type",
    "json_valid",
    "json_group_array",
    "jsonb_group_array",
    "json_group_object",
    "jsonb_group_object",
    "json_array_insert",
    "jsonb_array_insert",
    "->",
    "->>",
    // full-text search and R*Tree
    "snippet",
    "offsets",
    "matchinfo",
    "optimize",
    "bm25",
    "highlight",
    "fts5_source_id",
    "fts5_locale",
    "fts5_insttoken",
    "fts5_get_locale",
    "rtreecheck",
    // used by SQLite's own ALTER TABLE / DROP COLUMN rewrites
    "sqlite_rename_column",
    "sqlite_rename_table",
    "sqlite_rename_test",
    "sqlite_drop_column",
    "sqlite_rename_quotefix",
];

/// Functions the linked SQLite has that are refused, and why. Listed so the
/// reason is on record and the completeness test can tell "reviewed and
/// refused" from "never looked at".
pub const DENIED_FUNCTIONS: &[(&str, &str)] = &[
    ("load_extension", "loads native code into the engine process"),
    (
        "fts3_tokenizer",
        "reads and registers raw code pointers; SQLite trusts bound arguments, so it crashes the engine",
    ),
    ("fts5", "hands out a pointer to the FTS5 API; no use from SQL"),
    ("rtreenode", "debugging aid that parses raw node blobs"),
    ("rtreedepth", "debugging aid that parses raw node blobs"),
    ("sqlite_dbdata", "debugging aid"),
    ("geopoly_debug", "debugging aid"),
    ("sqlite_log", "writes into the engine's own log"),
];

/// What a listed PRAGMA may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PragmaAccess {
    /// Only read, with no argument (`PRAGMA page_count`).
    Read,
    /// Read, or called with an object name or check argument (`PRAGMA table_info(t)`).
    Arg,
    /// Read or set (`PRAGMA user_version = 7`): connection-local or confined to the actor's own file.
    Set,
}

/// PRAGMAs an actor may use. Everything else is refused, notably those that
/// change the engine's storage contract (journal_mode, synchronous,
/// locking_mode, mmap_size, wal_*, journal_size_limit, temp_store*, cache_*),
/// process-wide state (hard_heap_limit, soft_heap_limit, threads,
/// shrink_memory), the schema guard (writable_schema, trusted_schema,
/// cell_size_check), connection behaviour the engine relies on (busy_timeout,
/// query_only, count_changes, *_column_names), and `database_list`, which
/// names files on the engine's disk.
pub const PRAGMAS: &[(&str, PragmaAccess)] = &[
    ("analysis_limit", PragmaAccess::Set),
    ("application_id", PragmaAccess::Set),
    ("auto_vacuum", PragmaAccess::Set),
    ("automatic_index", PragmaAccess::Set),
    ("case_sensitive_like", PragmaAccess::Set),
    ("collation_list", PragmaAccess::Read),
    ("compile_options", PragmaAccess::Read),
    ("data_version", PragmaAccess::Read),
    ("defer_foreign_keys", PragmaAccess::Set),
    ("encoding", PragmaAccess::Read),
    ("foreign_key_check", PragmaAccess::Arg),
    ("foreign_key_list", PragmaAccess::Arg),
    ("foreign_keys", PragmaAccess::Set),
    ("freelist_count", PragmaAccess::Read),
    ("function_list", PragmaAccess::Read),
    ("ignore_check_constraints", PragmaAccess::Set),
    ("incremental_vacuum", PragmaAccess::Arg),
    ("index_info", PragmaAccess::Arg),
    ("index_list", PragmaAccess::Arg),
    ("index_xinfo", PragmaAccess::Arg),
    ("integrity_check", PragmaAccess::Arg),
    ("journal_mode", PragmaAccess::Read),
    ("legacy_alter_table", PragmaAccess::Set),
    ("max_page_count", PragmaAccess::Read),
    ("module_list", PragmaAccess::Read),
    ("optimize", PragmaAccess::Arg),
    ("page_count", PragmaAccess::Read),
    ("page_size", PragmaAccess::Set),
    ("pragma_list", PragmaAccess::Read),
    ("quick_check", PragmaAccess::Arg),
    ("recursive_triggers", PragmaAccess::Set),
    ("reverse_unordered_selects", PragmaAccess::Set),
    ("schema_version", PragmaAccess::Read),
    ("secure_delete", PragmaAccess::Set),
    ("stats", PragmaAccess::Read),
    ("synchronous", PragmaAccess::Read),
    ("table_info", PragmaAccess::Arg),
    ("table_list", PragmaAccess::Arg),
    ("table_xinfo", PragmaAccess::Arg),
    ("user_version", PragmaAccess::Set),
];

/// Virtual-table modules an actor may create tables with.
pub const ALLOWED_MODULES: &[&str] = &["fts3", "fts4", "fts5", "fts5vocab", "rtree", "rtree_i32"];

/// Prefix of the schema name SQLite gives the private database of a plain
/// VACUUM (`vacuum_db`, or `vacuum_<random hex>` in newer releases).
const VACUUM_SCHEMA_PREFIX: &str = "vacuum_";

/// The `SQLITE_LIMIT_*` values every actor connection gets. Those that match
/// an engine limit are derived from it ([`SandboxLimits::from_limits`]), so a
/// value SQLite builds is refused at the same size the protocol advertises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxLimits {
    /// Largest string, BLOB or row SQLite will build: `maxValueBytes`. Stops
    /// `randomblob(4e8)` or `printf('%.*c', 9e8, 'x')` before it allocates.
    pub length: i32,
    /// Longest SQL text: `maxSqlBytes`.
    pub sql_length: i32,
    /// Most `?` parameters: `maxParams`.
    pub variable_number: i32,
    /// Columns in a table, index, view or result: SQLite's default.
    pub columns: i32,
    /// Expression tree depth (parser recursion).
    pub expr_depth: i32,
    /// Terms of one compound SELECT.
    pub compound_select: i32,
    /// VM instructions of one prepared statement.
    pub vdbe_op: i32,
    /// Arguments of one function call.
    pub function_arg: i32,
    /// Length of a LIKE/GLOB pattern (their cost grows with it).
    pub like_pattern_length: i32,
    /// Recursion depth of triggers.
    pub trigger_depth: i32,
}

/// Columns per table/result (SQLite's default).
pub const DEFAULT_SQLITE_MAX_COLUMNS: i32 = 2000;
/// Expression depth (SQLite's default).
pub const DEFAULT_SQLITE_MAX_EXPR_DEPTH: i32 = 1000;
/// Terms in a compound SELECT (SQLite's default).
pub const DEFAULT_SQLITE_MAX_COMPOUND_SELECT: i32 = 500;
/// VM program size of one statement (a cap on what one prepare can build).
pub const DEFAULT_SQLITE_MAX_VDBE_OP: i32 = 250_000_000;
/// Function arguments (SQLite's default).
pub const DEFAULT_SQLITE_MAX_FUNCTION_ARG: i32 = 127;
/// LIKE/GLOB pattern bytes (SQLite's default).
pub const DEFAULT_SQLITE_MAX_LIKE_PATTERN: i32 = 50_000;
/// Trigger recursion depth: SQLite allows 1000; 100 is plenty for real schemas
/// and bounds the stack and time one recursive trigger chain can take.
pub const DEFAULT_SQLITE_MAX_TRIGGER_DEPTH: i32 = 100;

impl SandboxLimits {
    /// The limits derived from the engine's protocol limits, the rest at their defaults.
    pub fn from_limits(l: &crate::config::Limits) -> Self {
        let clamp = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
        Self {
            length: clamp(l.max_value_bytes).max(1),
            sql_length: clamp(l.max_sql_bytes).max(1),
            variable_number: clamp(l.max_params),
            columns: DEFAULT_SQLITE_MAX_COLUMNS,
            expr_depth: DEFAULT_SQLITE_MAX_EXPR_DEPTH,
            compound_select: DEFAULT_SQLITE_MAX_COMPOUND_SELECT,
            vdbe_op: DEFAULT_SQLITE_MAX_VDBE_OP,
            function_arg: DEFAULT_SQLITE_MAX_FUNCTION_ARG,
            like_pattern_length: DEFAULT_SQLITE_MAX_LIKE_PATTERN,
            trigger_depth: DEFAULT_SQLITE_MAX_TRIGGER_DEPTH,
        }
    }

    fn apply(&self, conn: &Connection) -> rusqlite::Result<()> {
        conn.set_limit(Limit::SQLITE_LIMIT_ATTACHED, 0)?;
        conn.set_limit(Limit::SQLITE_LIMIT_LENGTH, self.length)?;
        conn.set_limit(Limit::SQLITE_LIMIT_SQL_LENGTH, self.sql_length)?;
        conn.set_limit(Limit::SQLITE_LIMIT_VARIABLE_NUMBER, self.variable_number)?;
        conn.set_limit(Limit::SQLITE_LIMIT_COLUMN, self.columns)?;
        conn.set_limit(Limit::SQLITE_LIMIT_EXPR_DEPTH, self.expr_depth)?;
        conn.set_limit(Limit::SQLITE_LIMIT_COMPOUND_SELECT, self.compound_select)?;
        conn.set_limit(Limit::SQLITE_LIMIT_VDBE_OP, self.vdbe_op)?;
        conn.set_limit(Limit::SQLITE_LIMIT_FUNCTION_ARG, self.function_arg)?;
        conn.set_limit(Limit::SQLITE_LIMIT_LIKE_PATTERN_LENGTH, self.like_pattern_length)?;
        conn.set_limit(Limit::SQLITE_LIMIT_TRIGGER_DEPTH, self.trigger_depth)?;
        conn.set_limit(Limit::SQLITE_LIMIT_WORKER_THREADS, 0)?;
        Ok(())
    }
}

/// Why the authorizer refused something: the FORBIDDEN answer's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial(pub String);

/// What one connection's authorizer shares with the executor.
#[derive(Debug, Default)]
struct SandboxState {
    /// Set only while a plain VACUUM statement runs: admits its private attachment.
    vacuum: AtomicBool,
    /// Set only while the engine's own statements on its reserved tables run
    /// (request keys, `crate::sql::keys`): admits access to them.
    engine: AtomicBool,
    /// The reason of the last refusal, taken by the executor to explain FORBIDDEN.
    denial: Mutex<Option<Denial>>,
    /// Whether `denial` holds one: clearing before every statement (the hot path)
    /// is then one atomic load, the lock only taken after a refusal.
    has_denial: AtomicBool,
    /// Set (for good) once a statement creates TEMP objects or sets a
    /// connection-local PRAGMA on this connection: state other connections of
    /// the actor do not have (see `Executor::reads_need_writer`).
    local_state: Option<Arc<AtomicBool>>,
}

/// PRAGMAs whose setting lives on the connection, not in the database file.
const CONNECTION_PRAGMAS: &[&str] = &[
    "analysis_limit",
    "automatic_index",
    "case_sensitive_like",
    "defer_foreign_keys",
    "foreign_keys",
    "ignore_check_constraints",
    "legacy_alter_table",
    "recursive_triggers",
    "reverse_unordered_selects",
    "secure_delete",
];

/// Whether an allowed action gives the connection state of its own.
fn creates_local_state(action: &AuthAction<'_>) -> bool {
    match action {
        AuthAction::CreateTempTable { .. }
        | AuthAction::CreateTempIndex { .. }
        | AuthAction::CreateTempTrigger { .. }
        | AuthAction::CreateTempView { .. } => true,
        AuthAction::Pragma { pragma_name, pragma_value: Some(_) } => {
            CONNECTION_PRAGMAS.iter().any(|p| p.eq_ignore_ascii_case(pragma_name))
        }
        _ => false,
    }
}

/// The sandbox installed on one connection.
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// Shared with the connection's authorizer closure.
    state: Arc<SandboxState>,
}

impl Sandbox {
    /// The reason of the most recent refusal on this connection, if any (cleared by taking it).
    pub fn take_denial(&self) -> Option<Denial> {
        if !self.state.has_denial.swap(false, Ordering::AcqRel) {
            return None;
        }
        self.state.denial.lock().take()
    }

    /// Forgets a refusal left by a statement that failed for another reason.
    pub fn clear_denial(&self) {
        if self.state.has_denial.swap(false, Ordering::AcqRel) {
            *self.state.denial.lock() = None;
        }
    }

    /// Runs `f` (the stepping of one statement). When that statement is a plain
    /// VACUUM (`is_vacuum`, from its route), the one attachment VACUUM makes (a
    /// private temporary database, empty file name) is admitted for its duration.
    /// Runs `f`, the engine's own statements on its reserved tables
    /// (`sqlite_envoy_*`, see `crate::sql::keys`): the one door through which
    /// they may be read or written. Never wraps actor SQL.
    pub fn engine<T>(&self, f: impl FnOnce() -> T) -> T {
        self.state.engine.store(true, Ordering::Release);
        let out = f();
        self.state.engine.store(false, Ordering::Release);
        out
    }

    pub fn vacuum<T>(&self, conn: &Connection, is_vacuum: bool, f: impl FnOnce() -> T) -> T {
        if !is_vacuum {
            return f();
        }
        let _ = conn.set_limit(Limit::SQLITE_LIMIT_ATTACHED, 1);
        self.state.vacuum.store(true, Ordering::Release);
        let out = f();
        self.state.vacuum.store(false, Ordering::Release);
        let _ = conn.set_limit(Limit::SQLITE_LIMIT_ATTACHED, 0);
        out
    }
}

fn deny(why: String) -> Result<(), Denial> {
    Err(Denial(why))
}

/// Whether a schema (database) name may be touched.
fn schema_ok(db: Option<&str>, vacuum: bool) -> bool {
    match db {
        None => true,
        Some(d) => {
            d.eq_ignore_ascii_case("main")
                || d.eq_ignore_ascii_case("temp")
                || (vacuum && d.starts_with(VACUUM_SCHEMA_PREFIX))
        }
    }
}

/// Whether `name` is a listed function.
pub fn function_allowed(name: &str) -> bool {
    ALLOWED_FUNCTIONS.iter().any(|f| f.eq_ignore_ascii_case(name))
}

/// The listed access of a PRAGMA, if it is listed.
pub fn pragma_access(name: &str) -> Option<PragmaAccess> {
    PRAGMAS.iter().find(|(p, _)| p.eq_ignore_ascii_case(name)).map(|(_, a)| *a)
}

/// Whether `name` is one of the engine's reserved tables (`sqlite_envoy_*`).
fn reserved(name: &str) -> bool {
    let p = crate::sql::keys::RESERVED_PREFIX;
    name.len() >= p.len() && name.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes())
}

/// The table (or PRAGMA argument) an action names, when it could be one of the
/// engine's reserved tables.
fn named_table<'a>(action: &AuthAction<'a>) -> Option<&'a str> {
    match *action {
        AuthAction::Read { table_name, .. }
        | AuthAction::Insert { table_name }
        | AuthAction::Update { table_name, .. }
        | AuthAction::Delete { table_name }
        | AuthAction::CreateIndex { table_name, .. }
        | AuthAction::CreateTempIndex { table_name, .. }
        | AuthAction::CreateTrigger { table_name, .. }
        | AuthAction::CreateTempTrigger { table_name, .. }
        | AuthAction::DropTable { table_name }
        | AuthAction::DropTempTable { table_name }
        | AuthAction::DropIndex { table_name, .. }
        | AuthAction::DropTrigger { table_name, .. }
        | AuthAction::AlterTable { table_name, .. } => Some(table_name),
        AuthAction::CreateTable { table_name } | AuthAction::CreateTempTable { table_name } => Some(table_name),
        AuthAction::Pragma { pragma_value: Some(v), .. } => Some(v),
        _ => None,
    }
}

/// The engine's reserved tables are refused to actor SQL whatever the action
/// (`engine`: the engine's own statement runs, see [`Sandbox::engine`]).
pub fn decide_reserved(ctx: &AuthContext<'_>, engine: bool) -> Result<(), Denial> {
    match named_table(&ctx.action) {
        Some(t) if !engine && reserved(t) => {
            deny(format!("{t} is the engine's own table (request keys); an actor's SQL may not touch it"))
        }
        _ => Ok(()),
    }
}

/// The policy: one decision per action SQLite asks about. Allowed only if listed.
pub fn decide(ctx: &AuthContext<'_>, vacuum: bool) -> Result<(), Denial> {
    // ALTER TABLE names its schema in its own arguments (SQLite passes the
    // dropped column's name where other actions pass the schema).
    let schema = match ctx.action {
        AuthAction::AlterTable { database_name, .. } => Some(database_name),
        _ => ctx.database_name,
    };
    if !schema_ok(schema, vacuum) {
        return deny(format!("schema {:?} is not this actor's database", schema.unwrap_or_default()));
    }
    match ctx.action {
        AuthAction::Select
        | AuthAction::Recursive
        | AuthAction::Read { .. }
        | AuthAction::Insert { .. }
        | AuthAction::Update { .. }
        | AuthAction::Delete { .. }
        | AuthAction::Transaction { .. }
        | AuthAction::Savepoint { .. }
        | AuthAction::CreateTable { .. }
        | AuthAction::CreateTempTable { .. }
        | AuthAction::CreateIndex { .. }
        | AuthAction::CreateTempIndex { .. }
        | AuthAction::CreateView { .. }
        | AuthAction::CreateTempView { .. }
        | AuthAction::CreateTrigger { .. }
        | AuthAction::CreateTempTrigger { .. }
        | AuthAction::DropTable { .. }
        | AuthAction::DropTempTable { .. }
        | AuthAction::DropIndex { .. }
        | AuthAction::DropTempIndex { .. }
        | AuthAction::DropView { .. }
        | AuthAction::DropTempView { .. }
        | AuthAction::DropTrigger { .. }
        | AuthAction::DropTempTrigger { .. }
        | AuthAction::DropVtable { .. }
        | AuthAction::AlterTable { .. }
        | AuthAction::Reindex { .. }
        | AuthAction::Analyze { .. } => Ok(()),
        AuthAction::CreateVtable { module_name, .. } => {
            if ALLOWED_MODULES.iter().any(|m| m.eq_ignore_ascii_case(module_name)) {
                Ok(())
            } else {
                deny(format!("virtual table module {module_name:?} is not allowed"))
            }
        }
        AuthAction::Function { function_name } => {
            if function_allowed(function_name) {
                Ok(())
            } else {
                deny(format!("function {function_name}() is not allowed"))
            }
        }
        AuthAction::Pragma { pragma_name, pragma_value } => match (pragma_access(pragma_name), pragma_value) {
            (Some(_), None) | (Some(PragmaAccess::Arg | PragmaAccess::Set), Some(_)) => Ok(()),
            (Some(PragmaAccess::Read), Some(_)) => deny(format!("PRAGMA {pragma_name} may be read but not set")),
            (None, _) => deny(format!("PRAGMA {pragma_name} is not allowed")),
        },
        // Only the private temporary database of a plain VACUUM, and only while one runs.
        AuthAction::Attach { filename: "" } if vacuum => Ok(()),
        AuthAction::Attach { .. } => {
            deny("ATTACH is not allowed: an actor's SQL may only reach its own database".into())
        }
        AuthAction::Detach { .. } => deny("DETACH is not allowed".into()),
        // Includes an ATTACH whose file name SQLite could not tell (NULL) and
        // any action code this build does not know.
        AuthAction::Unknown { code, .. } if code == ffi::SQLITE_ATTACH => {
            deny("ATTACH is not allowed: an actor's SQL may only reach its own database".into())
        }
        AuthAction::Unknown { code, .. } => deny(format!("action {code} is not on the sandbox's allowed list")),
        _ => deny("an action the sandbox does not recognise".into()),
    }
}

/// Process-wide SQLite heap limits. SQLite keeps one value per process, so the
/// engine sets them itself (an actor's PRAGMA may not). 0 leaves a limit off.
pub fn set_heap_limits(soft_bytes: i64, hard_bytes: i64) {
    // SAFETY: plain setters of process-wide integers; callable at any time.
    unsafe {
        ffi::sqlite3_hard_heap_limit64(hard_bytes);
        ffi::sqlite3_soft_heap_limit64(soft_bytes);
    }
}

/// The current process-wide (soft, hard) heap limits.
pub fn heap_limits() -> (i64, i64) {
    // SAFETY: a negative argument only reads the current value.
    unsafe { (ffi::sqlite3_soft_heap_limit64(-1), ffi::sqlite3_hard_heap_limit64(-1)) }
}

fn db_config(conn: &Connection, op: i32, on: bool) -> rusqlite::Result<()> {
    // SAFETY: these db_config verbs take (int, int*); the handle is open for the call.
    let rc = unsafe { ffi::sqlite3_db_config(conn.handle(), op, i32::from(on), std::ptr::null_mut::<i32>()) };
    if rc == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(rusqlite::Error::SqliteFailure(ffi::Error::new(rc), Some(format!("sqlite3_db_config({op}) failed"))))
    }
}

/// Installs the sandbox on a freshly opened connection, before any actor SQL.
/// `local_state`: set when a statement on this connection gives it state of its
/// own (TEMP objects, connection PRAGMAs); passed for an actor's writer.
pub fn install(
    conn: &mut Connection,
    deadline: &Deadline,
    limits: &SandboxLimits,
    local_state: Option<Arc<AtomicBool>>,
) -> rusqlite::Result<Sandbox> {
    limits.apply(conn)?;
    db_config(conn, ffi::SQLITE_DBCONFIG_DEFENSIVE, true)?;
    db_config(conn, ffi::SQLITE_DBCONFIG_TRUSTED_SCHEMA, false)?;
    db_config(conn, ffi::SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION, false)?;
    db_config(conn, ffi::SQLITE_DBCONFIG_ENABLE_FTS3_TOKENIZER, false)?;
    db_config(conn, ffi::SQLITE_DBCONFIG_ENABLE_ATTACH_CREATE, false)?;
    db_config(conn, ffi::SQLITE_DBCONFIG_ENABLE_ATTACH_WRITE, false)?;
    db_config(conn, ffi::SQLITE_DBCONFIG_WRITABLE_SCHEMA, false)?;
    let sandbox = Sandbox { state: Arc::new(SandboxState { local_state, ..SandboxState::default() }) };
    let state = sandbox.state.clone();
    let policy = move |ctx: &AuthContext<'_>, state: &SandboxState| {
        decide_reserved(ctx, state.engine.load(Ordering::Acquire))
            .and_then(|()| decide(ctx, state.vacuum.load(Ordering::Acquire)))
    };
    conn.authorizer(Some(move |ctx: AuthContext<'_>| match policy(&ctx, &state) {
        Ok(()) => {
            if let Some(flag) = &state.local_state {
                if creates_local_state(&ctx.action) {
                    flag.store(true, Ordering::Release);
                }
            }
            Authorization::Allow
        }
        Err(d) => {
            *state.denial.lock() = Some(d);
            state.has_denial.store(true, Ordering::Release);
            Authorization::Deny
        }
    }))?;
    let d = deadline.clone();
    conn.progress_handler(PROGRESS_OPS, Some(move || d.passed()))?;
    watchdog().watch(deadline, conn.get_interrupt_handle());
    Ok(sandbox)
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// What a deadline and the watchdog share.
#[derive(Debug, Default)]
struct DeadlineInner {
    /// Microseconds since the process epoch; 0 = no deadline. Read lock-free by the progress handler.
    at_us: AtomicU64,
    /// Held by the watchdog while it decides and interrupts, and by `disarm`:
    /// once `disarm` returns, no interrupt meant for the finished statement can
    /// land on the next one.
    fire: Mutex<()>,
}

/// The running statement's deadline, shared with the connection's progress handler and the watchdog.
#[derive(Debug, Clone, Default)]
pub struct Deadline {
    /// Shared state (see [`DeadlineInner`]).
    inner: Arc<DeadlineInner>,
}

impl Deadline {
    /// Arms the deadline `ms` from now (0 disarms).
    pub fn arm(&self, ms: u32) {
        let v = if ms == 0 { 0 } else { epoch().elapsed().as_micros() as u64 + u64::from(ms) * 1000 + 1 };
        self.inner.at_us.store(v, Ordering::Relaxed);
    }

    /// Disarms it; after this returns the watchdog no longer interrupts for it.
    pub fn disarm(&self) {
        let _fire = self.inner.fire.lock();
        self.inner.at_us.store(0, Ordering::Relaxed);
    }

    /// Whether an armed deadline has passed.
    pub fn passed(&self) -> bool {
        let at = self.inner.at_us.load(Ordering::Relaxed);
        at != 0 && epoch().elapsed().as_micros() as u64 >= at
    }
}

/// One watched connection.
struct Watched {
    /// The connection's deadline (weak: a closed connection drops out).
    deadline: Weak<DeadlineInner>,
    /// Interrupts the connection; harmless after it closed.
    interrupt: InterruptHandle,
}

/// Interrupts connections whose armed deadline passed, including during a
/// prepare, where SQLite never calls the progress handler.
pub struct Watchdog {
    /// Every connection that has a deadline; pruned as connections close.
    watched: Mutex<Vec<Watched>>,
}

/// The process's watchdog (its thread starts on first use).
pub fn watchdog() -> &'static Watchdog {
    static DOG: OnceLock<Watchdog> = OnceLock::new();
    static STARTED: AtomicBool = AtomicBool::new(false);
    let dog = DOG.get_or_init(|| Watchdog { watched: Mutex::new(Vec::new()) });
    if !STARTED.swap(true, Ordering::AcqRel) {
        let spawned = std::thread::Builder::new().name("sql-watchdog".into()).spawn(|| loop {
            std::thread::sleep(WATCHDOG_TICK);
            watchdog().tick();
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the SQL watchdog; prepares are not bounded by the deadline");
        }
    }
    dog
}

impl Watchdog {
    fn watch(&self, deadline: &Deadline, interrupt: InterruptHandle) {
        self.watched.lock().push(Watched { deadline: Arc::downgrade(&deadline.inner), interrupt });
    }

    fn tick(&self) {
        let now = epoch().elapsed().as_micros() as u64;
        let mut watched = self.watched.lock();
        watched.retain(|w| {
            let Some(d) = w.deadline.upgrade() else { return false };
            let at = d.at_us.load(Ordering::Relaxed);
            if at != 0 && now >= at {
                // A statement finishing right now holds `fire` in disarm: skip it this tick.
                if let Some(_fire) = d.fire.try_lock() {
                    if d.at_us.load(Ordering::Relaxed) == at {
                        w.interrupt.interrupt();
                    }
                }
            }
            true
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> (Connection, Sandbox, Deadline) {
        let mut conn = Connection::open_in_memory().unwrap();
        let d = Deadline::default();
        let limits = SandboxLimits::from_limits(&crate::config::Limits::default());
        let s = install(&mut conn, &d, &limits, None).unwrap();
        (conn, s, d)
    }

    /// Every function the linked SQLite has is either allowed or refused with a
    /// reason: a SQLite upgrade that adds one fails here until it is reviewed.
    #[test]
    fn every_function_is_reviewed() {
        let conn = Connection::open_in_memory().unwrap();
        let mut stmt = conn.prepare("SELECT DISTINCT name FROM pragma_function_list ORDER BY name").unwrap();
        let names: Vec<String> = stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
        assert!(names.len() > 50, "{names:?}");
        let unreviewed: Vec<&String> = names
            .iter()
            .filter(|n| !function_allowed(n) && !DENIED_FUNCTIONS.iter().any(|(d, _)| d.eq_ignore_ascii_case(n)))
            .collect();
        assert!(unreviewed.is_empty(), "functions on neither list: {unreviewed:?}");
    }

    #[test]
    fn denies_by_default() {
        let (conn, s, _) = open();
        for sql in [
            "ATTACH 'x.db' AS x",
            "ATTACH '/tmp/' || 'x.db' AS x",
            "ATTACH '' AS x",
            "DETACH main",
            "SELECT load_extension('x')",
            "SELECT fts3_tokenizer('simple')",
            "PRAGMA hard_heap_limit = 65536",
            "PRAGMA soft_heap_limit = 65536",
            "PRAGMA writable_schema = ON",
            "PRAGMA trusted_schema = ON",
            "PRAGMA database_list",
            "SELECT * FROM pragma_database_list",
            "PRAGMA journal_mode = DELETE",
            "PRAGMA synchronous = OFF",
            "PRAGMA cache_size = -1000000",
            "CREATE VIRTUAL TABLE d USING dbstat",
        ] {
            let e = conn.execute_batch(sql).unwrap_err();
            assert!(e.to_string().contains("not authorized") || e.to_string().contains("prohibited"), "{sql}: {e}");
            assert!(s.take_denial().is_some(), "{sql}: no recorded reason");
        }
        // Bound arguments get no further.
        let e = conn.query_row("ATTACH ?1 AS m", ["/tmp/x.db"], |_| Ok(())).unwrap_err();
        assert!(e.to_string().contains("not authorized"), "{e}");
        let e = conn.query_row("SELECT fts3_tokenizer(?1)", ["simple"], |_| Ok(())).unwrap_err();
        assert!(e.to_string().contains("not authorized"), "{e}");
    }

    #[test]
    fn allows_legitimate_sql() {
        let (conn, s, _) = open();
        conn.execute_batch(
            "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, j TEXT, g INT GENERATED ALWAYS AS (id * 2)) STRICT;
             INSERT INTO t(v, j) VALUES ('a', '{\"k\":1}'), ('b', '[1,2]') ON CONFLICT DO NOTHING;
             CREATE INDEX ti ON t(v);
             CREATE VIEW tv AS SELECT v, json_extract(j, '$.k') AS k FROM t;
             CREATE TEMP TABLE tt(x); INSERT INTO tt VALUES (1);
             CREATE TEMP VIEW ttv AS SELECT x FROM tt;
             CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE t SET v = upper(new.v) WHERE id = new.id; END;
             SAVEPOINT s1; INSERT INTO t(v) VALUES ('c'); RELEASE s1;
             CREATE VIRTUAL TABLE f USING fts5(body);
             INSERT INTO f VALUES ('hello world');
             CREATE VIRTUAL TABLE r USING rtree(id, x0, x1);
             INSERT INTO r VALUES (1, 0, 10);
             ALTER TABLE t ADD COLUMN w INTEGER;
             ALTER TABLE t RENAME COLUMN w TO w2;
             ALTER TABLE t DROP COLUMN w2;
             ANALYZE; PRAGMA optimize; PRAGMA user_version = 3; PRAGMA foreign_keys = ON;
             PRAGMA integrity_check; PRAGMA table_info(t);
             REINDEX;",
        )
        .unwrap_or_else(|e| panic!("{e}: {:?}", s.take_denial()));
        let n: i64 = conn
            .query_row(
                "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 10)
                 SELECT sum(x) OVER () + (SELECT count(*) FROM f WHERE f MATCH 'hello') FROM c LIMIT 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 56);
        let h: String =
            conn.query_row("SELECT highlight(f, 0, '[', ']') FROM f WHERE f MATCH 'hello'", [], |r| r.get(0)).unwrap();
        assert_eq!(h, "[hello] world");
        let k: i64 = conn.query_row("SELECT j ->> '$.k' FROM t WHERE id = 1", [], |r| r.get(0)).unwrap();
        assert_eq!(k, 1);
        let cols: i64 = conn.query_row("SELECT count(*) FROM pragma_table_info('t')", [], |r| r.get(0)).unwrap();
        assert_eq!(cols, 3, "a generated column is hidden from table_info");
        // The external-content pattern: triggers keep an FTS5 index in sync.
        conn.execute_batch(
            "CREATE TABLE doc(id INTEGER PRIMARY KEY, body TEXT);
             CREATE VIRTUAL TABLE doc_fts USING fts5(body, content='doc', content_rowid='id');
             CREATE TRIGGER doc_ai AFTER INSERT ON doc BEGIN
               INSERT INTO doc_fts(rowid, body) VALUES (new.id, new.body);
             END;
             INSERT INTO doc(body) VALUES ('crawler found jobs');",
        )
        .unwrap_or_else(|e| panic!("{e}: {:?}", s.take_denial()));
        let hits: i64 =
            conn.query_row("SELECT count(*) FROM doc_fts WHERE doc_fts MATCH 'jobs'", [], |r| r.get(0)).unwrap();
        assert_eq!(hits, 1);
        // The one documented cost of trusted_schema=OFF: FTS5 is not marked
        // innocuous, so MATCH on it inside a view is refused by SQLite itself.
        conn.execute_batch("CREATE VIEW doc_hits AS SELECT rowid FROM doc_fts WHERE doc_fts MATCH 'jobs'").unwrap();
        let e = conn.query_row("SELECT count(*) FROM doc_hits", [], |r| r.get::<_, i64>(0)).unwrap_err();
        assert!(e.to_string().contains("unsafe use"), "{e}");
        // Plain VACUUM through its one door; VACUUM INTO stays shut.
        s.vacuum(&conn, true, || conn.execute_batch("VACUUM")).unwrap_or_else(|e| panic!("{e}: {:?}", s.take_denial()));
        let dir = tempfile_dir();
        let into = format!("VACUUM INTO '{}'", dir.join("copy.db").display());
        assert!(s.vacuum(&conn, true, || conn.execute_batch(&into)).is_err());
        assert!(!dir.join("copy.db").exists());
        // After VACUUM the door is closed again.
        assert!(conn.execute_batch("ATTACH '' AS x").is_err());
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("envoy-sandbox-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn limits_stop_huge_values_before_they_are_built() {
        let (conn, _, _) = open();
        let e = conn.query_row("SELECT randomblob(400000000)", [], |_| Ok(())).unwrap_err();
        assert!(e.to_string().contains("too big"), "{e}");
        let e = conn.query_row("SELECT printf('%.*c', 900000000, 'x')", [], |_| Ok(())).unwrap_err();
        assert!(e.to_string().contains("too big"), "{e}");
    }

    /// SQLite calls no progress handler while it parses and plans: only the
    /// watchdog stops a prepare that expands a 2^14 view tree.
    #[test]
    fn watchdog_interrupts_a_long_prepare() {
        let (conn, _, d) = open();
        let mut ddl = String::from("CREATE TABLE t(x); CREATE VIEW v0 AS SELECT x FROM t;");
        for n in 1..=14 {
            ddl.push_str(&format!("CREATE VIEW v{n} AS SELECT x FROM v{p} UNION ALL SELECT x FROM v{p};", p = n - 1));
        }
        conn.execute_batch(&ddl).unwrap();
        d.arm(100);
        let t = Instant::now();
        let e = conn.prepare("SELECT count(*) FROM v14").map(|_| ()).unwrap_err();
        d.disarm();
        assert!(e.to_string().contains("interrupt"), "{e}");
        println!("prepare interrupted after {:?}", t.elapsed());
        let one: i64 = conn.query_row("SELECT 1", [], |r| r.get(0)).unwrap();
        assert_eq!(one, 1);
    }

    #[test]
    fn watchdog_interrupts_a_long_statement() {
        let (conn, _, d) = open();
        d.arm(50);
        let t = Instant::now();
        let e = conn
            .query_row(
                "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
                [],
                |r| r.get::<_, i64>(0),
            )
            .unwrap_err();
        d.disarm();
        assert!(e.to_string().contains("interrupt"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(10));
        // The next statement is not hit by a stale interrupt.
        let one: i64 = conn.query_row("SELECT 1", [], |r| r.get(0)).unwrap();
        assert_eq!(one, 1);
    }
}
