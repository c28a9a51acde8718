//! Platform transports: each implements [`crate::runtime::Runtime`] and only
//! moves bytes, sleeps and spawns.

#[cfg(feature = "native-transport")]
pub mod native;
#[cfg(all(feature = "wasm-transport", not(feature = "native-transport")))]
pub mod wasm;
