//! The real `envoy-engine` binary as a child process: built on first use,
//! started on an ephemeral port, killed without warning.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Log lines of the child kept for failure reports.
const LOG_TAIL: usize = 200;

/// The `envoy-engine` binary, built once per test process.
///
/// `ENVOY_ENGINE_BIN` names a binary to use as is. Otherwise this runs
/// `cargo build -p envoy-engine --bin envoy-engine` into the target directory
/// and profile of the running test executable (`<target>/<profile>/deps/…`),
/// so the binary tested is the one built from this checkout, never a stale one.
pub fn engine_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("ENVOY_ENGINE_BIN") {
            return PathBuf::from(p);
        }
        let exe = std::env::current_exe().expect("the test executable's path");
        let profile_dir = exe.parent().and_then(Path::parent).expect("<target>/<profile>/deps/<test>").to_path_buf();
        let target_dir = profile_dir.parent().expect("<target>/<profile>");
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => "dev".to_string(),
            Some(other) => other.to_string(),
            None => panic!("no profile directory above {}", exe.display()),
        };
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
        let status = Command::new(env!("CARGO"))
            // With cluster mode compiled in (the tests crate enables it for the library too, so the
            // workspace builds one envoy-engine either way); it stays off unless --cluster is given.
            .args(["build", "--quiet", "-p", "envoy-engine", "--bin", "envoy-engine", "--features", "cluster"])
            .args(["--profile", &profile])
            .arg("--manifest-path")
            .arg(&manifest)
            .arg("--target-dir")
            .arg(target_dir)
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building envoy-engine failed: {status}");
        let bin = profile_dir.join(format!("envoy-engine{}", std::env::consts::EXE_SUFFIX));
        assert!(bin.is_file(), "{} was not built", bin.display());
        bin
    })
}

/// A running `envoy-engine serve`. Dropping it kills the process.
pub struct EngineProcess {
    child: Child,
    addr: SocketAddr,
    logs: Arc<Mutex<VecDeque<String>>>,
}

impl EngineProcess {
    /// Starts `envoy-engine serve --listen 127.0.0.1:0 --data-dir DIR ARGS…` and waits for its address.
    pub fn start(data_dir: &Path, args: &[&str]) -> anyhow::Result<EngineProcess> {
        Self::start_listening("127.0.0.1:0".parse()?, data_dir, args)
    }

    /// Starts `envoy-engine serve --listen LISTEN --data-dir DIR ARGS…` (a cluster node must know
    /// its port before it starts, to advertise it) and waits for its address.
    pub fn start_listening(listen: SocketAddr, data_dir: &Path, args: &[&str]) -> anyhow::Result<EngineProcess> {
        let mut child = Command::new(engine_binary())
            .args(["serve", "--listen", &listen.to_string(), "--data-dir"])
            .arg(data_dir)
            .args(args)
            .env("RUST_LOG", "info")
            .env_remove("ENVOY_AUTH_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child.stderr.take().expect("piped stderr");
        let logs = Arc::new(Mutex::new(VecDeque::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        {
            let logs = logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Some(i) = line.find("local_addr=") {
                        let addr = line[i + "local_addr=".len()..].split_whitespace().next().unwrap_or("").to_string();
                        let _ = addr_tx.send(addr);
                    }
                    let mut logs = logs.lock().unwrap();
                    if logs.len() == LOG_TAIL {
                        logs.pop_front();
                    }
                    logs.push_back(line);
                }
            });
        }
        let mut engine = EngineProcess { child, addr: "0.0.0.0:0".parse().unwrap(), logs };
        // A guard against a hang, not a measurement: a healthy start takes well under a second.
        match addr_rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => {
                engine.addr = addr.parse()?;
                Ok(engine)
            }
            Err(_) => {
                let status = engine.child.try_wait()?;
                anyhow::bail!(
                    "the engine logged no address (exit: {status:?}); logs:\n{}",
                    engine.log_tail().join("\n")
                )
            }
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL (no drain, no checkpoint, no flush), then reaps the process.
    pub fn kill(&mut self) -> std::io::Result<ExitStatus> {
        self.child.kill()?;
        self.child.wait()
    }

    /// SIGTERM (the engine drains; in cluster mode it first moves its actors away).
    pub fn terminate(&self) -> std::io::Result<()> {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status()?;
        if status.success() {
            Ok(())
        } else {
            Err(std::io::Error::other(format!("kill -TERM failed: {status}")))
        }
    }

    /// Waits for the process to exit on its own, up to `limit` (a guard against hangs).
    pub fn wait_exit(&mut self, limit: Duration) -> std::io::Result<Option<ExitStatus>> {
        let end = std::time::Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait()? {
                return Ok(Some(s));
            }
            if std::time::Instant::now() >= end {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last lines the engine logged.
    pub fn log_tail(&self) -> Vec<String> {
        self.logs.lock().unwrap().iter().cloned().collect()
    }
}

impl Drop for EngineProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
