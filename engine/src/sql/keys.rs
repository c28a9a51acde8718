//! Exactly-once request keys (protocol §9.3): where a key's outcome is kept,
//! how it is looked up, recorded, expired and evicted.
//!
//! **Where.** In the actor's own database file, in two tables the engine creates
//! on the first keyed write: [`KEYS_TABLE`] (one row per recorded key) and
//! [`STATE_TABLE`] (one row: the eviction watermark and the count). A key is
//! recorded by the same transaction as the write it stands for (inside the
//! group-commit member's savepoint), so a commit that fails loses both, and a
//! backup, a restore or an engine restart carries both.
//!
//! **Hidden from actor SQL.** Both names start with `sqlite_` ([`RESERVED_PREFIX`]):
//! SQLite itself then refuses `CREATE`, `DROP`, `ALTER`, indexes and triggers on
//! them to every connection (the engine creates them with the schema briefly
//! writable, see [`ensure_tables`]), and tools that list a schema skip `sqlite_%`.
//! The sandbox refuses every other access by actor SQL (read, insert, update,
//! delete, PRAGMAs naming them, reads through views or triggers);
//! the engine's own statements pass through [`Sandbox::engine`]. The visible
//! trace: their two rows in `sqlite_schema` (and `PRAGMA table_list`), and the
//! pages they use.
//!
//! **Retention.** A key is answered `REQUEST_KEY_EXPIRED` when the time in it is
//! older than `request_key_retention`, recorded or not (recorded ones that old
//! are deleted on the next record). At most `request_keys_per_actor` keys are kept
//! (plus up to a sixteenth more between evictions, so a busy actor pays one range
//! delete per many writes): past it the oldest (by the time in the key) are deleted and the watermark
//! keeps the newest deleted time, so a key not newer than it that is not
//! recorded answers `REQUEST_KEY_EXPIRED` — never a second execution.

use super::sandbox::Sandbox;
use envoy_protocol::{
    decode_to_envoy, encode_to_envoy, DecodeLimits, RequestKeyOutcome, SqliteBatchResult, SqliteErrorCode,
    SqliteExecResult, SqliteExecuteResult, ToEnvoy, Value,
};
use rusqlite::{ffi, params, Connection, OptionalExtension};
use sha1::{Digest, Sha1};
use std::time::Duration;

/// Every table the engine keeps in an actor's database starts with this; the
/// sandbox refuses actor SQL any access to such a table.
pub const RESERVED_PREFIX: &str = "sqlite_envoy_";
/// One row per recorded key: `(made_ms, key)` → digest and outcome.
pub const KEYS_TABLE: &str = "sqlite_envoy_request_keys";
/// One row: the eviction watermark and how many keys are recorded.
pub const STATE_TABLE: &str = "sqlite_envoy_request_key_state";

/// Length of a request key (bytes 0–5: big-endian Unix ms; 6–15: random).
pub const KEY_BYTES: usize = 16;

/// The key settings, copied from the engine config.
#[derive(Debug, Clone)]
pub struct KeySettings {
    /// How long a key is answered, from the time in it (`request_key_retention`).
    pub retention: Duration,
    /// Most keys kept per actor (`request_keys_per_actor`).
    pub per_actor: usize,
    /// Largest recorded answer kept with its rows (`max_recorded_result_bytes`).
    pub max_recorded_result_bytes: u32,
}

impl KeySettings {
    pub fn from_config(c: &crate::config::Config) -> Self {
        Self {
            retention: c.request_key_retention,
            per_actor: c.request_keys_per_actor,
            max_recorded_result_bytes: c.max_recorded_result_bytes,
        }
    }

    fn retention_ms(&self) -> u64 {
        u64::try_from(self.retention.as_millis()).unwrap_or(u64::MAX)
    }
}

/// A request's key, checked at admission, with the digest of the request it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedRequest {
    /// The 16 key bytes as sent.
    pub key: Vec<u8>,
    /// The time in the key (Unix ms): its age decides expiry and eviction order.
    pub made_ms: u64,
    /// SHA-1 of what the request asks (actor, kind, SQL, parameters, mode): a
    /// recorded key with another digest answers REQUEST_KEY_CONFLICT.
    pub digest: [u8; 20],
}

/// The engine's clock in Unix ms.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Checks a key at admission: 16 bytes, its time not more than the retention
/// ahead of the engine's clock. Err is the INVALID_REQUEST message.
pub fn admit(key: Vec<u8>, digest: [u8; 20], settings: &KeySettings) -> Result<KeyedRequest, String> {
    if key.len() != KEY_BYTES {
        return Err(format!("a request key is exactly {KEY_BYTES} bytes, not {}", key.len()));
    }
    let mut t = [0u8; 8];
    t[2..].copy_from_slice(&key[..6]);
    let made_ms = u64::from_be_bytes(t);
    if made_ms > now_ms().saturating_add(settings.retention_ms()) {
        return Err("the request key's time is further ahead of the engine's clock than the key retention".into());
    }
    Ok(KeyedRequest { key, made_ms, digest })
}

/// Builds the digest of a request: feed its parts in a fixed order.
pub struct RequestDigest(Sha1);

impl RequestDigest {
    /// Starts a digest for a request of `kind` on `actor_id`.
    pub fn new(kind: &str, actor_id: &str) -> Self {
        let mut d = Self(Sha1::new());
        d.text(kind);
        d.text(actor_id);
        d
    }

    /// A length-prefixed text.
    pub fn text(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }

    /// Length-prefixed bytes.
    pub fn bytes(&mut self, b: &[u8]) {
        self.0.update((b.len() as u64).to_le_bytes());
        self.0.update(b);
    }

    /// A count (of statements).
    pub fn count(&mut self, n: usize) {
        self.0.update((n as u64).to_le_bytes());
    }

    /// One byte (flags, modes).
    pub fn tag(&mut self, t: u8) {
        self.0.update([t]);
    }

    /// Parameters, each tagged by type (floats by their bits).
    pub fn params(&mut self, params: &[Value]) {
        self.0.update((params.len() as u64).to_le_bytes());
        for p in params {
            match p {
                Value::Null => self.tag(0),
                Value::Integer(i) => {
                    self.tag(1);
                    self.0.update(i.to_le_bytes());
                }
                Value::Float(f) => {
                    self.tag(2);
                    self.0.update(f.to_bits().to_le_bytes());
                }
                Value::Text(t) => {
                    self.tag(3);
                    self.text(t);
                }
                Value::Blob(b) => {
                    self.tag(4);
                    self.bytes(b);
                }
            }
        }
    }

    pub fn finish(self) -> [u8; 20] {
        self.0.finalize().into()
    }
}

/// What the lookup of a key found.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// Not recorded and not expired: run the request.
    Fresh,
    /// Recorded for this very request: answer with it, run nothing.
    Replay(Recorded),
    /// Nothing ran; the answer is this error (REQUEST_KEY_EXPIRED or REQUEST_KEY_CONFLICT).
    Refused(envoy_protocol::SqliteError),
}

/// A recorded outcome.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The recorded answer (request id 0, zero cost, no key outcome): its `result` is replayed.
    pub answer: ToEnvoy,
    /// Whether its rows were dropped (the answer was larger than `max_recorded_result_bytes`).
    pub without_rows: bool,
}

impl Recorded {
    /// The key outcome a replay reports.
    pub fn outcome(&self) -> RequestKeyOutcome {
        if self.without_rows {
            RequestKeyOutcome::ReplayedWithoutRows
        } else {
            RequestKeyOutcome::Replayed
        }
    }
}

fn sql_err(code: SqliteErrorCode, message: &str) -> envoy_protocol::SqliteError {
    crate::sql::executor::err(code, message, Some(false))
}

fn internal(e: rusqlite::Error) -> envoy_protocol::SqliteError {
    sql_err(SqliteErrorCode::Internal, &format!("request key bookkeeping failed: {e}"))
}

/// Whether the key tables exist in `conn`'s database.
fn tables_exist(conn: &Connection) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name IN (?1, ?2)")?
        .query_row(params![KEYS_TABLE, STATE_TABLE], |r| r.get::<_, i64>(0))
        .map(|n| n == 2)
}

fn db_flag(conn: &Connection, op: i32, on: bool) -> rusqlite::Result<()> {
    // SAFETY: these db_config verbs take (int, int*); the handle is open for the call.
    let rc = unsafe { ffi::sqlite3_db_config(conn.handle(), op, i32::from(on), std::ptr::null_mut::<i32>()) };
    if rc == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(rusqlite::Error::SqliteFailure(ffi::Error::new(rc), Some(format!("sqlite3_db_config({op})"))))
    }
}

/// Creates the key tables if they are missing, in the open transaction (so a
/// rolled-back first record takes them away too). `sqlite_`-prefixed names are
/// reserved to SQLite: the engine lifts defensive mode and makes the schema
/// writable for this one statement, then restores both.
pub fn ensure_tables(conn: &Connection, sandbox: &Sandbox) -> rusqlite::Result<()> {
    if tables_exist(conn)? {
        return Ok(());
    }
    db_flag(conn, ffi::SQLITE_DBCONFIG_DEFENSIVE, false)?;
    db_flag(conn, ffi::SQLITE_DBCONFIG_WRITABLE_SCHEMA, true)?;
    let r = sandbox.engine(|| {
        conn.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {KEYS_TABLE}(
               made_ms INTEGER NOT NULL, key BLOB NOT NULL, digest BLOB NOT NULL,
               answer BLOB NOT NULL, without_rows INTEGER NOT NULL,
               PRIMARY KEY (made_ms, key)) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS {STATE_TABLE}(
               id INTEGER PRIMARY KEY CHECK (id = 1), watermark_ms INTEGER NOT NULL, count INTEGER NOT NULL);
             INSERT OR IGNORE INTO {STATE_TABLE}(id, watermark_ms, count) VALUES (1, -1, 0);"
        ))
    });
    let w = db_flag(conn, ffi::SQLITE_DBCONFIG_WRITABLE_SCHEMA, false);
    let d = db_flag(conn, ffi::SQLITE_DBCONFIG_DEFENSIVE, true);
    r.and(w).and(d)
}

/// Looks `k` up (on the writer, under its lock, inside the request's savepoint).
pub fn lookup(conn: &Connection, sandbox: &Sandbox, k: &KeyedRequest, settings: &KeySettings) -> Lookup {
    let expired = || {
        Lookup::Refused(sql_err(
            SqliteErrorCode::RequestKeyExpired,
            "the request key is older than what the engine keeps (request key retention or count): it cannot tell \
             whether that request ran; nothing ran now",
        ))
    };
    if k.made_ms.saturating_add(settings.retention_ms()) < now_ms() {
        return expired();
    }
    // The key's row if recorded, else the watermark. Two plain statements: a LEFT
    // JOIN with the key as bound parameters is re-prepared by SQLite on every new
    // binding (measured), which costs more than the second lookup. They fail only
    // when the tables do not exist yet (no key was ever recorded here): then the
    // key is fresh.
    let query = || -> rusqlite::Result<_> {
        let row = conn
            .prepare_cached(&format!(
                "SELECT digest, answer, without_rows FROM {KEYS_TABLE} WHERE made_ms = ?1 AND key = ?2"
            ))?
            .query_row(params![k.made_ms as i64, k.key], |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?, r.get::<_, bool>(2)?))
            })
            .optional()?;
        if row.is_some() {
            return Ok(Some((row, -1)));
        }
        let watermark: i64 = conn
            .prepare_cached(&format!("SELECT watermark_ms FROM {STATE_TABLE} WHERE id = 1"))?
            .query_row([], |r| r.get(0))
            .optional()?
            .unwrap_or(-1);
        Ok(Some((None, watermark)))
    };
    let found = match sandbox.engine(query) {
        Ok(found) => Ok(found),
        Err(e) => match tables_exist(conn) {
            Ok(false) => Ok(None),
            Ok(true) => Err(e),
            Err(e) => Err(e),
        },
    };
    match found {
        Err(e) => Lookup::Refused(internal(e)),
        Ok(None) => Lookup::Fresh,
        Ok(Some((Some((digest, answer, without_rows)), _))) => {
            if digest != k.digest {
                return Lookup::Refused(sql_err(
                    SqliteErrorCode::RequestKeyConflict,
                    "the request key was recorded for a different request (other SQL, parameters or mode); nothing ran",
                ));
            }
            match decode_to_envoy(&answer, 5, &DecodeLimits::default()) {
                Ok(answer) => Lookup::Replay(Recorded { answer, without_rows }),
                Err(e) => Lookup::Refused(sql_err(
                    SqliteErrorCode::Internal,
                    &format!("the recorded outcome of this key cannot be read: {e}"),
                )),
            }
        }
        Ok(Some((None, watermark))) if watermark >= 0 && k.made_ms <= watermark as u64 => expired(),
        Ok(Some((None, _))) => Lookup::Fresh,
    }
}

/// Empties the rows of a recorded answer (kept: changes, lastInsertRowId, errors).
fn strip_rows(answer: &mut ToEnvoy) {
    match answer {
        ToEnvoy::SqliteExecuteResponseV5(r) => {
            if let SqliteExecuteResult::ExecuteResult(x) = &mut r.result {
                x.rows.clear();
            }
        }
        ToEnvoy::SqliteExecResponseV5(r) => {
            if let SqliteExecResult::QueryResult(q) = &mut r.result {
                q.rows.clear();
            }
        }
        ToEnvoy::SqliteBatchResponse(r) => {
            if let SqliteBatchResult::SqliteBatchOk(ok) = &mut r.result {
                for x in &mut ok.results {
                    x.rows.clear();
                }
            }
        }
        // Commit answers (interactive transactions) carry no rows.
        _ => {}
    }
}

/// Every how many records keys past their age are deleted (space only).
const AGE_SWEEP_EVERY: i64 = 64;

/// How far past `per_actor` the count may go before the oldest are dropped: a
/// sixteenth, so a busy actor pays one range delete per `per_actor / 16` writes
/// instead of a delete per write.
fn eviction_slack(per_actor: i64) -> i64 {
    per_actor / 16
}

/// Records `k` → `answer` in the open transaction (inside the request's
/// savepoint), then drops keys past their age and the oldest past the count.
/// `answer` is the whole answer message (its request id, cost and key outcome
/// are not replayed; only its `result`). Err: the request must fail with it
/// (and its savepoint be rolled back), so nothing commits unrecorded.
pub fn record(
    conn: &Connection,
    sandbox: &Sandbox,
    k: &KeyedRequest,
    answer: &ToEnvoy,
    settings: &KeySettings,
) -> Result<(), envoy_protocol::SqliteError> {
    let encode = |a: &ToEnvoy| encode_to_envoy(a, 5).map_err(|e| sql_err(SqliteErrorCode::Internal, &e.to_string()));
    let mut bytes = encode(answer)?;
    let mut without_rows = false;
    if bytes.len() > settings.max_recorded_result_bytes as usize {
        let mut stripped = answer.clone();
        strip_rows(&mut stripped);
        bytes = encode(&stripped)?;
        without_rows = true;
    }
    let oldest_kept = now_ms().saturating_sub(settings.retention_ms());
    let per_actor = settings.per_actor as i64;
    let bump = || -> rusqlite::Result<i64> {
        conn.prepare_cached(&format!("UPDATE {STATE_TABLE} SET count = count + 1 WHERE id = 1 RETURNING count"))?
            .query_row([], |r| r.get(0))
    };
    // The key's INSERT comes last: Sandbox::hide_changes needs the engine's last
    // statement to change a row.
    sandbox.hide_changes(conn, || {
        // Two statements on the common path (count, insert); the tables are made by
        // the first record (when counting fails because they do not exist yet).
        let mut counted = sandbox.engine(bump);
        if counted.is_err() && !tables_exist(conn).map_err(internal)? {
            ensure_tables(conn, sandbox).map_err(internal)?;
            counted = sandbox.engine(bump);
        }
        let mut count = counted.map_err(internal)?;
        sandbox
            .engine(|| -> rusqlite::Result<()> {
                let evict = count > per_actor + eviction_slack(per_actor);
                // Keys past their age answer EXPIRED by their time, recorded or not:
                // deleting them only reclaims space, so it runs now and then.
                if evict || count % AGE_SWEEP_EVERY == 0 {
                    let aged = conn
                        .prepare_cached(&format!("DELETE FROM {KEYS_TABLE} WHERE made_ms < ?1"))?
                        .execute(params![oldest_kept as i64])? as i64;
                    if aged > 0 {
                        conn.prepare_cached(&format!("UPDATE {STATE_TABLE} SET count = count - ?1 WHERE id = 1"))?
                            .execute(params![aged])?;
                        count -= aged;
                    }
                }
                if count > per_actor + eviction_slack(per_actor) {
                    // The oldest first, down to `per_actor` (the new key, inserted below,
                    // included): one seek for the boundary, one range delete on the primary
                    // key; the watermark remembers the newest dropped time.
                    let drop = count - per_actor;
                    let boundary: Option<(i64, Vec<u8>)> = conn
                        .prepare_cached(&format!(
                            "SELECT made_ms, key FROM {KEYS_TABLE} ORDER BY made_ms, key LIMIT 1 OFFSET ?1"
                        ))?
                        .query_row(params![drop - 1], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()?;
                    if let Some((made_ms, key)) = boundary {
                        let dropped = conn
                            .prepare_cached(&format!("DELETE FROM {KEYS_TABLE} WHERE (made_ms, key) <= (?1, ?2)"))?
                            .execute(params![made_ms, key])?;
                        conn.prepare_cached(&format!(
                            "UPDATE {STATE_TABLE} SET count = count - ?1, watermark_ms = max(watermark_ms, ?2) \
                             WHERE id = 1"
                        ))?
                        .execute(params![dropped as i64, made_ms])?;
                    }
                }
                conn.prepare_cached(&format!(
                    "INSERT INTO {KEYS_TABLE}(made_ms, key, digest, answer, without_rows) VALUES (?1, ?2, ?3, ?4, ?5)"
                ))?
                .execute(params![k.made_ms as i64, k.key, k.digest.to_vec(), bytes, without_rows])?;
                Ok(())
            })
            .map_err(internal)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(made_ms: u64, tag: u8) -> KeyedRequest {
        let mut k = made_ms.to_be_bytes()[2..].to_vec();
        k.extend_from_slice(&[tag; 10]);
        admit(k, [tag; 20], &settings(10)).unwrap()
    }

    fn settings(per_actor: usize) -> KeySettings {
        KeySettings { retention: Duration::from_secs(3600), per_actor, max_recorded_result_bytes: 1 << 20 }
    }

    fn answer() -> ToEnvoy {
        ToEnvoy::SqliteExecuteResponseV5(envoy_protocol::ToEnvoySqliteExecuteResponseV5 {
            request_id: 0,
            result: SqliteExecuteResult::ExecuteResult(envoy_protocol::ExecuteResult {
                columns: vec!["a".into()],
                rows: vec![vec![Value::Integer(1)]],
                changes: 1,
                last_insert_row_id: Some(1),
                route: envoy_protocol::SqliteRoute::Write,
            }),
            cost: envoy_protocol::SqlCost { rows_read: 0, rows_written: 0, duration_us: 0 },
            request_key: None,
        })
    }

    #[test]
    fn admit_lookup_record_evict() {
        let mut conn = Connection::open_in_memory().unwrap();
        let deadline = crate::sql::sandbox::Deadline::default();
        let limits = crate::sql::sandbox::SandboxLimits::from_limits(&crate::config::Limits::default());
        let sandbox = crate::sql::sandbox::install(&mut conn, &deadline, &limits, None).unwrap();
        let s = settings(2);
        assert!(admit(vec![0; 15], [0; 20], &s).is_err());
        let future = (now_ms() + 7_200_000).to_be_bytes()[2..].to_vec();
        assert!(admit([future, vec![0; 10]].concat(), [0; 20], &s).is_err());
        let now = now_ms();
        let (a, b, c) = (key(now - 3, 1), key(now - 2, 2), key(now - 1, 3));
        assert!(matches!(lookup(&conn, &sandbox, &a, &s), Lookup::Fresh));
        record(&conn, &sandbox, &a, &answer(), &s).unwrap();
        match lookup(&conn, &sandbox, &a, &s) {
            Lookup::Replay(r) => assert!(!r.without_rows && format!("{:?}", r.answer) == format!("{:?}", answer())),
            other => panic!("{other:?}"),
        }
        let other = KeyedRequest { digest: [9; 20], ..a.clone() };
        assert!(matches!(lookup(&conn, &sandbox, &other, &s),
            Lookup::Refused(e) if e.code == SqliteErrorCode::RequestKeyConflict));
        // Count eviction: the third drops the oldest, which then answers EXPIRED.
        record(&conn, &sandbox, &b, &answer(), &s).unwrap();
        record(&conn, &sandbox, &c, &answer(), &s).unwrap();
        assert!(matches!(lookup(&conn, &sandbox, &a, &s),
            Lookup::Refused(e) if e.code == SqliteErrorCode::RequestKeyExpired));
        assert!(matches!(lookup(&conn, &sandbox, &b, &s), Lookup::Replay(_)));
        // Too old by its time.
        let old = key(now - 7_200_000, 4);
        assert!(matches!(lookup(&conn, &sandbox, &old, &s),
            Lookup::Refused(e) if e.code == SqliteErrorCode::RequestKeyExpired));
        // Over the recorded size: kept without rows.
        let small = KeySettings { max_recorded_result_bytes: 8, ..settings(10) };
        let d = key(now, 5);
        record(&conn, &sandbox, &d, &answer(), &small).unwrap();
        match lookup(&conn, &sandbox, &d, &small) {
            Lookup::Replay(r) => assert!(r.without_rows && !format!("{:?}", r.answer).contains("Integer(1)")),
            other => panic!("{other:?}"),
        }
        // A busy actor: the count may pass per_actor by the slack, then one range delete
        // takes it back to per_actor (the oldest first) and moves the watermark.
        let mut conn2 = Connection::open_in_memory().unwrap();
        let sandbox2 = crate::sql::sandbox::install(&mut conn2, &deadline, &limits, None).unwrap();
        let s32 = settings(32);
        let keys: Vec<_> = (0..35u8).map(|i| key(now - 100 + u64::from(i), 100 + i)).collect();
        let rows = |c: &Connection, sb: &Sandbox| {
            sb.engine(|| c.query_row(&format!("SELECT count(*) FROM {KEYS_TABLE}"), [], |r| r.get::<_, i64>(0)))
                .unwrap()
        };
        for k in &keys[..34] {
            record(&conn2, &sandbox2, k, &answer(), &s32).unwrap();
        }
        assert_eq!(rows(&conn2, &sandbox2), 34, "within the slack (32 + 32/16): nothing dropped yet");
        record(&conn2, &sandbox2, &keys[34], &answer(), &s32).unwrap();
        assert_eq!(rows(&conn2, &sandbox2), 32, "past it: back to per_actor at once");
        for k in &keys[..3] {
            assert!(matches!(lookup(&conn2, &sandbox2, k, &s32),
                Lookup::Refused(e) if e.code == SqliteErrorCode::RequestKeyExpired));
        }
        for k in &keys[3..] {
            assert!(matches!(lookup(&conn2, &sandbox2, k, &s32), Lookup::Replay(_)));
        }
        // The actor's SQL can neither read nor drop them.
        assert!(conn.query_row(&format!("SELECT count(*) FROM {KEYS_TABLE}"), [], |r| r.get::<_, i64>(0)).is_err());
        assert!(conn.execute_batch(&format!("DROP TABLE {KEYS_TABLE}")).is_err());
        assert!(conn.execute_batch(&format!("CREATE TABLE {RESERVED_PREFIX}x(a)")).is_err());
    }
}
