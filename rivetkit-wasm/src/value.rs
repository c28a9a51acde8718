//! JS ⇄ SQLite value rules, as plain Rust (no `JsValue`), so they are unit-tested natively.
//!
//! The JS-facing layer ([`crate::js_convert`]) only classifies a JS value into a [`JsParam`]
//! (one `typeof`/`instanceof` check each) and turns a [`JsOut`] back into a JS value; every
//! decision — which SQLite type a JS value becomes, which JS type a result becomes, what is
//! refused — is made here.
//!
//! Parameters:
//! | JS | SQLite |
//! |---|---|
//! | `null` | NULL |
//! | `number`, a safe integer (and not `-0`) | INTEGER |
//! | any other `number` (fractions, `-0`, ±Infinity, NaN) | REAL (NaN is stored as NULL by SQLite) |
//! | `bigint` within i64 | INTEGER; outside i64 → [`ValueErrorKind::BigIntOutOfRange`] |
//! | `string` | TEXT; one with unpaired surrogates → [`ValueErrorKind::InvalidText`] (no lossy U+FFFD) |
//! | `Uint8Array` / `ArrayBuffer` (and other typed-array views) | BLOB |
//! | `boolean` | INTEGER 0/1 |
//! | `undefined` | [`ValueErrorKind::Undefined`] — never silently NULL |
//! | anything else (objects, arrays, symbols, functions, Dates) | [`ValueErrorKind::UnsupportedType`] |
//!
//! `-0` is a safe integer to `Number.isSafeInteger`, but sending it as INTEGER 0 would lose
//! its sign, and the protocol carries -0.0 exactly; so it travels as REAL.
//!
//! Results: INTEGER → `number` when it is within ±(2^53 − 1), else `bigint`
//! ([`IntegerMode::Auto`]), or always `bigint` ([`IntegerMode::BigInt`]); REAL → `number`;
//! TEXT → `string`; BLOB → `Uint8Array`; NULL → `null`.

use envoy_protocol::Value;

/// Largest integer a JS `number` holds exactly: `Number.MAX_SAFE_INTEGER` (2^53 − 1).
pub const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

/// A JS value, classified by the JS-facing layer, before the rules of this module apply.
#[derive(Debug, Clone, PartialEq)]
pub enum JsParam {
    Null,
    Undefined,
    Number(f64),
    /// A `bigint`: its value when it fits in i64, else its decimal text (kept for the error).
    BigInt(Result<i64, String>),
    String(String),
    /// A string with unpaired UTF-16 surrogates: it has no UTF-8 form, and converting it would
    /// silently replace them with U+FFFD.
    InvalidString,
    /// Bytes of a `Uint8Array`, `ArrayBuffer` or other `ArrayBufferView`.
    Bytes(Vec<u8>),
    Boolean(bool),
    /// Anything else; the string names its JS type for the error (`"object"`, `"symbol"`, `"Date"`, ...).
    Other(String),
}

/// How SQLite INTEGER results come back to JS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IntegerMode {
    /// `number` when safe (|n| ≤ 2^53 − 1), else `bigint`: the common case stays a plain number,
    /// and no large integer is ever silently rounded.
    #[default]
    Auto,
    /// Always `bigint`, for callers that want one type for every INTEGER.
    BigInt,
}

impl IntegerMode {
    /// Parses the JS option `integers: "auto" | "bigint"`.
    pub fn parse(s: &str) -> Result<IntegerMode, ValueError> {
        match s {
            "auto" => Ok(IntegerMode::Auto),
            "bigint" => Ok(IntegerMode::BigInt),
            other => Err(ValueError {
                index: None,
                kind: ValueErrorKind::InvalidOption { option: "integers", got: other.to_string() },
            }),
        }
    }
}

/// A value that cannot be sent, with where it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{kind}", index.map(|i| format!("parameter {} ", i + 1)).unwrap_or_default())]
pub struct ValueError {
    /// 0-based position in the params array, when the value was a SQL parameter: the caller
    /// needs to know which of many parameters was wrong.
    pub index: Option<usize>,
    /// What was wrong with it.
    pub kind: ValueErrorKind,
}

/// Why a JS value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueErrorKind {
    #[error("is undefined; pass null for SQL NULL")]
    Undefined,
    #[error("has unsupported type {type_name}; use null, number, bigint, string, boolean, Uint8Array or ArrayBuffer")]
    UnsupportedType { type_name: String },
    #[error("is a bigint ({value}) outside the 64-bit signed range of a SQLite INTEGER")]
    BigIntOutOfRange { value: String },
    #[error("option {option} has an invalid value {got}")]
    InvalidOption { option: &'static str, got: String },
    #[error("must be a string, Uint8Array or ArrayBuffer (got {type_name})")]
    NotBytes { type_name: String },
    #[error("is a string with unpaired UTF-16 surrogates, which has no UTF-8 (TEXT) form")]
    InvalidText,
}

impl ValueErrorKind {
    /// The stable `code` JS sees on the error.
    pub fn code(&self) -> &'static str {
        match self {
            ValueErrorKind::Undefined => "UNDEFINED_VALUE",
            ValueErrorKind::UnsupportedType { .. } => "UNSUPPORTED_VALUE_TYPE",
            ValueErrorKind::BigIntOutOfRange { .. } => "BIGINT_OUT_OF_RANGE",
            ValueErrorKind::InvalidOption { .. } => "INVALID_OPTION",
            ValueErrorKind::NotBytes { .. } => "NOT_BYTES",
            ValueErrorKind::InvalidText => "INVALID_TEXT",
        }
    }
}

/// Whether a JS number is an integer SQLite should store as INTEGER (see the module docs).
pub fn number_is_integer(n: f64) -> bool {
    n.is_finite() && n.fract() == 0.0 && n.abs() <= MAX_SAFE_INTEGER as f64 && !(n == 0.0 && n.is_sign_negative())
}

/// Applies the parameter rules to one classified JS value at `index` of the params.
pub fn param_to_value(index: Option<usize>, p: JsParam) -> Result<Value, ValueError> {
    let err = |kind| ValueError { index, kind };
    Ok(match p {
        JsParam::Null => Value::Null,
        JsParam::Undefined => return Err(err(ValueErrorKind::Undefined)),
        JsParam::Number(n) if number_is_integer(n) => Value::Integer(n as i64),
        JsParam::Number(n) => Value::Float(n),
        JsParam::BigInt(Ok(i)) => Value::Integer(i),
        JsParam::BigInt(Err(value)) => return Err(err(ValueErrorKind::BigIntOutOfRange { value })),
        JsParam::String(s) => Value::Text(s),
        JsParam::InvalidString => return Err(err(ValueErrorKind::InvalidText)),
        JsParam::Bytes(b) => Value::Blob(b),
        JsParam::Boolean(b) => Value::Integer(i64::from(b)),
        JsParam::Other(type_name) => return Err(err(ValueErrorKind::UnsupportedType { type_name })),
    })
}

/// Applies the parameter rules to a whole params array; stops at the first bad one.
pub fn params_to_values(params: impl IntoIterator<Item = JsParam>) -> Result<Vec<Value>, ValueError> {
    params.into_iter().enumerate().map(|(i, p)| param_to_value(Some(i), p)).collect()
}

/// KV keys and values are bytes: a string is taken as its UTF-8 bytes.
pub fn param_to_bytes(p: JsParam) -> Result<Vec<u8>, ValueError> {
    let type_name = match p {
        JsParam::String(s) => return Ok(s.into_bytes()),
        JsParam::Bytes(b) => return Ok(b),
        JsParam::InvalidString => return Err(ValueError { index: None, kind: ValueErrorKind::InvalidText }),
        JsParam::Null => "null".to_string(),
        JsParam::Undefined => "undefined".to_string(),
        JsParam::Number(_) => "number".to_string(),
        JsParam::BigInt(_) => "bigint".to_string(),
        JsParam::Boolean(_) => "boolean".to_string(),
        JsParam::Other(t) => t,
    };
    Err(ValueError { index: None, kind: ValueErrorKind::NotBytes { type_name } })
}

/// A result value, ready to become a JS value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum JsOut<'a> {
    Null,
    Number(f64),
    BigInt(i64),
    Text(&'a str),
    Blob(&'a [u8]),
}

/// Applies the result rules to one SQLite value.
pub fn value_to_out(v: &Value, mode: IntegerMode) -> JsOut<'_> {
    match v {
        Value::Null => JsOut::Null,
        Value::Integer(i) => match mode {
            IntegerMode::Auto if (-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).contains(i) => JsOut::Number(*i as f64),
            IntegerMode::Auto | IntegerMode::BigInt => JsOut::BigInt(*i),
        },
        Value::Float(f) => JsOut::Number(*f),
        Value::Text(s) => JsOut::Text(s),
        Value::Blob(b) => JsOut::Blob(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(x: JsParam) -> Result<Value, ValueError> {
        param_to_value(Some(0), x)
    }

    #[test]
    fn numbers_pick_integer_only_when_safe_and_exact() {
        assert_eq!(p(JsParam::Number(0.0)), Ok(Value::Integer(0)));
        assert_eq!(p(JsParam::Number(42.0)), Ok(Value::Integer(42)));
        assert_eq!(p(JsParam::Number(-7.0)), Ok(Value::Integer(-7)));
        let max = MAX_SAFE_INTEGER as f64;
        assert_eq!(p(JsParam::Number(max)), Ok(Value::Integer(MAX_SAFE_INTEGER)));
        assert_eq!(p(JsParam::Number(-max)), Ok(Value::Integer(-MAX_SAFE_INTEGER)));
        // 2^53 is not a safe integer: it may be a rounded 2^53+1, so it goes as REAL.
        assert_eq!(p(JsParam::Number(max + 1.0)), Ok(Value::Float(max + 1.0)));
        assert_eq!(p(JsParam::Number(1.5)), Ok(Value::Float(1.5)));
        assert_eq!(p(JsParam::Number(f64::INFINITY)), Ok(Value::Float(f64::INFINITY)));
        assert_eq!(p(JsParam::Number(f64::NEG_INFINITY)), Ok(Value::Float(f64::NEG_INFINITY)));
        match p(JsParam::Number(f64::NAN)) {
            Ok(Value::Float(f)) => assert!(f.is_nan()),
            other => panic!("NaN became {other:?}"),
        }
        // -0 keeps its sign as REAL.
        match p(JsParam::Number(-0.0)) {
            Ok(Value::Float(f)) => assert!(f == 0.0 && f.is_sign_negative()),
            other => panic!("-0 became {other:?}"),
        }
    }

    #[test]
    fn other_params() {
        assert_eq!(p(JsParam::Null), Ok(Value::Null));
        assert_eq!(p(JsParam::Boolean(true)), Ok(Value::Integer(1)));
        assert_eq!(p(JsParam::Boolean(false)), Ok(Value::Integer(0)));
        assert_eq!(p(JsParam::BigInt(Ok(i64::MIN))), Ok(Value::Integer(i64::MIN)));
        assert_eq!(p(JsParam::BigInt(Ok(i64::MAX))), Ok(Value::Integer(i64::MAX)));
        assert_eq!(p(JsParam::String("a\0b".into())), Ok(Value::Text("a\0b".into())));
        assert_eq!(p(JsParam::Bytes(vec![])), Ok(Value::Blob(vec![])));
    }

    #[test]
    fn refused_params_are_typed_and_located() {
        let e = params_to_values([JsParam::Null, JsParam::Number(1.0), JsParam::Undefined]).unwrap_err();
        assert_eq!(e, ValueError { index: Some(2), kind: ValueErrorKind::Undefined });
        assert_eq!(e.kind.code(), "UNDEFINED_VALUE");
        assert_eq!(e.to_string(), "parameter 3 is undefined; pass null for SQL NULL");

        let e = p(JsParam::BigInt(Err("9223372036854775808".into()))).unwrap_err();
        assert_eq!(e.kind, ValueErrorKind::BigIntOutOfRange { value: "9223372036854775808".into() });
        assert_eq!(e.kind.code(), "BIGINT_OUT_OF_RANGE");

        assert_eq!(p(JsParam::InvalidString).unwrap_err().kind.code(), "INVALID_TEXT");
        assert_eq!(param_to_bytes(JsParam::InvalidString).unwrap_err().kind, ValueErrorKind::InvalidText);

        let e = p(JsParam::Other("Date".into())).unwrap_err();
        assert_eq!(e.kind, ValueErrorKind::UnsupportedType { type_name: "Date".into() });
        assert!(e.to_string().starts_with("parameter 1 has unsupported type Date"));
    }

    #[test]
    fn results_follow_integer_mode() {
        let safe = Value::Integer(MAX_SAFE_INTEGER);
        let big = Value::Integer(MAX_SAFE_INTEGER + 1);
        let neg_big = Value::Integer(i64::MIN);
        assert_eq!(value_to_out(&safe, IntegerMode::Auto), JsOut::Number(MAX_SAFE_INTEGER as f64));
        assert_eq!(value_to_out(&big, IntegerMode::Auto), JsOut::BigInt(MAX_SAFE_INTEGER + 1));
        assert_eq!(value_to_out(&neg_big, IntegerMode::Auto), JsOut::BigInt(i64::MIN));
        assert_eq!(value_to_out(&Value::Integer(3), IntegerMode::BigInt), JsOut::BigInt(3));
        assert_eq!(value_to_out(&Value::Float(2.0), IntegerMode::BigInt), JsOut::Number(2.0));
        assert_eq!(value_to_out(&Value::Null, IntegerMode::Auto), JsOut::Null);
        assert_eq!(value_to_out(&Value::Text("é".into()), IntegerMode::Auto), JsOut::Text("é"));
        assert_eq!(value_to_out(&Value::Blob(vec![1, 2]), IntegerMode::Auto), JsOut::Blob(&[1, 2]));
    }

    #[test]
    fn kv_bytes_and_options() {
        assert_eq!(param_to_bytes(JsParam::String("ké".into())), Ok("ké".as_bytes().to_vec()));
        assert_eq!(param_to_bytes(JsParam::Bytes(vec![0, 255])), Ok(vec![0, 255]));
        let e = param_to_bytes(JsParam::Number(1.0)).unwrap_err();
        assert_eq!(e.kind, ValueErrorKind::NotBytes { type_name: "number".into() });
        assert_eq!(IntegerMode::parse("bigint"), Ok(IntegerMode::BigInt));
        assert_eq!(IntegerMode::parse("auto"), Ok(IntegerMode::Auto));
        assert_eq!(IntegerMode::parse("big").unwrap_err().kind.code(), "INVALID_OPTION");
    }
}
