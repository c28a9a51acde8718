//! `RawActor.stream` → `RawRowStream`: the rows of one read-only statement as they come
//! (protocol v5, `Db::stream`). The client grants the engine a window of credit and returns it
//! only for rows taken, so memory stays bounded by the window plus one chunk handed to JS.
//! `close()` (the JS iterator's `return()`) drops the `RowStream`, which cancels it in the engine.

use crate::actor::RawActor;
use crate::js_convert::{self, set};
use crate::js_error;
use crate::options;
use crate::promise::promise;
use crate::value::IntegerMode;
use envoy_client::{Error, Params, RowStream, SqlCost};
use js_sys::{Array, Object, Promise};
use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use wasm_bindgen::prelude::*;

/// Where a stream is, shared with the `next()` in flight.
#[derive(Default)]
struct State {
    /// The stream, while it is open and no `next()` holds it.
    stream: Option<RowStream>,
    /// Column names, once the first rows arrived.
    columns: Option<Array>,
    /// The whole stream's cost, once it ended.
    cost: Option<SqlCost>,
    /// An error that came after rows already handed out: the next `next()` rejects with it.
    pending_error: Option<Error>,
    /// Ended, failed or closed: `next()` resolves to null.
    done: bool,
}

/// An open result stream (`RowStream` in the public API wraps it).
#[wasm_bindgen]
pub struct RawRowStream {
    state: Rc<RefCell<State>>,
    integers: IntegerMode,
}

#[wasm_bindgen]
impl RawActor {
    /// `{ integers?, creditBytes? }` → `RawRowStream` (synchronously: errors come from `next()`).
    pub fn stream(&self, sql: String, params: JsValue, options: JsValue) -> Result<RawRowStream, JsValue> {
        let (db, integers) = self.db_with_mode(&options)?;
        let params = js_convert::params(&params).map_err(|e| js_error::value(&e))?;
        let db = match options::positive_u32(&options, "creditBytes").map_err(|e| js_error::value(&e))? {
            Some(bytes) => db.with_stream_credit(bytes),
            None => db,
        };
        let stream = db.stream(&sql, Params(params));
        let state = State { stream: Some(stream), ..State::default() };
        Ok(RawRowStream { state: Rc::new(RefCell::new(state)), integers })
    }
}

/// One poll of `stream.next()` without waiting: `None` when no row is ready yet.
fn ready_now(stream: &mut RowStream) -> Option<Option<envoy_client::Result<envoy_client::OwnedRow>>> {
    let mut cx = Context::from_waker(Waker::noop());
    let mut next = std::pin::pin!(stream.next());
    match next.as_mut().poll(&mut cx) {
        Poll::Ready(item) => Some(item),
        Poll::Pending => None,
    }
}

#[wasm_bindgen]
impl RawRowStream {
    /// The next rows: waits for one, then takes up to `max_rows` that are already here →
    /// `{ columns, rows }` (rows as arrays), or null after the last row.
    #[wasm_bindgen(unchecked_return_type = "Promise<any>")]
    pub fn next(&self, max_rows: u32) -> Promise {
        let state = self.state.clone();
        let integers = self.integers;
        promise(async move {
            let taken = {
                let mut s = state.borrow_mut();
                if let Some(e) = s.pending_error.take() {
                    return Err(js_error::client(&e));
                }
                if s.done {
                    return Ok(JsValue::NULL);
                }
                s.stream.take()
            };
            let Some(mut stream) = taken else {
                return Err(js_error::to_js(&crate::error::ErrorInfo {
                    code: "CONCURRENT_NEXT".into(),
                    group: crate::error::Group::Value,
                    message: "next() was called while another next() of this stream was pending".into(),
                    fields: Vec::new(),
                }));
            };
            let mut rows: Vec<Vec<envoy_client::Value>> = Vec::new();
            let mut item = stream.next().await;
            let mut end: Option<Option<Error>> = None;
            loop {
                match item {
                    Some(Ok(row)) => rows.push(row.into_values()),
                    Some(Err(e)) => {
                        end = Some(Some(e));
                        break;
                    }
                    None => {
                        end = Some(None);
                        break;
                    }
                }
                if rows.len() >= max_rows.max(1) as usize {
                    break;
                }
                match ready_now(&mut stream) {
                    Some(next) => item = next,
                    None => break,
                }
            }
            let mut s = state.borrow_mut();
            if s.columns.is_none() && !stream.columns().is_empty() {
                s.columns = Some(js_convert::strings(stream.columns()));
            }
            match end {
                None if !s.done => s.stream = Some(stream), // not closed meanwhile: keep it
                None => {}
                Some(error) => {
                    s.done = true;
                    s.cost = stream.cost();
                    match error {
                        Some(e) if rows.is_empty() => return Err(js_error::client(&e)),
                        Some(e) => s.pending_error = Some(e),
                        None => {}
                    }
                }
            }
            if rows.is_empty() {
                return Ok(JsValue::NULL);
            }
            let o = Object::new();
            set(&o, "columns", s.columns.clone().map(JsValue::from).unwrap_or_else(|| Array::new().into()));
            set(&o, "rows", js_convert::rows(&rows, integers));
            Ok(o.into())
        })
    }

    /// Cancels the stream in the engine if it has not ended (idempotent).
    pub fn close(&self) {
        let mut s = self.state.borrow_mut();
        s.done = true;
        s.pending_error = None;
        s.stream = None; // dropping an unfinished RowStream sends its cancel
    }

    /// `{ rowsRead, rowsWritten, durationUs }` once the stream ended (null before, and below v5).
    #[wasm_bindgen(getter, unchecked_return_type = "any")]
    pub fn cost(&self) -> JsValue {
        crate::outcome::cost(self.state.borrow().cost.clone())
    }
}
