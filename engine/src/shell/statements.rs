//! Splitting shell input into statements: a statement ends at a `;` outside
//! quotes, brackets and comments (like `sqlite3_complete`, minus triggers,
//! whose body is kept whole by recognising `BEGIN … END`).

/// Whether `sql` ends a statement (its last significant character is a top-level `;`).
pub fn is_complete(sql: &str) -> bool {
    let parts = split(sql);
    !parts.is_empty() && scan(sql).last_end_is_terminated
}

/// Statements of `sql`, trimmed, without their `;`, empty ones dropped.
pub fn split(sql: &str) -> Vec<&str> {
    scan(sql).statements.into_iter().map(|(a, b)| sql[a..b].trim()).filter(|s| !only_comments(s)).collect()
}

/// Whether `s` holds nothing but whitespace and comments.
fn only_comments(s: &str) -> bool {
    let mut rest = s.trim_start();
    loop {
        if rest.is_empty() {
            return true;
        }
        if let Some(r) = rest.strip_prefix("--") {
            rest = r.split_once('\n').map_or("", |(_, after)| after).trim_start();
        } else if let Some(r) = rest.strip_prefix("/*") {
            rest = r.split_once("*/").map_or("", |(_, after)| after).trim_start();
        } else {
            return false;
        }
    }
}

/// Whether a statement must go through `exec` (a trigger body holds `;`).
pub fn needs_exec(stmt: &str) -> bool {
    stmt.contains(';')
}

struct Scan {
    statements: Vec<(usize, usize)>,
    last_end_is_terminated: bool,
}

fn scan(sql: &str) -> Scan {
    let b = sql.as_bytes();
    let is_word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    // Nesting of CREATE TRIGGER … BEGIN … END: a `;` inside does not end the statement.
    let mut trigger_depth = 0usize;
    let mut saw_trigger = false;
    let mut terminated = false;
    while i < b.len() {
        let c = b[i];
        if is_word(c) {
            let ws = i;
            while i < b.len() && is_word(b[i]) {
                i += 1;
            }
            let w = &sql[ws..i];
            if w.eq_ignore_ascii_case("TRIGGER") {
                saw_trigger = true;
            } else if w.eq_ignore_ascii_case("BEGIN") && saw_trigger {
                trigger_depth += 1;
            } else if w.eq_ignore_ascii_case("END") && trigger_depth > 0 {
                trigger_depth -= 1;
            }
            terminated = false;
            continue;
        }
        match c {
            b'\'' | b'"' | b'`' | b'[' => {
                let close = if c == b'[' { b']' } else { c };
                i += 1;
                while i < b.len() && b[i] != close {
                    i += 1;
                }
                i += 1;
                terminated = false;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 2;
            }
            b';' if trigger_depth == 0 => {
                out.push((start, i));
                start = i + 1;
                saw_trigger = false;
                terminated = true;
                i += 1;
            }
            c if c.is_ascii_whitespace() => i += 1,
            _ => {
                terminated = false;
                i += 1;
            }
        }
    }
    let start = start.min(sql.len());
    if !sql[start..].trim().is_empty() {
        out.push((start, sql.len()));
    }
    Scan { statements: out, last_end_is_terminated: terminated }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_top_level_semicolons_only() {
        assert_eq!(split("SELECT 1; SELECT ';' ; -- x;\nSELECT \"a;b\""), vec!["SELECT 1", "SELECT ';'", "-- x;\nSELECT \"a;b\""]);
        assert_eq!(split("/* ; */ SELECT 2;"), vec!["/* ; */ SELECT 2"]);
        assert_eq!(split("  ;  ; "), Vec::<&str>::new());
        assert_eq!(split("SELECT 1; -- done\n/* bye */"), vec!["SELECT 1"]);
        let trig = "CREATE TRIGGER t AFTER INSERT ON a BEGIN INSERT INTO b VALUES (1); UPDATE c SET x = 1; END; SELECT 3;";
        let parts = split(trig);
        assert_eq!(parts.len(), 2);
        assert!(parts[0].ends_with("END"));
        assert!(needs_exec(parts[0]));
    }

    #[test]
    fn completeness() {
        assert!(is_complete("SELECT 1;"));
        assert!(is_complete("SELECT 1;  \n"));
        assert!(!is_complete("SELECT 1"));
        assert!(!is_complete("SELECT ';"));
        assert!(!is_complete("SELECT 1; SELECT 2"));
        assert!(!is_complete("CREATE TRIGGER t AFTER INSERT ON a BEGIN INSERT INTO b VALUES (1);"));
        assert!(is_complete("CREATE TRIGGER t AFTER INSERT ON a BEGIN INSERT INTO b VALUES (1); END;"));
        assert!(!is_complete(""));
    }
}
