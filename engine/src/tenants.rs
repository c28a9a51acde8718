//! Tenants: who may do what, as configured by `--auth-token` and `--tokens-file`.
//!
//! A token is mapped to a [`Grant`]: a `name` (the identity: logs, envoy-key
//! ownership; never the token itself), the namespaces it may touch and a
//! [`Role`]. The tokens file is TOML:
//!
//! ```toml
//! [[token]]
//! name = "billing-envoys"
//! token = "b1ll1ng-s3cret"
//! namespaces = ["billing"]
//! role = "envoy"
//!
//! [[token]]
//! name = "oncall"
//! token = "0nc4ll-s3cret"
//! namespaces = ["*"]
//! role = "operator"
//! ```
//!
//! Unknown keys are an error (a misspelt `namespace` must not silently grant
//! nothing, or everything). Several tokens may share a `name`: they are one
//! identity, which is how a token is rotated without evicting its envoys.

use serde::Deserialize;
use std::fmt;
use std::path::Path;

/// The identity name `--auth-token` maps to (reserved: a tokens file cannot use it).
pub const AUTH_TOKEN_IDENTITY: &str = "auth-token";
/// The identity of every caller when no token is configured at all (loopback only).
pub const ANONYMOUS_IDENTITY: &str = "anonymous";
/// Longest identity name: it appears in every log line of a connection.
pub const MAX_NAME_LEN: usize = 64;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// May connect as an envoy in its namespaces; no admin API.
    Envoy,
    /// Admin API (read and write) in its namespaces; may also connect as an envoy.
    Operator,
    /// Admin API reads (`GET`) only, in its namespaces; may not connect as an envoy.
    ReadOnlyOperator,
}

impl Role {
    /// Whether this role may open `/envoys/connect`.
    pub fn may_connect(self) -> bool {
        matches!(self, Role::Envoy | Role::Operator)
    }

    /// Whether this role may call the admin API's `GET` routes.
    pub fn may_admin_read(self) -> bool {
        matches!(self, Role::Operator | Role::ReadOnlyOperator)
    }

    /// Whether this role may call the admin API's state-changing routes.
    pub fn may_admin_write(self) -> bool {
        matches!(self, Role::Operator)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Envoy => "envoy",
            Role::Operator => "operator",
            Role::ReadOnlyOperator => "read_only_operator",
        })
    }
}

/// The namespaces a grant reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Namespaces {
    /// `"*"`: every namespace, present and future.
    All,
    /// Exactly these namespaces.
    Only(Vec<String>),
}

impl Namespaces {
    /// Whether `namespace` is reachable.
    pub fn allows(&self, namespace: &str) -> bool {
        match self {
            Namespaces::All => true,
            Namespaces::Only(list) => list.iter().any(|n| n == namespace),
        }
    }
}

/// One configured token and what it grants.
#[derive(Clone)]
pub struct Grant {
    /// The identity: shown in logs and owning the envoy keys it connects with.
    pub name: String,
    /// The secret presented by callers (never logged; `Debug` hides it).
    pub token: String,
    /// Where it may act.
    pub namespaces: Namespaces,
    /// What it may do there.
    pub role: Role,
}

impl fmt::Debug for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Grant")
            .field("name", &self.name)
            .field("token", &"<redacted>")
            .field("namespaces", &self.namespaces)
            .field("role", &self.role)
            .finish()
    }
}

/// Why a tokens file was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokensFileError {
    /// The file could not be read.
    #[error("reading the tokens file {path}: {source}")]
    Read {
        /// The file named by `--tokens-file`.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Not TOML, or not the expected shape (unknown keys included).
    #[error("parsing the tokens file {path}: {message}")]
    Parse {
        /// The file named by `--tokens-file`.
        path: String,
        /// The parser's message (names the key and line).
        message: String,
    },
    /// Well-formed, but one entry is unusable.
    #[error("tokens file {path}, entry {index} (name {name:?}): {problem}")]
    Invalid {
        /// The file named by `--tokens-file`.
        path: String,
        /// 1-based position of the `[[token]]` entry.
        index: usize,
        /// The entry's name, to find it without printing its token.
        name: String,
        /// What is wrong with it.
        problem: String,
    },
}

/// The file's top level.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileShape {
    /// `[[token]]` entries.
    #[serde(default, rename = "token")]
    tokens: Vec<EntryShape>,
}

/// One `[[token]]` entry as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryShape {
    /// Identity name.
    name: String,
    /// The secret.
    token: String,
    /// Namespace names, or `"*"`.
    namespaces: Vec<String>,
    /// `envoy`, `operator` or `read_only_operator`.
    role: Role,
}

/// Reads and checks a tokens file.
pub fn load_tokens_file(path: &Path) -> Result<Vec<Grant>, TokensFileError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| TokensFileError::Read { path: shown.clone(), source })?;
    parse_tokens(&text, &shown)
}

/// Parses and checks a tokens file's text (`path` only names it in errors).
pub fn parse_tokens(text: &str, path: &str) -> Result<Vec<Grant>, TokensFileError> {
    // The parser's own Display quotes the offending line, which may hold a token:
    // report its message and the line number only.
    let shape: FileShape = toml::from_str(text).map_err(|e| {
        let line =
            e.span().map(|s| text.as_bytes()[..s.start.min(text.len())].iter().filter(|b| **b == b'\n').count() + 1);
        let message = match line {
            Some(l) => format!("line {l}: {}", e.message().trim()),
            None => e.message().trim().to_string(),
        };
        TokensFileError::Parse { path: path.to_string(), message }
    })?;
    if shape.tokens.is_empty() {
        return Err(TokensFileError::Parse {
            path: path.to_string(),
            message: "no [[token]] entries (an empty tokens file would lock everyone out)".into(),
        });
    }
    let mut grants = Vec::with_capacity(shape.tokens.len());
    for (i, e) in shape.tokens.into_iter().enumerate() {
        let invalid = |problem: String| TokensFileError::Invalid {
            path: path.to_string(),
            index: i + 1,
            name: e.name.clone(),
            problem,
        };
        check_name(&e.name).map_err(&invalid)?;
        if !envoy_protocol::negotiation::is_valid_token(&e.token) {
            return Err(invalid(
                "the token must be a non-empty RFC 7230 token (letters, digits, !#$%&'*+-.^_`|~)".into(),
            ));
        }
        let namespaces = namespaces_of(e.namespaces.clone()).map_err(&invalid)?;
        grants.push(Grant { name: e.name, token: e.token, namespaces, role: e.role });
    }
    for (i, g) in grants.iter().enumerate() {
        if grants[..i].iter().any(|earlier| earlier.token == g.token) {
            return Err(TokensFileError::Invalid {
                path: path.to_string(),
                index: i + 1,
                name: g.name.clone(),
                problem: "the same token appears twice (a token must map to one grant)".into(),
            });
        }
    }
    Ok(grants)
}

/// Identity names are printed in logs and compared for envoy-key ownership.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(format!("the name must be 1 to {MAX_NAME_LEN} characters"));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
        return Err("the name may only contain letters, digits, '-', '_' and '.'".into());
    }
    if name == AUTH_TOKEN_IDENTITY || name == ANONYMOUS_IDENTITY {
        return Err(format!("the name {name:?} is reserved"));
    }
    Ok(())
}

fn namespaces_of(list: Vec<String>) -> Result<Namespaces, String> {
    if list.is_empty() {
        return Err("namespaces is empty (use [\"*\"] for every namespace)".into());
    }
    if list.iter().any(|n| n == "*") {
        if list.len() > 1 {
            return Err("\"*\" already means every namespace; list it alone".into());
        }
        return Ok(Namespaces::All);
    }
    if list.iter().any(|n| n.is_empty()) {
        return Err("a namespace name is empty".into());
    }
    Ok(Namespaces::Only(list))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[token]]
name = "billing-envoys"
token = "b1ll1ng"
namespaces = ["billing"]
role = "envoy"

[[token]]
name = "oncall"
token = "0nc4ll"
namespaces = ["*"]
role = "operator"

[[token]]
name = "dash"
token = "d4sh"
namespaces = ["billing", "search"]
role = "read_only_operator"
"#;

    #[test]
    fn parses_a_good_file() {
        let g = parse_tokens(GOOD, "t.toml").unwrap();
        assert_eq!(g.len(), 3);
        assert_eq!(g[0].role, Role::Envoy);
        assert!(g[0].namespaces.allows("billing") && !g[0].namespaces.allows("search"));
        assert_eq!(g[1].namespaces, Namespaces::All);
        assert_eq!(g[2].role, Role::ReadOnlyOperator);
        assert!(!format!("{:?}", g[0]).contains("b1ll1ng"), "Debug must not print the token");
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = parse_tokens(
            "[[token]]\nname = \"a\"\ntoken = \"t\"\nnamespace = [\"x\"]\nnamespaces = [\"x\"]\nrole = \"envoy\"\n",
            "t.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("namespace"), "{e}");
        let e = parse_tokens("tokens = []\n", "t.toml").unwrap_err().to_string();
        assert!(e.contains("tokens"), "{e}");
    }

    #[test]
    fn bad_entries_are_refused() {
        let entry = |name: &str, token: &str, ns: &str, role: &str| {
            format!("[[token]]\nname = {name:?}\ntoken = {token:?}\nnamespaces = {ns}\nrole = {role:?}\n")
        };
        for (text, needle) in [
            (entry("a", "t", "[]", "envoy"), "namespaces is empty"),
            (entry("a", "t", "[\"*\", \"x\"]", "envoy"), "alone"),
            (entry("a", "has space", "[\"x\"]", "envoy"), "RFC 7230"),
            (entry("a b", "t", "[\"x\"]", "envoy"), "name may only"),
            (entry("auth-token", "t", "[\"x\"]", "envoy"), "reserved"),
            (entry("a", "t", "[\"x\"]", "admin"), "unknown variant"),
            (entry("a", "t", "[\"x\"]", "envoy") + &entry("b", "t", "[\"y\"]", "envoy"), "twice"),
            (String::new(), "no [[token]]"),
        ] {
            let e = parse_tokens(&text, "t.toml").unwrap_err().to_string();
            assert!(e.contains(needle), "{needle:?} not in {e:?}");
            assert!(!e.contains("token = "), "errors must not quote entries: {e}");
        }
    }
}
