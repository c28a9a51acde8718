//! The requests the core holds: waiting to be sent (the unsent queue) or on the
//! wire (in flight), with their deadlines.

use super::keys::RequestKey;
use super::request::{Request, RequestId, RequestOptions};
use std::collections::{BTreeSet, HashMap, VecDeque};

/// Where a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// In the unsent queue; never written to a socket (or re-queued for its one retry).
    Queued,
    /// Written to the current socket; its answer is awaited.
    Sent,
}

/// One unanswered request.
#[derive(Debug)]
pub struct Entry {
    /// Kept until answered so it can be (re-)encoded at the connection's version.
    pub request: Request,
    /// Timeout and idempotency chosen by the caller.
    pub opts: RequestOptions,
    /// Queued or on the wire: decides what a lost connection means for it.
    pub stage: Stage,
    /// Absolute deadline (ms) and the timeout it came from, for the error.
    pub deadline: Option<(u64, u64)>,
    /// Whether the one automatic retry of a read was used.
    pub retried: bool,
    /// Whether it was ever written to a socket (for `Timeout { sent }`).
    pub ever_sent: bool,
    /// The request key it was submitted with (write-capable requests): sent
    /// on a v5 connection, the same key on every send.
    pub key: Option<RequestKey>,
    /// Whether it was written with its key (at v5): only then may a lost
    /// answer be recovered by re-sending, and only on a v5 connection.
    pub sent_keyed: bool,
}

/// What becomes of a sent request when its connection is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnLost {
    /// Settled by the caller (failed, or answered as it must be).
    Settle,
    /// Re-queued once (a read's one retry).
    RetryOnce,
    /// Re-queued every time (a keyed write: its key makes each send safe).
    Resend,
}

/// All requests not yet answered.
#[derive(Debug, Default)]
pub struct Pending {
    /// Every unanswered request by id.
    entries: HashMap<RequestId, Entry>,
    /// Ids waiting to be sent, in submission order (retries go to the front).
    queue: VecDeque<RequestId>,
    /// Deadlines, ordered, to find the next one and the expired ones fast.
    deadlines: BTreeSet<(u64, RequestId)>,
    /// How many entries are `Sent`.
    in_flight: usize,
    /// Next id to hand out (wraps; ids in use are skipped).
    next_id: RequestId,
}

impl Pending {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// A fresh id not used by any unanswered request.
    pub fn allocate_id(&mut self) -> RequestId {
        loop {
            let id = self.next_id;
            self.next_id = self.next_id.wrapping_add(1);
            if !self.entries.contains_key(&id) {
                return id;
            }
        }
    }

    /// Adds a request to the back of the queue.
    pub fn insert_queued(
        &mut self,
        id: RequestId,
        request: Request,
        opts: RequestOptions,
        deadline: Option<(u64, u64)>,
        key: Option<RequestKey>,
    ) {
        if let Some((at, _)) = deadline {
            self.deadlines.insert((at, id));
        }
        self.entries.insert(
            id,
            Entry {
                request,
                opts,
                stage: Stage::Queued,
                deadline,
                retried: false,
                ever_sent: false,
                key,
                sent_keyed: false,
            },
        );
        self.queue.push_back(id);
    }

    /// The next queued id, without removing it.
    pub fn peek_queued(&self) -> Option<RequestId> {
        self.queue.front().copied()
    }

    /// Removes the front of the queue.
    pub fn pop_queued(&mut self) -> Option<RequestId> {
        self.queue.pop_front()
    }

    pub fn get(&self, id: RequestId) -> Option<&Entry> {
        self.entries.get(&id)
    }

    /// The request was written; `keyed`: with its request key.
    pub fn mark_sent(&mut self, id: RequestId, keyed: bool) {
        if let Some(e) = self.entries.get_mut(&id) {
            if e.stage != Stage::Sent {
                e.stage = Stage::Sent;
                e.ever_sent = true;
                e.sent_keyed |= keyed;
                self.in_flight += 1;
            }
        }
    }

    /// Removes an answered (or failed) request. A queued one is also taken off the queue.
    pub fn remove(&mut self, id: RequestId) -> Option<Entry> {
        let e = self.entries.remove(&id)?;
        if let Some((at, _)) = e.deadline {
            self.deadlines.remove(&(at, id));
        }
        match e.stage {
            Stage::Sent => self.in_flight -= 1,
            Stage::Queued => {
                if let Some(pos) = self.queue.iter().position(|q| *q == id) {
                    self.queue.remove(pos);
                }
            }
        }
        Some(e)
    }

    /// The earliest deadline.
    pub fn next_deadline(&self) -> Option<u64> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    /// Ids whose deadline is `<= now`.
    pub fn expired(&self, now: u64) -> Vec<RequestId> {
        self.deadlines.iter().take_while(|(at, _)| *at <= now).map(|(_, id)| *id).collect()
    }

    /// The connection was lost: every sent request either goes back to the
    /// queue (`on_lost(entry)` says whether: a read's one retry, or a keyed
    /// write's re-send) or is returned to be settled. Re-queued requests keep
    /// their submission order, ahead of requests never sent.
    pub fn connection_lost(&mut self, on_lost: impl Fn(&Entry) -> OnLost) -> Vec<RequestId> {
        let mut sent: Vec<RequestId> =
            self.entries.iter().filter(|(_, e)| e.stage == Stage::Sent).map(|(id, _)| *id).collect();
        sent.sort_unstable();
        let mut lost = Vec::new();
        let mut requeue = Vec::new();
        for id in sent {
            let e = self.entries.get_mut(&id).expect("listed above");
            let again = match on_lost(e) {
                OnLost::Settle => false,
                OnLost::RetryOnce => !e.retried,
                OnLost::Resend => true,
            };
            if again {
                e.retried = true;
                e.stage = Stage::Queued;
                requeue.push(id);
            } else {
                lost.push(id);
            }
        }
        self.in_flight -= requeue.len();
        for id in requeue.into_iter().rev() {
            self.queue.push_front(id);
        }
        lost
    }

    /// Every id, queued ones in queue order then the rest.
    pub fn all_ids(&self) -> Vec<RequestId> {
        let mut ids: Vec<RequestId> = self.queue.iter().copied().collect();
        let mut rest: Vec<RequestId> =
            self.entries.iter().filter(|(_, e)| e.stage == Stage::Sent).map(|(id, _)| *id).collect();
        rest.sort_unstable();
        ids.extend(rest);
        ids
    }
}
