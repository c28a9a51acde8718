//! Admin HTTP API (same port and token as the envoy endpoint; `Authorization: Bearer <token>`).
//!
//! - `GET /health` → `{"status":"ok"}`
//! - `GET /actors` → `[{namespace, id, name, key, state, generation, envoy, inflight}]`
//! - `POST /actors/{id}/stop` → drains, then `{actor_id, generation, duration_ms, interrupted, ...}`

use crate::auth;
use crate::engine::EngineState;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use std::sync::Arc;

/// One row of `GET /actors`.
#[derive(Debug, Serialize, serde::Deserialize, Clone, PartialEq)]
pub struct ActorView {
    /// Tenant the actor belongs to.
    pub namespace: String,
    /// Engine-assigned actor id (what `actors stop` takes).
    pub id: String,
    /// Name the envoy addresses the actor by.
    pub name: String,
    /// Key the envoy addresses the actor by.
    pub key: String,
    /// `starting`, `running`, `stopping` or `stopped`.
    pub state: String,
    /// Current generation (raised on every start).
    pub generation: u64,
    /// Envoy key it is placed on; null when unplaced.
    pub envoy: Option<String>,
    /// Requests of the current generation accepted and not yet answered.
    pub inflight: usize,
}

fn authorized(state: &EngineState, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let presented = auth::bearer(headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()));
    if auth::token_ok(state.config.auth_token.as_deref(), presented) {
        Ok(())
    } else {
        Err(Box::new(
            (StatusCode::UNAUTHORIZED, Json(serde_json::json!({"error": "missing or wrong token"}))).into_response(),
        ))
    }
}

pub async fn health(State(state): State<Arc<EngineState>>, headers: HeaderMap) -> Response {
    if let Err(r) = authorized(&state, &headers) {
        return *r;
    }
    let status = if state.shutdown.is_shutdown() { "shutting_down" } else { "ok" };
    Json(serde_json::json!({ "status": status })).into_response()
}

pub async fn list(State(state): State<Arc<EngineState>>, headers: HeaderMap) -> Response {
    if let Err(r) = authorized(&state, &headers) {
        return *r;
    }
    let rows: Vec<ActorView> = state
        .registry
        .list()
        .into_iter()
        .map(|a| ActorView {
            inflight: state.inflight.count(&a.actor_id, a.generation),
            state: serde_json::to_value(a.state).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default(),
            namespace: a.namespace,
            id: a.actor_id,
            name: a.name,
            key: a.key,
            generation: a.generation,
            envoy: a.envoy,
        })
        .collect();
    Json(rows).into_response()
}

pub async fn stop(State(state): State<Arc<EngineState>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Err(r) = authorized(&state, &headers) {
        return *r;
    }
    match crate::drain::drain(&state, &id, None, envoy_protocol::StopReason::Operator, true).await {
        Ok(report) => Json(report).into_response(),
        Err(crate::drain::StopError::NotFound(id)) => {
            (StatusCode::NOT_FOUND, Json(serde_json::json!({"error": format!("no actor with id {id}")}))).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, Json(serde_json::json!({"error": e.to_string()}))).into_response(),
    }
}
