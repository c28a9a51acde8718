//! Client futures as JS Promises through one code path: every call boxes its future as
//! `dyn Future<Output = Result<JsValue, JsValue>>` and hands it to one instantiation of
//! `future_to_promise`, instead of one copy of the Promise/task glue per call (size, specs/wasm.md).

use js_sys::Promise;
use std::future::Future;
use std::pin::Pin;
use wasm_bindgen::JsValue;

/// What every Promise-returning call runs: resolves with `Ok`, rejects with `Err`.
pub type JsFuture = Pin<Box<dyn Future<Output = Result<JsValue, JsValue>>>>;

/// `f` as a Promise (the only `future_to_promise` of the package).
#[inline(never)]
pub fn boxed(f: JsFuture) -> Promise {
    wasm_bindgen_futures::future_to_promise(f)
}

/// `f` as a Promise: boxes it and goes through [`boxed`].
#[inline(always)]
pub fn promise(f: impl Future<Output = Result<JsValue, JsValue>> + 'static) -> Promise {
    boxed(Box::pin(f))
}
