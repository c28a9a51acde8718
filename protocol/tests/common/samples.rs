//! Hand-built sample messages, one or more per union member, in the latest
//! types. The golden vectors are these samples encoded at every version that
//! can carry them (`encode_to_engine` / `encode_to_envoy`); a sample a version
//! cannot carry has no vector at that version.
//!
//! Published vectors never change: never edit a sample that already has
//! vectors — add a new sample (a new case name) instead.

use envoy_protocol::*;
use std::collections::BTreeMap;

/// A NaN with a payload and the sign bit set, to prove every bit survives.
pub const NAN_WITH_PAYLOAD: u64 = 0xfff8_0000_dead_beef;

fn limits() -> Limits {
    Limits {
        max_request_bytes: 1 << 20,
        max_response_bytes: 4 << 20,
        max_kv_key_bytes: 2048,
        max_kv_value_bytes: 128 * 1024,
        max_kv_batch_entries: 128,
        max_pending_requests: u32::MAX,
    }
}

fn sql_limits() -> SqlLimits {
    SqlLimits { max_sql_bytes: 100_000, max_params: 999, max_value_bytes: 1 << 20, max_statement_ms: 0 }
}

/// Every SQLite value kind, with the edge values that break codecs.
pub fn edge_values() -> Vec<Value> {
    vec![
        Value::Null,
        Value::Integer(i64::MIN),
        Value::Integer(i64::MAX),
        Value::Integer(0),
        Value::Float(-0.0),
        Value::Float(f64::from_bits(NAN_WITH_PAYLOAD)),
        Value::Float(f64::INFINITY),
        Value::Text(String::new()),
        Value::Text("naïve ☃ 𝄞".into()),
        Value::Text("nul\0inside".into()),
        Value::Blob(Vec::new()),
        Value::Blob(vec![0x00, 0xff, 0x80]),
    ]
}

fn sql_request(params: Option<Vec<Value>>) -> SqliteExecuteRequest {
    SqliteExecuteRequest {
        actor_id: "actor-1".into(),
        generation: 3,
        sql: "INSERT INTO t VALUES (?, ?2, :x)".into(),
        params,
    }
}

fn kv(request_id: u32, data: KvRequestData) -> ToEngine {
    ToEngine::KvRequest(ToEngineKvRequest { request_id, actor_id: "actor-1".into(), generation: 1, data })
}

fn events(inner: Event) -> ToEngine {
    ToEngine::Events(ToEngineEvents { events: vec![EventWrapper { index: 41, inner }] })
}

/// Every envoy → engine sample, by case name.
pub fn to_engine() -> Vec<(&'static str, ToEngine)> {
    let mut metadata = BTreeMap::new();
    metadata.insert("region".to_string(), "eu-west".to_string());
    metadata.insert("ключ".to_string(), String::new());
    vec![
        (
            "metadata_hello",
            ToEngine::Metadata(ToEngineMetadata {
                envoy_key: "envoy-a".into(),
                pool_name: "default".into(),
                version: 7,
                metadata: BTreeMap::new(),
                last_command_index: None,
            }),
        ),
        (
            "metadata_resume",
            ToEngine::Metadata(ToEngineMetadata {
                envoy_key: "envoy\0a".into(),
                pool_name: String::new(),
                version: u32::MAX,
                metadata,
                last_command_index: Some(u64::MAX),
            }),
        ),
        ("events_empty", ToEngine::Events(ToEngineEvents { events: Vec::new() })),
        (
            "events_running",
            events(Event::ActorStateUpdate(EventActorStateUpdate {
                actor_id: "actor-1".into(),
                generation: 0,
                state: ActorState::Running,
            })),
        ),
        (
            "events_stopped",
            ToEngine::Events(ToEngineEvents {
                events: vec![
                    EventWrapper {
                        index: 1,
                        inner: Event::ActorStateUpdate(EventActorStateUpdate {
                            actor_id: "actor-1".into(),
                            generation: 2,
                            state: ActorState::Stopped(ActorStateStopped { code: StopCode::Ok, message: None }),
                        }),
                    },
                    EventWrapper {
                        index: 2,
                        inner: Event::ActorStateUpdate(EventActorStateUpdate {
                            actor_id: "actor-2".into(),
                            generation: u64::MAX,
                            state: ActorState::Stopped(ActorStateStopped {
                                code: StopCode::Error,
                                message: Some("panicked: ☃".into()),
                            }),
                        }),
                    },
                ],
            }),
        ),
        (
            "events_intent_stop",
            events(Event::ActorIntent(EventActorIntent {
                actor_id: "actor-1".into(),
                generation: 4,
                intent: ActorIntent::Stop,
            })),
        ),
        (
            "events_intent_sleep",
            events(Event::ActorIntent(EventActorIntent {
                actor_id: "actor-1".into(),
                generation: 4,
                intent: ActorIntent::Sleep,
            })),
        ),
        ("ack_commands", ToEngine::AckCommands(ToEngineAckCommands { last_command_index: 300 })),
        ("stopping", ToEngine::Stopping),
        ("pong", ToEngine::Pong(ToEnginePong { ts: i64::MIN })),
        ("kv_get", kv(1, KvRequestData::KvGet(KvGet { key: b"k".to_vec() }))),
        ("kv_get_empty_key", kv(u32::MAX, KvRequestData::KvGet(KvGet { key: Vec::new() }))),
        ("kv_put", kv(2, KvRequestData::KvPut(KvPut { key: vec![0, 1, 0xff], value: "välue".as_bytes().to_vec() }))),
        ("kv_delete", kv(3, KvRequestData::KvDelete(KvDelete { key: b"k".to_vec() }))),
        ("kv_list_prefix", kv(4, KvRequestData::KvListPrefix(KvListPrefix { prefix: b"user/".to_vec() }))),
        (
            "kv_get_batch",
            kv(5, KvRequestData::KvGetBatch(KvGetBatch { keys: vec![b"a".to_vec(), Vec::new(), vec![0xff; 3]] })),
        ),
        (
            "kv_put_batch",
            kv(
                6,
                KvRequestData::KvPutBatch(KvPutBatch {
                    entries: vec![
                        KvEntry { key: b"a".to_vec(), value: b"1".to_vec() },
                        KvEntry { key: b"b".to_vec(), value: Vec::new() },
                    ],
                }),
            ),
        ),
        ("kv_delete_batch", kv(7, KvRequestData::KvDeleteBatch(KvDeleteBatch { keys: vec![b"a".to_vec()] }))),
        (
            "kv_delete_range",
            kv(8, KvRequestData::KvDeleteRange(KvDeleteRange { start: b"a".to_vec(), end: b"b".to_vec() })),
        ),
        ("kv_list_all", kv(9, KvRequestData::KvList(KvList { query: KvQuery::All, reverse: false, limit: None }))),
        (
            "kv_list_prefix_query",
            kv(
                10,
                KvRequestData::KvList(KvList {
                    query: KvQuery::Prefix(KvQueryPrefix { prefix: b"p/".to_vec() }),
                    reverse: true,
                    limit: Some(0),
                }),
            ),
        ),
        (
            "kv_list_range",
            kv(
                11,
                KvRequestData::KvList(KvList {
                    query: KvQuery::Range(KvQueryRange { start: Vec::new(), end: vec![0xff] }),
                    reverse: false,
                    limit: Some(u32::MAX),
                }),
            ),
        ),
        (
            "get_or_create_actor",
            ToEngine::GetOrCreateActor(ToEngineGetOrCreateActor {
                request_id: 12,
                name: "counter".into(),
                key: "user/ü".into(),
            }),
        ),
        (
            "sqlite_exec",
            ToEngine::SqliteExec(ToEngineSqliteExec {
                request_id: 13,
                request: SqliteExecRequest {
                    actor_id: "actor-1".into(),
                    generation: 3,
                    sql: "CREATE TABLE t(a, b, c); INSERT INTO t VALUES (1, 'x', NULL);".into(),
                },
            }),
        ),
        (
            "sqlite_execute_no_params",
            ToEngine::SqliteExecute(ToEngineSqliteExecute { request_id: 14, request: sql_request(None) }),
        ),
        (
            "sqlite_execute_empty_params",
            ToEngine::SqliteExecute(ToEngineSqliteExecute { request_id: 15, request: sql_request(Some(Vec::new())) }),
        ),
        (
            "sqlite_execute_params",
            ToEngine::SqliteExecute(ToEngineSqliteExecute {
                request_id: 16,
                request: sql_request(Some(edge_values())),
            }),
        ),
        (
            "sqlite_execute_write",
            ToEngine::SqliteExecuteWrite(ToEngineSqliteExecuteWrite {
                request_id: 17,
                request: sql_request(Some(vec![Value::Integer(-1), Value::Text("x".into()), Value::Null])),
            }),
        ),
        // ---- v5
        (
            "sqlite_exec_v5_keyed",
            ToEngine::SqliteExecV5(ToEngineSqliteExecV5 {
                request_id: 18,
                request: SqliteExecRequestV5 {
                    actor_id: "actor-1".into(),
                    generation: 3,
                    sql: "CREATE TABLE t(a); INSERT INTO t VALUES (1);".into(),
                    request_key: Some(request_key()),
                },
            }),
        ),
        (
            "sqlite_exec_v5_no_key",
            ToEngine::SqliteExecV5(ToEngineSqliteExecV5 {
                request_id: 19,
                request: SqliteExecRequestV5 {
                    actor_id: "actor-1".into(),
                    generation: 3,
                    sql: String::new(),
                    request_key: None,
                },
            }),
        ),
        (
            "sqlite_execute_v5_keyed_writer",
            ToEngine::SqliteExecuteV5(ToEngineSqliteExecuteV5 {
                request_id: 20,
                request: SqliteExecuteRequestV5 {
                    actor_id: "actor-1".into(),
                    generation: 3,
                    statement: statement(Some(edge_values())),
                    writer: true,
                    request_key: Some(request_key()),
                },
            }),
        ),
        (
            "sqlite_execute_v5_routed",
            ToEngine::SqliteExecuteV5(ToEngineSqliteExecuteV5 {
                request_id: 21,
                request: SqliteExecuteRequestV5 {
                    actor_id: "actor-1".into(),
                    generation: 3,
                    statement: statement(None),
                    writer: false,
                    request_key: None,
                },
            }),
        ),
        (
            "sqlite_batch_write",
            ToEngine::SqliteBatch(ToEngineSqliteBatch {
                request_id: 22,
                request: SqliteBatchRequest {
                    actor_id: "actor-1".into(),
                    generation: 3,
                    mode: SqliteTransactionMode::Write,
                    statements: vec![
                        statement(Some(vec![Value::Integer(1), Value::Text("x".into()), Value::Null])),
                        SqliteStatement {
                            sql: "DELETE FROM t WHERE a = ?".into(),
                            params: Some(vec![Value::Integer(2)]),
                        },
                    ],
                    request_key: Some(request_key()),
                },
            }),
        ),
        (
            "sqlite_batch_read_empty",
            ToEngine::SqliteBatch(ToEngineSqliteBatch {
                request_id: 23,
                request: SqliteBatchRequest {
                    actor_id: "actor-1".into(),
                    generation: 3,
                    mode: SqliteTransactionMode::Read,
                    statements: Vec::new(),
                    request_key: None,
                },
            }),
        ),
        (
            "sqlite_begin_deferred",
            ToEngine::SqliteBegin(ToEngineSqliteBegin {
                request_id: 24,
                request: SqliteBeginRequest {
                    actor_id: "actor-1".into(),
                    generation: 3,
                    mode: SqliteTransactionMode::Deferred,
                    lease_ms: 5_000,
                },
            }),
        ),
        (
            "sqlite_transaction_execute",
            ToEngine::SqliteTransactionExecute(ToEngineSqliteTransactionExecute {
                request_id: 25,
                request: SqliteTransactionExecuteRequest {
                    actor_id: "actor-1".into(),
                    generation: 3,
                    transaction_id: u64::MAX,
                    statement: statement(Some(vec![Value::Float(-0.0), Value::Blob(vec![0xff]), Value::Null])),
                },
            }),
        ),
        (
            "sqlite_commit_keyed",
            ToEngine::SqliteCommit(ToEngineSqliteCommit {
                request_id: 26,
                request: SqliteCommitRequest {
                    actor_id: "actor-1".into(),
                    generation: 3,
                    transaction_id: 1,
                    request_key: Some(request_key()),
                },
            }),
        ),
        (
            "sqlite_rollback",
            ToEngine::SqliteRollback(ToEngineSqliteRollback {
                request_id: 27,
                request: SqliteRollbackRequest { actor_id: "actor-1".into(), generation: 3, transaction_id: 1 },
            }),
        ),
        (
            "sqlite_stream_open",
            ToEngine::SqliteStreamOpen(ToEngineSqliteStreamOpen {
                request_id: 28,
                request: SqliteStreamRequest {
                    actor_id: "actor-1".into(),
                    generation: 3,
                    statement: SqliteStatement {
                        sql: "SELECT * FROM t WHERE a > ?".into(),
                        params: Some(vec![Value::Integer(0)]),
                    },
                    credit_bytes: 64 * 1024,
                    lease_ms: 30_000,
                },
            }),
        ),
        (
            "sqlite_stream_credit",
            ToEngine::SqliteStreamCredit(ToEngineSqliteStreamCredit { request_id: 28, credit_bytes: u32::MAX }),
        ),
        ("sqlite_stream_cancel", ToEngine::SqliteStreamCancel(ToEngineSqliteStreamCancel { request_id: 28 })),
    ]
}

/// A v5 request key: 6 bytes of big-endian Unix milliseconds, then 10 random bytes.
pub fn request_key() -> Vec<u8> {
    let mut key = 1_700_000_000_000u64.to_be_bytes()[2..].to_vec();
    key.extend([0x7a, 0x11, 0x9c, 0x00, 0xff, 0x42, 0x42, 0x01, 0x80, 0x7f]);
    key
}

fn statement(params: Option<Vec<Value>>) -> SqliteStatement {
    SqliteStatement { sql: "INSERT INTO t VALUES (?, ?2, :x) RETURNING rowid".into(), params }
}

fn kv_response(request_id: u32, data: KvResponseData) -> ToEnvoy {
    ToEnvoy::KvResponse(ToEnvoyKvResponse { request_id, data })
}

fn sqlite_error() -> SqliteError {
    SqliteError {
        code: SqliteErrorCode::Sqlite,
        message: "UNIQUE constraint failed: t.a".into(),
        extended_code: Some(2067),
        committed: Some(false),
        statement_index: Some(1),
        limit: None,
    }
}

fn limit_error() -> SqliteError {
    SqliteError {
        code: SqliteErrorCode::LimitExceeded,
        message: "too many parameters".into(),
        extended_code: None,
        committed: None,
        statement_index: None,
        limit: Some(LimitExceeded { kind: LimitKind::Params, max: 999, actual: Some(1000) }),
    }
}

/// Every engine → envoy sample, by case name.
pub fn to_envoy() -> Vec<(&'static str, ToEnvoy)> {
    let rows = vec![vec![Value::Integer(1), Value::Text("x".into()), Value::Null], edge_values()];
    vec![
        (
            "init",
            ToEnvoy::Init(ToEnvoyInit {
                envoy_id: "envoy-id-1".into(),
                last_event_index: Some(41),
                metadata: ProtocolMetadata {
                    ping_interval_ms: 3_000,
                    envoy_lost_threshold_ms: 15_000,
                    actor_stop_threshold_ms: 30_000,
                    max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
                    limits: Some(limits()),
                    sql_limits: Some(sql_limits()),
                },
            }),
        ),
        (
            "init_no_limits",
            ToEnvoy::Init(ToEnvoyInit {
                envoy_id: String::new(),
                last_event_index: None,
                metadata: ProtocolMetadata {
                    ping_interval_ms: u64::MAX,
                    envoy_lost_threshold_ms: 0,
                    actor_stop_threshold_ms: 1,
                    max_frame_bytes: 0,
                    limits: None,
                    sql_limits: None,
                },
            }),
        ),
        (
            "commands_start",
            ToEnvoy::Commands(ToEnvoyCommands {
                commands: vec![CommandWrapper {
                    index: 1,
                    inner: Command::StartActor(CommandStartActor {
                        actor_id: "actor-1".into(),
                        generation: 3,
                        name: "counter".into(),
                        key: "user/ü".into(),
                    }),
                }],
            }),
        ),
        (
            "commands_stop_unspecified",
            ToEnvoy::Commands(ToEnvoyCommands {
                commands: vec![CommandWrapper {
                    index: 2,
                    inner: Command::StopActor(CommandStopActor {
                        actor_id: "actor-1".into(),
                        generation: 3,
                        reason: StopReason::Unspecified,
                    }),
                }],
            }),
        ),
        (
            "commands_stop_replaced",
            ToEnvoy::Commands(ToEnvoyCommands {
                commands: vec![
                    CommandWrapper {
                        index: 3,
                        inner: Command::StopActor(CommandStopActor {
                            actor_id: "actor-1".into(),
                            generation: 3,
                            reason: StopReason::Replaced,
                        }),
                    },
                    CommandWrapper {
                        index: 4,
                        inner: Command::StopActor(CommandStopActor {
                            actor_id: "actor-2".into(),
                            generation: 0,
                            reason: StopReason::EnvoyLost,
                        }),
                    },
                ],
            }),
        ),
        ("commands_empty", ToEnvoy::Commands(ToEnvoyCommands { commands: Vec::new() })),
        ("ack_events", ToEnvoy::AckEvents(ToEnvoyAckEvents { last_event_index: 41 })),
        ("ping", ToEnvoy::Ping(ToEnvoyPing { ts: i64::MAX })),
        ("ping_negative", ToEnvoy::Ping(ToEnvoyPing { ts: -1 })),
        (
            "kv_error_unknown",
            kv_response(
                1,
                KvResponseData::KvErrorResponse(KvErrorResponse {
                    code: KvErrorCode::Unknown,
                    message: "something".into(),
                    current_generation: None,
                }),
            ),
        ),
        (
            "kv_error_fence_mismatch",
            kv_response(
                2,
                KvResponseData::KvErrorResponse(KvErrorResponse {
                    code: KvErrorCode::FenceMismatch,
                    message: "generation 1 is stale".into(),
                    current_generation: Some(2),
                }),
            ),
        ),
        ("kv_get_found", kv_response(3, KvResponseData::KvGetResponse(KvGetResponse { value: Some(b"v".to_vec()) }))),
        ("kv_get_missing", kv_response(4, KvResponseData::KvGetResponse(KvGetResponse { value: None }))),
        (
            "kv_get_empty_value",
            kv_response(5, KvResponseData::KvGetResponse(KvGetResponse { value: Some(Vec::new()) })),
        ),
        ("kv_put", kv_response(6, KvResponseData::KvPutResponse)),
        ("kv_delete", kv_response(7, KvResponseData::KvDeleteResponse)),
        (
            "kv_list",
            kv_response(
                8,
                KvResponseData::KvListResponse(KvListResponse {
                    entries: vec![
                        KvEntry { key: b"a".to_vec(), value: b"1".to_vec() },
                        KvEntry { key: vec![0xff], value: Vec::new() },
                    ],
                }),
            ),
        ),
        (
            "kv_get_batch",
            kv_response(
                9,
                KvResponseData::KvGetBatchResponse(KvGetBatchResponse {
                    values: vec![Some(b"1".to_vec()), None, Some(Vec::new())],
                }),
            ),
        ),
        ("kv_put_batch", kv_response(10, KvResponseData::KvPutBatchResponse)),
        ("kv_delete_batch", kv_response(11, KvResponseData::KvDeleteBatchResponse)),
        ("kv_delete_range", kv_response(12, KvResponseData::KvDeleteRangeResponse)),
        (
            "get_or_create_actor_ok",
            ToEnvoy::GetOrCreateActorResponse(ToEnvoyGetOrCreateActorResponse {
                request_id: 13,
                result: GetOrCreateActorResult::GetOrCreateActorOk(GetOrCreateActorOk {
                    actor_id: "actor-1".into(),
                    generation: 0,
                    created: true,
                }),
            }),
        ),
        (
            "get_or_create_actor_error",
            ToEnvoy::GetOrCreateActorResponse(ToEnvoyGetOrCreateActorResponse {
                request_id: 14,
                result: GetOrCreateActorResult::GetOrCreateActorError(GetOrCreateActorError {
                    code: ActorErrorCode::EngineStopping,
                    message: "draining".into(),
                }),
            }),
        ),
        (
            "sqlite_exec_rows",
            ToEnvoy::SqliteExecResponse(ToEnvoySqliteExecResponse {
                request_id: 15,
                result: SqliteExecResult::QueryResult(QueryResult {
                    columns: vec!["a".into(), String::new(), "ç".into()],
                    rows: rows.clone(),
                }),
            }),
        ),
        (
            "sqlite_exec_fence_mismatch",
            ToEnvoy::SqliteExecResponse(ToEnvoySqliteExecResponse {
                request_id: 16,
                result: SqliteExecResult::SqliteFenceMismatch(SqliteFenceMismatch { current_generation: 4 }),
            }),
        ),
        (
            "sqlite_exec_error",
            ToEnvoy::SqliteExecResponse(ToEnvoySqliteExecResponse {
                request_id: 17,
                result: SqliteExecResult::SqliteError(sqlite_error()),
            }),
        ),
        (
            "sqlite_execute_result",
            ToEnvoy::SqliteExecuteResponse(ToEnvoySqliteExecuteResponse {
                request_id: 18,
                result: SqliteExecuteResult::ExecuteResult(ExecuteResult {
                    columns: vec!["a".into(), "b".into(), "c".into()],
                    rows,
                    changes: 0,
                    last_insert_row_id: Some(i64::MIN),
                    route: SqliteRoute::WriteFallback,
                }),
            }),
        ),
        (
            "sqlite_execute_write_result",
            ToEnvoy::SqliteExecuteResponse(ToEnvoySqliteExecuteResponse {
                request_id: 19,
                result: SqliteExecuteResult::ExecuteResult(ExecuteResult {
                    columns: Vec::new(),
                    rows: Vec::new(),
                    changes: 1,
                    last_insert_row_id: None,
                    route: SqliteRoute::Write,
                }),
            }),
        ),
        (
            "sqlite_execute_fence_mismatch",
            ToEnvoy::SqliteExecuteResponse(ToEnvoySqliteExecuteResponse {
                request_id: 20,
                result: SqliteExecuteResult::SqliteFenceMismatch(SqliteFenceMismatch { current_generation: u64::MAX }),
            }),
        ),
        (
            "sqlite_execute_limit_error",
            ToEnvoy::SqliteExecuteResponse(ToEnvoySqliteExecuteResponse {
                request_id: 21,
                result: SqliteExecuteResult::SqliteError(limit_error()),
            }),
        ),
        // ---- v5: new enum values inside v4 messages (gated at v4 and below)
        (
            "get_or_create_actor_limit_exceeded",
            ToEnvoy::GetOrCreateActorResponse(ToEnvoyGetOrCreateActorResponse {
                request_id: 22,
                result: GetOrCreateActorResult::GetOrCreateActorError(GetOrCreateActorError {
                    code: ActorErrorCode::LimitExceeded,
                    message: "more than 1000 actors on this connection (maxActorsPerConnection)".into(),
                }),
            }),
        ),
        (
            "sqlite_execute_transaction_busy",
            ToEnvoy::SqliteExecuteResponse(ToEnvoySqliteExecuteResponse {
                request_id: 23,
                result: SqliteExecuteResult::SqliteError(SqliteError {
                    code: SqliteErrorCode::TransactionBusy,
                    message: "the writer is held by transaction 7".into(),
                    extended_code: None,
                    committed: Some(false),
                    statement_index: None,
                    limit: None,
                }),
            }),
        ),
        (
            "sqlite_exec_result_memory_limit",
            ToEnvoy::SqliteExecResponse(ToEnvoySqliteExecResponse {
                request_id: 24,
                result: SqliteExecResult::SqliteError(SqliteError {
                    code: SqliteErrorCode::LimitExceeded,
                    message: "result too large".into(),
                    extended_code: None,
                    committed: Some(false),
                    statement_index: Some(0),
                    limit: Some(LimitExceeded { kind: LimitKind::ResultMemoryBytes, max: 1 << 26, actual: None }),
                }),
            }),
        ),
        // ---- v5: new members
        (
            "kv_limit_exceeded",
            kv_response(
                25,
                KvResponseData::KvLimitExceeded(KvLimitExceeded {
                    message: "key is 4096 bytes, at most 2048".into(),
                    limit: LimitExceeded { kind: LimitKind::KvKeyBytes, max: 2048, actual: Some(4096) },
                }),
            ),
        ),
        (
            "init_v5",
            ToEnvoy::InitV5(ToEnvoyInitV5 {
                envoy_id: "envoy-id-1".into(),
                last_event_index: Some(41),
                metadata: ProtocolMetadata {
                    ping_interval_ms: 3_000,
                    envoy_lost_threshold_ms: 15_000,
                    actor_stop_threshold_ms: 30_000,
                    max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
                    limits: Some(limits()),
                    sql_limits: Some(sql_limits()),
                },
                metadata_v5: ProtocolMetadataV5 { durability: Durability::Fsync, limits: engine_limits() },
            }),
        ),
        (
            "init_v5_os_no_limits",
            ToEnvoy::InitV5(ToEnvoyInitV5 {
                envoy_id: String::new(),
                last_event_index: None,
                metadata: ProtocolMetadata {
                    ping_interval_ms: 1,
                    envoy_lost_threshold_ms: 2,
                    actor_stop_threshold_ms: 3,
                    max_frame_bytes: 4,
                    limits: None,
                    sql_limits: None,
                },
                metadata_v5: ProtocolMetadataV5 {
                    durability: Durability::Os,
                    limits: EngineLimits { max_connection_outbox_bytes: u64::MAX, ..engine_limits() },
                },
            }),
        ),
        (
            "sqlite_exec_v5_executed",
            ToEnvoy::SqliteExecResponseV5(ToEnvoySqliteExecResponseV5 {
                request_id: 26,
                result: SqliteExecResult::QueryResult(QueryResult { columns: Vec::new(), rows: Vec::new() }),
                cost: cost(),
                request_key: Some(RequestKeyOutcome::Executed),
            }),
        ),
        (
            "sqlite_exec_v5_key_expired",
            ToEnvoy::SqliteExecResponseV5(ToEnvoySqliteExecResponseV5 {
                request_id: 27,
                result: SqliteExecResult::SqliteError(SqliteError {
                    code: SqliteErrorCode::RequestKeyExpired,
                    message: "request key from 2023-11-14 is older than the 24 h retention".into(),
                    extended_code: None,
                    committed: None,
                    statement_index: None,
                    limit: None,
                }),
                cost: SqlCost { rows_read: 0, rows_written: 0, duration_us: 0 },
                request_key: None,
            }),
        ),
        (
            "sqlite_execute_v5_replayed",
            ToEnvoy::SqliteExecuteResponseV5(ToEnvoySqliteExecuteResponseV5 {
                request_id: 28,
                result: SqliteExecuteResult::ExecuteResult(ExecuteResult {
                    columns: vec!["rowid".into()],
                    rows: vec![vec![Value::Integer(7)]],
                    changes: 1,
                    last_insert_row_id: Some(7),
                    route: SqliteRoute::Write,
                }),
                cost: cost(),
                request_key: Some(RequestKeyOutcome::Replayed),
            }),
        ),
        (
            "sqlite_execute_v5_replayed_without_rows",
            ToEnvoy::SqliteExecuteResponseV5(ToEnvoySqliteExecuteResponseV5 {
                request_id: 29,
                result: SqliteExecuteResult::ExecuteResult(ExecuteResult {
                    columns: vec!["rowid".into()],
                    rows: Vec::new(),
                    changes: 100_000,
                    last_insert_row_id: Some(i64::MAX),
                    route: SqliteRoute::Write,
                }),
                cost: cost(),
                request_key: Some(RequestKeyOutcome::ReplayedWithoutRows),
            }),
        ),
        (
            "sqlite_batch_ok",
            ToEnvoy::SqliteBatchResponse(ToEnvoySqliteBatchResponse {
                request_id: 30,
                result: SqliteBatchResult::SqliteBatchOk(SqliteBatchOk {
                    results: vec![
                        ExecuteResult {
                            columns: vec!["rowid".into()],
                            rows: vec![vec![Value::Integer(1)]],
                            changes: 1,
                            last_insert_row_id: Some(1),
                            route: SqliteRoute::Write,
                        },
                        ExecuteResult {
                            columns: Vec::new(),
                            rows: Vec::new(),
                            changes: 0,
                            last_insert_row_id: None,
                            route: SqliteRoute::Write,
                        },
                    ],
                }),
                cost: cost(),
                request_key: Some(RequestKeyOutcome::Executed),
            }),
        ),
        (
            "sqlite_batch_statement_failed",
            ToEnvoy::SqliteBatchResponse(ToEnvoySqliteBatchResponse {
                request_id: 31,
                result: SqliteBatchResult::SqliteError(sqlite_error()),
                cost: cost(),
                request_key: None,
            }),
        ),
        (
            "sqlite_batch_fence_mismatch",
            ToEnvoy::SqliteBatchResponse(ToEnvoySqliteBatchResponse {
                request_id: 32,
                result: SqliteBatchResult::SqliteFenceMismatch(SqliteFenceMismatch { current_generation: 9 }),
                cost: SqlCost { rows_read: 0, rows_written: 0, duration_us: 3 },
                request_key: None,
            }),
        ),
        (
            "sqlite_begin_started",
            ToEnvoy::SqliteBeginResponse(ToEnvoySqliteBeginResponse {
                request_id: 33,
                result: SqliteBeginResult::SqliteTransactionStarted(SqliteTransactionStarted {
                    transaction_id: 1,
                    lease_ms: 5_000,
                }),
                cost: cost(),
            }),
        ),
        (
            "sqlite_begin_fence_mismatch",
            ToEnvoy::SqliteBeginResponse(ToEnvoySqliteBeginResponse {
                request_id: 34,
                result: SqliteBeginResult::SqliteFenceMismatch(SqliteFenceMismatch { current_generation: 4 }),
                cost: cost(),
            }),
        ),
        (
            "sqlite_begin_too_many",
            ToEnvoy::SqliteBeginResponse(ToEnvoySqliteBeginResponse {
                request_id: 35,
                result: SqliteBeginResult::SqliteError(SqliteError {
                    code: SqliteErrorCode::LimitExceeded,
                    message: "16 transactions already open on this connection".into(),
                    extended_code: None,
                    committed: Some(false),
                    statement_index: None,
                    limit: Some(LimitExceeded { kind: LimitKind::OpenTransactions, max: 16, actual: Some(17) }),
                }),
                cost: cost(),
            }),
        ),
        (
            "sqlite_transaction_execute_ok",
            ToEnvoy::SqliteTransactionExecuteResponse(ToEnvoySqliteTransactionExecuteResponse {
                request_id: 36,
                result: SqliteExecuteResult::ExecuteResult(ExecuteResult {
                    columns: vec!["a".into()],
                    rows: vec![edge_values()],
                    changes: 0,
                    last_insert_row_id: None,
                    route: SqliteRoute::Read,
                }),
                cost: cost(),
                transaction_end: None,
            }),
        ),
        (
            "sqlite_transaction_execute_expired",
            ToEnvoy::SqliteTransactionExecuteResponse(ToEnvoySqliteTransactionExecuteResponse {
                request_id: 37,
                result: SqliteExecuteResult::SqliteError(SqliteError {
                    code: SqliteErrorCode::TransactionExpired,
                    message: "transaction 1 expired after its 5000 ms lease".into(),
                    extended_code: None,
                    committed: Some(false),
                    statement_index: None,
                    limit: None,
                }),
                cost: SqlCost { rows_read: 0, rows_written: 0, duration_us: 1 },
                transaction_end: Some(TransactionEndReason::LeaseExpired),
            }),
        ),
        (
            "sqlite_commit_committed",
            ToEnvoy::SqliteCommitResponse(ToEnvoySqliteCommitResponse {
                request_id: 38,
                result: SqliteCommitResult::SqliteCommitted(SqliteCommitted { changes: 3 }),
                cost: cost(),
                request_key: Some(RequestKeyOutcome::Replayed),
            }),
        ),
        (
            "sqlite_commit_fence_mismatch",
            ToEnvoy::SqliteCommitResponse(ToEnvoySqliteCommitResponse {
                request_id: 39,
                result: SqliteCommitResult::SqliteFenceMismatch(SqliteFenceMismatch { current_generation: 4 }),
                cost: cost(),
                request_key: None,
            }),
        ),
        (
            "sqlite_commit_aborted",
            ToEnvoy::SqliteCommitResponse(ToEnvoySqliteCommitResponse {
                request_id: 40,
                result: SqliteCommitResult::SqliteError(SqliteError {
                    code: SqliteErrorCode::TransactionAborted,
                    message: "transaction 1 was rolled back: the actor is stopping".into(),
                    extended_code: None,
                    committed: Some(false),
                    statement_index: None,
                    limit: None,
                }),
                cost: cost(),
                request_key: Some(RequestKeyOutcome::Executed),
            }),
        ),
        (
            "sqlite_rollback_done",
            ToEnvoy::SqliteRollbackResponse(ToEnvoySqliteRollbackResponse {
                request_id: 41,
                result: SqliteRollbackResult::SqliteRolledBack,
                cost: cost(),
            }),
        ),
        (
            "sqlite_rollback_fence_mismatch",
            ToEnvoy::SqliteRollbackResponse(ToEnvoySqliteRollbackResponse {
                request_id: 42,
                result: SqliteRollbackResult::SqliteFenceMismatch(SqliteFenceMismatch { current_generation: 5 }),
                cost: cost(),
            }),
        ),
        (
            "sqlite_rollback_not_found",
            ToEnvoy::SqliteRollbackResponse(ToEnvoySqliteRollbackResponse {
                request_id: 43,
                result: SqliteRollbackResult::SqliteError(SqliteError {
                    code: SqliteErrorCode::TransactionNotFound,
                    message: "no transaction 99 on this connection".into(),
                    extended_code: None,
                    committed: None,
                    statement_index: None,
                    limit: None,
                }),
                cost: cost(),
            }),
        ),
        (
            "sqlite_transaction_ended",
            ToEnvoy::SqliteTransactionEnded(ToEnvoySqliteTransactionEnded {
                actor_id: "actor-1".into(),
                generation: 3,
                transaction_id: 1,
                reason: TransactionEndReason::ActorStopping,
            }),
        ),
        (
            "sqlite_stream_first_chunk",
            ToEnvoy::SqliteStreamChunk(ToEnvoySqliteStreamChunk {
                request_id: 28,
                sequence: 0,
                columns: Some(vec!["a".into(), "b".into()]),
                rows: vec![
                    vec![Value::Integer(1), Value::Text("x".into())],
                    vec![Value::Null, Value::Blob(Vec::new())],
                ],
                done: false,
                cost: None,
            }),
        ),
        (
            "sqlite_stream_last_chunk",
            ToEnvoy::SqliteStreamChunk(ToEnvoySqliteStreamChunk {
                request_id: 28,
                sequence: 1,
                columns: None,
                rows: Vec::new(),
                done: true,
                cost: Some(cost()),
            }),
        ),
        (
            "sqlite_stream_expired",
            ToEnvoy::SqliteStreamFailed(ToEnvoySqliteStreamFailed {
                request_id: 28,
                sequence: 2,
                failure: SqliteFailure::SqliteError(SqliteError {
                    code: SqliteErrorCode::StreamExpired,
                    message: "no credit for 30000 ms".into(),
                    extended_code: None,
                    committed: None,
                    statement_index: None,
                    limit: None,
                }),
                cost: cost(),
            }),
        ),
        (
            "sqlite_stream_fence_mismatch",
            ToEnvoy::SqliteStreamFailed(ToEnvoySqliteStreamFailed {
                request_id: 29,
                sequence: 0,
                failure: SqliteFailure::SqliteFenceMismatch(SqliteFenceMismatch { current_generation: u64::MAX }),
                cost: SqlCost { rows_read: 0, rows_written: 0, duration_us: 0 },
            }),
        ),
        // ---- v6: new enum values (downgraded to an older meaning below v6, never gated)
        (
            "get_or_create_actor_unavailable",
            ToEnvoy::GetOrCreateActorResponse(ToEnvoyGetOrCreateActorResponse {
                request_id: 44,
                result: GetOrCreateActorResult::GetOrCreateActorError(GetOrCreateActorError {
                    code: ActorErrorCode::ActorUnavailable,
                    message: "the owner node of actor-1 is unreachable".into(),
                }),
            }),
        ),
        (
            "kv_error_actor_unavailable",
            kv_response(
                45,
                KvResponseData::KvErrorResponse(KvErrorResponse {
                    code: KvErrorCode::ActorUnavailable,
                    message: "this node lost its cluster lease".into(),
                    current_generation: None,
                }),
            ),
        ),
        (
            "sqlite_execute_actor_unavailable",
            ToEnvoy::SqliteExecuteResponse(ToEnvoySqliteExecuteResponse {
                request_id: 46,
                result: SqliteExecuteResult::SqliteError(actor_unavailable(Some(false))),
            }),
        ),
        (
            "sqlite_exec_v5_actor_unavailable_relayed",
            ToEnvoy::SqliteExecResponseV5(ToEnvoySqliteExecResponseV5 {
                request_id: 47,
                result: SqliteExecResult::SqliteError(actor_unavailable(None)),
                cost: SqlCost { rows_read: 0, rows_written: 0, duration_us: 12 },
                request_key: None,
            }),
        ),
        (
            "sqlite_stream_actor_unavailable",
            ToEnvoy::SqliteStreamFailed(ToEnvoySqliteStreamFailed {
                request_id: 48,
                sequence: 1,
                failure: SqliteFailure::SqliteError(actor_unavailable(None)),
                cost: cost(),
            }),
        ),
        (
            "commands_stop_moved",
            ToEnvoy::Commands(ToEnvoyCommands {
                commands: vec![CommandWrapper {
                    index: 5,
                    inner: Command::StopActor(CommandStopActor {
                        actor_id: "actor-1".into(),
                        generation: 3,
                        reason: StopReason::Moved,
                    }),
                }],
            }),
        ),
    ]
}

/// A v6 ACTOR_UNAVAILABLE error; `committed: None` is a relayed request
/// whose owner's link dropped (it may have run).
fn actor_unavailable(committed: Option<bool>) -> SqliteError {
    SqliteError {
        code: SqliteErrorCode::ActorUnavailable,
        message: "the owner node of actor-1 is unreachable".into(),
        extended_code: None,
        committed,
        statement_index: None,
        limit: None,
    }
}

fn engine_limits() -> EngineLimits {
    EngineLimits {
        max_connection_outbox_bytes: 64 << 20,
        max_result_memory_bytes: 64 << 20,
        max_actors_per_connection: 1000,
        max_open_actor_databases: 10_000,
        group_commit_max_requests: 64,
        group_commit_max_delay_us: 500,
        request_key_retention_ms: 24 * 3600 * 1000,
        max_recorded_result_bytes: 64 * 1024,
        min_transaction_lease_ms: 100,
        max_transaction_lease_ms: 60_000,
        max_transaction_wait_ms: 5_000,
        max_open_transactions: 16,
        max_batch_statements: 1000,
        stream_window_bytes: 1 << 20,
        min_stream_lease_ms: 1_000,
        max_stream_lease_ms: 300_000,
        max_open_streams: 64,
    }
}

fn cost() -> SqlCost {
    SqlCost { rows_read: 12, rows_written: 3, duration_us: u64::MAX }
}
