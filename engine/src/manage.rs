//! Actor management on the admin API:
//! - `POST /actors` `{"namespace", "name", "key"}` creates an actor (Stopped, not
//!   placed: the first envoy to get-or-create it starts generation 1) and answers
//!   its view; an existing one is answered as it is (`created: false`);
//! - `DELETE /actors/{id}` stops it (a drain, as `stop`), then deletes its files
//!   and forgets it; its name and key become free (a later get-or-create makes a
//!   new actor with a new id, so no generation of an id is ever reused).
//!
//! Both need the operator role and a namespace the token may reach. In cluster
//! mode both go through the directory in etcd: create makes the actor owned by
//! this node (or answers the existing one, wherever it lives); delete is done by
//! the owner only (409 elsewhere, naming the owner).

use crate::admin::{authorized, error, view, Need};
use crate::state::EngineState;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::sync::Arc;

/// The body of `POST /actors`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateActor {
    /// Tenant namespace of the actor.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its key (may be empty).
    #[serde(default)]
    pub key: String,
}

pub async fn create(
    State(state): State<Arc<EngineState>>,
    headers: HeaderMap,
    Json(body): Json<CreateActor>,
) -> Response {
    let identity = match authorized(&state, &headers, Need::Write) {
        Ok(i) => i,
        Err(r) => return *r,
    };
    if !identity.namespaces.allows(&body.namespace) {
        return *error(StatusCode::FORBIDDEN, format!("this token may not use namespace {:?}", body.namespace));
    }
    let max = crate::actor::lifecycle::MAX_NAME_BYTES;
    if body.namespace.is_empty() || body.name.is_empty() || body.name.len() > max || body.key.len() > max {
        return *error(
            StatusCode::BAD_REQUEST,
            format!("namespace and name must be non-empty; name and key at most {max} bytes"),
        );
    }
    #[cfg(feature = "cluster")]
    if let Some(node) = &state.cluster {
        let (dir, created) = match node.directory.get_or_create(&body.namespace, &body.name, &body.key).await {
            Ok(x) => x,
            Err(e) => return *error(StatusCode::SERVICE_UNAVAILABLE, format!("cluster directory: {e}")),
        };
        if dir.owner != node.id() {
            return (
                StatusCode::OK,
                Json(serde_json::json!({"id": dir.actor_id, "owner": dir.owner, "created": false})),
            )
                .into_response();
        }
        if let Err(e) = state.registry.ensure(&dir.actor_id, &dir.namespace, &dir.name, &dir.key, dir.generation) {
            return *error(StatusCode::INTERNAL_SERVER_ERROR, format!("registry: {e}"));
        }
        let rec = state.registry.get(&dir.actor_id);
        let status = if created { StatusCode::CREATED } else { StatusCode::OK };
        let mut v = rec.map(|r| serde_json::to_value(view(&state, r)).unwrap_or_default()).unwrap_or_default();
        v["created"] = created.into();
        v["owner"] = node.id().into();
        return (status, Json(v)).into_response();
    }
    match state.registry.get_or_insert(&body.namespace, &body.name, &body.key) {
        Ok((rec, created)) => {
            tracing::info!(identity = %identity.name, actor_id = %rec.actor_id, created, "operator create");
            let status = if created { StatusCode::CREATED } else { StatusCode::OK };
            let mut v = serde_json::to_value(view(&state, rec)).unwrap_or_default();
            v["created"] = created.into();
            (status, Json(v)).into_response()
        }
        Err(e) => *error(StatusCode::INTERNAL_SERVER_ERROR, format!("registry: {e}")),
    }
}

pub async fn delete(State(state): State<Arc<EngineState>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let identity = match authorized(&state, &headers, Need::Write) {
        Ok(i) => i,
        Err(r) => return *r,
    };
    if !state.registry.with(&id, |a| a.is_some_and(|a| identity.namespaces.allows(&a.namespace))) {
        return *error(StatusCode::NOT_FOUND, format!("no actor with id {id}"));
    }
    // No placement of this actor while it is drained and deleted.
    let lock = state.placement_lock(&id);
    let _placing = lock.lock().await;
    let report = match crate::drain::drain(&state, &id, None, envoy_protocol::StopReason::Operator, true).await {
        Ok(r) => r,
        Err(e) => return *error(StatusCode::INTERNAL_SERVER_ERROR, format!("stopping the actor: {e}")),
    };
    #[cfg(feature = "cluster")]
    if let Some(node) = &state.cluster {
        match node.directory.get(&id).await {
            Ok(Some(dir)) if dir.owner == node.id() => {
                if let Err(e) = node.directory.remove(&dir).await {
                    return *error(StatusCode::SERVICE_UNAVAILABLE, format!("cluster directory: {e}"));
                }
            }
            Ok(Some(dir)) => {
                return *error(StatusCode::CONFLICT, format!("node {} owns this actor: delete it there", dir.owner))
            }
            Ok(None) => {}
            Err(e) => return *error(StatusCode::SERVICE_UNAVAILABLE, format!("cluster directory: {e}")),
        }
    }
    match state.registry.remove(&id) {
        Ok(true) => {}
        Ok(false) => return *error(StatusCode::CONFLICT, "the actor could not be stopped for deletion; try again"),
        Err(e) => return *error(StatusCode::INTERNAL_SERVER_ERROR, format!("registry: {e}")),
    }
    let dir = state.actor_dir(&id);
    let removed = tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    })
    .await;
    tracing::info!(identity = %identity.name, actor_id = %id, "operator delete");
    match removed {
        Ok(Ok(())) => {
            Json(serde_json::json!({"actor_id": id, "deleted": true, "stopped_generation": report.generation}))
                .into_response()
        }
        Ok(Err(e)) => {
            *error(StatusCode::INTERNAL_SERVER_ERROR, format!("the actor is forgotten but its files remain: {e}"))
        }
        Err(e) => *error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
