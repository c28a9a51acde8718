//! Actors: the persisted registry and the lifecycle driven by envoys.

pub(crate) mod lifecycle;
pub mod registry;
