//! Exactly-once writes through a link that is cut and frozen at random (protocol v5).
//!
//! Several writers run non-idempotent writes (INSERTs, a counter UPDATE, a
//! two-statement `exec`) through the cut/freeze proxy while a chaos task breaks
//! the link every few milliseconds. On a v5 session the client keys
//! every write and re-sends the unanswered ones with their keys after each
//! reconnect, so:
//! - every write is answered with success (never `IndeterminateResult`);
//! - reading the table back shows each write applied exactly once;
//! - each INSERT's answered `lastInsertRowId` is the rowid its row really has
//!   (a replayed answer is the recorded one, not a new execution's).
//!
//! Short form in the test command (2 000 writes); `EXACTLY_ONCE_WRITES=20000`
//! for a long run, `EXACTLY_ONCE_SEED` to replay a schedule of cuts.

use envoy_client::{params, Client, Error};
use envoy_tests::proxy::Proxy;
use envoy_tests::TestEngine;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A small deterministic generator (xorshift64*), so a failing schedule can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// What one writer was told about its INSERTs: seq → rowid.
type Answers = HashMap<u64, i64>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_random_cuts_apply_exactly_once() {
    const WRITERS: u64 = 8;
    let total = env_u64("EXACTLY_ONCE_WRITES", 2_000);
    let per_writer = total.div_ceil(WRITERS);
    let seed = env_u64("EXACTLY_ONCE_SEED", 0x5eed_c075);
    eprintln!("exactly-once: {WRITERS} writers × {per_writer} writes, seed {seed:#x}");

    let te = TestEngine::start(|c| {
        c.ping_interval = Duration::from_millis(50);
    })
    .await;
    let proxy = Arc::new(Proxy::start(te.engine.local_addr()).await);
    let mut cfg = TestEngine::client_config(&proxy.endpoint());
    cfg.envoy_key = "exactly-once".into();
    cfg.backoff_initial_ms = 5;
    cfg.backoff_max_ms = 50;
    // A frozen link is noticed after this much silence (the engine pings every 50 ms).
    cfg.liveness_timeout_ms = Some(400);
    cfg.request_timeout_ms = Some(120_000);
    let client = Client::connect(cfg).await.expect("connects");
    let session = client.session().expect("connected");
    assert_eq!(session.protocol_version, 6, "the exactly-once guarantee is v5's, and v6 keeps it");
    let actor = client.get_or_create_actor("exactly-once", "a").await.unwrap();
    let db = actor.sql();
    db.exec(
        "CREATE TABLE rows(w INT NOT NULL, seq INT NOT NULL, body TEXT);
         CREATE TABLE pairs(w INT NOT NULL, seq INT NOT NULL, half INT NOT NULL);
         CREATE TABLE counter(w INT PRIMARY KEY, n INT NOT NULL);",
    )
    .await
    .unwrap();
    for w in 0..WRITERS {
        db.execute("INSERT INTO counter(w, n) VALUES (?, 0)", params![w as i64]).await.unwrap();
    }

    // Chaos: cut (mostly) or freeze the link at random intervals until the writers are done.
    let done = Arc::new(AtomicBool::new(false));
    let cuts = Arc::new(AtomicU64::new(0));
    let chaos = {
        let (proxy, done, cuts) = (proxy.clone(), done.clone(), cuts.clone());
        tokio::spawn(async move {
            let mut rng = Rng(seed | 1);
            while !done.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(1 + rng.below(15))).await;
                if rng.below(8) == 0 {
                    proxy.freeze();
                } else {
                    proxy.kill();
                }
                cuts.fetch_add(1, Ordering::SeqCst);
            }
        })
    };

    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let db = db.clone();
            tokio::spawn(async move {
                let mut answers = Answers::new();
                let (mut pairs, mut bumps) = (0u64, 0u64);
                for seq in 0..per_writer {
                    let (w_, s_) = (w as i64, seq as i64);
                    let result: Result<(), Error> = match seq % 4 {
                        // A routed Execute that writes.
                        0 | 1 => db
                            .execute("INSERT INTO rows(w, seq, body) VALUES (?, ?, ?)", params![w_, s_, "x"])
                            .await
                            .map(|o| {
                                let rowid = o.last_insert_row_id.expect("an INSERT answers its rowid");
                                answers.insert(seq, rowid);
                            }),
                        // A non-idempotent update on the writer.
                        2 => db.execute_write("UPDATE counter SET n = n + 1 WHERE w = ?", params![w_]).await.map(|o| {
                            assert_eq!(o.changes, 1);
                            bumps += 1;
                        }),
                        // Two statements in one request: both or neither, once.
                        _ => db
                            .exec(&format!(
                                "INSERT INTO pairs(w, seq, half) VALUES ({w_}, {s_}, 0); \
                                 INSERT INTO pairs(w, seq, half) VALUES ({w_}, {s_}, 1);"
                            ))
                            .await
                            .map(|_| pairs += 1),
                    };
                    if let Err(e) = result {
                        panic!("writer {w} seq {seq}: a v5 write must not fail through cuts: {e:?}");
                    }
                }
                (w, answers, pairs, bumps)
            })
        })
        .collect();
    let mut results = Vec::new();
    for h in writers {
        results.push(h.await.expect("writer task"));
    }
    done.store(true, Ordering::SeqCst);
    chaos.await.unwrap();
    let cuts = cuts.load(Ordering::SeqCst);
    eprintln!("exactly-once: {cuts} cuts or freezes; {} proxy connections", proxy.accepted());
    assert!(cuts >= 20, "the chaos task broke the link while writes ran ({cuts})");
    assert!(proxy.accepted() >= 3, "the client reconnected through the cuts");

    // Read back on the same session (it is connected again once the chaos stopped).
    let db = db.idempotent();
    for (w, answers, pairs, bumps) in results {
        let w_ = w as i64;
        let rows = db
            .query("SELECT seq, rowid AS r, count(*) OVER (PARTITION BY seq) AS c FROM rows WHERE w = ?", params![w_])
            .await
            .unwrap();
        assert_eq!(rows.len(), answers.len(), "writer {w}: one row per answered INSERT");
        for row in &rows {
            let seq: i64 = row.get("seq").unwrap();
            let rowid: i64 = row.get("r").unwrap();
            assert_eq!(row.get::<i64>("c").unwrap(), 1, "writer {w} seq {seq}: applied once");
            assert_eq!(answers.get(&(seq as u64)), Some(&rowid), "writer {w} seq {seq}: the answer names its row");
        }
        let counter = db.query("SELECT n FROM counter WHERE w = ?", params![w_]).await.unwrap();
        let n: i64 = counter.first().expect("a counter row").get(0).unwrap();
        assert_eq!(n as u64, bumps, "writer {w}: every UPDATE applied exactly once");
        let halves =
            db.query("SELECT seq, count(*) AS c FROM pairs WHERE w = ? GROUP BY seq", params![w_]).await.unwrap();
        assert_eq!(halves.len() as u64, pairs, "writer {w}: every exec applied");
        for row in &halves {
            assert_eq!(row.get::<i64>("c").unwrap(), 2, "writer {w}: both halves, once");
        }
    }
    client.close().await;
}
