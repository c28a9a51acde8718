//! Property tests over the generated `Arbitrary` strategies:
//!
//! - every top-level message of every version encodes → decodes → re-encodes
//!   to identical bytes (bytes are compared, so NaN payloads count);
//! - our codec writes exactly what serde_bare (an independent BARE
//!   implementation) writes for the same value;
//! - a version's message read through the versioned API (upgraded to the
//!   latest types) and written back at that version gives the same bytes;
//! - a random latest message either encodes at a version and reads back to the
//!   same bytes, or fails with a compatibility error naming a newer version.

mod common;

use envoy_protocol::bare::{decode_frame, Encode};
use envoy_protocol::*;
use proptest::prelude::*;

/// Modest case counts keep the suite fast on two cores.
fn config() -> ProptestConfig {
    ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() }
}

macro_rules! version_properties {
    ($module:ident, $v:ident, $n:expr) => {
        mod $module {
            use super::*;
            use envoy_protocol::$v;

            proptest! {
                #![proptest_config(config())]

                #[test]
                fn to_engine_roundtrips(x in any::<$v::ToEngine>()) {
                    let bytes = x.to_bytes();
                    let back = decode_frame::<$v::ToEngine>(&bytes, usize::MAX, usize::MAX).unwrap();
                    prop_assert_eq!(back.to_bytes(), bytes.clone(), "generated types");
                    prop_assert_eq!(serde_bare::to_vec(&x).unwrap(), bytes.clone(), "serde_bare");
                    let latest = decode_to_engine(&bytes, $n, &common::limits()).unwrap();
                    prop_assert_eq!(encode_to_engine(&latest, $n).unwrap(), bytes, "versioned API");
                }

                #[test]
                fn to_envoy_roundtrips(x in any::<$v::ToEnvoy>()) {
                    let bytes = x.to_bytes();
                    let back = decode_frame::<$v::ToEnvoy>(&bytes, usize::MAX, usize::MAX).unwrap();
                    prop_assert_eq!(back.to_bytes(), bytes.clone(), "generated types");
                    prop_assert_eq!(serde_bare::to_vec(&x).unwrap(), bytes.clone(), "serde_bare");
                    let latest = decode_to_envoy(&bytes, $n, &common::limits()).unwrap();
                    prop_assert_eq!(encode_to_envoy(&latest, $n).unwrap(), bytes, "versioned API");
                }
            }
        }
    };
}

version_properties!(v1_messages, v1, 1);
version_properties!(v2_messages, v2, 2);
version_properties!(v3_messages, v3, 3);
version_properties!(v4_messages, v4, 4);

/// What the versioned API must do with a latest message at version `v`.
fn check_versioned<T>(
    msg: &T,
    v: u16,
    direction: Direction,
    encode: fn(&T, u16) -> Result<Vec<u8>, EncodeError>,
    decode: fn(&[u8], u16, &DecodeLimits) -> Result<T, ProtocolDecodeError>,
) -> Result<(), TestCaseError> {
    match encode(msg, v) {
        Ok(bytes) => {
            let back = decode(&bytes, v, &common::limits()).unwrap();
            prop_assert_eq!(encode(&back, v).unwrap(), bytes);
        }
        Err(EncodeError::Compatibility(e)) => {
            prop_assert!(e.required_version > v, "{e}");
            prop_assert_eq!(e.target_version, v);
            prop_assert_eq!(e.direction, direction);
            prop_assert_eq!(e.required_version, e.feature.required_version());
        }
        Err(e) => prop_assert!(false, "unexpected {e}"),
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn latest_to_engine_at_every_version(msg in any::<ToEngine>()) {
        prop_assert_eq!(encode_to_engine(&msg, PROTOCOL_VERSION).unwrap(), msg.to_bytes());
        for v in common::VERSIONS {
            check_versioned(&msg, v, Direction::ToEngine, encode_to_engine, decode_to_engine)?;
        }
    }

    #[test]
    fn latest_to_envoy_at_every_version(msg in any::<ToEnvoy>()) {
        prop_assert_eq!(encode_to_envoy(&msg, PROTOCOL_VERSION).unwrap(), msg.to_bytes());
        for v in common::VERSIONS {
            check_versioned(&msg, v, Direction::ToEnvoy, encode_to_envoy, decode_to_envoy)?;
        }
    }

    /// Inner types on their own, where serde_bare's reading of a type matters most.
    #[test]
    fn values_match_serde_bare(x in any::<Value>(), r in any::<SqliteExecuteResult>(), q in any::<KvQuery>()) {
        prop_assert_eq!(serde_bare::to_vec(&x).unwrap(), x.to_bytes());
        prop_assert_eq!(serde_bare::to_vec(&r).unwrap(), r.to_bytes());
        prop_assert_eq!(serde_bare::to_vec(&q).unwrap(), q.to_bytes());
        let back: Value = serde_bare::from_slice(&x.to_bytes()).unwrap();
        prop_assert_eq!(back.to_bytes(), x.to_bytes());
    }
}
