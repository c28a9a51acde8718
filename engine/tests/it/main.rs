//! Engine integration tests over a raw protocol client (see `support`).

#[allow(dead_code)]
mod support;

mod connect;
mod drain;
mod kv;
mod lifecycle;
mod resume;
mod sql;
mod operators;
mod hostile_res;
