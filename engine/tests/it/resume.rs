//! Resume after a quick reconnect, lost envoys, eviction.

use crate::support::*;
use envoy_engine::ActorState as S;
use envoy_protocol::*;
use std::time::Duration;

#[tokio::test]
async fn quick_reconnect_resumes_and_resends_unacked_commands() {
    let dir = temp_dir();
    let engine = start_lossy(dir.path()).await;
    let mut c = RawClient::connect(engine.local_addr(), ConnectOpts::new("ns", "e1")).await;
    let a = c.get_or_create("one", "").await;
    let b = c.get_or_create("two", "").await;
    assert_eq!(c.commands.len(), 2);
    // Ack only the first command; report an event with index 7.
    c.send(&ToEngine::AckCommands(ToEngineAckCommands { last_command_index: c.commands[0].index })).await;
    c.report_running(7, &a.actor_id, a.generation).await;
    c.until(|c| c.event_acks.contains(&7)).await;
    let first_index = c.commands[0].index;
    drop(c);

    // Reconnect within the threshold, saying we applied the first command.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut c = RawClient::connect(engine.local_addr(), ConnectOpts::new("ns", "e1").resume(Some(first_index))).await;
    assert_eq!(c.init.last_event_index, Some(7));
    // The unacked StartActor of "two" is re-sent, once.
    c.until(|c| !c.commands.is_empty()).await;
    assert_eq!(c.commands.len(), 1);
    match &c.commands[0].inner {
        Command::StartActor(s) => assert_eq!((s.actor_id.as_str(), s.generation), (b.actor_id.as_str(), b.generation)),
        other => panic!("{other:?}"),
    }
    // Actors stay placed with their generations: SQL works with the same generation.
    assert_eq!(ok(c.execute(&a, "SELECT 1", vec![]).await).rows, vec![vec![Value::Integer(1)]]);
    // Old events are ignored; a new one is processed.
    c.report_running(7, &b.actor_id, b.generation).await;
    c.report_running(8, &b.actor_id, b.generation).await;
    c.until(|c| c.event_acks.len() == 2).await;
    assert_eq!(c.event_acks, vec![7, 8]);
    let states: Vec<_> = engine.actors().iter().map(|r| (r.name.clone(), r.state)).collect();
    assert!(states.contains(&("two".into(), S::Running)), "{states:?}");
    // Stay past the lost threshold while connected, answering pings: still placed.
    let seen = c.pings.len();
    c.until(|c| c.pings.len() >= seen + 10).await;
    assert_eq!(ok(c.execute(&b, "SELECT 2", vec![]).await).rows, vec![vec![Value::Integer(2)]]);
    engine.shutdown().await;
}

#[tokio::test]
async fn envoy_gone_past_the_threshold_is_dropped_and_actors_unplaced() {
    let dir = temp_dir();
    let engine = start_lossy(dir.path()).await;
    let mut c = RawClient::connect(engine.local_addr(), ConnectOpts::new("ns", "gone")).await;
    let a = c.get_or_create("x", "").await;
    drop(c);
    eventually(|| engine.actors()[0].state == S::Stopped).await;
    assert_eq!(engine.actors()[0].envoy, None);
    // Reconnecting now is a new session: no resume, the actor starts again at generation + 1.
    let mut c = RawClient::connect(engine.local_addr(), ConnectOpts::new("ns", "gone")).await;
    assert_eq!(c.init.last_event_index, None);
    let again = c.get_or_create("x", "").await;
    assert_eq!(again.generation, a.generation + 1);
    engine.shutdown().await;
}

#[tokio::test]
async fn silent_envoy_is_dropped() {
    let dir = temp_dir();
    let engine = start_lossy(dir.path()).await;
    let mut c = RawClient::connect(engine.local_addr(), ConnectOpts::new("ns", "mute")).await;
    let _a = c.get_or_create("x", "").await;
    // Stop reading and answering: the socket stays open but the envoy is silent.
    let t = std::time::Instant::now();
    eventually(|| engine.actors()[0].state == S::Stopped).await;
    assert!(t.elapsed() >= Duration::from_millis(1400), "dropped before the lost threshold");
    c.auto_pong = false;
    let (code, reason) = c.until_closed().await;
    assert_eq!(code, close::GOING_AWAY, "{reason}");
    engine.shutdown().await;
}

#[tokio::test]
async fn second_connection_with_the_same_key_evicts_the_first() {
    let dir = temp_dir();
    let engine = start_lossy(dir.path()).await;
    let mut first = RawClient::connect(engine.local_addr(), ConnectOpts::new("ns", "dup")).await;
    let a = first.get_or_create("x", "").await;
    let mut second = RawClient::connect(engine.local_addr(), ConnectOpts::new("ns", "dup")).await;
    let (code, _) = first.until_closed().await;
    assert_eq!(code, close::EVICTED);
    assert!(!close::should_reconnect(code));
    // The session (and placement) carries over to the new connection.
    assert_eq!(ok(second.execute(&a, "SELECT 1", vec![]).await).rows, vec![vec![Value::Integer(1)]]);
    engine.shutdown().await;
}

#[tokio::test]
async fn envoy_that_says_stopping_is_dropped_when_its_socket_ends() {
    let dir = temp_dir();
    let mut cfg = test_config(dir.path());
    cfg.envoy_lost_threshold = Duration::from_secs(30);
    let engine = start_with(cfg).await;
    let mut c = RawClient::connect(engine.local_addr(), ConnectOpts::new("ns", "leaving")).await;
    let _a = c.get_or_create("x", "").await;
    c.send(&ToEngine::Stopping).await;
    drop(c);
    // Not 30 s: at once.
    eventually(|| engine.actors()[0].state == S::Stopped).await;
    engine.shutdown().await;
}
