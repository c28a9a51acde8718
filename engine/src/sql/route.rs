//! Which connection a statement runs on.
//!
//! `ExecuteWrite` and `Exec` always use the writer. An `Execute` is first
//! classified by its leading keyword: only `SELECT`, `VALUES`, `WITH` and
//! `EXPLAIN` are read candidates; everything else (transaction control,
//! savepoints, DDL, DML, PRAGMA) goes to the writer. A read candidate runs on a
//! reader only if no transaction is open on the writer and SQLite confirms the
//! prepared statement is read-only (`sqlite3_stmt_readonly`); otherwise it is
//! handed to the writer (a `WITH ... INSERT` is caught this way).

/// Where a request is queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// The actor's single writer connection (serial).
    Writer,
    /// One of the actor's reader connections.
    Reader,
}

/// The first SQL keyword (as written), skipping whitespace and comments. No allocation: this runs per request.
pub fn first_keyword(sql: &str) -> &str {
    let b = sql.as_bytes();
    let mut i = 0;
    loop {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if b[i..].starts_with(b"--") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            match sql[i + 2..].find("*/") {
                Some(end) => i += 2 + end + 2,
                None => return "",
            }
        } else {
            break;
        }
    }
    let start = i;
    while i < b.len() && b[i].is_ascii_alphabetic() {
        i += 1;
    }
    &sql[start..i]
}

/// Whether the first keyword is one of `words` (upper-case), ignoring case.
pub fn first_keyword_is(sql: &str, words: &[&str]) -> bool {
    let k = first_keyword(sql);
    words.iter().any(|w| w.eq_ignore_ascii_case(k))
}

/// Whether an `Execute` may be tried on a reader.
pub fn is_read_candidate(sql: &str) -> bool {
    first_keyword_is(sql, &["SELECT", "VALUES", "WITH", "EXPLAIN"])
}

/// Transaction control: read-only by `sqlite3_stmt_readonly` yet must run on the writer.
pub fn is_transaction_control(sql: &str) -> bool {
    first_keyword_is(sql, &["BEGIN", "COMMIT", "END", "ROLLBACK", "SAVEPOINT", "RELEASE"])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords() {
        assert_eq!(first_keyword("  -- hi\n /* x */ select 1"), "select");
        assert!(is_read_candidate("WITH t AS (SELECT 1) SELECT * FROM t"));
        assert!(!is_read_candidate("insert into t values (1)"));
        assert!(!is_read_candidate("PRAGMA table_info(t)"));
        assert!(is_transaction_control("begin immediate"));
        assert!(is_transaction_control("Savepoint a"));
        assert_eq!(first_keyword("/* unterminated"), "");
        assert_eq!(first_keyword(""), "");
    }
}
