//! L1: the transport's own limit. A WebSocket echo server (its own process,
//! tokio multi-thread runtime like the engine, TCP_NODELAY, one flush per batch
//! of replies) and the clients that time it. The echo client is deliberately
//! the leanest possible one (raw frames, no request table), so the figure is
//! the ceiling the engine and its client are compared against.

use crate::stats::{join_parallel, Round, Timer};
use anyhow::{Context, Result};
use futures_util::{FutureExt, SinkExt, StreamExt};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_tungstenite::WebSocketStream;

/// `envoy-bench echo-server`: echoes every binary frame until killed.
pub fn serve(listen: SocketAddr) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(listen).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            tokio::spawn(async move {
                let _ = stream.set_nodelay(true);
                if let Ok(ws) = tokio_tungstenite::accept_async(stream).await {
                    let _ = echo(ws).await;
                }
            });
        }
    })
}

/// Answers every frame already received before flushing once, as the engine does.
async fn echo(mut ws: WebSocketStream<TcpStream>) -> Result<()> {
    while let Some(m) = ws.next().await {
        let m = m?;
        if !m.is_binary() {
            continue;
        }
        ws.feed(m).await?;
        while let Some(Some(Ok(m))) = ws.next().now_or_never() {
            if m.is_binary() {
                ws.feed(m).await?;
            }
        }
        ws.flush().await?;
    }
    Ok(())
}

pub type Ws = WebSocketStream<TcpStream>;

pub async fn connect(addr: SocketAddr) -> Result<Ws> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/"), stream).await.context("echo handshake")?;
    Ok(ws)
}

async fn recv(ws: &mut Ws) -> Result<()> {
    loop {
        match ws.next().await.context("echo socket closed")?? {
            Message::Binary(_) => return Ok(()),
            _ => continue,
        }
    }
}

/// One frame at a time for `dur`.
pub async fn sequential(ws: &mut Ws, payload: &Bytes, dur: Duration) -> Result<Round> {
    let mut t = Timer::new();
    let end = Instant::now() + dur;
    while Instant::now() < end {
        let s = Instant::now();
        ws.send(Message::Binary(payload.clone())).await?;
        recv(ws).await?;
        t.record(s);
    }
    Ok(t.finish())
}

/// `window` frames in flight on one socket for `dur`: every reply already
/// here is taken, then the window is refilled with one flush.
pub async fn pipelined(ws: &mut Ws, payload: &Bytes, window: usize, dur: Duration) -> Result<Round> {
    let mut sent: VecDeque<Instant> = VecDeque::with_capacity(window);
    let mut lat = Vec::with_capacity(1 << 20);
    let start = Instant::now();
    let end = start + dur;
    for _ in 0..window {
        sent.push_back(Instant::now());
        ws.feed(Message::Binary(payload.clone())).await?;
    }
    ws.flush().await?;
    while !sent.is_empty() {
        recv(ws).await?;
        let mut got = 1;
        lat.push(sent.pop_front().expect("in flight").elapsed().as_nanos() as u64);
        while let Some(Some(m)) = ws.next().now_or_never() {
            if let Message::Binary(_) = m? {
                got += 1;
                lat.push(sent.pop_front().context("more echoes than frames")?.elapsed().as_nanos() as u64);
            }
        }
        if Instant::now() < end {
            for _ in 0..got {
                sent.push_back(Instant::now());
                ws.feed(Message::Binary(payload.clone())).await?;
            }
            ws.flush().await?;
        }
    }
    Ok(Round { ops: lat.len() as u64, elapsed: start.elapsed(), lat_ns: lat })
}

/// `sockets.len()` sockets, each one frame at a time, all for `dur`.
pub async fn many(sockets: &mut [Ws], payload: &Bytes, dur: Duration) -> Result<Round> {
    let parts = futures_util::future::try_join_all(sockets.iter_mut().map(|ws| sequential(ws, payload, dur))).await?;
    Ok(join_parallel(parts))
}
