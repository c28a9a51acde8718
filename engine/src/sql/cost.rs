//! What a v5 SQL request cost the engine: `SqlCost { rowsRead, rowsWritten, durationUs }`.
//!
//! One way to measure, used by every v5 answer:
//!
//! - **The clock** ([`CostClock`]) starts when the request is admitted (after
//!   placement, fence and limit checks, before it is queued) and is read when the
//!   answer is built — for a group-commit member, again after its group committed,
//!   so `durationUs` includes the wait for its lane, the statements and the commit.
//! - **Rows** are counted while the request's statements run, on the thread that
//!   runs them: wrap the run in [`measure`]; the executor reports each statement it
//!   steps through [`note_statement`] (an actor statement only, never the engine's
//!   own control statements or request-key bookkeeping). `run_execute` and
//!   `exec_statements` already do; code that steps an actor statement itself (a
//!   result stream) calls [`before_statement`] before its first step and
//!   [`note_statement`] after its last, inside its own [`measure`].
//!
//! Usage: `let clock = CostClock::start();` after admission (kept with the
//! request), `let (r, rows) = cost::measure(|| run(...));` around the run, and
//! `clock.cost(rows)` when the answer is built.
//!
//! What is counted, per actor statement:
//!
//! - `rowsRead` = the larger of the rows the statement's full table scans
//!   visited and the rows it returned. Scanned rows come from SQLite's counter
//!   `sqlite3_stmt_status(SQLITE_STMTSTATUS_FULLSCAN_STEP)`, which counts the steps
//!   *from* one row to the next, so a scan that stepped n > 0 times visited n + 1
//!   rows (counted so; a nested scan's other starts are not added). Rows reached through an index
//!   lookup are only counted when returned, so this is **at least the rows
//!   returned** and a lower bound of the rows SQLite visited. The larger, not the
//!   sum, so a full scan that returns every row is not counted twice.
//! - `rowsWritten` = the growth of the connection's `sqlite3_total_changes()`
//!   across the statement: rows inserted, updated or deleted, **including** those of
//!   triggers and of foreign-key actions (SQLite runs those as trigger programs).
//!   Not counted, because SQLite does not count them either: rows removed by
//!   `REPLACE` conflict resolution, by `DROP TABLE`, and schema changes. A
//!   statement that fails after writing counts what it wrote before its rollback
//!   (work the engine did).
//! - A request whose answer is a replay ([`crate::sql::keys`]) ran no actor
//!   statement: its rows are 0 and its duration that of the lookup.

use rusqlite::{Connection, Statement, StatementStatus};
use std::cell::Cell;
use std::time::Instant;

/// When a request started in the engine (at admission). Travels with the
/// request so every answer of it reports the same start.
#[derive(Debug, Clone, Copy)]
pub struct CostClock {
    /// The instant the request was admitted.
    started: Instant,
}

impl CostClock {
    /// Starts the clock now (call right after admission).
    pub fn start() -> Self {
        Self { started: Instant::now() }
    }

    /// Microseconds since admission.
    pub fn elapsed_us(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// The request's cost now: `rows` and the time since admission.
    pub fn cost(&self, rows: Rows) -> envoy_protocol::SqlCost {
        envoy_protocol::SqlCost { rows_read: rows.read, rows_written: rows.written, duration_us: self.elapsed_us() }
    }
}

/// Rows counted for a request (see the module doc for exactly what).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rows {
    /// Rows read: per statement, max(full-scan steps, rows returned), summed.
    pub read: u64,
    /// Rows written, including by triggers and foreign-key actions.
    pub written: u64,
}

impl Rows {
    /// Adds another measurement (several runs of one request, e.g. a batch).
    pub fn add(&mut self, other: Rows) {
        self.read = self.read.saturating_add(other.read);
        self.written = self.written.saturating_add(other.written);
    }
}

thread_local! {
    /// The rows counted by the innermost [`measure`] running on this thread;
    /// None outside of one (statements then count nowhere).
    static CURRENT: Cell<Option<Rows>> = const { Cell::new(None) };
}

/// Runs `f`, returning what it returned and the rows its actor statements
/// read and wrote (reported by the executor through [`note_statement`]).
/// Nested calls each see only their own statements; the outer one gets the
/// inner's rows too.
pub fn measure<T>(f: impl FnOnce() -> T) -> (T, Rows) {
    let outer = CURRENT.with(|c| c.replace(Some(Rows::default())));
    let out = f();
    let mine = CURRENT.with(|c| c.replace(outer)).unwrap_or_default();
    if let Some(mut o) = outer {
        o.add(mine);
        CURRENT.with(|c| c.set(Some(o)));
    }
    (out, mine)
}

/// Resets `stmt`'s full-scan counter before it runs (a cached statement keeps
/// its counters across runs). Returns the connection's change total now, to
/// hand to [`note_statement`] after the statement ran.
pub fn before_statement(conn: &Connection, stmt: &Statement<'_>) -> u64 {
    stmt.reset_status(StatementStatus::FullscanStep);
    conn.total_changes()
}

/// Reports one actor statement that ran on `conn` (after it stepped to its end
/// or failed): `changes_before` from [`before_statement`], `returned` the rows it
/// returned. Counts into the running [`measure`], if any.
pub fn note_statement(conn: &Connection, stmt: &Statement<'_>, changes_before: u64, returned: u64) {
    let steps = u64::try_from(stmt.reset_status(StatementStatus::FullscanStep)).unwrap_or(0);
    // n steps between rows: n + 1 rows visited (none when it never stepped).
    let scanned = if steps > 0 { steps + 1 } else { 0 };
    let written = conn.total_changes().saturating_sub(changes_before);
    add_current(Rows { read: scanned.max(returned), written });
}

/// Adds rows to the running [`measure`], if any.
fn add_current(rows: Rows) {
    CURRENT.with(|c| {
        if let Some(mut r) = c.get() {
            r.add(rows);
            c.set(Some(r));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(conn: &Connection, sql: &str) -> u64 {
        let mut stmt = conn.prepare(sql).unwrap();
        let before = before_statement(conn, &stmt);
        let mut n = 0;
        {
            let mut rows = stmt.raw_query();
            while rows.next().unwrap().is_some() {
                n += 1;
            }
        }
        note_statement(conn, &stmt, before, n);
        n
    }

    #[test]
    fn full_scans_index_lookups_and_triggers_are_counted_as_documented() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE t(id INTEGER PRIMARY KEY, v); CREATE TABLE log(x);
             CREATE TRIGGER tr AFTER INSERT ON t BEGIN INSERT INTO log VALUES (new.v); END;",
        )
        .unwrap();
        // One row inserted by the statement and one by its trigger.
        let ((), rows) = measure(|| {
            run(&conn, "INSERT INTO t(v) VALUES (1)");
        });
        assert_eq!(rows, Rows { read: 0, written: 2 });
        for i in 2..=10 {
            conn.execute("INSERT INTO t(v) VALUES (?1)", [i]).unwrap();
        }
        // A full scan that returns one row read all ten.
        let (n, rows) = measure(|| run(&conn, "SELECT v FROM t WHERE v = 5"));
        assert_eq!(n, 1);
        assert_eq!(rows.read, 10, "{rows:?}");
        assert_eq!(rows.written, 0);
        // An index (rowid) lookup: at least the row returned.
        let (_, rows) = measure(|| run(&conn, "SELECT v FROM t WHERE id = 5"));
        assert_eq!(rows.read, 1);
        // A full scan returning every row is not counted twice.
        let (n, rows) = measure(|| run(&conn, "SELECT v FROM t"));
        assert_eq!(n, 10);
        assert_eq!(rows.read, 10);
        // Outside measure nothing is counted, and nesting adds inner to outer.
        run(&conn, "SELECT v FROM t");
        let ((_, inner), outer) = measure(|| {
            run(&conn, "SELECT v FROM t WHERE id = 1");
            measure(|| run(&conn, "SELECT v FROM t WHERE id = 2"))
        });
        assert_eq!(inner.read, 1);
        assert_eq!(outer.read, 2);
    }
}
