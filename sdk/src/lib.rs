//! envoy client
