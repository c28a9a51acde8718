//! A real single-member etcd for tests: `/usr/bin/etcd` (or `$ETCD_BIN`) on free loopback ports with its
//! data in a temporary directory, killed on drop.
//!
//! When etcd is not installed the tests that need it are skipped with a printed message, unless
//! `ENVOY_REQUIRE_ETCD` is set (the test script sets it), in which case they fail: CI never skips silently.
//! `scripts/install-cluster-deps.sh` installs it.

use envoy_engine::cluster::etcd_client::Client;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long etcd may take to start answering (a single member elects itself in about a second).
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running etcd.
pub struct EtcdProcess {
    /// The etcd process; killed and reaped on drop.
    child: Child,
    /// Where it listens for clients.
    client_addr: SocketAddr,
    /// Holds the data directory and etcd's log; removed on drop.
    dir: tempfile::TempDir,
}

impl EtcdProcess {
    /// The etcd binary: `$ETCD_BIN`, else `/usr/bin/etcd`.
    pub fn binary() -> PathBuf {
        std::env::var_os("ETCD_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"))
    }

    /// Starts etcd and waits until it answers. `None` (after printing why) when etcd is not installed
    /// and `ENVOY_REQUIRE_ETCD` is unset; panics when it is set, or when etcd does not start.
    pub async fn start() -> Option<EtcdProcess> {
        let bin = Self::binary();
        if !bin.is_file() {
            if std::env::var_os("ENVOY_REQUIRE_ETCD").is_some() {
                panic!(
                    "etcd not found at {} and ENVOY_REQUIRE_ETCD is set: run scripts/install-cluster-deps.sh",
                    bin.display()
                );
            }
            eprintln!(
                "SKIPPED: etcd not found at {} (set ETCD_BIN, or run scripts/install-cluster-deps.sh; \
                 ENVOY_REQUIRE_ETCD=1 makes this a failure)",
                bin.display()
            );
            return None;
        }
        // Ports picked by the OS and released just before etcd binds them: another process could take one
        // in between, so a failed start is retried with new ports.
        let mut last_error = String::new();
        for _ in 0..3 {
            match Self::try_start(&bin).await {
                Ok(etcd) => return Some(etcd),
                Err(e) => last_error = e,
            }
        }
        panic!("etcd did not start: {last_error}");
    }

    async fn try_start(bin: &PathBuf) -> Result<EtcdProcess, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let client_addr = free_port()?;
        let peer_addr = free_port()?;
        let client_url = format!("http://{client_addr}");
        let peer_url = format!("http://{peer_addr}");
        let log = std::fs::File::create(dir.path().join("etcd.log")).map_err(|e| format!("log file: {e}"))?;
        let log2 = log.try_clone().map_err(|e| format!("log file: {e}"))?;
        let child = Command::new(bin)
            .arg("--name")
            .arg("test")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--listen-client-urls")
            .arg(&client_url)
            .arg("--advertise-client-urls")
            .arg(&client_url)
            .arg("--listen-peer-urls")
            .arg(&peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer_url)
            .arg("--initial-cluster")
            .arg(format!("test={peer_url}"))
            .arg("--log-level")
            .arg("warn")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("spawning {}: {e}", bin.display()))?;
        let mut etcd = EtcdProcess { child, client_addr, dir };
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = etcd.child.try_wait() {
                return Err(format!("etcd exited with {status}: {}", etcd.log()));
            }
            if etcd.answers().await {
                return Ok(etcd);
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(format!("etcd did not answer within {START_TIMEOUT:?}: {}", etcd.log()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether a read goes through (etcd up, a leader elected).
    async fn answers(&self) -> bool {
        let attempt = async {
            let mut client = Client::connect([self.endpoint()], None).await.ok()?;
            client.get("/ready-check", None).await.ok()
        };
        matches!(tokio::time::timeout(Duration::from_secs(1), attempt).await, Ok(Some(_)))
    }

    /// `http://127.0.0.1:PORT`, the client URL.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.client_addr)
    }

    /// The client address (for a proxy in front of it).
    pub fn addr(&self) -> SocketAddr {
        self.client_addr
    }

    /// etcd's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port free right now.
fn free_port() -> Result<SocketAddr, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    listener.local_addr().map_err(|e| format!("local addr: {e}"))
}
