//! Remote SQL: per-(actor, generation) executors, routing, sandbox, values.

pub mod cost;
pub mod executor;
pub mod group;
pub mod open_dbs;
pub mod route;
pub mod sandbox;
pub mod stream;
pub mod values;
