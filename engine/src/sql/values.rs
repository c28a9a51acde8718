//! Conversions between wire values and SQLite values, with size accounting.

use envoy_protocol::Value;
use rusqlite::types::{ToSqlOutput, ValueRef};

/// Borrowing adapter so a wire value binds without copying.
pub struct Bind<'a>(pub &'a Value);

impl rusqlite::ToSql for Bind<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self.0 {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Integer(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            // SQLite stores NaN as NULL; that is SQLite's rule and fine.
            Value::Float(f) => ToSqlOutput::Borrowed(ValueRef::Real(*f)),
            Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Value::Blob(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
        })
    }
}

/// Bytes a TEXT/BLOB value carries (0 for the others): what `maxValueBytes` bounds.
pub fn value_bytes(v: &Value) -> usize {
    match v {
        Value::Null | Value::Integer(_) | Value::Float(_) => 0,
        Value::Text(s) => s.len(),
        Value::Blob(b) => b.len(),
    }
}

/// Approximate encoded size of a value on the wire (tag + payload + length prefix).
pub fn wire_bytes(v: &Value) -> usize {
    match v {
        Value::Null => 1,
        Value::Integer(_) | Value::Float(_) => 9,
        Value::Text(s) => 1 + 5 + s.len(),
        Value::Blob(b) => 1 + 5 + b.len(),
    }
}

/// Owned wire value of a SQLite column value. TEXT that is not UTF-8 (SQLite
/// accepts it) is returned lossily converted rather than failing the row.
pub fn from_sqlite(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Integer(i),
        ValueRef::Real(f) => Value::Float(f),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    }
}

/// Size of a column value before it is copied (for limits checked before copying).
pub fn sqlite_value_bytes(v: &ValueRef<'_>) -> usize {
    match v {
        ValueRef::Null | ValueRef::Integer(_) | ValueRef::Real(_) => 0,
        ValueRef::Text(t) => t.len(),
        ValueRef::Blob(b) => b.len(),
    }
}
