//! Cross-crate test helpers: an engine on an ephemeral port with its own data
//! directory, a TCP proxy that can cut or freeze the link between client
//! and engine, the real engine binary as a child process, a raw protocol
//! connection that keeps many requests in flight, a scripted engine for
//! answers the real one cannot give on demand, and a real etcd for the
//! cluster layer.

pub mod etcd;
pub mod process;
pub mod proxy;
pub mod scripted;
pub mod wire;

use envoy_client::{Client, ClientConfig};
use envoy_engine::{Config, Engine, RunningEngine};

/// A running engine and the temporary directory holding its data.
pub struct TestEngine {
    pub engine: RunningEngine,
    /// Kept alive for the engine's lifetime; removed on drop.
    pub dir: tempfile::TempDir,
}

impl TestEngine {
    /// Starts an engine on 127.0.0.1:0 after `tweak` adjusts the test config.
    pub async fn start(tweak: impl FnOnce(&mut Config)) -> TestEngine {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::for_tests(dir.path());
        tweak(&mut config);
        let engine = Engine::start(config).await.expect("engine starts");
        TestEngine { engine, dir }
    }

    /// `ws://ADDR` of the engine.
    pub fn endpoint(&self) -> String {
        format!("ws://{}", self.engine.local_addr())
    }

    /// A client config pointing at `endpoint` with a unique envoy key.
    pub fn client_config(endpoint: &str) -> ClientConfig {
        ClientConfig { endpoint: endpoint.to_string(), namespace: "test".into(), ..Default::default() }
    }

    /// A connected client.
    pub async fn client(&self) -> Client {
        Client::connect(Self::client_config(&self.endpoint())).await.expect("client connects")
    }
}

/// Polls `f` every 10 ms until it is true or `ms` pass; returns whether it became true.
pub async fn eventually(ms: u64, mut f: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + std::time::Duration::from_millis(ms);
    loop {
        if f() {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
