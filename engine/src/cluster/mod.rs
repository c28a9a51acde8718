//! Cluster mode's etcd layer (cargo feature `cluster`; design in specs/cluster.md).
//!
//! Two parts, used by the engine's cluster wiring:
//!
//! | part | file | what it does |
//! |---|---|---|
//! | [`Membership`] | `membership.rs` | registers this node under an etcd lease (`nodes/<id>`), keeps the lease alive, and *fences* the node (stops it serving) before etcd could expire the lease; re-joins with a new lease afterwards |
//! | [`Directory`] | `directory.rs` | the actor directory (`names/…`, `actors/…`): get-or-create, generation bumps, state changes, hand-off, adopt, removal, each one etcd transaction guarded by this node's lease |
//!
//! Every etcd call is bounded by [`ETCD_CALL_TIMEOUT`] (a dead or half-open link to etcd must never hang a
//! caller), and every failure is a [`ClusterError`] variant a caller can map to a typed wire error. Nothing
//! here holds actor data: etcd only says who owns an actor and at which generation.
//!
//! The engine's part of the contract (not enforced here): record the lease each placement was made under,
//! check [`Membership::serves_under`] (or at least [`Membership::is_serving`]) when admitting a request of
//! an actor this node owns and again right before committing a write, drop every placement as soon as
//! [`Membership::serving`] no longer shows its lease, and place actors again only through
//! [`Directory::bump`].

pub mod directory;
pub(crate) mod http;
pub mod membership;
pub mod moves;
pub mod node;
pub(crate) mod placement;
pub mod relay;

pub use directory::{DirActor, DirState, Directory, NodeInfo};
/// The etcd client this module is built on (same version), for callers that need its types.
pub use etcd_client;
pub use membership::Membership;
pub use node::{ClusterNode, Unavailable};

use std::time::Duration;

/// Upper bound on every single etcd call (a get, put, txn, lease grant or revoke, one keep-alive round
/// trip). Past it the call is abandoned with [`ClusterError::Timeout`]: etcd unreachable and a link that
/// silently drops packets look the same from here, and neither may block the engine.
pub const ETCD_CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// Upper bound on opening a TCP connection to one etcd endpoint (the client connects lazily and again
/// after a link failed; this keeps a refused or black-holed endpoint from stalling the retry).
pub const ETCD_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Default time-to-live of a node's lease ([`ClusterSettings::lease_ttl`]).
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);

/// Default key prefix ([`ClusterSettings::prefix`]).
pub const DEFAULT_PREFIX: &str = "/envoy/";

/// Smallest fencing margin: see [`fence_margin`].
pub const MIN_FENCE_MARGIN: Duration = Duration::from_millis(500);

/// How long before the lease could expire in etcd a node stops serving: `max(ttl / 5, 500 ms)`. It absorbs
/// a difference in clock *rate* between this node and the etcd leader (up to 20 %) and the time between an
/// engine's [`Membership::is_serving`] check and the effect it guards (specs/cluster.md, "Fencing").
pub fn fence_margin(ttl: Duration) -> Duration {
    (ttl / 5).max(MIN_FENCE_MARGIN)
}

/// What a node needs to take part in a cluster.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// etcd client URLs (`http://host:2379`); the client balances over them and fails over between them.
    pub endpoints: Vec<String>,
    /// This node's stable name: the key `nodes/<node_id>` and the `owner` of its actors. It must stay the
    /// same across restarts, since the node's data directory (its actors' databases) belongs to it.
    pub node_id: String,
    /// `ws://host:port` (or `wss://`) where other nodes and envoys reach this node; published in
    /// `nodes/<node_id>` so relays and redirects know where the owner of an actor is.
    pub advertise: String,
    /// Lease time-to-live (whole seconds, at least 1 s; etcd may grant more, never less). Longer means a
    /// crashed node's actors wait longer before they can be adopted; shorter means more keep-alive traffic
    /// and a node fenced by shorter etcd hiccups.
    pub lease_ttl: Duration,
    /// Prefix of every key (default `/envoy/`), so several clusters or tests can share one etcd. A missing
    /// trailing `/` is added.
    pub prefix: String,
}

impl ClusterSettings {
    /// Settings with the default lease TTL and prefix.
    pub fn new(endpoints: Vec<String>, node_id: impl Into<String>, advertise: impl Into<String>) -> Self {
        ClusterSettings {
            endpoints,
            node_id: node_id.into(),
            advertise: advertise.into(),
            lease_ttl: DEFAULT_LEASE_TTL,
            prefix: DEFAULT_PREFIX.to_string(),
        }
    }

    /// Checks the settings and returns the lease TTL to ask etcd for, in whole seconds (rounded up).
    pub(crate) fn validate(&self) -> Result<i64, ClusterError> {
        let bad = |m: String| Err(ClusterError::InvalidSettings(m));
        if self.endpoints.is_empty() {
            return bad("no etcd endpoint".into());
        }
        if self.node_id.is_empty() || self.node_id.contains('/') || self.node_id.chars().any(char::is_control) {
            return bad(format!("node id {:?} must be non-empty, without '/' or control characters", self.node_id));
        }
        if !(self.advertise.starts_with("ws://") || self.advertise.starts_with("wss://")) {
            return bad(format!("advertise address {:?} must start with ws:// or wss://", self.advertise));
        }
        if self.lease_ttl < Duration::from_secs(1) {
            return bad(format!("lease ttl {:?} is under 1 s", self.lease_ttl));
        }
        let secs = self.lease_ttl.as_secs() + u64::from(self.lease_ttl.subsec_nanos() > 0);
        i64::try_from(secs).or_else(|_| bad(format!("lease ttl {:?} is too long", self.lease_ttl)))
    }
}

/// Every way a cluster operation fails. Callers map these to wire errors: `Timeout`/`Unreachable`/`Etcd`
/// and `Fenced` to "unavailable, retry"; `NotOwner` to a redirect or relay to `owner`; `Conflict` to a
/// re-read; `OwnerAlive` to an operator error.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The settings cannot work (empty node id, no endpoint, TTL under 1 s...).
    #[error("invalid cluster settings: {0}")]
    InvalidSettings(String),
    /// etcd did not answer within [`ETCD_CALL_TIMEOUT`] (down, partitioned, or the link drops packets).
    #[error("etcd did not answer {op} within {timeout:?}")]
    Timeout {
        /// Which call.
        op: &'static str,
        /// The bound that passed.
        timeout: Duration,
    },
    /// The call failed on the way to etcd (connection refused or reset, no leader).
    #[error("etcd unreachable during {op}: {source}")]
    Unreachable {
        /// Which call.
        op: &'static str,
        /// What the client saw.
        #[source]
        source: etcd_client::Error,
    },
    /// etcd answered with an error (a lease it does not know, a request it refused).
    #[error("etcd refused {op}: {source}")]
    Etcd {
        /// Which call.
        op: &'static str,
        /// etcd's answer.
        #[source]
        source: etcd_client::Error,
    },
    /// This node is fenced: it is not serving, or its node key does not carry its current lease. It must
    /// not act as an owner until it re-joined (see [`Membership::serving`]).
    #[error("this node is fenced: its etcd lease is not known to be alive; it serves nothing until it re-joins")]
    Fenced,
    /// The actor belongs to another node (the write needs its owner).
    #[error("actor is owned by node {owner:?}")]
    NotOwner {
        /// The current owner, as the directory says.
        owner: String,
    },
    /// The actor's record changed since the caller read it; re-read and decide again.
    #[error("the actor's directory record changed since it was read; re-read it")]
    Conflict,
    /// Adopting is refused while the owner's node key (hence its lease) lives.
    #[error("node {owner:?} still holds a live lease; its actors cannot be adopted")]
    OwnerAlive {
        /// The live owner.
        owner: String,
    },
    /// A hand-off target that has no live node key.
    #[error("node {node:?} is not a live member of the cluster")]
    NotAlive {
        /// The node named by the caller.
        node: String,
    },
    /// No such actor in the directory (deleted, or never created).
    #[error("actor {actor_id:?} is not in the directory")]
    NotFound {
        /// The actor named by the caller.
        actor_id: String,
    },
    /// A value in etcd that this code did not write (or an etcd answer missing a part it always has).
    #[error("corrupt cluster value at {key:?}: {reason}")]
    Corrupt {
        /// The key (or the call) at fault.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The operating system's random generator failed (new actor ids).
    #[error("the OS random generator failed: {0}")]
    Random(String),
}

impl ClusterError {
    /// Sorts an etcd client error into `Unreachable` (transport, availability) or `Etcd` (an answer).
    pub(crate) fn from_etcd(op: &'static str, source: etcd_client::Error) -> Self {
        use etcd_client::Error as E;
        let transport = match &source {
            E::TransportError(_) | E::IoError(_) => true,
            // gRPC's numeric codes (tonic's `Code` is a plain enum of them): the call did not get a
            // verdict from etcd.
            E::GRpcStatus(s) => matches!(
                s.code() as i32,
                grpc_code::CANCELLED | grpc_code::UNKNOWN | grpc_code::DEADLINE_EXCEEDED | grpc_code::UNAVAILABLE
            ),
            _ => false,
        };
        if transport {
            ClusterError::Unreachable { op, source }
        } else {
            ClusterError::Etcd { op, source }
        }
    }

    /// Whether the error says etcd could not be reached in time (as opposed to an answer).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, ClusterError::Timeout { .. } | ClusterError::Unreachable { .. })
    }
}

/// The gRPC status codes (fixed by the gRPC spec) that `from_etcd` treats as "etcd not reached".
mod grpc_code {
    pub(super) const CANCELLED: i32 = 1;
    pub(super) const UNKNOWN: i32 = 2;
    pub(super) const DEADLINE_EXCEEDED: i32 = 4;
    pub(super) const UNAVAILABLE: i32 = 14;
}

/// Runs one etcd call under [`ETCD_CALL_TIMEOUT`], mapping both ways it can fail.
pub(crate) async fn call<T>(
    op: &'static str,
    fut: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, ClusterError> {
    match tokio::time::timeout(ETCD_CALL_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(ClusterError::from_etcd(op, e)),
        Err(_) => Err(ClusterError::Timeout { op, timeout: ETCD_CALL_TIMEOUT }),
    }
}

/// The keys of one cluster (specs/cluster.md, "Directory layout in etcd").
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    /// The prefix, ending in `/`.
    prefix: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Keys {
        let mut prefix = prefix.to_string();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Keys { prefix }
    }

    /// `nodes/<id>`: a node's registration, under its lease.
    pub(crate) fn node(&self, node_id: &str) -> String {
        format!("{}nodes/{node_id}", self.prefix)
    }

    /// Prefix of every node key.
    pub(crate) fn nodes(&self) -> String {
        format!("{}nodes/", self.prefix)
    }

    /// `names/<hex ns>/<hex name>/<hex key>`: the actor id of an address.
    pub(crate) fn name(&self, namespace: &str, name: &str, key: &str) -> String {
        format!("{}names/{}/{}/{}", self.prefix, hex(namespace), hex(name), hex(key))
    }

    /// `actors/<actor id>`: an actor's record.
    pub(crate) fn actor(&self, actor_id: &str) -> String {
        format!("{}actors/{actor_id}", self.prefix)
    }

    /// Prefix of every actor record.
    pub(crate) fn actors(&self) -> String {
        format!("{}actors/", self.prefix)
    }
}

/// Lower-case hex of the UTF-8 bytes (names may hold `/` and anything else).
fn hex(s: &str) -> String {
    use std::fmt::Write;
    s.bytes().fold(String::with_capacity(s.len() * 2), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// The first key after every key starting with `prefix` (etcd's range end for a prefix).
pub(crate) fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The value of `nodes/<id>` (JSON).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct NodeValue {
    /// Repeats the key's last part, so the value reads on its own.
    pub(crate) node_id: String,
    /// Where the node is reached ([`ClusterSettings::advertise`]); its admin HTTP API is on the same port.
    pub(crate) advertise: String,
    /// The node is draining: place nothing new on it, its actors are being handed off.
    pub(crate) draining: bool,
    /// When this process first joined (ms since the Unix epoch): tells a restart from a re-join.
    pub(crate) started_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_hex_so_slashes_cannot_collide() {
        let k = Keys::new("/envoy");
        assert_eq!(k.name("ns", "a/b", ""), "/envoy/names/6e73/612f62/");
        assert_ne!(k.name("a", "b/c", "d"), k.name("a", "b", "c/d"));
        assert_eq!(k.node("n1"), "/envoy/nodes/n1");
        assert_eq!(k.actor("ab"), "/envoy/actors/ab");
        assert_eq!(hex("é"), "c3a9");
    }

    #[test]
    fn prefix_end_is_the_next_key() {
        assert_eq!(prefix_end("/e/"), b"/e0".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
        assert_eq!(prefix_end(""), vec![0]);
    }

    #[test]
    fn margin_is_a_fifth_with_a_floor() {
        assert_eq!(fence_margin(Duration::from_secs(10)), Duration::from_secs(2));
        assert_eq!(fence_margin(Duration::from_secs(2)), Duration::from_millis(500));
        assert!(fence_margin(Duration::from_secs(1)) < Duration::from_secs(1));
    }

    #[test]
    fn settings_are_checked() {
        let ok = ClusterSettings::new(vec!["http://127.0.0.1:2379".into()], "n1", "ws://127.0.0.1:6420");
        assert_eq!(ok.validate().ok(), Some(10));
        let mut s = ok.clone();
        s.lease_ttl = Duration::from_millis(2500);
        assert_eq!(s.validate().ok(), Some(3), "rounded up: etcd counts whole seconds");
        for bad in [
            ClusterSettings { endpoints: vec![], ..ok.clone() },
            ClusterSettings { node_id: "".into(), ..ok.clone() },
            ClusterSettings { node_id: "a/b".into(), ..ok.clone() },
            ClusterSettings { advertise: "127.0.0.1:6420".into(), ..ok.clone() },
            ClusterSettings { lease_ttl: Duration::from_millis(900), ..ok.clone() },
        ] {
            assert!(matches!(bad.validate(), Err(ClusterError::InvalidSettings(_))), "{bad:?}");
        }
    }
}
