//! Remote SQL: per-(actor, generation) executors, routing, sandbox, values.

pub(crate) mod executor;
pub(crate) mod group;
pub(crate) mod open_dbs;
pub(crate) mod route;
pub mod sandbox;
pub(crate) mod values;
