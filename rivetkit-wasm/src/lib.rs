//! rivetkit-wasm
