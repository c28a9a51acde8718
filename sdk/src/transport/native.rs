//! Native transport: tokio + tokio-tungstenite.
//!
//! The socket is split: a writer task takes every frame already queued, feeds
//! them all and flushes once (per-frame flushing halves throughput); the read
//! half is a stream the driver polls directly. TCP_NODELAY is on.

use crate::core::ConnectFailure;
use crate::runtime::{BoxFuture, FrameSender, Incoming, Runtime, Socket};
use futures_util::{SinkExt, StreamExt};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// How long a closing writer may spend sending the close frame.
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// The tokio runtime (must be called from inside one).
#[derive(Clone, Debug)]
pub struct TokioRuntime {
    /// Origin of `now_ms`.
    start: Instant,
}

impl TokioRuntime {
    pub fn new() -> Self {
        TokioRuntime { start: Instant::now() }
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
        Box::pin(connect(url, protocols))
    }
}

async fn connect(url: String, protocols: Vec<String>) -> Result<Socket, ConnectFailure> {
    let mut request = url.as_str().into_client_request().map_err(|e| ConnectFailure::Other(e.to_string()))?;
    let offer = HeaderValue::from_str(&protocols.join(", ")).map_err(|e| ConnectFailure::Other(e.to_string()))?;
    request.headers_mut().insert("sec-websocket-protocol", offer);
    let (ws, response) = match tokio_tungstenite::connect_async_with_config(request, None, true).await {
        Ok(ok) => ok,
        Err(WsError::Http(resp)) => {
            let status = resp.status().as_u16();
            return Err(match status {
                envoy_protocol::close::NO_COMMON_VERSION_STATUS => ConnectFailure::NoCommonVersion {
                    engine_versions: resp
                        .headers()
                        .get(envoy_protocol::close::VERSIONS_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string),
                },
                401 | 403 => ConnectFailure::Unauthorized { status },
                _ => ConnectFailure::Other(format!("HTTP {status} on upgrade")),
            });
        }
        Err(e) => return Err(ConnectFailure::Other(e.to_string())),
    };
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
    Ok(Socket { protocol, sender: Box::new(Sender { tx }), incoming: Box::pin(incoming) })
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
