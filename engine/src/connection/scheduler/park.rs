//! Writes waiting for an interactive transaction (protocol v5, specs/protocol.md
//! §9.5) that holds their actor's writer.
//!
//! A writer batch that finds the writer held returns its SQL jobs unrun
//! (`sql::group::run_writer_batch`). They go back to the front of their actor's
//! queue, the queue is marked parked (no lane starts for it, so no blocking
//! thread waits), and one async waiter per parked queue sleeps until the
//! transaction releases the writer (`Executor::writer_free`) or the oldest
//! parked job has waited `max_transaction_wait`. Jobs past that bound are
//! answered TRANSACTION_BUSY (they did not run); on a v4 connection, which has
//! no such code, OVERLOADED with `committed: false` (retry later) — the closest
//! typed v4 answer. Reads behind a parked write wait with it (a read never
//! overtakes an earlier write of its actor); reads of other actors and of other
//! connections are not affected.

use super::{Job, QueueKey, Shared, State, Work};
use crate::sql::cost::Rows;
use crate::sql::executor::{err, Executor};
use crate::sql::route::Lane;
use crate::sql::v5;
use envoy_protocol::{
    KvErrorCode, SqliteErrorCode, SqliteExecResult, SqliteExecuteResult, ToEnvoy, ToEnvoyKvResponse,
    ToEnvoySqliteExecResponse, ToEnvoySqliteExecuteResponse,
};
use std::sync::Arc;
use std::time::Instant;

/// Whether `job` is a SQL write waiting on the writer (KV jobs never wait for a SQL transaction).
fn waits_for_writer(job: &Job) -> bool {
    job.lane_now() == Lane::Writer && !matches!(job.work, Work::Kv { .. })
}

/// Puts `parked` (in order) back at the front of `key`'s queue, marks the queue parked
/// and starts each job's wait clock.
pub(super) fn park(st: &mut State, key: QueueKey, parked: Vec<Job>) {
    let now = Instant::now();
    for mut job in parked.into_iter().rev() {
        job.parked_at.get_or_insert(now);
        st.enqueue(job, true);
    }
    if let Some(q) = st.queues.get_mut(&key) {
        q.parked = true;
    }
}

/// Starts the waiter of a parked queue.
pub(super) fn spawn_waiter(shared: Arc<Shared>, key: QueueKey, x: Arc<Executor>) {
    let runtime = shared.runtime.clone();
    runtime.spawn(wait(shared, key, x));
}

/// Waits for the writer or the next deadline; answers jobs past the bound and
/// unparks the queue once its front no longer waits for the writer.
async fn wait(shared: Arc<Shared>, key: QueueKey, x: Arc<Executor>) {
    let max_wait = shared.cfg.max_transaction_wait;
    loop {
        // Armed before the check: a release between the check and the await still wakes us.
        let released = x.writer_free().notified();
        tokio::pin!(released);
        released.as_mut().enable();
        let deadline = {
            let mut st = shared.state.lock();
            let Some(q) = st.queues.get_mut(&key) else { return };
            q.pending
                .front_mut()
                .filter(|j| waits_for_writer(j))
                .map(|j| *j.parked_at.get_or_insert_with(Instant::now) + max_wait)
        };
        if let (Some(deadline), true) = (deadline, x.writer_held_by_transaction()) {
            tokio::select! {
                _ = &mut released => {}
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
        }
        let mut busy = Vec::new();
        let (launches, done) = {
            let mut st = shared.state.lock();
            let held = x.writer_held_by_transaction();
            let Some(q) = st.queues.get_mut(&key) else { return };
            if held {
                let now = Instant::now();
                while q
                    .pending
                    .front()
                    .is_some_and(|j| waits_for_writer(j) && j.parked_at.is_some_and(|t| now >= t + max_wait))
                {
                    busy.extend(q.pending.pop_front());
                }
            }
            let still = held && q.pending.front().is_some_and(waits_for_writer);
            q.parked = still;
            if !still && !q.in_ready {
                q.in_ready = true;
                st.ready.push_back(key);
            }
            (st.dispatch(&shared.cfg), !still)
        };
        for job in busy {
            shared.outbox.send(busy_answer(&job.work, shared.cfg.version));
            drop(job); // answered: its in-flight and pending guards end
        }
        for l in launches {
            super::spawn_lane(shared.clone(), l);
        }
        if done {
            return;
        }
    }
}

/// The answer of a write that waited too long for an interactive transaction.
fn busy_answer(work: &Work, version: u16) -> ToEnvoy {
    let e = || {
        let message = "the actor's writer is held by an interactive transaction for longer than \
                       maxTransactionWaitMs; this request did not run";
        if version >= 5 {
            err(SqliteErrorCode::TransactionBusy, message, Some(false))
        } else {
            // v4 has no TRANSACTION_BUSY: OVERLOADED says "not run, retry later".
            err(SqliteErrorCode::Overloaded, message, Some(false))
        }
    };
    match work {
        Work::Execute { request_id, .. } => ToEnvoy::SqliteExecuteResponse(ToEnvoySqliteExecuteResponse {
            request_id: *request_id,
            result: SqliteExecuteResult::SqliteError(e()),
        }),
        Work::Exec { request_id, .. } => ToEnvoy::SqliteExecResponse(ToEnvoySqliteExecResponse {
            request_id: *request_id,
            result: SqliteExecResult::SqliteError(e()),
        }),
        Work::ExecuteV5 { request_id, v5, .. } => {
            v5::execute_answer(*request_id, Err(e()), v5.clock.cost(Rows::default()), v5.executed())
        }
        Work::ExecV5 { request_id, v5, .. } => {
            v5::exec_answer(*request_id, Err(e()), v5.clock.cost(Rows::default()), v5.executed())
        }
        Work::Batch { request_id, v5, .. } => {
            v5::batch_answer(*request_id, Err(e()), v5.clock.cost(Rows::default()), v5.executed())
        }
        // Not parked (KV does not wait for SQL transactions); answered as busy if it ever were.
        Work::Kv { request_id, .. } => ToEnvoy::KvResponse(ToEnvoyKvResponse {
            request_id: *request_id,
            data: crate::kv::kv_error(KvErrorCode::Overloaded, e().message),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_of(answer: ToEnvoy) -> SqliteErrorCode {
        match answer {
            ToEnvoy::SqliteExecuteResponse(r) => match r.result {
                SqliteExecuteResult::SqliteError(e) => {
                    assert_eq!(e.committed, Some(false));
                    e.code
                }
                other => panic!("{other:?}"),
            },
            ToEnvoy::SqliteExecResponse(r) => match r.result {
                SqliteExecResult::SqliteError(e) => e.code,
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_write_that_waited_too_long_gets_a_code_its_version_has() {
        let execute = || Work::Execute {
            request_id: 7,
            sql: "INSERT INTO t VALUES (1)".into(),
            params: Vec::new(),
            write: true,
            route: crate::sql::route::Route::of_execute("INSERT INTO t VALUES (1)", true).unwrap(),
        };
        let exec = || Work::Exec { request_id: 8, sql: "DELETE FROM t".into() };
        assert_eq!(code_of(busy_answer(&execute(), 5)), SqliteErrorCode::TransactionBusy);
        assert_eq!(code_of(busy_answer(&exec(), 5)), SqliteErrorCode::TransactionBusy);
        // TRANSACTION_BUSY cannot be encoded at v4 (SQL's only version below v5): the message would be dropped.
        let answer = busy_answer(&execute(), 4);
        envoy_protocol::encode_to_envoy(&answer, 4).expect("encodable at v4");
        assert_eq!(code_of(answer), SqliteErrorCode::Overloaded);
        assert_eq!(code_of(busy_answer(&exec(), 4)), SqliteErrorCode::Overloaded);
        assert!(envoy_protocol::encode_to_envoy(&busy_answer(&execute(), 5), 4).is_err());
    }
}
