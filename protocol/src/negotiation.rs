//! Version negotiation in the WebSocket upgrade.
//!
//! The client offers one subprotocol per version it speaks, highest first
//! (`envoy.v6`, `envoy.v5`, …), plus `envoy.token.<TOKEN>` when it has a token.
//! The engine answers with exactly one of the version subprotocols: the
//! highest version both speak. It never echoes the token. So the version is
//! known to both sides before the first frame, in one round trip.

/// Prefix of a version subprotocol: `envoy.v6`.
pub const VERSION_PREFIX: &str = "envoy.v";
/// Prefix of the token subprotocol: `envoy.token.<TOKEN>`.
pub const TOKEN_PREFIX: &str = "envoy.token.";

/// The subprotocol naming `version`.
pub fn version_subprotocol(version: u16) -> String {
    format!("{VERSION_PREFIX}{version}")
}

/// The version a subprotocol names, if it is a version subprotocol.
pub fn parse_version_subprotocol(s: &str) -> Option<u16> {
    let digits = s.strip_prefix(VERSION_PREFIX)?;
    if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.starts_with('0') {
        return None;
    }
    digits.parse().ok()
}

/// Whether `token` can travel as a subprotocol: a non-empty RFC 7230 token
/// (letters, digits and `!#$%&'*+-.^_`|~`).
pub fn is_valid_token(token: &str) -> bool {
    !token.is_empty() && token.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The subprotocols a client offers: versions `max..=min` highest first, then the token.
pub fn client_offer(min_version: u16, max_version: u16, token: Option<&str>) -> Vec<String> {
    let mut out: Vec<String> = (min_version..=max_version).rev().map(version_subprotocol).collect();
    if let Some(t) = token {
        out.push(format!("{TOKEN_PREFIX}{t}"));
    }
    out
}

/// What a client offered, parsed from its `Sec-WebSocket-Protocol` header values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Offer {
    /// Versions offered, in the order given.
    pub versions: Vec<u16>,
    /// The token, if one was offered.
    pub token: Option<String>,
}

impl Offer {
    /// Parses header values (each may hold a comma-separated list). Unknown
    /// subprotocols are ignored.
    pub fn parse<'a>(header_values: impl IntoIterator<Item = &'a str>) -> Offer {
        let mut offer = Offer::default();
        for value in header_values {
            for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                if let Some(v) = parse_version_subprotocol(item) {
                    offer.versions.push(v);
                } else if let Some(t) = item.strip_prefix(TOKEN_PREFIX) {
                    offer.token = Some(t.to_string());
                }
            }
        }
        offer
    }

    /// The highest version offered that lies in `min..=max`, if any.
    pub fn select(&self, min: u16, max: u16) -> Option<u16> {
        self.versions.iter().copied().filter(|v| (min..=max).contains(v)).max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offer_and_select() {
        let offer = client_offer(1, 4, Some("s3cr3t"));
        assert_eq!(offer, ["envoy.v4", "envoy.v3", "envoy.v2", "envoy.v1", "envoy.token.s3cr3t"]);
        let joined = offer.join(", ");
        let parsed = Offer::parse([joined.as_str()]);
        assert_eq!(parsed.versions, vec![4, 3, 2, 1]);
        assert_eq!(parsed.token.as_deref(), Some("s3cr3t"));
        // An engine pinned to v3 answers v3; one that only knows v5+ answers nothing.
        assert_eq!(parsed.select(1, 3), Some(3));
        assert_eq!(parsed.select(5, 9), None);
        // An older client offering only v1..v2 gets v2 from a v4 engine.
        assert_eq!(Offer::parse(["envoy.v2", "envoy.v1"]).select(1, 4), Some(2));
    }

    #[test]
    fn a_v6_peer_is_offered_and_selected_v6() {
        use crate::{IMPLEMENTED_PROTOCOL_VERSION, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};
        // A client speaking everything the crate knows offers envoy.v6 first.
        let offer = client_offer(MIN_PROTOCOL_VERSION, PROTOCOL_VERSION, None);
        assert_eq!(offer, ["envoy.v6", "envoy.v5", "envoy.v4", "envoy.v3", "envoy.v2", "envoy.v1"]);
        let parsed = Offer::parse([offer.join(",").as_str()]);
        // An engine that speaks v6 selects it; one that implements v5 (or v4) selects that.
        assert_eq!(parsed.select(MIN_PROTOCOL_VERSION, PROTOCOL_VERSION), Some(6));
        assert_eq!(parsed.select(MIN_PROTOCOL_VERSION, 5), Some(5));
        assert_eq!(parsed.select(MIN_PROTOCOL_VERSION, 4), Some(4));
        // A v5 client meets a v6 engine at v5; a v6-only client meets a v5 engine nowhere.
        assert_eq!(Offer::parse(["envoy.v5, envoy.v4"]).select(1, 6), Some(5));
        assert_eq!(Offer::parse(["envoy.v6"]).select(1, 5), None);
        assert_eq!(parse_version_subprotocol("envoy.v6"), Some(6));
        assert_eq!(version_subprotocol(6), "envoy.v6");
        // What the engine and SDK offer today: v6.
        assert_eq!(client_offer(MIN_PROTOCOL_VERSION, IMPLEMENTED_PROTOCOL_VERSION, None)[0], "envoy.v6");
    }

    #[test]
    fn rejects_malformed_versions_and_tokens() {
        for bad in ["envoy.v", "envoy.v04", "envoy.vx", "envoy.v99999999", "envoy.v-1", "other.v4"] {
            assert_eq!(parse_version_subprotocol(bad), None, "{bad}");
        }
        assert!(is_valid_token("abc-DEF_123.~"));
        assert!(!is_valid_token(""));
        assert!(!is_valid_token("has space"));
        assert!(!is_valid_token("a/b=c"));
    }
}
