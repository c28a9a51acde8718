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

/// What a value counts against `maxResponseBytes`: its size once decoded
/// (the enum plus its heap bytes), which is never less than its wire size.
/// Counting decoded size keeps every answer under the limit within the
/// client's decode budget (`DecodeLimits::ALLOC_FACTOR` × frame), even a
/// result of a million NULLs (1 byte each on the wire, 32 in memory).
pub fn response_cost(v: &Value) -> usize {
    std::mem::size_of::<Value>() + value_bytes(v)
}

/// A TEXT value whose bytes are not UTF-8 (SQLite stores them as they are).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotUtf8;

/// Owned wire value of a SQLite column value. TEXT that is not UTF-8 is an
/// error: the caller answers a typed error naming the column, never a silently
/// changed string.
pub fn from_sqlite(v: ValueRef<'_>) -> Result<Value, NotUtf8> {
    Ok(match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Integer(i),
        ValueRef::Real(f) => Value::Float(f),
        ValueRef::Text(t) => Value::Text(std::str::from_utf8(t).map_err(|_| NotUtf8)?.to_owned()),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    })
}

/// Size of a column value before it is copied (for limits checked before copying).
pub fn sqlite_value_bytes(v: &ValueRef<'_>) -> usize {
    match v {
        ValueRef::Null | ValueRef::Integer(_) | ValueRef::Real(_) => 0,
        ValueRef::Text(t) => t.len(),
        ValueRef::Blob(b) => b.len(),
    }
}
