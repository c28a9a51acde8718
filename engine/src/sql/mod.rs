//! Remote SQL: per-(actor, generation) executors, routing, sandbox, values.

pub mod batch;
pub mod cost;
pub mod executor;
pub mod group;
pub mod keys;
pub mod open_dbs;
pub mod route;
pub mod sandbox;
pub mod stream;
pub mod v5;
pub mod values;
