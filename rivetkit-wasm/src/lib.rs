//! rivetkit-wasm: the envoy client (`envoy-client`, wasm transport) as a JS package.
//!
//! Layers: [`value`] and `error` hold the JS ⇄ Rust rules as plain Rust (unit-tested natively);
//! [`js_convert`] applies them to `JsValue`s; the wasm-bindgen classes `RawEnvoy` / `RawActor`
//! expose the client; `js/*.ts` is the typed public API over them.

pub mod js_convert;
pub mod value;
