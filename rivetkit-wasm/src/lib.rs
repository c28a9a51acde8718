//! rivetkit-wasm: the envoy client (`envoy-client`, wasm transport) as a JS package.
//!
//! Layers, outermost first:
//! - `js/*.ts` (compiled into each `pkg/<target>/`): the typed public API (`Envoy`, `Actor`,
//!   `Db`, `Kv`, `EnvoyError` and subclasses) over the wasm-bindgen classes;
//! - `envoy` / `actor` (wasm32 only): the wasm-bindgen classes `RawEnvoy` / `RawActor`, which
//!   drive `envoy_client` and return Promises;
//! - `js_convert`, `js_error`, `options` (wasm32 only): apply the rules below to `JsValue`s;
//! - [`value`] and [`error`]: the JS ⇄ Rust rules as plain Rust, unit-tested natively.

pub mod error;
pub mod value;

#[cfg(target_arch = "wasm32")]
mod alloc;
#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: alloc::SizeClasses = alloc::SizeClasses::new();

#[cfg(target_arch = "wasm32")]
mod actor;
#[cfg(target_arch = "wasm32")]
mod envoy;
#[cfg(target_arch = "wasm32")]
pub mod js_convert;
#[cfg(target_arch = "wasm32")]
mod js_error;
#[cfg(target_arch = "wasm32")]
mod options;
#[cfg(target_arch = "wasm32")]
mod promise;
// Protocol v5 (batch, interactive transactions, result streams, cost).
#[cfg(target_arch = "wasm32")]
mod batch;
#[cfg(target_arch = "wasm32")]
mod outcome;
#[cfg(target_arch = "wasm32")]
mod stream;
#[cfg(target_arch = "wasm32")]
mod transaction;

#[cfg(target_arch = "wasm32")]
pub use actor::RawActor;
#[cfg(target_arch = "wasm32")]
pub use envoy::RawEnvoy;
