//! Wasm transport: `web_sys::WebSocket` (binaryType arraybuffer), callbacks
//! feeding channels, `setTimeout` sleeps (gloo-timers), `spawn_local`. Nothing
//! here is `Send`; no tokio runtime.
//!
//! A browser/worker WebSocket does not expose the HTTP status of a refused
//! upgrade, so a 426 (no common version) or 401 looks like any failed connect
//! here and is retried with backoff.

use crate::core::ConnectFailure;
use crate::runtime::{BoxFuture, FrameSender, Incoming, Runtime, Socket};
use futures_channel::{mpsc, oneshot};
use js_sys::{Array, ArrayBuffer, Uint8Array};
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{BinaryType, CloseEvent, Event, MessageEvent, WebSocket};

/// The JS host's event loop.
#[derive(Clone, Debug, Default)]
pub struct WasmRuntime {
    _private: (),
}

impl WasmRuntime {
    pub fn new() -> Self {
        WasmRuntime { _private: () }
    }
}

impl Runtime for WasmRuntime {
    fn now_ms(&self) -> u64 {
        // Date.now() exists in every host (performance.now() does not in all workers).
        js_sys::Date::now() as u64
    }

    fn seed(&self) -> u64 {
        let hi = (js_sys::Math::random() * 4_294_967_296.0) as u64;
        let lo = (js_sys::Math::random() * 4_294_967_296.0) as u64;
        (hi << 32) ^ lo ^ (js_sys::Date::now() as u64)
    }

    fn sleep(&self, ms: u64) -> BoxFuture<'static, ()> {
        let ms = ms.min(u64::from(u32::MAX)) as u32;
        Box::pin(gloo_timers::future::TimeoutFuture::new(ms))
    }

    fn spawn(&self, fut: BoxFuture<'static, ()>) {
        wasm_bindgen_futures::spawn_local(fut);
    }

    fn connect(&self, url: String, protocols: Vec<String>) -> BoxFuture<'static, Result<Socket, ConnectFailure>> {
        Box::pin(connect(url, protocols))
    }
}

/// The JS callbacks of one socket; kept alive as long as the socket is used.
struct Callbacks {
    _open: Closure<dyn FnMut(Event)>,
    _message: Closure<dyn FnMut(MessageEvent)>,
    _close: Closure<dyn FnMut(CloseEvent)>,
    _error: Closure<dyn FnMut(Event)>,
}

async fn connect(url: String, protocols: Vec<String>) -> Result<Socket, ConnectFailure> {
    let offer = Array::new();
    for p in &protocols {
        offer.push(&JsValue::from_str(p));
    }
    let ws = WebSocket::new_with_str_sequence(&url, &offer).map_err(|e| ConnectFailure::Other(js_error(&e)))?;
    ws.set_binary_type(BinaryType::Arraybuffer);

    let (open_tx, open_rx) = oneshot::channel::<Result<(), String>>();
    let open_tx = Rc::new(RefCell::new(Some(open_tx)));
    let (in_tx, in_rx) = mpsc::unbounded::<Incoming>();

    let open = {
        let open_tx = open_tx.clone();
        Closure::<dyn FnMut(Event)>::new(move |_e: Event| {
            if let Some(tx) = open_tx.borrow_mut().take() {
                let _ = tx.send(Ok(()));
            }
        })
    };
    let message = {
        let in_tx = in_tx.clone();
        Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
            if let Ok(buf) = e.data().dyn_into::<ArrayBuffer>() {
                let _ = in_tx.unbounded_send(Incoming::Frame(Uint8Array::new(&buf).to_vec()));
            }
        })
    };
    let close = {
        let in_tx = in_tx.clone();
        let open_tx = open_tx.clone();
        Closure::<dyn FnMut(CloseEvent)>::new(move |e: CloseEvent| {
            if let Some(tx) = open_tx.borrow_mut().take() {
                let _ = tx.send(Err(format!("closed before open (code {}): {}", e.code(), e.reason())));
            }
            // 1005/1006 mean "no close frame": the socket just died.
            let code = match e.code() {
                1005 | 1006 => None,
                c => Some(c),
            };
            let _ = in_tx.unbounded_send(Incoming::Closed { code, reason: e.reason() });
            in_tx.close_channel();
        })
    };
    let error = {
        let open_tx = open_tx.clone();
        Closure::<dyn FnMut(Event)>::new(move |_e: Event| {
            if let Some(tx) = open_tx.borrow_mut().take() {
                let _ = tx.send(Err("WebSocket error before open".into()));
            }
        })
    };
    ws.set_onopen(Some(open.as_ref().unchecked_ref()));
    ws.set_onmessage(Some(message.as_ref().unchecked_ref()));
    ws.set_onclose(Some(close.as_ref().unchecked_ref()));
    ws.set_onerror(Some(error.as_ref().unchecked_ref()));
    // The sender owns the callbacks from here on: if this future is dropped
    // while the upgrade is pending (a connect deadline), dropping the sender
    // detaches them from the socket before they are freed, so the socket's
    // late error/close events find no freed closure.
    let sender = Sender {
        ws: ws.clone(),
        _callbacks: Rc::new(Callbacks { _open: open, _message: message, _close: close, _error: error }),
    };

    match open_rx.await {
        Ok(Ok(())) => {}
        Ok(Err(msg)) => return Err(ConnectFailure::Other(msg)),
        Err(_) => return Err(ConnectFailure::Other("connect abandoned".into())),
    }
    let protocol = ws.protocol();
    let protocol = if protocol.is_empty() { None } else { Some(protocol) };
    Ok(Socket { protocol, sender: Box::new(sender), incoming: Box::pin(in_rx) })
}

fn detach(ws: &WebSocket) {
    ws.set_onopen(None);
    ws.set_onmessage(None);
    ws.set_onclose(None);
    ws.set_onerror(None);
    let _ = ws.close();
}

fn js_error(v: &JsValue) -> String {
    v.as_string().unwrap_or_else(|| format!("{v:?}"))
}

struct Sender {
    ws: WebSocket,
    /// Dropping the sender drops the callbacks (after detaching them).
    _callbacks: Rc<Callbacks>,
}

impl FrameSender for Sender {
    fn send(&mut self, frames: Vec<Vec<u8>>) {
        // WebSocket.send queues in the host; there is no flush to batch.
        for f in frames {
            if let Err(e) = self.ws.send_with_u8_array(&f) {
                tracing::warn!(error = %js_error(&e), "WebSocket send failed");
                return;
            }
        }
    }

    fn close(&mut self, code: u16, reason: &str) {
        // Browsers only allow 1000 and 3000–4999 from script.
        let code = if code == 1000 || (3000..=4999).contains(&code) { code } else { 1000 };
        let _ = self.ws.close_with_code_and_reason(code, reason);
        detach(&self.ws);
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        detach(&self.ws);
    }
}
