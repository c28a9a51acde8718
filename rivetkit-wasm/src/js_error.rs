//! Turns an [`ErrorInfo`] into the JS `Error` the glue rejects with: `message`, `envoyCode`,
//! `group`, and each structured field as a property. `js/errors.ts` rethrows it as the
//! matching `EnvoyError` subclass.

use crate::error::{ErrorInfo, Field};
use crate::js_convert::set;
use crate::value::{ValueError, MAX_SAFE_INTEGER};
use js_sys::{BigInt, Object};
use wasm_bindgen::JsValue;

/// A u64 as JS sees it: a number when exact, else a bigint.
pub fn u64_to_js(v: u64) -> JsValue {
    if v <= MAX_SAFE_INTEGER as u64 {
        JsValue::from_f64(v as f64)
    } else {
        BigInt::from(v).into()
    }
}

fn field_to_js(f: &Field) -> JsValue {
    match f {
        Field::Bool(b) => JsValue::from_bool(*b),
        Field::U64(v) => u64_to_js(*v),
        Field::I64(v) => JsValue::from_f64(*v as f64),
        Field::Str(s) => JsValue::from_str(s),
        Field::Limit { kind, max, actual } => {
            let o = Object::new();
            set(&o, "kind", JsValue::from_str(kind));
            set(&o, "max", u64_to_js(*max));
            if let Some(a) = actual {
                set(&o, "actual", u64_to_js(*a));
            }
            o.into()
        }
    }
}

/// The JS error for `info`.
pub fn to_js(info: &ErrorInfo) -> JsValue {
    let e = js_sys::Error::new(&info.message);
    e.set_name("EnvoyError");
    set(&e, "envoyCode", JsValue::from_str(&info.code));
    set(&e, "group", JsValue::from_str(info.group.as_str()));
    for (name, value) in &info.fields {
        set(&e, name, field_to_js(value));
    }
    e.into()
}

/// The JS error for a client error.
pub fn client(e: &envoy_client::Error) -> JsValue {
    to_js(&ErrorInfo::from(e))
}

/// The JS error for a refused JS value.
pub fn value(e: &ValueError) -> JsValue {
    to_js(&ErrorInfo::from(e))
}
