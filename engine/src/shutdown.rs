//! Engine-wide shutdown signal (the mini-redis pattern).
//!
//! A `watch` channel tells every task that shutdown began; each connection task
//! holds a clone of an `mpsc::Sender<()>` ([`TaskTracker::token`]) and drops it
//! when done, so the engine knows every connection has finished when
//! `recv()` returns `None`.

use tokio::sync::{mpsc, watch};

/// Fires once when the engine starts shutting down.
#[derive(Clone, Debug)]
pub struct Shutdown {
    /// `true` once shutdown began; a watch so late subscribers see it too.
    rx: watch::Receiver<bool>,
}

impl Shutdown {
    /// Whether shutdown already began.
    pub fn is_shutdown(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves once shutdown began (immediately if it already has).
    pub async fn recv(&mut self) {
        let _ = self.rx.wait_for(|v| *v).await;
    }
}

/// The sending side of [`Shutdown`].
#[derive(Debug)]
pub struct ShutdownTrigger {
    /// Flipped to `true` once.
    tx: watch::Sender<bool>,
}

impl ShutdownTrigger {
    pub fn new() -> (Self, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (Self { tx }, Shutdown { rx })
    }

    /// Begins shutdown; every [`Shutdown::recv`] resolves.
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    pub fn subscribe(&self) -> Shutdown {
        Shutdown { rx: self.tx.subscribe() }
    }
}

/// Counts live tasks: each holds a token; `wait` resolves when all are dropped.
#[derive(Debug)]
pub struct TaskTracker {
    /// Cloned into every tracked task; dropped when that task ends.
    tx: parking_lot::Mutex<Option<mpsc::Sender<()>>>,
    /// Yields `None` once every token is gone.
    rx: tokio::sync::Mutex<mpsc::Receiver<()>>,
}

/// Held by a tracked task for its whole life.
#[derive(Debug, Clone)]
pub struct TaskToken(#[allow(dead_code)] mpsc::Sender<()>);

impl TaskTracker {
    pub fn new() -> Self {
        let (tx, rx) = mpsc::channel(1);
        Self { tx: parking_lot::Mutex::new(Some(tx)), rx: tokio::sync::Mutex::new(rx) }
    }

    /// A token for a new task, or `None` once `wait` was called (no new tasks).
    pub fn token(&self) -> Option<TaskToken> {
        self.tx.lock().as_ref().map(|tx| TaskToken(tx.clone()))
    }

    /// Stops handing out tokens and waits until every token is dropped.
    pub async fn wait(&self) {
        self.tx.lock().take();
        let mut rx = self.rx.lock().await;
        while rx.recv().await.is_some() {}
    }
}

impl Default for TaskTracker {
    fn default() -> Self {
        Self::new()
    }
}
