//! Decoders at protocol v6: never panic; what decodes re-encodes stably.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| envoy_protocol_fuzz::check(data, 6));
