//! Operator SQL on an actor's database without moving the actor:
//! `POST /actors/{id}/sql` with `{"sql": "...", "params": [...], "write": false}`.
//!
//! The statement runs through the actor's own executor (the same writer and
//! readers its envoy's requests use, for its current generation), so the actor
//! keeps its placement and generation and its envoy never notices. Read-only
//! unless the call says `"write": true`: a read runs on a read-only reader
//! connection, and a statement that would write is refused (403). A write runs
//! on the actor's writer like any of its own writes (and, in protocol v≤4, must
//! not leave a transaction open). A live actor's inspection is counted in
//! flight, so a drain waits for it; an actor that is not running is opened for
//! the one statement and closed again. Roles: reading needs operator or
//! read-only operator; writing needs operator.
//!
//! Values in JSON: null, numbers (integers stay exact), strings, and
//! `{"blob": "<hex>"}` for BLOBs; non-finite REALs come back as strings.

use crate::actor::registry::ActorState;
use crate::admin::{authorized, error, Need};
use crate::sql::executor::ExecuteOutcome;
use crate::sql::route::{Lane, Route};
use crate::state::EngineState;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use envoy_protocol::{SqliteRoute, Value};
use std::sync::Arc;

/// The body of `POST /actors/{id}/sql`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlRequest {
    /// One statement.
    pub sql: String,
    /// Its parameters (`?`, `?NNN`), as JSON values.
    #[serde(default)]
    pub params: Vec<serde_json::Value>,
    /// Whether the statement may write (operator role); default read-only.
    #[serde(default)]
    pub write: bool,
}

/// A JSON parameter as a SQLite value.
fn to_value(v: &serde_json::Value) -> Result<Value, String> {
    Ok(match v {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Integer(i64::from(*b)),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Float(n.as_f64().ok_or_else(|| format!("number {n} is not representable"))?),
        },
        serde_json::Value::String(s) => Value::Text(s.clone()),
        serde_json::Value::Object(o) if o.len() == 1 && o.get("blob").is_some_and(serde_json::Value::is_string) => {
            let hex = o["blob"].as_str().unwrap_or_default();
            Value::Blob(decode_hex(hex).ok_or_else(|| format!("blob {hex:?} is not hex"))?)
        }
        other => return Err(format!("parameter {other} is not null, a number, a string or {{\"blob\": \"<hex>\"}}")),
    })
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// A SQLite value as JSON (integers exact, blobs as hex, non-finite REALs as strings).
pub fn to_json(v: &Value) -> serde_json::Value {
    match v {
        Value::Null => serde_json::Value::Null,
        Value::Integer(i) => (*i).into(),
        Value::Float(f) => {
            serde_json::Number::from_f64(*f).map_or_else(|| f.to_string().into(), serde_json::Value::Number)
        }
        Value::Text(t) => t.clone().into(),
        Value::Blob(b) => serde_json::json!({ "blob": b.iter().map(|x| format!("{x:02x}")).collect::<String>() }),
    }
}

pub async fn sql(
    State(state): State<Arc<EngineState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<SqlRequest>,
) -> Response {
    let identity = match authorized(&state, &headers, if body.write { Need::Write } else { Need::Read }) {
        Ok(i) => i,
        Err(r) => return *r,
    };
    let params = match body.params.iter().map(to_value).collect::<Result<Vec<_>, _>>() {
        Ok(p) => p,
        Err(m) => return *error(StatusCode::BAD_REQUEST, m),
    };
    if let Err(rej) = crate::connection::admission::check_sql(&state.config.limits, &body.sql, &params) {
        let message = match rej.to_sqlite() {
            Ok(_) => "refused".to_string(),
            Err(e) => e.message,
        };
        return *error(StatusCode::BAD_REQUEST, message);
    }
    let route = match Route::of_execute(&body.sql, body.write) {
        Ok(r) => r,
        Err(m) => return *error(StatusCode::BAD_REQUEST, m),
    };
    // The actor's current generation; a live one is counted in flight (taken under the
    // registry's lock, so a drain either sees it or refuses it, as for envoy requests).
    let found = state.registry.with(&id, |rec| {
        let rec = rec.filter(|r| identity.namespaces.allows(&r.namespace))?;
        let live = matches!(rec.state, ActorState::Starting | ActorState::Running);
        Some((rec.generation, rec.state, live.then(|| state.generations.acquire(&rec.actor_id, rec.generation))))
    });
    let Some((generation, actor_state, inflight)) = found else {
        return *error(StatusCode::NOT_FOUND, format!("no actor with id {id}"));
    };
    if actor_state == ActorState::Stopping {
        return *error(StatusCode::CONFLICT, "the actor is stopping; try again once it stopped or runs again");
    }
    let (executor, detached) = match inflight {
        Some(_) => (
            state.generations.executor_or_create(&id, generation, || state.actor_dir(&id), &state.exec_settings),
            false,
        ),
        None => {
            (state.generations.detached_executor(&id, generation, state.actor_dir(&id), &state.exec_settings), true)
        }
    };
    tracing::info!(identity = %identity.name, actor_id = %id, generation, write = body.write, "operator SQL");
    let lane = if body.write { Lane::Writer } else { Lane::Reader };
    let sql = body.sql;
    let ran = tokio::task::spawn_blocking(move || {
        let outcome = match executor.enter() {
            Ok(_in_use) => Some(executor.execute(lane, &sql, &route, &params, body.write)),
            Err(message) => {
                return Err(message);
            }
        };
        if detached {
            executor.close();
        }
        Ok(outcome)
    })
    .await;
    drop(inflight);
    let outcome = match ran {
        Ok(Ok(Some(o))) => o,
        Ok(Ok(None)) => return *error(StatusCode::INTERNAL_SERVER_ERROR, "nothing ran"),
        Ok(Err(message)) => return *error(StatusCode::SERVICE_UNAVAILABLE, message),
        Err(e) => return *error(StatusCode::INTERNAL_SERVER_ERROR, format!("the statement's thread failed: {e}")),
    };
    match outcome {
        ExecuteOutcome::Bounce => *error(
            StatusCode::FORBIDDEN,
            "the statement writes; inspection is read-only unless the call says \"write\": true (operator role)",
        ),
        ExecuteOutcome::Done(Err(e)) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(serde_json::json!({
                "error": e.message,
                "code": format!("{:?}", e.code),
                "extended_code": e.extended_code,
                "committed": e.committed,
            })),
        )
            .into_response(),
        ExecuteOutcome::Done(Ok(r)) => Json(serde_json::json!({
            "columns": r.columns,
            "rows": r.rows.iter().map(|row| row.iter().map(to_json).collect::<Vec<_>>()).collect::<Vec<_>>(),
            "changes": r.changes,
            "last_insert_row_id": r.last_insert_row_id,
            "route": match r.route {
                SqliteRoute::Read => "read",
                SqliteRoute::Write => "write",
                SqliteRoute::WriteFallback => "write_fallback",
            },
            "generation": generation,
        }))
        .into_response(),
    }
}
