//! Checks every SQL/KV request passes before any work starts.
//!
//! Order: the actor exists in the connection's namespace (ACTOR_NOT_FOUND), is
//! placed on this very envoy (ACTOR_NOT_PLACED), the generation is current
//! (fence mismatch with the current generation), it is not stopping
//! (ACTOR_STOPPING), then request limits (LIMIT_EXCEEDED / INVALID_REQUEST),
//! then the connection's pending-request bound (OVERLOADED).
//!
//! The in-flight guard is taken *while the registry's lock is held*, right
//! after the placement check passed ([`check_and_count`]): a drain marks the
//! actor Stopping (under the same lock) and then reads the count, so a request
//! either sees Stopping or is counted by the drain — never neither. Taking the
//! guard inside the check, rather than before it, means in-flight counters exist
//! only for real, live (actor, generation)s: a request naming an unknown actor
//! or a stale generation leaves nothing behind (counters of a live generation
//! are forgotten when it stops).

use crate::actor::registry::ActorState;
use crate::config::Limits;
use crate::generations::InflightGuard;
use crate::sql::executor::{err, limit_error};
use crate::sql::values::value_bytes;
use crate::state::EngineState;
use envoy_protocol::{
    KvErrorCode, KvErrorResponse, KvResponseData, LimitKind, SqliteError, SqliteErrorCode, SqliteFenceMismatch, Value,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Why a request was refused before work started.
#[derive(Debug, Clone, PartialEq)]
pub enum Rejection {
    NotFound,
    NotPlaced,
    /// The request's generation is not current; carries the current one.
    Fence(u64),
    Stopping,
    Overloaded(u32),
    Limit {
        kind: LimitKind,
        max: u64,
        actual: Option<u64>,
    },
    /// A KV limit: answered `KvLimitExceeded` (v4: `KvErrorResponse` with its message).
    KvLimit(crate::kv::KvLimitError),
    Invalid(String),
    /// Cluster mode: this node lost its lease and serves nothing (ACTOR_UNAVAILABLE).
    Unavailable(String),
}

impl Rejection {
    /// The SQL answer.
    pub fn to_sqlite(&self) -> Result<SqliteFenceMismatch, SqliteError> {
        let c = Some(false);
        Err(match self {
            Rejection::Fence(g) => return Ok(SqliteFenceMismatch { current_generation: *g }),
            Rejection::NotFound => err(SqliteErrorCode::ActorNotFound, "no such actor in this namespace", c),
            Rejection::NotPlaced => err(SqliteErrorCode::ActorNotPlaced, "the actor is not placed on this envoy", c),
            Rejection::Stopping => {
                err(SqliteErrorCode::ActorStopping, "the actor is stopping; the request was not run", c)
            }
            Rejection::Overloaded(max) => {
                let mut e = limit_error(LimitKind::PendingRequests, u64::from(*max), None);
                e.code = SqliteErrorCode::Overloaded;
                e.message = format!("more than {max} requests pending on this connection");
                e
            }
            Rejection::Limit { kind, max, actual } => limit_error(*kind, *max, *actual),
            Rejection::KvLimit(e) => limit_error(e.limit.kind, e.limit.max, e.limit.actual),
            Rejection::Invalid(m) => err(SqliteErrorCode::InvalidRequest, m, c),
            Rejection::Unavailable(m) => err(SqliteErrorCode::ActorUnavailable, m, c),
        })
    }

    /// The KV answer.
    pub fn to_kv(&self) -> KvResponseData {
        let (code, message, current_generation) = match self {
            // Typed (v5); the connection's writer gives a v4 peer the same message as a KvErrorResponse.
            Rejection::Limit { kind, max, actual } => {
                return KvResponseData::KvLimitExceeded(envoy_protocol::KvLimitExceeded {
                    message: format!("{kind:?} limit exceeded: {actual:?} > {max}"),
                    limit: envoy_protocol::LimitExceeded { kind: *kind, max: *max, actual: *actual },
                })
            }
            Rejection::KvLimit(e) => return e.clone().response(),
            Rejection::NotFound => (KvErrorCode::ActorNotFound, "no such actor in this namespace".into(), None),
            Rejection::NotPlaced => (KvErrorCode::ActorNotPlaced, "the actor is not placed on this envoy".into(), None),
            Rejection::Fence(g) => {
                (KvErrorCode::FenceMismatch, format!("the actor's current generation is {g}"), Some(*g))
            }
            Rejection::Stopping => {
                (KvErrorCode::ActorStopping, "the actor is stopping; the request was not run".into(), None)
            }
            Rejection::Overloaded(max) => {
                (KvErrorCode::Overloaded, format!("more than {max} requests pending on this connection"), None)
            }
            Rejection::Invalid(m) => (KvErrorCode::InvalidRequest, m.clone(), None),
            Rejection::Unavailable(m) => (KvErrorCode::ActorUnavailable, m.clone(), None),
        };
        KvResponseData::KvErrorResponse(KvErrorResponse { code, message, current_generation })
    }
}

/// Checks placement and generation of (actor, generation) for the envoy
/// `envoy_key` of `namespace` and, if they pass, counts the request in flight.
///
/// Why the guard is taken inside the registry's lock (rather than "acquire,
/// check, release on failure"): the check and the increment are then one step
/// as far as a drain is concerned — `begin_stop` takes the same lock to mark
/// the actor Stopping before the drain reads the count — and a refused request
/// never touches the in-flight map at all, so made-up actor ids (of any size)
/// cannot create entries. Lock order is registry → in-flight map; nothing takes
/// them the other way round.
pub fn check_and_count(
    state: &EngineState,
    namespace: &str,
    envoy_key: &str,
    actor_id: &str,
    generation: u64,
) -> Result<InflightGuard, Rejection> {
    check_serving(state)?;
    state.registry.with(actor_id, |rec| {
        let rec = rec.filter(|r| r.namespace == namespace).ok_or(Rejection::NotFound)?;
        if rec.envoy.as_deref() != Some(envoy_key) {
            return Err(Rejection::NotPlaced);
        }
        if rec.generation != generation {
            return Err(Rejection::Fence(rec.generation));
        }
        match rec.state {
            ActorState::Starting | ActorState::Running => Ok(state.generations.acquire(actor_id, generation)),
            ActorState::Stopping => Err(Rejection::Stopping),
            ActorState::Stopped => Err(Rejection::NotPlaced),
        }
    })
}

/// Cluster mode: refuses everything while this node's lease cannot be known
/// alive (it may already be someone else's turn to own its actors).
pub fn check_serving(state: &EngineState) -> Result<(), Rejection> {
    if state.fenced() {
        return Err(Rejection::Unavailable(
            "this node lost its cluster lease and serves nothing until it re-joins".into(),
        ));
    }
    Ok(())
}

/// SQL request limits, checked before the statement is prepared.
pub fn check_sql(limits: &Limits, sql: &str, params: &[Value]) -> Result<(), Rejection> {
    if sql.len() > limits.max_sql_bytes as usize {
        return Err(Rejection::Limit {
            kind: LimitKind::SqlBytes,
            max: limits.max_sql_bytes.into(),
            actual: Some(sql.len() as u64),
        });
    }
    // SQLite would stop reading at a NUL and silently ignore the rest.
    if let Some(at) = sql.bytes().position(|b| b == 0) {
        return Err(Rejection::Invalid(format!(
            "the SQL contains a NUL byte (at byte {at}); SQL text may not hold NUL"
        )));
    }
    if crate::sql::route::first_keyword(sql).is_empty() {
        return Err(Rejection::Invalid("the SQL holds no statement".into()));
    }
    if params.len() > limits.max_params as usize {
        return Err(Rejection::Limit {
            kind: LimitKind::Params,
            max: limits.max_params.into(),
            actual: Some(params.len() as u64),
        });
    }
    if let Some(big) = params.iter().map(value_bytes).find(|&b| b > limits.max_value_bytes as usize) {
        return Err(Rejection::Limit {
            kind: LimitKind::ValueBytes,
            max: limits.max_value_bytes.into(),
            actual: Some(big as u64),
        });
    }
    Ok(())
}

/// Requests accepted but not yet answered on one connection.
#[derive(Debug, Default)]
pub struct Pending {
    /// Accepted and not yet answered.
    count: AtomicUsize,
}

/// Counts one pending request while alive.
#[derive(Debug)]
pub struct PendingGuard(Arc<Pending>);

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Pending {
    /// Takes a slot, or refuses past `max`.
    pub fn try_acquire(self: &Arc<Self>, max: u32) -> Result<PendingGuard, Rejection> {
        let prev = self.count.fetch_add(1, Ordering::AcqRel);
        let guard = PendingGuard(self.clone());
        if prev >= max as usize {
            return Err(Rejection::Overloaded(max));
        }
        Ok(guard)
    }
}
