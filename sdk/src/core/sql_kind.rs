//! Which SQL a request key can make exactly-once.
//!
//! The engine cannot record the outcome of a statement that manages
//! transactions itself (BEGIN, COMMIT, END, ROLLBACK, SAVEPOINT, RELEASE),
//! VACUUM or PRAGMA: such a statement runs alone, outside the group commit
//! that records keys, and the engine refuses a key on it (INVALID_REQUEST).
//! So the client sends those without a key (at most once, as below v5); a
//! lost answer is `IndeterminateResult` for them. Everything else is keyed.
//!
//! The check for one statement looks at its first keyword, past whitespace,
//! `;` and comments, as the engine does. The check for a script (`exec`) is
//! deliberately coarse: any such word anywhere in the text (also inside a
//! string, a comment, `CASE … END` or a trigger body) sends it unkeyed, so the
//! client never keys a script the engine would refuse.

/// Leading keywords of statements a request key cannot cover.
const UNKEYABLE: [&str; 8] = ["BEGIN", "COMMIT", "END", "ROLLBACK", "SAVEPOINT", "RELEASE", "VACUUM", "PRAGMA"];

fn unkeyable_word(word: &str) -> bool {
    UNKEYABLE.iter().any(|k| k.eq_ignore_ascii_case(word))
}

/// The first keyword of a statement, past whitespace, `;` and comments.
fn first_keyword(sql: &str) -> &str {
    let mut rest = sql;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_ascii_whitespace() || c == ';');
        if let Some(comment) = rest.strip_prefix("--") {
            rest = comment.find('\n').map_or("", |end| &comment[end + 1..]);
        } else if let Some(comment) = rest.strip_prefix("/*") {
            match comment.find("*/") {
                Some(end) => rest = &comment[end + 2..],
                None => return "",
            }
        } else {
            break;
        }
    }
    let end = rest.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(rest.len());
    &rest[..end]
}

/// Whether one statement (`execute`) can carry a request key.
pub fn keyable_statement(sql: &str) -> bool {
    !unkeyable_word(first_keyword(sql))
}

/// Whether a script of several statements (`exec`) can carry a request key:
/// only if none of the words above appears anywhere in it.
pub fn keyable_script(sql: &str) -> bool {
    !sql.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).any(unkeyable_word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_by_their_first_keyword() {
        for sql in
            ["INSERT INTO t VALUES (1)", "  update t set x = 1", "SELECT 1", "WITH a AS (SELECT 1) SELECT * FROM a"]
        {
            assert!(keyable_statement(sql), "{sql}");
        }
        for sql in [
            "PRAGMA user_version = 3",
            "pragma table_info(t)",
            "VACUUM",
            "BEGIN IMMEDIATE",
            "-- note\n  COMMIT",
            "/* c */ ROLLBACK TO s",
            ";; savepoint s",
            "RELEASE s",
            "END",
        ] {
            assert!(!keyable_statement(sql), "{sql}");
        }
        // A keyword only as a prefix of a longer word does not count.
        assert!(keyable_statement("ENDPOINTS"), "not END");
        // An unterminated comment has no keyword: keyed (the engine rejects it anyway).
        assert!(keyable_statement("/* open"));
    }

    #[test]
    fn scripts_are_unkeyed_when_any_such_word_appears() {
        assert!(keyable_script("CREATE TABLE t(x); INSERT INTO t VALUES (1)"));
        assert!(keyable_script("INSERT INTO pragmatic(x) VALUES ('ending')"), "words are whole words");
        assert!(!keyable_script("CREATE TABLE t(x); PRAGMA user_version = 2"));
        assert!(!keyable_script("BEGIN; INSERT INTO t VALUES (1); COMMIT"));
        assert!(!keyable_script("SELECT CASE WHEN 1 THEN 2 END"), "coarse on purpose");
    }
}
