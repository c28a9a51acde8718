//! Placement, generations (also across restarts), fencing, replacement.

use crate::support::*;
use envoy_engine::ActorState as S;
use envoy_protocol::*;

#[tokio::test]
async fn lifecycle_and_generations_across_restart() {
    let dir = temp_dir();
    let engine = start(dir.path()).await;
    let mut c = RawClient::connect(engine.local_addr(), ConnectOpts::new("ns", "envoy-a")).await;
    assert_eq!(c.init.metadata.sql_limits.as_ref().unwrap().max_params, 32_766);
    assert!(c.init.metadata.limits.is_some());

    let a = c.get_or_create("counter", "k1").await;
    assert!(a.created);
    assert_eq!(a.generation, 1);
    // StartActor was sent (before the answer) with an index and the generation.
    assert_eq!(c.commands.len(), 1);
    match &c.commands[0].inner {
        Command::StartActor(s) => {
            assert_eq!(
                (s.actor_id.as_str(), s.generation, s.name.as_str(), s.key.as_str()),
                (a.actor_id.as_str(), 1, "counter", "k1")
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(engine.actors()[0].state, S::Starting);
    c.ack_all().await;
    c.report_running(1, &a.actor_id, 1).await;
    c.until(|c| c.event_acks.contains(&1)).await;
    assert_eq!(engine.actors()[0].state, S::Running);

    // Get on the same envoy: same generation, no restart.
    let again = c.get_or_create("counter", "k1").await;
    assert_eq!((again.actor_id.as_str(), again.generation, again.created), (a.actor_id.as_str(), 1, false));
    assert_eq!(c.commands.len(), 1);

    ok(c.execute_write(&a, "CREATE TABLE t (v TEXT)", vec![]).await);
    ok(c.execute_write(&a, "INSERT INTO t VALUES (?)", vec![Value::Text("kept".into())]).await);

    // Operator stop: StopActor(OPERATOR) reaches the envoy, the actor is Stopped and unplaced.
    let report = engine.stop_actor(&a.actor_id).await.unwrap();
    assert_eq!(report.generation, 1);
    c.until(|c| c.commands.len() == 2).await;
    match &c.commands[1].inner {
        Command::StopActor(s) => assert_eq!((s.generation, s.reason), (1, StopReason::Operator)),
        other => panic!("{other:?}"),
    }
    let rec = &engine.actors()[0];
    assert_eq!((rec.state, rec.envoy.as_deref()), (S::Stopped, None));

    // A new start raises the generation.
    let b = c.get_or_create("counter", "k1").await;
    assert_eq!((b.generation, b.created), (2, false));
    drop(c);
    engine.shutdown().await;

    // Restart on the same data dir: generation 3, data still there.
    let engine = start(dir.path()).await;
    let rec = &engine.actors()[0];
    assert_eq!((rec.state, rec.generation), (S::Stopped, 2));
    let mut c = RawClient::connect(engine.local_addr(), ConnectOpts::new("ns", "envoy-a")).await;
    let b = c.get_or_create("counter", "k1").await;
    assert_eq!((b.actor_id.as_str(), b.generation, b.created), (a.actor_id.as_str(), 3, false));
    let rows = ok(c.execute(&b, "SELECT v FROM t", vec![]).await);
    assert_eq!(rows.rows, vec![vec![Value::Text("kept".into())]]);
    engine.shutdown().await;
}

#[tokio::test]
async fn fence_mismatch_not_placed_not_found() {
    let dir = temp_dir();
    let engine = start(dir.path()).await;
    let mut c = RawClient::connect(engine.local_addr(), ConnectOpts::new("ns", "envoy-a")).await;
    let a1 = c.get_or_create("x", "").await;
    engine.stop_actor(&a1.actor_id).await.unwrap();
    let a2 = c.get_or_create("x", "").await;
    assert_eq!(a2.generation, a1.generation + 1);

    // The old generation is fenced, with the current one in the answer, for SQL and KV.
    let rid = c.send_execute(&a1, "SELECT 1", vec![], false).await;
    match c.execute_result(rid).await {
        SqliteExecuteResult::SqliteFenceMismatch(f) => assert_eq!(f.current_generation, a2.generation),
        other => panic!("{other:?}"),
    }
    let rid = c.send_exec(&a1.actor_id, a1.generation, "SELECT 1").await;
    match c.answer(rid).await {
        ToEnvoy::SqliteExecResponse(r) => assert!(
            matches!(r.result, SqliteExecResult::SqliteFenceMismatch(ref f) if f.current_generation == a2.generation)
        ),
        other => panic!("{other:?}"),
    }
    match c.kv(&a1, KvRequestData::KvGet(KvGet { key: b"k".to_vec() })).await {
        KvResponseData::KvErrorResponse(e) => {
            assert_eq!((e.code, e.current_generation), (KvErrorCode::FenceMismatch, Some(a2.generation)))
        }
        other => panic!("{other:?}"),
    }

    // Unknown actor; another namespace cannot see it; another envoy is not its host.
    let ghost = GetOrCreateActorOk { actor_id: "nope".into(), generation: 1, created: false };
    assert_eq!(sql_err(c.execute(&ghost, "SELECT 1", vec![]).await).code, SqliteErrorCode::ActorNotFound);
    let mut other_ns = RawClient::connect(engine.local_addr(), ConnectOpts::new("other", "envoy-a")).await;
    assert_eq!(sql_err(other_ns.execute(&a2, "SELECT 1", vec![]).await).code, SqliteErrorCode::ActorNotFound);
    let mut b = RawClient::connect(engine.local_addr(), ConnectOpts::new("ns", "envoy-b")).await;
    assert_eq!(sql_err(b.execute(&a2, "SELECT 1", vec![]).await).code, SqliteErrorCode::ActorNotPlaced);
    // The right envoy and generation work.
    assert_eq!(ok(c.execute(&a2, "SELECT 1", vec![]).await).rows, vec![vec![Value::Integer(1)]]);
    engine.shutdown().await;
}

#[tokio::test]
async fn another_envoy_takes_over_after_a_drain() {
    let dir = temp_dir();
    let engine = start(dir.path()).await;
    let mut a = RawClient::connect(engine.local_addr(), ConnectOpts::new("ns", "envoy-a")).await;
    let mut b = RawClient::connect(engine.local_addr(), ConnectOpts::new("ns", "envoy-b")).await;
    let on_a = a.get_or_create("room", "1").await;
    ok(a.execute_write(&on_a, "CREATE TABLE t (x)", vec![]).await);
    let on_b = b.get_or_create("room", "1").await;
    assert_eq!((on_b.actor_id.as_str(), on_b.generation), (on_a.actor_id.as_str(), on_a.generation + 1));
    // A got StopActor(REPLACED) for its generation.
    a.until(|c| c.commands.len() == 2).await;
    match &a.commands[1].inner {
        Command::StopActor(s) => assert_eq!((s.generation, s.reason), (on_a.generation, StopReason::Replaced)),
        other => panic!("{other:?}"),
    }
    assert_eq!(sql_err(a.execute(&on_a, "SELECT 1", vec![]).await).code, SqliteErrorCode::ActorNotPlaced);
    // B sees A's table: one database per actor, whichever envoy hosts it.
    ok(b.execute(&on_b, "SELECT * FROM t", vec![]).await);
    engine.shutdown().await;
}

#[tokio::test]
async fn intent_events_drain_like_an_operator_stop() {
    let dir = temp_dir();
    let engine = start(dir.path()).await;
    let mut c = RawClient::connect(engine.local_addr(), ConnectOpts::new("ns", "e")).await;
    let a = c.get_or_create("sleepy", "").await;
    c.send(&ToEngine::Events(ToEngineEvents {
        events: vec![EventWrapper {
            index: 1,
            inner: Event::ActorIntent(EventActorIntent {
                actor_id: a.actor_id.clone(),
                generation: a.generation,
                intent: ActorIntent::Sleep,
            }),
        }],
    }))
    .await;
    c.until(|c| c.commands.len() == 2).await;
    match &c.commands[1].inner {
        Command::StopActor(s) => assert_eq!(s.reason, StopReason::EnvoySleepIntent),
        other => panic!("{other:?}"),
    }
    eventually(|| engine.actors()[0].state == S::Stopped).await;
    // A duplicate event index is ignored (acked, not applied twice).
    let b = c.get_or_create("sleepy", "").await;
    c.send(&ToEngine::Events(ToEngineEvents {
        events: vec![EventWrapper {
            index: 1,
            inner: Event::ActorIntent(EventActorIntent {
                actor_id: b.actor_id.clone(),
                generation: b.generation,
                intent: ActorIntent::Stop,
            }),
        }],
    }))
    .await;
    c.until(|c| c.event_acks.len() == 2).await;
    assert_eq!(c.event_acks, vec![1, 1]);
    assert_eq!(engine.actors()[0].state, S::Starting);
    engine.shutdown().await;
}

#[tokio::test]
async fn get_or_create_errors_are_typed() {
    let dir = temp_dir();
    let engine = start(dir.path()).await;
    let mut c = RawClient::connect(engine.local_addr(), ConnectOpts::new("ns", "e")).await;
    let goc = |rid: u32, name: &str, key: &str| {
        ToEngine::GetOrCreateActor(ToEngineGetOrCreateActor { request_id: rid, name: name.into(), key: key.into() })
    };
    let code = |m: ToEnvoy| match m {
        ToEnvoy::GetOrCreateActorResponse(r) => match r.result {
            GetOrCreateActorResult::GetOrCreateActorError(e) => e.code,
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    };
    let rid = c.rid();
    c.send(&goc(rid, "", "k")).await;
    assert_eq!(code(c.answer(rid).await), ActorErrorCode::InvalidRequest);
    let rid = c.rid();
    c.send(&goc(rid, "n", &"k".repeat(2000))).await;
    assert_eq!(code(c.answer(rid).await), ActorErrorCode::InvalidRequest);

    // During shutdown (held open by a running query), new placements get ENGINE_STOPPING.
    let a = c.get_or_create("busy", "").await;
    let long = c.send_execute(&a, &slow_sql(std::time::Duration::from_millis(1000)), vec![], false).await;
    eventually(|| engine.inflight(&a.actor_id, a.generation) == 1).await;
    // Let it start: a request not yet running when a stop begins is turned away instead.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let shutting = tokio::spawn(engine.shutdown());
    // Wait for the drain to begin (the actor becomes Stopping), then ask for a placement.
    loop {
        let probe = c.send_execute(&a, "SELECT 1", vec![], false).await;
        if let SqliteExecuteResult::SqliteError(e) = c.execute_result(probe).await {
            assert_eq!(e.code, SqliteErrorCode::ActorStopping);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let rid = c.rid();
    c.send(&goc(rid, "fresh", "")).await;
    assert_eq!(code(c.answer(rid).await), ActorErrorCode::EngineStopping);
    ok(c.execute_result(long).await);
    let (close_code, _) = c.until_closed().await;
    assert_eq!(close_code, close::GOING_AWAY);
    shutting.await.unwrap();
}
