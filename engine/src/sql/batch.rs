//! Atomic batches (protocol §9.4): what a batch is once admitted, and the
//! checks every batch passes before any work.
//!
//! A batch runs its statements in order in one transaction, all or nothing:
//! - `READ` runs on a reader connection in one snapshot (or, when the actor's
//!   reads must use the writer, inside a savepoint on it that is rolled back);
//!   a statement that would write fails with `SQLITE`/`SQLITE_READONLY` (8);
//! - `WRITE` runs on the writer as one group-commit member in its own savepoint
//!   (`sql::group`): a failing statement rolls the whole batch back and only it;
//! - `DEFERRED` runs as `READ` when every statement is a read candidate (the
//!   routing rule of Execute), else as `WRITE`; a read candidate that turns out
//!   to write on the reader moves the whole batch to the writer (nothing ran).
//! - A keyed batch runs on the writer whatever its mode (its key is looked up
//!   and recorded there, see `sql::keys`): READ still may not write, DEFERRED
//!   may (it holds the writer already).
//!
//! Statements that manage transactions (`BEGIN`, `COMMIT`, `ROLLBACK`,
//! `SAVEPOINT`, `RELEASE`, `END`) or `VACUUM` cannot run inside the batch's
//! transaction: they are refused at admission (`INVALID_REQUEST` with their index).

use super::route::{Kind, Lane, Route};
use crate::config::Limits;
use crate::connection::admission::{check_sql, Rejection};
use envoy_protocol::{LimitKind, SqliteError, SqliteErrorCode, SqliteStatement, SqliteTransactionMode, Value};

/// One admitted statement of a batch.
#[derive(Debug, Clone)]
pub struct BatchStatement {
    /// Its SQL (exactly one statement, found at admission).
    pub sql: String,
    /// Its positional parameters.
    pub params: Vec<Value>,
    /// Its route as an Execute (its kind and where the statement lies in `sql`).
    pub route: Route,
}

/// An admitted batch.
#[derive(Debug, Clone)]
pub struct BatchReq {
    /// The statements, in request order.
    pub statements: Vec<BatchStatement>,
    /// Runs as READ (a reader snapshot; writes fail) rather than WRITE.
    pub read: bool,
    /// Sent as DEFERRED: a READ run whose statement turns out to write moves to the writer as WRITE.
    pub deferred: bool,
}

impl BatchReq {
    /// The lane it queues on: a read-only batch on a reader, keyed or not (it commits
    /// nothing, so its key is never recorded; a DEFERRED one that turns out to write
    /// moves to the writer with its key).
    pub fn lane(&self) -> Lane {
        if self.read {
            Lane::Reader
        } else {
            Lane::Writer
        }
    }
}

/// Checks a batch before any work: its size (`maxBatchStatements`, LIMIT_EXCEEDED
/// BATCH_STATEMENTS), then every statement as an Execute (SQL bytes, params, value
/// bytes, exactly one statement) and not one that manages transactions. A
/// statement's refusal carries its `statementIndex`.
pub fn admit(
    statements: Vec<SqliteStatement>,
    mode: SqliteTransactionMode,
    limits: &Limits,
    max_statements: u32,
) -> Result<BatchReq, SqliteError> {
    if statements.len() > max_statements as usize {
        return Err(crate::sql::executor::limit_error(
            LimitKind::BatchStatements,
            u64::from(max_statements),
            Some(statements.len() as u64),
        ));
    }
    let mut out = Vec::with_capacity(statements.len());
    for (i, s) in statements.into_iter().enumerate() {
        let at = |mut e: SqliteError| {
            e.statement_index = Some(i as u32);
            e
        };
        let params = s.params.unwrap_or_default();
        let invalid = |m: &str| at(crate::sql::executor::err(SqliteErrorCode::InvalidRequest, m, Some(false)));
        check_sql(limits, &s.sql, &params).map_err(|r: Rejection| match r.to_sqlite() {
            Ok(_) => invalid("refused"),
            Err(e) => at(e),
        })?;
        let route = Route::of_execute(&s.sql, false).map_err(&invalid)?;
        if matches!(route.kind, Kind::Transaction | Kind::Vacuum) {
            return Err(invalid(
                "a batch runs in one transaction of its mode: its statements may not manage transactions or VACUUM",
            ));
        }
        out.push(BatchStatement { sql: s.sql, params, route });
    }
    let all_reads = out.iter().all(|s| s.route.lane == Lane::Reader);
    let (read, deferred) = match mode {
        SqliteTransactionMode::Read => (true, false),
        SqliteTransactionMode::Write => (false, false),
        SqliteTransactionMode::Deferred => (all_reads, true),
    };
    Ok(BatchReq { statements: out, read, deferred })
}

/// The READ-mode refusal of a statement that writes.
pub fn readonly_error(index: usize) -> SqliteError {
    let mut e = crate::sql::executor::err(
        SqliteErrorCode::Sqlite,
        "attempt to write a readonly database: a READ batch may not write",
        Some(false),
    );
    e.extended_code = Some(8);
    e.statement_index = Some(index as u32);
    e
}
