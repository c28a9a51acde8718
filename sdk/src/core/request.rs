//! Requests the application submits, their wire form, and how each answer maps
//! to a typed result.

use crate::error::Error;
use envoy_protocol as p;
use envoy_protocol::{KvErrorCode, SqliteErrorCode, ToEngine, Value};

/// Identifies a submitted request. Also its wire `requestId`: a request keeps
/// its id when it is re-sent on a new connection.
pub type RequestId = u32;

/// What the application asks the engine.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Kv {
        actor_id: String,
        generation: u64,
        data: p::KvRequestData,
    },
    /// Several statements, no parameters.
    SqlExec {
        actor_id: String,
        generation: u64,
        sql: String,
    },
    /// One statement; `write` forces the writer connection (ExecuteWrite).
    SqlExecute {
        actor_id: String,
        generation: u64,
        sql: String,
        params: Option<Vec<Value>>,
        write: bool,
    },
    GetOrCreateActor {
        name: String,
        key: String,
    },
}

/// Per-request options.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestOptions {
    /// Deadline in ms from submission; `None` uses the client default.
    pub timeout_ms: Option<u64>,
    /// The caller promises this SQL only reads, so it may be sent once more
    /// if its answer is lost to a disconnect. Ignored for writes
    /// (`execute_write`, KV put/delete) and implied for KV get/list.
    pub idempotent: bool,
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    /// KV get.
    KvValue(Option<Vec<u8>>),
    /// KV get of several keys, in request order.
    KvValues(Vec<Option<Vec<u8>>>),
    /// KV list / list-prefix.
    KvEntries(Vec<p::KvEntry>),
    /// KV put/delete/batch/range done.
    KvDone,
    /// SQL exec: rows of the last statement.
    Query(p::QueryResult),
    /// SQL execute / execute-write.
    Execute(p::ExecuteResult),
    /// Get-or-create.
    Actor(p::GetOrCreateActorOk),
}

impl Request {
    /// The wire message carrying this request under `id`.
    pub fn to_message(&self, id: RequestId) -> ToEngine {
        match self {
            Request::Kv { actor_id, generation, data } => ToEngine::KvRequest(p::ToEngineKvRequest {
                request_id: id,
                actor_id: actor_id.clone(),
                generation: *generation,
                data: data.clone(),
            }),
            Request::SqlExec { actor_id, generation, sql } => ToEngine::SqliteExec(p::ToEngineSqliteExec {
                request_id: id,
                request: p::SqliteExecRequest { actor_id: actor_id.clone(), generation: *generation, sql: sql.clone() },
            }),
            Request::SqlExecute { actor_id, generation, sql, params, write } => {
                let request = p::SqliteExecuteRequest {
                    actor_id: actor_id.clone(),
                    generation: *generation,
                    sql: sql.clone(),
                    params: params.clone(),
                };
                if *write {
                    ToEngine::SqliteExecuteWrite(p::ToEngineSqliteExecuteWrite { request_id: id, request })
                } else {
                    ToEngine::SqliteExecute(p::ToEngineSqliteExecute { request_id: id, request })
                }
            }
            Request::GetOrCreateActor { name, key } => ToEngine::GetOrCreateActor(p::ToEngineGetOrCreateActor {
                request_id: id,
                name: name.clone(),
                key: key.clone(),
            }),
        }
    }

    /// The actor this request is fenced to, if any.
    pub fn actor(&self) -> Option<(&str, u64)> {
        match self {
            Request::Kv { actor_id, generation, .. }
            | Request::SqlExec { actor_id, generation, .. }
            | Request::SqlExecute { actor_id, generation, .. } => Some((actor_id, *generation)),
            Request::GetOrCreateActor { .. } => None,
        }
    }

    /// Whether running it twice is harmless, so a lost answer may be retried once.
    pub fn is_retryable_read(&self, opts: &RequestOptions) -> bool {
        match self {
            Request::Kv { data, .. } => match data {
                p::KvRequestData::KvGet(_)
                | p::KvRequestData::KvListPrefix(_)
                | p::KvRequestData::KvGetBatch(_)
                | p::KvRequestData::KvList(_) => true,
                p::KvRequestData::KvPut(_)
                | p::KvRequestData::KvDelete(_)
                | p::KvRequestData::KvPutBatch(_)
                | p::KvRequestData::KvDeleteBatch(_)
                | p::KvRequestData::KvDeleteRange(_) => false,
            },
            Request::SqlExecute { write, .. } => !*write && opts.idempotent,
            Request::SqlExec { .. } => opts.idempotent,
            // Places the actor here and may bump its generation: not a read.
            Request::GetOrCreateActor { .. } => false,
        }
    }
}

/// Maps an engine answer to the result of `request`.
pub fn map_response(request: &Request, msg: p::ToEnvoy) -> Result<Response, Error> {
    use p::ToEnvoy as T;
    let mismatch = |what: &str| Err(Error::Protocol(format!("{what} answered a different kind of request")));
    match msg {
        T::KvResponse(r) => match request {
            Request::Kv { .. } => map_kv(r.data),
            Request::SqlExec { .. } | Request::SqlExecute { .. } | Request::GetOrCreateActor { .. } => {
                mismatch("a KV response")
            }
        },
        T::SqliteExecResponse(r) => match request {
            Request::SqlExec { .. } => match r.result {
                p::SqliteExecResult::QueryResult(q) => Ok(Response::Query(q)),
                p::SqliteExecResult::SqliteFenceMismatch(f) => {
                    Err(Error::FenceMismatch { current_generation: Some(f.current_generation) })
                }
                p::SqliteExecResult::SqliteError(e) => Err(map_sql_error(e)),
            },
            Request::Kv { .. } | Request::SqlExecute { .. } | Request::GetOrCreateActor { .. } => {
                mismatch("a SQL exec response")
            }
        },
        T::SqliteExecuteResponse(r) => match request {
            Request::SqlExecute { .. } => match r.result {
                p::SqliteExecuteResult::ExecuteResult(x) => Ok(Response::Execute(x)),
                p::SqliteExecuteResult::SqliteFenceMismatch(f) => {
                    Err(Error::FenceMismatch { current_generation: Some(f.current_generation) })
                }
                p::SqliteExecuteResult::SqliteError(e) => Err(map_sql_error(e)),
            },
            Request::Kv { .. } | Request::SqlExec { .. } | Request::GetOrCreateActor { .. } => {
                mismatch("a SQL execute response")
            }
        },
        T::GetOrCreateActorResponse(r) => match request {
            Request::GetOrCreateActor { .. } => match r.result {
                p::GetOrCreateActorResult::GetOrCreateActorOk(ok) => Ok(Response::Actor(ok)),
                p::GetOrCreateActorResult::GetOrCreateActorError(e) => {
                    Err(Error::GetOrCreateActor { code: e.code, message: e.message })
                }
            },
            Request::Kv { .. } | Request::SqlExec { .. } | Request::SqlExecute { .. } => {
                mismatch("a get-or-create response")
            }
        },
        T::Init(_) | T::Commands(_) | T::AckEvents(_) | T::Ping(_) => {
            Err(Error::Protocol("not a response message".into()))
        }
        // v5 members: never decoded on a connection the SDK negotiates (at
        // most v4, see IMPLEMENTED_PROTOCOL_VERSION); not supported yet.
        T::InitV5(_)
        | T::SqliteExecResponseV5(_)
        | T::SqliteExecuteResponseV5(_)
        | T::SqliteBatchResponse(_)
        | T::SqliteBeginResponse(_)
        | T::SqliteTransactionExecuteResponse(_)
        | T::SqliteCommitResponse(_)
        | T::SqliteRollbackResponse(_)
        | T::SqliteTransactionEnded(_)
        | T::SqliteStreamChunk(_)
        | T::SqliteStreamFailed(_) => {
            Err(Error::Protocol(format!("{} is not supported by this client (envoy protocol v5)", msg.member_name())))
        }
    }
}

fn map_kv(data: p::KvResponseData) -> Result<Response, Error> {
    use p::KvResponseData as D;
    match data {
        D::KvErrorResponse(e) => Err(map_kv_error(e)),
        D::KvGetResponse(r) => Ok(Response::KvValue(r.value)),
        D::KvListResponse(r) => Ok(Response::KvEntries(r.entries)),
        D::KvGetBatchResponse(r) => Ok(Response::KvValues(r.values)),
        D::KvPutResponse
        | D::KvDeleteResponse
        | D::KvPutBatchResponse
        | D::KvDeleteBatchResponse
        | D::KvDeleteRangeResponse => Ok(Response::KvDone),
        // v5 only (at v4 the engine's downgrade turns it into a
        // KvErrorResponse); the SDK speaks at most v4, so this is a protocol error.
        D::KvLimitExceeded(_) => {
            Err(Error::Protocol("KvLimitExceeded is not supported by this client (envoy protocol v5)".into()))
        }
    }
}

fn map_kv_error(e: p::KvErrorResponse) -> Error {
    match e.code {
        KvErrorCode::FenceMismatch => Error::FenceMismatch { current_generation: e.current_generation },
        KvErrorCode::ActorStopping => Error::ActorStopping,
        KvErrorCode::ActorNotFound => Error::ActorNotFound { message: e.message },
        KvErrorCode::ActorNotPlaced => Error::ActorNotPlaced { message: e.message },
        KvErrorCode::Overloaded => Error::Overloaded { message: e.message },
        // A KV limit error carries no structured limit (kind, max), only its
        // message: it stays a `Kv` error with code LIMIT_EXCEEDED rather than a
        // `LimitExceeded` with made-up numbers.
        KvErrorCode::LimitExceeded | KvErrorCode::Unknown | KvErrorCode::InvalidRequest | KvErrorCode::Internal => {
            Error::Kv { code: e.code, message: e.message }
        }
    }
}

fn map_sql_error(e: p::SqliteError) -> Error {
    match e.code {
        SqliteErrorCode::ActorStopping => Error::ActorStopping,
        SqliteErrorCode::ActorNotFound => Error::ActorNotFound { message: e.message },
        SqliteErrorCode::ActorNotPlaced => Error::ActorNotPlaced { message: e.message },
        SqliteErrorCode::Overloaded => Error::Overloaded { message: e.message },
        SqliteErrorCode::LimitExceeded => match e.limit {
            Some(l) => Error::LimitExceeded { kind: l.kind, max: l.max, actual: l.actual, message: e.message },
            None => Error::Sql {
                code: e.code,
                extended_code: e.extended_code,
                message: e.message,
                committed: e.committed,
                statement_index: e.statement_index,
            },
        },
        SqliteErrorCode::Sqlite
        | SqliteErrorCode::InvalidRequest
        | SqliteErrorCode::Forbidden
        | SqliteErrorCode::Timeout
        | SqliteErrorCode::Interrupted
        | SqliteErrorCode::Internal
        // v5 codes: a v4 frame cannot carry them (the encoder gates them), so
        // they never arrive on a connection the SDK negotiates; passed through
        // as they are if they ever do.
        | SqliteErrorCode::RequestKeyExpired
        | SqliteErrorCode::RequestKeyConflict
        | SqliteErrorCode::TransactionNotFound
        | SqliteErrorCode::TransactionExpired
        | SqliteErrorCode::TransactionBusy
        | SqliteErrorCode::TransactionAborted
        | SqliteErrorCode::StreamExpired
        | SqliteErrorCode::Cancelled => Error::Sql {
            code: e.code,
            extended_code: e.extended_code,
            message: e.message,
            committed: e.committed,
            statement_index: e.statement_index,
        },
    }
}

/// The request id a response answers, if it is a response.
pub fn response_id(msg: &p::ToEnvoy) -> Option<RequestId> {
    use p::ToEnvoy as T;
    match msg {
        T::KvResponse(r) => Some(r.request_id),
        T::GetOrCreateActorResponse(r) => Some(r.request_id),
        T::SqliteExecResponse(r) => Some(r.request_id),
        T::SqliteExecuteResponse(r) => Some(r.request_id),
        T::Init(_) | T::Commands(_) | T::AckEvents(_) | T::Ping(_) => None,
        // v5 members: not answers to anything the SDK sends (it speaks at most v4).
        T::InitV5(_)
        | T::SqliteExecResponseV5(_)
        | T::SqliteExecuteResponseV5(_)
        | T::SqliteBatchResponse(_)
        | T::SqliteBeginResponse(_)
        | T::SqliteTransactionExecuteResponse(_)
        | T::SqliteCommitResponse(_)
        | T::SqliteRollbackResponse(_)
        | T::SqliteTransactionEnded(_)
        | T::SqliteStreamChunk(_)
        | T::SqliteStreamFailed(_) => None,
    }
}

/// Checks the request against the SQL limits the engine advertised, before sending.
pub fn check_sql_limits(request: &Request, limits: &p::SqlLimits) -> Result<(), Error> {
    let (sql, params) = match request {
        Request::SqlExec { sql, .. } => (sql, None),
        Request::SqlExecute { sql, params, .. } => (sql, params.as_ref()),
        Request::Kv { .. } | Request::GetOrCreateActor { .. } => return Ok(()),
    };
    let over = |kind, max: u32, actual: usize, what: &str| Error::LimitExceeded {
        kind,
        max: u64::from(max),
        actual: Some(actual as u64),
        message: format!("{what} is {actual}, the engine accepts at most {max}"),
    };
    if sql.len() > limits.max_sql_bytes as usize {
        return Err(over(p::LimitKind::SqlBytes, limits.max_sql_bytes, sql.len(), "the SQL text's size in bytes"));
    }
    if let Some(params) = params {
        if params.len() > limits.max_params as usize {
            return Err(over(p::LimitKind::Params, limits.max_params, params.len(), "the number of parameters"));
        }
        for v in params {
            let len = match v {
                Value::Text(s) => s.len(),
                Value::Blob(b) => b.len(),
                Value::Null | Value::Integer(_) | Value::Float(_) => 0,
            };
            if len > limits.max_value_bytes as usize {
                return Err(over(p::LimitKind::ValueBytes, limits.max_value_bytes, len, "a parameter's size in bytes"));
            }
        }
    }
    Ok(())
}
