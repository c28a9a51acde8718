//! The public client configuration and the connect URL.

use crate::core::config as d;
use crate::error::{Error, Result};
use std::collections::BTreeMap;

/// Path of the engine's envoy endpoint.
pub const CONNECT_PATH: &str = "/envoys/connect";
/// The newest protocol version this SDK speaks (and offers by default): the
/// newest this workspace implements (v6). Against an older engine the
/// negotiation settles on the engine's highest version.
pub const SDK_PROTOCOL_VERSION: u16 = envoy_protocol::IMPLEMENTED_PROTOCOL_VERSION;
/// Default time `Client::connect` waits for the first Init before giving up.
pub const DEFAULT_INITIAL_CONNECT_TIMEOUT_MS: u64 = 15_000;

/// How to reach the engine and how the client behaves. Build with
/// `ClientConfig { endpoint, namespace, token, ..Default::default() }`.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `ws://host:port` (or `http://…`, or `wss://`/`https://` where TLS is
    /// available); `/envoys/connect` is appended unless present.
    pub endpoint: String,
    /// Namespace the actors live in.
    pub namespace: String,
    /// Sent as the `envoy.token.<token>` subprotocol.
    pub token: Option<String>,
    /// Pool this envoy belongs to.
    pub pool_name: String,
    /// Stable identity across reconnects (and restarts, to resume a session);
    /// empty: a random key per `Client`.
    pub envoy_key: String,
    /// Version of the host software, for rollouts.
    pub host_version: u32,
    /// Free-form hello metadata.
    pub metadata: BTreeMap<String, String>,
    /// Lowest protocol version offered.
    pub min_protocol_version: u16,
    /// Highest protocol version offered.
    pub max_protocol_version: u16,
    /// How long `Client::connect` waits for the first Init.
    pub initial_connect_timeout_ms: u64,
    /// Deadline of one WebSocket upgrade.
    pub connect_timeout_ms: u64,
    /// Deadline between the upgrade and Init.
    pub handshake_timeout_ms: u64,
    /// No frame for this long ⇒ the socket is dead; `None`: 3 × the engine's ping interval.
    pub liveness_timeout_ms: Option<u64>,
    /// Deadline of requests without their own; `None`: no deadline.
    pub request_timeout_ms: Option<u64>,
    /// Retry reads (KV get/list, SQL marked idempotent) once when their answer
    /// is lost to a disconnect, instead of failing with `IndeterminateResult`.
    /// Never applies to writes.
    pub retry_idempotent_reads: bool,
    /// First reconnect delay (grows ×2 per failed attempt, with jitter), so a
    /// blip reconnects fast but an outage is not hammered.
    pub backoff_initial_ms: u64,
    /// Cap on the reconnect delay; keep it under the engine's envoy-lost
    /// threshold so a session can still be resumed.
    pub backoff_max_ms: u64,
    /// Give up reconnecting after this many failures in a row; `None`: never.
    pub max_reconnect_attempts: Option<u32>,
    /// Requests waiting to be sent at most.
    pub max_queued_requests: usize,
    /// Requests on the wire at most (also capped by the engine's `maxPendingRequests`).
    pub max_in_flight: usize,
    /// Largest frame accepted from the engine.
    pub max_frame_bytes: u32,
    /// Extra trusted root certificates (PEM) for `wss://` on the native transport, besides the
    /// public Web PKI roots (e.g. an engine's self-signed or private-CA certificate). The wasm
    /// transport uses its host's TLS and ignores this.
    pub tls_root_ca_pem: Option<String>,
    /// How long `close()` waits for in-flight answers.
    pub close_timeout_ms: u64,
    /// v5: the idle lease asked for interactive transactions (the engine
    /// clamps it into its bounds): how long an abandoned transaction holds
    /// the actor's writer before the engine rolls it back.
    pub transaction_lease_ms: u32,
    /// v5: the credit window of a result stream, in row bytes at their
    /// decoded size: the most a stream's rows take in client memory (granted
    /// to the engine and not yet taken by the consumer).
    pub stream_credit_bytes: u32,
    /// v5: how long the engine may wait for a stream's credit before it
    /// closes the stream (`StreamExpired`), so an abandoned stream frees its
    /// snapshot. Clamped by the engine.
    pub stream_lease_ms: u32,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            endpoint: "ws://127.0.0.1:6420".into(),
            namespace: "default".into(),
            token: None,
            pool_name: "default".into(),
            envoy_key: String::new(),
            host_version: 1,
            metadata: BTreeMap::new(),
            min_protocol_version: envoy_protocol::MIN_PROTOCOL_VERSION,
            // The newest version this SDK implements; negotiation picks the
            // highest version both sides speak, so an older engine is unaffected.
            max_protocol_version: SDK_PROTOCOL_VERSION,
            initial_connect_timeout_ms: DEFAULT_INITIAL_CONNECT_TIMEOUT_MS,
            connect_timeout_ms: d::DEFAULT_CONNECT_TIMEOUT_MS,
            handshake_timeout_ms: d::DEFAULT_HANDSHAKE_TIMEOUT_MS,
            liveness_timeout_ms: None,
            request_timeout_ms: Some(d::DEFAULT_REQUEST_TIMEOUT_MS),
            retry_idempotent_reads: true,
            backoff_initial_ms: d::DEFAULT_BACKOFF_INITIAL_MS,
            backoff_max_ms: d::DEFAULT_BACKOFF_MAX_MS,
            max_reconnect_attempts: None,
            max_queued_requests: d::DEFAULT_MAX_QUEUED_REQUESTS,
            max_in_flight: d::DEFAULT_MAX_IN_FLIGHT,
            max_frame_bytes: envoy_protocol::DEFAULT_MAX_FRAME_BYTES,
            tls_root_ca_pem: None,
            close_timeout_ms: d::DEFAULT_CLOSE_TIMEOUT_MS,
            transaction_lease_ms: d::DEFAULT_TRANSACTION_LEASE_MS,
            stream_credit_bytes: d::DEFAULT_STREAM_CREDIT_BYTES,
            stream_lease_ms: d::DEFAULT_STREAM_LEASE_MS,
        }
    }
}

impl ClientConfig {
    /// Checks the settings that would only fail later on the wire.
    pub fn validate(&self) -> Result<()> {
        if let Some(t) = &self.token {
            if !envoy_protocol::negotiation::is_valid_token(t) {
                return Err(Error::Config(
                    "the token must be a non-empty RFC 7230 token (letters, digits, !#$%&'*+-.^_`|~)".into(),
                ));
            }
        }
        if self.min_protocol_version > self.max_protocol_version
            || self.min_protocol_version < envoy_protocol::MIN_PROTOCOL_VERSION
            || self.max_protocol_version > SDK_PROTOCOL_VERSION
        {
            return Err(Error::Config(format!(
                "protocol versions must satisfy {} <= min <= max <= {}",
                envoy_protocol::MIN_PROTOCOL_VERSION,
                SDK_PROTOCOL_VERSION
            )));
        }
        if self.stream_credit_bytes == 0 {
            return Err(Error::Config("stream_credit_bytes must be at least 1".into()));
        }
        let scheme_ok = ["ws://", "wss://", "http://", "https://"].iter().any(|s| self.endpoint.starts_with(s));
        if !scheme_ok {
            return Err(Error::Config(format!(
                "endpoint \"{}\" must start with ws://, wss://, http:// or https://",
                self.endpoint
            )));
        }
        if self.namespace.is_empty() {
            return Err(Error::Config("namespace must not be empty".into()));
        }
        Ok(())
    }

    /// The settings the core runs with: these, with `envoy_key` resolved.
    pub(crate) fn core_config(&self, envoy_key: String) -> ClientConfig {
        ClientConfig { envoy_key, ..self.clone() }
    }

    /// The WebSocket URL: endpoint + `/envoys/connect` + query.
    pub fn connect_url(&self, envoy_key: &str) -> String {
        let base = self.endpoint.trim_end_matches('/');
        let base = if let Some(rest) = base.strip_prefix("http://") {
            format!("ws://{rest}")
        } else if let Some(rest) = base.strip_prefix("https://") {
            format!("wss://{rest}")
        } else {
            base.to_string()
        };
        let path = if base.ends_with(CONNECT_PATH) { base } else { format!("{base}{CONNECT_PATH}") };
        format!(
            "{path}?namespace={}&envoy_key={}&pool_name={}&version={}",
            encode(&self.namespace),
            encode(envoy_key),
            encode(&self.pool_name),
            self.host_version
        )
    }
}

/// Percent-encodes a query value (everything but RFC 3986 unreserved characters).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_is_built_and_escaped() {
        let c = ClientConfig { endpoint: "http://h:1/".into(), namespace: "a b".into(), ..Default::default() };
        assert_eq!(
            c.connect_url("k/1"),
            "ws://h:1/envoys/connect?namespace=a%20b&envoy_key=k%2F1&pool_name=default&version=1"
        );
        let c = ClientConfig { endpoint: "wss://h/envoys/connect".into(), ..Default::default() };
        assert!(c.connect_url("k").starts_with("wss://h/envoys/connect?"));
    }

    #[test]
    fn validation() {
        assert!(ClientConfig::default().validate().is_ok());
        let bad = ClientConfig { token: Some("has space".into()), ..Default::default() };
        assert!(matches!(bad.validate(), Err(Error::Config(_))));
        let bad = ClientConfig { endpoint: "tcp://x".into(), ..Default::default() };
        assert!(bad.validate().is_err());
        let bad = ClientConfig { min_protocol_version: 4, max_protocol_version: 3, ..Default::default() };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn the_sdk_offers_v6_and_nothing_newer() {
        assert_eq!(ClientConfig::default().max_protocol_version, 6);
        assert_eq!(SDK_PROTOCOL_VERSION, envoy_protocol::PROTOCOL_VERSION);
        for older in [4, 5] {
            let capped = ClientConfig { max_protocol_version: older, ..Default::default() };
            assert!(capped.validate().is_ok(), "a client may still cap itself at v{older}");
        }
        let v7 = ClientConfig { max_protocol_version: envoy_protocol::PROTOCOL_VERSION + 1, ..Default::default() };
        assert!(matches!(v7.validate(), Err(Error::Config(_))));
        let no_credit = ClientConfig { stream_credit_bytes: 0, ..Default::default() };
        assert!(matches!(no_credit.validate(), Err(Error::Config(_))));
    }
}
