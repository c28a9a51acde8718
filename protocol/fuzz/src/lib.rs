//! The check every fuzz target runs on its input, at its protocol version.

use envoy_protocol::{decode_to_engine, decode_to_envoy, encode_to_engine, encode_to_envoy, DecodeLimits};

/// Frames larger than this are rejected before decoding, as on a real
/// connection; small enough that libFuzzer explores structure, not size.
pub const FUZZ_MAX_FRAME_BYTES: usize = 64 * 1024;

/// Feeds `data` to both decoders at `version`. A decoder must return `Ok` or a
/// typed error and never panic; on `Ok`, the message must encode at the same
/// version, and those bytes must decode and re-encode to themselves (bytes are
/// compared, so NaN payloads count). The input itself may differ from the
/// re-encoding only in the order of map keys, which decoding sorts.
pub fn check(data: &[u8], version: u16) {
    let limits = DecodeLimits::for_frame(FUZZ_MAX_FRAME_BYTES);
    match decode_to_engine(data, version, &limits) {
        Ok(msg) => {
            let bytes = encode_to_engine(&msg, version).expect("a decoded ToEngine encodes at its own version");
            assert_eq!(bytes.len(), data.len(), "re-encoding changed the frame length");
            let again = decode_to_engine(&bytes, version, &limits).expect("re-encoded ToEngine decodes");
            assert_eq!(encode_to_engine(&again, version).unwrap(), bytes, "ToEngine is not stable");
        }
        Err(e) => drop(e.to_string()),
    }
    match decode_to_envoy(data, version, &limits) {
        Ok(msg) => {
            let bytes = encode_to_envoy(&msg, version).expect("a decoded ToEnvoy encodes at its own version");
            assert_eq!(bytes.len(), data.len(), "re-encoding changed the frame length");
            let again = decode_to_envoy(&bytes, version, &limits).expect("re-encoded ToEnvoy decodes");
            assert_eq!(encode_to_envoy(&again, version).unwrap(), bytes, "ToEnvoy is not stable");
        }
        Err(e) => drop(e.to_string()),
    }
}
