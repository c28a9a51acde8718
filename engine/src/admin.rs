//! Admin HTTP API (same port and tokens as the envoy endpoint; `Authorization: Bearer <token>`).
//!
//! - `GET /health` → `{"status":"ok"}` (any valid token)
//! - `GET /actors` → `[{namespace, id, name, key, state, generation, envoy, inflight}]`
//!   (roles `operator` and `read_only_operator`; only the token's namespaces)
//! - `GET /metrics` → Prometheus text of every metric (roles `operator` and
//!   `read_only_operator`; engine-wide, not filtered by namespace; see `metrics.rs`)
//! - `POST /actors/{id}/stop` → drains, then `{actor_id, generation, duration_ms, interrupted, ...}`
//!   (role `operator`; an actor outside the token's namespaces answers 404, as if absent)
//!
//! No token or a wrong one → 401; a valid token whose role lacks the right → 403.

use crate::auth::{self, Identity};
use crate::state::EngineState;
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
    /// Bytes of its SQL database on disk (the file and its WAL), 0 before it first opened.
    #[serde(default)]
    pub db_bytes: u64,
}

/// `GET /actors` filters.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListFilter {
    /// Only this namespace.
    pub namespace: Option<String>,
    /// Only actors in this state (`starting`, `running`, `stopping`, `stopped`).
    pub state: Option<String>,
}

/// Bytes of an actor's SQL database on disk (file + WAL).
pub fn db_bytes(state: &EngineState, actor_id: &str) -> u64 {
    let dir = state.actor_dir(actor_id);
    ["db.sqlite", "db.sqlite-wal"].iter().filter_map(|f| std::fs::metadata(dir.join(f)).ok()).map(|m| m.len()).sum()
}

/// The admin view of one actor.
pub fn view(state: &EngineState, a: crate::actor::registry::ActorRecord) -> ActorView {
    ActorView {
        inflight: state.generations.inflight(&a.actor_id, a.generation),
        db_bytes: db_bytes(state, &a.actor_id),
        state: serde_json::to_value(a.state).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default(),
        namespace: a.namespace,
        id: a.actor_id,
        name: a.name,
        key: a.key,
        generation: a.generation,
        envoy: a.envoy,
    }
}

/// What a route needs from the caller's role.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Need {
    /// Any valid token.
    Any,
    /// `operator` or `read_only_operator`.
    Read,
    /// `operator`.
    Write,
}

pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Box<Response> {
    Box::new((status, Json(serde_json::json!({"error": message.into()}))).into_response())
}

/// The caller's identity, if its token is valid and its role allows `need`.
pub(crate) fn authorized(state: &EngineState, headers: &HeaderMap, need: Need) -> Result<Identity, Box<Response>> {
    let presented = auth::bearer(headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()));
    let Some(identity) = auth::authenticate(&state.config, presented) else {
        return Err(error(StatusCode::UNAUTHORIZED, "missing or wrong token"));
    };
    let allowed = match need {
        Need::Any => true,
        Need::Read => identity.role.may_admin_read(),
        Need::Write => identity.role.may_admin_write(),
    };
    if !allowed {
        tracing::warn!(identity = %identity.name, role = %identity.role, ?need, "admin request refused: role");
        let message = format!("this token's role ({}) may not call this route", identity.role);
        return Err(error(StatusCode::FORBIDDEN, message));
    }
    Ok(identity)
}

pub async fn health(State(state): State<Arc<EngineState>>, headers: HeaderMap) -> Response {
    if let Err(r) = authorized(&state, &headers, Need::Any) {
        return *r;
    }
    let status = if state.shutdown.is_shutdown() { "shutting_down" } else { "ok" };
    Json(serde_json::json!({ "status": status, "durability": state.config.durability.as_str() })).into_response()
}

pub async fn list(
    State(state): State<Arc<EngineState>>,
    headers: HeaderMap,
    axum::extract::Query(filter): axum::extract::Query<ListFilter>,
) -> Response {
    let identity = match authorized(&state, &headers, Need::Read) {
        Ok(i) => i,
        Err(r) => return *r,
    };
    let rows: Vec<ActorView> = state
        .registry
        .list()
        .into_iter()
        .filter(|a| identity.namespaces.allows(&a.namespace))
        .filter(|a| filter.namespace.as_deref().is_none_or(|n| n == a.namespace))
        .map(|a| view(&state, a))
        .filter(|v| filter.state.as_deref().is_none_or(|s| s == v.state))
        .collect();
    Json(rows).into_response()
}

pub async fn metrics(State(state): State<Arc<EngineState>>, headers: HeaderMap) -> Response {
    if let Err(r) = authorized(&state, &headers, Need::Read) {
        return *r;
    }
    match state.metrics.render(&state) {
        Ok(text) => ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "rendering metrics failed");
            *error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
    }
}

pub async fn stop(State(state): State<Arc<EngineState>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let identity = match authorized(&state, &headers, Need::Write) {
        Ok(i) => i,
        Err(r) => return *r,
    };
    // An actor of a namespace the token cannot reach is reported absent, not forbidden:
    // a tenant learns nothing about another tenant's actor ids.
    let reachable = state.registry.with(&id, |a| a.is_some_and(|a| identity.namespaces.allows(&a.namespace)));
    if !reachable {
        return *error(StatusCode::NOT_FOUND, format!("no actor with id {id}"));
    }
    tracing::info!(identity = %identity.name, actor_id = %id, "operator stop");
    match crate::drain::drain(&state, &id, None, envoy_protocol::StopReason::Operator, true).await {
        Ok(report) => Json(report).into_response(),
        Err(crate::drain::StopError::NotFound(id)) => {
            (StatusCode::NOT_FOUND, Json(serde_json::json!({"error": format!("no actor with id {id}")})))
                .into_response()
        }
        Err(e) => {
            (StatusCode::INTERNAL_SERVER_ERROR, Json(serde_json::json!({"error": e.to_string()}))).into_response()
        }
    }
}
