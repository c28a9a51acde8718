//! Who is calling: token checks shared by the envoy endpoint and the admin API.
//!
//! A presented token is compared with EVERY configured token (`--auth-token`
//! and each tokens-file entry), each comparison taking time that depends only
//! on the presented token's length, so neither which token matched, nor how
//! long the configured tokens are, nor how many leading bytes were right shows
//! in the response time.

use crate::config::Config;
use crate::tenants::{Grant, Namespaces, Role, ANONYMOUS_IDENTITY, AUTH_TOKEN_IDENTITY};

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The grant's name (`anonymous` without tokens, `auth-token` for `--auth-token`):
    /// logged, and the owner of the envoy keys it connects with.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// Where it may do it.
    pub namespaces: Namespaces,
}

impl Identity {
    /// The caller of an engine with no token configured (loopback only): every right.
    pub fn anonymous() -> Self {
        Self { name: ANONYMOUS_IDENTITY.into(), role: Role::Operator, namespaces: Namespaces::All }
    }

    /// Whether it may connect as an envoy in `namespace`.
    pub fn may_connect(&self, namespace: &str) -> bool {
        self.role.may_connect() && self.namespaces.allows(namespace)
    }
}

/// Whether any token is configured (else every caller is [`Identity::anonymous`]).
pub fn tokens_configured(config: &Config) -> bool {
    config.auth_token.is_some() || !config.tokens.is_empty()
}

/// The identity `presented` proves, if any. No token configured: anonymous.
pub fn authenticate(config: &Config, presented: Option<&str>) -> Option<Identity> {
    if !tokens_configured(config) {
        return Some(Identity::anonymous());
    }
    // A missing token is compared as an empty one, so it costs the same as a short wrong one.
    let presented = presented.unwrap_or("").as_bytes();
    let mut matched: Option<usize> = None;
    let mut auth_token_matched = false;
    if let Some(t) = &config.auth_token {
        auth_token_matched = constant_time_eq(presented, t.as_bytes());
    }
    for (i, g) in config.tokens.iter().enumerate() {
        // No early exit: every configured token is compared.
        if constant_time_eq(presented, g.token.as_bytes()) {
            matched = Some(i);
        }
    }
    if auth_token_matched {
        return Some(Identity { name: AUTH_TOKEN_IDENTITY.into(), role: Role::Operator, namespaces: Namespaces::All });
    }
    matched.and_then(|i| config.tokens.get(i)).map(identity_of)
}

fn identity_of(g: &Grant) -> Identity {
    Identity { name: g.name.clone(), role: g.role, namespaces: g.namespaces.clone() }
}

/// Compares a presented secret with a configured one in time that depends only
/// on `presented.len()`: every presented byte is compared against the
/// configured token read cyclically, and a length mismatch is folded into the
/// difference instead of returning early.
pub fn constant_time_eq(presented: &[u8], expected: &[u8]) -> bool {
    let n = expected.len();
    // Lengths differ → non-zero. `usize` XOR, no branch.
    let mut diff = presented.len() ^ n;
    if n == 0 {
        // Cannot happen for a validated config (tokens are non-empty); still no panic.
        return std::hint::black_box(diff | presented.len()) == 0;
    }
    let mut j = 0usize;
    for &p in presented {
        diff |= usize::from(p ^ expected[j]);
        // Branch-free wrap of j to 0 at n (the multiply is by 0 or 1).
        j += 1;
        j *= usize::from(j != n);
    }
    // Keep the compiler from turning the fold into an early exit.
    std::hint::black_box(diff) == 0
}

/// The token of an `Authorization: Bearer <token>` header value.
pub fn bearer(value: Option<&str>) -> Option<&str> {
    let v = value?.trim();
    let (scheme, rest) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(name: &str, token: &str, ns: Namespaces, role: Role) -> Grant {
        Grant { name: name.into(), token: token.into(), namespaces: ns, role }
    }

    #[test]
    fn comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"abcd", b"abc"));
        // A presented token that repeats the configured one must not match.
        assert!(!constant_time_eq(b"abcabc", b"abc"));
        assert!(!constant_time_eq(b"", b"abc"));
        assert!(!constant_time_eq(b"x", b""));
        assert_eq!(bearer(Some("Bearer xyz")), Some("xyz"));
        assert_eq!(bearer(Some("Basic xyz")), None);
    }

    #[test]
    fn identities() {
        let mut c = Config::for_tests("/tmp/x");
        assert_eq!(authenticate(&c, None), Some(Identity::anonymous()));
        c.auth_token = Some("t".into());
        assert_eq!(authenticate(&c, None), None);
        assert_eq!(authenticate(&c, Some("tt")), None);
        assert_eq!(authenticate(&c, Some("t")).unwrap().name, AUTH_TOKEN_IDENTITY);
        c.tokens = vec![
            grant("a", "aaa", Namespaces::Only(vec!["ns1".into()]), Role::Envoy),
            grant("b", "bbb", Namespaces::All, Role::ReadOnlyOperator),
        ];
        let a = authenticate(&c, Some("aaa")).unwrap();
        assert_eq!((a.name.as_str(), a.role), ("a", Role::Envoy));
        assert!(a.may_connect("ns1") && !a.may_connect("ns2"));
        let b = authenticate(&c, Some("bbb")).unwrap();
        assert!(!b.may_connect("ns1"));
        assert_eq!(authenticate(&c, Some("aa")), None);
        assert_eq!(authenticate(&c, Some("t")).unwrap().role, Role::Operator);
    }
}
