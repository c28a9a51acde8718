//! The outgoing side of one connection.
//!
//! Everything sent to an envoy goes through an unbounded queue (`Outbox`) into
//! one writer task, which encodes every queued frame at the connection's
//! version, feeds them all to the socket and flushes ONCE per batch: flushing
//! after every reply halves pipelined throughput (see shared perf facts).

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use envoy_protocol::{encode_to_envoy, ToEnvoy};
use futures_util::stream::SplitSink;
use futures_util::SinkExt;
use tokio::sync::mpsc;

/// What can be queued for the writer.
#[derive(Debug)]
pub enum Outbound {
    /// One message.
    Msg(ToEnvoy),
    /// Several messages produced together (one batch of SQL results).
    Batch(Vec<ToEnvoy>),
    /// Close the socket with a code and reason after what is already queued.
    Close(u16, String),
}

/// Sending side of a connection's writer queue. Sends to a finished writer fail silently:
/// answers to a dead socket go nowhere.
#[derive(Debug, Clone)]
pub struct Outbox {
    /// The queue; unbounded because admission already bounds pending requests.
    tx: mpsc::UnboundedSender<Outbound>,
}

impl Outbox {
    pub fn new() -> (Self, mpsc::UnboundedReceiver<Outbound>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx }, rx)
    }

    pub fn send(&self, msg: ToEnvoy) {
        let _ = self.tx.send(Outbound::Msg(msg));
    }

    pub fn send_batch(&self, msgs: Vec<ToEnvoy>) {
        if !msgs.is_empty() {
            let _ = self.tx.send(Outbound::Batch(msgs));
        }
    }

    pub fn close(&self, code: u16, reason: impl Into<String>) {
        let _ = self.tx.send(Outbound::Close(code, reason.into()));
    }

    /// Whether the writer is gone (socket closed).
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// Most queued items taken before a flush, so one flood cannot delay a flush forever.
const MAX_ITEMS_PER_FLUSH: usize = 1024;

/// Runs until the queue closes, a Close is written, or the socket fails.
pub async fn run(mut sink: SplitSink<WebSocket, Message>, mut rx: mpsc::UnboundedReceiver<Outbound>, version: u16) {
    while let Some(first) = rx.recv().await {
        let mut close = None;
        let mut item = Some(first);
        let mut taken = 0;
        while let Some(it) = item.take() {
            taken += 1;
            let result = match it {
                Outbound::Msg(m) => feed(&mut sink, &m, version).await,
                Outbound::Batch(ms) => {
                    let mut r = Ok(());
                    for m in &ms {
                        r = feed(&mut sink, m, version).await;
                        if r.is_err() {
                            break;
                        }
                    }
                    r
                }
                Outbound::Close(code, reason) => {
                    close = Some((code, reason));
                    Ok(())
                }
            };
            if result.is_err() {
                return;
            }
            if close.is_some() || taken >= MAX_ITEMS_PER_FLUSH {
                break;
            }
            item = rx.try_recv().ok();
        }
        if sink.flush().await.is_err() {
            return;
        }
        if let Some((code, reason)) = close {
            let frame = CloseFrame { code, reason: truncate_reason(&reason).into() };
            let _ = sink.send(Message::Close(Some(frame))).await;
            let _ = sink.close().await;
            return;
        }
    }
    let _ = sink.close().await;
}

async fn feed(sink: &mut SplitSink<WebSocket, Message>, msg: &ToEnvoy, version: u16) -> Result<(), axum::Error> {
    match encode_to_envoy(msg, version) {
        Ok(bytes) => sink.feed(Message::Binary(bytes.into())).await,
        Err(e) => {
            // A message this version cannot carry is dropped with a log; the peer
            // cannot have asked for it (requests are decoded at the same version).
            tracing::warn!(error = %e, version, "dropping a message the connection's version cannot carry");
            Ok(())
        }
    }
}

/// Close reasons are limited to 123 bytes by RFC 6455.
fn truncate_reason(reason: &str) -> String {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_string()
}
