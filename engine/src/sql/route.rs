//! Which connection a statement runs on, decided once per request.
//!
//! Admission classifies an `Execute`/`ExecuteWrite` once ([`Route::of_execute`]):
//! it finds the one statement (text after it is refused before any work), the
//! class of its leading keyword ([`Kind`]) and the lane it queues on, and the
//! request carries that [`Route`] to the scheduler, the group commit and the
//! executor, which never scan the text again.
//!
//! `ExecuteWrite` and `Exec` always use the writer. An `Execute` is a read
//! candidate only if its keyword is `SELECT`, `VALUES`, `WITH` or `EXPLAIN`;
//! everything else (transaction control, savepoints, DDL, DML, PRAGMA) goes to
//! the writer. A read candidate runs on a reader only if SQLite confirms the
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

/// The class of a statement's leading keyword: all that routing, group commit
/// and result reporting need to know about its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `SELECT`, `VALUES`, `WITH`, `EXPLAIN`: may run on a reader.
    Read,
    /// `INSERT`, `REPLACE`: its rowid is reported even when it did not move.
    Insert,
    /// `BEGIN`, `COMMIT`, `END`, `ROLLBACK`, `SAVEPOINT`, `RELEASE`: read-only per
    /// `sqlite3_stmt_readonly` yet must run on the writer, and alone.
    Transaction,
    /// `VACUUM`: cannot run inside a transaction; needs its private attachment.
    Vacuum,
    /// `PRAGMA`: some behave differently inside a transaction, so it runs alone.
    Pragma,
    /// Everything else (DDL, UPDATE, DELETE, ANALYZE, ...).
    Other,
}

impl Kind {
    /// The class of the first statement of `sql`.
    pub fn of(sql: &str) -> Kind {
        let k = first_keyword(sql);
        let is = |w: &str| k.eq_ignore_ascii_case(w);
        if is("SELECT") || is("VALUES") || is("WITH") || is("EXPLAIN") {
            Kind::Read
        } else if is("INSERT") || is("REPLACE") {
            Kind::Insert
        } else if is("BEGIN") || is("COMMIT") || is("END") || is("ROLLBACK") || is("SAVEPOINT") || is("RELEASE") {
            Kind::Transaction
        } else if is("VACUUM") {
            Kind::Vacuum
        } else if is("PRAGMA") {
            Kind::Pragma
        } else {
            Kind::Other
        }
    }

    /// Whether a request holding such a statement runs alone, outside a group commit.
    pub fn runs_alone(self) -> bool {
        match self {
            Kind::Transaction | Kind::Vacuum | Kind::Pragma => true,
            Kind::Read | Kind::Insert | Kind::Other => false,
        }
    }
}

/// Whether the text names a function that reports on its connection's own writes
/// (a word match, case-insensitive; a false positive only costs a reader lane).
fn mentions_connection_functions(sql: &str) -> bool {
    let b = sql.as_bytes();
    let has = |needle: &[u8]| b.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle));
    has(b"changes") || has(b"last_insert_rowid")
}

/// What admission decides about an `Execute`/`ExecuteWrite`, once; the request carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The lane it queues on first (a reader may still hand it to the writer).
    pub lane: Lane,
    /// The class of its statement.
    pub kind: Kind,
    /// Where the one statement starts within the request's SQL.
    start: usize,
    /// Where it ends.
    end: usize,
}

impl Route {
    /// Classifies an `Execute` (`write` = `ExecuteWrite`). Err when the text holds
    /// no statement or more than one (refused before any work).
    pub fn of_execute(sql: &str, write: bool) -> Result<Route, &'static str> {
        let (first, more) = first_statement(sql);
        let first = first.ok_or("the SQL holds no statement")?;
        if more {
            return Err("Execute takes exactly one statement; use Exec for several");
        }
        let start = first.as_ptr() as usize - sql.as_ptr() as usize;
        let kind = Kind::of(first);
        // changes(), total_changes() and last_insert_rowid() answer about the
        // connection that ran the writes: only the writer knows.
        let lane = if !write && kind == Kind::Read && !mentions_connection_functions(first) {
            Lane::Reader
        } else {
            Lane::Writer
        };
        Ok(Route { lane, kind, start, end: start + first.len() })
    }

    /// The statement's text within the request's SQL.
    pub fn statement<'a>(&self, sql: &'a str) -> &'a str {
        &sql[self.start..self.end]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords() {
        assert_eq!(first_keyword("  -- hi\n /* x */ select 1"), "select");
        assert_eq!(Kind::of("WITH t AS (SELECT 1) SELECT * FROM t"), Kind::Read);
        assert_eq!(Kind::of("insert into t values (1)"), Kind::Insert);
        assert_eq!(Kind::of("PRAGMA table_info(t)"), Kind::Pragma);
        assert_eq!(Kind::of("begin immediate"), Kind::Transaction);
        assert_eq!(Kind::of("Savepoint a"), Kind::Transaction);
        let r = Route::of_execute(" ;SELECT 1; -- done", false).unwrap();
        assert_eq!((r.lane, r.kind, r.statement(" ;SELECT 1; -- done")), (Lane::Reader, Kind::Read, "SELECT 1;"));
        assert_eq!(Route::of_execute("SELECT 1", true).unwrap().lane, Lane::Writer);
        assert!(Route::of_execute("SELECT 1; SELECT * FROM q", false).is_err());
        assert!(Route::of_execute(" -- nothing", false).is_err());
        assert_eq!(Route::of_execute("SELECT last_insert_rowid(), Changes()", false).unwrap().lane, Lane::Writer);
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
        assert_eq!(
            all("SELECT ';' AS \"a;b\", [c;d] FROM `e;f`; SELECT 2"),
            vec!["SELECT ';' AS \"a;b\", [c;d] FROM `e;f`;", "SELECT 2"]
        );
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
