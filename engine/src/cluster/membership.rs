//! A node's membership: its key `nodes/<id>` under an etcd lease, the keep-alive of that lease, and
//! self-fencing.
//!
//! Two tasks run per [`Membership`]:
//!
//! - the **keeper** renews the lease every `ttl / 3` over one keep-alive stream. Before each request it
//!   reads the clock (`sent`); when the answer says the lease lives (TTL > 0) it moves the *serving
//!   deadline* to `sent + ttl - margin`. A failed or slow round trip (bounded by `min(ttl / 3,
//!   ETCD_CALL_TIMEOUT)`) drops the stream and the connection (a half-open TCP link would otherwise
//!   swallow every later request) and retries on a fresh one: at once after a timeout, `ttl / 10` after an
//!   error (a refused connection fails fast; no busy loop). An answer with TTL 0 (etcd expired the lease) fences
//!   at once. Once fenced, it re-joins: a fresh connection, a **new** lease, `nodes/<id>` put again;
//!   on success the node serves again.
//! - the **watchdog** sleeps until the deadline and fences the node there, whatever the keeper is doing
//!   (waiting on a hung call, say).
//!
//! [`Membership::is_serving`] does not trust either task to be on time: it compares the deadline with the
//! clock itself, so the node answers "not serving" from the deadline on even if the runtime is too busy to
//! run the watchdog. A fence is final for the lease: a late renewal cannot revive it (the deadline moves
//! only while it has not passed), so `serving` goes `true → false → true` only through a re-join.
//!
//! Why this is safe: etcd expires a lease no sooner than `ttl` after it *received* the last renewal, which
//! is after we *sent* it; we stop serving `margin` before `sent + ttl` (specs/cluster.md, "Fencing").

use super::{
    call, fence_margin, ClusterError, ClusterSettings, Keys, NodeValue, ETCD_CALL_TIMEOUT, ETCD_CONNECT_TIMEOUT,
};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, LeaseKeepAliveStream, LeaseKeeper, PutOptions, Txn, TxnOp,
};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

/// First pause between two failed re-join attempts; it doubles up to [`REJOIN_BACKOFF_MAX`].
pub const REJOIN_BACKOFF_MIN: Duration = Duration::from_millis(200);
/// Longest pause between two failed re-join attempts (a healed node serves again within about this).
pub const REJOIN_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// `deadline` value of a fenced node.
const FENCED: u64 = 0;

/// A node's registration in the cluster under an etcd lease. Made by [`Membership::join`]; shared by the
/// engine and the [`Directory`](super::Directory) as an `Arc`.
pub struct Membership {
    /// State shared with the keeper and watchdog tasks.
    shared: Arc<Shared>,
    /// The keeper and watchdog: aborted by [`Membership::leave`] and on drop (a dropped membership
    /// without `leave` stops renewing; etcd expires its lease after the TTL).
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// What the tasks and the public methods share.
struct Shared {
    /// As given to `join` (the prefix is normalized into `keys`).
    settings: ClusterSettings,
    /// Key builder for the cluster's prefix.
    keys: Keys,
    /// Lease TTL asked of etcd, in seconds (validated settings).
    ttl_secs: i64,
    /// `started_ms` of the node value: when this process joined first.
    started_ms: u64,
    /// The etcd client; replaced by a fresh connection when a keep-alive round trip fails (the old one may
    /// sit on a half-open link) and before every re-join. Callers clone it per call.
    client: Mutex<Client>,
    /// The lease currently on `nodes/<id>` as far as this node knows (changes on re-join).
    lease: AtomicI64,
    /// TTL etcd granted the current lease, in ms (it may exceed what was asked).
    granted_ttl_ms: AtomicU64,
    /// Origin of `deadline` (a monotonic clock reading taken at construction).
    epoch: Instant,
    /// Serving deadline in ns after `epoch`, or [`FENCED`]. Serving means `FENCED < now < deadline`.
    deadline: AtomicU64,
    /// Mirrors serving for waiters: `None` when fenced (by the watchdog, the keeper or `leave`),
    /// `Some(lease)` after a (re-)join under `lease`. Carrying the lease (not a bool) means a waiter that
    /// wakes only after a fence *and* the re-join still sees that something changed.
    serving: watch::Sender<Option<i64>>,
    /// Published in the node value; kept here so a re-join publishes it again.
    draining: AtomicBool,
    /// Wakes the watchdog when a fenced node is given a deadline again (a re-join).
    watchdog_wake: Notify,
    /// Set by `leave`: no more re-joins.
    left: AtomicBool,
}

impl Membership {
    /// Joins the cluster: grants a lease, puts `nodes/<id>` under it, starts the keeper and the watchdog.
    ///
    /// An existing `nodes/<id>` is overwritten and the lease it carried is revoked. The usual case is
    /// this node restarting after a crash: its previous incarnation's lease can live for up to a TTL, and
    /// refusing (or waiting it out) would keep the node's actors unavailable meanwhile for nothing, since the
    /// node id names the data directory and so the process that owns these actors. If instead two live
    /// processes were given the same id (an operator error), the older one finds its lease revoked on its
    /// next renewal and fences itself at once.
    pub async fn join(settings: &ClusterSettings) -> Result<Arc<Membership>, ClusterError> {
        let ttl_secs = settings.validate()?;
        let client = connect(&settings.endpoints).await?;
        let started_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        let (serving, _) = watch::channel(None);
        let shared = Arc::new(Shared {
            keys: Keys::new(&settings.prefix),
            settings: settings.clone(),
            ttl_secs,
            started_ms,
            client: Mutex::new(client),
            lease: AtomicI64::new(0),
            granted_ttl_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            deadline: AtomicU64::new(FENCED),
            serving,
            draining: AtomicBool::new(false),
            watchdog_wake: Notify::new(),
            left: AtomicBool::new(false),
        });
        shared.join_once().await?;
        let tasks = vec![tokio::spawn(shared.clone().keeper()), tokio::spawn(shared.clone().watchdog())];
        Ok(Arc::new(Membership { shared, tasks: Mutex::new(tasks) }))
    }

    /// Whether this node may serve its actors now: it holds a lease that etcd cannot have expired yet.
    /// One atomic load and one clock read; `false` from the deadline on, even before the watchdog ran.
    pub fn is_serving(&self) -> bool {
        self.shared.is_serving()
    }

    /// Follows serving: `Some(lease)` while serving under `lease`, `None` from a fence until the re-join,
    /// then `Some(new lease)`. An engine drops every placement made under a lease as soon as the value is
    /// anything else: a watcher slow to wake may see the new lease without having seen `None` (a watch
    /// keeps only the latest value), which is why the value is not a bool.
    pub fn serving(&self) -> watch::Receiver<Option<i64>> {
        self.shared.serving.subscribe()
    }

    /// Whether this node is serving under `lease` (placements made under an older lease are void): the
    /// per-request check for an engine that records the lease of each placement. Two atomic loads.
    pub fn serves_under(&self, lease: i64) -> bool {
        // The deadline first: a deadline set by a join was stored after that join's lease (release/acquire),
        // so a lease read after a live deadline is that join's lease or a later one, never an older one.
        self.shared.is_serving() && self.lease_id() == lease
    }

    /// The lease currently on `nodes/<id>` (a new one after every re-join).
    pub fn lease_id(&self) -> i64 {
        self.shared.lease.load(Ordering::Acquire)
    }

    /// The TTL etcd granted the current lease.
    pub fn lease_ttl(&self) -> Duration {
        Duration::from_millis(self.shared.granted_ttl_ms.load(Ordering::Acquire))
    }

    /// An etcd client on the current connection (cheap clone; a fresh connection replaces it after a link
    /// failure, so take one per call rather than keeping it).
    pub fn client(&self) -> Client {
        self.shared.client.lock().clone()
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.shared.settings.node_id
    }

    /// The settings this node joined with.
    pub fn settings(&self) -> &ClusterSettings {
        &self.shared.settings
    }

    /// Publishes whether this node is draining (`draining` in `nodes/<id>`), under its lease: fails with
    /// `Fenced` if the node key does not carry the current lease. A later re-join publishes it again.
    pub async fn set_draining(&self, draining: bool) -> Result<(), ClusterError> {
        self.shared.draining.store(draining, Ordering::Release);
        self.ensure_serving()?;
        let lease = self.lease_id();
        let key = self.shared.keys.node(self.node_id());
        let txn = Txn::new().when([Compare::lease(key.clone(), CompareOp::Equal, lease)]).and_then([TxnOp::put(
            key,
            self.shared.node_value()?,
            Some(PutOptions::new().with_lease(lease)),
        )]);
        let resp = call("set draining", self.client().txn(txn)).await?;
        if resp.succeeded() {
            Ok(())
        } else {
            Err(ClusterError::Fenced)
        }
    }

    /// Leaves the cluster cleanly: stops renewing, stops serving, revokes the lease (which deletes
    /// `nodes/<id>`, so other nodes see this one gone at once instead of after the TTL). Best effort: if
    /// etcd cannot be reached the lease simply expires.
    pub async fn leave(&self) {
        self.shared.left.store(true, Ordering::Release);
        for task in self.tasks.lock().drain(..) {
            task.abort();
        }
        self.shared.fence("leaving the cluster");
        let lease = self.lease_id();
        if let Err(e) = call("lease revoke", self.client().lease_revoke(lease)).await {
            tracing::warn!(node = %self.node_id(), lease, error = %e, "cluster: could not revoke the lease on leave; it will expire");
        }
    }

    /// `Ok` while serving, `Fenced` otherwise.
    pub(crate) fn ensure_serving(&self) -> Result<(), ClusterError> {
        if self.is_serving() {
            Ok(())
        } else {
            Err(ClusterError::Fenced)
        }
    }

    /// The key builder of this cluster.
    pub(crate) fn keys(&self) -> &Keys {
        &self.shared.keys
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        for task in self.tasks.get_mut().drain(..) {
            task.abort();
        }
    }
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("node_id", &self.node_id())
            .field("lease", &self.lease_id())
            .field("serving", &self.is_serving())
            .finish()
    }
}

/// A client for `endpoints`. The connection is made lazily (and again after failures), so this does not
/// wait for etcd; the first call does, under its timeout.
async fn connect(endpoints: &[String]) -> Result<Client, ClusterError> {
    // No per-request gRPC timeout here: it would also cut the long-lived keep-alive stream; every call
    // is bounded by `call` instead. `require_leader`: a member cut off from its leader fails requests at
    // once instead of holding them.
    let options = ConnectOptions::new().with_connect_timeout(ETCD_CONNECT_TIMEOUT).with_require_leader(true);
    call("connect", Client::connect(endpoints, Some(options))).await
}

impl Shared {
    fn now_ns(&self) -> u64 {
        // Never FENCED (0): the epoch is at least a few ns in the past by any call.
        (self.epoch.elapsed().as_nanos() as u64).max(1)
    }

    fn is_serving(&self) -> bool {
        let deadline = self.deadline.load(Ordering::Acquire);
        deadline != FENCED && self.now_ns() < deadline
    }

    fn ttl(&self) -> Duration {
        Duration::from_millis(self.granted_ttl_ms.load(Ordering::Acquire))
    }

    fn client(&self) -> Client {
        self.client.lock().clone()
    }

    fn node_value(&self) -> Result<String, ClusterError> {
        let value = NodeValue {
            node_id: self.settings.node_id.clone(),
            advertise: self.settings.advertise.clone(),
            draining: self.draining.load(Ordering::Acquire),
            started_ms: self.started_ms,
        };
        serde_json::to_string(&value)
            .map_err(|e| ClusterError::Corrupt { key: self.keys.node(&self.settings.node_id), reason: e.to_string() })
    }

    /// The deadline for a renewal sent at `sent`, in ns after the epoch.
    fn deadline_after(&self, sent: Instant) -> u64 {
        let ttl = self.ttl();
        let at = sent + ttl - fence_margin(ttl);
        (at.saturating_duration_since(self.epoch).as_nanos() as u64).max(1)
    }

    /// Moves the deadline to `to`, unless the node is fenced or the deadline already passed (a fence is
    /// final for its lease). Returns whether the node is still serving.
    fn extend(&self, to: u64) -> bool {
        let mut current = self.deadline.load(Ordering::Acquire);
        loop {
            if current == FENCED || self.now_ns() >= current {
                return false;
            }
            if to <= current {
                return true;
            }
            match self.deadline.compare_exchange(current, to, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return true,
                Err(seen) => current = seen,
            }
        }
    }

    /// Fences the node whatever its deadline.
    fn fence(&self, why: &str) {
        if self.deadline.swap(FENCED, Ordering::AcqRel) != FENCED {
            self.announce_fence(why);
        }
    }

    /// Fences the node if its deadline is still `deadline` (the watchdog: a renewal that moved it wins).
    fn fence_at(&self, deadline: u64, why: &str) {
        if self.deadline.compare_exchange(deadline, FENCED, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            self.announce_fence(why);
        }
    }

    fn announce_fence(&self, why: &str) {
        self.serving.send_replace(None);
        tracing::warn!(node = %self.settings.node_id, lease = self.lease.load(Ordering::Acquire), why, "cluster: node fenced, serving nothing until it re-joins");
    }

    /// Grants a new lease, puts `nodes/<id>` under it, revokes the lease the key carried before (if any),
    /// and starts serving until `grant sent + ttl - margin`.
    async fn join_once(&self) -> Result<(), ClusterError> {
        let mut client = self.client();
        let sent = Instant::now();
        let grant = call("lease grant", client.lease_grant(self.ttl_secs, None)).await?;
        let lease = grant.id();
        if grant.ttl() <= 0 {
            return Err(ClusterError::Corrupt {
                key: "lease grant".into(),
                reason: format!("granted TTL {}", grant.ttl()),
            });
        }
        let key = self.keys.node(&self.settings.node_id);
        let put = call(
            "register node",
            client.put(key.clone(), self.node_value()?, Some(PutOptions::new().with_lease(lease).with_prev_key())),
        )
        .await;
        let put = match put {
            Ok(put) => put,
            Err(e) => {
                // The lease would expire anyway; revoking it keeps etcd tidy when it can be reached.
                let _ = call("lease revoke", client.lease_revoke(lease)).await;
                return Err(e);
            }
        };
        self.lease.store(lease, Ordering::Release);
        self.granted_ttl_ms.store(grant.ttl() as u64 * 1000, Ordering::Release);
        let deadline = self.deadline_after(sent);
        if self.now_ns() >= deadline {
            // Registered, but too slowly to know the lease still has `margin` left: not serving on it.
            return Err(ClusterError::Timeout { op: "join", timeout: self.ttl() - fence_margin(self.ttl()) });
        }
        self.deadline.store(deadline, Ordering::Release);
        self.serving.send_replace(Some(lease));
        self.watchdog_wake.notify_one();
        tracing::info!(node = %self.settings.node_id, lease, ttl_s = grant.ttl(), "cluster: joined");
        let previous = put.prev_key().map(|kv| kv.lease()).unwrap_or(0);
        if previous != 0 && previous != lease {
            // A previous incarnation's lease, or ours from before a fence: nothing may renew it any more.
            if let Err(e) = call("lease revoke", client.lease_revoke(previous)).await {
                tracing::debug!(node = %self.settings.node_id, previous, error = %e, "cluster: old lease not revoked (it expires on its own)");
            }
        }
        Ok(())
    }

    /// Replaces the client with a fresh connection (after a link failure).
    async fn reconnect(&self) {
        match connect(&self.settings.endpoints).await {
            Ok(client) => *self.client.lock() = client,
            Err(e) => tracing::debug!(error = %e, "cluster: reconnect to etcd failed"),
        }
    }

    /// The keeper task: renews the current lease until fenced, then re-joins; for ever (until `leave`).
    async fn keeper(self: Arc<Self>) {
        loop {
            self.keep_lease().await;
            self.rejoin().await;
            if self.left.load(Ordering::Acquire) {
                return;
            }
        }
    }

    /// Renews the current lease until the node is fenced.
    async fn keep_lease(&self) {
        let lease = self.lease.load(Ordering::Acquire);
        let ttl = self.ttl();
        let period = ttl / 3;
        let round_trip = period.min(ETCD_CALL_TIMEOUT);
        let retry = ttl / 10;
        let mut stream: Option<(LeaseKeeper, LeaseKeepAliveStream)> = None;
        let mut next = Instant::now() + period;
        loop {
            // Wake for the next renewal, or at the deadline to start re-joining without delay.
            let deadline = self.epoch + Duration::from_nanos(self.deadline.load(Ordering::Acquire));
            tokio::time::sleep_until(next.min(deadline).into()).await;
            if !self.is_serving() {
                // The watchdog fenced us (or is about to): this lease is done.
                self.fence("no lease renewal acknowledged in time");
                return;
            }
            if Instant::now() < next {
                continue;
            }
            let sent = Instant::now();
            match tokio::time::timeout(round_trip, renew(self.client(), &mut stream, lease)).await {
                Ok(Ok(true)) => {
                    if !self.extend(self.deadline_after(sent)) {
                        self.fence("renewal came back after the serving deadline");
                        return;
                    }
                    next = sent + period;
                }
                Ok(Ok(false)) => {
                    self.fence("etcd says the lease expired");
                    return;
                }
                Ok(Err(e)) => {
                    tracing::debug!(lease, error = %e, "cluster: lease renewal failed; retrying");
                    stream = None;
                    self.reconnect().await;
                    next = Instant::now() + retry;
                }
                Err(_) => {
                    // The wait already took a round trip's bound: retry at once, on a fresh connection.
                    tracing::debug!(lease, "cluster: lease renewal timed out; reconnecting");
                    stream = None;
                    self.reconnect().await;
                    next = Instant::now();
                }
            }
        }
    }

    /// Re-joins with a new lease on a fresh connection, retrying with back-off until it works or `leave`.
    async fn rejoin(&self) {
        let mut backoff = REJOIN_BACKOFF_MIN;
        while !self.left.load(Ordering::Acquire) {
            self.reconnect().await;
            match self.join_once().await {
                Ok(()) => return,
                Err(e) => {
                    tracing::debug!(node = %self.settings.node_id, error = %e, "cluster: re-join failed; retrying")
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(REJOIN_BACKOFF_MAX);
        }
    }

    /// The watchdog task: fences the node at its deadline.
    async fn watchdog(self: Arc<Self>) {
        loop {
            let deadline = self.deadline.load(Ordering::Acquire);
            if deadline == FENCED {
                // Woken by the next join (a permit stored before we wait is not lost).
                self.watchdog_wake.notified().await;
                continue;
            }
            let now = self.now_ns();
            if now < deadline {
                tokio::time::sleep(Duration::from_nanos(deadline - now)).await;
                continue;
            }
            self.fence_at(deadline, "no lease renewal acknowledged in time");
        }
    }
}

/// One renewal round trip on `stream` (opened first if needed). `Ok(true)`: etcd renewed the lease;
/// `Ok(false)`: etcd says the lease is gone.
async fn renew(
    client: Client,
    stream: &mut Option<(LeaseKeeper, LeaseKeepAliveStream)>,
    lease: i64,
) -> Result<bool, etcd_client::Error> {
    let Some((keeper, responses)) = stream.as_mut() else {
        // Opening the stream is itself a renewal: it sends one request and waits for its answer, and
        // fails with `LeaseKeepAliveError` when that answer has TTL 0.
        return match client.lease_client().keep_alive(lease).await {
            Ok(opened) => {
                *stream = Some(opened);
                Ok(true)
            }
            Err(etcd_client::Error::LeaseKeepAliveError(_)) => Ok(false),
            Err(e) => Err(e),
        };
    };
    // One request at a time on the stream, so the answer read is this request's.
    keeper.keep_alive().await?;
    match responses.message().await? {
        Some(resp) => Ok(resp.ttl() > 0),
        None => Err(etcd_client::Error::LeaseKeepAliveError("keep-alive stream closed by etcd".into())),
    }
}
