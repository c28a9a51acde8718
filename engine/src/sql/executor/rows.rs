//! Copying rows into wire values with size accounting, and SQLite errors as the protocol's typed errors.

use super::*;

pub(super) enum RowsError {
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
pub(super) fn collect_rows(
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
pub(super) fn not_utf8(columns: &[String], i: usize) -> SqliteError {
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
pub(super) fn transaction_left_open(committed_alone: Option<u32>) -> SqliteError {
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
pub(super) fn map_error(e: rusqlite::Error, deadline: Option<&Deadline>, exec: Option<&Executor>) -> SqliteError {
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
            // Only the engine's commit guard installs a commit hook (cluster mode): this
            // node lost its lease between admission and commit, and nothing was committed.
            if fe.extended_code == ffi::SQLITE_CONSTRAINT_COMMITHOOK {
                let mut e = err(
                    SqliteErrorCode::ActorUnavailable,
                    "this node lost its cluster lease before the commit; nothing was committed",
                    Some(false),
                );
                e.extended_code = Some(fe.extended_code);
                return e;
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
