//! The small interface between the generic driver and a platform: move bytes,
//! sleep, spawn, read the clock. Native (tokio) and wasm (web-sys) implement it.
//!
//! On native, futures must be `Send` (tokio's multi-threaded runtime); on wasm
//! nothing is `Send` (JS objects). [`MaybeSend`] / [`MaybeSync`] and the boxed
//! future aliases mean `Send`/`Sync` on native and nothing on wasm, so the same
//! driver code compiles for both.

use crate::core::ConnectFailure;
use std::future::Future;
use std::pin::Pin;

#[cfg(feature = "native-transport")]
mod send {
    /// `Send` on native, nothing on wasm.
    pub trait MaybeSend: Send {}
    impl<T: Send + ?Sized> MaybeSend for T {}
    /// `Sync` on native, nothing on wasm.
    pub trait MaybeSync: Sync {}
    impl<T: Sync + ?Sized> MaybeSync for T {}
    /// A boxed future, `Send` on native.
    pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
    /// A boxed stream, `Send` on native.
    pub type BoxStream<'a, T> = std::pin::Pin<Box<dyn futures_util::Stream<Item = T> + Send + 'a>>;
    /// An actor handler, shareable across threads on native.
    pub type Handler = std::sync::Arc<dyn Fn(crate::ActorContext) -> BoxFuture<'static, ()> + Send + Sync>;
}

#[cfg(all(feature = "wasm-transport", not(feature = "native-transport")))]
mod send {
    /// `Send` on native, nothing on wasm.
    pub trait MaybeSend {}
    impl<T: ?Sized> MaybeSend for T {}
    /// `Sync` on native, nothing on wasm.
    pub trait MaybeSync {}
    impl<T: ?Sized> MaybeSync for T {}
    /// A boxed future, not `Send` on wasm.
    pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + 'a>>;
    /// A boxed stream, not `Send` on wasm.
    pub type BoxStream<'a, T> = std::pin::Pin<Box<dyn futures_util::Stream<Item = T> + 'a>>;
    /// An actor handler (single-threaded on wasm).
    #[allow(clippy::arc_with_non_send_sync)]
    pub type Handler = std::sync::Arc<dyn Fn(crate::ActorContext) -> BoxFuture<'static, ()>>;
}

pub use send::{BoxFuture, BoxStream, Handler, MaybeSend, MaybeSync};

/// What a socket delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A binary message.
    Frame(Vec<u8>),
    /// The socket closed: the close frame's code, or `None` if it just died.
    Closed { code: Option<u16>, reason: String },
}

/// The sending half of an open socket. Sends never block the driver: a
/// transport queues the frames and writes them all before one flush.
pub trait FrameSender: MaybeSend {
    /// Writes `frames` in order, then flushes once.
    fn send(&mut self, frames: Vec<Vec<u8>>);
    /// Sends a close frame (best effort) and releases the socket.
    fn close(&mut self, code: u16, reason: &str);
}

/// An open WebSocket.
pub struct Socket {
    /// The subprotocol the engine selected (`envoy.vN`).
    pub protocol: Option<String>,
    pub sender: Box<dyn FrameSender>,
    /// Frames until `Incoming::Closed` (or the end of the stream).
    pub incoming: BoxStream<'static, Incoming>,
}

/// A platform: the only things the driver needs from the outside world.
pub trait Runtime: Clone + MaybeSend + MaybeSync + 'static {
    /// Monotonic milliseconds (any origin).
    fn now_ms(&self) -> u64;
    /// A seed for the backoff jitter.
    fn seed(&self) -> u64;
    /// Completes after `ms` milliseconds.
    fn sleep(&self, ms: u64) -> BoxFuture<'static, ()>;
    /// Runs a future in the background.
    fn spawn(&self, fut: BoxFuture<'static, ()>);
    /// Opens a WebSocket to `url` offering `protocols`.
    fn connect(&self, url: String, protocols: Vec<String>) -> BoxFuture<'static, Result<Socket, ConnectFailure>>;
}

/// Boxes a future with the platform's `Send`-ness.
pub fn boxed<'a, F: Future + MaybeSend + 'a>(f: F) -> BoxFuture<'a, F::Output> {
    let b: Pin<Box<F>> = Box::pin(f);
    b
}
