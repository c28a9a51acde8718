//! Crash safety: the real `envoy-engine` binary is killed with SIGKILL at a
//! random moment while it serves write load, restarted on the same data
//! directory, and checked:
//!
//! - every acknowledged write (SQL row, transaction, KV batch) is present, whole and intact;
//! - a request answered with an error that says nothing was committed left nothing behind;
//! - a request left unanswered by the kill is present whole or absent, never in part — and
//!   whichever it turned out to be, it stays that way through every later crash;
//! - `PRAGMA integrity_check` answers `ok` for every actor database;
//! - get-or-create after the restart answers a generation above every one seen before.
//!
//! ```sh
//! cargo test -p envoy-tests --test crash -- --nocapture
//! ENVOY_CRASH_CYCLES=60 ENVOY_CRASH_SEED=42 cargo test -p envoy-tests --test crash -- --nocapture
//! ```
//!
//! The seed fixes the kill delays, the durability of each cycle and every request's content;
//! the interleaving of requests is up to the scheduler, so a replay hits the same schedule,
//! not necessarily the same instant. Cycles 1, 4, 7, … run at `--durability os` (a process
//! kill must lose nothing acknowledged there either), the others at the default `fsync`.
//! Acknowledgements are recorded in this process, which is never killed. On failure the
//! data directory is kept and its path printed.

use envoy_protocol::*;
use envoy_tests::process::EngineProcess;
use envoy_tests::wire::{NoAnswer, Wire};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ACTORS: usize = 4;
const CONNECTIONS: usize = 2;
/// Autocommit single-row inserts kept in flight per actor (one request each, awaited in turn).
const WRITERS_PER_ACTOR: usize = 48;
const TX_WORKERS_PER_ACTOR: usize = 3;
const KV_WORKERS_PER_ACTOR: usize = 4;
const NAMESPACE: &str = "crash";
/// Rows per page when reading an actor's rows back.
const PAGE: i64 = 2000;
/// Keys per KV get-batch when reading back (under maxKvBatchEntries).
const KV_CHUNK: usize = 1000;
/// Earlier KV batches re-read per actor at each restart (all of them at the final pass).
const KV_SAMPLE: u64 = 200;
/// A guard against a hung engine or harness, never a measurement.
const HANG: Duration = Duration::from_secs(120);

const SCHEMA: &str = "CREATE TABLE w (id INTEGER PRIMARY KEY, payload TEXT NOT NULL); \
    CREATE TABLE tx_rows (tx INTEGER NOT NULL, member INTEGER NOT NULL, members INTEGER NOT NULL, \
        pad TEXT NOT NULL, PRIMARY KEY (tx, member)); \
    CREATE TABLE counter (id INTEGER PRIMARY KEY CHECK (id = 1), n INTEGER NOT NULL, txs INTEGER NOT NULL); \
    INSERT INTO counter VALUES (1, 0, 0)";

// ---------------------------------------------------------------- randomness

/// SplitMix64: small, seedable, good enough to pick delays and contents.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    /// A stream for one (purpose, cycle, actor, worker), independent of the others.
    fn derive(seed: u64, parts: &[u64]) -> Rng {
        Rng(parts.iter().fold(mix(seed), |acc, p| mix(acc ^ mix(*p))))
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The payload of write `id` of actor `actor`: a function of both, 8–307 bytes.
fn write_payload(actor: usize, id: i64) -> String {
    let h = mix(((actor as u64) << 48) ^ id as u64);
    let len = 8 + (h % 300) as usize;
    let unit = format!("{actor}.{id}.{h:x};");
    unit.repeat(len / unit.len() + 1)[..len].to_string()
}

/// The value stored under a KV key: a function of the key, 1–2000 bytes.
fn kv_value(key: &[u8]) -> Vec<u8> {
    let h = key.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3));
    let len = 1 + (h % 2000) as usize;
    (0..len as u64).map(|i| (mix(h ^ i) & 0xff) as u8).collect()
}

// ---------------------------------------------------------------- the model

/// What the harness knows about one write, transaction or KV batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    /// Sent (or about to be) when the engine died; no answer was read.
    Unknown,
    /// Answered with success: must be present, whole, after every restart.
    Acked,
    /// Answered with an error saying nothing was committed: must never appear.
    Refused,
    /// Was unknown, found present and whole after a restart: must stay.
    FoundPresent,
    /// Was unknown, found absent after a restart: must stay absent (it is never resent).
    FoundAbsent,
}

impl Fate {
    fn must_exist(self) -> bool {
        matches!(self, Fate::Acked | Fate::FoundPresent)
    }
    fn must_not_exist(self) -> bool {
        matches!(self, Fate::Refused | Fate::FoundAbsent)
    }
    /// How an unknown outcome resolves once looked at.
    fn resolve(self, present: bool) -> Fate {
        match (self, present) {
            (Fate::Unknown, true) => Fate::FoundPresent,
            (Fate::Unknown, false) => Fate::FoundAbsent,
            (f, _) => f,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TxPlan {
    /// `BEGIN; …; COMMIT`: must commit whole.
    Commit,
    /// A duplicate key half way: the engine must answer an error and roll everything back.
    FailMidway,
    /// No `COMMIT`: the request ends inside its transaction, which the engine must roll back.
    NoCommit,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    fate: Fate,
    cycle: usize,
}

#[derive(Clone, Debug)]
struct TxRecord {
    members: i64,
    plan: TxPlan,
    fate: Fate,
    cycle: usize,
}

#[derive(Clone, Debug)]
struct KvRecord {
    keys: Vec<Vec<u8>>,
    fate: Fate,
    cycle: usize,
}

/// Everything sent to one actor over the whole run, and what became of it.
struct ActorModel {
    index: usize,
    name: String,
    actor_id: String,
    /// The highest generation any get-or-create answered.
    generation: u64,
    writes: BTreeMap<i64, Entry>,
    next_write: i64,
    txs: BTreeMap<i64, TxRecord>,
    next_tx: i64,
    kv: BTreeMap<u64, KvRecord>,
    next_kv: u64,
    /// Every write id up to this one was resolved by an earlier verification: later passes
    /// check those rows by aggregate (count, payload bytes, none of the absent ones back), the
    /// final pass row by row.
    writes_verified_upto: i64,
    /// Rows up to `writes_verified_upto` that must exist: how many, and their payload bytes.
    old_rows: i64,
    old_payload_bytes: i64,
    /// Write ids up to `writes_verified_upto` that must not exist.
    old_absent: Vec<i64>,
    /// KV batches up to this one were resolved; later passes check a sample of them, the final pass all.
    kv_verified_upto: u64,
}

impl ActorModel {
    fn new(index: usize) -> ActorModel {
        ActorModel {
            index,
            name: format!("crash-{index}"),
            actor_id: String::new(),
            generation: 0,
            writes: BTreeMap::new(),
            next_write: 0,
            txs: BTreeMap::new(),
            next_tx: 0,
            kv: BTreeMap::new(),
            next_kv: 0,
            writes_verified_upto: 0,
            old_rows: 0,
            old_payload_bytes: 0,
            old_absent: Vec::new(),
            kv_verified_upto: 0,
        }
    }
}

type Model = Arc<Mutex<ActorModel>>;

/// Counters of one cycle's load, all actors together.
#[derive(Default)]
struct LoadCounts {
    writes_sent: AtomicU64,
    writes_acked: AtomicU64,
    writes_refused: AtomicU64,
    txs_sent: AtomicU64,
    txs_committed: AtomicU64,
    txs_failed: AtomicU64,
    kv_sent: AtomicU64,
    kv_acked: AtomicU64,
    kv_refused: AtomicU64,
}

/// What one verification pass checked, all actors together.
#[derive(Default, Clone, Copy)]
struct Checked {
    integrity_ok: u64,
    rows_read: u64,
    acked_writes: u64,
    /// Earlier rows confirmed by aggregate (count and payload bytes).
    acked_writes_by_count: u64,
    unknown_writes_present: u64,
    unknown_writes_absent: u64,
    refused_writes_absent: u64,
    acked_txs: u64,
    refused_txs_absent: u64,
    unknown_txs_present: u64,
    unknown_txs_absent: u64,
    acked_kv_batches: u64,
    unknown_kv_present: u64,
    unknown_kv_absent: u64,
}

impl Checked {
    fn add(&mut self, o: &Checked) {
        self.integrity_ok += o.integrity_ok;
        self.rows_read += o.rows_read;
        self.acked_writes += o.acked_writes;
        self.acked_writes_by_count += o.acked_writes_by_count;
        self.unknown_writes_present += o.unknown_writes_present;
        self.unknown_writes_absent += o.unknown_writes_absent;
        self.refused_writes_absent += o.refused_writes_absent;
        self.acked_txs += o.acked_txs;
        self.refused_txs_absent += o.refused_txs_absent;
        self.unknown_txs_present += o.unknown_txs_present;
        self.unknown_txs_absent += o.unknown_txs_absent;
        self.acked_kv_batches += o.acked_kv_batches;
        self.unknown_kv_present += o.unknown_kv_present;
        self.unknown_kv_absent += o.unknown_kv_absent;
    }
}

/// Problems found (data loss, half-applied work, wrong answers); any one fails the test.
#[derive(Clone, Default)]
struct Problems(Arc<Mutex<Vec<String>>>);

impl Problems {
    fn push(&self, p: String) {
        self.0.lock().unwrap().push(p);
    }
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

// ---------------------------------------------------------------- load

/// What every load worker shares.
#[derive(Clone)]
struct Load {
    wire: Arc<Wire>,
    model: Model,
    stop: Arc<AtomicBool>,
    counts: Arc<LoadCounts>,
    problems: Problems,
    cycle: usize,
}

impl Load {
    fn target(&self) -> (String, u64, usize, String) {
        let m = self.model.lock().unwrap();
        (m.actor_id.clone(), m.generation, m.index, m.name.clone())
    }
}

/// Autocommit single-row inserts, one at a time; many of these run at once.
async fn write_worker(l: Load) {
    let (actor_id, generation, actor, name) = l.target();
    while !l.stop.load(Relaxed) {
        let id = {
            let mut m = l.model.lock().unwrap();
            m.next_write += 1;
            let id = m.next_write;
            m.writes.insert(id, Entry { fate: Fate::Unknown, cycle: l.cycle });
            id
        };
        l.counts.writes_sent.fetch_add(1, Relaxed);
        let params = vec![Value::Integer(id), Value::Text(write_payload(actor, id))];
        let answer =
            l.wire.execute(&actor_id, generation, "INSERT INTO w (id, payload) VALUES (?, ?)", params, true).await;
        let fate = match answer {
            Err(NoAnswer) => return,
            Ok(SqliteExecuteResult::ExecuteResult(r)) if r.changes == 1 => {
                l.counts.writes_acked.fetch_add(1, Relaxed);
                Fate::Acked
            }
            Ok(SqliteExecuteResult::SqliteError(e)) => {
                l.problems.push(format!("{name}: write {id} failed under plain load: {e:?}"));
                if e.committed == Some(false) {
                    l.counts.writes_refused.fetch_add(1, Relaxed);
                    Fate::Refused
                } else {
                    Fate::Unknown
                }
            }
            Ok(other) => {
                l.problems.push(format!("{name}: write {id} answered {other:?}"));
                Fate::Unknown
            }
        };
        l.model.lock().unwrap().writes.insert(id, Entry { fate, cycle: l.cycle });
    }
}

/// The SQL of transaction `tx`: its members' rows and the counter update, in one `Exec`.
fn tx_sql(tx: i64, members: i64, plan: TxPlan, rng: &mut Rng) -> String {
    let counter = format!("UPDATE counter SET n = n + {members}, txs = txs + 1 WHERE id = 1;");
    let counter_first = rng.below(2) == 0;
    let fail_before = 1 + rng.below(members as u64) as i64; // the duplicate comes after this many members
    let mut sql = String::from("BEGIN;");
    if counter_first {
        sql.push_str(&counter);
    }
    for m in 0..members {
        if plan == TxPlan::FailMidway && m == fail_before {
            let _ = write!(sql, "INSERT INTO tx_rows VALUES ({tx}, 0, {members}, 'duplicate');");
        }
        let pad = "p".repeat(rng.below(400) as usize);
        let _ = write!(sql, "INSERT INTO tx_rows VALUES ({tx}, {m}, {members}, '{pad}');");
    }
    if plan == TxPlan::FailMidway && fail_before == members {
        let _ = write!(sql, "INSERT INTO tx_rows VALUES ({tx}, 0, {members}, 'duplicate');");
    }
    if !counter_first {
        sql.push_str(&counter);
    }
    if plan != TxPlan::NoCommit {
        sql.push_str("COMMIT;");
    }
    sql
}

/// Multi-statement transactions, some built to fail.
async fn tx_worker(l: Load, mut rng: Rng) {
    let (actor_id, generation, _, name) = l.target();
    while !l.stop.load(Relaxed) {
        let plan = match rng.below(20) {
            0..=2 => TxPlan::FailMidway,
            3 => TxPlan::NoCommit,
            _ => TxPlan::Commit,
        };
        let members = 2 + rng.below(5) as i64;
        let tx = {
            let mut m = l.model.lock().unwrap();
            m.next_tx += 1;
            let tx = m.next_tx;
            m.txs.insert(tx, TxRecord { members, plan, fate: Fate::Unknown, cycle: l.cycle });
            tx
        };
        l.counts.txs_sent.fetch_add(1, Relaxed);
        let sql = tx_sql(tx, members, plan, &mut rng);
        let answer = match l.wire.exec(&actor_id, generation, &sql).await {
            Err(NoAnswer) => return,
            Ok(a) => a,
        };
        let fate = match (plan, answer) {
            (TxPlan::Commit, SqliteExecResult::QueryResult(_)) => {
                l.counts.txs_committed.fetch_add(1, Relaxed);
                Fate::Acked
            }
            (TxPlan::FailMidway | TxPlan::NoCommit, SqliteExecResult::SqliteError(e)) => {
                let expected =
                    if plan == TxPlan::FailMidway { SqliteErrorCode::Sqlite } else { SqliteErrorCode::InvalidRequest };
                if e.code != expected {
                    l.problems.push(format!(
                        "{name}: tx {tx} ({plan:?}) failed with {:?}, expected {expected:?}: {e:?}",
                        e.code
                    ));
                }
                if e.committed == Some(false) {
                    l.counts.txs_failed.fetch_add(1, Relaxed);
                    Fate::Refused
                } else {
                    l.problems.push(format!(
                        "{name}: tx {tx} ({plan:?}) failed with committed {:?}, expected false",
                        e.committed
                    ));
                    Fate::Unknown
                }
            }
            (TxPlan::Commit, SqliteExecResult::SqliteError(e)) => {
                l.problems.push(format!("{name}: tx {tx} failed under plain load: {e:?}"));
                if e.committed == Some(false) {
                    l.counts.txs_failed.fetch_add(1, Relaxed);
                    Fate::Refused
                } else {
                    Fate::Unknown
                }
            }
            (plan, other) => {
                l.problems.push(format!("{name}: tx {tx} ({plan:?}) answered {other:?}"));
                Fate::Unknown
            }
        };
        l.model.lock().unwrap().txs.get_mut(&tx).expect("recorded").fate = fate;
    }
}

/// KV puts: one key, or an atomic batch of 2–4.
async fn kv_worker(l: Load, mut rng: Rng) {
    let (actor_id, generation, _, name) = l.target();
    while !l.stop.load(Relaxed) {
        let n = 1 + rng.below(4);
        let (batch, keys) = {
            let mut m = l.model.lock().unwrap();
            m.next_kv += 1;
            let batch = m.next_kv;
            let keys: Vec<Vec<u8>> = (0..n).map(|j| format!("b{batch:08}/{j}").into_bytes()).collect();
            m.kv.insert(batch, KvRecord { keys: keys.clone(), fate: Fate::Unknown, cycle: l.cycle });
            (batch, keys)
        };
        l.counts.kv_sent.fetch_add(1, Relaxed);
        let data = if n == 1 {
            KvRequestData::KvPut(KvPut { value: kv_value(&keys[0]), key: keys[0].clone() })
        } else {
            KvRequestData::KvPutBatch(KvPutBatch {
                entries: keys.iter().map(|k| KvEntry { key: k.clone(), value: kv_value(k) }).collect(),
            })
        };
        let fate = match l.wire.kv(&actor_id, generation, data).await {
            Err(NoAnswer) => return,
            Ok(KvResponseData::KvPutResponse | KvResponseData::KvPutBatchResponse) => {
                l.counts.kv_acked.fetch_add(1, Relaxed);
                Fate::Acked
            }
            Ok(KvResponseData::KvErrorResponse(e)) => {
                l.problems.push(format!("{name}: KV batch {batch} failed under plain load: {e:?}"));
                l.counts.kv_refused.fetch_add(1, Relaxed);
                // No KV error carries a "committed" flag; a refused put must not be half there either way.
                Fate::Unknown
            }
            Ok(other) => {
                l.problems.push(format!("{name}: KV batch {batch} answered {other:?}"));
                Fate::Unknown
            }
        };
        l.model.lock().unwrap().kv.get_mut(&batch).expect("recorded").fate = fate;
    }
}

// ---------------------------------------------------------------- verification

/// Waits for `f`, failing the test if the engine does not answer at all.
async fn answered<T>(what: &str, f: impl std::future::Future<Output = Result<T, NoAnswer>>) -> T {
    match tokio::time::timeout(HANG, f).await {
        Ok(Ok(v)) => v,
        Ok(Err(NoAnswer)) => panic!("{what}: the connection closed without an answer"),
        Err(_) => panic!("{what}: no answer within {HANG:?} (hung engine?)"),
    }
}

async fn read(wire: &Wire, m: &ActorModel, sql: &str, params: Vec<Value>) -> Result<ExecuteResult, String> {
    let what = format!("{}: {sql}", m.name);
    match answered(&what, wire.execute(&m.actor_id, m.generation, sql, params, false)).await {
        SqliteExecuteResult::ExecuteResult(r) => Ok(r),
        other => Err(format!("{what} failed: {other:?}")),
    }
}

fn int(v: &Value) -> i64 {
    match v {
        Value::Integer(i) => *i,
        other => panic!("expected an integer, got {other:?}"),
    }
}

/// Checks one actor's database and KV store against the model, pushing every
/// discrepancy to `problems`, and resolves what was unknown.
///
/// A full pass checks everything row by row and key by key; otherwise what an earlier pass
/// resolved is checked by aggregate (rows) or by sample (KV). Nothing is ever rewritten, so a
/// loss in any cycle is still a loss at the final, full pass.
async fn verify(wire: &Wire, m: &mut ActorModel, problems: &Problems, full: bool, sample: &mut Rng) -> Checked {
    let mut c = Checked::default();
    let name = m.name.clone();

    // 1. The database file is sound.
    match read(wire, m, "PRAGMA integrity_check", vec![]).await {
        Ok(r) if r.rows == vec![vec![Value::Text("ok".into())]] => c.integrity_ok += 1,
        Ok(r) => problems.push(format!("{name}: integrity_check answered {:?}", r.rows)),
        Err(e) => problems.push(e),
    }

    // 2. Single-row writes. Rows past the watermark (or all, on a full pass) are read one by one:
    //    each was sent, was not refused, carries its payload; each acknowledged one is there.
    let from = if full { 0 } else { m.writes_verified_upto };
    let mut seen = HashSet::new();
    let mut after = from;
    loop {
        let params = vec![Value::Integer(after), Value::Integer(PAGE)];
        let page = match read(wire, m, "SELECT id, payload FROM w WHERE id > ? ORDER BY id LIMIT ?", params).await {
            Ok(r) => r,
            Err(e) => {
                problems.push(e);
                return c;
            }
        };
        for row in &page.rows {
            let id = int(&row[0]);
            after = id;
            seen.insert(id);
            c.rows_read += 1;
            match m.writes.get(&id) {
                None => problems.push(format!("{name}: row {id} is present but was never sent")),
                Some(e) if e.fate.must_not_exist() => {
                    problems.push(format!("{name}: write {id} (cycle {}, {:?}) is present", e.cycle, e.fate))
                }
                Some(_) => {}
            }
            let expected = write_payload(m.index, id);
            if row[1] != Value::Text(expected.clone()) {
                problems.push(format!("{name}: write {id} has payload {:?}, expected {expected:?}", row[1]));
            }
        }
        if (page.rows.len() as i64) < PAGE {
            break;
        }
    }
    //    Rows up to the watermark were checked one by one before. Ids are dense (every id up to
    //    `next_write` was sent once), so "as many rows as must exist, none of those that must not"
    //    means exactly those rows; their payload bytes must add up too.
    if from > 0 {
        match read(wire, m, "SELECT count(*), total(length(payload)) FROM w WHERE id <= ?", vec![Value::Integer(from)])
            .await
        {
            Ok(r) => {
                let count = int(&r.rows[0][0]);
                let bytes = match r.rows[0][1] {
                    Value::Float(f) => f as i64,
                    ref other => int(other),
                };
                c.acked_writes_by_count += count as u64;
                if (count, bytes) != (m.old_rows, m.old_payload_bytes) {
                    problems.push(format!(
                        "{name}: LOST or changed earlier writes: {count} rows / {bytes} payload bytes up to id {from}, expected {} / {} (the final pass names them)",
                        m.old_rows, m.old_payload_bytes
                    ));
                }
            }
            Err(e) => problems.push(e),
        }
        for chunk in m.old_absent.chunks(500) {
            let marks = vec!["?"; chunk.len()].join(", ");
            let sql = format!("SELECT id FROM w WHERE id IN ({marks})");
            match read(wire, m, &sql, chunk.iter().map(|i| Value::Integer(*i)).collect()).await {
                Ok(r) => {
                    for row in &r.rows {
                        let id = int(&row[0]);
                        problems
                            .push(format!("{name}: write {id} ({:?}) is present", m.writes.get(&id).map(|e| e.fate)));
                    }
                }
                Err(e) => problems.push(e),
            }
        }
    }
    for (id, e) in m.writes.range_mut(from + 1..) {
        let present = seen.contains(id);
        match e.fate {
            f if f.must_exist() && !present => {
                problems.push(format!("{name}: LOST acknowledged write {id} (cycle {}, {f:?})", e.cycle))
            }
            f if f.must_exist() => c.acked_writes += 1,
            f if f.must_not_exist() => c.refused_writes_absent += u64::from(e.fate == Fate::Refused),
            _ => {
                if present {
                    c.unknown_writes_present += 1;
                } else {
                    c.unknown_writes_absent += 1;
                }
                e.fate = e.fate.resolve(present);
            }
        }
    }
    let (upto, mut rows, mut bytes, mut absent) = (m.next_write, 0, 0, Vec::new());
    for (id, e) in m.writes.range(m.writes_verified_upto + 1..) {
        if e.fate.must_exist() {
            rows += 1;
            bytes += write_payload(m.index, *id).len() as i64;
        } else {
            absent.push(*id);
        }
    }
    m.old_rows += rows;
    m.old_payload_bytes += bytes;
    m.old_absent.extend(absent);
    m.writes_verified_upto = upto;

    // 3. Transactions: each present one whole (every member, once), the counter agreeing with them.
    let groups = match read(
        wire,
        m,
        "SELECT tx, count(*), min(member), max(member), min(members), max(members) FROM tx_rows GROUP BY tx ORDER BY tx",
        vec![],
    )
    .await
    {
        Ok(r) => r,
        Err(e) => {
            problems.push(e);
            return c;
        }
    };
    let mut present_txs = HashSet::new();
    let (mut sum_members, mut count_txs) = (0i64, 0i64);
    for row in &groups.rows {
        let [tx, count, min_m, max_m, min_k, max_k] = [0, 1, 2, 3, 4, 5].map(|i| int(&row[i]));
        present_txs.insert(tx);
        sum_members += count;
        count_txs += 1;
        let Some(rec) = m.txs.get(&tx) else {
            problems.push(format!("{name}: transaction {tx} is present but was never sent"));
            continue;
        };
        if rec.fate.must_not_exist() {
            problems.push(format!(
                "{name}: transaction {tx} (cycle {}, {:?}, {:?}) is present",
                rec.cycle, rec.plan, rec.fate
            ));
        }
        if (count, min_m, max_m, min_k, max_k) != (rec.members, 0, rec.members - 1, rec.members, rec.members) {
            problems.push(format!(
                "{name}: HALF-APPLIED transaction {tx} (cycle {}, {:?}): {count} of {} members (member {min_m}..={max_m}, members {min_k}..={max_k})",
                rec.cycle, rec.fate, rec.members
            ));
        }
    }
    match read(wire, m, "SELECT n, txs FROM counter WHERE id = 1", vec![]).await {
        Ok(r) if r.rows.len() == 1 => {
            let (n, txs) = (int(&r.rows[0][0]), int(&r.rows[0][1]));
            if (n, txs) != (sum_members, count_txs) {
                problems.push(format!(
                    "{name}: HALF-APPLIED transaction: counter says {txs} transactions / {n} members, the rows {count_txs} / {sum_members}"
                ));
            }
        }
        Ok(r) => problems.push(format!("{name}: counter has {} rows", r.rows.len())),
        Err(e) => problems.push(e),
    }
    for (tx, rec) in m.txs.iter_mut() {
        let present = present_txs.contains(tx);
        match rec.fate {
            f if f.must_exist() && !present => {
                problems.push(format!("{name}: LOST acknowledged transaction {tx} (cycle {}, {f:?})", rec.cycle))
            }
            f if f.must_exist() => c.acked_txs += 1,
            f if f.must_not_exist() => c.refused_txs_absent += u64::from(rec.fate == Fate::Refused),
            _ => {
                if present {
                    c.unknown_txs_present += 1;
                } else {
                    c.unknown_txs_absent += 1;
                }
                rec.fate = rec.fate.resolve(present);
            }
        }
    }

    // 4. KV batches: all keys with their values, or none. Batches past the watermark (or all, on
    //    a full pass) and a sample of the earlier ones.
    let kv_from = if full { 0 } else { m.kv_verified_upto };
    let mut batches: Vec<u64> = m.kv.range(kv_from + 1..).map(|(b, _)| *b).collect();
    if kv_from > 0 {
        for _ in 0..KV_SAMPLE {
            batches.push(1 + sample.below(kv_from));
        }
    }
    let keys: Vec<Vec<u8>> = batches.iter().flat_map(|b| m.kv[b].keys.iter().cloned()).collect();
    let mut values: HashMap<Vec<u8>, Option<Vec<u8>>> = HashMap::with_capacity(keys.len());
    for chunk in keys.chunks(KV_CHUNK) {
        let data = KvRequestData::KvGetBatch(KvGetBatch { keys: chunk.to_vec() });
        match answered(&format!("{name}: KV get batch"), wire.kv(&m.actor_id, m.generation, data)).await {
            KvResponseData::KvGetBatchResponse(r) if r.values.len() == chunk.len() => {
                values.extend(chunk.iter().cloned().zip(r.values));
            }
            other => {
                problems.push(format!("{name}: KV get batch answered {other:?}"));
                return c;
            }
        }
    }
    batches.sort_unstable();
    batches.dedup();
    for batch in batches {
        let rec = m.kv.get_mut(&batch).expect("a batch sent");
        let mut present = 0;
        for k in &rec.keys {
            match values.get(k).cloned().flatten() {
                Some(v) if v == kv_value(k) => present += 1,
                Some(v) => problems.push(format!(
                    "{name}: KV key {} has a {}-byte value that is not the one written",
                    String::from_utf8_lossy(k),
                    v.len()
                )),
                None => {}
            }
        }
        let whole = present == rec.keys.len();
        if present != 0 && !whole {
            problems.push(format!(
                "{name}: HALF-APPLIED KV batch {batch} (cycle {}, {:?}): {present} of {} keys",
                rec.cycle,
                rec.fate,
                rec.keys.len()
            ));
        }
        match rec.fate {
            f if f.must_exist() && !whole => {
                problems.push(format!("{name}: LOST acknowledged KV batch {batch} (cycle {}, {f:?})", rec.cycle))
            }
            f if f.must_exist() => c.acked_kv_batches += 1,
            f if f.must_not_exist() && present > 0 => {
                problems.push(format!("{name}: KV batch {batch} (cycle {}, {f:?}) is present", rec.cycle))
            }
            f if f.must_not_exist() => {}
            _ => {
                if whole {
                    c.unknown_kv_present += 1;
                } else {
                    c.unknown_kv_absent += 1;
                }
                rec.fate = rec.fate.resolve(whole);
            }
        }
    }
    m.kv_verified_upto = m.next_kv;
    c
}

// ---------------------------------------------------------------- the run

/// A temporary data directory kept (and its path printed) when the test fails.
struct DataDir(Option<tempfile::TempDir>);

impl DataDir {
    fn path(&self) -> &std::path::Path {
        self.0.as_ref().expect("present").path()
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(d) = self.0.take() {
                eprintln!("crash harness: data directory kept at {}", d.keep().display());
            }
        }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| v.trim().parse().unwrap_or_else(|_| panic!("{name} must be a number, got {v:?}")))
}

/// Connects one envoy per connection slot and places every actor on its slot's envoy,
/// checking that each generation is above any seen before.
async fn place(engine: &EngineProcess, models: &[Model], round: usize, problems: &Problems) -> Vec<Arc<Wire>> {
    let mut wires = Vec::new();
    for conn in 0..CONNECTIONS {
        let wire =
            Wire::connect(engine.addr(), NAMESPACE, &format!("crash-envoy-{conn}-{round}")).await.expect("connects");
        wires.push(Arc::new(wire));
    }
    for model in models {
        let (name, index, before) = {
            let m = model.lock().unwrap();
            (m.name.clone(), m.index, m.generation)
        };
        let wire = &wires[index % CONNECTIONS];
        match answered(&format!("{name}: get-or-create"), wire.get_or_create(&name, "")).await {
            GetOrCreateActorResult::GetOrCreateActorOk(ok) => {
                if ok.generation <= before {
                    problems
                        .push(format!("{name}: generation went from {before} to {} across a restart", ok.generation));
                }
                let mut m = model.lock().unwrap();
                if !m.actor_id.is_empty() && m.actor_id != ok.actor_id {
                    problems.push(format!("{name}: id changed from {} to {}", m.actor_id, ok.actor_id));
                }
                m.actor_id = ok.actor_id;
                m.generation = m.generation.max(ok.generation);
            }
            GetOrCreateActorResult::GetOrCreateActorError(e) => panic!("{name}: get-or-create failed: {e:?}"),
        }
    }
    wires
}

/// Verifies every actor; prints one line and fails on any problem.
async fn verify_all(
    wires: &[Arc<Wire>],
    models: &[Model],
    problems: &Problems,
    full: bool,
    sample: &mut Rng,
    ctx: &str,
) -> Checked {
    let mut total = Checked::default();
    for model in models {
        let mut m = model.lock().unwrap().clone_for_verify();
        let c = verify(&wires[m.index % CONNECTIONS], &mut m, problems, full, sample).await;
        model.lock().unwrap().restore_after_verify(m);
        total.add(&c);
    }
    eprintln!(
        "  verified, {} pass: integrity ok {}/{}; {} rows read; acked writes present {} one by one + {} by count \
         (refused absent {}, unknown present {} / absent {}); txs acked present {} (refused absent {}, unknown present {} / absent {}); \
         kv batches acked present {} (unknown present {} / absent {}); generations {:?}",
        if full { "full" } else { "incremental" },
        total.integrity_ok,
        models.len(),
        total.rows_read,
        total.acked_writes,
        total.acked_writes_by_count,
        total.refused_writes_absent,
        total.unknown_writes_present,
        total.unknown_writes_absent,
        total.acked_txs,
        total.refused_txs_absent,
        total.unknown_txs_present,
        total.unknown_txs_absent,
        total.acked_kv_batches,
        total.unknown_kv_present,
        total.unknown_kv_absent,
        models.iter().map(|m| m.lock().unwrap().generation).collect::<Vec<_>>(),
    );
    fail_on(problems, ctx);
    total
}

fn fail_on(problems: &Problems, ctx: &str) {
    let found = problems.take();
    if !found.is_empty() {
        let shown: Vec<&String> = found.iter().take(40).collect();
        panic!(
            "{} problem(s) {ctx}:\n  {}",
            found.len(),
            shown.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n  ")
        );
    }
}

impl ActorModel {
    /// Moves the model out for a verification that awaits (the lock is not held across awaits).
    fn clone_for_verify(&mut self) -> ActorModel {
        ActorModel {
            index: self.index,
            name: self.name.clone(),
            actor_id: self.actor_id.clone(),
            generation: self.generation,
            writes: std::mem::take(&mut self.writes),
            next_write: self.next_write,
            txs: std::mem::take(&mut self.txs),
            next_tx: self.next_tx,
            kv: std::mem::take(&mut self.kv),
            next_kv: self.next_kv,
            writes_verified_upto: self.writes_verified_upto,
            old_rows: self.old_rows,
            old_payload_bytes: self.old_payload_bytes,
            old_absent: std::mem::take(&mut self.old_absent),
            kv_verified_upto: self.kv_verified_upto,
        }
    }
    fn restore_after_verify(&mut self, m: ActorModel) {
        *self = m;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_write_load_loses_nothing_acknowledged() {
    let seed = env_u64("ENVOY_CRASH_SEED").unwrap_or_else(|| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
        mix(now.as_nanos() as u64 ^ u64::from(std::process::id()))
    });
    let cycles = env_u64("ENVOY_CRASH_CYCLES").unwrap_or(5) as usize;
    eprintln!("crash harness: seed {seed} (replay: ENVOY_CRASH_SEED={seed}), {cycles} cycle(s), {ACTORS} actors on {CONNECTIONS} connections");
    let dir = DataDir(Some(tempfile::tempdir().expect("temp dir")));
    let started = Instant::now();
    let mut rng = Rng::new(seed);
    let models: Vec<Model> = (0..ACTORS).map(|i| Arc::new(Mutex::new(ActorModel::new(i)))).collect();
    let problems = Problems::default();
    let mut totals = Checked::default();
    let mut totals_load = [0u64; 9];
    let (mut round, mut extra_kills) = (0usize, 0u64);

    for cycle in 0..=cycles {
        let last = cycle == cycles;
        let durability = if cycle % 3 == 1 { "os" } else { "fsync" };
        let ctx = format!("(seed {seed}, cycle {cycle}, data {})", dir.path().display());
        let mut engine = EngineProcess::start(dir.path(), &["--durability", durability]).expect("the engine starts");
        round += 1;
        let mut wires = place(&engine, &models, round, &problems).await;
        if cycle > 0 && rng.below(5) == 0 {
            // Now and then a second crash while the restarted engine opens the databases
            // (WAL recovery, first reads), with nothing that writes in flight.
            let after = Duration::from_millis(rng.below(30));
            let mut probes = Vec::new();
            for model in &models {
                let (id, generation, name, index) = {
                    let m = model.lock().unwrap();
                    (m.actor_id.clone(), m.generation, m.name.clone(), m.index)
                };
                let (wire, problems) = (wires[index % CONNECTIONS].clone(), problems.clone());
                probes.push(tokio::spawn(async move {
                    match wire.execute(&id, generation, "PRAGMA integrity_check", vec![], false).await {
                        Ok(SqliteExecuteResult::ExecuteResult(r)) if r.rows == vec![vec![Value::Text("ok".into())]] => {
                        }
                        Err(NoAnswer) => {}
                        Ok(other) => {
                            problems.push(format!("{name}: integrity_check during recovery answered {other:?}"))
                        }
                    }
                }));
            }
            tokio::time::sleep(after).await;
            let status = engine.kill().expect("SIGKILL");
            for p in probes {
                tokio::time::timeout(HANG, p).await.expect("a probe ends once its socket is gone").expect("probe");
            }
            drop(wires);
            extra_kills += 1;
            eprintln!("  extra SIGKILL {} ms into the restart, databases opening ({status})", after.as_millis());
            engine = EngineProcess::start(dir.path(), &["--durability", durability]).expect("the engine starts");
            round += 1;
            wires = place(&engine, &models, round, &problems).await;
        }
        if cycle == 0 {
            let m0 = models[0].lock().unwrap().generation;
            assert_eq!(m0, 1, "a fresh data directory starts at generation 1");
            for model in &models {
                let (id, generation, index) = {
                    let m = model.lock().unwrap();
                    (m.actor_id.clone(), m.generation, m.index)
                };
                match answered("schema", wires[index % CONNECTIONS].exec(&id, generation, SCHEMA)).await {
                    SqliteExecResult::QueryResult(_) => {}
                    other => panic!("schema: {other:?}"),
                }
            }
        } else {
            let mut sample = Rng::derive(seed, &[3, cycle as u64]);
            let c = verify_all(&wires, &models, &problems, last, &mut sample, &ctx).await;
            totals.add(&c);
        }
        fail_on(&problems, &ctx);
        if last {
            drop(wires);
            drop(engine);
            break;
        }

        // Load, then SIGKILL at a random moment.
        let kill_after = Duration::from_millis(if rng.below(5) == 0 { rng.below(80) } else { 80 + rng.below(1400) });
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(LoadCounts::default());
        let mut workers = Vec::new();
        for model in &models {
            let index = model.lock().unwrap().index;
            let load = Load {
                wire: wires[index % CONNECTIONS].clone(),
                model: model.clone(),
                stop: stop.clone(),
                counts: counts.clone(),
                problems: problems.clone(),
                cycle,
            };
            for _ in 0..WRITERS_PER_ACTOR {
                workers.push(tokio::spawn(write_worker(load.clone())));
            }
            for w in 0..TX_WORKERS_PER_ACTOR {
                let r = Rng::derive(seed, &[1, cycle as u64, index as u64, w as u64]);
                workers.push(tokio::spawn(tx_worker(load.clone(), r)));
            }
            for w in 0..KV_WORKERS_PER_ACTOR {
                let r = Rng::derive(seed, &[2, cycle as u64, index as u64, w as u64]);
                workers.push(tokio::spawn(kv_worker(load.clone(), r)));
            }
        }
        let load_started = Instant::now();
        tokio::time::sleep(kill_after).await;
        let killed_at = load_started.elapsed();
        let status = engine.kill().expect("SIGKILL");
        stop.store(true, Relaxed);
        // Shown, not judged: what the engine complained about before it died.
        for line in engine.log_tail().iter().filter(|l| l.contains("ERROR") || l.contains("WARN")).take(5) {
            eprintln!("  engine log: {line}");
        }
        for w in workers {
            tokio::time::timeout(HANG, w).await.expect("a load worker ends once its socket is gone").expect("worker");
        }
        for w in &wires {
            if let Some(f) = w.fault() {
                problems.push(format!("protocol fault: {f}"));
            }
        }
        let n = |a: &AtomicU64| a.load(Relaxed);
        let load = [
            n(&counts.writes_sent),
            n(&counts.writes_acked),
            n(&counts.writes_refused),
            n(&counts.txs_sent),
            n(&counts.txs_committed),
            n(&counts.txs_failed),
            n(&counts.kv_sent),
            n(&counts.kv_acked),
            n(&counts.kv_refused),
        ];
        for (t, v) in totals_load.iter_mut().zip(load) {
            *t += v;
        }
        eprintln!(
            "cycle {cycle} [{durability}]: SIGKILL at {} ms of load (planned {} ms; {status}); writes acked {} / refused {} / unknown {}; \
             txs committed {} / failed {} / unknown {}; kv batches acked {} / refused {} / unknown {}",
            killed_at.as_millis(),
            kill_after.as_millis(),
            load[1],
            load[2],
            load[0] - load[1] - load[2],
            load[4],
            load[5],
            load[3] - load[4] - load[5],
            load[7],
            load[8],
            load[6] - load[7] - load[8],
        );
        fail_on(&problems, &ctx);
        drop(wires);
    }

    let rows_at_end: i64 = models.iter().map(|m| m.lock().unwrap().old_rows).sum();
    let t = &totals;
    eprintln!(
        "crash harness: seed {seed}: {cycles} SIGKILLs under load + {extra_kills} during restarts in {:.1} s; {} writes acknowledged; \
         {} acknowledged-write checks after restarts ({} one by one, {} by count); {rows_at_end} rows checked one by one at the end; \
         txs committed {} / failed as planned {} / sent {}; kv batches acked {} / sent {}; unanswered at the kill and found present / absent: \
         writes {} / {}, txs {} / {} (all whole), kv batches {} / {} (all whole); integrity_check ok {} times; no loss, nothing half-applied",
        started.elapsed().as_secs_f64(),
        totals_load[1],
        totals.acked_writes + totals.acked_writes_by_count,
        totals.acked_writes,
        totals.acked_writes_by_count,
        totals_load[4],
        totals_load[5],
        totals_load[3],
        totals_load[7],
        totals_load[6],
        t.unknown_writes_present,
        t.unknown_writes_absent,
        t.unknown_txs_present,
        t.unknown_txs_absent,
        t.unknown_kv_present,
        t.unknown_kv_absent,
        t.integrity_ok,
    );
}

/// The checks above can fail. Against a real engine, a model that claims more than the
/// database holds, or a database holding part of a transaction or KV batch, or work that
/// was refused, is reported — by the incremental pass (aggregates for earlier rows) and by
/// the full pass (row by row). This is what acknowledging before commit would look like
/// after a crash: an acknowledged row or transaction that is not there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checks_catch_loss_half_applied_and_refused_work() {
    let dir = DataDir(Some(tempfile::tempdir().expect("temp dir")));
    let engine = EngineProcess::start(dir.path(), &[]).expect("the engine starts");
    let model = Arc::new(Mutex::new(ActorModel::new(0)));
    let models = vec![model.clone()];
    let problems = Problems::default();
    let wires = place(&engine, &models, 0, &problems).await;
    fail_on(&problems, "placing");
    let wire = &wires[0];
    let (id, generation) = {
        let m = model.lock().unwrap();
        (m.actor_id.clone(), m.generation)
    };
    let sql = |s: String| {
        let (wire, id) = (wire.clone(), id.clone());
        async move {
            match answered(&s, wire.exec(&id, generation, &s)).await {
                SqliteExecResult::QueryResult(_) => {}
                other => panic!("{s}: {other:?}"),
            }
        }
    };
    let kv_put = |keys: Vec<Vec<u8>>| {
        let (wire, id) = (wire.clone(), id.clone());
        async move {
            let entries = keys.iter().map(|k| KvEntry { key: k.clone(), value: kv_value(k) }).collect();
            let answer =
                answered("kv put", wire.kv(&id, generation, KvRequestData::KvPutBatch(KvPutBatch { entries }))).await;
            assert_eq!(answer, KvResponseData::KvPutBatchResponse);
        }
    };
    let insert = |w: i64| format!("INSERT INTO w VALUES ({w}, '{}')", write_payload(0, w));
    sql(SCHEMA.to_string()).await;

    // Genuine, acknowledged work: three rows, one transaction, one KV batch.
    for w in 1..=3 {
        sql(insert(w)).await;
    }
    sql(tx_sql(1, 3, TxPlan::Commit, &mut Rng::new(7))).await;
    let batch1 = vec![b"b00000001/0".to_vec(), b"b00000001/1".to_vec()];
    kv_put(batch1.clone()).await;
    {
        let mut m = model.lock().unwrap();
        for w in 1..=3 {
            m.writes.insert(w, Entry { fate: Fate::Acked, cycle: 0 });
        }
        m.next_write = 3;
        m.txs.insert(1, TxRecord { members: 3, plan: TxPlan::Commit, fate: Fate::Acked, cycle: 0 });
        m.next_tx = 1;
        m.kv.insert(1, KvRecord { keys: batch1, fate: Fate::Acked, cycle: 0 });
        m.next_kv = 1;
    }
    let mut sample = Rng::new(1);
    verify_all(&wires, &models, &problems, false, &mut sample, "on genuine data").await;

    // Damage and lies, one of each kind.
    sql("DELETE FROM w WHERE id = 2".into()).await; // an earlier acknowledged row disappears
    sql(insert(5)).await; // a refused write is present
    sql("INSERT INTO tx_rows VALUES (2, 0, 3, ''); INSERT INTO tx_rows VALUES (2, 1, 3, '')".into()).await; // 2 of 3 members
    kv_put(vec![b"b00000002/0".to_vec()]).await; // 1 of 2 keys
    {
        let mut m = model.lock().unwrap();
        m.writes.insert(4, Entry { fate: Fate::Acked, cycle: 1 }); // "acknowledged", never written
        m.writes.insert(5, Entry { fate: Fate::Refused, cycle: 1 });
        m.next_write = 5;
        m.txs.insert(2, TxRecord { members: 3, plan: TxPlan::Commit, fate: Fate::Unknown, cycle: 1 });
        m.txs.insert(3, TxRecord { members: 2, plan: TxPlan::Commit, fate: Fate::Acked, cycle: 1 }); // never written
        m.next_tx = 3;
        let keys = |b: u64| (0..2).map(|j| format!("b{b:08}/{j}").into_bytes()).collect();
        m.kv.insert(2, KvRecord { keys: keys(2), fate: Fate::Unknown, cycle: 1 });
        m.kv.insert(3, KvRecord { keys: keys(3), fate: Fate::Acked, cycle: 1 }); // never written
        m.next_kv = 3;
    }
    let expect = |found: Vec<String>, wanted: &[&str]| {
        for w in wanted {
            assert!(found.iter().any(|p| p.contains(w)), "no problem mentions {w:?}; found: {found:#?}");
        }
    };
    let mut m = model.lock().unwrap().clone_for_verify();
    verify(wire, &mut m, &problems, false, &mut sample).await;
    expect(
        problems.take(),
        &[
            "LOST or changed earlier writes: 2 rows",
            "LOST acknowledged write 4",
            "write 5 (cycle 1, Refused) is present",
            "HALF-APPLIED transaction 2 (cycle 1, Unknown): 2 of 3 members",
            "counter says 1 transactions / 3 members, the rows 2 / 5",
            "LOST acknowledged transaction 3",
            "HALF-APPLIED KV batch 2 (cycle 1, Unknown): 1 of 2 keys",
            "LOST acknowledged KV batch 3",
        ],
    );
    // The full pass names the earlier row that went missing.
    verify(wire, &mut m, &problems, true, &mut sample).await;
    expect(problems.take(), &["LOST acknowledged write 2 (cycle 0, Acked)"]);
    drop(wires);

    // A generation not above the highest seen is reported.
    model.lock().unwrap().generation = 1000;
    drop(place(&engine, &models, 1, &problems).await);
    expect(problems.take(), &["generation went from 1000 to 2"]);
}
