//! The 6×6 version matrix: a client speaking at most v1..v6 against an engine
//! speaking at most v1..v6. Both sides settle on the lower version in the
//! upgrade; everything that version carries works, and everything it cannot
//! carry fails fast with the exact `ProtocolCompatibilityError` — never a
//! decode error, never a reconnect.
//!
//! v6 adds only answers the engine gives in cluster mode (`ACTOR_UNAVAILABLE`,
//! the stop reason `MOVED`); a scripted engine gives them here, to clients of
//! every version, through the same encoder the engine uses.

use envoy_client::protocol::{self as p, Direction, Feature, KvQuery, KvQueryPrefix, ProtocolCompatibilityError};
use envoy_client::protocol::{KvErrorCode, LimitKind};
use envoy_client::{stmt, BatchMode, Client, ConnectionState, Error, TransactionMode};
use envoy_engine::actor::registry::ActorState;
use envoy_tests::scripted::ScriptedEngine;
use envoy_tests::{eventually, TestEngine};
use std::sync::{Arc, Mutex};

fn gate(feature: Feature, target: u16) -> Error {
    Error::RemoteUnavailable(ProtocolCompatibilityError {
        feature,
        direction: Direction::ToEngine,
        required_version: feature.required_version(),
        target_version: target,
    })
}

/// `Ok` when `v` carries `feature`, else the exact gate error.
fn expect<T: std::fmt::Debug>(got: Result<T, Error>, feature: Feature, v: u16, cell: &str) {
    if v >= feature.required_version() {
        got.unwrap_or_else(|e| panic!("{cell}: {feature:?} should work at v{v}: {e}"));
    } else {
        assert_eq!(got.unwrap_err(), gate(feature, v), "{cell}: {feature:?} at v{v}");
    }
}

async fn check_cell(engine: &TestEngine, engine_max: u16, client_max: u16) {
    let cell = format!("client ≤v{client_max} × engine ≤v{engine_max}");
    let v = client_max.min(engine_max);
    let mut cfg = TestEngine::client_config(&engine.endpoint());
    cfg.max_protocol_version = client_max;
    let client = Client::connect(cfg).await.unwrap_or_else(|e| panic!("{cell}: connect: {e}"));
    let session = client.session().expect("connected");
    assert_eq!(session.protocol_version, v, "{cell}: negotiated version");
    assert_eq!(session.limits.is_some(), v >= 3, "{cell}: limits advertised from v3");
    assert_eq!(session.sql_limits.is_some(), v >= 4, "{cell}: SQL limits advertised from v4");
    assert_eq!(session.durability.is_some(), v >= 5, "{cell}: durability advertised from v5");
    assert_eq!(session.engine_limits.is_some(), v >= 5, "{cell}: engine limits advertised from v5");

    // Placement and v1 KV work at every version.
    let actor = client.get_or_create_actor("matrix", &format!("c{client_max}-e{engine_max}")).await.unwrap();
    let kv = actor.kv();
    kv.put(b"a:1", b"one").await.unwrap();
    kv.put(b"a:2", b"two").await.unwrap();
    assert_eq!(kv.get(b"a:1").await.unwrap(), Some(b"one".to_vec()), "{cell}");
    assert_eq!(kv.list_prefix(b"a:").await.unwrap().len(), 2, "{cell}");
    kv.delete(b"a:2").await.unwrap();
    assert_eq!(kv.get(b"a:2").await.unwrap(), None, "{cell}");

    // v2: batches, ranges, list options.
    expect(kv.put_batch(&[(b"b:1", b"x"), (b"b:2", b"y")]).await, Feature::KvBatch, v, &cell);
    expect(kv.get_batch(&[b"a:1"]).await, Feature::KvBatch, v, &cell);
    expect(kv.delete_batch(&[b"b:1"]).await, Feature::KvBatch, v, &cell);
    expect(kv.delete_range(b"b:", b"b;").await, Feature::KvDeleteRange, v, &cell);
    let query = KvQuery::Prefix(KvQueryPrefix { prefix: b"a:".to_vec() });
    expect(kv.list(query, true, Some(1)).await, Feature::KvList, v, &cell);

    // v4: SQL.
    let db = actor.sql();
    expect(db.exec("CREATE TABLE IF NOT EXISTS t(x)").await, Feature::RemoteSqlite, v, &cell);
    expect(db.execute("INSERT INTO t VALUES (?)", envoy_client::params![1]).await, Feature::RemoteSqlite, v, &cell);
    expect(db.execute_write("DELETE FROM t", ()).await, Feature::RemoteSqlite, v, &cell);
    if v >= 4 {
        // v5: every SQL answer carries its cost; below v5 there is none to show.
        let out = db.execute("INSERT INTO t VALUES (?)", envoy_client::params![2]).await.unwrap();
        assert_eq!(out.cost.is_some(), v >= 5, "{cell}: cost from v5");
        // A KV limit is named with its maximum from v5 on; below, a KV error with its message.
        let too_long = vec![b'k'; 64 * 1024];
        match kv.put(&too_long, b"x").await.unwrap_err() {
            Error::LimitExceeded { kind, .. } if v >= 5 => assert_eq!(kind, LimitKind::KvKeyBytes, "{cell}"),
            Error::Kv { code: KvErrorCode::LimitExceeded, .. } if v < 5 => {}
            other => panic!("{cell}: a KV key past the limit: {other:?}"),
        }
    }

    // v5: atomic batches, interactive transactions, result streams.
    let batch = db.batch(BatchMode::Write, [stmt("INSERT INTO t VALUES (?)", envoy_client::params![3])]).await;
    if v >= 4 {
        expect(batch, Feature::AtomicBatch, v, &cell);
        let tx = db.begin(TransactionMode::Write).await;
        if v >= 5 {
            let tx = tx.unwrap_or_else(|e| panic!("{cell}: begin: {e}"));
            tx.execute("INSERT INTO t VALUES (4)", ()).await.unwrap();
            assert_eq!(tx.commit().await.unwrap().changes, 1, "{cell}");
        } else {
            assert_eq!(tx.unwrap_err(), gate(Feature::Transactions, v), "{cell}: begin at v{v}");
        }
        let mut rows = db.stream("SELECT x FROM t ORDER BY x", ());
        let first = rows.next().await.expect("a first item");
        if v >= 5 {
            first.unwrap_or_else(|e| panic!("{cell}: stream: {e}"));
        } else {
            assert_eq!(first.unwrap_err(), gate(Feature::ResultStreams, v), "{cell}: stream at v{v}");
        }
    }

    // v3: intents. Last, since a stop intent drains the actor.
    expect(actor.request_stop().await, Feature::ActorIntents, v, &cell);
    if v >= 3 {
        let id = actor.info().actor_id.clone();
        let stopped = eventually(5_000, || {
            engine.engine.actors().iter().any(|a| a.actor_id == id && a.state == ActorState::Stopped)
        })
        .await;
        assert!(stopped, "{cell}: the stop intent drained the actor");
    }

    // Nothing above was a transport failure: still the same session.
    assert!(matches!(client.state(), ConnectionState::Connected(_)), "{cell}: still connected");
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_version_against_every_engine_version() {
    assert_eq!(p::PROTOCOL_VERSION, 6, "the matrix covers every version");
    assert_eq!(envoy_client::SDK_PROTOCOL_VERSION, 6);
    assert_eq!(envoy_engine::config::DEFAULT_MAX_PROTOCOL_VERSION, 6);
    for engine_max in 1..=p::PROTOCOL_VERSION {
        let engine = TestEngine::start(|c| c.max_protocol_version = engine_max).await;
        // The Rust client speaks up to v6 (SDK_PROTOCOL_VERSION): against an
        // older engine the negotiation settles on the engine's version.
        for client_max in 1..=envoy_client::SDK_PROTOCOL_VERSION {
            check_cell(&engine, engine_max, client_max).await;
        }
        engine.engine.shutdown().await;
    }
}

// ---------------------------------------------------------------- v6 answers

const OWNER_DOWN: &str = "the owner node of this actor is unreachable";

fn placed(request_id: u32) -> p::ToEnvoy {
    p::ToEnvoy::GetOrCreateActorResponse(p::ToEnvoyGetOrCreateActorResponse {
        request_id,
        result: p::GetOrCreateActorResult::GetOrCreateActorOk(p::GetOrCreateActorOk {
            actor_id: "a-1".into(),
            generation: 1,
            created: false,
        }),
    })
}

fn commands(index: u64, inner: p::Command) -> p::ToEnvoy {
    p::ToEnvoy::Commands(p::ToEnvoyCommands { commands: vec![p::CommandWrapper { index, inner }] })
}

/// An engine whose actors' owner node is down: a get-or-create of key `placed`
/// places actor a-1 here, one of key `drain` moves it away (a stop with
/// `MOVED`); every other get-or-create, every KV request and every SQL request
/// is answered `ACTOR_UNAVAILABLE`.
fn owner_down(msg: &p::ToEngine) -> Vec<p::ToEnvoy> {
    use p::ToEngine as M;
    let sql_error = |committed| p::SqliteError {
        code: p::SqliteErrorCode::ActorUnavailable,
        message: OWNER_DOWN.into(),
        extended_code: None,
        committed,
        statement_index: None,
        limit: None,
    };
    let cost = p::SqlCost { rows_read: 0, rows_written: 0, duration_us: 1 };
    match msg {
        // Placed here (started on this envoy)...
        M::GetOrCreateActor(r) if r.key == "placed" => {
            let start = p::CommandStartActor {
                actor_id: "a-1".into(),
                generation: 1,
                name: r.name.clone(),
                key: r.key.clone(),
            };
            vec![placed(r.request_id), commands(0, p::Command::StartActor(start))]
        }
        // ... and then moved away by a node drain.
        M::GetOrCreateActor(r) if r.key == "drain" => {
            let stop = p::CommandStopActor { actor_id: "a-1".into(), generation: 1, reason: p::StopReason::Moved };
            vec![placed(r.request_id), commands(1, p::Command::StopActor(stop))]
        }
        M::GetOrCreateActor(r) => vec![p::ToEnvoy::GetOrCreateActorResponse(p::ToEnvoyGetOrCreateActorResponse {
            request_id: r.request_id,
            result: p::GetOrCreateActorResult::GetOrCreateActorError(p::GetOrCreateActorError {
                code: p::ActorErrorCode::ActorUnavailable,
                message: OWNER_DOWN.into(),
            }),
        })],
        M::KvRequest(r) => vec![p::ToEnvoy::KvResponse(p::ToEnvoyKvResponse {
            request_id: r.request_id,
            data: p::KvResponseData::KvErrorResponse(p::KvErrorResponse {
                code: p::KvErrorCode::ActorUnavailable,
                message: OWNER_DOWN.into(),
                current_generation: None,
            }),
        })],
        // v4 SQL: nothing ran.
        M::SqliteExecute(p::ToEngineSqliteExecute { request_id, .. })
        | M::SqliteExecuteWrite(p::ToEngineSqliteExecuteWrite { request_id, .. }) => {
            vec![p::ToEnvoy::SqliteExecuteResponse(p::ToEnvoySqliteExecuteResponse {
                request_id: *request_id,
                result: p::SqliteExecuteResult::SqliteError(sql_error(Some(false))),
            })]
        }
        // v5+: a write relayed to the owner when its link dropped: it may have run.
        M::SqliteExecuteV5(r) => vec![p::ToEnvoy::SqliteExecuteResponseV5(p::ToEnvoySqliteExecuteResponseV5 {
            request_id: r.request_id,
            result: p::SqliteExecuteResult::SqliteError(sql_error(None)),
            cost,
            request_key: r.request.request_key.as_ref().map(|_| p::RequestKeyOutcome::Executed),
        })],
        // The client under test sends nothing else that wants an answer.
        M::Metadata(_)
        | M::Events(_)
        | M::AckCommands(_)
        | M::Stopping
        | M::Pong(_)
        | M::SqliteExec(_)
        | M::SqliteExecV5(_)
        | M::SqliteBatch(_)
        | M::SqliteBegin(_)
        | M::SqliteTransactionExecute(_)
        | M::SqliteCommit(_)
        | M::SqliteRollback(_)
        | M::SqliteStreamOpen(_)
        | M::SqliteStreamCredit(_)
        | M::SqliteStreamCancel(_) => Vec::new(),
    }
}

/// An engine answer carrying ACTOR_UNAVAILABLE reaches a v6 client as
/// `Error::ActorUnavailable`, and a v5 or v4 client as what its version has
/// (`OVERLOADED`; for a get-or-create at v4, `INTERNAL`), with the message
/// saying why. MOVED reaches a v6 stop handler, and an older one as UNSPECIFIED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actor_unavailable_and_moved_reach_every_client_version() {
    let engine = ScriptedEngine::start(p::PROTOCOL_VERSION, Arc::new(owner_down)).await;
    let prefixed = format!("actor unavailable: {OWNER_DOWN}");
    for client_max in [6u16, 5, 4] {
        let cell = format!("client ≤v{client_max} × v6 engine");
        let mut cfg = TestEngine::client_config(&engine.endpoint());
        cfg.max_protocol_version = client_max;
        let client = Client::connect(cfg).await.unwrap_or_else(|e| panic!("{cell}: connect: {e}"));
        assert_eq!(client.session().map(|s| s.protocol_version), Some(client_max), "{cell}");
        let reasons = Arc::new(Mutex::new(Vec::new()));
        let seen = reasons.clone();
        client.on_actor_stop(move |ctx| {
            seen.lock().unwrap().push(ctx.stop_reason());
            async {}
        });

        let goc = client.get_or_create_actor("notes", "elsewhere").await.map(|_| ()).unwrap_err();
        let actor = client.get_or_create_actor("notes", "placed").await.unwrap_or_else(|e| panic!("{cell}: {e}"));
        let kv = actor.kv().get(b"k").await.unwrap_err();
        let sql = actor.sql().execute("INSERT INTO t VALUES (1)", ()).await.unwrap_err();
        match client_max {
            6 => {
                let unavailable = |committed| Error::ActorUnavailable { message: OWNER_DOWN.into(), committed };
                assert_eq!(goc, unavailable(Some(false)), "{cell}: get-or-create");
                assert_eq!(kv, unavailable(None), "{cell}: KV (its answer cannot say whether it ran)");
                assert_eq!(sql, unavailable(None), "{cell}: a relayed write that may have run");
                assert!(goc.is_not_run() && !kv.is_not_run() && !sql.is_not_run(), "{cell}");
            }
            _ => {
                let overloaded = Error::Overloaded { message: prefixed.clone() };
                if client_max == 5 {
                    assert_eq!(goc, overloaded, "{cell}: get-or-create");
                } else {
                    let internal =
                        Error::GetOrCreateActor { code: p::ActorErrorCode::Internal, message: prefixed.clone() };
                    assert_eq!(goc, internal, "{cell}: get-or-create (v4 has no OVERLOADED)");
                }
                assert_eq!(kv, overloaded, "{cell}: KV");
                assert_eq!(sql, overloaded, "{cell}: SQL");
            }
        }
        // The node drains: the actor moves to another node.
        client.get_or_create_actor("notes", "drain").await.unwrap_or_else(|e| panic!("{cell}: {e}"));
        let expected = if client_max >= 6 { p::StopReason::Moved } else { p::StopReason::Unspecified };
        assert!(eventually(5_000, || reasons.lock().unwrap().len() == 1).await, "{cell}: the stop handler ran");
        assert_eq!(reasons.lock().unwrap()[0], Some(expected), "{cell}: stop reason");
        assert!(matches!(client.state(), ConnectionState::Connected(_)), "{cell}: still connected");
        client.close().await;
    }
}
