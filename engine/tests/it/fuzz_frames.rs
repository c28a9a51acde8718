//! Fuzzing the engine's frame handler, in-process.
//!
//! One fuzz input is a sequence of frames on one connection: well-formed
//! messages of every kind aimed at real and made-up actors (hostile SQL from a
//! dictionary, random parameters, wrong generations, events and intents),
//! arbitrary messages from the protocol's proptest strategies, mutated
//! encodings (bit flips, truncation, trailing bytes), random bytes and text
//! frames. After each input a marker request must be answered, or the socket
//! must have been closed with a close frame; every frame the engine sends must
//! decode; nothing may panic; and a second tenant's query keeps succeeding.
//!
//! The normal test runs a bounded number of inputs from a fixed seed. Longer
//! runs: `ENVOY_FUZZ_ITERS=20000 ENVOY_FUZZ_SEED=$RANDOM cargo test -p envoy-engine
//! --test it fuzz_frames -- --nocapture` (the seed of a failing input is printed).

use crate::support::*;
use envoy_protocol::*;
use futures_util::SinkExt;
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config as PtConfig, RngAlgorithm, TestRng, TestRunner};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// Panics anywhere in the process while the fuzzer runs.
static PANICS: AtomicUsize = AtomicUsize::new(0);

/// A small deterministic generator for the fuzzer's own choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max + 1);
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// SQL an attacker (or a buggy client) would send.
const SQL: &[&str] = &[
    "SELECT 1",
    "CREATE TABLE IF NOT EXISTS t(k INTEGER PRIMARY KEY, v)",
    "INSERT INTO t(v) VALUES (?)",
    "INSERT OR REPLACE INTO t(k, v) VALUES (?, ?) RETURNING k",
    "SELECT * FROM t ORDER BY k DESC LIMIT ?",
    "UPDATE t SET v = ? WHERE k = ?",
    "DELETE FROM t WHERE k > ?",
    "BEGIN",
    "BEGIN IMMEDIATE",
    "COMMIT",
    "ROLLBACK",
    "SAVEPOINT s",
    "RELEASE s",
    "ATTACH ?1 AS m",
    "ATTACH 'x' || ?1 AS m",
    "DETACH m",
    "SELECT fts3_tokenizer(?1)",
    "SELECT fts3_tokenizer(?1, ?2)",
    "PRAGMA hard_heap_limit = 65536",
    "PRAGMA soft_heap_limit = 1",
    "PRAGMA writable_schema = ON",
    "PRAGMA database_list",
    "PRAGMA journal_mode = OFF",
    "VACUUM",
    "VACUUM INTO ?1",
    "SELECT zeroblob(?1)",
    "SELECT randomblob(?1)",
    "SELECT printf('%.*c', ?1, 'x')",
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
    "SELECT load_extension(?1)",
    "CREATE VIRTUAL TABLE IF NOT EXISTS f USING fts5(b)",
    "SELECT * FROM f WHERE f MATCH ?1",
    "SELECT json_extract(?1, '$.a')",
    "SELECT 1; SELECT 2",
    ";;",
    "",
    "SELECT '\u{0}'",
    "CREATE TEMP TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; END",
    // The engine's own request-key tables (v5).
    "SELECT * FROM sqlite_envoy_request_keys",
    "DELETE FROM sqlite_envoy_request_key_state",
    "DROP TABLE sqlite_envoy_request_keys",
    "PRAGMA table_info(sqlite_envoy_request_keys)",
];

fn value(r: &mut Rng) -> Value {
    match r.below(8) {
        0 => Value::Null,
        1 => Value::Integer(r.next() as i64),
        2 => Value::Integer(r.below(2_000_000_000) as i64),
        3 => Value::Float(f64::from_bits(r.next())),
        4 => Value::Text(String::from_utf8_lossy(&r.bytes(64)).into_owned()),
        5 => Value::Text("/tmp/envoy-fuzz-escape.db".into()),
        6 => Value::Blob(r.bytes(64)),
        _ => Value::Integer(400_000_000),
    }
}

fn sql(r: &mut Rng) -> String {
    if r.chance(5) {
        return String::from_utf8_lossy(&r.bytes(80)).into_owned();
    }
    let mut s = SQL[r.below(SQL.len())].to_string();
    if r.chance(10) {
        s.push_str("; ");
        s.push_str(SQL[r.below(SQL.len())]);
    }
    s
}

/// A message aimed at the actors the input knows (or at ones that do not exist).
fn message(r: &mut Rng, actors: &[(String, u64)], rid: u32) -> ToEngine {
    let (actor_id, generation) = match r.below(10) {
        0 => (String::from_utf8_lossy(&r.bytes(40)).into_owned(), r.next()),
        1 => {
            let (a, g) = &actors[r.below(actors.len())];
            (a.clone(), g.wrapping_add(1 + r.below(3) as u64))
        }
        _ => actors[r.below(actors.len())].clone(),
    };
    match r.below(15) {
        // v5: ExecuteV5, ExecV5 and batches, with good, old, future and malformed keys.
        12..=14 => {
            let key = match r.below(5) {
                0 => None,
                1 => Some(r.bytes(16)),
                2 => {
                    let n = r.below(40);
                    Some(r.bytes(n))
                }
                _ => Some(request_key(r.next())),
            };
            let statement = |r: &mut Rng| {
                let n = r.below(4);
                SqliteStatement { sql: sql(r), params: Some((0..n).map(|_| value(r)).collect()) }
            };
            match r.below(3) {
                0 => ToEngine::SqliteExecuteV5(ToEngineSqliteExecuteV5 {
                    request_id: rid,
                    request: SqliteExecuteRequestV5 {
                        actor_id,
                        generation,
                        statement: statement(r),
                        writer: r.chance(50),
                        request_key: key,
                    },
                }),
                1 => ToEngine::SqliteExecV5(ToEngineSqliteExecV5 {
                    request_id: rid,
                    request: SqliteExecRequestV5 { actor_id, generation, sql: sql(r), request_key: key },
                }),
                _ => {
                    let mode = match r.below(3) {
                        0 => SqliteTransactionMode::Read,
                        1 => SqliteTransactionMode::Write,
                        _ => SqliteTransactionMode::Deferred,
                    };
                    let statements = (0..r.below(5)).map(|_| statement(r)).collect();
                    ToEngine::SqliteBatch(ToEngineSqliteBatch {
                        request_id: rid,
                        request: SqliteBatchRequest { actor_id, generation, mode, statements, request_key: key },
                    })
                }
            }
        }
        0..=2 => {
            let n = r.below(4);
            let params = (0..n).map(|_| value(r)).collect();
            ToEngine::SqliteExecute(ToEngineSqliteExecute {
                request_id: rid,
                request: SqliteExecuteRequest { actor_id, generation, sql: sql(r), params: Some(params) },
            })
        }
        3..=4 => {
            let n = r.below(4);
            let params = (0..n).map(|_| value(r)).collect();
            ToEngine::SqliteExecuteWrite(ToEngineSqliteExecuteWrite {
                request_id: rid,
                request: SqliteExecuteRequest { actor_id, generation, sql: sql(r), params: Some(params) },
            })
        }
        5..=6 => ToEngine::SqliteExec(ToEngineSqliteExec {
            request_id: rid,
            request: SqliteExecRequest { actor_id, generation, sql: sql(r) },
        }),
        7 => {
            let key = r.bytes(8);
            let data = match r.below(4) {
                0 => KvRequestData::KvPut(KvPut { key, value: r.bytes(32) }),
                1 => KvRequestData::KvGet(KvGet { key }),
                2 => KvRequestData::KvList(KvList {
                    query: KvQuery::All,
                    reverse: r.chance(50),
                    limit: Some(r.below(5) as u32),
                }),
                _ => KvRequestData::KvDeleteRange(KvDeleteRange { start: key, end: r.bytes(8) }),
            };
            ToEngine::KvRequest(ToEngineKvRequest { request_id: rid, actor_id, generation, data })
        }
        8 => ToEngine::GetOrCreateActor(ToEngineGetOrCreateActor {
            request_id: rid,
            name: if r.chance(50) { "db".into() } else { String::from_utf8_lossy(&r.bytes(16)).into_owned() },
            key: format!("{}", r.below(4)),
        }),
        9 => ToEngine::Events(ToEngineEvents {
            events: vec![EventWrapper {
                index: r.next() % 1000,
                inner: if r.chance(50) {
                    Event::ActorIntent(EventActorIntent {
                        actor_id,
                        generation,
                        intent: if r.chance(50) { ActorIntent::Stop } else { ActorIntent::Sleep },
                    })
                } else {
                    Event::ActorStateUpdate(EventActorStateUpdate { actor_id, generation, state: ActorState::Running })
                },
            }],
        }),
        10 => ToEngine::AckCommands(ToEngineAckCommands { last_command_index: r.next() % 100 }),
        _ => ToEngine::Pong(ToEnginePong { ts: r.next() as i64 }),
    }
}

/// The message with its request id (if it has one) replaced by `rid`.
fn with_request_id(msg: ToEngine, rid: u32) -> ToEngine {
    match msg {
        ToEngine::KvRequest(m) => ToEngine::KvRequest(ToEngineKvRequest { request_id: rid, ..m }),
        ToEngine::GetOrCreateActor(m) => ToEngine::GetOrCreateActor(ToEngineGetOrCreateActor { request_id: rid, ..m }),
        ToEngine::SqliteExec(m) => ToEngine::SqliteExec(ToEngineSqliteExec { request_id: rid, ..m }),
        ToEngine::SqliteExecute(m) => ToEngine::SqliteExecute(ToEngineSqliteExecute { request_id: rid, ..m }),
        ToEngine::SqliteExecuteWrite(m) => {
            ToEngine::SqliteExecuteWrite(ToEngineSqliteExecuteWrite { request_id: rid, ..m })
        }
        ToEngine::SqliteExecV5(m) => ToEngine::SqliteExecV5(ToEngineSqliteExecV5 { request_id: rid, ..m }),
        ToEngine::SqliteExecuteV5(m) => ToEngine::SqliteExecuteV5(ToEngineSqliteExecuteV5 { request_id: rid, ..m }),
        ToEngine::SqliteBatch(m) => ToEngine::SqliteBatch(ToEngineSqliteBatch { request_id: rid, ..m }),
        m @ (ToEngine::Metadata(_)
        | ToEngine::Events(_)
        | ToEngine::AckCommands(_)
        | ToEngine::Stopping
        | ToEngine::Pong(_)
        // v5 members this engine does not implement yet keep their id: it
        // never answers them, it closes the connection with a protocol error.
        | ToEngine::SqliteBegin(_)
        | ToEngine::SqliteTransactionExecute(_)
        | ToEngine::SqliteCommit(_)
        | ToEngine::SqliteRollback(_)
        | ToEngine::SqliteStreamOpen(_)
        | ToEngine::SqliteStreamCredit(_)
        | ToEngine::SqliteStreamCancel(_)) => m,
    }
}

/// One frame of an input.
fn frame(r: &mut Rng, runner: &mut TestRunner, version: u16, actors: &[(String, u64)], rid: u32, raw: bool) -> Message {
    let roll = r.below(100);
    let mut msg = if roll < 12 && raw {
        // Anything the schema allows, from the protocol's own strategies (under this
        // input's request id, so two answers never share an id).
        with_request_id(proptest::arbitrary::any::<ToEngine>().new_tree(runner).expect("a value").current(), rid)
    } else {
        message(r, actors, rid)
    };
    // Well-formed inputs keep to what their version can carry.
    for _ in 0..16 {
        if raw || encode_to_engine(&msg, version).is_ok() {
            break;
        }
        msg = message(r, actors, rid);
    }
    let mut bytes = match encode_to_engine(&msg, version) {
        Ok(b) => b,
        // Not expressible at this version: send it at the newest version the
        // protocol crate knows anyway (a decoder must cope; v5 members are
        // unknown tags at v4 and below).
        Err(_) => encode_to_engine(&msg, PROTOCOL_VERSION).expect("every message encodes at the newest version"),
    };
    match if raw { r.below(100) } else { 0 } {
        0..=69 => Message::Binary(bytes.into()),
        70..=79 => {
            for _ in 0..1 + r.below(4) {
                if !bytes.is_empty() {
                    let i = r.below(bytes.len());
                    bytes[i] ^= 1 << r.below(8);
                }
            }
            Message::Binary(bytes.into())
        }
        80..=85 => {
            bytes.truncate(r.below(bytes.len() + 1));
            Message::Binary(bytes.into())
        }
        86..=90 => {
            bytes.extend(r.bytes(8));
            bytes.push(0);
            Message::Binary(bytes.into())
        }
        91..=95 => Message::Binary(r.bytes(64).into()),
        96..=97 => Message::Text("{\"hello\": 1}".into()),
        _ => Message::Ping(r.bytes(8).into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzz_frames() {
    let iters: usize = std::env::var("ENVOY_FUZZ_ITERS").ok().and_then(|s| s.parse().ok()).unwrap_or(120);
    let seed: u64 = std::env::var("ENVOY_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_f00d);
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // Other tests of this binary run in parallel on threads named after them
        // ("module::test"); their failures are theirs. Engine threads (tokio
        // workers, blocking lanes, the watchdog) and this test's own thread count.
        let name = std::thread::current().name().unwrap_or("").to_string();
        if !name.contains("::") || name.ends_with("fuzz_frames") {
            PANICS.fetch_add(1, Ordering::SeqCst);
        }
        default_hook(info);
    }));

    let dir = temp_dir();
    let mut cfg = test_config(dir.path());
    cfg.limits.max_statement_ms = 200;
    cfg.limits.max_value_bytes = 1 << 20;
    cfg.actor_stop_threshold = Duration::from_millis(500);
    let engine = start_with(cfg).await;
    let addr = engine.local_addr();

    // The bystander: another tenant whose query must keep succeeding.
    let mut other = RawClient::connect(addr, ConnectOpts::new("bystander", "b")).await;
    let oa = other.get_or_create("db", "1").await;
    exec_ok(other.exec(&oa, "CREATE TABLE s(v); INSERT INTO s VALUES ('safe')").await);
    let mut other_lat = Vec::new();

    let mut runner = TestRunner::new_with_rng(
        PtConfig::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &{
            let mut s = [0u8; 32];
            s[..8].copy_from_slice(&seed.to_le_bytes());
            s
        }),
    );
    let (mut answered, mut closed, mut frames_sent) = (0usize, 0usize, 0usize);
    let started = Instant::now();
    let mut reasons = std::collections::BTreeMap::new();
    for i in 0..iters {
        let mut r = Rng(seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let version = 1 + r.below(PROTOCOL_VERSION as usize) as u16;
        let mut c =
            RawClient::connect(addr, ConnectOpts::new("fuzz", &format!("f{}", r.below(3))).version(version)).await;
        // Pongs would be sent into a socket the engine may have closed already.
        c.auto_pong = false;
        // A flipped bit can turn one request id into another's.
        c.duplicate_ids_allowed = true;
        let mut actors = Vec::new();
        for key in ["0", "1"] {
            let a = c.get_or_create("db", key).await;
            actors.push((a.actor_id.clone(), a.generation));
        }
        // Most inputs are well-formed sequences that reach deep into the engine;
        // the rest also carry arbitrary, mutated and random frames.
        let raw = r.chance(35);
        let n = 1 + r.below(24);
        for _ in 0..n {
            let rid = c.rid();
            let f = frame(&mut r, &mut runner, version, &actors, rid, raw);
            frames_sent += 1;
            if c.ws.send(f).await.is_err() {
                break;
            }
        }
        // The marker: answered, or the engine closed the socket with a close frame.
        let marker = c.rid();
        let msg = if version >= 4 {
            ToEngine::SqliteExecute(ToEngineSqliteExecute {
                request_id: marker,
                request: SqliteExecuteRequest {
                    actor_id: "none".into(),
                    generation: 1,
                    sql: "SELECT 1".into(),
                    params: None,
                },
            })
        } else {
            ToEngine::KvRequest(ToEngineKvRequest {
                request_id: marker,
                actor_id: "none".into(),
                generation: 1,
                data: KvRequestData::KvGet(KvGet { key: vec![1] }),
            })
        };
        let _ = c.ws.send(Message::Binary(encode_to_engine(&msg, version).unwrap().into())).await;
        loop {
            if c.answer_ready(marker) {
                answered += 1;
                break;
            }
            if !c.pump().await {
                let (code, reason) = c.closed.clone().unwrap_or((1006, String::new()));
                assert!(
                    code != 1006 && code != 1011,
                    "input {i} (seed {seed}): the engine dropped the socket without a proper close: {code} {reason}"
                );
                closed += 1;
                *reasons.entry(format!("{code} {}", reason.split(':').next().unwrap_or(""))).or_insert(0usize) += 1;
                break;
            }
        }
        assert_eq!(PANICS.load(Ordering::SeqCst), 0, "input {i} (seed {seed}) made something panic");
        if i % 10 == 0 {
            let t = Instant::now();
            let rows = ok(other.execute(&oa, "SELECT v FROM s", vec![]).await).rows;
            other_lat.push(t.elapsed());
            assert_eq!(rows, vec![vec![Value::Text("safe".into())]], "input {i} (seed {seed})");
        }
    }
    other_lat.sort();
    println!(
        "fuzz_frames: seed {seed}, {iters} inputs, {frames_sent} frames in {:?}: {answered} answered the marker, {closed} closed with a code; second tenant p50 {:?} max {:?}",
        started.elapsed(),
        other_lat[other_lat.len() / 2],
        other_lat[other_lat.len() - 1]
    );
    println!("close reasons: {reasons:?}");
    assert!(!std::path::Path::new("/tmp/envoy-fuzz-escape.db").exists(), "a fuzz input escaped the sandbox");
    assert_eq!(ok(other.execute(&oa, "SELECT count(*) FROM s", vec![]).await).rows, vec![vec![Value::Integer(1)]]);
    engine.shutdown().await;
}
