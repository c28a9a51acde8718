//! v4 ↔ v5: request keys and cost, atomic batches, interactive transactions,
//! streamed results, typed limit errors, and the engine's metadata in Init.
//!
//! v5 only appends, so every v4 message upgrades to the same member with the
//! same fields. Going down, each v5-only member is either gated (a typed
//! [`ProtocolCompatibilityError`]) or, where it only adds information,
//! replaced by its v4 form:
//!
//! - `ToEnvoyInitV5` becomes `ToEnvoyInit` (durability and engine limits are
//!   dropped: the engine enforces them all the same);
//! - `KvLimitExceeded` becomes `KvErrorResponse { code: LIMIT_EXCEEDED }` with
//!   the same message (the limit's kind and maximum are dropped).
//!
//! Enum values added in v5 are gated wherever they appear in a v4 message: a
//! v4 peer could not tell them from a malformed frame.

use super::{Direction, Feature, ProtocolCompatibilityError};
use crate::{v4, v5};

type Result<T> = std::result::Result<T, ProtocolCompatibilityError>;

fn gate<T>(feature: Feature, direction: Direction, t: u16) -> Result<T> {
    Err(ProtocolCompatibilityError::new(feature, direction, t))
}

// ---------------------------------------------------------------- enums that gained values

fn actor_error_code_up(x: v4::ActorErrorCode) -> v5::ActorErrorCode {
    use v4::ActorErrorCode as A;
    use v5::ActorErrorCode as B;
    match x {
        A::InvalidRequest => B::InvalidRequest,
        A::EngineStopping => B::EngineStopping,
        A::Internal => B::Internal,
    }
}

fn actor_error_code_down(x: v5::ActorErrorCode, t: u16) -> Result<v4::ActorErrorCode> {
    use v4::ActorErrorCode as A;
    use v5::ActorErrorCode as B;
    Ok(match x {
        B::InvalidRequest => A::InvalidRequest,
        B::EngineStopping => A::EngineStopping,
        B::Internal => A::Internal,
        B::LimitExceeded | B::Overloaded => return gate(Feature::LimitErrors, Direction::ToEnvoy, t),
    })
}

fn limit_kind_up(x: v4::LimitKind) -> v5::LimitKind {
    use v4::LimitKind as A;
    use v5::LimitKind as B;
    match x {
        A::SqlBytes => B::SqlBytes,
        A::Params => B::Params,
        A::ValueBytes => B::ValueBytes,
        A::RequestBytes => B::RequestBytes,
        A::ResponseBytes => B::ResponseBytes,
        A::PendingRequests => B::PendingRequests,
        A::StatementMs => B::StatementMs,
    }
}

fn limit_kind_down(x: v5::LimitKind, t: u16) -> Result<v4::LimitKind> {
    use v4::LimitKind as A;
    use v5::LimitKind as B;
    Ok(match x {
        B::SqlBytes => A::SqlBytes,
        B::Params => A::Params,
        B::ValueBytes => A::ValueBytes,
        B::RequestBytes => A::RequestBytes,
        B::ResponseBytes => A::ResponseBytes,
        B::PendingRequests => A::PendingRequests,
        B::StatementMs => A::StatementMs,
        B::KvKeyBytes
        | B::KvValueBytes
        | B::KvBatchEntries
        | B::BatchStatements
        | B::ResultMemoryBytes
        | B::ConnectionOutboxBytes
        | B::ActorsPerConnection
        | B::OpenActorDatabases
        | B::OpenStreams
        | B::OpenTransactions => return gate(Feature::LimitErrors, Direction::ToEnvoy, t),
    })
}

fn sqlite_error_code_up(x: v4::SqliteErrorCode) -> v5::SqliteErrorCode {
    use v4::SqliteErrorCode as A;
    use v5::SqliteErrorCode as B;
    match x {
        A::Sqlite => B::Sqlite,
        A::InvalidRequest => B::InvalidRequest,
        A::ActorNotFound => B::ActorNotFound,
        A::ActorNotPlaced => B::ActorNotPlaced,
        A::ActorStopping => B::ActorStopping,
        A::Forbidden => B::Forbidden,
        A::LimitExceeded => B::LimitExceeded,
        A::Timeout => B::Timeout,
        A::Interrupted => B::Interrupted,
        A::Overloaded => B::Overloaded,
        A::Internal => B::Internal,
    }
}

fn sqlite_error_code_down(x: v5::SqliteErrorCode, t: u16) -> Result<v4::SqliteErrorCode> {
    use v4::SqliteErrorCode as A;
    use v5::SqliteErrorCode as B;
    let d = Direction::ToEnvoy;
    Ok(match x {
        B::Sqlite => A::Sqlite,
        B::InvalidRequest => A::InvalidRequest,
        B::ActorNotFound => A::ActorNotFound,
        B::ActorNotPlaced => A::ActorNotPlaced,
        B::ActorStopping => A::ActorStopping,
        B::Forbidden => A::Forbidden,
        B::LimitExceeded => A::LimitExceeded,
        B::Timeout => A::Timeout,
        B::Interrupted => A::Interrupted,
        B::Overloaded => A::Overloaded,
        B::Internal => A::Internal,
        B::RequestKeyExpired | B::RequestKeyConflict => return gate(Feature::RequestKeys, d, t),
        B::TransactionNotFound | B::TransactionExpired | B::TransactionBusy | B::TransactionAborted => {
            return gate(Feature::Transactions, d, t)
        }
        B::StreamExpired | B::Cancelled => return gate(Feature::ResultStreams, d, t),
    })
}

// ---------------------------------------------------------------- types holding those enums

fn limit_exceeded_up(x: v4::LimitExceeded) -> v5::LimitExceeded {
    v5::LimitExceeded { kind: limit_kind_up(x.kind), max: x.max, actual: x.actual }
}

fn limit_exceeded_down(x: v5::LimitExceeded, t: u16) -> Result<v4::LimitExceeded> {
    Ok(v4::LimitExceeded { kind: limit_kind_down(x.kind, t)?, max: x.max, actual: x.actual })
}

fn sqlite_error_up(x: v4::SqliteError) -> v5::SqliteError {
    v5::SqliteError {
        code: sqlite_error_code_up(x.code),
        message: x.message,
        extended_code: x.extended_code,
        committed: x.committed,
        statement_index: x.statement_index,
        limit: x.limit.map(limit_exceeded_up),
    }
}

fn sqlite_error_down(x: v5::SqliteError, t: u16) -> Result<v4::SqliteError> {
    Ok(v4::SqliteError {
        code: sqlite_error_code_down(x.code, t)?,
        message: x.message,
        extended_code: x.extended_code,
        committed: x.committed,
        statement_index: x.statement_index,
        limit: x.limit.map(|l| limit_exceeded_down(l, t)).transpose()?,
    })
}

fn exec_result_up(x: v4::SqliteExecResult) -> v5::SqliteExecResult {
    use v4::SqliteExecResult as A;
    use v5::SqliteExecResult as B;
    match x {
        A::QueryResult(v) => B::QueryResult(v),
        A::SqliteFenceMismatch(v) => B::SqliteFenceMismatch(v),
        A::SqliteError(v) => B::SqliteError(sqlite_error_up(v)),
    }
}

fn exec_result_down(x: v5::SqliteExecResult, t: u16) -> Result<v4::SqliteExecResult> {
    use v4::SqliteExecResult as A;
    use v5::SqliteExecResult as B;
    Ok(match x {
        B::QueryResult(v) => A::QueryResult(v),
        B::SqliteFenceMismatch(v) => A::SqliteFenceMismatch(v),
        B::SqliteError(v) => A::SqliteError(sqlite_error_down(v, t)?),
    })
}

fn execute_result_up(x: v4::SqliteExecuteResult) -> v5::SqliteExecuteResult {
    use v4::SqliteExecuteResult as A;
    use v5::SqliteExecuteResult as B;
    match x {
        A::ExecuteResult(v) => B::ExecuteResult(v),
        A::SqliteFenceMismatch(v) => B::SqliteFenceMismatch(v),
        A::SqliteError(v) => B::SqliteError(sqlite_error_up(v)),
    }
}

fn execute_result_down(x: v5::SqliteExecuteResult, t: u16) -> Result<v4::SqliteExecuteResult> {
    use v4::SqliteExecuteResult as A;
    use v5::SqliteExecuteResult as B;
    Ok(match x {
        B::ExecuteResult(v) => A::ExecuteResult(v),
        B::SqliteFenceMismatch(v) => A::SqliteFenceMismatch(v),
        B::SqliteError(v) => A::SqliteError(sqlite_error_down(v, t)?),
    })
}

fn get_or_create_up(x: v4::ToEnvoyGetOrCreateActorResponse) -> v5::ToEnvoyGetOrCreateActorResponse {
    use v4::GetOrCreateActorResult as A;
    use v5::GetOrCreateActorResult as B;
    v5::ToEnvoyGetOrCreateActorResponse {
        request_id: x.request_id,
        result: match x.result {
            A::GetOrCreateActorOk(v) => B::GetOrCreateActorOk(v),
            A::GetOrCreateActorError(v) => B::GetOrCreateActorError(v5::GetOrCreateActorError {
                code: actor_error_code_up(v.code),
                message: v.message,
            }),
        },
    }
}

fn get_or_create_down(x: v5::ToEnvoyGetOrCreateActorResponse, t: u16) -> Result<v4::ToEnvoyGetOrCreateActorResponse> {
    use v4::GetOrCreateActorResult as A;
    use v5::GetOrCreateActorResult as B;
    Ok(v4::ToEnvoyGetOrCreateActorResponse {
        request_id: x.request_id,
        result: match x.result {
            B::GetOrCreateActorOk(v) => A::GetOrCreateActorOk(v),
            B::GetOrCreateActorError(v) => A::GetOrCreateActorError(v4::GetOrCreateActorError {
                code: actor_error_code_down(v.code, t)?,
                message: v.message,
            }),
        },
    })
}

fn kv_response_up(x: v4::ToEnvoyKvResponse) -> v5::ToEnvoyKvResponse {
    use v4::KvResponseData as A;
    use v5::KvResponseData as B;
    v5::ToEnvoyKvResponse {
        request_id: x.request_id,
        data: match x.data {
            A::KvErrorResponse(v) => B::KvErrorResponse(v),
            A::KvGetResponse(v) => B::KvGetResponse(v),
            A::KvPutResponse => B::KvPutResponse,
            A::KvDeleteResponse => B::KvDeleteResponse,
            A::KvListResponse(v) => B::KvListResponse(v),
            A::KvGetBatchResponse(v) => B::KvGetBatchResponse(v),
            A::KvPutBatchResponse => B::KvPutBatchResponse,
            A::KvDeleteBatchResponse => B::KvDeleteBatchResponse,
            A::KvDeleteRangeResponse => B::KvDeleteRangeResponse,
        },
    }
}

fn kv_response_down(x: v5::ToEnvoyKvResponse) -> v4::ToEnvoyKvResponse {
    use v4::KvResponseData as A;
    use v5::KvResponseData as B;
    v4::ToEnvoyKvResponse {
        request_id: x.request_id,
        data: match x.data {
            B::KvErrorResponse(v) => A::KvErrorResponse(v),
            B::KvGetResponse(v) => A::KvGetResponse(v),
            B::KvPutResponse => A::KvPutResponse,
            B::KvDeleteResponse => A::KvDeleteResponse,
            B::KvListResponse(v) => A::KvListResponse(v),
            B::KvGetBatchResponse(v) => A::KvGetBatchResponse(v),
            B::KvPutBatchResponse => A::KvPutBatchResponse,
            B::KvDeleteBatchResponse => A::KvDeleteBatchResponse,
            B::KvDeleteRangeResponse => A::KvDeleteRangeResponse,
            // The limit only informs: a v4 envoy gets the LIMIT_EXCEEDED it
            // always got, with the same message.
            B::KvLimitExceeded(v) => A::KvErrorResponse(v4::KvErrorResponse {
                code: v4::KvErrorCode::LimitExceeded,
                message: v.message,
                current_generation: None,
            }),
        },
    }
}

// ---------------------------------------------------------------- ToEngine

pub(super) fn to_engine_up(x: v4::ToEngine) -> v5::ToEngine {
    use v4::ToEngine as A;
    use v5::ToEngine as B;
    match x {
        A::Metadata(v) => B::Metadata(v),
        A::Events(v) => B::Events(v),
        A::AckCommands(v) => B::AckCommands(v),
        A::Stopping => B::Stopping,
        A::Pong(v) => B::Pong(v),
        A::KvRequest(v) => B::KvRequest(v),
        A::GetOrCreateActor(v) => B::GetOrCreateActor(v),
        A::SqliteExec(v) => B::SqliteExec(v),
        A::SqliteExecute(v) => B::SqliteExecute(v),
        A::SqliteExecuteWrite(v) => B::SqliteExecuteWrite(v),
    }
}

pub(super) fn to_engine_down(x: v5::ToEngine, t: u16) -> Result<v4::ToEngine> {
    use v4::ToEngine as A;
    use v5::ToEngine as B;
    let d = Direction::ToEngine;
    Ok(match x {
        B::Metadata(v) => A::Metadata(v),
        B::Events(v) => A::Events(v),
        B::AckCommands(v) => A::AckCommands(v),
        B::Stopping => A::Stopping,
        B::Pong(v) => A::Pong(v),
        B::KvRequest(v) => A::KvRequest(v),
        B::GetOrCreateActor(v) => A::GetOrCreateActor(v),
        B::SqliteExec(v) => A::SqliteExec(v),
        B::SqliteExecute(v) => A::SqliteExecute(v),
        B::SqliteExecuteWrite(v) => A::SqliteExecuteWrite(v),
        // A v5 Execute without a key is still not a v4 Execute: its answer
        // carries a cost the caller waits for.
        B::SqliteExecV5(_) | B::SqliteExecuteV5(_) => return gate(Feature::RequestKeys, d, t),
        B::SqliteBatch(_) => return gate(Feature::AtomicBatch, d, t),
        B::SqliteBegin(_) | B::SqliteTransactionExecute(_) | B::SqliteCommit(_) | B::SqliteRollback(_) => {
            return gate(Feature::Transactions, d, t)
        }
        B::SqliteStreamOpen(_) | B::SqliteStreamCredit(_) | B::SqliteStreamCancel(_) => {
            return gate(Feature::ResultStreams, d, t)
        }
    })
}

// ---------------------------------------------------------------- ToEnvoy

fn init_v5_down(x: v5::ToEnvoyInitV5) -> v4::ToEnvoyInit {
    // Durability and the engine limits only inform; the engine enforces the
    // limits on a v4 envoy all the same.
    v4::ToEnvoyInit { envoy_id: x.envoy_id, last_event_index: x.last_event_index, metadata: x.metadata }
}

pub(super) fn to_envoy_up(x: v4::ToEnvoy) -> v5::ToEnvoy {
    use v4::ToEnvoy as A;
    use v5::ToEnvoy as B;
    match x {
        A::Init(v) => B::Init(v),
        A::Commands(v) => B::Commands(v),
        A::AckEvents(v) => B::AckEvents(v),
        A::Ping(v) => B::Ping(v),
        A::KvResponse(v) => B::KvResponse(kv_response_up(v)),
        A::GetOrCreateActorResponse(v) => B::GetOrCreateActorResponse(get_or_create_up(v)),
        A::SqliteExecResponse(v) => B::SqliteExecResponse(v5::ToEnvoySqliteExecResponse {
            request_id: v.request_id,
            result: exec_result_up(v.result),
        }),
        A::SqliteExecuteResponse(v) => B::SqliteExecuteResponse(v5::ToEnvoySqliteExecuteResponse {
            request_id: v.request_id,
            result: execute_result_up(v.result),
        }),
    }
}

pub(super) fn to_envoy_down(x: v5::ToEnvoy, t: u16) -> Result<v4::ToEnvoy> {
    use v4::ToEnvoy as A;
    use v5::ToEnvoy as B;
    let d = Direction::ToEnvoy;
    Ok(match x {
        B::Init(v) => A::Init(v),
        B::Commands(v) => A::Commands(v),
        B::AckEvents(v) => A::AckEvents(v),
        B::Ping(v) => A::Ping(v),
        B::KvResponse(v) => A::KvResponse(kv_response_down(v)),
        B::GetOrCreateActorResponse(v) => A::GetOrCreateActorResponse(get_or_create_down(v, t)?),
        B::SqliteExecResponse(v) => A::SqliteExecResponse(v4::ToEnvoySqliteExecResponse {
            request_id: v.request_id,
            result: exec_result_down(v.result, t)?,
        }),
        B::SqliteExecuteResponse(v) => A::SqliteExecuteResponse(v4::ToEnvoySqliteExecuteResponse {
            request_id: v.request_id,
            result: execute_result_down(v.result, t)?,
        }),
        B::InitV5(v) => A::Init(init_v5_down(v)),
        B::SqliteExecResponseV5(_) | B::SqliteExecuteResponseV5(_) => return gate(Feature::RequestKeys, d, t),
        B::SqliteBatchResponse(_) => return gate(Feature::AtomicBatch, d, t),
        B::SqliteBeginResponse(_)
        | B::SqliteTransactionExecuteResponse(_)
        | B::SqliteCommitResponse(_)
        | B::SqliteRollbackResponse(_)
        | B::SqliteTransactionEnded(_) => return gate(Feature::Transactions, d, t),
        B::SqliteStreamChunk(_) | B::SqliteStreamFailed(_) => return gate(Feature::ResultStreams, d, t),
    })
}
