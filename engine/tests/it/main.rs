//! Engine integration tests over a raw protocol client (see `support`).

#[allow(dead_code)]
mod support;

mod backup;
mod connect;
mod drain;
mod hostile_net;
mod kv;
mod lifecycle;
mod resume;
mod exactness;
mod fuzz_frames;
mod group_commit;
mod hostile_sql;
mod inspect;
mod sql;
mod transactions;
mod operators;
mod hostile_res;
mod config_file;
mod metrics;
