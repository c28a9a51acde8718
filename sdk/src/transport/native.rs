//! Native transport: tokio + tokio-tungstenite.
//!
//! The socket is split: a writer task takes every frame already queued, feeds
//! them all and flushes once (per-frame flushing halves throughput); the read
//! half is a stream the driver polls directly. TCP_NODELAY is on.

use crate::core::ConnectFailure;
use crate::runtime::{BoxFuture, FrameSender, Incoming, Runtime, Socket};
use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_rustls::rustls;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// How long a closing writer may spend sending the close frame.
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// The tokio runtime (must be called from inside one).
#[derive(Clone)]
pub struct TokioRuntime {
    /// Origin of `now_ms`.
    start: Instant,
    /// TLS for `wss://`: the Web PKI roots plus any configured extra roots.
    tls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for TokioRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokioRuntime").finish_non_exhaustive()
    }
}

impl TokioRuntime {
    pub fn new() -> Self {
        Self::with_root_ca_pem(None).unwrap_or_else(|_| unreachable!("no extra roots to parse"))
    }

    /// A runtime whose `wss://` trusts the Web PKI roots and the certificates in `pem`.
    pub fn with_root_ca_pem(pem: Option<&str>) -> Result<Self, String> {
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        if let Some(pem) = pem {
            let mut added = 0;
            for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|e| format!("tls_root_ca_pem: {e}"))?;
                roots.add(cert).map_err(|e| format!("tls_root_ca_pem: {e}"))?;
                added += 1;
            }
            if added == 0 {
                return Err("tls_root_ca_pem holds no certificate".into());
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(TokioRuntime { start: Instant::now(), tls: Arc::new(tls) })
    }
}

impl Default for TokioRuntime {
    fn default() -> Self {
        Self::new()
    }
}

impl Runtime for TokioRuntime {
    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn seed(&self) -> u64 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        // Mix in an address so two clients created in the same nanosecond differ.
        let local = 0u8;
        nanos ^ ((&local as *const u8 as u64).rotate_left(32)) ^ u64::from(std::process::id())
    }

    fn sleep(&self, ms: u64) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(Duration::from_millis(ms)))
    }

    fn spawn(&self, fut: BoxFuture<'static, ()>) {
        tokio::spawn(fut);
    }

    fn connect(&self, url: String, protocols: Vec<String>) -> BoxFuture<'static, Result<Socket, ConnectFailure>> {
        Box::pin(connect(url, protocols, self.tls.clone()))
    }
}

/// A failed TLS handshake: a refused certificate is fatal (retrying cannot change
/// what this client trusts); anything else (a reset, a timeout) is retried.
fn tls_failure(host: &str, port: u16, e: std::io::Error) -> ConnectFailure {
    let certificate = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()).is_some_and(|r| {
        matches!(
            r,
            rustls::Error::InvalidCertificate(_)
                | rustls::Error::NoCertificatesPresented
                | rustls::Error::UnsupportedNameType
        )
    });
    let message = format!("TLS with {host}:{port}: {e}");
    if certificate {
        ConnectFailure::CertificateRejected(message)
    } else {
        ConnectFailure::Other(message)
    }
}

async fn connect(
    url: String,
    protocols: Vec<String>,
    tls: Arc<rustls::ClientConfig>,
) -> Result<Socket, ConnectFailure> {
    let mut request = url.as_str().into_client_request().map_err(|e| ConnectFailure::Other(e.to_string()))?;
    let offer = HeaderValue::from_str(&protocols.join(", ")).map_err(|e| ConnectFailure::Other(e.to_string()))?;
    request.headers_mut().insert("sec-websocket-protocol", offer);
    if request.uri().scheme_str() == Some("wss") {
        // TLS by hand (rustls), then the WebSocket handshake over it.
        let host = request.uri().host().unwrap_or_default().trim_matches(|c| c == '[' || c == ']').to_string();
        let port = request.uri().port_u16().unwrap_or(443);
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| ConnectFailure::Other(format!("connecting to {host}:{port}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|e| ConnectFailure::Other(format!("TLS server name {host:?}: {e}")))?;
        let stream =
            tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await.map_err(|e| tls_failure(&host, port, e))?;
        return match tokio_tungstenite::client_async_with_config(request, stream, None).await {
            Ok((ws, response)) => Ok(socket(ws, &response)),
            Err(e) => Err(upgrade_failure(e)),
        };
    }
    match tokio_tungstenite::connect_async_with_config(request, None, true).await {
        Ok((ws, response)) => Ok(socket(ws, &response)),
        Err(e) => Err(upgrade_failure(e)),
    }
}

/// A failed upgrade as the core's typed failure.
fn upgrade_failure(e: WsError) -> ConnectFailure {
    match e {
        WsError::Http(resp) => {
            let status = resp.status().as_u16();
            match status {
                envoy_protocol::close::NO_COMMON_VERSION_STATUS => ConnectFailure::NoCommonVersion {
                    engine_versions: resp
                        .headers()
                        .get(envoy_protocol::close::VERSIONS_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string),
                },
                401 | 403 => ConnectFailure::Unauthorized { status },
                _ => ConnectFailure::Other(format!("HTTP {status} on upgrade")),
            }
        }
        e => ConnectFailure::Other(e.to_string()),
    }
}

/// The socket over an upgraded WebSocket (plain or TLS).
fn socket<S>(
    ws: tokio_tungstenite::WebSocketStream<S>,
    response: &tokio_tungstenite::tungstenite::handshake::client::Response,
) -> Socket
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let protocol =
        response.headers().get("sec-websocket-protocol").and_then(|v| v.to_str().ok()).map(|s| s.trim().to_string());
    let (mut sink, stream) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Out>();
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut next = Some(first);
            let mut closing = None;
            // Feed everything already queued, then flush once.
            while let Some(out) = next.take() {
                match out {
                    Out::Frames(frames) => {
                        for f in frames {
                            if sink.feed(Message::Binary(f.into())).await.is_err() {
                                return;
                            }
                        }
                    }
                    Out::Close(code, reason) => {
                        closing = Some((code, reason));
                        break;
                    }
                }
                next = rx.try_recv().ok();
            }
            if let Some((code, reason)) = closing {
                let frame = CloseFrame { code: CloseCode::from(code), reason: reason.into() };
                let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, async {
                    let _ = sink.feed(Message::Close(Some(frame))).await;
                    let _ = sink.close().await;
                })
                .await;
                return;
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });
    let incoming = stream.filter_map(|m| async move {
        match m {
            Ok(Message::Binary(b)) => Some(Incoming::Frame(b.into())),
            Ok(Message::Close(frame)) => Some(match frame {
                Some(f) => Incoming::Closed { code: Some(u16::from(f.code)), reason: f.reason.to_string() },
                None => Incoming::Closed { code: None, reason: "closed without a code".into() },
            }),
            // Text is not part of the protocol; WebSocket pings are answered by tungstenite.
            Ok(Message::Text(_)) | Ok(Message::Ping(_)) | Ok(Message::Pong(_)) | Ok(Message::Frame(_)) => None,
            Err(e) => Some(Incoming::Closed { code: None, reason: e.to_string() }),
        }
    });
    Socket { protocol, sender: Box::new(Sender { tx }), incoming: Box::pin(incoming) }
}

enum Out {
    Frames(Vec<Vec<u8>>),
    Close(u16, String),
}

struct Sender {
    tx: mpsc::UnboundedSender<Out>,
}

impl FrameSender for Sender {
    fn send(&mut self, frames: Vec<Vec<u8>>) {
        let _ = self.tx.send(Out::Frames(frames));
    }

    fn close(&mut self, code: u16, reason: &str) {
        let _ = self.tx.send(Out::Close(code, reason.to_string()));
    }
}
