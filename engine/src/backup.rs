//! Backup and restore of an actor's database through the admin API.
//!
//! - `GET /actors/{id}/backup` streams a consistent snapshot of the actor's SQL
//!   database while the actor keeps serving: SQLite's online backup API copies
//!   every page in one step under one read transaction (a WAL snapshot, so writers
//!   are not blocked) into a private file, which is then streamed and removed.
//!   Role: operator or read-only operator.
//! - `POST /actors/{id}/restore` takes a SQLite database file as the body,
//!   checks it (`PRAGMA integrity_check`), stops the actor (a drain, as
//!   `actors stop`), and replaces its database atomically (write beside, fsync,
//!   rename; the old WAL is checkpointed away by the drain). The actor's next
//!   placement starts a new generation, so a host still holding the old one is
//!   fenced. Role: operator. Placements of the actor wait while it runs.
//!
//! The KV store (protocol v1–v3 KV messages) is not part of a backup.

use crate::admin::{authorized, error, Need};
use crate::state::EngineState;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

/// Largest database file `POST /actors/{id}/restore` accepts (the body is held while it is written).
pub const DEFAULT_MAX_RESTORE_BYTES: usize = 1024 * 1024 * 1024;

/// Bytes read per chunk of a streamed backup.
const CHUNK: usize = 256 * 1024;

/// The actor's record if the caller's token may reach its namespace.
fn reachable(
    state: &EngineState,
    identity: &crate::auth::Identity,
    id: &str,
) -> Option<crate::actor::registry::ActorRecord> {
    state.registry.get(id).filter(|a| identity.namespaces.allows(&a.namespace))
}

/// A file name in the data folder's scratch space that no one else uses.
fn scratch(state: &EngineState, what: &str) -> std::io::Result<PathBuf> {
    let dir = state.config.data_dir.join("tmp");
    std::fs::create_dir_all(&dir)?;
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    Ok(dir.join(format!("{what}-{}-{nanos}.sqlite", std::process::id())))
}

/// Copies `src` (a live WAL database) into a new file `dst` in one step (one snapshot).
fn snapshot(src: &FsPath, dst: &FsPath) -> rusqlite::Result<()> {
    let from = rusqlite::Connection::open_with_flags(
        src,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    from.busy_timeout(std::time::Duration::from_secs(5))?;
    let mut to = rusqlite::Connection::open(dst)?;
    let backup = rusqlite::backup::Backup::new(&from, &mut to)?;
    // -1: every page in one step, under one read transaction of the source (one snapshot).
    loop {
        match backup.step(-1)? {
            rusqlite::backup::StepResult::Done => break,
            rusqlite::backup::StepResult::More => continue,
            rusqlite::backup::StepResult::Busy | rusqlite::backup::StepResult::Locked => {
                std::thread::sleep(std::time::Duration::from_millis(5))
            }
            _ => continue,
        }
    }
    drop(backup);
    to.execute_batch("PRAGMA journal_mode = DELETE")?;
    Ok(())
}

pub async fn backup(State(state): State<Arc<EngineState>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let identity = match authorized(&state, &headers, Need::Read) {
        Ok(i) => i,
        Err(r) => return *r,
    };
    if reachable(&state, &identity, &id).is_none() {
        return *error(StatusCode::NOT_FOUND, format!("no actor with id {id}"));
    }
    let src = state.actor_dir(&id).join("db.sqlite");
    if !src.exists() {
        return *error(StatusCode::NOT_FOUND, "the actor has no database yet");
    }
    let dst = match scratch(&state, "backup") {
        Ok(p) => p,
        Err(e) => return *error(StatusCode::INTERNAL_SERVER_ERROR, format!("no scratch space: {e}")),
    };
    tracing::info!(identity = %identity.name, actor_id = %id, "backup");
    let made = {
        let (src, dst) = (src.clone(), dst.clone());
        tokio::task::spawn_blocking(move || snapshot(&src, &dst)).await
    };
    if let Err(e) = made.map_err(|e| e.to_string()).and_then(|r| r.map_err(|e| e.to_string())) {
        let _ = std::fs::remove_file(&dst);
        return *error(StatusCode::INTERNAL_SERVER_ERROR, format!("backup failed: {e}"));
    }
    let file = match tokio::fs::File::open(&dst).await {
        Ok(f) => f,
        Err(e) => return *error(StatusCode::INTERNAL_SERVER_ERROR, format!("backup failed: {e}")),
    };
    let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    // The open handle keeps the data readable; the name goes now.
    let _ = std::fs::remove_file(&dst);
    let chunks = futures_util::stream::unfold(file, |mut f| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; CHUNK];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<Bytes, std::io::Error>(Bytes::from(buf)), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    });
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/vnd.sqlite3".to_string()),
            (header::CONTENT_LENGTH, len.to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{id}.sqlite\"")),
        ],
        Body::from_stream(chunks),
    )
        .into_response()
}

/// Checks an uploaded database file: it opens as SQLite and passes `integrity_check`.
pub(crate) fn check_database(path: &FsPath) -> Result<(), String> {
    let conn = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| format!("not a SQLite database: {e}"))?;
    let verdict: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(|e| format!("not a SQLite database: {e}"))?;
    if verdict != "ok" {
        return Err(format!("the database fails integrity_check: {verdict}"));
    }
    Ok(())
}

/// Writes `bytes` beside the live file `<folder>/<name>` (as `<name>.incoming`,
/// same file system so the later rename is atomic), fsyncs it and checks it
/// (`integrity_check`); returns its path. Nothing live is touched.
pub(crate) fn stage_database(folder: &FsPath, name: &str, bytes: &[u8]) -> Result<PathBuf, String> {
    std::fs::create_dir_all(folder).map_err(|e| format!("actor folder: {e}"))?;
    let incoming = folder.join(format!("{name}.incoming"));
    let checked = write_durably(&incoming, bytes)
        .map_err(|e| format!("writing {name}: {e}"))
        .and_then(|()| check_database(&incoming).map_err(|m| format!("{name}: {m}")));
    if let Err(m) = checked {
        let _ = std::fs::remove_file(&incoming);
        return Err(m);
    }
    Ok(incoming)
}

/// Puts a staged file in place of `<folder>/<name>`: the closed database's
/// leftover WAL and shared memory are removed (they must not be replayed onto
/// it), the staged file renamed in, the folder fsynced. `staged` None: the
/// file (and its leftovers) is removed instead.
pub(crate) fn swap_in(folder: &FsPath, name: &str, staged: Option<&FsPath>) -> std::io::Result<()> {
    let remove = |p: PathBuf| match std::fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    for ext in ["-wal", "-shm"] {
        remove(folder.join(format!("{name}{ext}")))?;
    }
    match staged {
        Some(p) => std::fs::rename(p, folder.join(name))?,
        None => remove(folder.join(name))?,
    }
    std::fs::File::open(folder)?.sync_all()
}

/// Writes `bytes` to `path` and makes it durable.
pub(crate) fn write_durably(path: &FsPath, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

pub async fn restore(
    State(state): State<Arc<EngineState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let identity = match authorized(&state, &headers, Need::Write) {
        Ok(i) => i,
        Err(r) => return *r,
    };
    if reachable(&state, &identity, &id).is_none() {
        return *error(StatusCode::NOT_FOUND, format!("no actor with id {id}"));
    }
    let dir = state.actor_dir(&id);
    // Staged beside the live file and checked before anything is stopped.
    let staged = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || stage_database(&dir, "db.sqlite", &body)).await
    };
    let incoming = match staged {
        Ok(Ok(p)) => p,
        Ok(Err(m)) => return *error(StatusCode::BAD_REQUEST, m),
        Err(e) => return *error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    // No placement of this actor while its database is swapped.
    let lock = state.placement_lock(&id);
    let _placing = lock.lock().await;
    tracing::info!(identity = %identity.name, actor_id = %id, "restore: stopping the actor");
    let report = match crate::drain::drain(&state, &id, None, envoy_protocol::StopReason::Operator, true).await {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_file(&incoming);
            return *error(StatusCode::INTERNAL_SERVER_ERROR, format!("stopping the actor: {e}"));
        }
    };
    // The drain checkpointed and closed the database.
    let swapped = tokio::task::spawn_blocking(move || swap_in(&dir, "db.sqlite", Some(&incoming))).await;
    match swapped {
        Ok(Ok(())) => Json(serde_json::json!({
            "actor_id": id,
            "stopped_generation": report.generation,
            "restored": true,
            "next": "the actor's next placement starts a new generation on the restored database",
        }))
        .into_response(),
        Ok(Err(e)) => *error(StatusCode::INTERNAL_SERVER_ERROR, format!("replacing the database: {e}")),
        Err(e) => *error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
