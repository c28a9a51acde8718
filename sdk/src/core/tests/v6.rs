//! The v6 answers of cluster mode at the client: `ACTOR_UNAVAILABLE` is
//! `Error::ActorUnavailable` from a v6 engine and what an older engine's
//! downgrade makes of it (`OVERLOADED`, or `INTERNAL` for a get-or-create
//! below v5) otherwise; `MOVED` is a stop reason.

use super::*;

const OWNER_DOWN: &str = "the owner node of a1 is unreachable";

/// What the engine (at `version`) answers to a KV put, a get-or-create and a
/// SQL write when the actor's owner is unavailable: the v6 code, downgraded by
/// the engine's encoder below v6. The SQL answer says `committed`.
fn unavailable_answers(version: u16, committed: Option<bool>) -> [Result<Response, Error>; 3] {
    let mut sim = Sim::new(cfg(), version);
    sim.engine.answer = Answer::Hold;
    let put = sim.kv_put(b"k");
    let goc = sim.submit(Request::GetOrCreateActor { name: "n".into(), key: "k".into() });
    let write = sim.submit(Request::SqlExecute {
        actor_id: "a1".into(),
        generation: 1,
        sql: "INSERT INTO t VALUES (1)".into(),
        params: None,
        write: true,
    });
    sim.engine.send(p::ToEnvoy::KvResponse(p::ToEnvoyKvResponse {
        request_id: put,
        data: p::KvResponseData::KvErrorResponse(p::KvErrorResponse {
            code: p::KvErrorCode::ActorUnavailable,
            message: OWNER_DOWN.into(),
            current_generation: None,
        }),
    }));
    sim.engine.send(p::ToEnvoy::GetOrCreateActorResponse(p::ToEnvoyGetOrCreateActorResponse {
        request_id: goc,
        result: p::GetOrCreateActorResult::GetOrCreateActorError(p::GetOrCreateActorError {
            code: p::ActorErrorCode::ActorUnavailable,
            message: OWNER_DOWN.into(),
        }),
    }));
    let error = p::SqliteError {
        code: p::SqliteErrorCode::ActorUnavailable,
        message: OWNER_DOWN.into(),
        extended_code: None,
        committed,
        statement_index: None,
        limit: None,
    };
    sim.engine.send(if version >= 5 {
        p::ToEnvoy::SqliteExecuteResponseV5(p::ToEnvoySqliteExecuteResponseV5 {
            request_id: write,
            result: p::SqliteExecuteResult::SqliteError(error),
            cost: cost(),
            request_key: None,
        })
    } else {
        p::ToEnvoy::SqliteExecuteResponse(p::ToEnvoySqliteExecuteResponse {
            request_id: write,
            result: p::SqliteExecuteResult::SqliteError(error),
        })
    });
    sim.run();
    assert!(sim.connected(), "v{version}: the answers are well-formed");
    [sim.result(put).clone(), sim.result(goc).clone(), sim.result(write).clone()]
}

#[test]
fn actor_unavailable_is_typed_at_v6() {
    let unavailable = |committed| Err(Error::ActorUnavailable { message: OWNER_DOWN.into(), committed });
    let [kv, goc, sql] = unavailable_answers(6, Some(false));
    assert_eq!(goc, unavailable(Some(false)));
    assert_eq!(sql, unavailable(Some(false)));
    assert!(sql.unwrap_err().is_not_run(), "nothing ran: safe to send again later");
    // A KV answer cannot say (KV errors carry no `committed`): unknown.
    assert_eq!(kv, unavailable(None));
    assert!(!kv.unwrap_err().is_not_run());
    // A relayed write whose owner's link dropped may have run.
    let [_, _, relayed] = unavailable_answers(6, None);
    let relayed = relayed.unwrap_err();
    assert_eq!(relayed, Error::ActorUnavailable { message: OWNER_DOWN.into(), committed: None });
    assert!(!relayed.is_not_run(), "it may have run");
    assert_eq!(relayed.to_string(), format!("actor unavailable: {OWNER_DOWN}"));
}

#[test]
fn actor_unavailable_from_an_older_engine_is_overloaded() {
    let overloaded = || Err(Error::Overloaded { message: format!("actor unavailable: {OWNER_DOWN}") });
    for version in [4, 5] {
        let [kv, goc, sql] = unavailable_answers(version, Some(false));
        assert_eq!(kv, overloaded(), "v{version} KV");
        assert_eq!(sql, overloaded(), "v{version} SQL");
        if version == 5 {
            assert_eq!(goc, overloaded(), "v5 get-or-create");
        } else {
            // v4's ActorErrorCode has no OVERLOADED.
            assert_eq!(
                goc,
                Err(Error::GetOrCreateActor {
                    code: p::ActorErrorCode::Internal,
                    message: format!("actor unavailable: {OWNER_DOWN}"),
                }),
                "v4 get-or-create"
            );
        }
    }
}

#[test]
fn moved_reaches_the_stop_handler_at_v6_and_is_unspecified_before() {
    for (version, expected) in [(6, p::StopReason::Moved), (5, p::StopReason::Unspecified)] {
        let mut sim = Sim::new(cfg(), version);
        sim.engine.command(p::Command::StartActor(p::CommandStartActor {
            actor_id: "a1".into(),
            generation: 3,
            name: "counter".into(),
            key: "k".into(),
        }));
        sim.engine.command(p::Command::StopActor(p::CommandStopActor {
            actor_id: "a1".into(),
            generation: 3,
            reason: p::StopReason::Moved,
        }));
        sim.run();
        assert_eq!(sim.stop_reasons, [expected], "v{version}");
        // Requests for the moved generation fail locally, as for any stop.
        let id = sim.core.submit(
            Request::SqlExecute {
                actor_id: "a1".into(),
                generation: 3,
                sql: "SELECT 1".into(),
                params: None,
                write: false,
            },
            RequestOptions::default(),
            sim.now,
        );
        sim.run();
        assert_eq!(sim.result(id), &Err(Error::ActorStopping), "v{version}");
    }
}
