//! Token checks shared by the envoy endpoint and the admin API.

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    // Keep the compiler from short-circuiting the fold.
    std::hint::black_box(diff) == 0
}

/// Whether `presented` satisfies the configured token (no token configured: anything does).
pub fn token_ok(configured: Option<&str>, presented: Option<&str>) -> bool {
    match configured {
        None => true,
        Some(expected) => presented.is_some_and(|p| constant_time_eq(expected.as_bytes(), p.as_bytes())),
    }
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

    #[test]
    fn tokens() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(token_ok(None, None));
        assert!(!token_ok(Some("t"), None));
        assert!(token_ok(Some("t"), Some("t")));
        assert_eq!(bearer(Some("Bearer xyz")), Some("xyz"));
        assert_eq!(bearer(Some("Basic xyz")), None);
    }
}
