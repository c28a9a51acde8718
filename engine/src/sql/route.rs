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

/// The first SQL keyword (as written), skipping whitespace, comments and empty
/// statements (`;`), as SQLite does. No allocation: this runs per request.
pub fn first_keyword(sql: &str) -> &str {
    let b = sql.as_bytes();
    let mut i = 0;
    loop {
        while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b';') {
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

/// A token as statement splitting sees it (the classes `sqlite3_complete` uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Semi,
    Space,
    Other,
    Explain,
    Create,
    Temp,
    Trigger,
    End,
}

/// Where a statement scan is: a `;` ends a statement except inside the
/// BEGIN ... END body of a CREATE TRIGGER, which only `; END ;` closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Split {
    /// Nothing but space and `;` since the last statement ended.
    Start,
    /// Inside an ordinary statement.
    Normal,
    /// After a leading EXPLAIN.
    Explain,
    /// After a leading CREATE (maybe TEMP): a TRIGGER next starts a body.
    Create,
    /// Inside a CREATE TRIGGER statement.
    Trigger,
    /// Inside a trigger, right after a `;`.
    TriggerSemi,
    /// Inside a trigger, after `; END`: the next `;` ends the statement.
    TriggerEnd,
}

/// Classifies the token at `i`; returns it and where the next one starts.
/// `None` when a string, quoted name or comment is not terminated.
fn next_token(b: &[u8], i: usize) -> Option<(Tok, usize)> {
    let c = b[i];
    let scan_to = |close: u8, from: usize| -> Option<usize> {
        let mut j = from;
        while j < b.len() {
            if b[j] == close {
                // A doubled quote inside '...' / "..." / `...` is an escaped quote.
                if close != b']' && b.get(j + 1) == Some(&close) {
                    j += 2;
                    continue;
                }
                return Some(j + 1);
            }
            j += 1;
        }
        None
    };
    Some(match c {
        b';' => (Tok::Semi, i + 1),
        b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' => (Tok::Space, i + 1),
        b'-' if b.get(i + 1) == Some(&b'-') => {
            let end = b[i..].iter().position(|&x| x == b'\n').map_or(b.len(), |p| i + p + 1);
            (Tok::Space, end)
        }
        b'/' if b.get(i + 1) == Some(&b'*') => {
            let end = b[i + 2..].windows(2).position(|w| w == b"*/")?;
            (Tok::Space, i + 2 + end + 2)
        }
        b'\'' | b'"' | b'`' => (Tok::Other, scan_to(c, i + 1)?),
        b'[' => (Tok::Other, scan_to(b']', i + 1)?),
        c if c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80 => {
            let mut j = i;
            while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_' || b[j] == b'$' || b[j] >= 0x80) {
                j += 1;
            }
            let w = &b[i..j];
            let is = |k: &str| w.eq_ignore_ascii_case(k.as_bytes());
            let t = if is("EXPLAIN") {
                Tok::Explain
            } else if is("CREATE") {
                Tok::Create
            } else if is("TEMP") || is("TEMPORARY") {
                Tok::Temp
            } else if is("TRIGGER") {
                Tok::Trigger
            } else if is("END") {
                Tok::End
            } else {
                Tok::Other
            };
            (t, j)
        }
        _ => (Tok::Other, i + 1),
    })
}

fn step(s: Split, t: Tok) -> Split {
    use Split::*;
    match (s, t) {
        (Start | Normal | Explain | Create, Tok::Semi) => Start,
        (Start, Tok::Space) => Start,
        (Start, Tok::Explain) => Explain,
        (Start | Explain, Tok::Create) => Create,
        (Start, Tok::Other | Tok::Temp | Tok::Trigger | Tok::End) => Normal,
        (Normal, _) => Normal,
        (Explain, Tok::Space | Tok::Other) => Explain,
        (Explain, Tok::Explain | Tok::Temp | Tok::Trigger | Tok::End) => Normal,
        (Create, Tok::Space | Tok::Temp) => Create,
        (Create, Tok::Trigger) => Trigger,
        (Create, Tok::Other | Tok::Explain | Tok::Create | Tok::End) => Normal,
        (Trigger | TriggerSemi | TriggerEnd, Tok::Space) => s,
        (Trigger, Tok::Semi) | (TriggerSemi, Tok::Semi) => TriggerSemi,
        (Trigger, _) => Trigger,
        (TriggerSemi, Tok::End) => TriggerEnd,
        (TriggerSemi, _) => Trigger,
        (TriggerEnd, Tok::Semi) => Start,
        (TriggerEnd, _) => Trigger,
    }
}

/// Splits SQL text into statements the way `sqlite3_complete` sees them: a
/// `;` outside strings, quoted names, comments and trigger bodies ends one.
/// Empty statements (only space, comments and `;`) are skipped, as SQLite
/// skips them. Text left unterminated (an open string or comment) is returned
/// as a last statement for SQLite to reject with its own message.
pub fn statements(sql: &str) -> Statements<'_> {
    Statements { sql, pos: 0 }
}

/// Iterator of [`statements`].
pub struct Statements<'a> {
    /// The whole text.
    sql: &'a str,
    /// Where the next statement's scan starts.
    pos: usize,
}

impl<'a> Iterator for Statements<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let b = self.sql.as_bytes();
        let mut state = Split::Start;
        let mut start = None;
        let mut i = self.pos;
        while i < b.len() {
            let Some((t, next)) = next_token(b, i) else {
                // Unterminated: the rest is one (incomplete) statement.
                self.pos = b.len();
                return Some(&self.sql[start.unwrap_or(i)..]);
            };
            let after = step(state, t);
            if state == Split::Start && after != Split::Start {
                start = Some(i);
            }
            state = after;
            i = next;
            if state == Split::Start {
                if let Some(s) = start {
                    self.pos = i;
                    return Some(&self.sql[s..i]);
                }
            }
        }
        self.pos = b.len();
        start.map(|s| &self.sql[s..])
    }
}

/// Whether `sql` holds at least one statement and ends at a top-level `;`
/// (outside strings, quoted names, comments and trigger bodies): what
/// `sqlite3_complete` answers, so an interactive shell knows when to run.
pub fn is_complete(sql: &str) -> bool {
    let b = sql.as_bytes();
    let (mut state, mut i, mut any) = (Split::Start, 0, false);
    while i < b.len() {
        let Some((t, next)) = next_token(b, i) else { return false };
        let after = step(state, t);
        if state == Split::Start && after != Split::Start {
            any = true;
        }
        state = after;
        i = next;
    }
    any && state == Split::Start
}

/// The first statement of `sql` and whether any statement follows it.
pub fn first_statement(sql: &str) -> (Option<&str>, bool) {
    let mut it = statements(sql);
    let first = it.next();
    (first, it.next().is_some())
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
        assert_eq!(first_keyword(" ;; select 1"), "select");
    }

    #[test]
    fn splitting_follows_sqlite3_complete() {
        fn all(s: &str) -> Vec<&str> {
            statements(s).collect()
        }
        assert_eq!(all("SELECT 1; SELECT 2"), vec!["SELECT 1;", "SELECT 2"]);
        assert_eq!(all(";SELECT 1;;"), vec!["SELECT 1;"]);
        assert_eq!(all("  -- only a comment\n ; /* and this */ ;"), Vec::<&str>::new());
        assert_eq!(all("SELECT ';' AS \"a;b\", [c;d] FROM `e;f`; SELECT 2"),
            vec!["SELECT ';' AS \"a;b\", [c;d] FROM `e;f`;", "SELECT 2"]);
        assert_eq!(all("SELECT 'it''s;'; x"), vec!["SELECT 'it''s;';", "x"]);
        let trig = "CREATE TEMP TRIGGER tr AFTER INSERT ON t BEGIN INSERT INTO u VALUES (1); UPDATE u SET a = 2; END;";
        assert_eq!(all(&format!("{trig} SELECT 1")), vec![trig, "SELECT 1"]);
        // END as an ordinary word inside a trigger body does not close it.
        let t2 = "create trigger x after delete on t begin select case when 1 then 2 end; end;";
        assert_eq!(all(t2), vec![t2]);
        assert_eq!(all("EXPLAIN CREATE TRIGGER a AFTER INSERT ON t BEGIN SELECT 1; END; SELECT 2").len(), 2);
        // Not a trigger: CREATE TABLE trigger(...) ends at its semicolon.
        assert_eq!(all("CREATE TABLE t(a); SELECT 1").len(), 2);
        // Unterminated pieces are handed to SQLite whole.
        assert_eq!(all("SELECT 1; SELECT 'open"), vec!["SELECT 1;", "SELECT 'open"]);
        assert_eq!(first_statement("SELECT 1; SELECT * FROM q"), (Some("SELECT 1;"), true));
        assert_eq!(first_statement("SELECT 1; -- done\n"), (Some("SELECT 1;"), false));
    }
}
