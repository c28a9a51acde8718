//! Where the shell's statements go: the engine's operator SQL for an actor that
//! exists (`POST /actors/{id}/sql`: the actor stays where it runs, same
//! generation), or the shell's own envoy connection (`--as-envoy`, or an actor
//! that does not exist yet: that creates it and places it on the shell).

use super::Output;
use crate::inspect::to_json;
use anyhow::Context;
use envoy_client::{ActorHandle, Db, Rows, Value};

/// The shell's way to an actor's database.
pub enum Backend {
    /// Joined as an envoy: the actor is placed on the shell (moved from its host).
    Envoy {
        /// The actor's SQL handle.
        db: Db,
        /// The actor as placed on the shell (id, generation for the banner).
        actor: ActorHandle,
    },
    /// The operator SQL route: the actor is not moved.
    Admin {
        /// `http://host:port` of the engine.
        url: String,
        /// Operator token, if the engine has tokens.
        token: Option<String>,
        /// The actor's id.
        actor_id: String,
        /// Its generation when the shell started (shown; the route never changes it).
        generation: u64,
        /// Whether statements may write (`--write`).
        write: bool,
    },
}

/// A JSON value from the admin route as a SQLite value.
fn from_json(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Integer(i64::from(*b)),
        serde_json::Value::Number(n) => {
            n.as_i64().map_or_else(|| Value::Float(n.as_f64().unwrap_or(f64::NAN)), Value::Integer)
        }
        serde_json::Value::String(s) => Value::Text(s.clone()),
        serde_json::Value::Object(o) => match o.get("blob").and_then(serde_json::Value::as_str) {
            Some(hex) => Value::Blob(
                (0..hex.len() / 2).filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()).collect(),
            ),
            None => Value::Text(v.to_string()),
        },
        serde_json::Value::Array(_) => Value::Text(v.to_string()),
    }
}

impl Backend {
    /// One line saying what the shell is connected to.
    pub fn banner(&self) -> String {
        match self {
            Backend::Envoy { actor, .. } => format!(
                "actor {} (name {:?}, key {:?}, generation {}) placed on this shell's envoy",
                actor.id(),
                actor.name(),
                actor.key(),
                actor.generation()
            ),
            Backend::Admin { actor_id, generation, write, .. } => format!(
                "actor {actor_id} (generation {generation}) through the operator SQL route, {}; it stays where it runs",
                if *write { "read-write" } else { "read-only (--write to allow writes)" }
            ),
        }
    }

    /// Runs one statement (the text between two top-level `;`).
    pub async fn run_one(&self, stmt: &str) -> anyhow::Result<Output> {
        match self {
            Backend::Envoy { db, .. } => {
                if super::statements::needs_exec(stmt) {
                    // e.g. CREATE TRIGGER … BEGIN …; END: several `;` but one statement.
                    let rows = db.exec(stmt).await.map_err(|e| anyhow::anyhow!("{e}"))?;
                    return Ok(Output { rows, changes: None });
                }
                let out = db.execute(stmt, ()).await.map_err(|e| anyhow::anyhow!("{e}"))?;
                Ok(Output { rows: out.rows, changes: Some(out.changes) })
            }
            Backend::Admin { .. } => {
                let (rows, changes) = self.admin(stmt, &[]).await?;
                Ok(Output { rows, changes: Some(changes) })
            }
        }
    }

    /// Runs a read with parameters (the dot commands).
    pub async fn query(&self, sql: &str, params: &[Value]) -> anyhow::Result<Rows> {
        match self {
            Backend::Envoy { db, .. } => db.query(sql, params.to_vec()).await.map_err(|e| anyhow::anyhow!("{e}")),
            Backend::Admin { .. } => Ok(self.admin(sql, params).await?.0),
        }
    }

    async fn admin(&self, sql: &str, params: &[Value]) -> anyhow::Result<(Rows, u64)> {
        let Backend::Admin { url, token, actor_id, write, .. } = self else { unreachable!("admin backend") };
        let body =
            serde_json::json!({ "sql": sql, "params": params.iter().map(to_json).collect::<Vec<_>>(), "write": write });
        let (status, text) = crate::cli::http_request_with_body(
            url,
            "POST",
            &format!("/actors/{actor_id}/sql"),
            token.as_deref(),
            Some(&body.to_string()),
        )
        .await?;
        let v: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("HTTP {status}: {text}"))?;
        if status != 200 {
            anyhow::bail!("{}", v["error"].as_str().unwrap_or(&text));
        }
        let columns: Vec<String> =
            v["columns"].as_array().into_iter().flatten().map(|c| c.as_str().unwrap_or_default().to_string()).collect();
        let rows: Vec<Vec<Value>> = v["rows"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| r.as_array().into_iter().flatten().map(from_json).collect())
            .collect();
        Ok((Rows::from_parts(columns, rows), v["changes"].as_u64().unwrap_or(0)))
    }
}
