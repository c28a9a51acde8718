//! Cluster routes of the admin API (cluster mode only; operator tokens as every admin route).
//!
//! - `GET /cluster` (read): this node, whether it serves, and every node with its health and actor count;
//! - `POST /node/drain` (write): moves every actor of this node to other live nodes (the node keeps running);
//! - `POST /cluster/actors/{id}/files/{name}?from=NODE&sha256=HEX` (write): a moving actor's file, from its
//!   owner (node to node; see `moves.rs`); refused unless etcd says the actor is `Moving` away from `from`;
//! - `POST /cluster/actors/{id}/adopt` (write): restores an actor whose owner is down onto this node from a
//!   backup (the body); refused while the owner's lease lives.

use super::directory::DirState;
use super::moves;
use crate::admin::{authorized, error, Need};
use crate::state::EngineState;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::sync::Arc;

/// The caller's identity if its role allows `need`, and the cluster node; or
/// the answer (401/403, or 404 for an engine not in cluster mode).
fn caller_and_node(
    state: &EngineState,
    headers: &HeaderMap,
    need: Need,
) -> Result<(crate::auth::Identity, Arc<super::ClusterNode>), Box<Response>> {
    let identity = authorized(state, headers, need)?;
    let node = state
        .cluster
        .clone()
        .ok_or_else(|| error(StatusCode::NOT_FOUND, "this engine is not in cluster mode (--cluster)"))?;
    Ok((identity, node))
}

pub async fn status(State(state): State<Arc<EngineState>>, headers: HeaderMap) -> Response {
    let node = match caller_and_node(&state, &headers, Need::Read) {
        Ok((_, n)) => n,
        Err(r) => return *r,
    };
    match node.directory.nodes().await {
        Ok(nodes) => Json(serde_json::json!({
            "node_id": node.id(),
            "serving": node.is_serving(),
            "draining": node.is_draining(),
            "lease": node.membership.lease_id(),
            "nodes": nodes,
        }))
        .into_response(),
        Err(e) => *error(StatusCode::SERVICE_UNAVAILABLE, format!("the cluster directory cannot be read: {e}")),
    }
}

pub async fn drain(State(state): State<Arc<EngineState>>, headers: HeaderMap) -> Response {
    let (identity, node) = match caller_and_node(&state, &headers, Need::Write) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    tracing::info!(identity = %identity.name, "node drain requested");
    Json(moves::drain_node(&state, &node).await).into_response()
}

/// Query of a moved file.
#[derive(Debug, serde::Deserialize)]
pub struct FileQuery {
    /// The sending node: must be the actor's owner, with the actor `Moving`.
    from: String,
    /// SHA-256 of the body (absent with `absent`).
    sha256: Option<String>,
    /// The sender has no such file: remove a stale one here.
    #[serde(default)]
    absent: Option<u8>,
}

pub async fn receive_file(
    State(state): State<Arc<EngineState>>,
    headers: HeaderMap,
    Path((id, name)): Path<(String, String)>,
    Query(q): Query<FileQuery>,
    body: Bytes,
) -> Response {
    let (identity, node) = match caller_and_node(&state, &headers, Need::Write) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let Some(name) = moves::ACTOR_FILES.iter().copied().find(|f| *f == name) else {
        return *error(StatusCode::BAD_REQUEST, format!("{name:?} is not an actor file"));
    };
    if !node.is_serving() {
        return *error(StatusCode::SERVICE_UNAVAILABLE, "this node lost its cluster lease");
    }
    let dir = match node.directory.get(&id).await {
        Ok(Some(d)) => d,
        Ok(None) => return *error(StatusCode::NOT_FOUND, format!("no actor with id {id}")),
        Err(e) => return *error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    if !identity.namespaces.allows(&dir.namespace) {
        return *error(StatusCode::NOT_FOUND, format!("no actor with id {id}"));
    }
    if dir.state != DirState::Moving || dir.owner != q.from || q.from == node.id() {
        return *error(
            StatusCode::CONFLICT,
            format!("actor {id} is not moving from node {} (owner {}, state {:?})", q.from, dir.owner, dir.state),
        );
    }
    let content = match (q.absent, q.sha256.as_deref()) {
        (Some(_), _) => None,
        (None, Some(sha)) => Some(sha.to_string()),
        (None, None) => return *error(StatusCode::BAD_REQUEST, "sha256 is required with a file"),
    };
    let folder = state.actor_dir(&id);
    let st = state.clone();
    let installed = tokio::task::spawn_blocking(move || {
        moves::install_file(&folder, name, content.as_deref().map(|sha| (&body[..], sha)))?;
        st.registry
            .ensure(&dir.actor_id, &dir.namespace, &dir.name, &dir.key, dir.generation)
            .map(|_| ())
            .map_err(|e| format!("registry: {e}"))
    })
    .await;
    match installed {
        Ok(Ok(())) => {
            tracing::info!(actor_id = %id, file = name, from = %q.from, "received a moving actor's file");
            Json(serde_json::json!({"actor_id": id, "file": name, "installed": true})).into_response()
        }
        Ok(Err(m)) => *error(StatusCode::BAD_REQUEST, m),
        Err(e) => *error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

pub async fn adopt(
    State(state): State<Arc<EngineState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let (identity, node) = match caller_and_node(&state, &headers, Need::Write) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let dir = match node.directory.get(&id).await {
        Ok(Some(d)) if identity.namespaces.allows(&d.namespace) => d,
        Ok(_) => return *error(StatusCode::NOT_FOUND, format!("no actor with id {id}")),
        Err(e) => return *error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    if dir.owner == node.id() {
        return *error(StatusCode::CONFLICT, "this node already owns the actor (use /actors/{id}/restore)");
    }
    // Staged and checked before etcd changes, so a bad file never leaves the actor Restoring.
    let folder = state.actor_dir(&id);
    let staged = {
        let folder = folder.clone();
        tokio::task::spawn_blocking(move || crate::backup::stage_database(&folder, "db.sqlite", &body)).await
    };
    let staged = match staged {
        Ok(Ok(p)) => p,
        Ok(Err(m)) => return *error(StatusCode::BAD_REQUEST, m),
        Err(e) => return *error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let adopted = match node.directory.adopt(&dir).await {
        Ok(d) => d,
        Err(e) => {
            let _ = std::fs::remove_file(&staged);
            let status = match e {
                super::ClusterError::OwnerAlive { .. } => StatusCode::CONFLICT,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            return *error(status, e.to_string());
        }
    };
    tracing::warn!(identity = %identity.name, actor_id = %id, from = %dir.owner, generation = adopted.generation,
        "adopting an actor of a node that is down, from a backup");
    let st = state.clone();
    let d = adopted.clone();
    let installed = tokio::task::spawn_blocking(move || {
        crate::backup::swap_in(&folder, "db.sqlite", Some(&staged)).map_err(|e| e.to_string())?;
        crate::backup::swap_in(&folder, "kv.sqlite", None).map_err(|e| e.to_string())?;
        st.registry
            .ensure(&d.actor_id, &d.namespace, &d.name, &d.key, d.generation)
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await;
    match installed {
        Ok(Ok(())) => {}
        Ok(Err(m)) => {
            return *error(StatusCode::INTERNAL_SERVER_ERROR, format!("{m} (the actor stays Restoring here)"))
        }
        Err(e) => return *error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
    match node.directory.set_state(&adopted, DirState::Active).await {
        Ok(d) => Json(serde_json::json!({
            "actor_id": id,
            "owner": node.id(),
            "generation": d.generation,
            "adopted_from": dir.owner,
        }))
        .into_response(),
        Err(e) => *error(StatusCode::SERVICE_UNAVAILABLE, format!("the database is in place but etcd: {e}")),
    }
}
