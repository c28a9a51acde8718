//! The HTTP surface: one axum router for the envoy WebSocket endpoint and the admin API.
//!
//! `/envoys/connect` upgrade: the token (subprotocol `envoy.token.<T>` or
//! `Authorization: Bearer <T>`) is compared in constant time (wrong → 401);
//! the version is the highest offered in `1..=max_protocol_version` (none →
//! 426 with `x-envoy-protocol-versions: 1-N`); the answer names exactly that
//! `envoy.vN` subprotocol, never the token. Message size is capped at
//! maxFrameBytes.

use crate::auth;
use crate::connection::{self, ConnectParams};
use crate::engine::EngineState;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
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
        .route("/actors", get(crate::admin::list))
        .route("/actors/{id}/stop", post(crate::admin::stop))
        .with_state(state)
}

/// The presented token: subprotocol first, then a bearer header.
fn presented_token(offer: &Offer, headers: &HeaderMap) -> Option<String> {
    offer.token.clone().or_else(|| {
        auth::bearer(headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())).map(str::to_string)
    })
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
    if !auth::token_ok(state.config.auth_token.as_deref(), token.as_deref()) {
        return (StatusCode::UNAUTHORIZED, "missing or wrong token").into_response();
    }
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
    if state.shutdown.is_shutdown() {
        return (StatusCode::SERVICE_UNAVAILABLE, "engine shutting down").into_response();
    }
    let max_frame = state.config.limits.max_frame_bytes as usize;
    ws.protocols([version_subprotocol(version)])
        .max_message_size(max_frame)
        .max_frame_size(max_frame)
        .on_upgrade(move |socket| connection::serve(socket, state, params, version))
}
