//! Keeps an actor's SQL inside its own database file.
//!
//! Installed on every connection an executor opens:
//! - an authorizer ([`authorize`]) that denies ATTACH, DETACH, `load_extension`
//!   and the pragmas that would change the engine's storage contract; a denial
//!   fails the prepare with SQLITE_AUTH, reported as FORBIDDEN;
//! - `SQLITE_LIMIT_ATTACHED = 1` as a second wall: at most one extra database,
//!   which the authorizer only allows as a private temporary one (empty file
//!   name), as plain VACUUM needs;
//! - a progress handler that interrupts a statement past its deadline
//!   ([`Deadline`]), reported as TIMEOUT.
//!
//! Fuller sandboxing (per-actor memory/CPU budgets, more denied functions)
//! plugs in here: extend [`authorize`] or the progress handler.

use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::limits::Limit;
use rusqlite::Connection;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// VM instructions between progress-handler calls: frequent enough for ms deadlines, cheap enough not to show.
pub const PROGRESS_OPS: i32 = 10_000;

/// Pragmas an actor may not run: they change durability, locking or file
/// placement the engine relies on (WAL, synchronous=NORMAL, its own files).
pub const DENIED_PRAGMAS: &[&str] = &[
    "journal_mode",
    "locking_mode",
    "synchronous",
    "temp_store_directory",
    "data_store_directory",
    "mmap_size",
];

/// Databases that may be attached at once: one, for VACUUM's private temporary database.
pub const MAX_ATTACHED: i32 = 1;

/// Functions an actor may not call.
pub const DENIED_FUNCTIONS: &[&str] = &["load_extension"];

/// The sandbox policy, one decision per action SQLite asks about.
pub fn authorize(ctx: AuthContext<'_>) -> Authorization {
    match ctx.action {
        // An empty file name is a private temporary database: plain VACUUM attaches one
        // internally (VACUUM INTO names a file, and is denied like any ATTACH of a file).
        AuthAction::Attach { filename: "" } => Authorization::Allow,
        AuthAction::Attach { .. } | AuthAction::Detach { .. } => Authorization::Deny,
        AuthAction::Function { function_name } => {
            if DENIED_FUNCTIONS.iter().any(|f| f.eq_ignore_ascii_case(function_name)) {
                Authorization::Deny
            } else {
                Authorization::Allow
            }
        }
        AuthAction::Pragma { pragma_name, .. } => {
            if DENIED_PRAGMAS.iter().any(|p| p.eq_ignore_ascii_case(pragma_name)) {
                Authorization::Deny
            } else {
                Authorization::Allow
            }
        }
        _ => Authorization::Allow,
    }
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// The running statement's deadline, shared with the connection's progress handler.
#[derive(Debug, Clone, Default)]
pub struct Deadline {
    /// Microseconds since the process epoch; 0 = no deadline.
    at_us: Arc<AtomicU64>,
}

impl Deadline {
    /// Arms the deadline `ms` from now (0 disarms).
    pub fn arm(&self, ms: u32) {
        let v = if ms == 0 { 0 } else { epoch().elapsed().as_micros() as u64 + u64::from(ms) * 1000 + 1 };
        self.at_us.store(v, Ordering::Relaxed);
    }

    pub fn disarm(&self) {
        self.at_us.store(0, Ordering::Relaxed);
    }

    /// Whether an armed deadline has passed.
    pub fn passed(&self) -> bool {
        let at = self.at_us.load(Ordering::Relaxed);
        at != 0 && epoch().elapsed().as_micros() as u64 >= at
    }
}

/// Installs the sandbox on a freshly opened connection.
pub fn install(conn: &mut Connection, deadline: &Deadline) -> rusqlite::Result<()> {
    conn.set_limit(Limit::SQLITE_LIMIT_ATTACHED, MAX_ATTACHED)?;
    conn.authorizer(Some(authorize))?;
    let d = deadline.clone();
    conn.progress_handler(PROGRESS_OPS, Some(move || d.passed()))?;
    Ok(())
}
