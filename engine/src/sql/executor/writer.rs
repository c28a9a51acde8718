//! The actor's writer, locked for a run of requests: alone, or as members of a group commit.

use super::*;

/// The actor's writer, locked: requests run on it one after another, alone or
/// as members of a group commit (`sql::group`). Holding it keeps the executor
/// from closing the connection underneath.
pub struct WriterLock<'a> {
    /// The executor whose writer this is.
    pub(super) x: &'a Executor,
    /// The locked writer; `Some` for the lock's whole life.
    pub(super) guard: MutexGuard<'a, Option<SqlConn>>,
}

/// How a group member ended (see `sql::group`).
pub enum MemberOutcome<T> {
    /// Answered; its effects (if any) are part of the open group.
    Done(Result<T, SqliteError>),
    /// SQLite rolled back the whole group transaction while this member ran
    /// (an interrupted write, `OR ROLLBACK`, an I/O error): this member's answer
    /// stands, the members before it must run again.
    Vanished(Result<T, SqliteError>),
    /// It would leave a deferred foreign-key violation: its effects were undone;
    /// run it alone, after the group's commit, where its own COMMIT decides.
    RunAlone,
}

/// Name of the savepoint around each group member: members never manage
/// transactions themselves (those requests run alone), so the name is free.
const MEMBER_SAVEPOINT: &str = "SAVEPOINT envoy_group_member";
const MEMBER_RELEASE: &str = "RELEASE envoy_group_member";
const MEMBER_ROLLBACK: &str = "ROLLBACK TO envoy_group_member";

impl WriterLock<'_> {
    fn sc(&mut self) -> &mut SqlConn {
        self.guard.as_mut().expect("a WriterLock holds an open writer")
    }

    /// Whether the executor is stopping (members not started yet are answered INTERRUPTED).
    pub fn stopping(&self) -> Result<(), SqliteError> {
        match self.x.refuse_start() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Runs one `Execute`/`ExecuteWrite` alone. v≤4: a transaction it leaves open is rolled back.
    pub fn execute_alone(
        &mut self,
        sql: &str,
        route: &Route,
        params: &[Value],
        write_request: bool,
    ) -> Result<ExecuteResult, SqliteError> {
        let x = self.x;
        let sc = self.sc();
        let r = x.run_execute(sc, sql, route, params, Some(write_request));
        let rolled_back = x.end_open_transaction(sc);
        x.in_txn.store(!sc.conn.is_autocommit(), Ordering::Release);
        match (r, rolled_back) {
            (Some(Ok(_)), true) => Err(transaction_left_open(None)),
            (Some(Err(mut e)), true) => {
                e.committed = Some(false);
                e.message.push_str("; the transaction this request opened was rolled back");
                Err(e)
            }
            (Some(r), false) => r,
            (None, _) => Err(err(SqliteErrorCode::Internal, "writer refused a statement", None)),
        }
    }

    /// Runs an `Exec` alone. v≤4: a transaction it leaves open is rolled back.
    pub fn exec_alone(&mut self, sql: &str) -> Result<QueryResult, SqliteError> {
        let x = self.x;
        let sc = self.sc();
        let result = x.exec_statements(sc, sql, false);
        let rolled_back = x.end_open_transaction(sc);
        x.in_txn.store(!sc.conn.is_autocommit(), Ordering::Release);
        match result {
            Ok(_) if rolled_back => {
                // Only statements before the transaction's BEGIN could have committed; count them.
                let committed_alone = statements(sql)
                    .take_while(|s| !crate::sql::route::first_keyword_is(s, &["BEGIN", "SAVEPOINT"]))
                    .count() as u32;
                Err(transaction_left_open(Some(committed_alone)))
            }
            Ok(last) => Ok(last),
            Err((mut e, index, committed_alone)) => {
                // Statements before the failing one that ran in autocommit mode committed
                // one by one; what ran inside a transaction was rolled back with it.
                e.committed = Some(committed_alone > 0);
                e.statement_index = Some(index);
                if rolled_back {
                    e.message.push_str(&format!(
                        "; the transaction this request opened was rolled back{}",
                        if committed_alone > 0 {
                            format!(" (statements 0..{committed_alone} before it had committed on their own)")
                        } else {
                            String::new()
                        }
                    ));
                }
                Err(e)
            }
        }
    }

    /// Runs the engine's own transaction-control statement (BEGIN/COMMIT/ROLLBACK/savepoints of a group).
    fn control(&mut self, sql: &str) -> Result<(), SqliteError> {
        let x = self.x;
        let sc = self.sc();
        sc.sandbox.clear_denial();
        let r = sc.conn.prepare_cached(sql).and_then(|mut st| st.raw_execute());
        r.map(|_| ()).map_err(|e| x.scrub(map_error(e, None, Some(x))))
    }

    /// Opens a group transaction (IMMEDIATE: the write lock is taken now, so no
    /// member waits for it).
    pub fn begin_group(&mut self) -> Result<(), SqliteError> {
        self.control("BEGIN IMMEDIATE")
    }

    /// Commits the group transaction: one commit (one fsync at `--durability fsync`) for every member.
    pub fn commit_group(&mut self) -> Result<(), SqliteError> {
        let r = self.control("COMMIT");
        if r.is_err() && !self.sc().conn.is_autocommit() {
            let _ = self.control("ROLLBACK");
        }
        r
    }

    /// Whether the group transaction is still open (SQLite may have rolled it back).
    pub fn in_transaction(&mut self) -> bool {
        !self.sc().conn.is_autocommit()
    }

    /// Whether the open transaction holds unresolved deferred foreign-key violations.
    fn deferred_fk_violations(&mut self) -> bool {
        let (mut cur, mut hi) = (0, 0);
        // SAFETY: the handle is open while the lock is held; out-pointers are valid.
        let rc = unsafe {
            ffi::sqlite3_db_status(self.sc().conn.handle(), ffi::SQLITE_DBSTATUS_DEFERRED_FKS, &mut cur, &mut hi, 0)
        };
        rc == ffi::SQLITE_OK && cur > 0
    }

    /// Runs `f` as one member of the open group, inside its own savepoint.
    /// `keep_partial`: on an error, keep what the member did before failing
    /// (an `Exec` whose earlier statements would have committed on their own).
    pub(super) fn member<T>(
        &mut self,
        keep_partial: bool,
        f: impl FnOnce(&Executor, &mut SqlConn) -> Result<T, SqliteError>,
    ) -> MemberOutcome<T> {
        if let Err(e) = self.stopping() {
            return MemberOutcome::Done(Err(e));
        }
        if let Err(e) = self.control(MEMBER_SAVEPOINT) {
            return MemberOutcome::Done(Err(e));
        }
        let x = self.x;
        let r = f(x, self.sc());
        if !self.in_transaction() {
            return MemberOutcome::Vanished(r);
        }
        match r {
            Ok(v) => {
                if self.deferred_fk_violations() {
                    let _ = self.control(MEMBER_ROLLBACK);
                    let _ = self.control(MEMBER_RELEASE);
                    return MemberOutcome::RunAlone;
                }
                match self.control(MEMBER_RELEASE) {
                    Ok(()) => MemberOutcome::Done(Ok(v)),
                    Err(e) => MemberOutcome::Done(Err(e)),
                }
            }
            Err(mut e) => {
                if !keep_partial || e.committed.is_none() {
                    let _ = self.control(MEMBER_ROLLBACK);
                    if e.committed.is_none() {
                        // A result that failed after its statement wrote: undone now.
                        e.committed = Some(false);
                    }
                }
                let _ = self.control(MEMBER_RELEASE);
                MemberOutcome::Done(Err(e))
            }
        }
    }

    /// Runs an `Execute`/`ExecuteWrite` as a member of the open group.
    pub fn execute_member(
        &mut self,
        sql: &str,
        route: &Route,
        params: &[Value],
        write_request: bool,
    ) -> MemberOutcome<ExecuteResult> {
        self.member(false, |x, sc| {
            x.run_execute(sc, sql, route, params, Some(write_request))
                .unwrap_or_else(|| Err(err(SqliteErrorCode::Internal, "writer refused a statement", None)))
        })
    }

    /// Runs an `Exec` as a member of the open group: statements before a failing
    /// one are kept (they would have committed on their own), as alone.
    pub fn exec_member(&mut self, sql: &str) -> MemberOutcome<QueryResult> {
        self.member(true, |x, sc| {
            x.exec_statements(sc, sql, true).map_err(|(mut e, index, _)| {
                e.committed = Some(index > 0);
                e.statement_index = Some(index);
                e
            })
        })
    }
}
