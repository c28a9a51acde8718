//! Actors: the persisted registry and the lifecycle driven by envoys.

pub mod lifecycle;
pub mod registry;
