//! The processes a run starts (engines, the echo server), what `/proc` says
//! about them, and the machine description.

use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free port on loopback: bound, read, released. Another process could take
/// it in between; on a benchmark box that race is harmless (the start fails loudly).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A child process killed when dropped, so a failing run leaves nothing behind.
pub struct Proc {
    /// The running child (engine or echo server).
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its stderr goes here; shown when it fails to start.
    log: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Starts `cmd` (which must listen on `addr`) and waits until `addr` accepts connections.
    pub fn spawn(label: &str, mut cmd: Command, addr: SocketAddr, log: PathBuf) -> Result<Proc> {
        let err = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(err);
        let child = cmd.spawn().with_context(|| format!("starting {label}: {cmd:?}"))?;
        let mut p = Proc { child, addr, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = p.child.try_wait()? {
                bail!("{label} exited at start ({status}):\n{}", p.log_text());
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(p);
            }
            if Instant::now() > deadline {
                bail!("{label} not listening on {addr} after 30 s:\n{}", p.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Resident memory and open descriptors now.
    pub fn usage(&self) -> Usage {
        usage(self.pid())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the engine was started with, recorded in the JSON.
#[derive(Debug, Clone, Serialize)]
pub struct EngineSettings {
    /// `fsync` or `os` (`--durability`), as `/health` reported it.
    pub durability: String,
    /// `--idle-db-close-ms`, when not the default.
    pub idle_db_close_ms: Option<u64>,
    /// `--max-actors-per-connection`, when not the default.
    pub max_actors_per_connection: Option<u32>,
}

/// Starts `envoy-engine serve` on a free loopback port with its own data directory.
pub fn start_engine(
    bin: &Path,
    data: &Path,
    label: &str,
    durability: &str,
    extra: &[String],
) -> Result<(Proc, EngineSettings)> {
    let port = free_port()?;
    let dir = data.join(label);
    std::fs::create_dir_all(&dir)?;
    let mut cmd = Command::new(bin);
    cmd.arg("serve")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--durability")
        .arg(durability)
        .args(extra)
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()));
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let p = Proc::spawn(label, cmd, addr, dir.join("engine.log"))?;
    let health = http_get(addr, "/health").with_context(|| format!("{label}: GET /health"))?;
    let v: serde_json::Value =
        serde_json::from_str(&health).with_context(|| format!("{label}: /health said {health:?}"))?;
    let reported = v["durability"].as_str().unwrap_or("?").to_string();
    if reported != durability {
        bail!("{label}: asked for --durability {durability}, /health reports {reported:?}");
    }
    let flag =
        |name: &str| extra.iter().position(|a| a == name).and_then(|i| extra.get(i + 1)).and_then(|v| v.parse().ok());
    let settings = EngineSettings {
        durability: reported,
        idle_db_close_ms: flag("--idle-db-close-ms"),
        max_actors_per_connection: flag("--max-actors-per-connection").map(|v: u64| v as u32),
    };
    Ok((p, settings))
}

/// Starts this very binary as the echo server (`envoy-bench echo-server`).
pub fn start_echo(data: &Path) -> Result<Proc> {
    let port = free_port()?;
    let me = std::env::current_exe()?;
    let mut cmd = Command::new(me);
    cmd.arg("echo-server").arg("--listen").arg(format!("127.0.0.1:{port}"));
    std::fs::create_dir_all(data)?;
    Proc::spawn("echo server", cmd, ([127, 0, 0, 1], port).into(), data.join("echo.log"))
}

/// A minimal HTTP/1.1 GET (the admin API), so no HTTP client is needed.
fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let (head, body) = out.split_once("\r\n\r\n").context("no HTTP header end")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("{}", head.lines().next().unwrap_or(""));
    }
    // The admin API answers small JSON bodies; a chunked one is a single chunk.
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        let mut lines = body.lines();
        lines.next();
        return Ok(lines.next().unwrap_or("").to_string());
    }
    Ok(body.to_string())
}

/// A process's resident memory and descriptors at one moment.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Usage {
    /// `VmRSS` from /proc/PID/status, bytes.
    pub rss_bytes: u64,
    /// `VmHWM` (the highest RSS since start), bytes: catches peaks between samples.
    pub rss_peak_bytes: u64,
    /// Entries of /proc/PID/fd.
    pub fds: u64,
}

pub fn usage(pid: u32) -> Usage {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count() as u64).unwrap_or(0);
    Usage { rss_bytes: kb("VmRSS:"), rss_peak_bytes: kb("VmHWM:"), fds }
}

/// The machine a run happened on (BENCHMARKS.md quotes it).
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Online CPUs (`nproc`).
    pub nproc: usize,
    /// First `model name` of /proc/cpuinfo.
    pub cpu_model: String,
    /// `uname -r`.
    pub kernel: String,
    /// Device, filesystem and rotational flag of the data directory's mount.
    pub disk: String,
    /// MemTotal of /proc/meminfo, MiB.
    pub mem_mib: u64,
}

pub fn machine(data: &Path) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
    let mem_mib = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        / 1024;
    Machine {
        nproc: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        cpu_model,
        kernel,
        disk: disk_of(data),
        mem_mib,
    }
}

/// The mount holding `path` (longest matching mount point in /proc/mounts).
fn disk_of(path: &Path) -> String {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let best = mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3 && path.starts_with(f[1])).then(|| (f[0].to_string(), f[1].to_string(), f[2].to_string()))
        })
        .max_by_key(|(_, mp, _)| mp.len());
    let Some((dev, mp, fs)) = best else {
        return "unknown".into();
    };
    let name = dev.rsplit('/').next().unwrap_or("").to_string();
    let rot = std::fs::read_to_string(format!("/sys/block/{name}/queue/rotational")).ok();
    let kind = match rot.as_deref().map(str::trim) {
        Some("0") => ", non-rotational",
        Some("1") => ", rotational",
        _ => "",
    };
    let virt = if name.starts_with("vd") { " (virtio block device)" } else { "" };
    format!("{dev}{virt} {fs} mounted at {mp}{kind}")
}

/// `git rev-parse --short HEAD` (+ `-dirty` when the tree has changes), or `unknown`.
pub fn git_revision() -> String {
    let run = |args: &[&str]| Command::new("git").args(args).output().ok().filter(|o| o.status.success());
    let Some(rev) = run(&["rev-parse", "--short=12", "HEAD"]) else {
        return "unknown".into();
    };
    let rev = String::from_utf8_lossy(&rev.stdout).trim().to_string();
    let dirty = run(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|o| !o.stdout.is_empty());
    if dirty {
        format!("{rev}-dirty")
    } else {
        rev
    }
}
