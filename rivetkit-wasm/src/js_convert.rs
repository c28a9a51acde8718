//! The thin JS side of value conversion: classify a `JsValue` into a [`JsParam`], and turn a
//! [`JsOut`] into a `JsValue`. The rules themselves live in [`crate::value`].

use crate::value::{self, IntegerMode, JsOut, JsParam, ValueError};
use envoy_protocol::Value;
use js_sys::{Array, ArrayBuffer, BigInt, JsString, Object, Reflect, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};

/// Classifies one JS value (one type check each; copies bytes and strings out of JS).
pub fn classify(v: &JsValue) -> JsParam {
    if v.is_null() {
        JsParam::Null
    } else if v.is_undefined() {
        JsParam::Undefined
    } else if let Some(n) = v.as_f64() {
        JsParam::Number(n)
    } else if v.is_string() {
        let js: &JsString = v.unchecked_ref();
        match js.is_valid_utf16() {
            true => JsParam::String(String::from(js)),
            false => JsParam::InvalidString,
        }
    } else if let Some(b) = v.as_bool() {
        JsParam::Boolean(b)
    } else if v.is_bigint() {
        let big: BigInt = v.clone().unchecked_into();
        match i64::try_from(big.clone()) {
            Ok(i) => JsParam::BigInt(Ok(i)),
            Err(_) => JsParam::BigInt(Err(big.to_string(10).map(String::from).unwrap_or_default())),
        }
    } else if let Some(u8a) = v.dyn_ref::<Uint8Array>() {
        JsParam::Bytes(u8a.to_vec())
    } else if let Some(buf) = v.dyn_ref::<ArrayBuffer>() {
        JsParam::Bytes(Uint8Array::new(buf).to_vec())
    } else if ArrayBuffer::is_view(v) {
        // Any other typed array or DataView: its bytes, as stored.
        let view: &Object = v.unchecked_ref();
        let num = |k: &str| Reflect::get(view, &k.into()).ok().and_then(|x| x.as_f64()).unwrap_or(0.0) as u32;
        match Reflect::get(view, &"buffer".into()) {
            Ok(buffer) => JsParam::Bytes(
                Uint8Array::new_with_byte_offset_and_length(&buffer, num("byteOffset"), num("byteLength")).to_vec(),
            ),
            Err(_) => JsParam::Other(type_name(v)),
        }
    } else {
        JsParam::Other(type_name(v))
    }
}

/// A readable JS type name for errors: the constructor name for objects (`Date`, `Array`,
/// `Object`), else `typeof`.
fn type_name(v: &JsValue) -> String {
    if v.is_object() {
        let ctor = Reflect::get(v, &"constructor".into()).ok();
        if let Some(name) = ctor.and_then(|c| Reflect::get(&c, &"name".into()).ok()).and_then(|n| n.as_string()) {
            if !name.is_empty() {
                return name;
            }
        }
        return "object".into();
    }
    v.js_typeof().as_string().unwrap_or_else(|| "unknown".into())
}

/// Converts a JS params array (or `undefined`/`null` for none).
pub fn params(v: &JsValue) -> Result<Option<Vec<Value>>, ValueError> {
    if v.is_undefined() || v.is_null() {
        return Ok(None);
    }
    if !Array::is_array(v) {
        return Err(ValueError {
            index: None,
            kind: value::ValueErrorKind::InvalidOption {
                option: "params",
                got: format!("{} (not an array)", type_name(v)),
            },
        });
    }
    let arr: &Array = v.unchecked_ref();
    value::params_to_values(arr.iter().map(|x| classify(&x))).map(Some)
}

/// Converts a KV key or value (string → UTF-8, or bytes).
pub fn bytes(v: &JsValue) -> Result<Vec<u8>, ValueError> {
    value::param_to_bytes(classify(v))
}

/// Converts one result value.
pub fn out(v: &Value, mode: IntegerMode) -> JsValue {
    match value::value_to_out(v, mode) {
        JsOut::Null => JsValue::NULL,
        JsOut::Number(n) => JsValue::from_f64(n),
        JsOut::BigInt(i) => BigInt::from(i).into(),
        JsOut::Text(s) => JsValue::from_str(s),
        JsOut::Blob(b) => Uint8Array::from(b).into(),
    }
}

/// Converts rows to an array of arrays.
pub fn rows(rows: &[Vec<Value>], mode: IntegerMode) -> Array {
    rows.iter().map(|row| row.iter().map(|v| out(v, mode)).collect::<Array>()).collect()
}

/// Converts column names to an array of strings.
pub fn strings(items: &[String]) -> Array {
    items.iter().map(|s| JsValue::from_str(s)).collect()
}

/// Sets `obj[key] = value` on a fresh plain object (cannot fail).
pub fn set(obj: &Object, key: &str, value: impl Into<JsValue>) {
    let _ = Reflect::set(obj, &JsValue::from_str(key), &value.into());
}

/// Reads an optional property of an options object.
pub fn get(obj: &JsValue, key: &str) -> Option<JsValue> {
    if !obj.is_object() {
        return None;
    }
    Reflect::get(obj, &JsValue::from_str(key)).ok().filter(|v| !v.is_undefined() && !v.is_null())
}
