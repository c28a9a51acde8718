//! Row deserialisation (feature `serde`): a row is a map from column name to
//! value for structs, and a sequence of values for tuples.

use crate::value::Value;
use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// Why a row could not be deserialised.
#[derive(Debug)]
pub struct DeError(String);

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError(msg.to_string())
    }
}

/// Deserialises one row.
pub(crate) struct RowDeserializer<'a> {
    columns: &'a [String],
    values: &'a [Value],
}

impl<'a> RowDeserializer<'a> {
    pub(crate) fn new(columns: &'a [String], values: &'a [Value]) -> Self {
        RowDeserializer { columns, values }
    }
}

impl<'de, 'a> de::Deserializer<'de> for RowDeserializer<'a> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_map(RowMap { columns: self.columns, values: self.values, i: 0 })
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_seq(RowSeq { values: self.values, i: 0 })
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct map struct enum identifier ignored_any
    }
}

struct RowMap<'a> {
    columns: &'a [String],
    values: &'a [Value],
    i: usize,
}

impl<'de, 'a> MapAccess<'de> for RowMap<'a> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, DeError> {
        match self.columns.get(self.i) {
            Some(name) => seed.deserialize(name.as_str().into_deserializer()).map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let v = &self.values[self.i];
        self.i += 1;
        seed.deserialize(ValueDeserializer(v))
    }
}

struct RowSeq<'a> {
    values: &'a [Value],
    i: usize,
}

impl<'de, 'a> SeqAccess<'de> for RowSeq<'a> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, DeError> {
        match self.values.get(self.i) {
            Some(v) => {
                self.i += 1;
                seed.deserialize(ValueDeserializer(v)).map(Some)
            }
            None => Ok(None),
        }
    }
}

/// Deserialises one SQLite value.
struct ValueDeserializer<'a>(&'a Value);

impl<'de, 'a> de::Deserializer<'de> for ValueDeserializer<'a> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            Value::Integer(i) => visitor.visit_i64(*i),
            Value::Float(f) => visitor.visit_f64(*f),
            Value::Text(s) => visitor.visit_str(s),
            Value::Blob(b) => visitor.visit_bytes(b),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            Value::Integer(_) | Value::Float(_) | Value::Text(_) | Value::Blob(_) => visitor.visit_some(self),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::Integer(i) => visitor.visit_bool(*i != 0),
            Value::Null | Value::Float(_) | Value::Text(_) | Value::Blob(_) => self.deserialize_any(visitor),
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            // A BLOB read into Vec<u8> arrives as a sequence request.
            Value::Blob(b) => visitor.visit_seq(de::value::SeqDeserializer::new(b.iter().copied())),
            Value::Null | Value::Integer(_) | Value::Float(_) | Value::Text(_) => self.deserialize_any(visitor),
        }
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct newtype_struct tuple tuple_struct map struct enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use crate::rows::Rows;
    use crate::value::Value;

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct User {
        id: i64,
        name: String,
        score: Option<f64>,
        avatar: Vec<u8>,
        active: bool,
    }

    #[test]
    fn rows_into_structs_and_tuples() {
        let rows = Rows::new(
            vec!["id".into(), "name".into(), "score".into(), "avatar".into(), "active".into()],
            vec![vec![
                Value::Integer(1),
                Value::Text("a".into()),
                Value::Null,
                Value::Blob(vec![1, 2]),
                Value::Integer(1),
            ]],
        );
        let users: Vec<User> = rows.deserialize().unwrap();
        assert_eq!(users, vec![User { id: 1, name: "a".into(), score: None, avatar: vec![1, 2], active: true }]);
        let t: (i64, String, Option<f64>, Vec<u8>, bool) = rows.first().unwrap().deserialize().unwrap();
        assert_eq!(t.0, 1);
        assert!(rows.first().unwrap().deserialize::<(String,)>().is_err());
    }
}
