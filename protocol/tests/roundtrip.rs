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

/// Runs `property` over the strategy `make` builds, on a thread with a large
/// stack. The derived strategies of v5's and v6's top-level unions (19 ToEnvoy members,
/// each a struct of nested unions and lists) nest deeply enough to overflow
/// the default 2 MiB test thread in a debug build; generating values is what
/// needs the stack, not the property.
fn run_on_big_stack<S, F>(make: fn() -> S, property: F)
where
    S: Strategy + 'static,
    S::Value: std::fmt::Debug,
    F: Fn(S::Value) -> Result<(), TestCaseError> + Send + 'static,
{
    std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(move || {
            let mut runner = proptest::test_runner::TestRunner::new(config());
            if let Err(e) = runner.run(&make(), property) {
                panic!("{e}");
            }
        })
        .unwrap()
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e));
}

macro_rules! version_properties {
    ($module:ident, $v:ident, $n:expr) => {
        mod $module {
            use super::*;
            use envoy_protocol::$v;

            #[test]
            fn to_engine_roundtrips() {
                run_on_big_stack(any::<$v::ToEngine>, |x| {
                    let bytes = x.to_bytes();
                    let back = decode_frame::<$v::ToEngine>(&bytes, usize::MAX, usize::MAX).unwrap();
                    prop_assert_eq!(back.to_bytes(), bytes.clone(), "generated types");
                    prop_assert_eq!(serde_bare::to_vec(&x).unwrap(), bytes.clone(), "serde_bare");
                    let latest = decode_to_engine(&bytes, $n, &common::limits()).unwrap();
                    prop_assert_eq!(encode_to_engine(&latest, $n).unwrap(), bytes, "versioned API");
                    Ok(())
                });
            }

            #[test]
            fn to_envoy_roundtrips() {
                run_on_big_stack(any::<$v::ToEnvoy>, |x| {
                    let bytes = x.to_bytes();
                    let back = decode_frame::<$v::ToEnvoy>(&bytes, usize::MAX, usize::MAX).unwrap();
                    prop_assert_eq!(back.to_bytes(), bytes.clone(), "generated types");
                    prop_assert_eq!(serde_bare::to_vec(&x).unwrap(), bytes.clone(), "serde_bare");
                    let latest = decode_to_envoy(&bytes, $n, &common::limits()).unwrap();
                    prop_assert_eq!(encode_to_envoy(&latest, $n).unwrap(), bytes, "versioned API");
                    Ok(())
                });
            }
        }
    };
}

version_properties!(v1_messages, v1, 1);
version_properties!(v2_messages, v2, 2);
version_properties!(v3_messages, v3, 3);
version_properties!(v4_messages, v4, 4);
version_properties!(v5_messages, v5, 5);
version_properties!(v6_messages, v6, 6);

/// `decode_to_envoy` reads a v5 frame with v6's types (v6 only appended enum
/// values; their decoders refuse those at v5). On the bytes of any v6 message
/// it agrees with v5's own generated decoder: the same message where that
/// decodes it, the same error (a v6 value, and where) where it does not.
#[test]
fn reading_at_v5_with_v6_types_agrees_with_the_v5_decoder() {
    run_on_big_stack(any::<v6::ToEnvoy>, |msg| {
        let bytes = msg.to_bytes();
        let own = decode_frame::<v5::ToEnvoy>(&bytes, usize::MAX, usize::MAX);
        match (own, decode_to_envoy(&bytes, 5, &common::limits())) {
            (Ok(m), Ok(latest)) => {
                prop_assert_eq!(m.to_bytes(), bytes.clone());
                prop_assert_eq!(encode_to_envoy(&latest, 5).unwrap(), bytes);
            }
            (Err(e), Err(ProtocolDecodeError::Malformed { version: 5, source, .. })) => {
                prop_assert!(matches!(e.kind, DecodeErrorKind::UnknownEnumValue { .. }), "{}", e);
                prop_assert_eq!(e, source);
            }
            (own, read) => prop_assert!(false, "v5 decoder: {:?}; read at v5: {:?}", own.err(), read.err()),
        }
        Ok(())
    });
}

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

#[test]
fn latest_to_engine_at_every_version() {
    run_on_big_stack(any::<ToEngine>, |msg| {
        prop_assert_eq!(encode_to_engine(&msg, PROTOCOL_VERSION).unwrap(), msg.to_bytes());
        for v in common::VERSIONS {
            check_versioned(&msg, v, Direction::ToEngine, encode_to_engine, decode_to_engine)?;
        }
        Ok(())
    });
}

#[test]
fn latest_to_envoy_at_every_version() {
    run_on_big_stack(any::<ToEnvoy>, |msg| {
        prop_assert_eq!(encode_to_envoy(&msg, PROTOCOL_VERSION).unwrap(), msg.to_bytes());
        for v in common::VERSIONS {
            check_versioned(&msg, v, Direction::ToEnvoy, encode_to_envoy, decode_to_envoy)?;
        }
        Ok(())
    });
}

proptest! {
    #![proptest_config(config())]

    /// Inner types on their own, where serde_bare's reading of a type matters most.
    #[test]
    fn values_match_serde_bare(x in any::<Value>(), r in any::<SqliteExecuteResult>(), q in any::<KvQuery>(),
                               b in any::<SqliteBatchResult>(), f in any::<SqliteFailure>(), m in any::<ProtocolMetadataV5>()) {
        prop_assert_eq!(serde_bare::to_vec(&b).unwrap(), b.to_bytes());
        prop_assert_eq!(serde_bare::to_vec(&f).unwrap(), f.to_bytes());
        prop_assert_eq!(serde_bare::to_vec(&m).unwrap(), m.to_bytes());
        prop_assert_eq!(serde_bare::to_vec(&x).unwrap(), x.to_bytes());
        prop_assert_eq!(serde_bare::to_vec(&r).unwrap(), r.to_bytes());
        prop_assert_eq!(serde_bare::to_vec(&q).unwrap(), q.to_bytes());
        let back: Value = serde_bare::from_slice(&x.to_bytes()).unwrap();
        prop_assert_eq!(back.to_bytes(), x.to_bytes());
    }
}
