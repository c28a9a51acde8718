//! The accept loop: TCP connections in, the axum router served over HTTP/1.1.
//!
//! Ours rather than `axum::serve` because the network is hostile before auth:
//!
//! - **Header-read timeout.** hyper closes a connection whose request head is
//!   not complete within `header_read_timeout` (a fresh connection, or an idle
//!   keep-alive one waiting for its next request), so trickled or silent
//!   requests cannot pin sockets.
//! - **Connection cap.** At most `max_connections` sockets are served at once.
//!   The permit travels inside the socket ([`Counted`]), so it is held by an
//!   upgraded WebSocket for its whole life, not just by the HTTP exchange.
//! - **Graceful shutdown.** On shutdown the loop stops accepting and tells each
//!   HTTP connection to finish its current request and close; upgraded
//!   WebSockets are closed by the engine's own drain (`drain::shutdown_engine`).

use crate::shutdown::Shutdown;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

/// After an accept error that is not about one peer (e.g. EMFILE: out of
/// descriptors), wait this long before accepting again instead of spinning.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(200);
/// Over the cap, at most this many refusals are in progress at once (each holds a
/// socket for up to [`REFUSAL_LINGER`]); beyond that, excess sockets are just closed.
const MAX_REFUSALS_IN_FLIGHT: usize = 64;
/// How long a refused socket is kept to deliver its 503 and drain the peer's
/// request (closing with unread input would reset the connection and could
/// destroy the 503 before the peer reads it).
const REFUSAL_LINGER: Duration = Duration::from_secs(1);
/// On shutdown, how long HTTP connections get to finish their current request.
const HTTP_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The body of the answer to a connection over the cap.
const OVERLOADED_BODY: &str = "too many connections: the engine is at its --max-connections cap; retry later\n";

/// The whole answer to a connection over the cap (503, `Connection: close`).
fn overloaded_response() -> String {
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\
         Retry-After: 1\r\nContent-Length: {}\r\n\r\n{OVERLOADED_BODY}",
        OVERLOADED_BODY.len()
    )
}

/// Settings of the accept loop (from `Config`).
#[derive(Clone)]
pub struct ListenerSettings {
    /// TLS for every connection (`--tls-cert`/`--tls-key`); None: plain TCP.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// See `Config::header_read_timeout`.
    pub header_read_timeout: Duration,
    /// See `Config::max_connections`.
    pub max_connections: usize,
}

/// Accepts and serves until `shutdown` fires, then lets HTTP connections finish.
pub async fn serve(listener: TcpListener, router: Router, settings: ListenerSettings, mut shutdown: Shutdown) {
    let permits = Arc::new(Semaphore::new(settings.max_connections));
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS_IN_FLIGHT));
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.recv() => break,
            // Reap finished connection tasks so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) if is_peer_error(&e) => continue,
            Err(e) => {
                tracing::error!(error = %e, "accept failed; pausing before accepting again");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                continue;
            }
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
        }
        // Over the cap we answer a short 503 rather than stop accepting: a client
        // left in the kernel's backlog sees only a hang (and, once the backlog is
        // full, SYN drops), while a 503 says what happened and when to retry. The
        // refusal itself is bounded (MAX_REFUSALS_IN_FLIGHT sockets, each for at
        // most REFUSAL_LINGER), so descriptors stay bounded too.
        match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                connections.spawn(serve_tls_or_plain(
                    Counted { stream, _permit: permit },
                    router.clone(),
                    settings.clone(),
                    shutdown.clone(),
                ));
            }
            Err(_) => {
                tracing::warn!(%peer, max_connections = settings.max_connections, "connection refused: at the cap");
                refuse(stream, &refusals);
            }
        }
    }
    drop(listener);
    let finished =
        tokio::time::timeout(HTTP_SHUTDOWN_GRACE, async { while connections.join_next().await.is_some() {} }).await;
    if finished.is_err() {
        tracing::warn!(remaining = connections.len(), "HTTP connections did not finish in time; closing them");
        connections.abort_all();
    }
}

/// Runs the TLS handshake first when TLS is configured (bounded by the header-read
/// timeout, so a peer that never finishes it holds nothing), then serves.
async fn serve_tls_or_plain(stream: Counted, router: Router, settings: ListenerSettings, shutdown: Shutdown) {
    match settings.tls.clone() {
        None => serve_connection(stream, router, settings, shutdown).await,
        Some(acceptor) => match tokio::time::timeout(settings.header_read_timeout, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => serve_connection(tls, router, settings, shutdown).await,
            Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
            Err(_) => tracing::debug!("TLS handshake did not finish within the header-read timeout"),
        },
    }
}

/// Serves one connection (HTTP/1.1 with upgrades) until it closes or is upgraded.
async fn serve_connection<S>(stream: S, router: Router, settings: ListenerSettings, mut shutdown: Shutdown)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(router);
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(settings.header_read_timeout);
    let conn = builder.serve_connection(TokioIo::new(stream), service).with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.recv() => {
            // Finish the request in progress (if any), then close.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        // Header timeouts, resets and malformed requests land here; none is the engine's fault.
        tracing::debug!(error = %e, "HTTP connection ended with an error");
    }
}

/// Answers a connection over the cap with a 503 and closes it, without blocking the loop.
fn refuse(stream: TcpStream, refusals: &Arc<Semaphore>) {
    let Ok(permit) = refusals.clone().try_acquire_owned() else {
        // Too many refusals already in progress: just close.
        return;
    };
    tokio::spawn(async move {
        let _permit = permit;
        let mut stream = stream;
        let _ = tokio::time::timeout(REFUSAL_LINGER, async {
            stream.write_all(overloaded_response().as_bytes()).await?;
            stream.shutdown().await?;
            let mut discard = [0u8; 1024];
            while stream.read(&mut discard).await? != 0 {}
            Ok::<(), io::Error>(())
        })
        .await;
    });
}

/// Errors about one peer (it went away while queued): nothing to wait for.
fn is_peer_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

/// A served socket holding its connection-cap permit: the permit is released when
/// the socket is dropped, whether by hyper or, after an upgrade, by the WebSocket.
struct Counted {
    /// The socket itself.
    stream: TcpStream,
    /// One of `max_connections`; returned on drop.
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for Counted {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overloaded_response_is_well_formed() {
        let text = overloaded_response();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let len: usize =
            head.lines().find_map(|l| l.strip_prefix("Content-Length: ")).and_then(|v| v.parse().ok()).unwrap();
        assert_eq!(body.len(), len);
        assert!(head.starts_with("HTTP/1.1 503 "));
    }
}
