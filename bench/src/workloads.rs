//! W1–W7 through the real client (`envoy-client`, native transport). Every
//! request goes through `Db::query`/`Db::execute`/`Db::exec`; pipelining is
//! many futures awaiting answers on one `Client` (one socket).

use crate::procs::{Proc, Usage};
use crate::stats::{join_parallel, Round, Timer};
use anyhow::{ensure, Context, Result};
use envoy_client::{params, Client, ClientConfig, Db};
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Rows of `t`, the point-SELECT table.
pub const POINT_ROWS: i64 = 10_000;
/// Rows of `r`, the table W4 reads whole.
pub const WIDE_ROWS: i64 = 1_000;
/// Tables of every benchmark database (engine actors and the in-process one).
pub const SCHEMA: &str = "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);
CREATE TABLE r(id INTEGER PRIMARY KEY, v TEXT);
CREATE TABLE w(id INTEGER PRIMARY KEY, v TEXT);";
/// Fills `t` and `r` in one request (10 000 short rows, 1 000 rows of 100 bytes).
pub const FILL: &str = "BEGIN;
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 10000)
  INSERT INTO t SELECT x, printf('value-%08d', x) FROM c;
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000)
  INSERT INTO r SELECT x, printf('%08d', x) || replace(hex(zeroblob(46)), '0', 'x') FROM c;
COMMIT;";
pub const POINT_SQL: &str = "SELECT v FROM t WHERE id = ?";
pub const WIDE_SQL: &str = "SELECT id, v FROM r";
pub const INSERT_SQL: &str = "INSERT INTO w(v) VALUES (?)";

pub fn point_value(i: i64) -> String {
    format!("value-{i:08}")
}

/// The 32-byte text every INSERT writes.
pub fn insert_value() -> String {
    "x".repeat(32)
}

/// Requests in flight on one socket for W2 and W3 (and the echo baseline).
pub const IN_FLIGHT: usize = 64;

/// The highest protocol version the SDK clients offer (`--max-protocol-version`):
/// v4 measures the same workloads without v5's request keys.
pub static MAX_PROTOCOL_VERSION: std::sync::OnceLock<u16> = std::sync::OnceLock::new();

/// A client with its own envoy key (one socket).
pub async fn connect(url: &str, key: &str) -> Result<Client> {
    let cfg = ClientConfig {
        endpoint: url.into(),
        namespace: "bench".into(),
        envoy_key: format!("{key}-{}", std::process::id()),
        max_protocol_version: *MAX_PROTOCOL_VERSION.get().unwrap_or(&envoy_client::SDK_PROTOCOL_VERSION),
        ..Default::default()
    };
    Client::connect(cfg).await.with_context(|| format!("connecting {key} to {url}"))
}

/// An actor with the benchmark tables filled.
pub async fn fixture(client: &Client, name: &str, key: &str) -> Result<Db> {
    let db = client.get_or_create_actor(name, key).await?.sql();
    db.exec(SCHEMA).await.context("schema")?;
    db.exec(FILL).await.context("fill")?;
    let n: i64 = db.query("SELECT count(*) FROM t", ()).await?.first().context("no count")?.get(0)?;
    ensure!(n == POINT_ROWS, "fixture has {n} rows");
    Ok(db)
}

/// Key of the i-th point SELECT, cycling through the table.
fn key(i: u64) -> i64 {
    (i % POINT_ROWS as u64) as i64 + 1
}

async fn point(db: &Db, i: u64) -> Result<()> {
    let rows = db.query(POINT_SQL, params![key(i)]).await?;
    ensure!(rows.len() == 1, "point select returned {} rows", rows.len());
    Ok(())
}

async fn insert(db: &Db, v: &str) -> Result<()> {
    let out = db.execute(INSERT_SQL, params![v]).await?;
    ensure!(out.changes == 1, "insert changed {} rows", out.changes);
    Ok(())
}

/// What one closed-loop worker does per operation.
#[derive(Clone, Copy)]
pub enum Op {
    /// W1/W2: point SELECT by primary key.
    Point,
    /// W3: autocommit single-row INSERT.
    Insert,
    /// W4: the whole 1 000-row table.
    Wide,
    /// W5: four point SELECTs, then one INSERT, repeating (80 % reads).
    Mixed,
}

/// One worker: one request at a time until `end`.
async fn worker(db: Db, op: Op, seed: u64, end: Instant) -> Result<Round> {
    let v = insert_value();
    let mut t = Timer::new();
    let mut i = seed;
    while Instant::now() < end {
        i += 1;
        let s = Instant::now();
        match op {
            Op::Point => point(&db, i).await?,
            Op::Insert => insert(&db, &v).await?,
            Op::Wide => {
                let rows = db.query(WIDE_SQL, ()).await?;
                ensure!(rows.len() == WIDE_ROWS as usize, "wide select returned {} rows", rows.len());
            }
            Op::Mixed if i % 5 == 4 => insert(&db, &v).await?,
            Op::Mixed => point(&db, i).await?,
        }
        t.record(s);
    }
    Ok(t.finish())
}

/// `concurrency` workers sharing `db` (so one socket), for `dur`.
pub async fn closed_loop(db: &Db, op: Op, concurrency: usize, dur: Duration) -> Result<Round> {
    let end = Instant::now() + dur;
    let parts =
        futures_util::future::try_join_all((0..concurrency).map(|w| worker(db.clone(), op, w as u64 * 7919, end)))
            .await?;
    Ok(join_parallel(parts))
}

/// W5: one worker per database (each on its own client and socket), for `dur`.
pub async fn per_db(dbs: &[Db], op: Op, dur: Duration) -> Result<Round> {
    let end = Instant::now() + dur;
    let parts = futures_util::future::try_join_all(
        dbs.iter().enumerate().map(|(w, db)| worker(db.clone(), op, w as u64 * 7919, end)),
    )
    .await?;
    Ok(join_parallel(parts))
}

/// W6: `actors` new actors, each: get-or-create, one write (creating its table
/// and a row, one request), one read. `concurrency` actors at a time on one
/// client. Latency is per actor (the three requests).
pub async fn cold_actors(client: &Client, tag: &str, actors: usize, concurrency: usize) -> Result<Round> {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let parts = futures_util::future::try_join_all((0..concurrency).map(|_| {
        let next = next.clone();
        let client = client.clone();
        async move {
            let mut t = Timer::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= actors {
                    break;
                }
                let s = Instant::now();
                let db = client.get_or_create_actor("w6", &format!("{tag}-{i}")).await?.sql();
                db.exec("CREATE TABLE k(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO k VALUES (1, 'first')").await?;
                let rows = db.query("SELECT v FROM k WHERE id = 1", ()).await?;
                ensure!(rows.len() == 1, "cold actor read {} rows", rows.len());
                t.record(s);
            }
            anyhow::Ok(t.finish())
        }
    }))
    .await?;
    let mut r = join_parallel(parts);
    r.elapsed = start.elapsed();
    Ok(r)
}

/// W7's figures: the engine process while many actors are opened, then left idle.
#[derive(Debug, Clone, Serialize)]
pub struct IdleActors {
    /// Actors opened (each: get-or-create and one write creating its database).
    pub actors: usize,
    /// Connections (envoys) they were spread over, under `--max-actors-per-connection`.
    pub connections: usize,
    /// How long opening them all took, seconds.
    pub open_secs: f64,
    /// Opening rate (actors per second), for scale.
    pub open_per_sec: f64,
    /// The engine before any actor: the floor the other figures are read against.
    pub before: Usage,
    /// Highest RSS seen (the kernel's high-water mark `VmHWM`), bytes.
    pub peak_rss_bytes: u64,
    /// Most descriptors seen in 50 ms samples while opening.
    pub peak_fds: u64,
    /// The engine's open-database cap in force (`--max-open-actor-dbs`).
    pub max_open_actor_dbs: u64,
    /// Descriptors the cap allows: ~12 per open database plus 256 for the rest,
    /// the engine's own budget when it sizes RLIMIT_NOFILE.
    pub fd_bound: u64,
    /// The engine after `--idle-db-close-ms` closed the idle databases (actors still placed).
    pub after_idle: Usage,
    /// How long after the last open the figures above were taken, ms.
    pub idle_wait_ms: u64,
}

/// W7: `actors` actors opened over connections of `per_connection` actors each
/// (8 at a time per connection), RSS and descriptors sampled meanwhile; then
/// waits for the idle sweep and measures again.
pub async fn idle_actors(
    engine: &Proc,
    actors: usize,
    per_connection: usize,
    idle_close_ms: u64,
    max_open: u64,
) -> Result<IdleActors> {
    let pid = engine.pid();
    let before = engine.usage();
    let connections = actors.div_ceil(per_connection);
    let mut clients = Vec::new();
    for c in 0..connections {
        clients.push(connect(&engine.ws_url(), &format!("w7-{c}")).await?);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut peak_fds = 0;
            while !stop.load(Ordering::Relaxed) {
                peak_fds = peak_fds.max(crate::procs::usage(pid).fds);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            peak_fds
        })
    };
    let start = Instant::now();
    let tag = format!("{}", std::process::id());
    futures_util::future::try_join_all(clients.iter().enumerate().map(|(c, client)| {
        let lo = c * per_connection;
        let hi = ((c + 1) * per_connection).min(actors);
        let next = Arc::new(AtomicUsize::new(lo));
        let tag = tag.clone();
        futures_util::future::try_join_all((0..8).map(move |_| {
            let next = next.clone();
            let tag = tag.clone();
            async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= hi {
                        return anyhow::Ok(());
                    }
                    let db = client.get_or_create_actor("w7", &format!("{tag}-{i}")).await?.sql();
                    db.exec("CREATE TABLE k(id INTEGER PRIMARY KEY)").await?;
                }
            }
        }))
    }))
    .await?;
    let open_secs = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let peak_fds = sampler.await?.max(engine.usage().fds);
    // Wait for the sweep: past the idle time, until descriptors stop falling
    // (three samples in a row), or 30 s.
    let idle_start = Instant::now();
    tokio::time::sleep(Duration::from_millis(idle_close_ms)).await;
    let mut last = engine.usage();
    let mut steady = 0;
    while steady < 3 && idle_start.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis((idle_close_ms / 2).max(100))).await;
        let now = engine.usage();
        steady = if now.fds >= last.fds { steady + 1 } else { 0 };
        last = now;
    }
    let after_idle = engine.usage();
    let idle_wait_ms = idle_start.elapsed().as_millis() as u64;
    for c in &clients {
        c.close().await;
    }
    Ok(IdleActors {
        actors,
        connections,
        open_secs,
        open_per_sec: actors as f64 / open_secs,
        before,
        peak_rss_bytes: after_idle.rss_peak_bytes,
        peak_fds,
        max_open_actor_dbs: max_open,
        fd_bound: max_open * 12 + 256,
        after_idle,
        idle_wait_ms,
    })
}
