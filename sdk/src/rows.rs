//! Query results: [`Rows`] and [`Row`] with typed getters by index or name.

use crate::error::{Error, Result};
use crate::value::{type_name, FromSql, Value};
use std::sync::Arc;

pub use envoy_protocol::{SqlCost, SqliteRoute};

/// The rows a statement returned, owned (moved out of the response, not copied).
#[derive(Debug, Clone, PartialEq)]
pub struct Rows {
    /// Column names, shared by every [`Row`] borrowed from this set.
    columns: Arc<[String]>,
    /// One `Vec<Value>` per row, each as long as `columns`.
    rows: Vec<Vec<Value>>,
    /// What the request cost the engine (v5), so callers can meter or log
    /// expensive queries; `None` below v5.
    cost: Option<SqlCost>,
}

impl Rows {
    pub(crate) fn new(columns: Vec<String>, rows: Vec<Vec<Value>>) -> Self {
        Rows { columns: columns.into(), rows, cost: None }
    }

    pub(crate) fn with_cost(mut self, cost: Option<SqlCost>) -> Self {
        self.cost = cost;
        self
    }

    /// What the request that returned these rows cost the engine (rows read
    /// and written, time): every v5 answer carries it; `None` below v5 (and
    /// for the rows of one statement of a batch, whose cost is the batch's).
    pub fn cost(&self) -> Option<SqlCost> {
        self.cost.clone()
    }

    /// Rows built from their parts (each row as long as `columns`), e.g. from another
    /// transport such as the engine's admin API.
    pub fn from_parts(columns: Vec<String>, rows: Vec<Vec<Value>>) -> Self {
        Rows::new(columns, rows)
    }

    /// Column names, in order.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The row at `i`, if there is one.
    pub fn get(&self, i: usize) -> Option<Row<'_>> {
        self.rows.get(i).map(|values| Row { columns: &self.columns, values })
    }

    /// The first row, if any.
    pub fn first(&self) -> Option<Row<'_>> {
        self.get(0)
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = Row<'_>> + '_ {
        self.rows.iter().map(|values| Row { columns: &self.columns, values })
    }

    /// The raw values, row by row.
    pub fn into_values(self) -> Vec<Vec<Value>> {
        self.rows
    }

    /// Deserialises every row into `T` (a struct with fields named like the columns, or a tuple).
    #[cfg(feature = "serde")]
    pub fn deserialize<T: serde::de::DeserializeOwned>(&self) -> Result<Vec<T>> {
        self.iter().map(|r| r.deserialize()).collect()
    }
}

impl<'a> IntoIterator for &'a Rows {
    type Item = Row<'a>;
    type IntoIter = Box<dyn ExactSizeIterator<Item = Row<'a>> + 'a>;
    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

/// Something that names a column: a `usize` index or a `&str` name.
pub trait RowIndex {
    /// The column's position, or `Error::InvalidColumn`.
    fn index(&self, columns: &[String]) -> Result<usize>;
}

impl RowIndex for usize {
    fn index(&self, columns: &[String]) -> Result<usize> {
        if *self < columns.len() {
            Ok(*self)
        } else {
            Err(Error::InvalidColumn(format!("index {self} (the row has {} columns)", columns.len())))
        }
    }
}

impl RowIndex for &str {
    fn index(&self, columns: &[String]) -> Result<usize> {
        // Exact match first, then case-insensitive like SQLite's own name lookup.
        columns
            .iter()
            .position(|c| c == self)
            .or_else(|| columns.iter().position(|c| c.eq_ignore_ascii_case(self)))
            .ok_or_else(|| Error::InvalidColumn(format!("\"{self}\"")))
    }
}

/// One row, borrowed from [`Rows`].
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    columns: &'a [String],
    values: &'a [Value],
}

impl<'a> Row<'a> {
    /// The value of a column converted to `T`: `row.get::<i64>("id")`, `row.get::<String>(1)`.
    pub fn get<T: FromSql<'a>>(&self, idx: impl RowIndex) -> Result<T> {
        let i = idx.index(self.columns)?;
        let v = &self.values[i];
        T::from_sql(v).map_err(|e| Error::FromSql {
            column: self.columns[i].clone(),
            expected: T::EXPECTED,
            found: e.found,
        })
    }

    /// The raw value of a column.
    pub fn get_ref(&self, idx: impl RowIndex) -> Result<&'a Value> {
        let i = idx.index(self.columns)?;
        Ok(&self.values[i])
    }

    pub fn columns(&self) -> &'a [String] {
        self.columns
    }

    pub fn values(&self) -> &'a [Value] {
        self.values
    }

    /// The SQLite type name of column `i` (`NULL`, `INTEGER`, `REAL`, `TEXT`, `BLOB`).
    pub fn type_name(&self, idx: impl RowIndex) -> Result<&'static str> {
        Ok(type_name(self.get_ref(idx)?))
    }

    /// Deserialises the row into `T`: a struct reads columns by name, a tuple or
    /// sequence reads them in order. NULL becomes `None`/unit, BLOB a byte sequence.
    #[cfg(feature = "serde")]
    pub fn deserialize<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        T::deserialize(crate::de::RowDeserializer::new(self.columns, self.values))
            .map_err(|e| Error::Deserialize(e.to_string()))
    }
}

/// One row that owns its values (what a result stream yields, see
/// [`Db::stream`](crate::Db::stream)). Same getters as [`Row`].
#[derive(Debug, Clone, PartialEq)]
pub struct OwnedRow {
    /// Column names, shared by every row of the stream.
    columns: Arc<[String]>,
    /// One value per column.
    values: Vec<Value>,
}

impl OwnedRow {
    pub(crate) fn new(columns: Arc<[String]>, values: Vec<Value>) -> Self {
        OwnedRow { columns, values }
    }

    /// The row borrowed as a [`Row`].
    pub fn as_row(&self) -> Row<'_> {
        Row { columns: &self.columns, values: &self.values }
    }

    /// The value of a column converted to `T` (see [`Row::get`]).
    pub fn get<'a, T: FromSql<'a>>(&'a self, idx: impl RowIndex) -> Result<T> {
        let i = idx.index(&self.columns)?;
        T::from_sql(&self.values[i]).map_err(|e| Error::FromSql {
            column: self.columns[i].clone(),
            expected: T::EXPECTED,
            found: e.found,
        })
    }

    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    pub fn values(&self) -> &[Value] {
        &self.values
    }

    pub fn into_values(self) -> Vec<Value> {
        self.values
    }
}

/// What `execute` / `execute_write` report besides the rows.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecuteOutcome {
    /// Rows the statement returned (empty for most writes).
    pub rows: Rows,
    /// Rows changed by this statement alone (0 for a SELECT).
    pub changes: u64,
    /// Rowid of the last row this statement inserted, if it inserted one.
    pub last_insert_row_id: Option<i64>,
    /// Whether it ran on a reader or the writer connection.
    pub route: SqliteRoute,
    /// What the request cost the engine (v5): rows read and written, time.
    /// `None` below v5, and for one statement of a batch (the batch's cost is
    /// [`BatchOutcome::cost`](crate::BatchOutcome::cost)).
    pub cost: Option<SqlCost>,
    /// v5: the engine did not run the request now but answered the recorded
    /// outcome of an earlier send with the same request key — the client
    /// re-sent a write whose answer was lost to a disconnect, and the first
    /// send had committed. The outcome is the first send's: it happened once.
    pub replayed: bool,
    /// v5, with `replayed`: the recorded result was larger than the engine's
    /// `maxRecordedResultBytes`, so `rows` is empty even if the statement
    /// returned rows; `changes` and `last_insert_row_id` are the recorded ones.
    pub rows_omitted: bool,
}

/// `(replayed, rows_omitted)` of a keyed answer's outcome (both false when
/// the request carried no key or ran now).
pub(crate) fn replay_flags(outcome: Option<envoy_protocol::RequestKeyOutcome>) -> (bool, bool) {
    use envoy_protocol::RequestKeyOutcome as K;
    match outcome {
        None | Some(K::Executed) => (false, false),
        Some(K::Replayed) => (true, false),
        Some(K::ReplayedWithoutRows) => (true, true),
    }
}

impl ExecuteOutcome {
    /// The outcome of one v4 or v5 execute result (`meta` is empty below v5).
    pub(crate) fn from_wire(x: envoy_protocol::ExecuteResult, meta: crate::core::SqlMeta) -> Self {
        let (replayed, rows_omitted) = replay_flags(meta.key_outcome);
        ExecuteOutcome {
            rows: Rows::new(x.columns, x.rows).with_cost(meta.cost.clone()),
            changes: x.changes,
            last_insert_row_id: x.last_insert_row_id,
            route: x.route,
            cost: meta.cost,
            replayed,
            rows_omitted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_getters_by_index_and_name() {
        let rows = Rows::new(
            vec!["id".into(), "Name".into(), "data".into()],
            vec![vec![Value::Integer(7), Value::Text("x".into()), Value::Null]],
        );
        let row = rows.first().unwrap();
        assert_eq!(row.get::<i64>("id").unwrap(), 7);
        assert_eq!(row.get::<&str>("name").unwrap(), "x");
        assert_eq!(row.get::<String>(1).unwrap(), "x");
        assert_eq!(row.get::<Option<Vec<u8>>>("data").unwrap(), None);
        assert!(matches!(row.get::<i64>("nope"), Err(Error::InvalidColumn(_))));
        assert!(matches!(row.get::<i64>(9), Err(Error::InvalidColumn(_))));
        match row.get::<i64>(1) {
            Err(Error::FromSql { column, found, .. }) => {
                assert_eq!(column, "Name");
                assert_eq!(found, "TEXT");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
