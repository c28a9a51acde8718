//! Engine integration tests over a raw protocol client (see `support`).

#[allow(dead_code)]
mod support;

mod backup;
mod config_file;
mod connect;
mod drain;
mod exactness;
mod fuzz_frames;
mod group_commit;
mod hostile_net;
mod hostile_res;
mod hostile_sql;
mod inspect;
mod kv;
mod lifecycle;
mod metrics;
mod operators;
mod resume;
mod sql;
mod transactions;
mod v5_batch;
mod v5_keys;
mod v5_streams;
mod v5_transactions;
