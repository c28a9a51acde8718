//! The process's descriptor limit.
//!
//! Every open actor database costs descriptors (see `DEFAULT_MAX_OPEN_ACTOR_DBS`),
//! and so does every socket. Many systems start processes with a soft
//! `RLIMIT_NOFILE` of 1024 and a far higher hard limit; at start the engine
//! raises the soft limit to the hard one (allowed without privileges) and warns
//! if its caps still cannot fit.

use crate::config::Config;

/// Descriptors one open actor database may use: writer, readers and KV store,
/// each with its database file, plus the -wal and -shm files.
pub const FDS_PER_OPEN_DB: u64 = 12;
/// Descriptors kept for everything else: the listener, the metadata database,
/// sockets of envoys and operators, the runtime.
pub const FDS_RESERVED: u64 = 256;

/// Raises the soft descriptor limit to the hard one, and warns if the open
/// database cap cannot fit in it. Returns the soft limit now in force (None
/// where it cannot be read).
pub fn raise_and_check(config: &Config) -> Option<u64> {
    let soft = raise_soft_limit()?;
    let needed = config.max_open_actor_dbs as u64 * FDS_PER_OPEN_DB + FDS_RESERVED;
    if soft < needed {
        tracing::warn!(
            soft_limit = soft,
            needed,
            max_open_actor_dbs = config.max_open_actor_dbs,
            "the descriptor limit (RLIMIT_NOFILE) is below what max_open_actor_dbs may need; \
             lower --max-open-actor-dbs or raise the limit (ulimit -n)"
        );
    }
    Some(soft)
}

#[cfg(unix)]
#[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux but not on every unix
fn raise_soft_limit() -> Option<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we pass; no other memory is touched.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
        // SAFETY: setrlimit only reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            tracing::debug!(from = lim.rlim_cur as u64, to = lim.rlim_max as u64, "raised the soft descriptor limit");
            return Some(lim.rlim_max as u64);
        }
    }
    Some(lim.rlim_cur as u64)
}

#[cfg(not(unix))]
fn raise_soft_limit() -> Option<u64> {
    None
}
