//! SQL results as JS objects, shared by `execute`, `batch`, transaction statements and commits:
//! `{ columns, rows, changes, lastInsertRowId, route, cost, replayed }`, and `cost` as
//! `{ rowsRead, rowsWritten, durationUs }` (null below protocol v5).

use crate::js_convert::{self, set};
use crate::js_error::u64_to_js;
use crate::value::IntegerMode;
use envoy_client::{ExecuteOutcome, SqlCost, Value};
use js_sys::Object;
use wasm_bindgen::JsValue;

/// `{ rowsRead, rowsWritten, durationUs }`, or null (below v5; one statement of a batch).
pub fn cost(c: Option<SqlCost>) -> JsValue {
    match c {
        None => JsValue::NULL,
        Some(c) => {
            let o = Object::new();
            set(&o, "rowsRead", u64_to_js(c.rows_read));
            set(&o, "rowsWritten", u64_to_js(c.rows_written));
            set(&o, "durationUs", u64_to_js(c.duration_us));
            o.into()
        }
    }
}

/// One statement's outcome.
pub fn execute(out: ExecuteOutcome, mode: IntegerMode) -> JsValue {
    let o = Object::new();
    set(&o, "columns", js_convert::strings(out.rows.columns()));
    set(&o, "changes", u64_to_js(out.changes));
    let id = out.last_insert_row_id.map(|i| js_convert::out(&Value::Integer(i), mode));
    set(&o, "lastInsertRowId", id.unwrap_or(JsValue::NULL));
    set(&o, "route", JsValue::from_str(out.route.wire_name()));
    set(&o, "cost", cost(out.cost));
    set(&o, "replayed", JsValue::from_bool(out.replayed));
    if out.rows_omitted {
        set(&o, "rowsOmitted", JsValue::TRUE);
    }
    set(&o, "rows", js_convert::rows(&out.rows.into_values(), mode));
    o.into()
}
