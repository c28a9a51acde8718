//! TLS: the engine serves `wss://` itself (`--tls-cert`/`--tls-key`, rustls) and the
//! native client speaks it, trusting a root given in its config. The certificate is
//! made in the test.

use envoy_client::{Client, ClientConfig, Value};
use envoy_tests::TestEngine;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_end_to_end_with_a_certificate_made_here() {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("a certificate");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.key_pair.serialize_pem()).unwrap();
    let te = TestEngine::start(|c| {
        c.tls_cert = Some(cert.clone());
        c.tls_key = Some(key.clone());
    })
    .await;
    let port = te.engine.local_addr().port();
    let wss = format!("wss://localhost:{port}");

    // Trusting the certificate: SQL works over TLS.
    let config = ClientConfig { tls_root_ca_pem: Some(made.cert.pem()), ..TestEngine::client_config(&wss) };
    let client = Client::connect(config).await.expect("connects over wss");
    let db = client.get_or_create_actor("tls", "1").await.unwrap().sql();
    db.exec("CREATE TABLE t(x)").await.unwrap();
    db.execute("INSERT INTO t VALUES (?)", vec![Value::Text("over tls".into())]).await.unwrap();
    let rows = db.query("SELECT x FROM t", ()).await.unwrap();
    assert_eq!(rows.first().unwrap().get::<String>(0).unwrap(), "over tls");
    client.close().await;

    // Not trusting it: the connection is refused (no silent downgrade, no acceptance), at
    // once and for good: a retry cannot change what the client trusts.
    let untrusted = ClientConfig { initial_connect_timeout_ms: 60_000, ..TestEngine::client_config(&wss) };
    match Client::connect(untrusted).await.unwrap_err() {
        envoy_client::Error::Disconnected {
            reason: envoy_client::DisconnectReason::CertificateRejected { message },
        } => {
            assert!(message.contains("TLS with localhost"), "{message}")
        }
        other => panic!("an untrusted certificate: {other:?}"),
    }
    // Plain ws:// to the TLS port does not get through either.
    let plain = ClientConfig {
        initial_connect_timeout_ms: 1_500,
        ..TestEngine::client_config(&format!("ws://localhost:{port}"))
    };
    assert!(Client::connect(plain).await.is_err());
    te.engine.shutdown().await;
}
