//! Conversions between Rust values and SQLite values ([`Value`]), like rusqlite's
//! `ToSql` / `FromSql`, and the [`params!`](crate::params) macro.

pub use envoy_protocol::Value;

/// A Rust value that can be bound as a statement parameter.
pub trait ToSql {
    fn to_sql(&self) -> Value;
}

/// A type a SQLite value can be read into. `'a` lets `&str` and `&[u8]`
/// borrow from the row.
pub trait FromSql<'a>: Sized {
    /// Converts, or says what was found instead (`"NULL"`, `"INTEGER"`, ...).
    fn from_sql(value: &'a Value) -> Result<Self, FromSqlError>;
    /// The name used in conversion errors.
    const EXPECTED: &'static str;
}

/// A value of the wrong SQLite type for the requested Rust type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FromSqlError {
    /// The SQLite type that was found.
    pub found: &'static str,
}

/// The SQLite type name of a value, for error messages.
pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "NULL",
        Value::Integer(_) => "INTEGER",
        Value::Float(_) => "REAL",
        Value::Text(_) => "TEXT",
        Value::Blob(_) => "BLOB",
    }
}

fn mismatch<T>(value: &Value) -> Result<T, FromSqlError> {
    Err(FromSqlError { found: type_name(value) })
}

impl ToSql for Value {
    fn to_sql(&self) -> Value {
        self.clone()
    }
}

impl<T: ToSql + ?Sized> ToSql for &T {
    fn to_sql(&self) -> Value {
        (**self).to_sql()
    }
}

impl<T: ToSql> ToSql for Option<T> {
    fn to_sql(&self) -> Value {
        match self {
            Some(v) => v.to_sql(),
            None => Value::Null,
        }
    }
}

macro_rules! int_to_sql {
    ($($t:ty),*) => {$(
        impl ToSql for $t {
            fn to_sql(&self) -> Value {
                Value::Integer(i64::from(*self))
            }
        }
    )*};
}
int_to_sql!(i8, i16, i32, i64, u8, u16, u32);

impl ToSql for bool {
    fn to_sql(&self) -> Value {
        Value::Integer(i64::from(*self))
    }
}

impl ToSql for f64 {
    fn to_sql(&self) -> Value {
        Value::Float(*self)
    }
}

impl ToSql for f32 {
    fn to_sql(&self) -> Value {
        Value::Float(f64::from(*self))
    }
}

impl ToSql for str {
    fn to_sql(&self) -> Value {
        Value::Text(self.to_owned())
    }
}

impl ToSql for String {
    fn to_sql(&self) -> Value {
        Value::Text(self.clone())
    }
}

impl ToSql for [u8] {
    fn to_sql(&self) -> Value {
        Value::Blob(self.to_vec())
    }
}

impl ToSql for Vec<u8> {
    fn to_sql(&self) -> Value {
        Value::Blob(self.clone())
    }
}

impl<const N: usize> ToSql for [u8; N] {
    fn to_sql(&self) -> Value {
        Value::Blob(self.to_vec())
    }
}

impl<'a> FromSql<'a> for Value {
    const EXPECTED: &'static str = "any value";
    fn from_sql(value: &'a Value) -> Result<Self, FromSqlError> {
        Ok(value.clone())
    }
}

impl<'a> FromSql<'a> for i64 {
    const EXPECTED: &'static str = "i64 (INTEGER)";
    fn from_sql(value: &'a Value) -> Result<Self, FromSqlError> {
        match value {
            Value::Integer(i) => Ok(*i),
            other => mismatch(other),
        }
    }
}

macro_rules! narrow_int_from_sql {
    ($($t:ty),*) => {$(
        impl<'a> FromSql<'a> for $t {
            const EXPECTED: &'static str = concat!(stringify!($t), " (INTEGER in range)");
            fn from_sql(value: &'a Value) -> Result<Self, FromSqlError> {
                match value {
                    Value::Integer(i) => <$t>::try_from(*i).map_err(|_| FromSqlError { found: "INTEGER out of range" }),
                    other => mismatch(other),
                }
            }
        }
    )*};
}
narrow_int_from_sql!(i8, i16, i32, u8, u16, u32, u64, usize);

impl<'a> FromSql<'a> for f64 {
    const EXPECTED: &'static str = "f64 (REAL or INTEGER)";
    fn from_sql(value: &'a Value) -> Result<Self, FromSqlError> {
        match value {
            Value::Float(f) => Ok(*f),
            // SQLite stores integral REALs compactly; accept INTEGER like rusqlite does.
            Value::Integer(i) => Ok(*i as f64),
            other => mismatch(other),
        }
    }
}

impl<'a> FromSql<'a> for bool {
    const EXPECTED: &'static str = "bool (INTEGER)";
    fn from_sql(value: &'a Value) -> Result<Self, FromSqlError> {
        match value {
            Value::Integer(i) => Ok(*i != 0),
            other => mismatch(other),
        }
    }
}

impl<'a> FromSql<'a> for String {
    const EXPECTED: &'static str = "String (TEXT)";
    fn from_sql(value: &'a Value) -> Result<Self, FromSqlError> {
        match value {
            Value::Text(s) => Ok(s.clone()),
            other => mismatch(other),
        }
    }
}

impl<'a> FromSql<'a> for &'a str {
    const EXPECTED: &'static str = "&str (TEXT)";
    fn from_sql(value: &'a Value) -> Result<Self, FromSqlError> {
        match value {
            Value::Text(s) => Ok(s.as_str()),
            other => mismatch(other),
        }
    }
}

impl<'a> FromSql<'a> for Vec<u8> {
    const EXPECTED: &'static str = "Vec<u8> (BLOB)";
    fn from_sql(value: &'a Value) -> Result<Self, FromSqlError> {
        match value {
            Value::Blob(b) => Ok(b.clone()),
            other => mismatch(other),
        }
    }
}

impl<'a> FromSql<'a> for &'a [u8] {
    const EXPECTED: &'static str = "&[u8] (BLOB)";
    fn from_sql(value: &'a Value) -> Result<Self, FromSqlError> {
        match value {
            Value::Blob(b) => Ok(b.as_slice()),
            other => mismatch(other),
        }
    }
}

impl<'a, T: FromSql<'a>> FromSql<'a> for Option<T> {
    const EXPECTED: &'static str = T::EXPECTED;
    fn from_sql(value: &'a Value) -> Result<Self, FromSqlError> {
        match value {
            Value::Null => Ok(None),
            other => T::from_sql(other).map(Some),
        }
    }
}

/// Positional statement parameters. Built by [`params!`](crate::params), or
/// from a `Vec<Value>` / array of values; `()` means "no parameters".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Params(pub Option<Vec<Value>>);

impl From<()> for Params {
    fn from(_: ()) -> Self {
        Params(None)
    }
}

impl From<Vec<Value>> for Params {
    fn from(v: Vec<Value>) -> Self {
        Params(Some(v))
    }
}

impl<const N: usize> From<[Value; N]> for Params {
    fn from(v: [Value; N]) -> Self {
        Params(Some(v.into()))
    }
}

impl From<&[Value]> for Params {
    fn from(v: &[Value]) -> Self {
        Params(Some(v.to_vec()))
    }
}

impl From<&[&dyn ToSql]> for Params {
    fn from(v: &[&dyn ToSql]) -> Self {
        Params(Some(v.iter().map(|p| p.to_sql()).collect()))
    }
}

/// Builds positional parameters from any [`ToSql`] values:
/// `params![1, "x", None::<i64>, vec![0u8; 4]]`.
#[macro_export]
macro_rules! params {
    () => { $crate::Params(::core::option::Option::Some(::std::vec::Vec::new())) };
    ($($p:expr),+ $(,)?) => {
        $crate::Params(::core::option::Option::Some(::std::vec![$($crate::ToSql::to_sql(&$p)),+]))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_macro_converts_every_kind() {
        let p = crate::params![1, "x", None::<i64>, vec![0u8; 4], 2.5f64, true, String::from("s"), &b"ab"[..]];
        assert_eq!(
            p.0.unwrap(),
            vec![
                Value::Integer(1),
                Value::Text("x".into()),
                Value::Null,
                Value::Blob(vec![0; 4]),
                Value::Float(2.5),
                Value::Integer(1),
                Value::Text("s".into()),
                Value::Blob(b"ab".to_vec()),
            ]
        );
        assert_eq!(crate::params![].0, Some(vec![]));
    }

    #[test]
    fn from_sql_checks_types() {
        assert_eq!(i64::from_sql(&Value::Integer(i64::MIN)), Ok(i64::MIN));
        assert_eq!(i64::from_sql(&Value::Text("1".into())), Err(FromSqlError { found: "TEXT" }));
        assert_eq!(Option::<i64>::from_sql(&Value::Null), Ok(None));
        assert_eq!(u8::from_sql(&Value::Integer(300)), Err(FromSqlError { found: "INTEGER out of range" }));
        let v = Value::Text("borrowed".into());
        let s: &str = <&str>::from_sql(&v).unwrap();
        assert_eq!(s, "borrowed");
        assert_eq!(f64::from_sql(&Value::Integer(3)), Ok(3.0));
        assert_eq!(bool::from_sql(&Value::Integer(0)), Ok(false));
    }
}
