//! Upgrade: version negotiation, tokens; malformed frames close only their connection.

use crate::support::*;
use envoy_protocol::*;

#[tokio::test]
async fn negotiation_and_auth() {
    let dir = temp_dir();
    let mut cfg = test_config(dir.path());
    cfg.auth_token = Some("s3cret".into());
    cfg.max_protocol_version = 3;
    let engine = start_with(cfg).await;
    let addr = engine.local_addr();
    // Wrong or missing token: 401.
    for o in [ConnectOpts::new("ns", "e"), ConnectOpts::new("ns", "e").token("wrong")] {
        match upgrade(addr, &o).await {
            Upgrade::Http(status, _) => assert_eq!(status, 401),
            Upgrade::Ok(..) => panic!("accepted without the right token"),
        }
    }
    // An engine pinned to v3 answers v3 to a v1-v4 offer.
    let c = RawClient::connect(addr, ConnectOpts::new("ns", "e").token("s3cret")).await;
    assert_eq!(c.version, 3);
    assert!(c.init.metadata.limits.is_some());
    // No common version: 426 and the versions header.
    let mut only4 = ConnectOpts::new("ns", "e2").version(4);
    only4.token = Some("s3cret".into());
    match upgrade(addr, &only4).await {
        Upgrade::Http(status, headers) => {
            assert_eq!(status, close::NO_COMMON_VERSION_STATUS);
            assert_eq!(headers.get(close::VERSIONS_HEADER).map(String::as_str), Some("1-3"));
        }
        Upgrade::Ok(..) => panic!("no common version, yet accepted"),
    }
    engine.shutdown().await;
}

#[tokio::test]
async fn malformed_frame_closes_only_that_connection() {
    let dir = temp_dir();
    let engine = start(dir.path()).await;
    let mut good = RawClient::connect(engine.local_addr(), ConnectOpts::new("ns", "good")).await;
    let a = good.get_or_create("a", "").await;
    let mut bad = RawClient::connect(engine.local_addr(), ConnectOpts::new("ns", "bad")).await;
    let b = bad.get_or_create("b", "").await;
    // Work accepted before the bad frame still completes.
    let slow = bad.send_execute(&b, &slow_sql(std::time::Duration::from_millis(300)), vec![], false).await;
    bad.send_raw(vec![0xFF, 0xFF, 0xFF, 0xFF, 0x0F, 1, 2, 3]).await;
    let (code, reason) = bad.until_closed().await;
    assert_eq!(code, close::PROTOCOL_ERROR);
    assert!(reason.contains("ToEngine"), "{reason}");
    let _ = slow;
    eventually(|| engine.inflight(&b.actor_id, b.generation) == 0).await;
    // The other connection is undisturbed.
    assert_eq!(ok(good.execute(&a, "SELECT 42", vec![]).await).rows, vec![vec![Value::Integer(42)]]);
    // A second hello is a protocol error too.
    let mut twice = RawClient::connect(engine.local_addr(), ConnectOpts::new("ns", "twice")).await;
    twice
        .send(&ToEngine::Metadata(ToEngineMetadata {
            envoy_key: "twice".into(),
            pool_name: "default".into(),
            version: 1,
            metadata: Default::default(),
            last_command_index: None,
        }))
        .await;
    assert_eq!(twice.until_closed().await.0, close::PROTOCOL_ERROR);
    engine.shutdown().await;
}

#[tokio::test]
async fn oversized_frame_and_mismatched_hello_close_the_connection() {
    let dir = temp_dir();
    let mut cfg = test_config(dir.path());
    cfg.limits.max_frame_bytes = 4096;
    cfg.limits.max_request_bytes = 4096;
    cfg.limits.max_response_bytes = 4000;
    let engine = start_with(cfg).await;
    let mut c = RawClient::connect(engine.local_addr(), ConnectOpts::new("ns", "big")).await;
    assert_eq!(c.init.metadata.max_frame_bytes, 4096);
    let a = c.get_or_create("a", "").await;
    let sql = format!("SELECT '{}'", "x".repeat(5000));
    c.send_execute(&a, &sql, vec![], false).await;
    let (code, _) = c.until_closed().await;
    assert_eq!(code, close::MESSAGE_TOO_BIG);

    // A hello whose envoy key differs from the query: INVALID_HELLO.
    let o = ConnectOpts::new("ns", "query-key");
    let Upgrade::Ok(mut ws, version) = upgrade(engine.local_addr(), &o).await else { panic!("refused") };
    use futures_util::{SinkExt, StreamExt};
    let hello = ToEngine::Metadata(ToEngineMetadata {
        envoy_key: "other-key".into(),
        pool_name: "default".into(),
        version: 1,
        metadata: Default::default(),
        last_command_index: None,
    });
    ws.send(tokio_tungstenite::tungstenite::Message::Binary(encode_to_engine(&hello, version).unwrap().into())).await.unwrap();
    let mut code = None;
    while let Some(Ok(m)) = ws.next().await {
        if let tokio_tungstenite::tungstenite::Message::Close(Some(f)) = m {
            code = Some(u16::from(f.code));
        }
    }
    assert_eq!(code, Some(close::INVALID_HELLO));
    engine.shutdown().await;
}
