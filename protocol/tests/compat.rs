//! Compatibility between versions: every gate fails with exact fields and
//! text at every version below the one that introduced it, every other sample
//! travels at every version, and the documented lossy-but-allowed downgrades
//! do what the spec says.

mod common;

use common::samples;
use envoy_protocol::bare::decode_frame;
use envoy_protocol::*;

/// The feature's name as it appears in the error text, written out here so a
/// changed `Display` fails this test.
fn feature_text(f: Feature) -> &'static str {
    match f {
        Feature::KvBatch => "KV batch operations",
        Feature::KvDeleteRange => "KV delete-range",
        Feature::KvList => "KV list with query, limit and direction",
        Feature::ActorIntents => "actor intents",
        Feature::RemoteSqlite => "remote SQLite execution",
        Feature::RequestKeys => "SQL request keys and cost",
        Feature::AtomicBatch => "atomic SQL batches",
        Feature::Transactions => "interactive SQL transactions",
        Feature::ResultStreams => "streamed SQL results",
        Feature::LimitErrors => "typed limit and overload errors",
    }
}

/// Every gated message: sample case, the feature it needs, and the version
/// that introduced the feature.
const TO_ENGINE_GATES: &[(&str, Feature, u16)] = &[
    ("kv_get_batch", Feature::KvBatch, 2),
    ("kv_put_batch", Feature::KvBatch, 2),
    ("kv_delete_batch", Feature::KvBatch, 2),
    ("kv_delete_range", Feature::KvDeleteRange, 2),
    ("kv_list_all", Feature::KvList, 2),
    ("kv_list_prefix_query", Feature::KvList, 2),
    ("kv_list_range", Feature::KvList, 2),
    ("events_intent_stop", Feature::ActorIntents, 3),
    ("events_intent_sleep", Feature::ActorIntents, 3),
    ("sqlite_exec", Feature::RemoteSqlite, 4),
    ("sqlite_execute_no_params", Feature::RemoteSqlite, 4),
    ("sqlite_execute_empty_params", Feature::RemoteSqlite, 4),
    ("sqlite_execute_params", Feature::RemoteSqlite, 4),
    ("sqlite_execute_write", Feature::RemoteSqlite, 4),
    ("sqlite_exec_v5_keyed", Feature::RequestKeys, 5),
    ("sqlite_exec_v5_no_key", Feature::RequestKeys, 5),
    ("sqlite_execute_v5_keyed_writer", Feature::RequestKeys, 5),
    ("sqlite_execute_v5_routed", Feature::RequestKeys, 5),
    ("sqlite_batch_write", Feature::AtomicBatch, 5),
    ("sqlite_batch_read_empty", Feature::AtomicBatch, 5),
    ("sqlite_begin_deferred", Feature::Transactions, 5),
    ("sqlite_transaction_execute", Feature::Transactions, 5),
    ("sqlite_commit_keyed", Feature::Transactions, 5),
    ("sqlite_rollback", Feature::Transactions, 5),
    ("sqlite_stream_open", Feature::ResultStreams, 5),
    ("sqlite_stream_credit", Feature::ResultStreams, 5),
    ("sqlite_stream_cancel", Feature::ResultStreams, 5),
];

const TO_ENVOY_GATES: &[(&str, Feature, u16)] = &[
    ("kv_get_batch", Feature::KvBatch, 2),
    ("kv_put_batch", Feature::KvBatch, 2),
    ("kv_delete_batch", Feature::KvBatch, 2),
    ("kv_delete_range", Feature::KvDeleteRange, 2),
    ("sqlite_exec_rows", Feature::RemoteSqlite, 4),
    ("sqlite_exec_fence_mismatch", Feature::RemoteSqlite, 4),
    ("sqlite_exec_error", Feature::RemoteSqlite, 4),
    ("sqlite_execute_result", Feature::RemoteSqlite, 4),
    ("sqlite_execute_write_result", Feature::RemoteSqlite, 4),
    ("sqlite_execute_fence_mismatch", Feature::RemoteSqlite, 4),
    ("sqlite_execute_limit_error", Feature::RemoteSqlite, 4),
    // v5 enum values inside v4 messages: the v5 gate wins at every lower
    // version, because the message is converted v5 → v4 first.
    ("get_or_create_actor_limit_exceeded", Feature::LimitErrors, 5),
    ("sqlite_execute_transaction_busy", Feature::Transactions, 5),
    ("sqlite_exec_result_memory_limit", Feature::LimitErrors, 5),
    // v5 members. (`init_v5*` and `kv_limit_exceeded` downgrade instead.)
    ("sqlite_exec_v5_executed", Feature::RequestKeys, 5),
    ("sqlite_exec_v5_key_expired", Feature::RequestKeys, 5),
    ("sqlite_execute_v5_replayed", Feature::RequestKeys, 5),
    ("sqlite_execute_v5_replayed_without_rows", Feature::RequestKeys, 5),
    ("sqlite_batch_ok", Feature::AtomicBatch, 5),
    ("sqlite_batch_statement_failed", Feature::AtomicBatch, 5),
    ("sqlite_batch_fence_mismatch", Feature::AtomicBatch, 5),
    ("sqlite_begin_started", Feature::Transactions, 5),
    ("sqlite_begin_fence_mismatch", Feature::Transactions, 5),
    ("sqlite_begin_too_many", Feature::Transactions, 5),
    ("sqlite_transaction_execute_ok", Feature::Transactions, 5),
    ("sqlite_transaction_execute_expired", Feature::Transactions, 5),
    ("sqlite_commit_committed", Feature::Transactions, 5),
    ("sqlite_commit_fence_mismatch", Feature::Transactions, 5),
    ("sqlite_commit_aborted", Feature::Transactions, 5),
    ("sqlite_rollback_done", Feature::Transactions, 5),
    ("sqlite_rollback_fence_mismatch", Feature::Transactions, 5),
    ("sqlite_rollback_not_found", Feature::Transactions, 5),
    ("sqlite_transaction_ended", Feature::Transactions, 5),
    ("sqlite_stream_first_chunk", Feature::ResultStreams, 5),
    ("sqlite_stream_last_chunk", Feature::ResultStreams, 5),
    ("sqlite_stream_expired", Feature::ResultStreams, 5),
    ("sqlite_stream_fence_mismatch", Feature::ResultStreams, 5),
    // v6 values are never gated; these are gated by the member that holds them.
    ("sqlite_execute_actor_unavailable", Feature::RemoteSqlite, 4),
    ("sqlite_exec_v5_actor_unavailable_relayed", Feature::RequestKeys, 5),
    ("sqlite_stream_actor_unavailable", Feature::ResultStreams, 5),
];

fn check_gates<T: std::fmt::Debug>(
    samples: Vec<(&'static str, T)>,
    gates: &[(&str, Feature, u16)],
    direction: Direction,
    arrow: &str,
    encode: fn(&T, u16) -> Result<Vec<u8>, EncodeError>,
) {
    for (case, _, _) in gates {
        assert!(samples.iter().any(|(c, _)| c == case), "gate table names a missing sample {case}");
    }
    for (case, msg) in &samples {
        let gate = gates.iter().find(|(c, _, _)| c == case);
        for v in common::VERSIONS {
            let result = encode(msg, v);
            match gate {
                Some(&(_, feature, required)) if v < required => {
                    let expected = ProtocolCompatibilityError {
                        feature,
                        direction,
                        required_version: required,
                        target_version: v,
                    };
                    assert_eq!(result, Err(EncodeError::Compatibility(expected)), "{case} at v{v}");
                    let text = result.unwrap_err().to_string();
                    assert_eq!(
                        text,
                        format!(
                            "{} requires envoy protocol v{required}, but this connection speaks v{v} ({arrow})",
                            feature_text(feature)
                        ),
                    );
                }
                _ => assert!(result.is_ok(), "{case} must travel at v{v}: {result:?}"),
            }
        }
    }
}

#[test]
fn every_to_engine_gate_fails_exactly_below_its_version() {
    check_gates(samples::to_engine(), TO_ENGINE_GATES, Direction::ToEngine, "envoy → engine", encode_to_engine);
}

#[test]
fn every_to_envoy_gate_fails_exactly_below_its_version() {
    check_gates(samples::to_envoy(), TO_ENVOY_GATES, Direction::ToEnvoy, "engine → envoy", encode_to_envoy);
}

#[test]
fn feature_required_versions() {
    assert_eq!(Feature::KvBatch.required_version(), 2);
    assert_eq!(Feature::KvDeleteRange.required_version(), 2);
    assert_eq!(Feature::KvList.required_version(), 2);
    assert_eq!(Feature::ActorIntents.required_version(), 3);
    assert_eq!(Feature::RemoteSqlite.required_version(), 4);
    for f in [
        Feature::RequestKeys,
        Feature::AtomicBatch,
        Feature::Transactions,
        Feature::ResultStreams,
        Feature::LimitErrors,
    ] {
        assert_eq!(f.required_version(), 5, "{f:?}");
    }
}

#[test]
fn one_intent_among_state_updates_gates_the_whole_batch() {
    let update = EventWrapper {
        index: 1,
        inner: Event::ActorStateUpdate(EventActorStateUpdate {
            actor_id: "a".into(),
            generation: 1,
            state: ActorState::Running,
        }),
    };
    let intent = EventWrapper {
        index: 2,
        inner: Event::ActorIntent(EventActorIntent { actor_id: "a".into(), generation: 1, intent: ActorIntent::Sleep }),
    };
    let msg = ToEngine::Events(ToEngineEvents { events: vec![update.clone(), intent, update] });
    assert_eq!(
        encode_to_engine(&msg, 2),
        Err(EncodeError::Compatibility(ProtocolCompatibilityError {
            feature: Feature::ActorIntents,
            direction: Direction::ToEngine,
            required_version: 3,
            target_version: 2,
        }))
    );
    assert!(encode_to_engine(&msg, 3).is_ok());
}

#[test]
fn unsupported_versions_are_typed_errors() {
    for v in [0u16, 7, u16::MAX] {
        assert_eq!(encode_to_engine(&ToEngine::Stopping, v), Err(EncodeError::UnsupportedVersion(v)));
        assert_eq!(encode_to_envoy(&ToEnvoy::Ping(ToEnvoyPing { ts: 0 }), v), Err(EncodeError::UnsupportedVersion(v)));
        assert_eq!(decode_to_engine(&[3], v, &common::limits()), Err(ProtocolDecodeError::UnsupportedVersion(v)));
        assert_eq!(decode_to_envoy(&[3], v, &common::limits()), Err(ProtocolDecodeError::UnsupportedVersion(v)));
    }
    assert_eq!(
        EncodeError::UnsupportedVersion(7).to_string(),
        "envoy protocol v7 is not supported (this build speaks v1–v6)"
    );
    assert_eq!(PROTOCOL_VERSION, 6);
    // The engine and the SDK implement everything the crate defines.
    assert_eq!(IMPLEMENTED_PROTOCOL_VERSION, PROTOCOL_VERSION);
}

fn kv_error(code: KvErrorCode) -> ToEnvoy {
    ToEnvoy::KvResponse(ToEnvoyKvResponse {
        request_id: 9,
        data: KvResponseData::KvErrorResponse(KvErrorResponse {
            code,
            message: "stale".into(),
            current_generation: Some(7),
        }),
    })
}

#[test]
fn kv_error_code_folds_into_the_v1_message_and_upgrades_to_unknown() {
    let names = [
        (KvErrorCode::Unknown, "UNKNOWN"),
        (KvErrorCode::InvalidRequest, "INVALID_REQUEST"),
        (KvErrorCode::ActorNotFound, "ACTOR_NOT_FOUND"),
        (KvErrorCode::ActorNotPlaced, "ACTOR_NOT_PLACED"),
        (KvErrorCode::FenceMismatch, "FENCE_MISMATCH"),
        (KvErrorCode::ActorStopping, "ACTOR_STOPPING"),
        (KvErrorCode::LimitExceeded, "LIMIT_EXCEEDED"),
        (KvErrorCode::Overloaded, "OVERLOADED"),
        (KvErrorCode::Internal, "INTERNAL"),
    ];
    // v6's ACTOR_UNAVAILABLE downgrades instead (`actor_unavailable_*` below).
    assert_eq!(names.len(), v5::KvErrorCode::ALL.len(), "a new KV error code needs a row here");
    assert_eq!(KvErrorCode::ALL.len(), names.len() + 1, "a new KV error code needs a look");
    for (code, name) in names {
        let bytes = encode_to_envoy(&kv_error(code), 1).unwrap();
        // What a v1 peer sees.
        let v1::ToEnvoy::KvResponse(raw) = decode_frame::<v1::ToEnvoy>(&bytes, usize::MAX, usize::MAX).unwrap() else {
            panic!("wrong member")
        };
        let v1::KvResponseData::KvErrorResponse(raw) = raw.data else { panic!("wrong member") };
        let expected = if code == KvErrorCode::Unknown { "stale".to_string() } else { format!("{name}: stale") };
        assert_eq!(raw.message, expected);
        // What a v1 peer's error becomes in the latest types.
        let back = decode_to_envoy(&bytes, 1, &common::limits()).unwrap();
        assert_eq!(
            back,
            ToEnvoy::KvResponse(ToEnvoyKvResponse {
                request_id: 9,
                data: KvResponseData::KvErrorResponse(KvErrorResponse {
                    code: KvErrorCode::Unknown,
                    message: expected,
                    current_generation: None,
                }),
            })
        );
        // v2 and later carry the code and generation unchanged.
        for v in 2..=PROTOCOL_VERSION {
            let bytes = encode_to_envoy(&kv_error(code), v).unwrap();
            assert_eq!(decode_to_envoy(&bytes, v, &common::limits()).unwrap(), kv_error(code), "v{v}");
        }
    }
}

fn stop(reason: StopReason) -> ToEnvoy {
    ToEnvoy::Commands(ToEnvoyCommands {
        commands: vec![CommandWrapper {
            index: 5,
            inner: Command::StopActor(CommandStopActor { actor_id: "a".into(), generation: 2, reason }),
        }],
    })
}

#[test]
fn stop_reason_is_dropped_below_v3_and_unspecified_when_upgraded() {
    assert_eq!(StopReason::ALL.len(), 8);
    for &reason in StopReason::ALL {
        for v in 1..=2 {
            let bytes = encode_to_envoy(&stop(reason), v).unwrap();
            // The stop itself travels; only the reason is gone.
            assert_eq!(bytes, encode_to_envoy(&stop(StopReason::Unspecified), v).unwrap());
            assert_eq!(decode_to_envoy(&bytes, v, &common::limits()).unwrap(), stop(StopReason::Unspecified));
        }
        for v in 3..=6 {
            let bytes = encode_to_envoy(&stop(reason), v).unwrap();
            // v6's MOVED is UNSPECIFIED to an older peer.
            let expected = if reason == StopReason::Moved && v < 6 { StopReason::Unspecified } else { reason };
            assert_eq!(decode_to_envoy(&bytes, v, &common::limits()).unwrap(), stop(expected), "v{v}");
        }
    }
}

fn init(limits: Option<Limits>, sql_limits: Option<SqlLimits>) -> ToEnvoy {
    ToEnvoy::Init(ToEnvoyInit {
        envoy_id: "e".into(),
        last_event_index: Some(3),
        metadata: ProtocolMetadata {
            ping_interval_ms: 1000,
            envoy_lost_threshold_ms: 5000,
            actor_stop_threshold_ms: 7000,
            max_frame_bytes: 1 << 20,
            limits,
            sql_limits,
        },
    })
}

#[test]
fn init_limits_are_dropped_below_v3_and_sql_limits_below_v4() {
    let limits = Limits {
        max_request_bytes: 1,
        max_response_bytes: 2,
        max_kv_key_bytes: 3,
        max_kv_value_bytes: 4,
        max_kv_batch_entries: 5,
        max_pending_requests: 6,
    };
    let sql = SqlLimits { max_sql_bytes: 7, max_params: 8, max_value_bytes: 9, max_statement_ms: 10 };
    let full = init(Some(limits.clone()), Some(sql.clone()));
    let cases = [
        (1, init(None, None)),
        (2, init(None, None)),
        (3, init(Some(limits.clone()), None)),
        (4, full.clone()),
        (5, full.clone()),
        (6, full.clone()),
    ];
    for (v, expected) in cases {
        let bytes = encode_to_envoy(&full, v).unwrap();
        assert_eq!(decode_to_envoy(&bytes, v, &common::limits()).unwrap(), expected, "v{v}");
    }
    // v1 and v2 Init are the same bytes.
    assert_eq!(encode_to_envoy(&full, 1).unwrap(), encode_to_envoy(&full, 2).unwrap());
}

#[test]
fn unchanged_messages_have_the_same_bytes_at_every_version() {
    // Ping { ts: 1 }: tag 3, then i64 1 little-endian — written out by hand.
    let ping = ToEnvoy::Ping(ToEnvoyPing { ts: 1 });
    for v in common::VERSIONS {
        assert_eq!(hex::encode(encode_to_envoy(&ping, v).unwrap()), "030100000000000000", "v{v}");
    }
    // Every sample whose schema never changed encodes identically at v1..v4.
    let same_engine = [
        "metadata_hello",
        "metadata_resume",
        "events_empty",
        "events_running",
        "events_stopped",
        "ack_commands",
        "stopping",
        "pong",
        "kv_get",
        "kv_get_empty_key",
        "kv_put",
        "kv_delete",
        "kv_list_prefix",
        "get_or_create_actor",
    ];
    for (case, msg) in samples::to_engine().into_iter().filter(|(c, _)| same_engine.contains(c)) {
        let v1 = encode_to_engine(&msg, 1).unwrap();
        for v in 2..=PROTOCOL_VERSION {
            assert_eq!(encode_to_engine(&msg, v).unwrap(), v1, "{case} at v{v}");
        }
    }
    let same_envoy = [
        "commands_start",
        "commands_empty",
        "ack_events",
        "ping",
        "ping_negative",
        "kv_get_found",
        "kv_get_missing",
        "kv_get_empty_value",
        "kv_put",
        "kv_delete",
        "kv_list",
        "get_or_create_actor_ok",
        "get_or_create_actor_error",
    ];
    for (case, msg) in samples::to_envoy().into_iter().filter(|(c, _)| same_envoy.contains(c)) {
        let v1 = encode_to_envoy(&msg, 1).unwrap();
        for v in 2..=PROTOCOL_VERSION {
            assert_eq!(encode_to_envoy(&msg, v).unwrap(), v1, "{case} at v{v}");
        }
    }
    // A KV error is the same from v2 on; a stop with a reason from v3 on.
    let err = kv_error(KvErrorCode::FenceMismatch);
    assert_eq!(encode_to_envoy(&err, 2).unwrap(), encode_to_envoy(&err, 6).unwrap());
    assert_eq!(
        encode_to_envoy(&stop(StopReason::Operator), 3).unwrap(),
        encode_to_envoy(&stop(StopReason::Operator), 4).unwrap()
    );
}

#[test]
fn a_newer_member_is_an_unknown_tag_to_an_older_decoder() {
    // What happens if a peer ignores the negotiated version: the older side
    // rejects the frame with a typed error, it does not misread it.
    let sql = samples::to_engine().into_iter().find(|(c, _)| *c == "sqlite_exec").unwrap().1;
    let bytes = encode_to_engine(&sql, 4).unwrap();
    for v in 1..=3 {
        let err = decode_to_engine(&bytes, v, &common::limits()).unwrap_err();
        assert_eq!(
            err,
            ProtocolDecodeError::Malformed {
                version: v,
                message: "ToEngine",
                source: DecodeError {
                    offset: 0,
                    path: vec![],
                    kind: DecodeErrorKind::UnknownUnionTag { ty: "ToEngine", tag: 7 }
                },
            }
        );
    }
    assert_eq!(
        decode_to_engine(&bytes, 3, &common::limits()).unwrap_err().to_string(),
        "cannot decode ToEngine at envoy protocol v3: at byte 0: unknown tag 7 for union ToEngine"
    );
}

// ---------------------------------------------------------------- v5

#[test]
fn every_v4_sample_has_the_same_bytes_at_v5() {
    // v5 only appends: whatever travels at v4 is the same frame at v5, and a
    // v5 decoder reads a v4 frame as the same message.
    let mut checked = 0;
    for (case, msg) in samples::to_engine() {
        let Ok(v4) = encode_to_engine(&msg, 4) else { continue };
        if encode_to_engine(&msg, 5).unwrap() != v4 {
            // Only a v5 member may downgrade to different bytes.
            panic!("{case}: v4 and v5 bytes differ");
        }
        // Compared as bytes, so NaN payloads count.
        let read_at_5 = decode_to_engine(&v4, 5, &common::limits()).unwrap();
        assert_eq!(encode_to_engine(&read_at_5, 4).unwrap(), v4, "{case}");
        checked += 1;
    }
    // Samples that downgrade (a v5 member becoming its v4 form) are not v4
    // samples; nor is v6's ACTOR_UNAVAILABLE in an ActorErrorCode, which is
    // OVERLOADED at v5 and INTERNAL at v4.
    let downgraded = ["init_v5", "init_v5_os_no_limits", "kv_limit_exceeded", "get_or_create_actor_unavailable"];
    for (case, msg) in samples::to_envoy() {
        let Ok(v4) = encode_to_envoy(&msg, 4) else { continue };
        if downgraded.contains(&case) {
            assert_ne!(encode_to_envoy(&msg, 5).unwrap(), v4, "{case}");
            continue;
        }
        assert_eq!(encode_to_envoy(&msg, 5).unwrap(), v4, "{case}: v4 and v5 bytes differ");
        let read_at_5 = decode_to_envoy(&v4, 5, &common::limits()).unwrap();
        assert_eq!(encode_to_envoy(&read_at_5, 4).unwrap(), v4, "{case}");
        checked += 1;
    }
    assert!(checked >= 50, "only {checked} v4 samples checked");
    // The committed v4 vectors, read as v5 frames, re-encode to themselves.
    for vec in common::committed_vectors().into_iter().filter(|v| v.version == 4) {
        let at5 = common::Vector { version: 5, ..vec.clone() };
        assert_eq!(at5.decode_and_reencode(&common::limits()).unwrap(), vec.bytes, "v4/{}/{}", vec.top, vec.case);
    }
}

fn execute_error(code: SqliteErrorCode, limit: Option<LimitExceeded>) -> ToEnvoy {
    ToEnvoy::SqliteExecuteResponse(ToEnvoySqliteExecuteResponse {
        request_id: 1,
        result: SqliteExecuteResult::SqliteError(SqliteError {
            code,
            message: "m".into(),
            extended_code: None,
            committed: Some(false),
            statement_index: None,
            limit,
        }),
    })
}

/// Checks `msg` at every version: below `known_since` its own gate (or
/// nothing) applies; a v5-only value fails with `feature` at every version
/// below 5; v5 carries it.
fn check_value_gate(name: &str, msg: &ToEnvoy, v5_feature: Option<Feature>, older_gate: Option<(Feature, u16)>) {
    for v in common::VERSIONS {
        let result = encode_to_envoy(msg, v);
        let expected = match (v5_feature, older_gate) {
            (Some(f), _) if v < 5 => Some((f, 5)),
            (_, Some((f, r))) if v < r => Some((f, r)),
            _ => None,
        };
        match expected {
            Some((feature, required)) => assert_eq!(
                result,
                Err(EncodeError::Compatibility(ProtocolCompatibilityError {
                    feature,
                    direction: Direction::ToEnvoy,
                    required_version: required,
                    target_version: v,
                })),
                "{name} at v{v}"
            ),
            None => {
                let bytes = result.unwrap_or_else(|e| panic!("{name} at v{v}: {e}"));
                assert_eq!(&decode_to_envoy(&bytes, v, &common::limits()).unwrap(), msg, "{name} at v{v}");
            }
        }
    }
}

#[test]
fn every_v5_sqlite_error_code_is_gated_below_v5() {
    let v5_only = [
        (SqliteErrorCode::RequestKeyExpired, Feature::RequestKeys),
        (SqliteErrorCode::RequestKeyConflict, Feature::RequestKeys),
        (SqliteErrorCode::TransactionNotFound, Feature::Transactions),
        (SqliteErrorCode::TransactionExpired, Feature::Transactions),
        (SqliteErrorCode::TransactionBusy, Feature::Transactions),
        (SqliteErrorCode::TransactionAborted, Feature::Transactions),
        (SqliteErrorCode::StreamExpired, Feature::ResultStreams),
        (SqliteErrorCode::Cancelled, Feature::ResultStreams),
    ];
    assert_eq!(
        v5::SqliteErrorCode::ALL.len(),
        v4::SqliteErrorCode::ALL.len() + v5_only.len(),
        "a new code needs a row here"
    );
    // v6's ACTOR_UNAVAILABLE downgrades instead (`actor_unavailable_*` below).
    assert_eq!(SqliteErrorCode::ALL.len(), v5::SqliteErrorCode::ALL.len() + 1, "a new code needs a look");
    for (i, &code) in SqliteErrorCode::ALL[..v5::SqliteErrorCode::ALL.len()].iter().enumerate() {
        let feature = v5_only.iter().find(|(c, _)| *c == code).map(|(_, f)| *f);
        // Appended: the first values are v4's, in v4's order.
        assert_eq!(feature.is_none(), i < v4::SqliteErrorCode::ALL.len(), "{code:?}");
        check_value_gate(code.wire_name(), &execute_error(code, None), feature, Some((Feature::RemoteSqlite, 4)));
    }
}

#[test]
fn every_v5_limit_kind_is_gated_below_v5() {
    let n4 = v4::LimitKind::ALL.len();
    assert_eq!(LimitKind::ALL.len(), n4 + 10, "a new limit kind needs a look here");
    for (i, &kind) in LimitKind::ALL.iter().enumerate() {
        assert_eq!(v4::LimitKind::ALL.get(i).map(|k| k.wire_name()), (i < n4).then(|| kind.wire_name()));
        let limit = LimitExceeded { kind, max: 10, actual: Some(11) };
        let msg = execute_error(SqliteErrorCode::LimitExceeded, Some(limit));
        let feature = (i >= n4).then_some(Feature::LimitErrors);
        check_value_gate(kind.wire_name(), &msg, feature, Some((Feature::RemoteSqlite, 4)));
    }
}

#[test]
fn every_v5_actor_error_code_is_gated_below_v5() {
    let n4 = v4::ActorErrorCode::ALL.len();
    assert_eq!(v5::ActorErrorCode::ALL.len(), n4 + 2);
    // v6's ACTOR_UNAVAILABLE downgrades instead (`actor_unavailable_*` below).
    assert_eq!(ActorErrorCode::ALL.len(), n4 + 3, "a new code needs a look");
    for (i, &code) in ActorErrorCode::ALL[..n4 + 2].iter().enumerate() {
        let msg = ToEnvoy::GetOrCreateActorResponse(ToEnvoyGetOrCreateActorResponse {
            request_id: 1,
            result: GetOrCreateActorResult::GetOrCreateActorError(GetOrCreateActorError { code, message: "m".into() }),
        });
        let feature = (i >= n4).then_some(Feature::LimitErrors);
        check_value_gate(code.wire_name(), &msg, feature, None);
    }
}

#[test]
fn init_v5_becomes_the_older_init() {
    let (_, msg) = samples::to_envoy().into_iter().find(|(c, _)| *c == "init_v5").unwrap();
    let ToEnvoy::InitV5(full) = msg.clone() else { panic!("wrong member") };
    // What each version keeps: the v4 Init, then the usual drops below v4.
    let v4_init = ToEnvoy::Init(ToEnvoyInit {
        envoy_id: full.envoy_id.clone(),
        last_event_index: full.last_event_index,
        metadata: full.metadata.clone(),
    });
    for v in 1..=4 {
        let bytes = encode_to_envoy(&msg, v).unwrap();
        assert_eq!(bytes, encode_to_envoy(&v4_init, v).unwrap(), "v{v}");
    }
    let bytes = encode_to_envoy(&msg, 5).unwrap();
    assert_eq!(decode_to_envoy(&bytes, 5, &common::limits()).unwrap(), msg);
    // A v4 Init stays a v4 Init at v5 (tag 0), not an InitV5.
    assert_eq!(encode_to_envoy(&v4_init, 5).unwrap(), encode_to_envoy(&v4_init, 4).unwrap());
}

#[test]
fn kv_limit_exceeded_becomes_a_limit_exceeded_kv_error() {
    let limited = ToEnvoy::KvResponse(ToEnvoyKvResponse {
        request_id: 9,
        data: KvResponseData::KvLimitExceeded(KvLimitExceeded {
            message: "value too large".into(),
            limit: LimitExceeded { kind: LimitKind::KvValueBytes, max: 10, actual: None },
        }),
    });
    let as_error = |message: &str| {
        ToEnvoy::KvResponse(ToEnvoyKvResponse {
            request_id: 9,
            data: KvResponseData::KvErrorResponse(KvErrorResponse {
                code: KvErrorCode::LimitExceeded,
                message: message.into(),
                current_generation: None,
            }),
        })
    };
    for v in 2..=4 {
        let bytes = encode_to_envoy(&limited, v).unwrap();
        assert_eq!(decode_to_envoy(&bytes, v, &common::limits()).unwrap(), as_error("value too large"), "v{v}");
    }
    // v1 folds the code into the message, as for any KV error.
    let bytes = encode_to_envoy(&limited, 1).unwrap();
    let back = decode_to_envoy(&bytes, 1, &common::limits()).unwrap();
    let ToEnvoy::KvResponse(ToEnvoyKvResponse { data: KvResponseData::KvErrorResponse(e), .. }) = back else {
        panic!("wrong member")
    };
    assert_eq!(e.message, "LIMIT_EXCEEDED: value too large");
    let bytes = encode_to_envoy(&limited, 5).unwrap();
    assert_eq!(decode_to_envoy(&bytes, 5, &common::limits()).unwrap(), limited);
}

#[test]
fn v5_members_and_values_are_unknown_to_a_v4_decoder() {
    let engine = samples::to_engine();
    let first_v5 = |case: &str| engine.iter().find(|(c, _)| *c == case).unwrap().1.clone();
    let bytes = encode_to_engine(&first_v5("sqlite_exec_v5_keyed"), 5).unwrap();
    assert_eq!(bytes[0], 10);
    for v in 1..=4 {
        let err = decode_to_engine(&bytes, v, &common::limits()).unwrap_err();
        let ProtocolDecodeError::Malformed { source, .. } = err else { panic!("{err}") };
        assert_eq!(source.kind, DecodeErrorKind::UnknownUnionTag { ty: "ToEngine", tag: 10 }, "v{v}");
    }
    let envoy = samples::to_envoy();
    let find = |case: &str| envoy.iter().find(|(c, _)| *c == case).unwrap().1.clone();
    let bytes = encode_to_envoy(&find("init_v5"), 5).unwrap();
    assert_eq!(bytes[0], 8);
    let err = decode_to_envoy(&bytes, 4, &common::limits()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot decode ToEnvoy at envoy protocol v4: at byte 0: unknown tag 8 for union ToEnvoy"
    );
    // A v5 value inside a v4 member: an unknown enum value, never misread.
    let bytes = encode_to_envoy(&find("sqlite_execute_transaction_busy"), 5).unwrap();
    let ProtocolDecodeError::Malformed { source, .. } = decode_to_envoy(&bytes, 4, &common::limits()).unwrap_err()
    else {
        panic!()
    };
    assert_eq!(source.kind, DecodeErrorKind::UnknownEnumValue { ty: "SqliteErrorCode", value: 15 });
    // A v5 KvResponseData member inside a v4 message.
    let bytes = encode_to_envoy(&find("kv_limit_exceeded"), 5).unwrap();
    let ProtocolDecodeError::Malformed { source, .. } = decode_to_envoy(&bytes, 4, &common::limits()).unwrap_err()
    else {
        panic!()
    };
    assert_eq!(source.kind, DecodeErrorKind::UnknownUnionTag { ty: "KvResponseData", tag: 9 });
}

// ---------------------------------------------------------------- v6

/// The v6 samples: each holds ACTOR_UNAVAILABLE or MOVED.
const V6_SAMPLES: [&str; 6] = [
    "get_or_create_actor_unavailable",
    "kv_error_actor_unavailable",
    "sqlite_execute_actor_unavailable",
    "sqlite_exec_v5_actor_unavailable_relayed",
    "sqlite_stream_actor_unavailable",
    "commands_stop_moved",
];

#[test]
fn every_v5_message_has_the_same_bytes_at_v6() {
    // v6 only appends enum values: whatever travels at v5 is the same frame at
    // v6, and a v6 decoder reads a v5 frame as the same message.
    let mut checked = 0;
    for (case, msg) in samples::to_engine() {
        let Ok(v5) = encode_to_engine(&msg, 5) else { continue };
        assert_eq!(encode_to_engine(&msg, 6).unwrap(), v5, "{case}: v5 and v6 bytes differ");
        checked += 1;
    }
    for (case, msg) in samples::to_envoy() {
        let Ok(v5) = encode_to_envoy(&msg, 5) else { continue };
        if V6_SAMPLES.contains(&case) {
            // A v6 value becomes an older one at v5.
            assert_ne!(encode_to_envoy(&msg, 6).unwrap(), v5, "{case}");
            continue;
        }
        assert_eq!(encode_to_envoy(&msg, 6).unwrap(), v5, "{case}: v5 and v6 bytes differ");
        let read_at_6 = decode_to_envoy(&v5, 6, &common::limits()).unwrap();
        assert_eq!(encode_to_envoy(&read_at_6, 5).unwrap(), v5, "{case}");
        checked += 1;
    }
    assert!(checked >= 100, "only {checked} v5 samples checked");
    // The committed v5 vectors, read as v6 frames, re-encode to themselves at both versions.
    let mut vectors = 0;
    for vec in common::committed_vectors().into_iter().filter(|v| v.version == 5) {
        let at6 = common::Vector { version: 6, ..vec.clone() };
        assert_eq!(at6.decode_and_reencode(&common::limits()).unwrap(), vec.bytes, "v5/{}/{}", vec.top, vec.case);
        vectors += 1;
    }
    assert!(vectors >= 100, "only {vectors} v5 vectors");
}

fn get_or_create_error(code: ActorErrorCode, message: &str) -> ToEnvoy {
    ToEnvoy::GetOrCreateActorResponse(ToEnvoyGetOrCreateActorResponse {
        request_id: 44,
        result: GetOrCreateActorResult::GetOrCreateActorError(GetOrCreateActorError { code, message: message.into() }),
    })
}

/// `msg` sent at `v` and read back, as the peer's answer arrives in the latest types.
fn through(msg: &ToEnvoy, v: u16) -> ToEnvoy {
    let bytes = encode_to_envoy(msg, v).unwrap_or_else(|e| panic!("at v{v}: {e}"));
    decode_to_envoy(&bytes, v, &common::limits()).unwrap()
}

#[test]
fn actor_unavailable_in_get_or_create_is_overloaded_at_v5_and_internal_below() {
    let msg = get_or_create_error(ActorErrorCode::ActorUnavailable, "owner node 2 is unreachable");
    let prefixed = "actor unavailable: owner node 2 is unreachable";
    assert_eq!(through(&msg, 6), msg);
    // v5 has OVERLOADED ("nothing placed, retry later").
    assert_eq!(through(&msg, 5), get_or_create_error(ActorErrorCode::Overloaded, prefixed));
    // v4 and below have no OVERLOADED (it would be gated): INTERNAL still answers.
    for v in 1..=4 {
        assert_eq!(through(&msg, v), get_or_create_error(ActorErrorCode::Internal, prefixed), "v{v}");
    }
    // The bytes, written out by hand: ToEnvoy tag 5, requestId 44 (u32 LE),
    // GetOrCreateActorError (tag 1), the code, the message.
    let hex_at =
        |v| hex::encode(encode_to_envoy(&get_or_create_error(ActorErrorCode::ActorUnavailable, "x"), v).unwrap());
    let prefixed_x = hex::encode("actor unavailable: x");
    assert_eq!(hex_at(6), "052c000000010501".to_string() + "78");
    assert_eq!(hex_at(5), format!("052c000000010414{prefixed_x}"));
    assert_eq!(hex_at(4), format!("052c000000010214{prefixed_x}"));
    assert_eq!(hex_at(1), hex_at(4));
}

#[test]
fn actor_unavailable_in_kv_is_overloaded_below_v6() {
    let error = |code, message: &str| {
        ToEnvoy::KvResponse(ToEnvoyKvResponse {
            request_id: 9,
            data: KvResponseData::KvErrorResponse(KvErrorResponse {
                code,
                message: message.into(),
                current_generation: Some(3),
            }),
        })
    };
    let msg = error(KvErrorCode::ActorUnavailable, "lease lost");
    assert_eq!(through(&msg, 6), msg);
    for v in 2..=5 {
        assert_eq!(through(&msg, v), error(KvErrorCode::Overloaded, "actor unavailable: lease lost"), "v{v}");
    }
    // v1 KV errors are text: the code leads it, as for every KV code.
    let ToEnvoy::KvResponse(ToEnvoyKvResponse { data: KvResponseData::KvErrorResponse(e), .. }) = through(&msg, 1)
    else {
        panic!("wrong member")
    };
    assert_eq!((e.code, e.message.as_str()), (KvErrorCode::Unknown, "OVERLOADED: actor unavailable: lease lost"));
}

/// Every ToEnvoy member that carries a SqliteError, holding `e`.
fn every_sql_answer(e: SqliteError) -> Vec<ToEnvoy> {
    let cost = SqlCost { rows_read: 1, rows_written: 0, duration_us: 5 };
    vec![
        ToEnvoy::SqliteExecResponse(ToEnvoySqliteExecResponse {
            request_id: 1,
            result: SqliteExecResult::SqliteError(e.clone()),
        }),
        ToEnvoy::SqliteExecuteResponse(ToEnvoySqliteExecuteResponse {
            request_id: 2,
            result: SqliteExecuteResult::SqliteError(e.clone()),
        }),
        ToEnvoy::SqliteExecResponseV5(ToEnvoySqliteExecResponseV5 {
            request_id: 3,
            result: SqliteExecResult::SqliteError(e.clone()),
            cost: cost.clone(),
            request_key: Some(RequestKeyOutcome::Executed),
        }),
        ToEnvoy::SqliteExecuteResponseV5(ToEnvoySqliteExecuteResponseV5 {
            request_id: 4,
            result: SqliteExecuteResult::SqliteError(e.clone()),
            cost: cost.clone(),
            request_key: None,
        }),
        ToEnvoy::SqliteBatchResponse(ToEnvoySqliteBatchResponse {
            request_id: 5,
            result: SqliteBatchResult::SqliteError(e.clone()),
            cost: cost.clone(),
            request_key: None,
        }),
        ToEnvoy::SqliteBeginResponse(ToEnvoySqliteBeginResponse {
            request_id: 6,
            result: SqliteBeginResult::SqliteError(e.clone()),
            cost: cost.clone(),
        }),
        ToEnvoy::SqliteTransactionExecuteResponse(ToEnvoySqliteTransactionExecuteResponse {
            request_id: 7,
            result: SqliteExecuteResult::SqliteError(e.clone()),
            cost: cost.clone(),
            transaction_end: Some(TransactionEndReason::ActorStopping),
        }),
        ToEnvoy::SqliteCommitResponse(ToEnvoySqliteCommitResponse {
            request_id: 8,
            result: SqliteCommitResult::SqliteError(e.clone()),
            cost: cost.clone(),
            request_key: None,
        }),
        ToEnvoy::SqliteRollbackResponse(ToEnvoySqliteRollbackResponse {
            request_id: 9,
            result: SqliteRollbackResult::SqliteError(e.clone()),
            cost: cost.clone(),
        }),
        ToEnvoy::SqliteStreamFailed(ToEnvoySqliteStreamFailed {
            request_id: 10,
            sequence: 3,
            failure: SqliteFailure::SqliteError(e),
            cost,
        }),
    ]
}

#[test]
fn actor_unavailable_in_sql_is_overloaded_below_v6_and_adds_no_gate() {
    let error = |code, message: &str| SqliteError {
        code,
        message: message.into(),
        extended_code: Some(-1),
        committed: None,
        statement_index: Some(2),
        limit: None,
    };
    let sent = every_sql_answer(error(SqliteErrorCode::ActorUnavailable, "owner unreachable"));
    let older = every_sql_answer(error(SqliteErrorCode::Overloaded, "actor unavailable: owner unreachable"));
    let members: std::collections::BTreeSet<_> = sent.iter().map(|m| m.member_name()).collect();
    assert_eq!(members.len(), 10, "one answer per member");
    for (msg, expected) in sent.iter().zip(&older) {
        let name = msg.member_name();
        assert_eq!(through(msg, 6), *msg, "{name}");
        for v in 1..=5 {
            match encode_to_envoy(expected, v) {
                // Where the member travels, the error arrives as OVERLOADED with every other field kept.
                Ok(_) => assert_eq!(through(msg, v), *expected, "{name} at v{v}"),
                // Where it does not, the member's own gate applies, not a new one.
                Err(gate) => assert_eq!(encode_to_envoy(msg, v), Err(gate), "{name} at v{v}"),
            }
        }
    }
}

#[test]
fn moved_is_unspecified_below_v6() {
    for v in 3..=5 {
        assert_eq!(
            encode_to_envoy(&stop(StopReason::Moved), v).unwrap(),
            encode_to_envoy(&stop(StopReason::Unspecified), v).unwrap(),
            "v{v}"
        );
    }
    assert_ne!(
        encode_to_envoy(&stop(StopReason::Moved), 6).unwrap(),
        encode_to_envoy(&stop(StopReason::Unspecified), 6).unwrap()
    );
    assert_eq!(through(&stop(StopReason::Moved), 6), stop(StopReason::Moved));
}

#[test]
fn v6_values_are_unknown_to_a_v5_decoder() {
    // What happens if a peer ignores the negotiated version: a typed error, never a misread.
    let envoy = samples::to_envoy();
    let find = |case: &str| envoy.iter().find(|(c, _)| *c == case).unwrap().1.clone();
    let cases = [
        ("get_or_create_actor_unavailable", "ActorErrorCode", 5),
        ("kv_error_actor_unavailable", "KvErrorCode", 9),
        ("sqlite_execute_actor_unavailable", "SqliteErrorCode", 19),
        ("sqlite_stream_actor_unavailable", "SqliteErrorCode", 19),
        ("commands_stop_moved", "StopReason", 7),
    ];
    for (case, ty, value) in cases {
        let bytes = encode_to_envoy(&find(case), 6).unwrap();
        let err = decode_to_envoy(&bytes, 5, &common::limits()).unwrap_err();
        let ProtocolDecodeError::Malformed { version: 5, source, .. } = err else { panic!("{case}: {err}") };
        assert_eq!(source.kind, DecodeErrorKind::UnknownEnumValue { ty, value }, "{case}");
    }
    // The values are appended: each is its enum's last.
    assert_eq!(ActorErrorCode::ALL.last(), Some(&ActorErrorCode::ActorUnavailable));
    assert_eq!(KvErrorCode::ALL.last(), Some(&KvErrorCode::ActorUnavailable));
    assert_eq!(SqliteErrorCode::ALL.last(), Some(&SqliteErrorCode::ActorUnavailable));
    assert_eq!(StopReason::ALL.last(), Some(&StopReason::Moved));
    assert_eq!(ActorErrorCode::ActorUnavailable.wire_name(), "ACTOR_UNAVAILABLE");
    assert_eq!(StopReason::Moved.wire_name(), "MOVED");
}
