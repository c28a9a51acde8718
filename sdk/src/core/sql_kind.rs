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

fn unkeyable_word(word: &[u8]) -> bool {
    UNKEYABLE.iter().any(|k| k.as_bytes().eq_ignore_ascii_case(word))
}

// Both checks work on bytes: every delimiter is ASCII, and slicing bytes keeps `str`'s
// char-boundary panic out of the wasm build (its message formats a `char` with `Debug`, which
// costs ≈ 5.5 KB gzip; specs/wasm.md, "Size").

/// The first keyword of a statement, past whitespace, `;` and comments.
fn first_keyword(sql: &str) -> &[u8] {
    let mut rest = sql.as_bytes();
    loop {
        let start = rest.iter().position(|&c| !(c.is_ascii_whitespace() || c == b';')).unwrap_or(rest.len());
        rest = &rest[start..];
        if let Some(comment) = rest.strip_prefix(b"--") {
            rest = comment.iter().position(|&c| c == b'\n').map_or(&[], |end| &comment[end + 1..]);
        } else if let Some(comment) = rest.strip_prefix(b"/*") {
            match comment.windows(2).position(|w| w == b"*/") {
                Some(end) => rest = &comment[end + 2..],
                None => return &[],
            }
        } else {
            break;
        }
    }
    let end = rest.iter().position(|c| !c.is_ascii_alphabetic()).unwrap_or(rest.len());
    &rest[..end]
}

/// Whether one statement (`execute`) can carry a request key.
pub fn keyable_statement(sql: &str) -> bool {
    !unkeyable_word(first_keyword(sql))
}

/// Whether a script of several statements (`exec`) can carry a request key:
/// only if none of the words above appears anywhere in it.
pub fn keyable_script(sql: &str) -> bool {
    !sql.as_bytes().split(|&c| !(c.is_ascii_alphanumeric() || c == b'_')).any(unkeyable_word)
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
        // Non-ASCII text (checked as bytes): a comment or string around a keyword, never part of it.
        assert!(!keyable_statement("/* é */ COMMIT"));
        assert!(!keyable_statement("-- ü\nPRAGMA x"));
        assert!(keyable_statement("ÉND"));
        assert!(!keyable_statement("ENDé"), "the keyword ends at the first non-ASCII letter");
    }

    #[test]
    fn scripts_are_unkeyed_when_any_such_word_appears() {
        assert!(keyable_script("CREATE TABLE t(x); INSERT INTO t VALUES (1)"));
        assert!(keyable_script("INSERT INTO pragmatic(x) VALUES ('ending')"), "words are whole words");
        assert!(!keyable_script("CREATE TABLE t(x); PRAGMA user_version = 2"));
        assert!(!keyable_script("BEGIN; INSERT INTO t VALUES (1); COMMIT"));
        assert!(!keyable_script("SELECT CASE WHEN 1 THEN 2 END"), "coarse on purpose");
        assert!(!keyable_script("INSERT INTO t VALUES ('é'); COMMITé"), "non-ASCII separates words");
        assert!(keyable_script("INSERT INTO t VALUES ('ÉNDE')"));
    }
}
