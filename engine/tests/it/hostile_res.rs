//! Hostile clients against bounded resources: nothing a client sends may make
//! the engine hold memory or descriptors without bound.

use crate::support::*;
use envoy_protocol::*;

/// Execute frames naming actors that do not exist get ACTOR_NOT_FOUND and leave
/// no in-flight bookkeeping behind (it used to keep one entry per made-up id,
/// id bytes included, for ever).
#[tokio::test]
async fn made_up_actor_ids_leave_no_inflight_entries() {
    let dir = temp_dir();
    let engine = start(dir.path()).await;
    let mut c = RawClient::connect(engine.local_addr(), ConnectOpts::new("ns", "e")).await;
    let a = c.get_or_create("db", "1").await;
    ok(c.execute(&a, "SELECT 1", vec![]).await);
    let live = engine.inflight_entries();
    assert_eq!(live, 1, "the live actor's generation has its counter");
    let rss_before = rss_kib();

    let mut rids = Vec::new();
    for i in 0..300u32 {
        let id = format!("{i:08}{}", "x".repeat(300 * 1024));
        rids.push(c.send_execute_gen(&id, 1, "SELECT 1", vec![], false).await);
    }
    // A real actor named with a generation that is not current: fenced, not counted either.
    let mut fenced = Vec::new();
    for g in 0..50 {
        fenced.push(c.send_execute_gen(&a.actor_id, a.generation + 1 + g, "SELECT 1", vec![], false).await);
    }
    for rid in rids {
        assert_eq!(sql_err(c.execute_result(rid).await).code, SqliteErrorCode::ActorNotFound);
    }
    for rid in fenced {
        assert!(matches!(c.execute_result(rid).await, SqliteExecuteResult::SqliteFenceMismatch(f) if f.current_generation == a.generation));
    }
    println!("RSS before {} KiB, after 300 x 300 KiB made-up ids {} KiB", rss_before, rss_kib());
    assert_eq!(engine.inflight_entries(), live, "refused requests left in-flight entries behind");

    // The live actor still works, and its counter goes away when it stops.
    ok(c.execute(&a, "SELECT 2", vec![]).await);
    engine.stop_actor(&a.actor_id).await.unwrap();
    assert_eq!(engine.inflight_entries(), 0);
}
