//! Relays: how a request reaches the node that owns its actor.
//!
//! An envoy may connect to any node. Its requests for actors owned by another
//! node are *forwarded*: the node it is connected to opens, for this envoy
//! connection, one WebSocket per owner node — a relay link — and speaks the
//! ordinary envoy protocol on it, at the envoy's own version, with the envoy's
//! own token, namespace and envoy key. To the owner the link *is* the envoy: its
//! admission, fencing, placement caps, drains and error answers apply unchanged,
//! and answers come back exactly as the envoy would have got them connected
//! there. So fencing stays intact (only the owner runs SQL, only at the
//! generation etcd records) and every protocol version keeps working.
//!
//! What this node does for a relayed actor:
//! - **routes** each actor-addressed message by the owner learnt from the
//!   get-or-create answer that placed it through a link; stream credit and
//!   cancel follow their stream's request id;
//! - **keeps order**: every relayed message goes through one queue per envoy
//!   connection, drained by one task (`run`), so a transaction's statements or
//!   a stream's credits reach the owner in the order the envoy sent them;
//! - **re-issues** the owner's commands (StartActor / StopActor) in the envoy's
//!   own session (this node's indices and resume rules) and acks them at once;
//! - **re-numbers** events: the envoy's events about a relayed actor go to its
//!   owner under the link's own indices;
//! - **answers for the owner** when the link cannot: a request that could not be
//!   sent gets ACTOR_UNAVAILABLE with `committed = false` (nothing ran); one sent
//!   on a link that then dropped gets ACTOR_UNAVAILABLE with `committed` unknown
//!   (a keyed v5 request is resent with its key once the owner is back);
//! - **bounds** what it holds: at most `maxPendingRequests` relayed requests
//!   unanswered per envoy connection (more get OVERLOADED), and it stops reading
//!   a link while the envoy's outbox is over its budget, so a slow envoy pushes
//!   back on the owner instead of growing this node's memory.

use crate::connection::session::Session;
use crate::connection::writer::Outbox;
use envoy_protocol::{
    decode_to_envoy, encode_to_engine, ActorErrorCode, DecodeLimits, Event, EventWrapper, GetOrCreateActorError,
    GetOrCreateActorResult, KvErrorCode, KvErrorResponse, KvResponseData, SqliteBatchResult, SqliteBeginResult,
    SqliteCommitResult, SqliteError, SqliteErrorCode, SqliteExecResult, SqliteExecuteResult, SqliteFailure,
    SqliteRollbackResult, ToEngine, ToEngineAckCommands, ToEngineEvents, ToEngineMetadata, ToEnginePong, ToEnvoy,
};
use futures_util::future::BoxFuture;
use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// Longest a relay link may take to open (TCP, upgrade) before the request is answered ACTOR_UNAVAILABLE.
pub const RELAY_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// After a failed connect, how long requests for that node are answered at once
/// instead of trying again (so a dead node does not cost a connect per request).
pub const RELAY_RETRY_AFTER: Duration = Duration::from_millis(250);

/// Who the envoy is, as its links present it to owner nodes.
#[derive(Debug, Clone)]
pub struct Presented {
    /// The envoy's namespace (the owner checks its token may use it).
    pub namespace: String,
    /// The envoy's key: the owner places actors on it.
    pub envoy_key: String,
    /// The envoy's pool (must match its hello).
    pub pool_name: String,
    /// The token the envoy presented here, presented again to the owner (every node shares the tenants file).
    pub token: Option<String>,
    /// The envoy's protocol version: links speak it too, so owners answer exactly as to the envoy.
    pub version: u16,
}

/// What bounds the relays of one envoy connection (this node's own limits).
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Relayed requests unanswered at once (maxPendingRequests); more get OVERLOADED.
    pub max_pending: usize,
    /// Decoding bounds for the owners' frames (maxFrameBytes).
    pub decode_limits: DecodeLimits,
    /// A link silent this long is closed (the envoy-lost threshold plus one ping interval).
    pub silence: Duration,
}

/// Where to reach a node.
pub trait Resolve: Send + Sync {
    /// The `ws://host:port` a node advertises, if it is registered and alive.
    fn advertise<'a>(&'a self, node_id: &'a str) -> BoxFuture<'a, Option<String>>;
    /// (namespace, owner node) of an actor, if the directory has it; Err when
    /// the directory cannot be read (why).
    fn owner_of<'a>(&'a self, actor_id: &'a str) -> BoxFuture<'a, Result<Option<(String, String)>, String>>;
}

/// The node of a queued message whose owner is not known yet: the relay task
/// looks it up in the directory first.
const LOOKUP: &str = "";

/// Which answer a relayed request expects (to answer it if its link cannot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    GetOrCreate,
    Kv,
    Exec,
    Execute,
    ExecV5,
    ExecuteV5,
    Batch,
    Begin,
    TransactionExecute,
    Commit,
    Rollback,
    StreamOpen,
}

/// Why this node answers a relayed request itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The owner cannot be reached (or the link dropped).
    Unavailable,
    /// Too many relayed requests unanswered on this envoy connection.
    Overloaded,
    /// No such actor in the envoy's namespace (the directory has none).
    NotFound,
    /// The actor is owned by this node but not placed on this envoy here.
    NotPlaced,
}

/// Whom a message from the envoy concerns.
#[derive(Debug)]
pub enum Target<'a> {
    /// One actor, and the request id and answer kind if it expects an answer.
    Actor(&'a str, Option<(u32, Kind)>),
    /// A stream's credit or cancel, by the stream's request id.
    Stream(u32),
    /// The connection itself (hello, pong, acks, events, stopping) or a
    /// get-or-create (placed by `cluster::placement`, which may relay it).
    Connection,
}

/// Whom `msg` concerns. Exhaustive: a new message forces a routing decision here.
pub fn target(msg: &ToEngine) -> Target<'_> {
    match msg {
        ToEngine::Metadata(_)
        | ToEngine::Events(_)
        | ToEngine::AckCommands(_)
        | ToEngine::Stopping
        | ToEngine::Pong(_)
        | ToEngine::GetOrCreateActor(_) => Target::Connection,
        ToEngine::KvRequest(r) => Target::Actor(&r.actor_id, Some((r.request_id, Kind::Kv))),
        ToEngine::SqliteExec(r) => Target::Actor(&r.request.actor_id, Some((r.request_id, Kind::Exec))),
        ToEngine::SqliteExecute(r) => Target::Actor(&r.request.actor_id, Some((r.request_id, Kind::Execute))),
        ToEngine::SqliteExecuteWrite(r) => Target::Actor(&r.request.actor_id, Some((r.request_id, Kind::Execute))),
        ToEngine::SqliteExecV5(r) => Target::Actor(&r.request.actor_id, Some((r.request_id, Kind::ExecV5))),
        ToEngine::SqliteExecuteV5(r) => Target::Actor(&r.request.actor_id, Some((r.request_id, Kind::ExecuteV5))),
        ToEngine::SqliteBatch(r) => Target::Actor(&r.request.actor_id, Some((r.request_id, Kind::Batch))),
        ToEngine::SqliteBegin(r) => Target::Actor(&r.request.actor_id, Some((r.request_id, Kind::Begin))),
        ToEngine::SqliteTransactionExecute(r) => {
            Target::Actor(&r.request.actor_id, Some((r.request_id, Kind::TransactionExecute)))
        }
        ToEngine::SqliteCommit(r) => Target::Actor(&r.request.actor_id, Some((r.request_id, Kind::Commit))),
        ToEngine::SqliteRollback(r) => Target::Actor(&r.request.actor_id, Some((r.request_id, Kind::Rollback))),
        ToEngine::SqliteStreamOpen(r) => Target::Actor(&r.request.actor_id, Some((r.request_id, Kind::StreamOpen))),
        ToEngine::SqliteStreamCredit(c) => Target::Stream(c.request_id),
        ToEngine::SqliteStreamCancel(c) => Target::Stream(c.request_id),
    }
}

/// The request id an owner's message answers, and whether it is the last message
/// for that request (a stream sends several). None: not an answer.
fn answers(msg: &ToEnvoy) -> Option<(u32, bool)> {
    match msg {
        ToEnvoy::Init(_)
        | ToEnvoy::InitV5(_)
        | ToEnvoy::Commands(_)
        | ToEnvoy::AckEvents(_)
        | ToEnvoy::Ping(_)
        | ToEnvoy::SqliteTransactionEnded(_) => None,
        ToEnvoy::KvResponse(r) => Some((r.request_id, true)),
        ToEnvoy::GetOrCreateActorResponse(r) => Some((r.request_id, true)),
        ToEnvoy::SqliteExecResponse(r) => Some((r.request_id, true)),
        ToEnvoy::SqliteExecuteResponse(r) => Some((r.request_id, true)),
        ToEnvoy::SqliteExecResponseV5(r) => Some((r.request_id, true)),
        ToEnvoy::SqliteExecuteResponseV5(r) => Some((r.request_id, true)),
        ToEnvoy::SqliteBatchResponse(r) => Some((r.request_id, true)),
        ToEnvoy::SqliteBeginResponse(r) => Some((r.request_id, true)),
        ToEnvoy::SqliteTransactionExecuteResponse(r) => Some((r.request_id, true)),
        ToEnvoy::SqliteCommitResponse(r) => Some((r.request_id, true)),
        ToEnvoy::SqliteRollbackResponse(r) => Some((r.request_id, true)),
        ToEnvoy::SqliteStreamChunk(c) => Some((c.request_id, c.done)),
        ToEnvoy::SqliteStreamFailed(f) => Some((f.request_id, true)),
    }
}

/// This node's own answer to a relayed request of `kind`. `committed`:
/// Some(false) when the request never left this node, None when it was sent
/// and its link dropped before the answer (it may have run). `sequence`: for a
/// stream, one past the last chunk the envoy got.
pub fn refusal(
    kind: Kind,
    request_id: u32,
    sequence: u32,
    why: Refusal,
    message: &str,
    committed: Option<bool>,
) -> ToEnvoy {
    use envoy_protocol as p;
    let (actor_code, kv_code, sql_code) = match why {
        Refusal::Unavailable => {
            (ActorErrorCode::ActorUnavailable, KvErrorCode::ActorUnavailable, SqliteErrorCode::ActorUnavailable)
        }
        Refusal::Overloaded => (ActorErrorCode::Overloaded, KvErrorCode::Overloaded, SqliteErrorCode::Overloaded),
        // A get-or-create is never looked up (placement decides it): these two only answer requests.
        Refusal::NotFound => {
            (ActorErrorCode::InvalidRequest, KvErrorCode::ActorNotFound, SqliteErrorCode::ActorNotFound)
        }
        Refusal::NotPlaced => {
            (ActorErrorCode::InvalidRequest, KvErrorCode::ActorNotPlaced, SqliteErrorCode::ActorNotPlaced)
        }
    };
    let cost = crate::sql::v5::NO_COST;
    let error = SqliteError {
        code: sql_code,
        message: message.to_string(),
        extended_code: None,
        committed,
        statement_index: None,
        limit: None,
    };
    match kind {
        Kind::GetOrCreate => ToEnvoy::GetOrCreateActorResponse(p::ToEnvoyGetOrCreateActorResponse {
            request_id,
            result: GetOrCreateActorResult::GetOrCreateActorError(GetOrCreateActorError {
                code: actor_code,
                message: message.to_string(),
            }),
        }),
        Kind::Kv => ToEnvoy::KvResponse(p::ToEnvoyKvResponse {
            request_id,
            data: KvResponseData::KvErrorResponse(KvErrorResponse {
                code: kv_code,
                message: message.to_string(),
                current_generation: None,
            }),
        }),
        Kind::Exec => ToEnvoy::SqliteExecResponse(p::ToEnvoySqliteExecResponse {
            request_id,
            result: SqliteExecResult::SqliteError(error),
        }),
        Kind::Execute => ToEnvoy::SqliteExecuteResponse(p::ToEnvoySqliteExecuteResponse {
            request_id,
            result: SqliteExecuteResult::SqliteError(error),
        }),
        Kind::ExecV5 => ToEnvoy::SqliteExecResponseV5(p::ToEnvoySqliteExecResponseV5 {
            request_id,
            result: SqliteExecResult::SqliteError(error),
            cost,
            request_key: None,
        }),
        Kind::ExecuteV5 => ToEnvoy::SqliteExecuteResponseV5(p::ToEnvoySqliteExecuteResponseV5 {
            request_id,
            result: SqliteExecuteResult::SqliteError(error),
            cost,
            request_key: None,
        }),
        Kind::Batch => ToEnvoy::SqliteBatchResponse(p::ToEnvoySqliteBatchResponse {
            request_id,
            result: SqliteBatchResult::SqliteError(error),
            cost,
            request_key: None,
        }),
        Kind::Begin => ToEnvoy::SqliteBeginResponse(p::ToEnvoySqliteBeginResponse {
            request_id,
            result: SqliteBeginResult::SqliteError(error),
            cost,
        }),
        Kind::TransactionExecute => {
            ToEnvoy::SqliteTransactionExecuteResponse(p::ToEnvoySqliteTransactionExecuteResponse {
                request_id,
                result: SqliteExecuteResult::SqliteError(error),
                cost,
                transaction_end: None,
            })
        }
        Kind::Commit => ToEnvoy::SqliteCommitResponse(p::ToEnvoySqliteCommitResponse {
            request_id,
            result: SqliteCommitResult::SqliteError(error),
            cost,
            request_key: None,
        }),
        Kind::Rollback => ToEnvoy::SqliteRollbackResponse(p::ToEnvoySqliteRollbackResponse {
            request_id,
            result: SqliteRollbackResult::SqliteError(error),
            cost,
        }),
        Kind::StreamOpen => ToEnvoy::SqliteStreamFailed(p::ToEnvoySqliteStreamFailed {
            request_id,
            sequence,
            failure: SqliteFailure::SqliteError(error),
            cost,
        }),
    }
}

/// What the envoy connection shares with its relay task and link readers.
struct Shared {
    /// How the envoy presented itself; links present the same.
    presented: Presented,
    /// This node's id (put in the links' hello for the owner's logs).
    local_node: String,
    /// The envoy's outbox: relayed answers go there, charged to its budget.
    outbox: Outbox,
    /// The envoy's session: owners' commands are re-issued in it, and it keeps
    /// the routes (actor id → owner node) of actors placed through a link.
    session: Arc<Session>,
    /// Relayed result streams still open: request id → (owner node, next chunk sequence).
    streams: Mutex<HashMap<u32, (String, u32)>>,
    /// Relayed requests unanswered, over every link (bounded by `max_pending`).
    pending: AtomicUsize,
    /// Bound on `pending` (this node's maxPendingRequests).
    max_pending: usize,
    /// Decoding bounds for the owners' frames (this node's maxFrameBytes).
    decode_limits: DecodeLimits,
    /// A link silent this long is dead (owners ping every link; this node's
    /// envoy-lost threshold plus a ping interval): a partitioned owner is not
    /// waited on for ever.
    silence: Duration,
}

/// The relays of one envoy connection: routes, links and the ordered relay queue.
pub struct Relays {
    /// State shared with the relay task and link readers.
    shared: Arc<Shared>,
    /// Messages to relay, in the envoy's order, with their owner node.
    queue: mpsc::UnboundedSender<(String, ToEngine)>,
    /// The relay task (ends when `queue`'s sender is dropped with the connection).
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Relays {
    fn drop(&mut self) {
        // Links close with the task (it owns them): each owner sees its envoy's socket end.
        self.task.abort();
    }
}

/// One open link to an owner node.
struct Link {
    /// Frames toward the owner (already encoded at the envoy's version).
    tx: mpsc::UnboundedSender<Message>,
    /// Requests sent on this link and not yet answered: what to answer if it drops.
    pending: Mutex<HashMap<u32, Kind>>,
    /// Index of the next event sent on this link (the owner deduplicates by it).
    next_event_index: AtomicU64,
    /// False once the link ended; requests are then answered here.
    alive: AtomicBool,
    /// The link's writer and reader tasks, aborted when the link is dropped.
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Drop for Link {
    fn drop(&mut self) {
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
    }
}

impl Relays {
    /// The relays of a new envoy connection; `resolve` finds owners' addresses.
    pub fn new(
        local_node: String,
        presented: Presented,
        outbox: Outbox,
        session: Arc<Session>,
        resolve: Arc<dyn Resolve>,
        bounds: Bounds,
    ) -> Self {
        let shared = Arc::new(Shared {
            presented,
            local_node,
            outbox,
            session,
            streams: Default::default(),
            pending: AtomicUsize::new(0),
            max_pending: bounds.max_pending,
            decode_limits: bounds.decode_limits,
            silence: bounds.silence,
        });
        let (queue, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(shared.clone(), resolve, rx));
        Self { shared, queue, task }
    }

    /// The owner node an actor of this envoy was placed through, if another node.
    pub fn route_of(&self, actor_id: &str) -> Option<String> {
        self.shared.session.routes.lock().get(actor_id).cloned()
    }

    /// Forgets the route of `actor_id` (it is now placed on this node).
    pub fn forget_route(&self, actor_id: &str) {
        self.shared.session.routes.lock().remove(actor_id);
    }

    /// Queues `msg` for its owner if it belongs to another node; gives it back
    /// if this node handles it. A request for an actor this node neither knows
    /// nor has a route for (the envoy reconnected here from another node, say)
    /// is queued for a directory lookup: relayed to its owner if that is another
    /// node, answered ACTOR_NOT_FOUND / ACTOR_NOT_PLACED otherwise.
    pub fn try_forward(&self, msg: ToEngine, known_here: impl Fn(&str) -> bool) -> Option<ToEngine> {
        let node = match target(&msg) {
            Target::Actor(actor_id, _) => {
                self.route_of(actor_id).or_else(|| (!known_here(actor_id)).then(|| LOOKUP.to_string()))
            }
            Target::Stream(request_id) => self.shared.streams.lock().get(&request_id).map(|(n, _)| n.clone()),
            Target::Connection => None,
        };
        match node {
            Some(node) => {
                self.forward(node, msg);
                None
            }
            None => Some(msg),
        }
    }

    /// Queues `msg` (a request, or a get-or-create `cluster::placement` decided
    /// to relay) for `node`, in order with everything else relayed.
    ///
    /// A request takes one of the connection's `max_pending` slots here, at
    /// once, and holds it until it is answered: queued (waiting for a link or a
    /// directory lookup) and in flight alike, so nothing the envoy sends can
    /// pile up without bound. Past it: OVERLOADED.
    pub fn forward(&self, node: String, msg: ToEngine) {
        let shared = &self.shared;
        let expects = expects(&msg);
        if let Some((request_id, kind)) = expects {
            if shared.pending.fetch_add(1, Ordering::AcqRel) >= shared.max_pending {
                shared.pending.fetch_sub(1, Ordering::AcqRel);
                let why = format!(
                    "more than {} relayed requests pending on this connection (maxPendingRequests)",
                    shared.max_pending
                );
                shared.outbox.send(refusal(kind, request_id, 0, Refusal::Overloaded, &why, Some(false)));
                return;
            }
        }
        if let Err(mpsc::error::SendError(_)) = self.queue.send((node, msg)) {
            // The relay task is gone (the connection is ending): answer here.
            if let Some((request_id, kind)) = expects {
                shared.pending.fetch_sub(1, Ordering::AcqRel);
                let why = "this envoy connection is closing";
                shared.outbox.send(refusal(kind, request_id, 0, Refusal::Unavailable, why, Some(false)));
            }
        }
    }

    /// Queues the envoy's events about relayed actors for their owners; returns
    /// those this node handles itself.
    pub fn split_events(&self, events: Vec<EventWrapper>) -> Vec<EventWrapper> {
        let mut local = Vec::new();
        for w in events {
            let actor_id = match &w.inner {
                Event::ActorStateUpdate(u) => &u.actor_id,
                Event::ActorIntent(i) => &i.actor_id,
            };
            match self.route_of(actor_id) {
                // Index 0 here; the relay task gives it the link's own index.
                Some(node) => self.forward(node, ToEngine::Events(ToEngineEvents { events: vec![w] })),
                None => local.push(w),
            }
        }
        local
    }

    /// Tells every owner this envoy is stopping (they unplace its actors when the link ends).
    pub fn stopping(&self) {
        let _ = self.queue.send((String::new(), ToEngine::Stopping));
    }

    /// Relayed requests unanswered now (for tests and observability).
    pub fn pending(&self) -> usize {
        self.shared.pending.load(Ordering::Acquire)
    }
}

/// The request id and answer kind `msg` expects, if it is a request.
fn expects(msg: &ToEngine) -> Option<(u32, Kind)> {
    match (msg, target(msg)) {
        (ToEngine::GetOrCreateActor(r), _) => Some((r.request_id, Kind::GetOrCreate)),
        (_, Target::Actor(_, e)) => e,
        (_, Target::Stream(_) | Target::Connection) => None,
    }
}

/// The relay task: sends queued messages in order, opening links as needed.
async fn run(shared: Arc<Shared>, resolve: Arc<dyn Resolve>, mut rx: mpsc::UnboundedReceiver<(String, ToEngine)>) {
    let mut links: HashMap<String, Arc<Link>> = HashMap::new();
    let mut failed: HashMap<String, Instant> = HashMap::new();
    while let Some((node, msg)) = rx.recv().await {
        if matches!(msg, ToEngine::Stopping) {
            for link in links.values() {
                send(&shared, link, &ToEngine::Stopping);
            }
            continue;
        }
        let expects = expects(&msg);
        let node = if node == LOOKUP {
            match lookup(&shared, resolve.as_ref(), &msg).await {
                Ok(owner) => owner,
                Err((why, message)) => {
                    if let Some((request_id, kind)) = expects {
                        // Its slot was taken in `forward`.
                        shared.pending.fetch_sub(1, Ordering::AcqRel);
                        shared.outbox.send(refusal(kind, request_id, 0, why, &message, Some(false)));
                    }
                    continue;
                }
            }
        } else {
            node
        };
        let link = match links.get(&node).filter(|l| l.alive.load(Ordering::Acquire)) {
            Some(l) => Ok(l.clone()),
            None if failed.get(&node).is_some_and(|t| t.elapsed() < RELAY_RETRY_AFTER) => {
                Err(format!("its owner node {node} cannot be reached now"))
            }
            None => match tokio::time::timeout(RELAY_CONNECT_TIMEOUT, open(&shared, resolve.as_ref(), &node)).await {
                Ok(Ok(l)) => {
                    failed.remove(&node);
                    links.insert(node.clone(), l.clone());
                    Ok(l)
                }
                Ok(Err(e)) => {
                    failed.insert(node.clone(), Instant::now());
                    tracing::warn!(node, error = %e, "cannot open a relay link");
                    Err(format!("its owner node {node} cannot be reached ({e})"))
                }
                Err(_) => {
                    failed.insert(node.clone(), Instant::now());
                    Err(format!("its owner node {node} did not answer in time"))
                }
            },
        };
        let link = match link {
            Ok(l) => l,
            Err(why) => {
                if let Some((request_id, kind)) = expects {
                    shared.pending.fetch_sub(1, Ordering::AcqRel);
                    shared.outbox.send(refusal(kind, request_id, 0, Refusal::Unavailable, &why, Some(false)));
                }
                continue;
            }
        };
        let msg = match msg {
            ToEngine::Events(e) => ToEngine::Events(ToEngineEvents {
                events: e
                    .events
                    .into_iter()
                    .map(|w| EventWrapper {
                        index: link.next_event_index.fetch_add(1, Ordering::AcqRel),
                        inner: w.inner,
                    })
                    .collect(),
            }),
            other => other,
        };
        if let Some((request_id, kind)) = expects {
            link.pending.lock().insert(request_id, kind);
            if kind == Kind::StreamOpen {
                shared.streams.lock().insert(request_id, (node.clone(), 0));
            }
        }
        send(&shared, &link, &msg);
        // The reader marks a dropped link dead *before* taking its pending requests;
        // whoever removes a request from `pending` answers it, exactly once.
        if !link.alive.load(Ordering::Acquire) {
            if let Some((request_id, kind)) = expects {
                if link.pending.lock().remove(&request_id).is_some() {
                    shared.pending.fetch_sub(1, Ordering::AcqRel);
                    shared.streams.lock().remove(&request_id);
                    let why = format!("the link to its owner node {node} closed");
                    shared.outbox.send(refusal(kind, request_id, 0, Refusal::Unavailable, &why, None));
                }
            }
        }
    }
}

/// The owner of the actor `msg` names, looked up in the directory, when it is
/// another node (and the route is kept in the envoy's session); else why not.
async fn lookup(shared: &Shared, resolve: &dyn Resolve, msg: &ToEngine) -> Result<String, (Refusal, String)> {
    let not_found = || (Refusal::NotFound, "no such actor in this namespace".to_string());
    let Target::Actor(actor_id, _) = target(msg) else { return Err(not_found()) };
    match resolve.owner_of(actor_id).await {
        // Another tenant's actor is reported absent, as on one node.
        Ok(Some((namespace, _))) if namespace != shared.presented.namespace => Err(not_found()),
        Ok(Some((_, owner))) if owner == shared.local_node => {
            Err((Refusal::NotPlaced, "the actor is not placed on this envoy".to_string()))
        }
        Ok(Some((_, owner))) => {
            shared.session.routes.lock().insert(actor_id.to_string(), owner.clone());
            Ok(owner)
        }
        Ok(None) => Err(not_found()),
        Err(why) => Err((Refusal::Unavailable, format!("the cluster directory cannot be read now ({why})"))),
    }
}

/// Encodes `msg` at the envoy's version and queues it on `link`.
fn send(shared: &Shared, link: &Link, msg: &ToEngine) {
    match encode_to_engine(msg, shared.presented.version) {
        Ok(bytes) => {
            let _ = link.tx.send(Message::Binary(bytes.into()));
        }
        // Cannot happen: the message was decoded at this very version.
        Err(e) => tracing::error!(error = %e, "re-encoding a relayed message failed"),
    }
}

fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Opens a link: resolve the owner, upgrade at the envoy's version, send the envoy's hello.
async fn open(shared: &Arc<Shared>, resolve: &dyn Resolve, node: &str) -> anyhow::Result<Arc<Link>> {
    let Some(advertise) = resolve.advertise(node).await else {
        anyhow::bail!("node {node} is not registered (down, or its lease expired)");
    };
    let p = &shared.presented;
    let url = format!(
        "{}/envoys/connect?namespace={}&envoy_key={}&pool_name={}",
        advertise.trim_end_matches('/'),
        urlencode(&p.namespace),
        urlencode(&p.envoy_key),
        urlencode(&p.pool_name)
    );
    let mut req = url.into_client_request()?;
    let offer = envoy_protocol::negotiation::client_offer(p.version, p.version, p.token.as_deref());
    req.headers_mut().insert("sec-websocket-protocol", offer.join(", ").parse()?);
    let (ws, _) = tokio_tungstenite::connect_async(req).await?;
    let (mut sink, stream) = ws.split();
    let hello = ToEngine::Metadata(ToEngineMetadata {
        envoy_key: p.envoy_key.clone(),
        pool_name: p.pool_name.clone(),
        version: 0,
        metadata: [("relayed-by".to_string(), shared.local_node.clone())].into_iter().collect(),
        last_command_index: None,
    });
    sink.send(Message::Binary(encode_to_engine(&hello, p.version)?.into())).await?;
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    let link = Arc::new(Link {
        tx,
        pending: Default::default(),
        next_event_index: AtomicU64::new(1),
        alive: AtomicBool::new(true),
        tasks: Default::default(),
    });
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            // Feed what is queued, then flush once per burst.
            let mut next = Some(m);
            while let Some(m) = next {
                if sink.feed(m).await.is_err() {
                    return;
                }
                next = rx.try_recv().ok();
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
        let _ = sink.close().await;
    });
    let reader = tokio::spawn(read_link(stream, shared.clone(), Arc::downgrade(&link), node.to_string()));
    link.tasks.lock().extend([writer, reader]);
    Ok(link)
}

type LinkStream = futures_util::stream::SplitStream<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
>;

/// Reads an owner's frames: answers go to the envoy, commands are re-issued,
/// pings answered; when the link ends, what it still owed is answered here.
async fn read_link(mut stream: LinkStream, shared: Arc<Shared>, link: Weak<Link>, node: String) {
    let budget = shared.outbox.budget().clone();
    loop {
        // Backpressure: while the envoy's outbox is over budget, leave the owner's
        // answers in the socket (the owner's own budget then refuses more).
        if budget.is_full() {
            budget.wait_below_limit().await;
        }
        let next = match tokio::time::timeout(shared.silence, stream.next()).await {
            Ok(next) => next,
            Err(_) => {
                tracing::warn!(node, silence = ?shared.silence, "relay link silent; closing it");
                break;
            }
        };
        let bytes = match next {
            Some(Ok(Message::Binary(b))) => b,
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            Some(Ok(Message::Text(_) | Message::Close(_))) | Some(Err(_)) | None => break,
        };
        let frame_len = bytes.len();
        let msg = match decode_to_envoy(&bytes, shared.presented.version, &shared.decode_limits) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(node, error = %e, "malformed frame from an owner node; closing the link");
                break;
            }
        };
        let Some(l) = link.upgrade() else { return };
        match msg {
            ToEnvoy::Init(_) | ToEnvoy::InitV5(_) | ToEnvoy::AckEvents(_) => {}
            ToEnvoy::Ping(p) => send(&shared, &l, &ToEngine::Pong(ToEnginePong { ts: p.ts })),
            ToEnvoy::Commands(c) => {
                let mut last = None;
                for w in c.commands {
                    last = Some(w.index);
                    shared.session.send_command(w.inner);
                }
                if let Some(last_command_index) = last {
                    send(&shared, &l, &ToEngine::AckCommands(ToEngineAckCommands { last_command_index }));
                }
            }
            msg => {
                if let ToEnvoy::GetOrCreateActorResponse(r) = &msg {
                    if let GetOrCreateActorResult::GetOrCreateActorOk(ok) = &r.result {
                        // Recorded before the envoy can see the answer, so its next request routes here.
                        shared.session.routes.lock().insert(ok.actor_id.clone(), node.clone());
                    }
                }
                if let ToEnvoy::SqliteStreamChunk(c) = &msg {
                    if let Some(s) = shared.streams.lock().get_mut(&c.request_id) {
                        s.1 = c.sequence.wrapping_add(1);
                    }
                }
                if let Some((request_id, true)) = answers(&msg) {
                    if l.pending.lock().remove(&request_id).is_some() {
                        shared.pending.fetch_sub(1, Ordering::AcqRel);
                    }
                    shared.streams.lock().remove(&request_id);
                }
                // Charged at its size on the wire (rows included): the envoy's budget bounds what is
                // held here for it, as for answers built on this node.
                let charge = crate::budget::Charge::force(shared.outbox.budget(), frame_len);
                shared.outbox.send_batch(vec![msg], charge);
            }
        }
    }
    let Some(l) = link.upgrade() else { return };
    l.alive.store(false, Ordering::Release);
    let owed: Vec<(u32, Kind)> = l.pending.lock().drain().collect();
    if !owed.is_empty() {
        tracing::warn!(node, requests = owed.len(), "relay link to the owner node dropped with requests unanswered");
    }
    let why = format!("the link to its owner node {node} dropped before the answer; the request may have run");
    for (request_id, kind) in owed {
        shared.pending.fetch_sub(1, Ordering::AcqRel);
        let sequence = shared.streams.lock().remove(&request_id).map_or(0, |(_, s)| s);
        shared.outbox.send(refusal(kind, request_id, sequence, Refusal::Unavailable, &why, None));
    }
}
