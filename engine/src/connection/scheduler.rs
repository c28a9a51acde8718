//! Runs a connection's SQL/KV work off the read loop.
//!
//! Per the measured perf facts, a thread hop per request caps pipelined
//! throughput at ≈6 % of the transport; one hop per *batch* recovers it. So:
//! each actor has a FIFO queue on this connection; the scheduler task takes
//! every consecutive request that can share a lane into ONE `spawn_blocking`
//! call, and the batch's answers go to the writer together (one flush).
//!
//! Permits: the connection has `permits_per_connection` (default 32) blocking
//! slots. Fairness: one actor holds at most its writer lane plus
//! `reader_lanes_per_actor` reader lanes, and actors with waiting work are
//! served round-robin, so a busy actor cannot hold every permit.
//!
//! Ordering: a read never starts while an earlier request of the same actor
//! is still on the writer lane, so pipelined write-then-read sees the write.
//!
//! The task outlives its read loop: accepted work completes even if the
//! socket died (the answers then go nowhere).

use super::admission::PendingGuard;
use super::writer::Outbox;
use crate::inflight::InflightGuard;
use crate::sql::executor::{ExecuteOutcome, Executor};
use crate::sql::route::Lane;
use envoy_protocol::{
    KvRequestData, SqliteExecResult, SqliteExecuteResult, ToEnvoy, ToEnvoyKvResponse, ToEnvoySqliteExecResponse,
    ToEnvoySqliteExecuteResponse, Value,
};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Within a batch, answers already built are sent early once a batch has run this long,
/// so a slow statement does not hold back quick answers before it.
const EARLY_SEND_AFTER: Duration = Duration::from_millis(2);

/// What a job does.
pub enum Work {
    Exec { request_id: u32, sql: String },
    Execute { request_id: u32, sql: String, params: Vec<Value>, write: bool },
    Kv { request_id: u32, data: KvRequestData },
}

/// An accepted request waiting for (or holding) a lane.
pub struct Job {
    pub work: Work,
    /// The (actor, generation) executor, resolved at acceptance.
    pub executor: Arc<Executor>,
    /// Reader for read candidates, Writer otherwise (or after a bounce).
    pub lane: Lane,
    /// Counts this request until its answer is handed to the writer.
    pub inflight: InflightGuard,
    /// Counts it against the connection's pending bound.
    pub pending: PendingGuard,
}

impl Job {
    /// The lane this job would take now (a read goes to the writer while a transaction is open there).
    fn lane_now(&self) -> Lane {
        match self.lane {
            Lane::Reader if !self.executor.in_txn() => Lane::Reader,
            Lane::Reader | Lane::Writer => Lane::Writer,
        }
    }
}

/// Queue key: the address of the (actor, generation)'s executor. Unique while any
/// job holds the executor, which is as long as the queue exists; no allocation per job.
type QueueKey = usize;

fn key_of(job: &Job) -> QueueKey {
    Arc::as_ptr(&job.executor) as usize
}

struct Done {
    key: QueueKey,
    lane: Lane,
    bounced: Vec<Job>,
}

#[derive(Default)]
struct ActorQueue {
    /// Accepted jobs not started yet, in arrival order.
    pending: VecDeque<Job>,
    /// A batch runs on the writer lane.
    writer_busy: bool,
    /// Batches running on reader lanes.
    readers_busy: usize,
    /// Whether the key is in the round-robin `ready` list.
    in_ready: bool,
}

/// Handle the read loop uses to submit jobs; dropping it lets the task finish once idle.
pub struct Scheduler {
    tx: mpsc::UnboundedSender<Job>,
}

/// Scheduler parameters.
#[derive(Debug, Clone, Copy)]
pub struct SchedulerConfig {
    pub permits: usize,
    pub reader_lanes: usize,
    pub max_batch: usize,
}

impl Scheduler {
    pub fn spawn(cfg: SchedulerConfig, outbox: Outbox) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(cfg, rx, outbox));
        Self { tx }
    }

    pub fn submit(&self, job: Job) {
        // The task only ends after this handle is dropped, so this cannot fail.
        let _ = self.tx.send(job);
    }
}

async fn run(cfg: SchedulerConfig, mut jobs: mpsc::UnboundedReceiver<Job>, outbox: Outbox) {
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
    let mut queues: HashMap<QueueKey, ActorQueue> = HashMap::new();
    let mut ready: VecDeque<QueueKey> = VecDeque::new();
    let mut free = cfg.permits;
    let mut running = 0usize;
    let mut input_open = true;
    loop {
        if !input_open && running == 0 && queues.values().all(|q| q.pending.is_empty()) {
            break;
        }
        tokio::select! {
            job = jobs.recv(), if input_open => match job {
                Some(job) => {
                    enqueue(&mut queues, &mut ready, job, false);
                    while let Ok(job) = jobs.try_recv() {
                        enqueue(&mut queues, &mut ready, job, false);
                    }
                }
                None => input_open = false,
            },
            Some(done) = done_rx.recv() => {
                let mut next = Some(done);
                while let Some(d) = next.take() {
                    running -= 1;
                    free += 1;
                    for job in d.bounced.into_iter().rev() {
                        enqueue(&mut queues, &mut ready, job, true);
                    }
                    if let Some(q) = queues.get_mut(&d.key) {
                        match d.lane {
                            Lane::Writer => q.writer_busy = false,
                            Lane::Reader => q.readers_busy -= 1,
                        }
                        if !q.in_ready {
                            q.in_ready = true;
                            ready.push_back(d.key);
                        }
                    }
                    next = done_rx.try_recv().ok();
                }
            }
        }
        // Round-robin over actors with waiting work.
        let mut rounds = ready.len();
        while rounds > 0 && free > 0 {
            rounds -= 1;
            let Some(key) = ready.pop_front() else { break };
            let Some(q) = queues.get_mut(&key) else { continue };
            q.in_ready = false;
            while free > 0 {
                let Some((lane, batch)) = take_batch(q, &cfg) else { break };
                free -= 1;
                running += 1;
                spawn_batch(key, lane, batch, outbox.clone(), done_tx.clone());
            }
            if q.pending.is_empty() {
                if !q.writer_busy && q.readers_busy == 0 {
                    queues.remove(&key);
                }
            } else {
                // Still waiting (lane busy or out of permits): back of the round-robin.
                q.in_ready = true;
                ready.push_back(key);
            }
        }
    }
}

fn enqueue(queues: &mut HashMap<QueueKey, ActorQueue>, ready: &mut VecDeque<QueueKey>, job: Job, front: bool) {
    let key = key_of(&job);
    let q = queues.entry(key).or_default();
    if front {
        q.pending.push_front(job);
    } else {
        q.pending.push_back(job);
    }
    if !q.in_ready {
        q.in_ready = true;
        ready.push_back(key);
    }
}

/// Takes the next batch this actor may start now, if any.
fn take_batch(q: &mut ActorQueue, cfg: &SchedulerConfig) -> Option<(Lane, Vec<Job>)> {
    let lane = q.pending.front()?.lane_now();
    match lane {
        Lane::Writer if q.writer_busy => return None,
        Lane::Reader if q.writer_busy || q.readers_busy >= cfg.reader_lanes => return None,
        Lane::Writer | Lane::Reader => {}
    }
    let mut batch = Vec::new();
    while batch.len() < cfg.max_batch && q.pending.front().is_some_and(|j| j.lane_now() == lane) {
        batch.extend(q.pending.pop_front());
    }
    match lane {
        Lane::Writer => q.writer_busy = true,
        Lane::Reader => q.readers_busy += 1,
    }
    Some((lane, batch))
}

fn spawn_batch(key: QueueKey, lane: Lane, batch: Vec<Job>, outbox: Outbox, done: mpsc::UnboundedSender<Done>) {
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut answers = Vec::with_capacity(batch.len());
        let mut answered: Vec<Job> = Vec::with_capacity(batch.len());
        let mut bounced = Vec::new();
        for job in batch {
            match run_job(&job, lane) {
                Some(answer) => {
                    answers.push(answer);
                    answered.push(job);
                }
                None => bounced.push(Job { lane: Lane::Writer, ..job }),
            }
            if started.elapsed() > EARLY_SEND_AFTER && !answers.is_empty() {
                outbox.send_batch(std::mem::take(&mut answers));
                answered.clear(); // drops their in-flight guards: answered
            }
        }
        outbox.send_batch(answers);
        drop(answered);
        let _ = done.send(Done { key, lane, bounced });
    });
}

/// Runs one job on `lane`; None means "not read-only: move it to the writer".
fn run_job(job: &Job, lane: Lane) -> Option<ToEnvoy> {
    let x = &job.executor;
    Some(match &job.work {
        Work::Execute { request_id, sql, params, write } => {
            let result = match x.execute(lane, sql, params, *write) {
                ExecuteOutcome::Bounce => return None,
                ExecuteOutcome::Done(Ok(r)) => SqliteExecuteResult::ExecuteResult(r),
                ExecuteOutcome::Done(Err(e)) => SqliteExecuteResult::SqliteError(e),
            };
            ToEnvoy::SqliteExecuteResponse(ToEnvoySqliteExecuteResponse { request_id: *request_id, result })
        }
        Work::Exec { request_id, sql } => {
            let result = match x.exec(sql) {
                Ok(r) => SqliteExecResult::QueryResult(r),
                Err(e) => SqliteExecResult::SqliteError(e),
            };
            ToEnvoy::SqliteExecResponse(ToEnvoySqliteExecResponse { request_id: *request_id, result })
        }
        Work::Kv { request_id, data } => {
            ToEnvoy::KvResponse(ToEnvoyKvResponse { request_id: *request_id, data: x.kv(data) })
        }
    })
}
