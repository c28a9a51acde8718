//! Envoy sessions: what survives a quick reconnect.
//!
//! A session is keyed by (namespace, envoy key). It owns the command log (every
//! command gets an index; unacked ones are re-sent once when the envoy resumes
//! with a `lastCommandIndex` below them), the last processed event index, and
//! the current connection's outbox. A connection ending starts the lost timer;
//! a reconnect within the threshold resumes, otherwise the session is dropped
//! and its actors unplaced.

use super::writer::Outbox;
use envoy_protocol::{close, Command, CommandWrapper, ToEnvoy, ToEnvoyCommands};
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Session key: (namespace, envoy key).
pub type SessionKey = (String, String);

/// The connection currently serving a session.
#[derive(Debug, Clone)]
struct Attached {
    /// Tells this connection apart from an evicted predecessor.
    conn_id: u64,
    /// Where commands for the envoy go.
    outbox: Outbox,
}

#[derive(Debug, Default)]
struct Inner {
    /// None while disconnected (inside the lost threshold).
    conn: Option<Attached>,
    /// Index given to the next command (starts at 1).
    next_command_index: u64,
    /// Commands sent but not acked, oldest first.
    unacked: VecDeque<CommandWrapper>,
    /// Highest event index processed (events at or below it are ignored).
    last_event_index: Option<u64>,
    /// Bumped on every disconnect, so a stale lost timer does nothing.
    epoch: u64,
    /// Set once the session is dropped (lost or engine shutdown).
    dropped: bool,
}

/// One envoy's session.
#[derive(Debug)]
pub struct Session {
    /// Namespace of the envoy (part of the session key).
    pub namespace: String,
    /// Envoy key (part of the session key; actors are placed on it).
    pub envoy_key: String,
    /// Identity (token name) that created the session: only it may resume or evict
    /// it, so another tenant's token cannot take over this envoy's actors and commands.
    pub owner: String,
    /// Mutable session state, locked briefly.
    inner: Mutex<Inner>,
    /// Cluster mode: actor id → owner node, for this envoy's actors placed
    /// through another node (`cluster::relay`). Kept with the session, so a
    /// quick reconnect keeps reaching them.
    #[cfg(feature = "cluster")]
    pub(crate) routes: Mutex<HashMap<String, String>>,
}

impl Session {
    /// Logs a command and sends it if connected (otherwise it is re-sent on resume).
    pub fn send_command(&self, command: Command) -> u64 {
        let mut inner = self.inner.lock();
        inner.next_command_index += 1;
        let wrapper = CommandWrapper { index: inner.next_command_index, inner: command };
        inner.unacked.push_back(wrapper.clone());
        if let Some(c) = &inner.conn {
            c.outbox.send(ToEnvoy::Commands(ToEnvoyCommands { commands: vec![wrapper] }));
        }
        inner.next_command_index
    }

    /// Forgets commands up to and including `index`.
    pub fn ack_commands(&self, index: u64) {
        let mut inner = self.inner.lock();
        while inner.unacked.front().is_some_and(|c| c.index <= index) {
            inner.unacked.pop_front();
        }
    }

    /// Whether event `index` is new; if so it becomes the last processed one.
    pub fn accept_event(&self, index: u64) -> bool {
        let mut inner = self.inner.lock();
        if inner.last_event_index.is_some_and(|last| index <= last) {
            return false;
        }
        inner.last_event_index = Some(index);
        true
    }

    pub fn last_event_index(&self) -> Option<u64> {
        self.inner.lock().last_event_index
    }

    /// Commands not yet acked (for tests and observability).
    pub fn unacked_count(&self) -> usize {
        self.inner.lock().unacked.len()
    }

    /// Closes the current connection, if any.
    pub fn close(&self, code: u16, reason: &str) {
        if let Some(c) = &self.inner.lock().conn {
            c.outbox.close(code, reason);
        }
    }

    /// Called when connection `conn_id` ends. Returns the epoch to hand to the
    /// lost timer if it was the session's current connection.
    pub fn detach(&self, conn_id: u64) -> Option<u64> {
        let mut inner = self.inner.lock();
        if inner.dropped || inner.conn.as_ref().map(|c| c.conn_id) != Some(conn_id) {
            return None;
        }
        inner.conn = None;
        inner.epoch += 1;
        Some(inner.epoch)
    }
}

/// Result of attaching a connection to a session.
pub struct Attachment {
    /// The session the connection now serves.
    pub session: Arc<Session>,
    /// Whether an existing session was resumed.
    pub resumed: bool,
}

/// The connection asking to attach to a session.
#[derive(Debug, Clone, Copy)]
pub struct Attaching<'a> {
    /// Tells it apart from a predecessor with the same envoy key.
    pub conn_id: u64,
    /// Its identity (token name): must own the session if one exists.
    pub owner: &'a str,
    /// Where the session's commands go once attached.
    pub outbox: &'a Outbox,
}

/// Why a connection could not attach to a session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttachError {
    /// The session was created by another identity.
    #[error("envoy key {envoy_key:?} belongs to a session of another identity")]
    NotOwner {
        /// The envoy key asked for.
        envoy_key: String,
    },
}

/// Every live session.
#[derive(Debug, Default)]
pub struct Sessions {
    /// Live sessions by (namespace, envoy key).
    map: Mutex<HashMap<SessionKey, Arc<Session>>>,
}

impl Sessions {
    pub fn get(&self, namespace: &str, envoy_key: &str) -> Option<Arc<Session>> {
        self.map.lock().get(&(namespace.to_string(), envoy_key.to_string())).cloned()
    }

    /// The identity owning the live session of (namespace, envoy_key), if there is one.
    pub fn owner_of(&self, namespace: &str, envoy_key: &str) -> Option<String> {
        self.get(namespace, envoy_key).map(|s| s.owner.clone())
    }

    pub fn all(&self) -> Vec<Arc<Session>> {
        self.map.lock().values().cloned().collect()
    }

    /// Attaches connection `conn.conn_id` of identity `conn.owner` to the session
    /// of (namespace, envoy_key). A session created by another identity is left
    /// untouched (`AttachError::NotOwner`). Otherwise: evicts a live predecessor
    /// (close EVICTED), drops commands the envoy has
    /// applied (`last_command_index`), and queues the remaining unacked ones on
    /// the new outbox — after the caller's Init, since the caller sends Init first
    /// through the same outbox via `init`.
    pub fn attach(
        &self,
        namespace: &str,
        envoy_key: &str,
        conn: Attaching<'_>,
        last_command_index: Option<u64>,
        init: impl FnOnce(Option<u64>) -> ToEnvoy,
    ) -> Result<Attachment, AttachError> {
        let Attaching { conn_id, owner, outbox } = conn;
        let mut map = self.map.lock();
        let key = (namespace.to_string(), envoy_key.to_string());
        let (session, resumed) = match map.get(&key) {
            Some(s) if s.owner != owner => return Err(AttachError::NotOwner { envoy_key: envoy_key.to_string() }),
            Some(s) => (s.clone(), true),
            None => {
                let s = Arc::new(Session {
                    namespace: namespace.to_string(),
                    envoy_key: envoy_key.to_string(),
                    owner: owner.to_string(),
                    inner: Mutex::new(Inner::default()),
                    #[cfg(feature = "cluster")]
                    routes: Mutex::default(),
                });
                map.insert(key, s.clone());
                (s, false)
            }
        };
        let mut inner = session.inner.lock();
        if let Some(old) = inner.conn.take() {
            old.outbox.close(close::EVICTED, "replaced by a newer connection with the same envoy key");
        }
        if let Some(applied) = last_command_index {
            while inner.unacked.front().is_some_and(|c| c.index <= applied) {
                inner.unacked.pop_front();
            }
        }
        outbox.send(init(inner.last_event_index));
        if !inner.unacked.is_empty() {
            outbox.send(ToEnvoy::Commands(ToEnvoyCommands { commands: inner.unacked.iter().cloned().collect() }));
        }
        inner.conn = Some(Attached { conn_id, outbox: outbox.clone() });
        drop(inner);
        Ok(Attachment { session, resumed })
    }

    /// Drops the session if it is still disconnected since `epoch`; returns whether it did.
    pub fn drop_if_lost(&self, namespace: &str, envoy_key: &str, epoch: u64) -> bool {
        let mut map = self.map.lock();
        let key = (namespace.to_string(), envoy_key.to_string());
        let Some(s) = map.get(&key) else { return false };
        {
            let mut inner = s.inner.lock();
            if inner.conn.is_some() || inner.epoch != epoch || inner.dropped {
                return false;
            }
            inner.dropped = true;
        }
        map.remove(&key);
        true
    }

    /// Drops the session now if `conn_id` is still its connection (a silent envoy).
    pub fn drop_now(&self, namespace: &str, envoy_key: &str, conn_id: u64) -> bool {
        let mut map = self.map.lock();
        let key = (namespace.to_string(), envoy_key.to_string());
        let Some(s) = map.get(&key) else { return false };
        {
            let mut inner = s.inner.lock();
            if inner.conn.as_ref().map(|c| c.conn_id) != Some(conn_id) {
                return false;
            }
            inner.conn = None;
            inner.dropped = true;
        }
        map.remove(&key);
        true
    }
}
