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
    ws.send(tokio_tungstenite::tungstenite::Message::Binary(encode_to_engine(&hello, version).unwrap().into()))
        .await
        .unwrap();
    let mut code = None;
    while let Some(Ok(m)) = ws.next().await {
        if let tokio_tungstenite::tungstenite::Message::Close(Some(f)) = m {
            code = Some(u16::from(f.code));
        }
    }
    assert_eq!(code, Some(close::INVALID_HELLO));
    engine.shutdown().await;
}

/// xorshift: deterministic pseudo-random bytes without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[tokio::test]
async fn random_and_mutated_frames_never_break_the_engine() {
    let dir = temp_dir();
    let engine = start(dir.path()).await;
    let mut good = RawClient::connect(engine.local_addr(), ConnectOpts::new("ns", "good")).await;
    let a = good.get_or_create("a", "").await;
    // Valid frames of every request kind, to mutate.
    let req = SqliteExecuteRequest {
        actor_id: a.actor_id.clone(),
        generation: a.generation,
        sql: "SELECT ?".into(),
        params: Some(vec![Value::Integer(1), Value::Text("t".into())]),
    };
    let seeds: Vec<Vec<u8>> = [
        ToEngine::SqliteExecute(ToEngineSqliteExecute { request_id: 1, request: req.clone() }),
        ToEngine::SqliteExecuteWrite(ToEngineSqliteExecuteWrite { request_id: 2, request: req.clone() }),
        ToEngine::SqliteExec(ToEngineSqliteExec {
            request_id: 3,
            request: SqliteExecRequest {
                actor_id: a.actor_id.clone(),
                generation: a.generation,
                sql: "SELECT 1; SELECT 2".into(),
            },
        }),
        ToEngine::KvRequest(ToEngineKvRequest {
            request_id: 4,
            actor_id: a.actor_id.clone(),
            generation: a.generation,
            data: KvRequestData::KvList(KvList { query: KvQuery::All, reverse: true, limit: Some(3) }),
        }),
        ToEngine::GetOrCreateActor(ToEngineGetOrCreateActor { request_id: 5, name: "n".into(), key: "k".into() }),
        ToEngine::Events(ToEngineEvents {
            events: vec![EventWrapper {
                index: 9,
                inner: Event::ActorIntent(EventActorIntent {
                    actor_id: "zz".into(),
                    generation: 1,
                    intent: ActorIntent::Stop,
                }),
            }],
        }),
        ToEngine::AckCommands(ToEngineAckCommands { last_command_index: 99 }),
    ]
    .iter()
    .map(|m| encode_to_engine(m, 4).unwrap())
    .collect();
    let mut rng = Rng(0x9E3779B97F4A7C15);
    let mut c = RawClient::connect(engine.local_addr(), ConnectOpts::new("ns", "fuzz-0")).await;
    for round in 0..300u32 {
        let mut frame = seeds[(rng.next() % seeds.len() as u64) as usize].clone();
        match rng.next() % 3 {
            0 => {
                for _ in 0..1 + rng.next() % 4 {
                    let i = (rng.next() % frame.len() as u64) as usize;
                    frame[i] = rng.next() as u8;
                }
            }
            1 => frame.truncate((rng.next() % frame.len() as u64) as usize),
            _ => frame = (0..rng.next() % 64).map(|_| rng.next() as u8).collect(),
        }
        use futures_util::SinkExt;
        let sent = c.ws.send(tokio_tungstenite::tungstenite::Message::Binary(frame.into())).await;
        // A frame that broke the connection: open a new one (the engine must keep accepting).
        if sent.is_err() || round % 10 == 9 {
            c = RawClient::connect(engine.local_addr(), ConnectOpts::new("ns", &format!("fuzz-{round}"))).await;
        }
    }
    // The engine and the untouched connection are fine.
    assert_eq!(ok(good.execute(&a, "SELECT 5", vec![]).await).rows, vec![vec![Value::Integer(5)]]);
    let (status, _) =
        envoy_engine::cli::http_request(&format!("http://{}", engine.local_addr()), "GET", "/health", None)
            .await
            .unwrap();
    assert_eq!(status, 200);
    engine.shutdown().await;
}

#[tokio::test]
async fn a_v6_offer_is_answered_with_v6_and_init_v5_unless_the_engine_is_capped_below() {
    // The engine speaks up to v6 by default and may not be configured above the
    // newest version the protocol crate defines.
    let dir = temp_dir();
    assert_eq!(envoy_engine::config::DEFAULT_MAX_PROTOCOL_VERSION, 6);
    let mut over = test_config(dir.path());
    over.max_protocol_version = PROTOCOL_VERSION + 1;
    assert!(over.validate().is_err());
    let config = test_config(dir.path());
    let engine = start_with(config.clone()).await;
    let mut offer = ConnectOpts::new("ns", "v6-client");
    offer.max_version = PROTOCOL_VERSION;
    let c = RawClient::connect(engine.local_addr(), offer).await;
    assert_eq!(c.version, 6);
    // v6 adds no Init: InitV5, the v4 metadata unchanged plus exactly what the config advertises.
    let init = c.init_v5.clone().expect("a v6 connection is answered with InitV5");
    assert_eq!(init.envoy_id, "v6-client");
    assert_eq!(init.metadata.limits, Some(config.limits.protocol_limits()));
    assert_eq!(init.metadata.sql_limits, Some(config.limits.sql_limits()));
    assert_eq!(init.metadata.max_frame_bytes, config.limits.max_frame_bytes);
    assert_eq!(init.metadata_v5, config.protocol_metadata_v5());
    assert_eq!(init.metadata_v5.limits.max_batch_statements, config.max_batch_statements);
    assert_eq!(init.metadata_v5.limits.request_key_retention_ms, config.request_key_retention.as_millis() as u64);
    // A v5 client gets the same InitV5; a v4 client still gets a v4 Init.
    let v5 = RawClient::connect(engine.local_addr(), ConnectOpts::new("ns", "v5-client").version(5)).await;
    assert_eq!(v5.version, 5);
    assert_eq!(v5.init_v5.map(|i| i.metadata_v5), Some(config.protocol_metadata_v5()));
    let v4 = RawClient::connect(engine.local_addr(), ConnectOpts::new("ns", "v4-client").version(4)).await;
    assert_eq!(v4.version, 4);
    assert!(v4.init_v5.is_none());
    engine.shutdown().await;
    // An engine capped at v5 finds no common version with a v6-only client.
    let mut capped = test_config(dir.path());
    capped.max_protocol_version = 5;
    let engine = start_with(capped).await;
    match upgrade(engine.local_addr(), &ConnectOpts::new("ns", "v6-only").version(PROTOCOL_VERSION)).await {
        Upgrade::Http(status, headers) => {
            assert_eq!(status, close::NO_COMMON_VERSION_STATUS);
            assert_eq!(headers.get(close::VERSIONS_HEADER).map(String::as_str), Some("1-5"));
        }
        Upgrade::Ok(..) => panic!("a v6-only offer was accepted by an engine capped at v5"),
    }
    engine.shutdown().await;
}
