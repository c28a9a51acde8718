//! The engine against a hostile network and hostile tenants: half-sent requests,
//! connection floods, cross-site WebSockets, tokens used outside their grant,
//! envoy-key takeover, and WebSocket protocol violations.

use crate::support::*;
use envoy_protocol::*;
use std::time::Duration;

const TOKENS: &str = r#"
[[token]]
name = "tenant-a"
token = "tok-a"
namespaces = ["a"]
role = "envoy"

[[token]]
name = "tenant-b"
token = "tok-b"
namespaces = ["a", "b"]
role = "envoy"

[[token]]
name = "ops"
token = "tok-ops"
namespaces = ["*"]
role = "operator"

[[token]]
name = "ops-a"
token = "tok-ops-a"
namespaces = ["a"]
role = "operator"

[[token]]
name = "viewer"
token = "tok-view"
namespaces = ["*"]
role = "read_only_operator"
"#;

/// An engine configured with [`TOKENS`] through a real tokens file.
async fn start_tenants(dir: &std::path::Path) -> envoy_engine::RunningEngine {
    let path = dir.join("tokens.toml");
    std::fs::write(&path, TOKENS).unwrap();
    let mut c = test_config(&dir.join("data"));
    c.tokens = envoy_engine::tenants::load_tokens_file(&path).expect("the tokens file loads");
    start_with(c).await
}

fn admin_url(engine: &envoy_engine::RunningEngine) -> String {
    format!("http://{}", engine.local_addr())
}

async fn admin(engine: &envoy_engine::RunningEngine, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    envoy_engine::cli::http_request(&admin_url(engine), method, path, token).await.unwrap()
}

#[tokio::test]
async fn a_half_sent_request_is_closed_after_the_header_timeout() {
    let dir = temp_dir();
    let mut c = test_config(dir.path());
    c.header_read_timeout = Duration::from_millis(300);
    let engine = start_with(c).await;
    let addr = engine.local_addr();
    // Never finishes its head: the engine must close it rather than wait forever.
    let answer = raw_http(addr, b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: ").await;
    assert!(!answer.contains("200 OK"), "a half-sent request must not be served: {answer}");
    // A connection that sends nothing at all is closed too.
    let answer = raw_http(addr, b"").await;
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 4"), "{answer}");
    // A whole request is still served.
    let answer = raw_http(addr, b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    engine.shutdown().await;
}

#[tokio::test]
async fn connections_over_the_cap_are_refused_while_earlier_ones_keep_working() {
    let dir = temp_dir();
    let mut c = test_config(dir.path());
    c.max_connections = 2;
    let engine = start_with(c).await;
    let addr = engine.local_addr();
    let mut first = RawClient::connect(addr, ConnectOpts::new("ns", "e1")).await;
    let second = RawClient::connect(addr, ConnectOpts::new("ns", "e2")).await;

    let answer = raw_http(addr, b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 503"), "over the cap: {answer}");
    assert!(answer.to_ascii_lowercase().contains("connection: close"), "{answer}");
    assert!(answer.contains("--max-connections"), "the body says why: {answer}");

    // The connections inside the cap are unaffected.
    let actor = first.get_or_create("counter", "k").await;
    let rows = ok(first.execute(&actor, "SELECT 41 + 1", vec![]).await);
    assert_eq!(rows.rows.len(), 1);

    // Closing one frees its place (once the engine has dropped the socket).
    drop(second);
    let mut served = false;
    for _ in 0..200 {
        let answer = raw_http(addr, b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await;
        if answer.starts_with("HTTP/1.1 200") {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(served, "a place freed by a closed connection is reused");
    engine.shutdown().await;
}

#[tokio::test]
async fn browser_origins_are_refused_unless_allowed() {
    let dir = temp_dir();
    let mut c = test_config(dir.path());
    c.allowed_origins = vec!["https://app.example".into()];
    let engine = start_with(c).await;
    let addr = engine.local_addr();

    let foreign =
        upgrade_with_headers(addr, &ConnectOpts::new("ns", "e1"), &[("origin", "https://evil.example")]).await;
    assert!(matches!(foreign, Upgrade::Http(403, _)), "a foreign origin is refused");
    let null = upgrade_with_headers(addr, &ConnectOpts::new("ns", "e1"), &[("origin", "null")]).await;
    assert!(matches!(null, Upgrade::Http(403, _)), "the opaque origin is refused");
    let allowed = upgrade_with_headers(addr, &ConnectOpts::new("ns", "e2"), &[("origin", "https://app.example")]).await;
    assert!(matches!(allowed, Upgrade::Ok(..)), "an allowed origin is accepted");
    // No Origin (every non-browser client): a full session works.
    let mut plain = RawClient::connect(addr, ConnectOpts::new("ns", "e3")).await;
    plain.get_or_create("x", "y").await;

    // The admin API too: a cross-site POST cannot stop actors on a tokenless engine.
    let answer = raw_http(
        addr,
        b"POST /actors/whatever/stop HTTP/1.1\r\nHost: localhost\r\nOrigin: https://evil.example\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(answer.contains("--allowed-origin"), "the body says how to allow it: {answer}");
    engine.shutdown().await;
}

#[tokio::test]
async fn tokens_reach_only_their_namespaces_and_roles() {
    let dir = temp_dir();
    let engine = start_tenants(dir.path()).await;
    let addr = engine.local_addr();

    assert_eq!(upgrade_status(addr, &ConnectOpts::new("a", "e")).await, 401, "no token");
    assert_eq!(upgrade_status(addr, &ConnectOpts::new("a", "e").token("tok-x")).await, 401, "unknown token");
    assert_eq!(upgrade_status(addr, &ConnectOpts::new("b", "e").token("tok-a")).await, 403, "namespace not granted");
    assert_eq!(upgrade_status(addr, &ConnectOpts::new("a", "e").token("tok-view")).await, 403, "read-only role");

    // Actors in two namespaces.
    let mut a = RawClient::connect(addr, ConnectOpts::new("a", "ea").token("tok-a")).await;
    let actor_a = a.get_or_create("counter", "1").await;
    let mut b = RawClient::connect(addr, ConnectOpts::new("b", "eb").token("tok-b")).await;
    let actor_b = b.get_or_create("counter", "1").await;
    // An operator may also connect as an envoy.
    RawClient::connect(addr, ConnectOpts::new("c", "eo").token("tok-ops")).await;

    // GET /actors: 401 without or with a wrong token, 403 for an envoy token.
    assert_eq!(admin(&engine, "GET", "/actors", None).await.0, 401);
    assert_eq!(admin(&engine, "GET", "/actors", Some("tok-ops-")).await.0, 401);
    assert_eq!(admin(&engine, "GET", "/actors", Some("tok-a")).await.0, 403);
    let ids = |body: &str| -> Vec<String> {
        let v: Vec<envoy_engine::admin::ActorView> = serde_json::from_str(body).unwrap();
        v.into_iter().map(|a| a.id).collect()
    };
    let (status, body) = admin(&engine, "GET", "/actors", Some("tok-view")).await;
    assert_eq!(status, 200);
    assert!(ids(&body).contains(&actor_a.actor_id) && ids(&body).contains(&actor_b.actor_id));
    let (status, body) = admin(&engine, "GET", "/actors", Some("tok-ops-a")).await;
    assert_eq!(status, 200);
    assert_eq!(ids(&body), vec![actor_a.actor_id.clone()], "a namespace-limited operator sees only its namespaces");

    // POST stop: read-only and envoy tokens are forbidden; an operator limited to
    // namespace a cannot reach b's actor (reported absent); a full operator can.
    let stop_b = format!("/actors/{}/stop", actor_b.actor_id);
    assert_eq!(admin(&engine, "POST", &stop_b, None).await.0, 401);
    assert_eq!(admin(&engine, "POST", &stop_b, Some("tok-view")).await.0, 403);
    assert_eq!(admin(&engine, "POST", &stop_b, Some("tok-b")).await.0, 403);
    assert_eq!(admin(&engine, "POST", &stop_b, Some("tok-ops-a")).await.0, 404);
    assert!(engine.actors().iter().any(|r| r.actor_id == actor_b.actor_id && r.state.is_live()));
    let (status, body) = admin(&engine, "POST", &stop_b, Some("tok-ops")).await;
    assert_eq!(status, 200, "{body}");

    // The CLI client works with a token.
    let (status, _) = admin(&engine, "GET", "/health", Some("tok-a")).await;
    assert_eq!(status, 200, "any valid token may ask for /health");
    drop((a, b));
    engine.shutdown().await;
}

#[tokio::test]
async fn another_identity_can_neither_evict_nor_resume_an_envoy_key() {
    let dir = temp_dir();
    let engine = start_tenants(dir.path()).await;
    let addr = engine.local_addr();
    let mut owner = RawClient::connect(addr, ConnectOpts::new("a", "shared-key").token("tok-a")).await;
    let actor = owner.get_or_create("counter", "1").await;

    // tenant-b may connect in namespace a, but not with tenant-a's envoy key.
    let takeover = ConnectOpts::new("a", "shared-key").token("tok-b");
    assert_eq!(upgrade_status(addr, &takeover).await, 403);
    // Not even the all-namespace operator may take it.
    assert_eq!(upgrade_status(addr, &ConnectOpts::new("a", "shared-key").token("tok-ops")).await, 403);

    // The owner's connection was not disturbed.
    let rows = ok(owner.execute(&actor, "SELECT 1", vec![]).await);
    assert_eq!(rows.rows.len(), 1);
    assert!(owner.closed.is_none());

    // While the owner is disconnected (inside the lost threshold) the key stays its own.
    let last = owner.commands.last().map(|c| c.index);
    drop(owner);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(upgrade_status(addr, &takeover).await, 403);

    // The same token resumes the session: the actor is still placed on it.
    let mut again = RawClient::connect(addr, ConnectOpts::new("a", "shared-key").token("tok-a").resume(last)).await;
    let rows = ok(again.execute(&actor, "SELECT 2", vec![]).await);
    assert_eq!(rows.rows.len(), 1);
    engine.shutdown().await;
}

#[tokio::test]
async fn tokens_of_the_wrong_length_are_refused() {
    let dir = temp_dir();
    let mut c = test_config(dir.path());
    c.auth_token = Some("s3cret".into());
    let engine = start_with(c).await;
    let addr = engine.local_addr();
    for wrong in ["s3cre", "s3crett", "s3crets3cret", "s", "S3CRET"] {
        assert_eq!(upgrade_status(addr, &ConnectOpts::new("ns", "e").token(wrong)).await, 401, "{wrong:?}");
        assert_eq!(admin(&engine, "GET", "/actors", Some(wrong)).await.0, 401, "{wrong:?}");
    }
    assert_eq!(upgrade_status(addr, &ConnectOpts::new("ns", "e").token("s3cret")).await, 101);
    assert_eq!(admin(&engine, "GET", "/actors", Some("s3cret")).await.0, 200);
    engine.shutdown().await;
}

/// Connects by hand, says hello, waits for Init, then sends `bad`; returns the close code.
async fn close_code_after(addr: std::net::SocketAddr, envoy_key: &str, bad: Vec<u8>) -> Option<u16> {
    use tokio::io::AsyncWriteExt;
    let mut s = raw_ws_upgrade(addr, "ns", envoy_key).await;
    s.write_all(&hello_frame(envoy_key)).await.unwrap();
    let (opcode, payload) = read_server_frame(&mut s).await.expect("Init");
    assert_eq!(opcode, 0x2);
    assert!(matches!(
        decode_to_envoy(&payload, IMPLEMENTED_PROTOCOL_VERSION, &DecodeLimits::default()),
        Ok(ToEnvoy::Init(_) | ToEnvoy::InitV5(_))
    ));
    s.write_all(&bad).await.unwrap();
    read_close_code(&mut s).await
}

#[tokio::test]
async fn websocket_protocol_violations_close_with_1002() {
    let dir = temp_dir();
    let engine = start(dir.path()).await;
    let addr = engine.local_addr();
    let mask = Some([1, 2, 3, 4]);

    let unmasked = client_frame(0x82, b"\x00\x01", None);
    assert_eq!(close_code_after(addr, "unmasked", unmasked).await, Some(close::PROTOCOL_ERROR));
    let reserved_data_opcode = client_frame(0x83, b"x", mask);
    assert_eq!(close_code_after(addr, "reserved", reserved_data_opcode).await, Some(close::PROTOCOL_ERROR));
    let reserved_control_opcode = client_frame(0x8b, b"", mask);
    assert_eq!(close_code_after(addr, "reserved-ctl", reserved_control_opcode).await, Some(close::PROTOCOL_ERROR));
    let orphan_continuation = client_frame(0x80, b"x", mask);
    assert_eq!(close_code_after(addr, "orphan", orphan_continuation).await, Some(close::PROTOCOL_ERROR));
    let reserved_bit = client_frame(0xc2, b"x", mask);
    assert_eq!(close_code_after(addr, "rsv1", reserved_bit).await, Some(close::PROTOCOL_ERROR));

    // Before the hello as well.
    use tokio::io::AsyncWriteExt;
    let mut s = raw_ws_upgrade(addr, "ns", "early").await;
    s.write_all(&client_frame(0x83, b"x", mask)).await.unwrap();
    assert_eq!(read_close_code(&mut s).await, Some(close::PROTOCOL_ERROR));

    // (An oversized frame keeps 1009: see connect.rs, oversized_frame_and_mismatched_hello_close_the_connection.)

    // The engine is unaffected.
    let mut fine = RawClient::connect(addr, ConnectOpts::new("ns", "fine")).await;
    fine.get_or_create("x", "y").await;
    engine.shutdown().await;
}

#[tokio::test]
async fn a_connection_without_hello_is_closed_after_the_handshake_timeout() {
    let dir = temp_dir();
    let mut c = test_config(dir.path());
    c.handshake_timeout = Duration::from_millis(300);
    // Far beyond the test's wait: only the handshake timeout can close it in time.
    c.envoy_lost_threshold = Duration::from_secs(120);
    let engine = start_with(c).await;
    let addr = engine.local_addr();
    let mut s = raw_ws_upgrade(addr, "ns", "silent").await;
    assert_eq!(read_close_code(&mut s).await, Some(close::PROTOCOL_ERROR));
    engine.shutdown().await;
}

/// DNS rebinding: a page whose own domain resolves to 127.0.0.1 sends no `Origin`
/// on same-origin requests, but its `Host` names that domain. An engine without
/// tokens answers only requests addressed to loopback.
#[tokio::test]
async fn tokenless_engine_refuses_hosts_other_than_loopback() {
    let dir = temp_dir();
    let engine = start(dir.path()).await;
    let addr = engine.local_addr();
    let get = |host: &str| format!("GET /actors HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let rebound = raw_http(addr, get("attacker.example:6420").as_bytes()).await;
    assert!(rebound.starts_with("HTTP/1.1 403"), "{rebound}");
    let no_host = raw_http(addr, b"GET /health HTTP/1.0\r\n\r\n").await;
    assert!(no_host.starts_with("HTTP/1.0 403") || no_host.starts_with("HTTP/1.1 403"), "{no_host}");
    for host in [format!("127.0.0.1:{}", addr.port()), format!("localhost:{}", addr.port())] {
        let ok = raw_http(addr, get(&host).as_bytes()).await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{host}: {ok}");
    }
    // Envoys (the SDK, the JS hosts) address the engine by its loopback address and still connect.
    let mut c = RawClient::connect(addr, ConnectOpts::new("ns", "e")).await;
    let a = c.get_or_create("db", "1").await;
    assert_eq!(ok(c.execute(&a, "SELECT 1", vec![]).await).rows, vec![vec![Value::Integer(1)]]);
    engine.shutdown().await;
}
