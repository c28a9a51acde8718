//! What a v5 SQL request carries through the engine (its cost clock, its
//! checked request key) and how its answers are built: the v4 result plus a
//! `SqlCost` and the key outcome.

use super::cost::CostClock;
use super::keys::{KeyedRequest, Recorded};
use envoy_protocol::{
    ExecuteResult, QueryResult, RequestKeyOutcome, SqlCost, SqliteBatchOk, SqliteBatchResult, SqliteError,
    SqliteExecResult, SqliteExecuteResult, SqliteFenceMismatch, ToEnvoy, ToEnvoySqliteBatchResponse,
    ToEnvoySqliteExecResponseV5, ToEnvoySqliteExecuteResponseV5,
};

/// The v5 part of a request, from admission to its answer.
#[derive(Debug, Clone)]
pub struct V5Req {
    /// Started at admission: every answer's `durationUs` counts from it.
    pub clock: CostClock,
    /// The request key, checked at admission (None: at most once, as v4).
    pub key: Option<KeyedRequest>,
}

impl V5Req {
    /// The key outcome of an answer that ran now (absent without a key).
    pub fn executed(&self) -> Option<RequestKeyOutcome> {
        self.key.as_ref().map(|_| RequestKeyOutcome::Executed)
    }
}

/// How a keyed (or unkeyed) request ended on the writer.
#[derive(Debug)]
pub enum Keyed<T> {
    /// It ran now (recorded if it committed something and had a key).
    Ran(T),
    /// Its key was recorded: this is the recorded answer; nothing ran.
    Replayed(Box<Recorded>),
}

/// A zero cost: what a recorded answer is stored with (only its result is replayed).
pub const NO_COST: SqlCost = SqlCost { rows_read: 0, rows_written: 0, duration_us: 0 };

/// The answer to an ExecuteV5.
pub fn execute_answer(
    request_id: u32,
    r: Result<ExecuteResult, SqliteError>,
    cost: SqlCost,
    request_key: Option<RequestKeyOutcome>,
) -> ToEnvoy {
    let result = match r {
        Ok(r) => SqliteExecuteResult::ExecuteResult(r),
        Err(e) => SqliteExecuteResult::SqliteError(e),
    };
    ToEnvoy::SqliteExecuteResponseV5(ToEnvoySqliteExecuteResponseV5 { request_id, result, cost, request_key })
}

/// The answer to an ExecV5.
pub fn exec_answer(
    request_id: u32,
    r: Result<QueryResult, SqliteError>,
    cost: SqlCost,
    request_key: Option<RequestKeyOutcome>,
) -> ToEnvoy {
    let result = match r {
        Ok(r) => SqliteExecResult::QueryResult(r),
        Err(e) => SqliteExecResult::SqliteError(e),
    };
    ToEnvoy::SqliteExecResponseV5(ToEnvoySqliteExecResponseV5 { request_id, result, cost, request_key })
}

/// The answer to a batch.
pub fn batch_answer(
    request_id: u32,
    r: Result<Vec<ExecuteResult>, SqliteError>,
    cost: SqlCost,
    request_key: Option<RequestKeyOutcome>,
) -> ToEnvoy {
    let result = match r {
        Ok(results) => SqliteBatchResult::SqliteBatchOk(SqliteBatchOk { results }),
        Err(e) => SqliteBatchResult::SqliteError(e),
    };
    ToEnvoy::SqliteBatchResponse(ToEnvoySqliteBatchResponse { request_id, result, cost, request_key })
}

/// Turns a recorded answer into the answer of a replay: this request's id, the
/// lookup's cost, `REPLAYED` or `REPLAYED_WITHOUT_ROWS`.
pub fn replay_answer(request_id: u32, rec: &Recorded, cost: SqlCost) -> ToEnvoy {
    let outcome = Some(rec.outcome());
    let mut a = rec.answer.clone();
    match &mut a {
        ToEnvoy::SqliteExecuteResponseV5(r) => {
            (r.request_id, r.cost, r.request_key) = (request_id, cost, outcome);
        }
        ToEnvoy::SqliteExecResponseV5(r) => {
            (r.request_id, r.cost, r.request_key) = (request_id, cost, outcome);
        }
        ToEnvoy::SqliteBatchResponse(r) => {
            (r.request_id, r.cost, r.request_key) = (request_id, cost, outcome);
        }
        ToEnvoy::SqliteCommitResponse(r) => {
            (r.request_id, r.cost, r.request_key) = (request_id, cost, outcome);
        }
        _ => {}
    }
    a
}

/// Sets a v5 answer's `durationUs` to the time since admission (called again
/// when a group-commit member's answer is released after its commit).
pub fn restamp(answer: &mut ToEnvoy, clock: &CostClock) {
    let d = clock.elapsed_us();
    match answer {
        ToEnvoy::SqliteExecuteResponseV5(r) => r.cost.duration_us = d,
        ToEnvoy::SqliteExecResponseV5(r) => r.cost.duration_us = d,
        ToEnvoy::SqliteBatchResponse(r) => r.cost.duration_us = d,
        _ => {}
    }
}

/// A v5 answer whose result is replaced by `e` (its group's commit failed),
/// keeping its request id, cost and key outcome. A replay is kept as it is: it
/// ran nothing in that group, and what it reports was committed before.
pub fn with_error(answer: &ToEnvoy, e: SqliteError) -> Option<ToEnvoy> {
    let replayed = |k: &Option<RequestKeyOutcome>| {
        matches!(k, Some(RequestKeyOutcome::Replayed | RequestKeyOutcome::ReplayedWithoutRows))
    };
    let keep = match answer {
        ToEnvoy::SqliteExecuteResponseV5(r) => replayed(&r.request_key),
        ToEnvoy::SqliteExecResponseV5(r) => replayed(&r.request_key),
        ToEnvoy::SqliteBatchResponse(r) => replayed(&r.request_key),
        _ => false,
    };
    if keep {
        return Some(answer.clone());
    }
    Some(match answer {
        ToEnvoy::SqliteExecuteResponseV5(r) => ToEnvoy::SqliteExecuteResponseV5(ToEnvoySqliteExecuteResponseV5 {
            result: SqliteExecuteResult::SqliteError(e),
            ..r.clone()
        }),
        ToEnvoy::SqliteExecResponseV5(r) => ToEnvoy::SqliteExecResponseV5(ToEnvoySqliteExecResponseV5 {
            result: SqliteExecResult::SqliteError(e),
            ..r.clone()
        }),
        ToEnvoy::SqliteBatchResponse(r) => ToEnvoy::SqliteBatchResponse(ToEnvoySqliteBatchResponse {
            result: SqliteBatchResult::SqliteError(e),
            ..r.clone()
        }),
        _ => return None,
    })
}

/// A fence mismatch as a batch result (admission).
pub fn batch_fence(f: SqliteFenceMismatch) -> SqliteBatchResult {
    SqliteBatchResult::SqliteFenceMismatch(f)
}
