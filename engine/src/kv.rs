//! Per-actor KV storage (protocol v1–v3 messages, valid at v4 too).
//!
//! Kept durably in `<data>/actors/<actor_id>/kv.sqlite`, beside the actor's
//! SQL database, so it never shows up in the actor's own schema. One table,
//! keys and values as BLOBs ordered bytewise (SQLite compares BLOBs with
//! memcmp), WAL, and the same durability as the SQL database (`--durability`).

use crate::budget::ResultCharge;
use crate::config::Limits;
use envoy_protocol::{
    KvEntry, KvErrorCode, KvErrorResponse, KvGetBatchResponse, KvGetResponse, KvListResponse, KvQuery, KvRequestData,
    KvResponseData,
};
use rusqlite::{params, Connection, InterruptHandle, OptionalExtension};
use std::path::Path;

/// One actor's KV store.
pub struct KvStore {
    /// The actor's `kv.sqlite`; owned, so only the executor's KV lock reaches it.
    conn: Connection,
}

/// A KV error with its code.
pub fn kv_error(code: KvErrorCode, message: impl Into<String>) -> KvResponseData {
    KvResponseData::KvErrorResponse(KvErrorResponse { code, message: message.into(), current_generation: None })
}

/// Approximate encoded size of one entry or value of `n` payload bytes (length prefixes included).
fn entry_bytes(n: usize) -> usize {
    n + 12
}

/// Approximate encoded size of a response with no entries.
const EMPTY_RESPONSE_BYTES: usize = 16;

/// A KV request past an advertised limit: which one, its maximum and the
/// offending size when known. Sent as `KvLimitExceeded`; the connection's
/// writer turns it into the v4 `KvErrorResponse { LIMIT_EXCEEDED }` with the
/// same message below v5.
#[derive(Debug, Clone, PartialEq)]
pub struct KvLimitError {
    /// Human-readable, as in v4.
    pub message: String,
    /// The limit's kind, maximum and the offending size.
    pub limit: envoy_protocol::LimitExceeded,
}

impl KvLimitError {
    pub fn new(kind: envoy_protocol::LimitKind, max: usize, actual: Option<usize>, message: String) -> Self {
        Self {
            message,
            limit: envoy_protocol::LimitExceeded { kind, max: max as u64, actual: actual.map(|a| a as u64) },
        }
    }

    /// The answer.
    pub fn response(self) -> KvResponseData {
        KvResponseData::KvLimitExceeded(envoy_protocol::KvLimitExceeded { message: self.message, limit: self.limit })
    }
}

fn too_big(max_response: usize) -> KvResponseData {
    KvLimitError::new(
        envoy_protocol::LimitKind::ResponseBytes,
        max_response,
        None,
        format!("the response would exceed maxResponseBytes ({max_response}); ask for fewer entries"),
    )
    .response()
}

fn internal(e: rusqlite::Error) -> KvResponseData {
    kv_error(KvErrorCode::Internal, format!("KV storage failed: {e}"))
}

/// The smallest key greater than every key starting with `prefix` (None: no upper bound).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Checks a request against the limits before any work (the caller answers LIMIT_EXCEEDED / INVALID_REQUEST).
pub fn check_limits(data: &KvRequestData, limits: &Limits) -> Result<(), KvLimitError> {
    use envoy_protocol::LimitKind as K;
    let max_key = limits.max_kv_key_bytes as usize;
    let max_value = limits.max_kv_value_bytes as usize;
    let max_entries = limits.max_kv_batch_entries as usize;
    let key = |k: &[u8]| {
        if k.len() > max_key {
            Err(KvLimitError::new(
                K::KvKeyBytes,
                max_key,
                Some(k.len()),
                format!("key of {} bytes exceeds maxKvKeyBytes {max_key}", k.len()),
            ))
        } else {
            Ok(())
        }
    };
    let value = |v: &[u8]| {
        if v.len() > max_value {
            Err(KvLimitError::new(
                K::KvValueBytes,
                max_value,
                Some(v.len()),
                format!("value of {} bytes exceeds maxKvValueBytes {max_value}", v.len()),
            ))
        } else {
            Ok(())
        }
    };
    let count = |n: usize| {
        if n > max_entries {
            Err(KvLimitError::new(
                K::KvBatchEntries,
                max_entries,
                Some(n),
                format!("{n} entries exceed maxKvBatchEntries {max_entries}"),
            ))
        } else {
            Ok(())
        }
    };
    match data {
        KvRequestData::KvGet(r) => key(&r.key),
        KvRequestData::KvPut(r) => key(&r.key).and_then(|_| value(&r.value)),
        KvRequestData::KvDelete(r) => key(&r.key),
        KvRequestData::KvListPrefix(r) => key(&r.prefix),
        KvRequestData::KvGetBatch(r) => count(r.keys.len()).and_then(|_| r.keys.iter().try_for_each(|k| key(k))),
        KvRequestData::KvPutBatch(r) => count(r.entries.len())
            .and_then(|_| r.entries.iter().try_for_each(|e| key(&e.key).and_then(|_| value(&e.value)))),
        KvRequestData::KvDeleteBatch(r) => count(r.keys.len()).and_then(|_| r.keys.iter().try_for_each(|k| key(k))),
        KvRequestData::KvDeleteRange(r) => key(&r.start).and_then(|_| key(&r.end)),
        KvRequestData::KvList(r) => {
            match &r.query {
                KvQuery::All => Ok(()),
                KvQuery::Prefix(p) => key(&p.prefix),
                KvQuery::Range(q) => key(&q.start).and_then(|_| key(&q.end)),
            }?;
            match r.limit {
                Some(l) => count(l as usize),
                None => Ok(()),
            }
        }
    }
}

impl KvStore {
    pub fn open(
        path: &Path,
        durability: crate::config::Durability,
        guard: Option<&crate::sql::executor::CommitGuard>,
    ) -> rusqlite::Result<Self> {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let mut conn = Connection::open(path)?;
        if let Some(guard) = guard {
            guard.install(&mut conn)?;
        }
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", durability.synchronous())?;
        conn.execute_batch("CREATE TABLE IF NOT EXISTS kv (key BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID")?;
        Ok(Self { conn })
    }

    /// Opens a group transaction: the KV requests of one writer batch commit together.
    pub fn begin_group(&mut self) -> rusqlite::Result<()> {
        self.conn.prepare_cached("BEGIN IMMEDIATE")?.raw_execute().map(|_| ())
    }

    /// Commits the group transaction (one commit, one fsync at `--durability fsync`).
    pub fn commit_group(&mut self) -> rusqlite::Result<()> {
        let r = self.conn.prepare_cached("COMMIT").and_then(|mut s| s.raw_execute());
        if r.is_err() && !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        r.map(|_| ())
    }

    /// Runs one request as a member of the open group, in its own savepoint: a
    /// failing request leaves nothing behind and does not affect the others.
    /// Returns the answer and whether the group transaction is still open.
    pub fn handle_member(&mut self, data: &KvRequestData, limits: &Limits) -> (KvResponseData, bool) {
        if let Err(e) = self.conn.execute_batch("SAVEPOINT envoy_kv_member") {
            return (internal(e), !self.conn.is_autocommit());
        }
        let answer = self.handle(data, limits);
        if self.conn.is_autocommit() {
            return (answer, false);
        }
        if matches!(answer, KvResponseData::KvErrorResponse(_)) {
            let _ = self.conn.execute_batch("ROLLBACK TO envoy_kv_member");
        }
        let _ = self.conn.execute_batch("RELEASE envoy_kv_member");
        (answer, !self.conn.is_autocommit())
    }

    pub fn interrupt_handle(&self) -> InterruptHandle {
        self.conn.get_interrupt_handle()
    }

    pub fn close(self) {
        let _ = self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        let _ = self.conn.close();
    }

    fn get(&self, key: &[u8]) -> rusqlite::Result<Option<Vec<u8>>> {
        self.conn.prepare_cached("SELECT value FROM kv WHERE key = ?1")?.query_row([key], |r| r.get(0)).optional()
    }

    /// Entries in [start, end) (end None = unbounded), ordered, at most `limit`
    /// (plus one, to detect an over-long unlimited list). Entries are charged to
    /// the result budgets while they are copied, and copying stops as soon as the
    /// answer would pass `max_response` (answered LIMIT_EXCEEDED) or a budget
    /// is full (answered OVERLOADED): a refused list never holds more than one
    /// response's worth of memory.
    fn range(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        reverse: bool,
        limit: usize,
        max_response: usize,
    ) -> rusqlite::Result<Result<Vec<KvEntry>, KvResponseData>> {
        let order = if reverse { "DESC" } else { "ASC" };
        let sql = match end {
            Some(_) => format!("SELECT key, value FROM kv WHERE key >= ?1 AND key < ?2 ORDER BY key {order} LIMIT ?3"),
            None => format!("SELECT key, value FROM kv WHERE key >= ?1 ORDER BY key {order} LIMIT ?2"),
        };
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let limit = limit.min(i64::MAX as usize) as i64;
        let mut rows = match end {
            Some(e) => stmt.query(params![start, e, limit])?,
            None => stmt.query(params![start, limit])?,
        };
        let mut charge = ResultCharge::start();
        let mut size = EMPTY_RESPONSE_BYTES;
        let mut entries = Vec::new();
        while let Some(r) = rows.next()? {
            let entry = KvEntry { key: r.get(0)?, value: r.get(1)? };
            size += entry_bytes(entry.key.len() + entry.value.len());
            if size > max_response {
                return Ok(Err(too_big(max_response)));
            }
            if let Err(refused) = charge.grow_to(size) {
                return Ok(Err(refused.kv_error()));
            }
            entries.push(entry);
        }
        if let Err(refused) = charge.finish() {
            return Ok(Err(refused.kv_error()));
        }
        Ok(Ok(entries))
    }

    /// A list bounded by `maxKvBatchEntries`: an explicit limit was checked before work; without one, a
    /// result longer than the maximum is refused (LIMIT_EXCEEDED: page with a range and a limit).
    fn list(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        reverse: bool,
        limit: Option<u32>,
        max: usize,
        max_response: usize,
    ) -> KvResponseData {
        let want = limit.map_or(max + 1, |l| l as usize);
        match self.range(start, end, reverse, want, max_response) {
            Ok(Ok(entries)) if limit.is_none() && entries.len() > max => KvLimitError::new(
                envoy_protocol::LimitKind::KvBatchEntries,
                max,
                None,
                format!("more than maxKvBatchEntries ({max}) entries match; list with a limit"),
            )
            .response(),
            Ok(Ok(entries)) => KvResponseData::KvListResponse(KvListResponse { entries }),
            Ok(Err(refused)) => refused,
            Err(e) => internal(e),
        }
    }

    /// Values of `keys` (None where missing), charged as they are read; stops as
    /// soon as the answer would pass `max_response` or a budget is full.
    fn get_many(
        &self,
        keys: &[Vec<u8>],
        max_response: usize,
    ) -> rusqlite::Result<Result<Vec<Option<Vec<u8>>>, KvResponseData>> {
        let mut charge = ResultCharge::start();
        let mut size = EMPTY_RESPONSE_BYTES;
        let mut values = Vec::with_capacity(keys.len());
        for k in keys {
            let v = self.get(k)?;
            size += entry_bytes(v.as_ref().map_or(0, Vec::len));
            if size > max_response {
                return Ok(Err(too_big(max_response)));
            }
            if let Err(refused) = charge.grow_to(size) {
                return Ok(Err(refused.kv_error()));
            }
            values.push(v);
        }
        if let Err(refused) = charge.finish() {
            return Ok(Err(refused.kv_error()));
        }
        Ok(Ok(values))
    }

    /// Runs one request (limits already checked).
    pub fn handle(&mut self, data: &KvRequestData, limits: &Limits) -> KvResponseData {
        let max = limits.max_kv_batch_entries as usize;
        let max_response = limits.max_response_bytes as usize;
        let r: rusqlite::Result<KvResponseData> = (|| {
            Ok(match data {
                KvRequestData::KvGet(r) => match self.get_many(std::slice::from_ref(&r.key), max_response)? {
                    Ok(mut values) => KvResponseData::KvGetResponse(KvGetResponse { value: values.pop().flatten() }),
                    Err(refused) => refused,
                },
                KvRequestData::KvPut(r) => {
                    self.conn
                        .prepare_cached("INSERT OR REPLACE INTO kv (key, value) VALUES (?1, ?2)")?
                        .execute(params![r.key, r.value])?;
                    KvResponseData::KvPutResponse
                }
                KvRequestData::KvDelete(r) => {
                    self.conn.prepare_cached("DELETE FROM kv WHERE key = ?1")?.execute([&r.key])?;
                    KvResponseData::KvDeleteResponse
                }
                KvRequestData::KvListPrefix(r) => {
                    return Ok(self.list(&r.prefix, prefix_end(&r.prefix).as_deref(), false, None, max, max_response))
                }
                KvRequestData::KvGetBatch(r) => match self.get_many(&r.keys, max_response)? {
                    Ok(values) => KvResponseData::KvGetBatchResponse(KvGetBatchResponse { values }),
                    Err(refused) => refused,
                },
                KvRequestData::KvPutBatch(r) => {
                    // A savepoint: atomic on its own, and nests inside a group commit's transaction.
                    let tx = self.conn.savepoint()?;
                    {
                        let mut stmt = tx.prepare_cached("INSERT OR REPLACE INTO kv (key, value) VALUES (?1, ?2)")?;
                        for e in &r.entries {
                            stmt.execute(params![e.key, e.value])?;
                        }
                    }
                    tx.commit()?;
                    KvResponseData::KvPutBatchResponse
                }
                KvRequestData::KvDeleteBatch(r) => {
                    let tx = self.conn.savepoint()?;
                    {
                        let mut stmt = tx.prepare_cached("DELETE FROM kv WHERE key = ?1")?;
                        for k in &r.keys {
                            stmt.execute([k])?;
                        }
                    }
                    tx.commit()?;
                    KvResponseData::KvDeleteBatchResponse
                }
                KvRequestData::KvDeleteRange(r) => {
                    self.conn
                        .prepare_cached("DELETE FROM kv WHERE key >= ?1 AND key < ?2")?
                        .execute(params![r.start, r.end])?;
                    KvResponseData::KvDeleteRangeResponse
                }
                KvRequestData::KvList(r) => {
                    return Ok(match &r.query {
                        KvQuery::All => self.list(&[], None, r.reverse, r.limit, max, max_response),
                        KvQuery::Prefix(p) => self.list(
                            &p.prefix,
                            prefix_end(&p.prefix).as_deref(),
                            r.reverse,
                            r.limit,
                            max,
                            max_response,
                        ),
                        KvQuery::Range(q) => self.list(&q.start, Some(&q.end), r.reverse, r.limit, max, max_response),
                    })
                }
            })
        })();
        r.unwrap_or_else(internal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_bounds() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 0xFF]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xFF, 0xFF]), None);
        assert_eq!(prefix_end(&[]), None);
    }
}
