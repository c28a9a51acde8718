//! The actor directory in etcd: which actors exist, who owns each, at which generation.
//!
//! Every write is one etcd transaction whose guard makes it safe against every other node
//! (specs/cluster.md, "Transactions"): an owner's writes compare the record's `mod_revision` with the one
//! the caller read (no decision from a stale read) and the lease on `nodes/<me>` with this node's current
//! lease (no write from a node etcd has given up on). When a guard fails, the transaction's `else` branch
//! reads what the caller needs to tell *why* (`NotOwner`, `Fenced`, `Conflict`, `NotFound`, `OwnerAlive`)
//! in the same round trip.
//!
//! Reads (`get`, `find`) are linearizable reads from etcd, never cached here. `nodes` and `owned_by`
//! scan every actor record (paged, at one revision); they serve operators and drains, not requests.

use super::{call, prefix_end, ClusterError, Membership, NodeValue};
use etcd_client::{Compare, CompareOp, GetOptions, KeyValue, Txn, TxnOp, TxnOpResponse, TxnResponse};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Records read per page by the scans (`nodes`, `owned_by`): small enough that a page stays far below
/// gRPC's 4 MiB message limit whatever the names.
pub const SCAN_PAGE: i64 = 500;

/// Attempts of `get_or_create` when the actor it found is deleted before it could be read.
const CREATE_ATTEMPTS: usize = 3;

/// An actor's placement state in the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DirState {
    /// Owned and placeable by its owner.
    Active,
    /// Its owner is handing it to another node: refuse new placements, retry later.
    Moving,
    /// Adopted (or being restored) and its database not in place yet: place nothing until the owner sets
    /// it `Active`.
    Restoring,
}

/// An actor's record (`actors/<id>`), with the revision it was read at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirActor {
    /// Assigned at creation (24 lower-case hex characters), never reused: names the actor everywhere.
    pub actor_id: String,
    /// Envoys of another namespace never see the actor.
    pub namespace: String,
    /// With `key`, what envoys address the actor by.
    pub name: String,
    /// With `name`, the actor's address within its namespace.
    pub key: String,
    /// The node holding the actor's database: the only one that may place it or change its record.
    pub owner: String,
    /// Raised by one on every placement and every change of owner; requests must name the current one.
    pub generation: u64,
    /// Whether it may be placed (`Active`) or waits for a move or a restore.
    pub state: DirState,
    /// etcd's `mod_revision` of the record when read: the guard of every write based on this read. Not
    /// stored in the value.
    #[serde(skip)]
    pub mod_revision: i64,
}

/// A node as the directory sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeInfo {
    /// The node's id (`nodes/<id>`, `owner` of its actors).
    pub node_id: String,
    /// Where it is reached; empty when the node is not alive (its key, which held it, is gone).
    pub advertise: String,
    /// It is draining: place nothing new there.
    pub draining: bool,
    /// Its node key exists, i.e. its lease lives. A node that is not alive is listed because it still owns
    /// actors: they are unavailable until it returns or an operator adopts them.
    pub alive: bool,
    /// How many actors it owns.
    pub actors: usize,
}

/// The actor directory, as one node uses it (its writes are guarded by that node's lease).
#[derive(Debug, Clone)]
pub struct Directory {
    /// This node's membership: its id, current lease, whether it serves, and the etcd client.
    m: Arc<Membership>,
}

impl Directory {
    /// The directory of the cluster `m` belongs to, acting as `m`'s node.
    pub fn new(m: Arc<Membership>) -> Self {
        Directory { m }
    }

    /// The membership this directory acts for.
    pub fn membership(&self) -> &Arc<Membership> {
        &self.m
    }

    /// The actor at (namespace, name, key), created owned by this node (generation 0, `Active`) if there is
    /// none; `true` when this call created it. One transaction: when two nodes race, one creates and the
    /// other reads the winner's id. Creating needs this node serving and its lease on its node key
    /// (`Fenced` otherwise); finding an existing actor does not.
    pub async fn get_or_create(
        &self,
        namespace: &str,
        name: &str,
        key: &str,
    ) -> Result<(DirActor, bool), ClusterError> {
        let keys = self.m.keys();
        let name_key = keys.name(namespace, name, key);
        let node_key = keys.node(self.m.node_id());
        if !self.m.is_serving() {
            // A fenced node creates nothing; it can still answer for an actor that exists.
            return match self.find(namespace, name, key).await? {
                Some(found) => Ok((found, false)),
                None => Err(ClusterError::Fenced),
            };
        }
        for _ in 0..CREATE_ATTEMPTS {
            let lease = self.m.lease_id();
            let mut actor = DirActor {
                actor_id: new_actor_id()?,
                namespace: namespace.to_string(),
                name: name.to_string(),
                key: key.to_string(),
                owner: self.m.node_id().to_string(),
                generation: 0,
                state: DirState::Active,
                mod_revision: 0,
            };
            let actor_key = keys.actor(&actor.actor_id);
            let txn = Txn::new()
                .when([
                    Compare::version(name_key.clone(), CompareOp::Equal, 0),
                    Compare::lease(node_key.clone(), CompareOp::Equal, lease),
                ])
                .and_then([
                    TxnOp::put(name_key.clone(), actor.actor_id.clone(), None),
                    TxnOp::put(actor_key.clone(), encode(&actor_key, &actor)?, None),
                ])
                .or_else([TxnOp::get(name_key.clone(), None)]);
            let resp = call("create actor", self.m.client().txn(txn)).await?;
            if resp.succeeded() {
                actor.mod_revision = revision(&resp)?;
                return Ok((actor, true));
            }
            let [name_kv] = gets::<1>(&resp, &name_key)?;
            let Some(name_kv) = name_kv else {
                // The name is free, so the lease guard failed: this node's lease is not on its key.
                return Err(ClusterError::Fenced);
            };
            let id = name_kv.value_str().map_err(|e| corrupt(&name_key, e))?.to_string();
            match self.get(&id).await? {
                Some(found)
                    if (&found.namespace, &found.name, &found.key) == (&actor.namespace, &actor.name, &actor.key) =>
                {
                    return Ok((found, false));
                }
                Some(found) => {
                    return Err(ClusterError::Corrupt {
                        key: name_key,
                        reason: format!(
                            "points at actor {id}, whose record is for {:?}",
                            (found.namespace, found.name, found.key)
                        ),
                    })
                }
                // Deleted between the two reads: the name may be free again.
                None => continue,
            }
        }
        Err(ClusterError::Conflict)
    }

    /// The actor with this id.
    pub async fn get(&self, actor_id: &str) -> Result<Option<DirActor>, ClusterError> {
        if !valid_actor_id(actor_id) {
            return Ok(None);
        }
        let key = self.m.keys().actor(actor_id);
        let resp = call("get actor", self.m.client().get(key, None)).await?;
        resp.kvs().first().map(parse_actor).transpose()
    }

    /// Where a live node is reached (its `advertise`): one read of `nodes/<id>`;
    /// `None` when the node is not alive (its key, held by its lease, is gone).
    pub async fn advertise_of(&self, node_id: &str) -> Result<Option<String>, ClusterError> {
        let key = self.m.keys().node(node_id);
        let resp = call("get node", self.m.client().get(key.clone(), None)).await?;
        let Some(kv) = resp.kvs().first() else { return Ok(None) };
        let value: NodeValue = serde_json::from_slice(kv.value()).map_err(|e| corrupt(&key, e))?;
        Ok(Some(value.advertise))
    }

    /// The actor at (namespace, name, key), if it exists.
    pub async fn find(&self, namespace: &str, name: &str, key: &str) -> Result<Option<DirActor>, ClusterError> {
        let name_key = self.m.keys().name(namespace, name, key);
        let resp = call("find actor", self.m.client().get(name_key.clone(), None)).await?;
        let Some(kv) = resp.kvs().first() else { return Ok(None) };
        let id = kv.value_str().map_err(|e| corrupt(&name_key, e))?;
        self.get(id).await
    }

    /// Raises the generation by one (every placement). Only the owner, only while its lease is on its node
    /// key, only from the latest read: `NotOwner`, `Fenced`, `Conflict` (re-read), `NotFound`.
    pub async fn bump(&self, seen: &DirActor) -> Result<DirActor, ClusterError> {
        let next = DirActor { generation: seen.generation + 1, ..seen.clone() };
        self.owner_write("bump generation", seen, Write::Put(next), None).await
    }

    /// Sets the state (`Moving` before a hand-off, `Active` after a restore...), same guards as `bump`;
    /// the generation does not change.
    pub async fn set_state(&self, seen: &DirActor, state: DirState) -> Result<DirActor, ClusterError> {
        let next = DirActor { state, ..seen.clone() };
        self.owner_write("set state", seen, Write::Put(next), None).await
    }

    /// Gives the actor to `to_node` (a drain, once `to_node` has the database): owner := `to_node`,
    /// generation + 1, `Active`. Same guards as `bump`, and `to_node` must be alive (`NotAlive`): handing
    /// an actor to a node that just died would leave it unavailable.
    pub async fn hand_off(&self, seen: &DirActor, to_node: &str) -> Result<DirActor, ClusterError> {
        let next = DirActor {
            owner: to_node.to_string(),
            generation: seen.generation + 1,
            state: DirState::Active,
            ..seen.clone()
        };
        self.owner_write("hand off", seen, Write::Put(next), Some(to_node)).await
    }

    /// Deletes the actor (its name and record), same guards as `bump`. Its database is the owner's to
    /// delete.
    pub async fn remove(&self, seen: &DirActor) -> Result<(), ClusterError> {
        self.owner_write("remove actor", seen, Write::Delete, None).await.map(|_| ())
    }

    /// Takes over an actor whose owner is gone (an operator restoring it from a backup onto this node):
    /// owner := this node, generation + 1, state `Restoring` (the caller puts the database in place, then
    /// sets `Active`). Only once `nodes/<owner>` is gone, that is the owner's lease expired or was revoked
    /// (`OwnerAlive` before), from the latest read (`Conflict`), and while this node is serving
    /// (`Fenced`).
    pub async fn adopt(&self, seen: &DirActor) -> Result<DirActor, ClusterError> {
        self.m.ensure_serving()?;
        let keys = self.m.keys();
        let me = self.m.node_id();
        let lease = self.m.lease_id();
        let actor_key = keys.actor(&seen.actor_id);
        let owner_key = keys.node(&seen.owner);
        let node_key = keys.node(me);
        let mut next = DirActor {
            owner: me.to_string(),
            generation: seen.generation + 1,
            state: DirState::Restoring,
            ..seen.clone()
        };
        let txn = Txn::new()
            .when([
                Compare::mod_revision(actor_key.clone(), CompareOp::Equal, seen.mod_revision),
                Compare::version(owner_key.clone(), CompareOp::Equal, 0),
                Compare::lease(node_key.clone(), CompareOp::Equal, lease),
            ])
            .and_then([TxnOp::put(actor_key.clone(), encode(&actor_key, &next)?, None)])
            .or_else([
                TxnOp::get(actor_key.clone(), None),
                TxnOp::get(owner_key.clone(), None),
                TxnOp::get(node_key.clone(), None),
            ]);
        let resp = call("adopt actor", self.m.client().txn(txn)).await?;
        if resp.succeeded() {
            next.mod_revision = revision(&resp)?;
            return Ok(next);
        }
        let [actor_kv, owner_kv, node_kv] = gets::<3>(&resp, &actor_key)?;
        let Some(actor_kv) = actor_kv else { return Err(ClusterError::NotFound { actor_id: seen.actor_id.clone() }) };
        if actor_kv.mod_revision() != seen.mod_revision {
            return Err(ClusterError::Conflict);
        }
        if owner_kv.is_some() {
            return Err(ClusterError::OwnerAlive { owner: seen.owner.clone() });
        }
        if node_kv.map(|kv| kv.lease()) != Some(lease) {
            return Err(ClusterError::Fenced);
        }
        Err(ClusterError::Corrupt { key: actor_key, reason: "adopt refused though every guard holds".into() })
    }

    /// One node: alive (its key exists) or not alive but still owning actors; `None` if neither.
    pub async fn node(&self, node_id: &str) -> Result<Option<NodeInfo>, ClusterError> {
        Ok(self.nodes().await?.into_iter().find(|n| n.node_id == node_id))
    }

    /// Every registered node, and every owner of actors that has no node key (`alive: false`), by id. One
    /// consistent snapshot (both scans at the same revision).
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, ClusterError> {
        let keys = self.m.keys();
        let (node_kvs, revision) = self.scan(&keys.nodes(), None).await?;
        let (actor_kvs, _) = self.scan(&keys.actors(), Some(revision)).await?;
        let mut nodes = BTreeMap::new();
        for kv in &node_kvs {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let value: NodeValue = serde_json::from_slice(kv.value()).map_err(|e| corrupt(&key, e))?;
            let info = NodeInfo {
                node_id: value.node_id.clone(),
                advertise: value.advertise,
                draining: value.draining,
                alive: true,
                actors: 0,
            };
            if keys.node(&value.node_id) != key {
                return Err(ClusterError::Corrupt { key, reason: format!("holds node {:?}", value.node_id) });
            }
            nodes.insert(value.node_id, info);
        }
        for kv in &actor_kvs {
            let actor = parse_actor(kv)?;
            nodes
                .entry(actor.owner.clone())
                .or_insert_with(|| NodeInfo {
                    node_id: actor.owner,
                    advertise: String::new(),
                    draining: false,
                    alive: false,
                    actors: 0,
                })
                .actors += 1;
        }
        Ok(nodes.into_values().collect())
    }

    /// Every actor `node_id` owns, by (namespace, name, key).
    pub async fn owned_by(&self, node_id: &str) -> Result<Vec<DirActor>, ClusterError> {
        let (kvs, _) = self.scan(&self.m.keys().actors(), None).await?;
        let mut owned = Vec::new();
        for kv in &kvs {
            let actor = parse_actor(kv)?;
            if actor.owner == node_id {
                owned.push(actor);
            }
        }
        owned.sort_by(|a, b| (&a.namespace, &a.name, &a.key).cmp(&(&b.namespace, &b.name, &b.key)));
        Ok(owned)
    }

    /// A write by the owner (`bump`, `set_state`, `hand_off`, `remove`): guarded by the record's revision
    /// and this node's lease, plus `alive` (a node key that must exist).
    async fn owner_write(
        &self,
        op: &'static str,
        seen: &DirActor,
        write: Write,
        alive: Option<&str>,
    ) -> Result<DirActor, ClusterError> {
        let me = self.m.node_id();
        if seen.owner != me {
            return Err(ClusterError::NotOwner { owner: seen.owner.clone() });
        }
        self.m.ensure_serving()?;
        let keys = self.m.keys();
        let lease = self.m.lease_id();
        let actor_key = keys.actor(&seen.actor_id);
        let node_key = keys.node(me);
        let mut when = vec![
            Compare::mod_revision(actor_key.clone(), CompareOp::Equal, seen.mod_revision),
            Compare::lease(node_key.clone(), CompareOp::Equal, lease),
        ];
        let mut or_else = vec![TxnOp::get(actor_key.clone(), None), TxnOp::get(node_key, None)];
        if let Some(node) = alive {
            when.push(Compare::version(keys.node(node), CompareOp::Greater, 0));
            or_else.push(TxnOp::get(keys.node(node), None));
        }
        let (then, next) = match write {
            Write::Put(next) => (vec![TxnOp::put(actor_key.clone(), encode(&actor_key, &next)?, None)], Some(next)),
            Write::Delete => (
                vec![
                    TxnOp::delete(keys.name(&seen.namespace, &seen.name, &seen.key), None),
                    TxnOp::delete(actor_key.clone(), None),
                ],
                None,
            ),
        };
        let txn = Txn::new().when(when).and_then(then).or_else(or_else);
        let resp = call(op, self.m.client().txn(txn)).await?;
        if resp.succeeded() {
            let mut done = next.unwrap_or_else(|| seen.clone());
            done.mod_revision = revision(&resp)?;
            return Ok(done);
        }
        let [actor_kv, node_kv, alive_kv] = gets::<3>(&resp, &actor_key)?;
        let Some(actor_kv) = actor_kv else { return Err(ClusterError::NotFound { actor_id: seen.actor_id.clone() }) };
        let current = parse_actor(&actor_kv)?;
        if current.owner != me {
            return Err(ClusterError::NotOwner { owner: current.owner });
        }
        if node_kv.map(|kv| kv.lease()) != Some(lease) {
            return Err(ClusterError::Fenced);
        }
        if let (Some(node), None) = (alive, alive_kv) {
            return Err(ClusterError::NotAlive { node: node.to_string() });
        }
        Err(ClusterError::Conflict)
    }

    /// Every key under `prefix` at one revision (`at`, or the current one), paged; returns the revision.
    async fn scan(&self, prefix: &str, at: Option<i64>) -> Result<(Vec<KeyValue>, i64), ClusterError> {
        let end = prefix_end(prefix);
        let mut from = prefix.as_bytes().to_vec();
        let mut revision = at.unwrap_or(0);
        let mut out = Vec::new();
        loop {
            let mut options = GetOptions::new().with_range(end.clone()).with_limit(SCAN_PAGE);
            if revision > 0 {
                options = options.with_revision(revision);
            }
            let mut resp = call("scan", self.m.client().get(from.clone(), Some(options))).await?;
            if revision == 0 {
                revision = resp.header().map(|h| h.revision()).ok_or_else(|| missing_header("scan"))?;
            }
            let more = resp.more();
            let kvs = resp.take_kvs();
            let Some(last) = kvs.last() else { break };
            from = last.key().to_vec();
            from.push(0);
            out.extend(kvs);
            if !more {
                break;
            }
        }
        Ok((out, revision))
    }
}

/// What an owner's write does to the record.
enum Write {
    /// Replace it with this record.
    Put(DirActor),
    /// Delete it and its name.
    Delete,
}

/// 12 random bytes from the OS as 24 lower-case hex characters.
fn new_actor_id() -> Result<String, ClusterError> {
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).map_err(|e| ClusterError::Random(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Whether `id` can be an actor key's last part (no `/`, nothing empty): other strings cannot name an actor.
fn valid_actor_id(id: &str) -> bool {
    !id.is_empty() && !id.contains('/') && !id.chars().any(char::is_control)
}

fn encode(key: &str, actor: &DirActor) -> Result<String, ClusterError> {
    serde_json::to_string(actor).map_err(|e| corrupt(key, e))
}

/// An actor record from its key-value, checked against its key.
fn parse_actor(kv: &KeyValue) -> Result<DirActor, ClusterError> {
    let key = String::from_utf8_lossy(kv.key());
    let mut actor: DirActor = serde_json::from_slice(kv.value()).map_err(|e| corrupt(&key, e))?;
    if !key.ends_with(&format!("/actors/{}", actor.actor_id)) {
        return Err(ClusterError::Corrupt {
            key: key.into_owned(),
            reason: format!("holds actor {:?}", actor.actor_id),
        });
    }
    actor.mod_revision = kv.mod_revision();
    Ok(actor)
}

fn corrupt(key: &str, e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Corrupt { key: key.to_string(), reason: e.to_string() }
}

fn missing_header(op: &str) -> ClusterError {
    ClusterError::Corrupt { key: op.to_string(), reason: "etcd answer without a header".into() }
}

/// The store revision a successful transaction produced: the new `mod_revision` of what it put.
fn revision(resp: &TxnResponse) -> Result<i64, ClusterError> {
    resp.header().map(|h| h.revision()).ok_or_else(|| missing_header("txn"))
}

/// The first key-value of each of the first `N` gets of a transaction's branch (`None`: no such key, or
/// fewer gets than `N`, which callers only allow for optional trailing gets).
fn gets<const N: usize>(resp: &TxnResponse, key: &str) -> Result<[Option<KeyValue>; N], ClusterError> {
    let mut out: [Option<KeyValue>; N] = std::array::from_fn(|_| None);
    for (slot, op) in out.iter_mut().zip(resp.op_responses()) {
        match op {
            TxnOpResponse::Get(mut get) => *slot = get.take_kvs().into_iter().next(),
            _ => {
                return Err(ClusterError::Corrupt {
                    key: key.to_string(),
                    reason: "transaction answered a get with another op".into(),
                })
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actor_ids_are_24_lower_hex() {
        let a = new_actor_id().expect("rng");
        assert_eq!(a.len(), 24);
        assert!(a.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{a}");
        assert_ne!(a, new_actor_id().expect("rng"));
    }

    #[test]
    fn records_round_trip_without_their_revision() {
        let a = DirActor {
            actor_id: "00ff".into(),
            namespace: "ns".into(),
            name: "n/1".into(),
            key: "".into(),
            owner: "a".into(),
            generation: 7,
            state: DirState::Moving,
            mod_revision: 42,
        };
        let json = serde_json::to_string(&a).expect("encodes");
        assert_eq!(
            json,
            r#"{"actor_id":"00ff","namespace":"ns","name":"n/1","key":"","owner":"a","generation":7,"state":"moving"}"#
        );
        let back: DirActor = serde_json::from_str(&json).expect("decodes");
        assert_eq!(back, DirActor { mod_revision: 0, ..a });
    }

    #[test]
    fn odd_ids_name_no_actor() {
        assert!(valid_actor_id("0123456789abcdef01234567"));
        assert!(!valid_actor_id(""));
        assert!(!valid_actor_id("a/b"));
    }
}
