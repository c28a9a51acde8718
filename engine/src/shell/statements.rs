//! Splitting shell input into statements: the engine's own splitter
//! (`sql::route::statements`, which follows `sqlite3_complete`, trigger bodies
//! included), so the shell cuts input exactly where the engine would.

use crate::sql::route;

/// Whether `sql` ends a statement: it holds one and the text ends at a
/// top-level `;` (outside strings, comments and trigger bodies).
pub fn is_complete(sql: &str) -> bool {
    route::is_complete(sql)
}

/// Statements of `sql`, trimmed, without their `;`, empty ones dropped.
pub fn split(sql: &str) -> Vec<&str> {
    route::statements(sql).map(|s| s.trim_end().trim_end_matches(';').trim_end()).collect()
}

/// Whether a statement must go through `exec` (a trigger body holds `;`).
pub fn needs_exec(stmt: &str) -> bool {
    stmt.contains(';')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_top_level_semicolons_only() {
        assert_eq!(
            split("SELECT 1; SELECT ';' ; -- x;\nSELECT \"a;b\""),
            vec!["SELECT 1", "SELECT ';'", "SELECT \"a;b\""]
        );
        assert_eq!(split("/* ; */ SELECT 2;"), vec!["SELECT 2"]);
        assert_eq!(split("  ;  ; "), Vec::<&str>::new());
        assert_eq!(split("SELECT 1; -- done\n/* bye */"), vec!["SELECT 1"]);
        let trig =
            "CREATE TRIGGER t AFTER INSERT ON a BEGIN INSERT INTO b VALUES (1); UPDATE c SET x = 1; END; SELECT 3;";
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
