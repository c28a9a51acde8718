//! Get-or-create in a cluster: which node places an actor.
//!
//! The directory in etcd decides (one compare-and-swap creates an actor, owned
//! by the node the request arrived at). Then:
//! - owned here: placed here, like one node, except that the generation is
//!   raised in etcd first (`Directory::bump`: only the owner, only under its
//!   live lease, never from a stale read) and the local registry takes it;
//! - owned by a live node: the request is relayed there on this envoy's link
//!   (`relay.rs`), which places it on the envoy and answers through us;
//! - owned by a node that is down: ACTOR_UNAVAILABLE (the actor's database is
//!   on that node; nothing is re-created elsewhere);
//! - being moved: wait (bounded) for the move to finish, then one of the above.

use super::directory::DirState;
use super::node::{ClusterNode, Unavailable};
use super::relay::Relays;
use super::{ClusterError, DirActor};
use crate::actor::lifecycle;
use crate::connection::session::Session;
use crate::state::EngineState;
use envoy_protocol::{ActorErrorCode, ToEngine, ToEngineGetOrCreateActor, ToEnvoy};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest a get-or-create waits for its actor to finish moving between nodes
/// before it is answered OVERLOADED (retry).
pub const MOVE_WAIT: Duration = Duration::from_secs(10);
/// How often a waiting get-or-create re-reads a moving actor's record.
const MOVE_POLL: Duration = Duration::from_millis(50);
/// Re-reads when a generation bump loses a race with another write of the record.
const BUMP_ATTEMPTS: usize = 4;

/// Answers `req` (Some) or relays it to the actor's owner (None: the answer comes through the link).
pub async fn get_or_create(
    state: &Arc<EngineState>,
    node: &Arc<ClusterNode>,
    session: &Arc<Session>,
    relays: &Relays,
    req: ToEngineGetOrCreateActor,
) -> Option<ToEnvoy> {
    let rid = req.request_id;
    if let Err(refused) = lifecycle::check_request(state, session, &req) {
        return Some(*refused);
    }
    let unavailable =
        |e: &ClusterError| lifecycle::error(rid, ActorErrorCode::ActorUnavailable, Unavailable::from_cluster(e).0);
    // An existing actor is found without this node serving; creating one needs it.
    let found = match node.directory.find(&session.namespace, &req.name, &req.key).await {
        Ok(Some(a)) => (a, false),
        Ok(None) => match node.directory.get_or_create(&session.namespace, &req.name, &req.key).await {
            Ok(x) => x,
            Err(e) => return Some(unavailable(&e)),
        },
        Err(e) => return Some(unavailable(&e)),
    };
    let (mut dir, created) = found;
    let started = Instant::now();
    while dir.state != DirState::Active {
        if started.elapsed() > MOVE_WAIT {
            return Some(lifecycle::error(
                rid,
                ActorErrorCode::Overloaded,
                format!("the actor is moving between nodes (state {:?}); retry shortly", dir.state),
            ));
        }
        tokio::time::sleep(MOVE_POLL).await;
        dir = match node.directory.get(&dir.actor_id).await {
            Ok(Some(d)) => d,
            Ok(None) => return Some(lifecycle::error(rid, ActorErrorCode::Internal, "the actor was deleted")),
            Err(e) => return Some(unavailable(&e)),
        };
    }
    if created && node.is_draining() {
        // A draining node keeps nothing new: give the (empty) actor to another node.
        match super::moves::pick_target(node).await {
            Some(target) => match node.directory.hand_off(&dir, &target).await {
                Ok(d) => dir = d,
                Err(e) => return Some(unavailable(&e)),
            },
            None => tracing::warn!("draining, but no other live node to create the actor on; keeping it here"),
        }
    }
    if dir.owner != node.id() {
        relays.forward(dir.owner.clone(), ToEngine::GetOrCreateActor(req));
        return None;
    }
    if !node.is_serving() {
        return Some(unavailable(&ClusterError::Fenced));
    }
    relays.forget_route(&dir.actor_id);
    {
        let st = state.clone();
        let d = dir.clone();
        let ensured = tokio::task::spawn_blocking(move || {
            st.registry.ensure(&d.actor_id, &d.namespace, &d.name, &d.key, d.generation)
        })
        .await;
        match ensured {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Some(lifecycle::error(rid, ActorErrorCode::Internal, format!("registry: {e}"))),
            Err(e) => return Some(lifecycle::error(rid, ActorErrorCode::Internal, format!("registry task: {e}"))),
        }
    }
    let max_placed = state.config.max_actors_per_connection;
    let answer = lifecycle::place(state, session, rid, &dir.actor_id, created, |id, envoy| {
        let (state, node) = (state.clone(), node.clone());
        async move {
            let bumped = bump(&node, &id).await?;
            tokio::task::spawn_blocking(move || state.registry.start_at(&id, &envoy, max_placed, bumped.generation))
                .await
                .map_err(|e| anyhow::anyhow!("registry task: {e}"))?
        }
    })
    .await;
    Some(answer)
}

/// Raises the generation of an actor this node owns, in etcd (re-reading on a lost race).
async fn bump(node: &ClusterNode, actor_id: &str) -> anyhow::Result<DirActor> {
    for _ in 0..BUMP_ATTEMPTS {
        let cur = match node.directory.get(actor_id).await {
            Ok(Some(d)) => d,
            Ok(None) => anyhow::bail!("the actor is no longer in the cluster directory"),
            Err(e) => return Err(Unavailable::from_cluster(&e).into()),
        };
        if cur.owner != node.id() {
            return Err(Unavailable::from_cluster(&ClusterError::NotOwner { owner: cur.owner }).into());
        }
        if cur.state != DirState::Active {
            return Err(Unavailable(format!("it is {:?} between nodes; retry", cur.state)).into());
        }
        match node.directory.bump(&cur).await {
            Ok(d) => return Ok(d),
            Err(ClusterError::Conflict) => continue,
            Err(e) => return Err(Unavailable::from_cluster(&e).into()),
        }
    }
    Err(Unavailable("its directory record kept changing; retry".into()).into())
}
