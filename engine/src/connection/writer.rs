//! The outgoing side of one connection.
//!
//! Everything sent to an envoy goes through a queue (`Outbox`) into one writer
//! task, which encodes every queued frame at the connection's version, feeds
//! them all to the socket and flushes ONCE per batch: flushing after every reply
//! halves pipelined throughput (see shared perf facts).
//!
//! The queue is a channel without a length bound, but what it holds is bounded
//! in bytes: every item carries a [`Charge`] on the connection's [`ConnBudget`]
//! (results were charged while built, everything else is charged here when
//! queued), given back once the writer has flushed the item. When the budget is
//! full, results are refused with OVERLOADED and the read loop stops reading
//! the socket, so a peer that does not read cannot make the engine buffer.

use crate::budget::{Charge, ConnBudget};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use envoy_protocol::{encode_to_envoy, ToEnvoy};
use futures_util::stream::SplitSink;
use futures_util::SinkExt;
use std::sync::Arc;
use tokio::sync::mpsc;

/// What can be queued for the writer.
#[derive(Debug)]
pub enum Outbound {
    /// One message and the bytes it holds on the connection's budget.
    Msg(ToEnvoy, Charge),
    /// Several messages produced together (one batch of SQL results) and what they hold.
    Batch(Vec<ToEnvoy>, Charge),
    /// Close the socket with a code and reason after what is already queued.
    Close(u16, String),
}

/// Sending side of a connection's writer queue. Sends to a finished writer fail silently:
/// answers to a dead socket go nowhere.
#[derive(Debug, Clone)]
pub struct Outbox {
    /// The queue; bounded in bytes by `budget`, not in items.
    tx: mpsc::UnboundedSender<Outbound>,
    /// Bytes queued toward this socket (see the module doc).
    budget: Arc<ConnBudget>,
    /// Where error answers are counted as they are queued (every answer passes here).
    metrics: Arc<crate::metrics::Metrics>,
}

impl Outbox {
    pub fn new(
        budget: Arc<ConnBudget>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> (Self, mpsc::UnboundedReceiver<Outbound>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx, budget, metrics }, rx)
    }

    /// The connection's budget of queued bytes.
    pub fn budget(&self) -> &Arc<ConnBudget> {
        &self.budget
    }

    /// Queues a message that carries no built result (control messages, errors,
    /// rejections): charged by its estimated size, never refused.
    pub fn send(&self, msg: ToEnvoy) {
        self.metrics.count_answer(&msg);
        let charge = Charge::force(&self.budget, crate::budget::small_size(&msg));
        let _ = self.tx.send(Outbound::Msg(msg, charge));
    }

    /// Queues answers built together with what they hold (a failed send drops
    /// them, and so gives their charge back).
    pub fn send_batch(&self, msgs: Vec<ToEnvoy>, charge: Charge) {
        if !msgs.is_empty() {
            for m in &msgs {
                self.metrics.count_answer(m);
            }
            let _ = self.tx.send(Outbound::Batch(msgs, charge));
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
pub async fn run(
    mut sink: SplitSink<WebSocket, Message>,
    mut rx: mpsc::UnboundedReceiver<Outbound>,
    version: u16,
    metrics: Arc<crate::metrics::Metrics>,
) {
    // Charges of the items fed since the last flush: given back once flushed.
    let mut fed: Vec<Charge> = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut close = None;
        let mut item = Some(first);
        let mut taken = 0;
        while let Some(it) = item.take() {
            taken += 1;
            let result = match it {
                Outbound::Msg(m, charge) => {
                    fed.push(charge);
                    feed(&mut sink, &m, version, &metrics).await
                }
                Outbound::Batch(ms, charge) => {
                    fed.push(charge);
                    let mut r = Ok(());
                    for m in &ms {
                        r = feed(&mut sink, m, version, &metrics).await;
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
        fed.clear();
        if let Some((code, reason)) = close {
            let frame = CloseFrame { code, reason: truncate_reason(&reason).into() };
            let _ = sink.send(Message::Close(Some(frame))).await;
            let _ = sink.close().await;
            return;
        }
    }
    let _ = sink.close().await;
}

async fn feed(
    sink: &mut SplitSink<WebSocket, Message>,
    msg: &ToEnvoy,
    version: u16,
    metrics: &crate::metrics::Metrics,
) -> Result<(), axum::Error> {
    match encode_to_envoy(msg, version) {
        Ok(bytes) => {
            metrics.frame_out(bytes.len());
            sink.feed(Message::Binary(bytes.into())).await
        }
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
