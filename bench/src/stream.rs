//! `envoy-bench stream`: one v5 result stream of a large table, read by a raw
//! v5 client that grants credit steadily (it returns each chunk's bytes as
//! credit as soon as the chunk arrives, so `--credit-bytes` stay in flight).
//! Prints rows/s, MB/s and the engine's peak resident memory while streaming.
//!
//! The engine runs in its own process (release build, `--durability os` so the
//! fill is quick); its memory is read from `/proc/<engine pid>/status`: VmHWM
//! is reset (`/proc/<pid>/clear_refs` ← 5) after the table is filled and read
//! when the stream is done, so the peak is that of the stream alone, not of the
//! fill. Not part of the default suite: `scripts/bench.sh stream [--stream-bytes N]`.

use crate::procs;
use anyhow::{bail, Context, Result};
use clap::Parser;
use envoy_client::protocol::negotiation::{client_offer, parse_version_subprotocol};
use envoy_client::protocol::{
    decode_to_envoy, encode_to_engine, DecodeLimits, GetOrCreateActorResult, SqliteExecResult, SqliteFailure,
    SqliteStatement, SqliteStreamRequest, ToEngine, ToEngineGetOrCreateActor, ToEngineMetadata, ToEnginePong,
    ToEngineSqliteExec, ToEngineSqliteStreamCredit, ToEngineSqliteStreamOpen, ToEnvoy, Value,
};
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// The protocol version this bench speaks (result streams are v5).
const VERSION: u16 = 5;

/// Rows inserted per fill statement (one Exec each).
const FILL_ROWS_PER_EXEC: u64 = 50_000;

#[derive(Parser, Debug)]
#[command(name = "envoy-bench stream", about = "A v5 result stream of a large table: throughput and engine memory")]
pub struct StreamArgs {
    /// Bytes of BLOB payload in the streamed table (rows × --row-bytes); 1000000000 for the 1 GB run.
    #[arg(long, default_value_t = 8_000_000)]
    stream_bytes: u64,
    /// BLOB bytes per row.
    #[arg(long, default_value_t = 1000)]
    row_bytes: u64,
    /// Credit kept in flight (granted at open, then each chunk's bytes are granted back).
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    credit_bytes: u32,
    /// The engine binary; default: `envoy-engine` next to this binary.
    #[arg(long)]
    engine_bin: Option<PathBuf>,
    /// Scratch directory for the engine's data (emptied first, removed after).
    #[arg(long, default_value = "target/bench/stream-run")]
    data_dir: PathBuf,
    /// Also write the figures here as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// What one run measured.
#[derive(Debug, Serialize)]
struct StreamReport {
    /// Rows streamed.
    rows: u64,
    /// BLOB payload bytes streamed.
    payload_bytes: u64,
    /// Row bytes at their decoded size (what credit counts).
    row_bytes: u64,
    /// Bytes of the chunk frames received.
    wire_bytes: u64,
    /// Chunks received.
    chunks: u64,
    /// From the open to the done chunk.
    seconds: f64,
    rows_per_sec: f64,
    /// Payload MB (10^6 bytes) per second.
    payload_mb_per_sec: f64,
    /// Wire MB per second.
    wire_mb_per_sec: f64,
    /// The engine's VmRSS after the fill, before the stream (bytes).
    engine_rss_before: u64,
    /// The engine's VmHWM over the stream alone (reset after the fill), bytes.
    engine_rss_peak_streaming: u64,
    /// The engine's `stream_window_bytes` and the credit in flight, for reading the peak.
    stream_window_bytes: u32,
    credit_bytes: u32,
    /// Seconds the fill took.
    fill_seconds: f64,
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A minimal raw v5 envoy connection: send, and receive with pings answered.
struct Raw {
    /// The socket.
    ws: Ws,
    /// Decode limits from the engine's maxFrameBytes.
    limits: DecodeLimits,
    /// The next request id.
    next_id: u32,
    /// Bytes of the last frame received.
    last_len: usize,
}

impl Raw {
    async fn connect(addr: std::net::SocketAddr, envoy_key: &str) -> Result<(Raw, u32)> {
        let url =
            format!("ws://{addr}/envoys/connect?namespace=bench&envoy_key={envoy_key}&pool_name=default&version=1");
        let mut req = url.into_client_request()?;
        req.headers_mut().insert("sec-websocket-protocol", client_offer(VERSION, VERSION, None).join(", ").parse()?);
        let (ws, resp) = tokio_tungstenite::connect_async(req).await.context("upgrade")?;
        let proto = resp.headers().get("sec-websocket-protocol").context("no subprotocol")?.to_str()?.to_string();
        if parse_version_subprotocol(&proto) != Some(VERSION) {
            bail!("the engine did not accept protocol v{VERSION} ({proto})");
        }
        let mut raw = Raw { ws, limits: DecodeLimits::for_frame(64 * 1024 * 1024), next_id: 1, last_len: 0 };
        raw.send(&ToEngine::Metadata(ToEngineMetadata {
            envoy_key: envoy_key.into(),
            pool_name: "default".into(),
            version: 1,
            metadata: Default::default(),
            last_command_index: None,
        }))
        .await?;
        match raw.recv().await? {
            ToEnvoy::InitV5(init) => {
                raw.limits = DecodeLimits::for_frame(init.metadata.max_frame_bytes as usize);
                Ok((raw, init.metadata_v5.limits.stream_window_bytes))
            }
            other => bail!("expected InitV5, got {}", other.member_name()),
        }
    }

    async fn send(&mut self, msg: &ToEngine) -> Result<()> {
        self.ws.send(Message::Binary(encode_to_engine(msg, VERSION)?.into())).await?;
        Ok(())
    }

    fn rid(&mut self) -> u32 {
        self.next_id += 1;
        self.next_id
    }

    /// The next message that is not a ping (pings are answered).
    async fn recv(&mut self) -> Result<ToEnvoy> {
        loop {
            let m = self.ws.next().await.context("socket closed")??;
            let Message::Binary(b) = m else { continue };
            self.last_len = b.len();
            match decode_to_envoy(&b, VERSION, &self.limits)? {
                ToEnvoy::Ping(p) => self.send(&ToEngine::Pong(ToEnginePong { ts: p.ts })).await?,
                other => return Ok(other),
            }
        }
    }

    /// The next message that is not a ping or a command (commands are not acked: none matter here).
    async fn answer(&mut self) -> Result<ToEnvoy> {
        loop {
            match self.recv().await? {
                ToEnvoy::Commands(_) | ToEnvoy::AckEvents(_) => {}
                other => return Ok(other),
            }
        }
    }
}

/// Decoded size of a row, as the engine counts it against credit.
fn row_size(row: &[Value]) -> u64 {
    let value = |v: &Value| {
        std::mem::size_of::<Value>()
            + match v {
                Value::Text(s) => s.len(),
                Value::Blob(b) => b.len(),
                Value::Null | Value::Integer(_) | Value::Float(_) => 0,
            }
    };
    (std::mem::size_of::<Vec<Value>>() + row.iter().map(value).sum::<usize>()) as u64
}

pub fn main(args: StreamArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(run(args))
}

async fn run(args: StreamArgs) -> Result<()> {
    let engine_bin = match &args.engine_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("envoy-engine"),
    };
    let data = args.data_dir.clone();
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data)?;
    let data = std::fs::canonicalize(&data)?;
    let (engine, _) = procs::start_engine(&engine_bin, &data, "engine-stream", "os", &[])?;
    let pid = engine.pid();
    let (mut c, window) = Raw::connect(engine.addr, "stream").await?;

    let rid = c.rid();
    c.send(&ToEngine::GetOrCreateActor(ToEngineGetOrCreateActor {
        request_id: rid,
        name: "stream".into(),
        key: "big".into(),
    }))
    .await?;
    let actor = match c.answer().await? {
        ToEnvoy::GetOrCreateActorResponse(r) => match r.result {
            GetOrCreateActorResult::GetOrCreateActorOk(ok) => ok,
            GetOrCreateActorResult::GetOrCreateActorError(e) => bail!("get-or-create: {e:?}"),
        },
        other => bail!("unexpected {}", other.member_name()),
    };

    let rows = args.stream_bytes.div_ceil(args.row_bytes.max(1));
    eprintln!("[envoy-bench stream] filling {rows} rows × {} B (engine pid {pid})", args.row_bytes);
    let fill_started = Instant::now();
    let mut statements = vec!["CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB)".to_string()];
    let mut from = 1;
    while from <= rows {
        let to = (from + FILL_ROWS_PER_EXEC - 1).min(rows);
        statements.push(format!(
            "WITH RECURSIVE k(i) AS (SELECT {from} UNION ALL SELECT i + 1 FROM k WHERE i < {to}) \
             INSERT INTO t SELECT i, randomblob({}) FROM k",
            args.row_bytes
        ));
        from = to + 1;
    }
    for sql in statements {
        let rid = c.rid();
        let request = envoy_client::protocol::SqliteExecRequest {
            actor_id: actor.actor_id.clone(),
            generation: actor.generation,
            sql,
        };
        c.send(&ToEngine::SqliteExec(ToEngineSqliteExec { request_id: rid, request })).await?;
        match c.answer().await? {
            ToEnvoy::SqliteExecResponse(r) => match r.result {
                SqliteExecResult::QueryResult(_) => {}
                other => bail!("fill failed: {other:?}"),
            },
            other => bail!("unexpected {}", other.member_name()),
        }
    }
    let fill_seconds = fill_started.elapsed().as_secs_f64();

    // The peak from here on is the stream's (see the module doc).
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").context("resetting the engine's VmHWM")?;
    let engine_rss_before = procs::usage(pid).rss_bytes;
    eprintln!("[envoy-bench stream] streaming (window {window} B, credit {} B in flight)", args.credit_bytes);
    let rid = c.rid();
    let started = Instant::now();
    c.send(&ToEngine::SqliteStreamOpen(ToEngineSqliteStreamOpen {
        request_id: rid,
        request: SqliteStreamRequest {
            actor_id: actor.actor_id.clone(),
            generation: actor.generation,
            statement: SqliteStatement { sql: "SELECT id, b FROM t".into(), params: None },
            credit_bytes: args.credit_bytes,
            lease_ms: 60_000,
        },
    }))
    .await?;
    let (mut got_rows, mut payload, mut row_bytes, mut wire, mut chunks) = (0u64, 0u64, 0u64, 0u64, 0u64);
    loop {
        match c.answer().await? {
            ToEnvoy::SqliteStreamChunk(ch) if ch.request_id == rid => {
                chunks += 1;
                wire += c.last_len as u64;
                let bytes: u64 = ch.rows.iter().map(|r| row_size(r)).sum();
                row_bytes += bytes;
                got_rows += ch.rows.len() as u64;
                payload += ch
                    .rows
                    .iter()
                    .map(|r| match r.get(1) {
                        Some(Value::Blob(b)) => b.len() as u64,
                        _ => 0,
                    })
                    .sum::<u64>();
                if ch.done {
                    break;
                }
                // Steady credit: what this chunk used is granted back at once.
                let mut left = bytes;
                while left > 0 {
                    let n = left.min(u64::from(u32::MAX)) as u32;
                    c.send(&ToEngine::SqliteStreamCredit(ToEngineSqliteStreamCredit {
                        request_id: rid,
                        credit_bytes: n,
                    }))
                    .await?;
                    left -= u64::from(n);
                }
            }
            ToEnvoy::SqliteStreamFailed(f) if f.request_id == rid => match f.failure {
                SqliteFailure::SqliteError(e) => bail!("the stream failed after {got_rows} rows: {e:?}"),
                SqliteFailure::SqliteFenceMismatch(m) => bail!("fence mismatch {m:?}"),
            },
            other => bail!("unexpected {}", other.member_name()),
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    if got_rows != rows {
        bail!("streamed {got_rows} rows of {rows}");
    }
    let usage = procs::usage(pid);
    let report = StreamReport {
        rows: got_rows,
        payload_bytes: payload,
        row_bytes,
        wire_bytes: wire,
        chunks,
        seconds,
        rows_per_sec: got_rows as f64 / seconds,
        payload_mb_per_sec: payload as f64 / 1e6 / seconds,
        wire_mb_per_sec: wire as f64 / 1e6 / seconds,
        engine_rss_before,
        engine_rss_peak_streaming: usage.rss_peak_bytes,
        stream_window_bytes: window,
        credit_bytes: args.credit_bytes,
        fill_seconds,
    };
    println!(
        "stream: {} rows, {:.1} MB payload in {:.2} s ({} chunks): {:.0} rows/s, {:.1} MB/s payload, {:.1} MB/s wire; \
         engine RSS {:.1} MiB before, peak {:.1} MiB while streaming (window {} KiB, credit in flight {} KiB; \
         engine in its own process, /proc/{pid}/status VmHWM reset after the fill)",
        report.rows,
        payload as f64 / 1e6,
        seconds,
        chunks,
        report.rows_per_sec,
        report.payload_mb_per_sec,
        report.wire_mb_per_sec,
        engine_rss_before as f64 / 1048576.0,
        report.engine_rss_peak_streaming as f64 / 1048576.0,
        window / 1024,
        args.credit_bytes / 1024,
    );
    if let Some(path) = &args.json {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")?;
    }
    drop(c);
    drop(engine);
    let _ = std::fs::remove_dir_all(&data);
    Ok(())
}
