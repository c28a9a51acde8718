//! Remote SQL: per-(actor, generation) executors, routing, sandbox, values.

pub(crate) mod batch;
pub(crate) mod cost;
pub(crate) mod executor;
pub(crate) mod group;
pub(crate) mod keys;
pub(crate) mod open_dbs;
pub(crate) mod route;
pub mod sandbox;
pub(crate) mod stream;
pub(crate) mod transaction;
pub(crate) mod v5;
pub(crate) mod values;
