//! Stop and drain: accepted work finishes, new work is refused, the threshold
//! is honoured; the socket keeps flowing during a long query.

use crate::support::*;
use envoy_engine::ActorState as S;
use envoy_protocol::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::test]
async fn accepted_queries_finish_new_ones_are_refused() {
    let dir = temp_dir();
    let engine = Arc::new(start(dir.path()).await);
    let mut c = RawClient::connect(engine.local_addr(), ConnectOpts::new("ns", "e")).await;
    let a = c.get_or_create("busy", "").await;
    exec_ok(c.exec(&a, "CREATE TABLE t (x)").await);
    // An answer is queued before its guard drops (so a drain never closes a
    // socket ahead of it): wait for the CREATE's count to clear first.
    eventually(|| engine.inflight(&a.actor_id, a.generation) == 0).await;
    // A slow read and a queued write behind it, both accepted before the stop.
    let slow = c.send_execute(&a, &slow_sql(Duration::from_millis(1200)), vec![], true).await;
    let queued = c.send_execute(&a, "INSERT INTO t VALUES (1)", vec![], true).await;
    eventually(|| engine.inflight(&a.actor_id, a.generation) == 2).await;

    let stopper = {
        let engine = engine.clone();
        let id = a.actor_id.clone();
        tokio::spawn(async move { engine.stop_actor(&id).await.unwrap() })
    };
    eventually(|| engine.actors()[0].state == S::Stopping).await;
    // New work is refused with ACTOR_STOPPING (SQL and KV)…
    let e = sql_err(c.execute(&a, "SELECT 1", vec![]).await);
    assert_eq!(e.code, SqliteErrorCode::ActorStopping);
    match c.kv(&a, KvRequestData::KvGet(KvGet { key: b"k".to_vec() })).await {
        KvResponseData::KvErrorResponse(e) => assert_eq!(e.code, KvErrorCode::ActorStopping),
        other => panic!("{other:?}"),
    }
    // …the running one completes normally (the DB was not closed under it), and the
    // one queued behind it, not started when the stop began, is turned away unrun.
    let r = ok(c.execute_result(slow).await);
    assert!(matches!(r.rows[0][0], Value::Integer(n) if n > 0));
    let e = sql_err(c.execute_result(queued).await);
    assert_eq!((e.code, e.committed), (SqliteErrorCode::ActorStopping, Some(false)), "{e:?}");
    let report = stopper.await.unwrap();
    assert!(report.drained_in_time);
    assert_eq!((report.interrupted, report.turned_away), (0, 1));
    assert_eq!(engine.inflight(&a.actor_id, a.generation), 0);
    // StopActor was sent before the drain completed.
    assert!(c.commands.iter().any(|w| matches!(&w.inner, Command::StopActor(s) if s.reason == StopReason::Operator)));
    // The turned-away write never ran; the database is intact for the next generation.
    let b = c.get_or_create("busy", "").await;
    assert_eq!(ok(c.execute(&b, "SELECT count(*) FROM t", vec![]).await).rows, vec![vec![Value::Integer(0)]]);
    Arc::try_unwrap(engine).ok().unwrap().shutdown().await;
}

#[tokio::test]
async fn threshold_is_honoured_then_running_work_is_interrupted() {
    let dir = temp_dir();
    let mut cfg = test_config(dir.path());
    cfg.actor_stop_threshold = Duration::from_millis(600);
    let engine = start_with(cfg).await;
    let mut c = RawClient::connect(engine.local_addr(), ConnectOpts::new("ns", "e")).await;
    let a = c.get_or_create("stuck", "").await;
    let endless = c.send_execute(&a, ENDLESS_SQL, vec![], false).await;
    let behind = c.send_execute(&a, ENDLESS_SQL, vec![], true).await;
    eventually(|| engine.inflight(&a.actor_id, a.generation) == 2).await;
    // Let both start (a request not started when the stop begins is turned away instead).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    let report = engine.stop_actor(&a.actor_id).await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(600), "interrupted before the threshold");
    assert!(!report.drained_in_time);
    assert_eq!(report.interrupted + report.turned_away, 2, "{report:?}");
    assert!(report.interrupted >= 1, "{report:?}");
    for rid in [endless, behind] {
        let e = sql_err(c.execute_result(rid).await);
        assert!(matches!(e.code, SqliteErrorCode::Interrupted | SqliteErrorCode::ActorStopping), "{e:?}");
    }
    assert_eq!(engine.actors()[0].state, S::Stopped);
    engine.shutdown().await;
}

#[tokio::test]
async fn pings_and_other_actors_flow_during_a_long_query() {
    let dir = temp_dir();
    let engine = start(dir.path()).await;
    let mut c = RawClient::connect(engine.local_addr(), ConnectOpts::new("ns", "e")).await;
    let slow_actor = c.get_or_create("slow", "").await;
    let fast_actor = c.get_or_create("fast", "").await;
    let long = c.send_execute(&slow_actor, &slow_sql(Duration::from_millis(2500)), vec![], false).await;
    eventually(|| engine.inflight(&slow_actor.actor_id, slow_actor.generation) == 1).await;
    let pings_before = c.pings.len();
    // Another actor on the same socket is served meanwhile, many times.
    for i in 0..20 {
        let r = ok(c.execute(&fast_actor, "SELECT ?", vec![Value::Integer(i)]).await);
        assert_eq!(r.rows, vec![vec![Value::Integer(i)]]);
    }
    let quick = c.send_execute(&fast_actor, "SELECT 'quick'", vec![], true).await;
    ok(c.execute_result(quick).await);
    // The slow actor itself serves other reads on another reader connection, and writes on its writer.
    let r = ok(c.execute(&slow_actor, "SELECT 7", vec![]).await);
    assert_eq!((r.route, r.rows), (SqliteRoute::Read, vec![vec![Value::Integer(7)]]));
    let w = ok(c.execute_write(&slow_actor, "CREATE TABLE during (x)", vec![]).await);
    assert_eq!(w.route, SqliteRoute::Write);
    assert!(!c.answer_order.contains(&long), "the long query should still be running");
    // Pings keep arriving while it runs (interval 200 ms).
    c.until(|c| c.pings.len() >= pings_before + 2).await;
    assert!(!c.answer_order.contains(&long));
    ok(c.execute_result(long).await);
    engine.shutdown().await;
}

#[tokio::test]
async fn one_busy_actor_cannot_take_every_permit() {
    let dir = temp_dir();
    let mut cfg = test_config(dir.path());
    cfg.permits_per_connection = 2;
    cfg.reader_lanes_per_actor = 1;
    let engine = start_with(cfg).await;
    let mut c = RawClient::connect(engine.local_addr(), ConnectOpts::new("ns", "e")).await;
    let busy = c.get_or_create("busy", "").await;
    let other = c.get_or_create("other", "").await;
    let slow = slow_sql(Duration::from_millis(1000));
    let r1 = c.send_execute(&busy, &slow, vec![], false).await;
    eventually(|| engine.inflight(&busy.actor_id, busy.generation) == 1).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    // A second slow read of the same actor would take the last permit if the
    // actor were not capped at one reader lane.
    let r2 = c.send_execute(&busy, &slow, vec![], false).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let quick = c.send_execute(&other, "SELECT 'other'", vec![], false).await;
    ok(c.execute_result(quick).await);
    assert!(!c.answer_order.contains(&r1) && !c.answer_order.contains(&r2), "the other actor waited for the busy one");
    ok(c.execute_result(r1).await);
    ok(c.execute_result(r2).await);
    engine.shutdown().await;
}

/// A stop takes as long as the work running, not the work queued: requests that
/// had not started when it began are answered ACTOR_STOPPING at once (never run,
/// safe to retry), and the report counts them.
#[tokio::test]
async fn queued_requests_are_turned_away_at_once() {
    let dir = temp_dir();
    let engine = start(dir.path()).await;
    let mut c = RawClient::connect(engine.local_addr(), ConnectOpts::new("ns", "e")).await;
    let a = c.get_or_create("db", "1").await;
    exec_ok(c.exec(&a, "CREATE TABLE t(x)").await);
    let slow = slow_sql(std::time::Duration::from_millis(600));
    let mut rids = Vec::new();
    for _ in 0..12 {
        rids.push(c.send_execute(&a, &slow, vec![], false).await);
    }
    for i in 0..6 {
        rids.push(c.send_execute(&a, "INSERT INTO t VALUES (?)", vec![Value::Integer(i)], true).await);
    }
    eventually(|| engine.inflight(&a.actor_id, a.generation) == 18).await;
    let t = std::time::Instant::now();
    let report = engine.stop_actor(&a.actor_id).await.unwrap();
    println!("stop with 18 queued requests took {:?}: {report:?}", t.elapsed());
    let (mut ran, mut turned_away) = (0u64, 0u64);
    for rid in rids {
        match c.execute_result(rid).await {
            SqliteExecuteResult::ExecuteResult(_) => ran += 1,
            SqliteExecuteResult::SqliteError(e) => {
                assert_eq!((e.code, e.committed), (SqliteErrorCode::ActorStopping, Some(false)), "{e:?}");
                turned_away += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(turned_away > 0, "nothing was turned away");
    assert_eq!(report.turned_away, turned_away);
    assert!(report.drained_in_time && report.interrupted == 0, "{report:?}");
    assert_eq!(ran + turned_away, 18);
    // What ran is there; what was turned away never ran.
    let b = c.get_or_create("db", "1").await;
    let n = ok(c.execute(&b, "SELECT count(*) FROM t", vec![]).await).rows;
    let inserted = match n[0][0] {
        Value::Integer(n) => n as u64,
        ref other => panic!("{other:?}"),
    };
    assert!(inserted <= 6 && ran >= inserted, "ran {ran}, inserted {inserted}");
    engine.shutdown().await;
}
