//! The HTTP surface: one axum router for the envoy WebSocket endpoint and the admin API.
//!
//! Every route: a request carrying an `Origin` header not in `--allowed-origin`
//! is refused with 403 before anything else (browsers send `Origin` on every
//! WebSocket upgrade and cross-site POST; the CLI, the SDK and the JS hosts we
//! run in send none). On an engine without tokens (loopback only), a request
//! whose `Host` is not a loopback name is refused with 403 too: a page that
//! rebinds its own domain name to 127.0.0.1 (DNS rebinding) sends no `Origin`
//! on same-origin GETs, but its `Host` still names its own domain.
//!
//! `/envoys/connect` upgrade, in order:
//! 1. the token (subprotocol `envoy.token.<T>` or `Authorization: Bearer <T>`)
//!    must prove an identity (see `auth`): missing or wrong → 401;
//! 2. the version is the highest offered in `1..=max_protocol_version` (none →
//!    426 with `x-envoy-protocol-versions: 1-N`); the answer names exactly that
//!    `envoy.vN` subprotocol, never the token;
//! 3. `namespace` and `envoy_key` must be non-empty → else 400;
//! 4. the identity must be allowed to connect in that namespace → else 403;
//! 5. a live session for (namespace, envoy_key) created by another identity
//!    cannot be resumed or evicted → 403 (re-checked when the hello attaches the
//!    session; a race lost there closes with 4001 UNAUTHORIZED).
//!
//! Message size is capped at maxFrameBytes.

use crate::auth::{self, Identity};
use crate::connection::{self, ConnectParams};
use crate::state::EngineState;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use envoy_protocol::negotiation::{version_subprotocol, Offer};
use envoy_protocol::{close, MIN_PROTOCOL_VERSION};
use std::sync::Arc;

/// The engine's router.
pub fn router(state: Arc<EngineState>) -> Router {
    Router::new()
        .route("/envoys/connect", get(connect))
        .route("/health", get(crate::admin::health))
        .route("/actors", get(crate::admin::list).post(crate::manage::create))
        .route("/actors/{id}", axum::routing::delete(crate::manage::delete))
        .route("/metrics", get(crate::admin::metrics))
        .route("/actors/{id}/stop", post(crate::admin::stop))
        .route("/actors/{id}/sql", post(crate::inspect::sql))
        .route("/actors/{id}/backup", get(crate::backup::backup))
        .route(
            "/actors/{id}/restore",
            post(crate::backup::restore)
                .layer(axum::extract::DefaultBodyLimit::max(crate::backup::DEFAULT_MAX_RESTORE_BYTES)),
        )
        .merge(cluster_routes())
        .layer(middleware::from_fn_with_state(state.clone(), origin_guard))
        .layer(middleware::from_fn_with_state(state.clone(), host_guard))
        .with_state(state)
}

/// The cluster routes (`cluster::http`); none without the `cluster` feature.
fn cluster_routes() -> Router<Arc<EngineState>> {
    #[cfg(feature = "cluster")]
    {
        use crate::cluster::http;
        Router::new()
            .route("/cluster", get(http::status))
            .route("/node/drain", post(http::drain))
            .route(
                "/cluster/actors/{id}/files/{name}",
                post(http::receive_file)
                    .layer(axum::extract::DefaultBodyLimit::max(crate::backup::DEFAULT_MAX_RESTORE_BYTES)),
            )
            .route(
                "/cluster/actors/{id}/adopt",
                post(http::adopt).layer(axum::extract::DefaultBodyLimit::max(crate::backup::DEFAULT_MAX_RESTORE_BYTES)),
            )
    }
    #[cfg(not(feature = "cluster"))]
    Router::new()
}

/// Whether every `Origin` header of a request is in the allow-list (exact match).
/// No `Origin` at all: allowed (not a browser).
pub fn origins_allowed<'a>(allowed: &[String], mut origins: impl Iterator<Item = &'a HeaderValue>) -> bool {
    origins.all(|o| allowed.iter().any(|a| a.as_bytes() == o.as_bytes()))
}

/// Refuses browser requests from origins that were not allowed.
async fn origin_guard(State(state): State<Arc<EngineState>>, req: Request, next: Next) -> Response {
    if !origins_allowed(&state.config.allowed_origins, req.headers().get_all(header::ORIGIN).iter()) {
        let origin = req.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok()).unwrap_or("?");
        tracing::warn!(origin, path = %req.uri().path(), "refused a request from a browser origin not allowed");
        return (
            StatusCode::FORBIDDEN,
            "requests from browser origins are refused unless allowed with --allowed-origin\n",
        )
            .into_response();
    }
    next.run(req).await
}

/// Whether a `Host` header value names this machine's loopback: `localhost`,
/// `127.0.0.1` (any 127/8 address) or `[::1]`, with or without a port.
pub fn host_is_loopback(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        match rest.split_once(']') {
            Some((v6, after)) if after.is_empty() || after.starts_with(':') => v6,
            _ => return false,
        }
    } else {
        host.rsplit_once(':').map_or(host, |(h, port)| if port.bytes().all(|b| b.is_ascii_digit()) { h } else { host })
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Refuses, on an engine without tokens, requests addressed to a name other than loopback.
async fn host_guard(State(state): State<Arc<EngineState>>, req: Request, next: Next) -> Response {
    if !auth::tokens_configured(&state.config) {
        let host = req.headers().get(header::HOST).and_then(|v| v.to_str().ok());
        if !host.is_some_and(host_is_loopback) {
            tracing::warn!(host = host.unwrap_or("(none)"), path = %req.uri().path(), "refused a request not addressed to loopback");
            return (
                StatusCode::FORBIDDEN,
                "an engine without tokens only answers requests addressed to localhost or a loopback address\n",
            )
                .into_response();
        }
    }
    next.run(req).await
}

/// The presented token: subprotocol first, then a bearer header.
fn presented_token(offer: &Offer, headers: &HeaderMap) -> Option<String> {
    offer
        .token
        .clone()
        .or_else(|| auth::bearer(headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())).map(str::to_string))
}

async fn connect(
    State(state): State<Arc<EngineState>>,
    Query(params): Query<ConnectParams>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let offered: Vec<&str> =
        headers.get_all(header::SEC_WEBSOCKET_PROTOCOL).iter().filter_map(|v| v.to_str().ok()).collect();
    let offer = Offer::parse(offered);
    let token = presented_token(&offer, &headers);
    let Some(identity) = auth::authenticate(&state.config, token.as_deref()) else {
        return (StatusCode::UNAUTHORIZED, "missing or wrong token").into_response();
    };
    let max = state.config.max_protocol_version;
    let Some(version) = offer.select(MIN_PROTOCOL_VERSION, max) else {
        return (
            StatusCode::from_u16(close::NO_COMMON_VERSION_STATUS).unwrap_or(StatusCode::UPGRADE_REQUIRED),
            [(close::VERSIONS_HEADER, format!("{MIN_PROTOCOL_VERSION}-{max}"))],
            format!("no common envoy protocol version; this engine speaks {MIN_PROTOCOL_VERSION}-{max}"),
        )
            .into_response();
    };
    if params.namespace.is_empty() || params.envoy_key.is_empty() {
        return (StatusCode::BAD_REQUEST, "namespace and envoy_key must not be empty").into_response();
    }
    if let Err(refusal) = may_take(&state, &identity, &params) {
        tracing::warn!(identity = %identity.name, namespace = %params.namespace, envoy_key = %params.envoy_key,
            "envoy connection refused: {refusal}");
        return (StatusCode::FORBIDDEN, refusal).into_response();
    }
    if state.shutdown.is_shutdown() {
        return (StatusCode::SERVICE_UNAVAILABLE, "engine shutting down").into_response();
    }
    let max_frame = state.config.limits.max_frame_bytes as usize;
    ws.protocols([version_subprotocol(version)])
        .max_message_size(max_frame)
        .max_frame_size(max_frame)
        .on_upgrade(move |socket| connection::serve(socket, state, params, version, identity, token))
}

/// Whether `identity` may connect with `params`: its role and namespaces allow it,
/// and the envoy key is not held by a live session of another identity.
fn may_take(state: &EngineState, identity: &Identity, params: &ConnectParams) -> Result<(), String> {
    if !identity.role.may_connect() {
        return Err(format!("this token's role ({}) may not connect as an envoy", identity.role));
    }
    if !identity.may_connect(&params.namespace) {
        return Err(format!("this token may not connect in namespace {:?}", params.namespace));
    }
    if let Some(owner) = state.sessions.owner_of(&params.namespace, &params.envoy_key) {
        if owner != identity.name {
            return Err(format!(
                "envoy key {:?} belongs to a session of another identity; it can be neither resumed nor evicted",
                params.envoy_key
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in ["127.0.0.1:6420", "localhost", "LOCALHOST:1", "[::1]:6420", "[::1]", "127.0.0.2"] {
            assert!(host_is_loopback(h), "{h}");
        }
        for h in
            ["evil.example", "evil.example:6420", "10.0.0.1:6420", "[::2]:1", "localhost.evil.example", "[::1]x", ""]
        {
            assert!(!host_is_loopback(h), "{h}");
        }
    }

    #[test]
    fn origins() {
        let allowed = vec!["https://app.example".to_string()];
        let v = |s: &'static str| HeaderValue::from_static(s);
        assert!(origins_allowed(&allowed, [].iter()));
        assert!(origins_allowed(&allowed, [v("https://app.example")].iter()));
        assert!(!origins_allowed(&allowed, [v("https://app.example.evil")].iter()));
        assert!(!origins_allowed(&allowed, [v("HTTPS://APP.EXAMPLE")].iter()));
        assert!(!origins_allowed(&allowed, [v("https://app.example"), v("null")].iter()));
        assert!(!origins_allowed(&[], [v("null")].iter()));
    }
}
