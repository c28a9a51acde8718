//! A reader batch answered from one WAL snapshot.

use super::*;

/// A reader connection held for a batch of reads, all answered from one WAL
/// snapshot: one read transaction (and its file locks) for the batch instead of
/// one per statement. Every read of the batch was admitted before the batch
/// began, so the snapshot (taken at its first statement) already holds every
/// write acknowledged before any of them was sent.
pub struct ReadSession<'a> {
    /// The executor whose reader this is.
    pub(super) x: &'a Executor,
    /// The reader, taken on first use.
    pub(super) sc: Option<SqlConn>,
    /// Whether a read transaction is open on it.
    pub(super) snapshot: bool,
}

impl ReadSession<'_> {
    /// Runs one read-candidate `Execute`; Bounce if it turns out to write.
    pub fn execute(&mut self, sql: &str, route: &Route, params: &[Value]) -> ExecuteOutcome {
        let x = self.x;
        if let Some(e) = x.refuse_start() {
            return ExecuteOutcome::Done(Err(e));
        }
        if self.sc.is_none() {
            match x.take_reader() {
                Ok(sc) => self.sc = Some(sc),
                Err(e) => return ExecuteOutcome::Done(Err(e)),
            }
        }
        let Some(sc) = self.sc.as_mut() else { unreachable!("taken above") };
        if !self.snapshot {
            self.snapshot = sc.conn.prepare_cached("BEGIN").and_then(|mut s| s.raw_execute()).is_ok();
        }
        match x.run_execute(sc, sql, route, params, None) {
            Some(r) => ExecuteOutcome::Done(r),
            None => ExecuteOutcome::Bounce,
        }
    }
}

impl Drop for ReadSession<'_> {
    fn drop(&mut self) {
        if let Some(sc) = self.sc.take() {
            if !sc.conn.is_autocommit() {
                if let Err(e) = sc.conn.execute_batch("COMMIT") {
                    tracing::warn!(actor_id = %self.x.actor_id, error = %e, "ending a read snapshot failed");
                    return; // dropped, not pooled
                }
            }
            self.x.give_back_reader(sc);
        }
    }
}
