//! Requests the application submits, their wire form at the connection's
//! version, and how each answer maps to a typed result.

use super::keys::RequestKey;
use crate::error::Error;
use envoy_protocol as p;
use envoy_protocol::{KvErrorCode, SqliteErrorCode, ToEngine, Value};

/// Identifies a submitted request. Also its wire `requestId`: a request keeps
/// its id when it is re-sent on a new connection.
pub type RequestId = u32;

/// The transaction id a commit carries when it is re-sent on a connection
/// other than the one that began the transaction. Transaction ids are only
/// meaningful on their own connection, and a new connection may issue the
/// same number to another transaction: a re-sent commit must only ever match
/// its recorded request key, so it names an id the engine never issues.
pub const RESENT_COMMIT_TRANSACTION_ID: u64 = u64::MAX;

/// An interactive transaction (v5) as the core knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TxRef {
    /// Which connection began it (the core counts connections from 1): a
    /// transaction dies with its connection, so a request naming a transaction
    /// of an older connection fails before it is sent.
    pub connection: u64,
    /// The engine's `transactionId`, meaningful on that connection only.
    pub id: u64,
}

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
    /// v5: several statements in one all-or-nothing transaction.
    SqlBatch {
        actor_id: String,
        generation: u64,
        mode: p::SqliteTransactionMode,
        statements: Vec<p::SqliteStatement>,
    },
    /// v5: opens an interactive transaction on the current connection.
    SqlBegin {
        actor_id: String,
        generation: u64,
        mode: p::SqliteTransactionMode,
        /// Idle lease asked for; the engine clamps it into its bounds.
        lease_ms: u32,
    },
    /// v5: one statement inside an open transaction.
    SqlTxExecute {
        actor_id: String,
        generation: u64,
        tx: TxRef,
        statement: p::SqliteStatement,
    },
    /// v5: commits an open transaction (keyed: exactly-once across reconnects).
    SqlCommit {
        actor_id: String,
        generation: u64,
        tx: TxRef,
    },
    /// v5: rolls an open transaction back (idempotent).
    SqlRollback {
        actor_id: String,
        generation: u64,
        tx: TxRef,
    },
    /// v5: runs one read-only statement and streams its rows.
    SqlStream {
        actor_id: String,
        generation: u64,
        statement: p::SqliteStatement,
        /// Row bytes (decoded size) granted before the first credit message.
        credit_bytes: u32,
        /// How long the engine may wait for credit before closing the stream.
        lease_ms: u32,
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

/// What a v5 SQL answer adds to its result.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SqlMeta {
    /// What the request cost the engine; `None` below v5.
    pub cost: Option<p::SqlCost>,
    /// How a keyed request was answered; `None` when it carried no key (or below v5).
    pub key_outcome: Option<p::RequestKeyOutcome>,
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
    /// SQL exec at v4: rows of the last statement.
    Query(p::QueryResult),
    /// SQL execute / execute-write at v4.
    Execute(p::ExecuteResult),
    /// Get-or-create.
    Actor(p::GetOrCreateActorOk),
    /// SQL exec at v5, with its cost and key outcome.
    QueryV5 { result: p::QueryResult, meta: SqlMeta },
    /// SQL execute (also inside a transaction) at v5, with its cost and key outcome.
    ExecuteV5 { result: p::ExecuteResult, meta: SqlMeta },
    /// v5 batch committed: one result per statement.
    Batch { results: Vec<p::ExecuteResult>, meta: SqlMeta },
    /// v5 transaction begun.
    TransactionStarted { tx: TxRef, lease_ms: u32, cost: p::SqlCost },
    /// v5 transaction committed.
    Committed { changes: u64, meta: SqlMeta },
    /// v5 transaction rolled back (`cost` is `None` when the core knew it was
    /// already rolled back and sent nothing).
    RolledBack { cost: Option<p::SqlCost> },
    /// v5 stream finished: every row was delivered (as `Event::StreamRows`).
    StreamDone { cost: Option<p::SqlCost> },
}

impl Response {
    /// The variant's name, for error messages (which do not format the
    /// answer's data: it can be large, and `Debug` of protocol values costs
    /// the `.wasm` its float and escape formatting).
    pub fn kind(&self) -> &'static str {
        match self {
            Response::KvValue(_) => "KvValue",
            Response::KvValues(_) => "KvValues",
            Response::KvEntries(_) => "KvEntries",
            Response::KvDone => "KvDone",
            Response::Query(_) => "Query",
            Response::Execute(_) => "Execute",
            Response::Actor(_) => "Actor",
            Response::QueryV5 { .. } => "QueryV5",
            Response::ExecuteV5 { .. } => "ExecuteV5",
            Response::Batch { .. } => "Batch",
            Response::TransactionStarted { .. } => "TransactionStarted",
            Response::Committed { .. } => "Committed",
            Response::RolledBack { .. } => "RolledBack",
            Response::StreamDone { .. } => "StreamDone",
        }
    }
}

/// The statement form v5 messages carry.
fn statement(sql: &str, params: &Option<Vec<Value>>) -> p::SqliteStatement {
    p::SqliteStatement { sql: sql.to_string(), params: params.clone() }
}

impl Request {
    /// The wire message carrying this request under `id` on a connection at
    /// `version` (the `connection`-th of the core). `key` goes out only at v5;
    /// below v5 the v4 form is sent (and a v5-only request fails to encode,
    /// which the core reports as `RemoteUnavailable`).
    pub fn to_message(&self, id: RequestId, version: u16, key: Option<&RequestKey>, connection: u64) -> ToEngine {
        let v5 = version >= p::Feature::RequestKeys.required_version();
        let key = key.map(|k| k.to_wire());
        match self {
            Request::Kv { actor_id, generation, data } => ToEngine::KvRequest(p::ToEngineKvRequest {
                request_id: id,
                actor_id: actor_id.clone(),
                generation: *generation,
                data: data.clone(),
            }),
            Request::SqlExec { actor_id, generation, sql } if v5 => ToEngine::SqliteExecV5(p::ToEngineSqliteExecV5 {
                request_id: id,
                request: p::SqliteExecRequestV5 {
                    actor_id: actor_id.clone(),
                    generation: *generation,
                    sql: sql.clone(),
                    request_key: key,
                },
            }),
            Request::SqlExec { actor_id, generation, sql } => ToEngine::SqliteExec(p::ToEngineSqliteExec {
                request_id: id,
                request: p::SqliteExecRequest { actor_id: actor_id.clone(), generation: *generation, sql: sql.clone() },
            }),
            Request::SqlExecute { actor_id, generation, sql, params, write } if v5 => {
                ToEngine::SqliteExecuteV5(p::ToEngineSqliteExecuteV5 {
                    request_id: id,
                    request: p::SqliteExecuteRequestV5 {
                        actor_id: actor_id.clone(),
                        generation: *generation,
                        statement: statement(sql, params),
                        writer: *write,
                        request_key: key,
                    },
                })
            }
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
            Request::GetOrCreateActor { name, key: actor_key } => {
                ToEngine::GetOrCreateActor(p::ToEngineGetOrCreateActor {
                    request_id: id,
                    name: name.clone(),
                    key: actor_key.clone(),
                })
            }
            Request::SqlBatch { actor_id, generation, mode, statements } => {
                ToEngine::SqliteBatch(p::ToEngineSqliteBatch {
                    request_id: id,
                    request: p::SqliteBatchRequest {
                        actor_id: actor_id.clone(),
                        generation: *generation,
                        mode: *mode,
                        statements: statements.clone(),
                        request_key: key,
                    },
                })
            }
            Request::SqlBegin { actor_id, generation, mode, lease_ms } => {
                ToEngine::SqliteBegin(p::ToEngineSqliteBegin {
                    request_id: id,
                    request: p::SqliteBeginRequest {
                        actor_id: actor_id.clone(),
                        generation: *generation,
                        mode: *mode,
                        lease_ms: *lease_ms,
                    },
                })
            }
            Request::SqlTxExecute { actor_id, generation, tx, statement } => {
                ToEngine::SqliteTransactionExecute(p::ToEngineSqliteTransactionExecute {
                    request_id: id,
                    request: p::SqliteTransactionExecuteRequest {
                        actor_id: actor_id.clone(),
                        generation: *generation,
                        transaction_id: tx.id,
                        statement: statement.clone(),
                    },
                })
            }
            Request::SqlCommit { actor_id, generation, tx } => ToEngine::SqliteCommit(p::ToEngineSqliteCommit {
                request_id: id,
                request: p::SqliteCommitRequest {
                    actor_id: actor_id.clone(),
                    generation: *generation,
                    transaction_id: if tx.connection == connection { tx.id } else { RESENT_COMMIT_TRANSACTION_ID },
                    request_key: key,
                },
            }),
            Request::SqlRollback { actor_id, generation, tx } => ToEngine::SqliteRollback(p::ToEngineSqliteRollback {
                request_id: id,
                request: p::SqliteRollbackRequest {
                    actor_id: actor_id.clone(),
                    generation: *generation,
                    transaction_id: tx.id,
                },
            }),
            Request::SqlStream { actor_id, generation, statement, credit_bytes, lease_ms } => {
                ToEngine::SqliteStreamOpen(p::ToEngineSqliteStreamOpen {
                    request_id: id,
                    request: p::SqliteStreamRequest {
                        actor_id: actor_id.clone(),
                        generation: *generation,
                        statement: statement.clone(),
                        credit_bytes: *credit_bytes,
                        lease_ms: *lease_ms,
                    },
                })
            }
        }
    }

    /// The actor this request is fenced to, if any.
    pub fn actor(&self) -> Option<(&str, u64)> {
        match self {
            Request::Kv { actor_id, generation, .. }
            | Request::SqlExec { actor_id, generation, .. }
            | Request::SqlExecute { actor_id, generation, .. }
            | Request::SqlBatch { actor_id, generation, .. }
            | Request::SqlBegin { actor_id, generation, .. }
            | Request::SqlTxExecute { actor_id, generation, .. }
            | Request::SqlCommit { actor_id, generation, .. }
            | Request::SqlRollback { actor_id, generation, .. }
            | Request::SqlStream { actor_id, generation, .. } => Some((actor_id, *generation)),
            Request::GetOrCreateActor { .. } => None,
        }
    }

    /// The interactive transaction this request names, if any.
    pub fn transaction(&self) -> Option<TxRef> {
        match self {
            Request::SqlTxExecute { tx, .. } | Request::SqlCommit { tx, .. } | Request::SqlRollback { tx, .. } => {
                Some(*tx)
            }
            Request::Kv { .. }
            | Request::SqlExec { .. }
            | Request::SqlExecute { .. }
            | Request::GetOrCreateActor { .. }
            | Request::SqlBatch { .. }
            | Request::SqlBegin { .. }
            | Request::SqlStream { .. } => None,
        }
    }

    /// Whether this request may write, so on a v5 connection it carries a
    /// request key (and is re-sent with it after a reconnect). Every Execute
    /// is keyed (the engine records only one that wrote), except statements
    /// no key can cover: transaction control, VACUUM and PRAGMA (see
    /// [`super::sql_kind`]), which go at most once as below v5.
    pub fn wants_key(&self) -> bool {
        match self {
            Request::SqlExecute { sql, .. } => super::sql_kind::keyable_statement(sql),
            Request::SqlExec { sql, .. } => super::sql_kind::keyable_script(sql),
            Request::SqlCommit { .. } => true,
            Request::SqlBatch { mode, .. } => match mode {
                p::SqliteTransactionMode::Read => false,
                p::SqliteTransactionMode::Write | p::SqliteTransactionMode::Deferred => true,
            },
            Request::Kv { .. }
            | Request::GetOrCreateActor { .. }
            | Request::SqlBegin { .. }
            | Request::SqlTxExecute { .. }
            | Request::SqlRollback { .. }
            | Request::SqlStream { .. } => false,
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
            // A read-only batch runs in one snapshot and writes nothing.
            Request::SqlBatch { mode, .. } => match mode {
                p::SqliteTransactionMode::Read => true,
                p::SqliteTransactionMode::Write | p::SqliteTransactionMode::Deferred => false,
            },
            // Begin opened a transaction on the dead connection at most, which
            // died with it: asking again on the new connection is harmless.
            Request::SqlBegin { .. } => true,
            // Places the actor here and may bump its generation: not a read.
            Request::GetOrCreateActor { .. } => false,
            // Statements of a transaction die with its connection; commit is
            // re-sent by its key, not as a read; a stream fails typed.
            Request::SqlTxExecute { .. }
            | Request::SqlCommit { .. }
            | Request::SqlRollback { .. }
            | Request::SqlStream { .. } => false,
        }
    }
}

/// The cost and key outcome of a v5 answer.
fn meta(cost: p::SqlCost, key_outcome: Option<p::RequestKeyOutcome>) -> SqlMeta {
    SqlMeta { cost: Some(cost), key_outcome }
}

fn fence(f: p::SqliteFenceMismatch) -> Error {
    Error::FenceMismatch { current_generation: Some(f.current_generation) }
}

/// Maps an engine answer to the result of `request` (streams are handled by
/// the core, chunk by chunk, and never come here). `connection` is the
/// connection the answer arrived on (a begun transaction belongs to it).
pub fn map_response(request: &Request, msg: p::ToEnvoy, connection: u64) -> Result<Response, Error> {
    use p::ToEnvoy as T;
    let mismatch = |what: &str| Err(Error::Protocol(format!("{what} answered a different kind of request")));
    match (msg, request) {
        (T::KvResponse(r), Request::Kv { .. }) => map_kv(r.data),
        (T::KvResponse(_), _) => mismatch("a KV response"),
        (T::SqliteExecResponse(r), Request::SqlExec { .. }) => match r.result {
            p::SqliteExecResult::QueryResult(q) => Ok(Response::Query(q)),
            p::SqliteExecResult::SqliteFenceMismatch(f) => Err(fence(f)),
            p::SqliteExecResult::SqliteError(e) => Err(map_sql_error(e, None)),
        },
        (T::SqliteExecResponse(_), _) => mismatch("a SQL exec response"),
        (T::SqliteExecuteResponse(r), Request::SqlExecute { .. }) => match r.result {
            p::SqliteExecuteResult::ExecuteResult(x) => Ok(Response::Execute(x)),
            p::SqliteExecuteResult::SqliteFenceMismatch(f) => Err(fence(f)),
            p::SqliteExecuteResult::SqliteError(e) => Err(map_sql_error(e, None)),
        },
        (T::SqliteExecuteResponse(_), _) => mismatch("a SQL execute response"),
        (T::GetOrCreateActorResponse(r), Request::GetOrCreateActor { .. }) => match r.result {
            p::GetOrCreateActorResult::GetOrCreateActorOk(ok) => Ok(Response::Actor(ok)),
            p::GetOrCreateActorResult::GetOrCreateActorError(e) => Err(map_actor_error(e)),
        },
        (T::GetOrCreateActorResponse(_), _) => mismatch("a get-or-create response"),
        (T::SqliteExecResponseV5(r), Request::SqlExec { .. }) => match r.result {
            p::SqliteExecResult::QueryResult(q) => {
                Ok(Response::QueryV5 { result: q, meta: meta(r.cost, r.request_key) })
            }
            p::SqliteExecResult::SqliteFenceMismatch(f) => Err(fence(f)),
            p::SqliteExecResult::SqliteError(e) => Err(map_sql_error(e, None)),
        },
        (T::SqliteExecResponseV5(_), _) => mismatch("a v5 SQL exec response"),
        (T::SqliteExecuteResponseV5(r), Request::SqlExecute { .. }) => match r.result {
            p::SqliteExecuteResult::ExecuteResult(x) => {
                Ok(Response::ExecuteV5 { result: x, meta: meta(r.cost, r.request_key) })
            }
            p::SqliteExecuteResult::SqliteFenceMismatch(f) => Err(fence(f)),
            p::SqliteExecuteResult::SqliteError(e) => Err(map_sql_error(e, None)),
        },
        (T::SqliteExecuteResponseV5(_), _) => mismatch("a v5 SQL execute response"),
        (T::SqliteBatchResponse(r), Request::SqlBatch { .. }) => match r.result {
            p::SqliteBatchResult::SqliteBatchOk(ok) => {
                Ok(Response::Batch { results: ok.results, meta: meta(r.cost, r.request_key) })
            }
            p::SqliteBatchResult::SqliteFenceMismatch(f) => Err(fence(f)),
            p::SqliteBatchResult::SqliteError(e) => Err(map_sql_error(e, None)),
        },
        (T::SqliteBatchResponse(_), _) => mismatch("a batch response"),
        (T::SqliteBeginResponse(r), Request::SqlBegin { .. }) => match r.result {
            p::SqliteBeginResult::SqliteTransactionStarted(s) => Ok(Response::TransactionStarted {
                tx: TxRef { connection, id: s.transaction_id },
                lease_ms: s.lease_ms,
                cost: r.cost,
            }),
            p::SqliteBeginResult::SqliteFenceMismatch(f) => Err(fence(f)),
            p::SqliteBeginResult::SqliteError(e) => Err(map_sql_error(e, None)),
        },
        (T::SqliteBeginResponse(_), _) => mismatch("a begin response"),
        (T::SqliteTransactionExecuteResponse(r), Request::SqlTxExecute { .. }) => match r.result {
            p::SqliteExecuteResult::ExecuteResult(x) => Ok(Response::ExecuteV5 { result: x, meta: meta(r.cost, None) }),
            p::SqliteExecuteResult::SqliteFenceMismatch(f) => Err(fence(f)),
            p::SqliteExecuteResult::SqliteError(e) => Err(map_sql_error(e, r.transaction_end)),
        },
        (T::SqliteTransactionExecuteResponse(_), _) => mismatch("a transaction statement response"),
        (T::SqliteCommitResponse(r), Request::SqlCommit { .. }) => match r.result {
            p::SqliteCommitResult::SqliteCommitted(c) => {
                Ok(Response::Committed { changes: c.changes, meta: meta(r.cost, r.request_key) })
            }
            p::SqliteCommitResult::SqliteFenceMismatch(f) => Err(fence(f)),
            p::SqliteCommitResult::SqliteError(e) => Err(map_sql_error(e, None)),
        },
        (T::SqliteCommitResponse(_), _) => mismatch("a commit response"),
        (T::SqliteRollbackResponse(r), Request::SqlRollback { .. }) => match r.result {
            p::SqliteRollbackResult::SqliteRolledBack => Ok(Response::RolledBack { cost: Some(r.cost) }),
            p::SqliteRollbackResult::SqliteFenceMismatch(f) => Err(fence(f)),
            p::SqliteRollbackResult::SqliteError(e) => Err(map_sql_error(e, None)),
        },
        (T::SqliteRollbackResponse(_), _) => mismatch("a rollback response"),
        (
            T::Init(_)
            | T::InitV5(_)
            | T::Commands(_)
            | T::AckEvents(_)
            | T::Ping(_)
            | T::SqliteTransactionEnded(_)
            | T::SqliteStreamChunk(_)
            | T::SqliteStreamFailed(_),
            _,
        ) => Err(Error::Protocol("not a one-message response".into())),
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
        // v5: the limit is named, with its maximum.
        D::KvLimitExceeded(l) => Err(Error::LimitExceeded {
            kind: l.limit.kind,
            max: l.limit.max,
            actual: l.limit.actual,
            message: l.message,
        }),
    }
}

fn map_kv_error(e: p::KvErrorResponse) -> Error {
    match e.code {
        KvErrorCode::FenceMismatch => Error::FenceMismatch { current_generation: e.current_generation },
        KvErrorCode::ActorStopping => Error::ActorStopping,
        KvErrorCode::ActorNotFound => Error::ActorNotFound { message: e.message },
        KvErrorCode::ActorNotPlaced => Error::ActorNotPlaced { message: e.message },
        KvErrorCode::Overloaded => Error::Overloaded { message: e.message },
        // v6: a KV answer carries no `committed`, and a KV request relayed to
        // the actor's owner when its link dropped may have run: unknown.
        KvErrorCode::ActorUnavailable => Error::ActorUnavailable { message: e.message, committed: None },
        // Below v5 a KV limit error carries no structured limit (kind, max),
        // only its message: it stays a `Kv` error with code LIMIT_EXCEEDED
        // rather than a `LimitExceeded` with made-up numbers. (v5 sends
        // `KvLimitExceeded` instead, mapped above.)
        KvErrorCode::LimitExceeded | KvErrorCode::Unknown | KvErrorCode::InvalidRequest | KvErrorCode::Internal => {
            Error::Kv { code: e.code, message: e.message }
        }
    }
}

fn map_actor_error(e: p::GetOrCreateActorError) -> Error {
    match e.code {
        p::ActorErrorCode::LimitExceeded => Error::ActorLimitExceeded { message: e.message },
        p::ActorErrorCode::Overloaded => Error::Overloaded { message: e.message },
        // v6: nothing was placed.
        p::ActorErrorCode::ActorUnavailable => Error::ActorUnavailable { message: e.message, committed: Some(false) },
        p::ActorErrorCode::InvalidRequest | p::ActorErrorCode::EngineStopping | p::ActorErrorCode::Internal => {
            Error::GetOrCreateActor { code: e.code, message: e.message }
        }
    }
}

/// Maps a SQL error; `transaction_end` is the reason the engine gave with a
/// transaction statement's answer, when the transaction ended with it.
pub fn map_sql_error(e: p::SqliteError, transaction_end: Option<p::TransactionEndReason>) -> Error {
    let generic = |e: p::SqliteError| Error::Sql {
        code: e.code,
        extended_code: e.extended_code,
        message: e.message,
        committed: e.committed,
        statement_index: e.statement_index,
    };
    match e.code {
        SqliteErrorCode::ActorStopping => Error::ActorStopping,
        SqliteErrorCode::ActorNotFound => Error::ActorNotFound { message: e.message },
        SqliteErrorCode::ActorNotPlaced => Error::ActorNotPlaced { message: e.message },
        SqliteErrorCode::Overloaded => Error::Overloaded { message: e.message },
        // v6: `committed` is absent for a relayed request that may have run.
        SqliteErrorCode::ActorUnavailable => Error::ActorUnavailable { message: e.message, committed: e.committed },
        SqliteErrorCode::LimitExceeded => match e.limit {
            Some(l) => Error::LimitExceeded { kind: l.kind, max: l.max, actual: l.actual, message: e.message },
            None => generic(e),
        },
        SqliteErrorCode::RequestKeyExpired => Error::RequestKeyExpired { message: e.message },
        SqliteErrorCode::RequestKeyConflict => Error::RequestKeyConflict { message: e.message },
        SqliteErrorCode::TransactionNotFound => Error::TransactionNotFound { message: e.message },
        SqliteErrorCode::TransactionExpired => Error::TransactionExpired { message: e.message },
        SqliteErrorCode::TransactionBusy => Error::TransactionBusy { message: e.message },
        SqliteErrorCode::TransactionAborted => {
            Error::TransactionAborted { reason: transaction_end, message: e.message }
        }
        SqliteErrorCode::StreamExpired => Error::StreamExpired { message: e.message },
        SqliteErrorCode::Cancelled => Error::Cancelled { message: e.message },
        SqliteErrorCode::Sqlite
        | SqliteErrorCode::InvalidRequest
        | SqliteErrorCode::Forbidden
        | SqliteErrorCode::Timeout
        | SqliteErrorCode::Interrupted
        | SqliteErrorCode::Internal => generic(e),
    }
}

/// The failure that ends a stream.
pub fn map_failure(f: p::SqliteFailure) -> Error {
    match f {
        p::SqliteFailure::SqliteFenceMismatch(f) => fence(f),
        p::SqliteFailure::SqliteError(e) => map_sql_error(e, None),
    }
}

/// What a message is, for routing: an answer to one request, part of a
/// stream, or neither.
pub enum Routing {
    /// The whole answer to this request.
    Answer(RequestId),
    /// A message of the stream opened by this request.
    Stream(RequestId),
    /// Not tied to a request.
    Connection,
}

/// Where a message goes.
pub fn routing(msg: &p::ToEnvoy) -> Routing {
    use p::ToEnvoy as T;
    match msg {
        T::KvResponse(r) => Routing::Answer(r.request_id),
        T::GetOrCreateActorResponse(r) => Routing::Answer(r.request_id),
        T::SqliteExecResponse(r) => Routing::Answer(r.request_id),
        T::SqliteExecuteResponse(r) => Routing::Answer(r.request_id),
        T::SqliteExecResponseV5(r) => Routing::Answer(r.request_id),
        T::SqliteExecuteResponseV5(r) => Routing::Answer(r.request_id),
        T::SqliteBatchResponse(r) => Routing::Answer(r.request_id),
        T::SqliteBeginResponse(r) => Routing::Answer(r.request_id),
        T::SqliteTransactionExecuteResponse(r) => Routing::Answer(r.request_id),
        T::SqliteCommitResponse(r) => Routing::Answer(r.request_id),
        T::SqliteRollbackResponse(r) => Routing::Answer(r.request_id),
        T::SqliteStreamChunk(c) => Routing::Stream(c.request_id),
        T::SqliteStreamFailed(f) => Routing::Stream(f.request_id),
        T::Init(_) | T::InitV5(_) | T::Commands(_) | T::AckEvents(_) | T::Ping(_) | T::SqliteTransactionEnded(_) => {
            Routing::Connection
        }
    }
}

/// Checks the request against the SQL limits the engine advertised, before sending.
pub fn check_sql_limits(request: &Request, limits: &p::SqlLimits) -> Result<(), Error> {
    let statements: Vec<(&str, Option<&Vec<Value>>)> = match request {
        Request::SqlExec { sql, .. } => vec![(sql.as_str(), None)],
        Request::SqlExecute { sql, params, .. } => vec![(sql.as_str(), params.as_ref())],
        Request::SqlTxExecute { statement, .. } | Request::SqlStream { statement, .. } => {
            vec![(statement.sql.as_str(), statement.params.as_ref())]
        }
        Request::SqlBatch { statements, .. } => {
            statements.iter().map(|s| (s.sql.as_str(), s.params.as_ref())).collect()
        }
        Request::Kv { .. }
        | Request::GetOrCreateActor { .. }
        | Request::SqlBegin { .. }
        | Request::SqlCommit { .. }
        | Request::SqlRollback { .. } => return Ok(()),
    };
    let over = |kind, max: u32, actual: usize, what: &str| Error::LimitExceeded {
        kind,
        max: u64::from(max),
        actual: Some(actual as u64),
        message: format!("{what} is {actual}, the engine accepts at most {max}"),
    };
    for (sql, params) in statements {
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
                    return Err(over(
                        p::LimitKind::ValueBytes,
                        limits.max_value_bytes,
                        len,
                        "a parameter's size in bytes",
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Checks a batch against the engine's `maxBatchStatements` (v5), before sending.
pub fn check_engine_limits(request: &Request, limits: &p::EngineLimits) -> Result<(), Error> {
    match request {
        Request::SqlBatch { statements, .. } if statements.len() > limits.max_batch_statements as usize => {
            Err(Error::LimitExceeded {
                kind: p::LimitKind::BatchStatements,
                max: u64::from(limits.max_batch_statements),
                actual: Some(statements.len() as u64),
                message: format!(
                    "the batch has {} statements, the engine accepts at most {}",
                    statements.len(),
                    limits.max_batch_statements
                ),
            })
        }
        Request::Kv { .. }
        | Request::SqlExec { .. }
        | Request::SqlExecute { .. }
        | Request::GetOrCreateActor { .. }
        | Request::SqlBatch { .. }
        | Request::SqlBegin { .. }
        | Request::SqlTxExecute { .. }
        | Request::SqlCommit { .. }
        | Request::SqlRollback { .. }
        | Request::SqlStream { .. } => Ok(()),
    }
}
