//! L2: the same SQL on rusqlite in this process, with the engine's settings for
//! actor databases (WAL; synchronous=FULL for `--durability fsync`, NORMAL for
//! `os`), on the same disk as the engines' data. It is what a local SQLite
//! would give the application: the ceiling of W1/W4 and the yardstick of W3.

use crate::stats::{Round, Timer};
use crate::workloads::{point_value, POINT_ROWS, WIDE_ROWS};
use anyhow::Result;
use rusqlite::Connection;
use std::path::Path;
use std::time::{Duration, Instant};

pub struct InProc {
    /// One file database, opened like an engine's actor writer.
    conn: Connection,
    /// Next point-SELECT key, so every row is touched in turn.
    next: i64,
}

impl InProc {
    /// Creates the database with the same tables and rows the engine workloads use.
    pub fn open(dir: &Path) -> Result<InProc> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("db.sqlite");
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        let conn = Connection::open(&path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.execute_batch(crate::workloads::SCHEMA)?;
        conn.execute_batch(crate::workloads::FILL)?;
        Ok(InProc { conn, next: 0 })
    }

    /// Point SELECT by primary key, cached statement, the value copied out.
    pub fn point_select(&mut self, dur: Duration) -> Result<Round> {
        let mut t = Timer::new();
        let end = Instant::now() + dur;
        let mut stmt = self.conn.prepare_cached(crate::workloads::POINT_SQL)?;
        while Instant::now() < end {
            self.next = self.next % POINT_ROWS + 1;
            let s = Instant::now();
            let v: String = stmt.query_row([self.next], |r| r.get(0))?;
            t.record(s);
            debug_assert_eq!(v, point_value(self.next));
        }
        Ok(t.finish())
    }

    /// Every row of `r` (1 000 × ~100 B) into owned values.
    pub fn wide_select(&mut self, dur: Duration) -> Result<Round> {
        let mut t = Timer::new();
        let end = Instant::now() + dur;
        let mut stmt = self.conn.prepare_cached(crate::workloads::WIDE_SQL)?;
        while Instant::now() < end {
            let s = Instant::now();
            let rows: Vec<(i64, String)> =
                stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
            t.record(s);
            anyhow::ensure!(rows.len() == WIDE_ROWS as usize, "wide select returned {} rows", rows.len());
        }
        Ok(t.finish())
    }

    /// Autocommit single-row INSERTs at `synchronous` (`FULL`: one fsync per commit; `NORMAL`).
    pub fn insert(&mut self, synchronous: &str, dur: Duration) -> Result<Round> {
        self.conn.pragma_update(None, "synchronous", synchronous)?;
        let mut t = Timer::new();
        let end = Instant::now() + dur;
        let mut stmt = self.conn.prepare_cached(crate::workloads::INSERT_SQL)?;
        let v = crate::workloads::insert_value();
        while Instant::now() < end {
            let s = Instant::now();
            stmt.execute([&v])?;
            t.record(s);
        }
        Ok(t.finish())
    }
}
