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

    /// Wall-clock Unix time in milliseconds: the first six bytes of a v5
    /// request key (the engine expires keys by it). Unlike `now_ms` this must
    /// be the real time. The default reads the platform clock.
    fn unix_time_ms(&self) -> u64 {
        platform::unix_time_ms()
    }

    /// Fills `buf` with random bytes: the last ten bytes of a v5 request key,
    /// which must not repeat across clients. The default uses the operating
    /// system's generator natively and `Math.random` on wasm.
    fn fill_random(&self, buf: &mut [u8]) {
        platform::fill_random(buf)
    }
}

/// A request key made now from the runtime's clock and random source.
pub(crate) fn make_request_key<R: Runtime>(rt: &R) -> crate::core::RequestKey {
    let mut random = [0u8; crate::core::keys::REQUEST_KEY_RANDOM_BYTES];
    rt.fill_random(&mut random);
    crate::core::RequestKey::new(rt.unix_time_ms(), random)
}

#[cfg(feature = "native-transport")]
mod platform {
    pub fn unix_time_ms() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
    }

    pub fn fill_random(buf: &mut [u8]) {
        if let Err(e) = getrandom::fill(buf) {
            // No OS generator (exotic platforms): a hash of the time and a
            // process-wide counter, keyed by std's per-process random keys.
            tracing::warn!(error = %e, "no OS random source; request keys use a weaker source");
            use std::hash::{BuildHasher, Hasher};
            static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let state = std::collections::hash_map::RandomState::new();
            for chunk in buf.chunks_mut(8) {
                let mut h = state.build_hasher();
                h.write_u64(COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
                h.write_u128(
                    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()),
                );
                chunk.copy_from_slice(&h.finish().to_le_bytes()[..chunk.len()]);
            }
        }
    }
}

#[cfg(all(feature = "wasm-transport", not(feature = "native-transport")))]
mod platform {
    pub fn unix_time_ms() -> u64 {
        js_sys::Date::now() as u64
    }

    pub fn fill_random(buf: &mut [u8]) {
        // What the SDK already uses for randomness on wasm (no extra dependency).
        for b in buf.iter_mut() {
            *b = (js_sys::Math::random() * 256.0) as u8;
        }
    }
}

/// Boxes a future with the platform's `Send`-ness.
pub fn boxed<'a, F: Future + MaybeSend + 'a>(f: F) -> BoxFuture<'a, F::Output> {
    let b: Pin<Box<F>> = Box::pin(f);
    b
}
