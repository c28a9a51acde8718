//! A TCP proxy between client and engine that a test can break on purpose:
//! `kill` cuts every live link (both ends see the TCP close), `freeze` makes
//! every live link silent for good without closing anything (a half-open link;
//! new links work), `refuse` closes new connections at once.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A running proxy.
pub struct Proxy {
    addr: SocketAddr,
    /// Bumped by `kill`: every link started under an older epoch closes.
    epoch: watch::Sender<u64>,
    /// Bumped by `freeze`: every link started under an older value goes silent.
    frozen: Arc<AtomicU64>,
    /// While set, new connections are closed at once.
    refusing: Arc<AtomicBool>,
    /// Connections accepted so far.
    accepted: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on 127.0.0.1:0 and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().unwrap();
        let (epoch, epoch_rx) = watch::channel(0u64);
        let frozen = Arc::new(AtomicU64::new(0));
        let refusing = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU64::new(0));
        let (f, r, a) = (frozen.clone(), refusing.clone(), accepted.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((down, _)) = listener.accept().await else { return };
                if r.load(Ordering::SeqCst) {
                    drop(down);
                    continue;
                }
                a.fetch_add(1, Ordering::SeqCst);
                let Ok(up) = TcpStream::connect(upstream).await else { continue };
                let _ = down.set_nodelay(true);
                let _ = up.set_nodelay(true);
                let mut rx = epoch_rx.clone();
                let started = *rx.borrow_and_update();
                let frozen = f.clone();
                let freeze_epoch = frozen.load(Ordering::SeqCst);
                tokio::spawn(async move {
                    let (dr, dw) = down.into_split();
                    let (ur, uw) = up.into_split();
                    let a = pump(dr, uw, frozen.clone(), freeze_epoch);
                    let b = pump(ur, dw, frozen, freeze_epoch);
                    tokio::select! {
                        _ = a => {}
                        _ = b => {}
                        _ = async { while rx.changed().await.is_ok() { if *rx.borrow() != started { break } } } => {}
                    }
                    // Dropping both halves closes both TCP connections.
                });
            }
        });
        Proxy { addr, epoch, frozen, refusing, accepted, task }
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://ADDR` of the proxy.
    pub fn endpoint(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Cuts every live link.
    pub fn kill(&self) {
        self.epoch.send_modify(|e| *e += 1);
    }

    /// Every live link stops forwarding for good, closing nothing (half-open).
    /// Links opened afterwards forward normally.
    pub fn freeze(&self) {
        self.frozen.fetch_add(1, Ordering::SeqCst);
    }

    /// Closes new connections at once (true) or accepts them again (false).
    pub fn refuse(&self, refusing: bool) {
        self.refusing.store(refusing, Ordering::SeqCst);
    }

    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.kill();
    }
}

/// Copies bytes one way until EOF; once `freeze` was called after this link
/// started, it keeps reading (so nothing blocks or closes) and delivers nothing.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicU64>,
    epoch: u64,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if frozen.load(Ordering::SeqCst) == epoch && to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}
