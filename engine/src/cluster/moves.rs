//! Moving actors between nodes: a node drain, and the receiving side.
//!
//! One move, by the owner (the order is what keeps every acknowledged write):
//! 1. the record goes `Moving` in etcd (compare-and-swap): new placements wait;
//! 2. the local placement drains (StopActor with reason MOVED; in-flight work
//!    finishes; the database is checkpointed and closed);
//! 3. each actor file (`db.sqlite`, `kv.sqlite`) is checkpointed again, read,
//!    and sent to the new owner with its SHA-256; the new owner checks the
//!    digest and `integrity_check`, writes it beside, fsyncs, renames it in;
//! 4. only then the hand-off: owner := new, generation + 1, `Active` (one
//!    compare-and-swap under the old owner's lease);
//! 5. the old owner deletes its copy.
//!
//! A failure before 4 leaves the actor with its old owner (back to `Active`);
//! the new owner's partial copy is never used (it is not the owner) and is
//! overwritten by any later move. Hosts see StopActor(MOVED), then Start from
//! the new owner at their next get-or-create.

use super::directory::DirState;
use super::node::ClusterNode;
use super::DirActor;
use crate::state::EngineState;
use envoy_protocol::StopReason;
use serde::Serialize;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// The files of an actor that move with it (SQL database, KV store).
pub const ACTOR_FILES: [&str; 2] = ["db.sqlite", "kv.sqlite"];

/// Longest one file may take to reach the new owner (and be written and checked
/// there) before the move is abandoned and the actor stays here: a hung target
/// must not hold a SIGTERM forever.
pub const FILE_SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// One actor moved.
#[derive(Debug, Clone, Serialize)]
pub struct MoveReport {
    /// The actor.
    pub actor_id: String,
    /// Its new owner.
    pub to: String,
    /// Its generation after the hand-off (its next placement is above it).
    pub generation: u64,
    /// Bytes of files sent.
    pub bytes: u64,
    /// Wall time of the whole move.
    pub duration_ms: u64,
}

/// What a node drain did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NodeDrainReport {
    /// Actors now owned by other nodes.
    pub moved: Vec<MoveReport>,
    /// Actors that could not move (still owned here), with why.
    pub failed: Vec<(String, String)>,
}

/// The live, non-draining node (other than this one) owning the fewest actors.
pub async fn pick_target(node: &ClusterNode) -> Option<String> {
    let nodes = node.directory.nodes().await.ok()?;
    nodes
        .into_iter()
        .filter(|n| n.alive && !n.draining && n.node_id != node.id())
        .min_by_key(|n| n.actors)
        .map(|n| n.node_id)
}

/// Moves every actor this node owns to other live nodes (SIGTERM and `POST /node/drain`).
pub async fn drain_node(state: &Arc<EngineState>, node: &Arc<ClusterNode>) -> NodeDrainReport {
    node.begin_draining().await;
    let mut report = NodeDrainReport::default();
    let owned = match node.directory.owned_by(node.id()).await {
        Ok(o) => o,
        Err(e) => {
            tracing::error!(error = %e, "node drain: cannot list this node's actors; nothing moved");
            report.failed.push((String::new(), e.to_string()));
            return report;
        }
    };
    tracing::info!(actors = owned.len(), "node drain: moving every actor to other nodes");
    let mut nodes = match node.directory.nodes().await {
        Ok(n) => n.into_iter().filter(|n| n.alive && !n.draining && n.node_id != node.id()).collect::<Vec<_>>(),
        Err(e) => {
            report.failed.push((String::new(), e.to_string()));
            return report;
        }
    };
    for dir in owned {
        let Some(target) = nodes.iter_mut().min_by_key(|n| n.actors) else {
            tracing::error!(actor_id = %dir.actor_id, "node drain: no other live node to move it to; it stays here (unavailable while this node is down)");
            report.failed.push((dir.actor_id.clone(), "no other live node to move it to".into()));
            continue;
        };
        target.actors += 1;
        let to = target.clone();
        match move_actor(state, node, dir.clone(), &to.node_id, &to.advertise).await {
            Ok(m) => {
                tracing::info!(actor_id = %m.actor_id, to = %m.to, generation = m.generation, bytes = m.bytes,
                    duration_ms = m.duration_ms, "actor moved");
                report.moved.push(m)
            }
            Err(e) => {
                tracing::error!(actor_id = %dir.actor_id, to = %to.node_id, error = %e, "moving an actor failed; it stays here");
                report.failed.push((dir.actor_id.clone(), format!("{e:#}")));
            }
        }
    }
    report
}

/// Moves one actor this node owns to `to` (reached at `advertise`).
pub async fn move_actor(
    state: &Arc<EngineState>,
    node: &Arc<ClusterNode>,
    dir: DirActor,
    to: &str,
    advertise: &str,
) -> anyhow::Result<MoveReport> {
    let started = Instant::now();
    let id = dir.actor_id.clone();
    // No placement of this actor here while it moves (a racing one would also fail its bump).
    let lock = state.placement_lock(&id);
    let _placing = lock.lock().await;
    let moving = match dir.state {
        DirState::Moving => dir,
        DirState::Active | DirState::Restoring => node.directory.set_state(&dir, DirState::Moving).await?,
    };
    let sent = async {
        crate::drain::drain(state, &id, None, StopReason::Moved, true).await?;
        let folder = state.actor_dir(&id);
        let files = tokio::task::spawn_blocking(move || read_files(&folder)).await??;
        let base = ClusterNode::http_base(advertise);
        let token = node.token(state);
        let mut bytes = 0u64;
        for (name, content) in &files {
            let path = match content {
                Some(b) => {
                    bytes += b.len() as u64;
                    format!("/cluster/actors/{id}/files/{name}?from={}&sha256={}", node.id(), sha256_hex(b))
                }
                None => format!("/cluster/actors/{id}/files/{name}?from={}&absent=1", node.id()),
            };
            let body = content.as_deref().map(|b| ("application/vnd.sqlite3", b));
            let sent = crate::cli::http_exchange(&base, "POST", &path, token, body);
            let (status, answer) = tokio::time::timeout(FILE_SEND_TIMEOUT, sent)
                .await
                .map_err(|_| anyhow::anyhow!("node {to} took more than {FILE_SEND_TIMEOUT:?} to take {name}"))??;
            if status != 200 {
                anyhow::bail!("node {to} refused {name}: HTTP {status}: {}", String::from_utf8_lossy(&answer).trim());
            }
        }
        let after = node.directory.hand_off(&moving, to).await?;
        anyhow::Ok((after, bytes))
    }
    .await;
    let (after, bytes) = match sent {
        Ok(x) => x,
        Err(e) => {
            // Still ours: placeable again.
            if let Ok(Some(cur)) = node.directory.get(&id).await {
                if cur.owner == node.id() && cur.state == DirState::Moving {
                    let _ = node.directory.set_state(&cur, DirState::Active).await;
                }
            }
            return Err(e);
        }
    };
    // The new owner has the files and etcd says so: this copy is dead weight now.
    let folder = state.actor_dir(&id);
    let st = state.clone();
    let removed = tokio::task::spawn_blocking(move || {
        let _ = st.registry.remove(&id);
        std::fs::remove_dir_all(&folder)
    })
    .await;
    if let Ok(Err(e)) = removed {
        tracing::warn!(actor_id = %after.actor_id, error = %e, "removing the moved actor's old files failed");
    }
    Ok(MoveReport {
        actor_id: after.actor_id.clone(),
        to: to.to_string(),
        generation: after.generation,
        bytes,
        duration_ms: started.elapsed().as_millis() as u64,
    })
}

/// An actor file's name and bytes (None: the actor has no file of that kind).
type ActorFile = (&'static str, Option<Vec<u8>>);

/// Checkpoints and reads each actor file.
fn read_files(folder: &Path) -> anyhow::Result<Vec<ActorFile>> {
    let mut out = Vec::new();
    for name in ACTOR_FILES {
        let path = folder.join(name);
        if !path.exists() {
            out.push((name, None));
            continue;
        }
        {
            // The drain closed every connection; this folds any WAL left into the file.
            let conn = rusqlite::Connection::open(&path)?;
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        }
        let wal = folder.join(format!("{name}-wal"));
        if std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
            anyhow::bail!("{name} still has a WAL after its checkpoint; is something else holding it open?");
        }
        out.push((name, Some(std::fs::read(&path)?)));
    }
    Ok(out)
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Puts a received actor file in place: checks its digest, stages it (written
/// beside, fsynced, `integrity_check`) and swaps it in (stale WAL removed,
/// renamed, folder fsynced) with the same steps as a restore (`backup.rs`).
/// `None`: the sender has no such file; a stale one here is removed.
pub fn install_file(folder: &Path, name: &str, content: Option<(&[u8], &str)>) -> Result<(), String> {
    let staged = match content {
        Some((bytes, sha256)) => {
            let digest = sha256_hex(bytes);
            if !digest.eq_ignore_ascii_case(sha256) {
                return Err(format!("{name}: SHA-256 {digest} does not match the sender's {sha256}"));
            }
            Some(crate::backup::stage_database(folder, name, bytes)?)
        }
        None => None,
    };
    std::fs::create_dir_all(folder).map_err(|e| format!("actor folder: {e}"))?;
    crate::backup::swap_in(folder, name, staged.as_deref()).map_err(|e| format!("putting {name} in place: {e}"))
}
