//! Strategies used by the generated `proptest_derive::Arbitrary` impls.

use proptest::prelude::*;

/// Any f64 bit pattern, weighted toward the values that break codecs:
/// NaN (with payloads), ±0.0, ±infinity, subnormals.
pub fn any_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<u64>().prop_map(f64::from_bits),
        Just(f64::NAN),
        Just(-0.0f64),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(f64::MIN_POSITIVE / 2.0),
        any::<f64>(),
    ]
}

pub fn any_f32() -> impl Strategy<Value = f32> {
    any::<u32>().prop_map(f32::from_bits)
}
