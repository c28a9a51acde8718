//! `RawActor.batch`: several statements with parameters in one transaction, all or nothing, one
//! round trip (protocol v5, `Db::batch`). Resolves to an array with one result per statement
//! (see [`crate::outcome::execute`]) carrying `cost` and `replayed` of the whole batch.

use crate::actor::RawActor;
use crate::js_convert::{self, get, set};
use crate::js_error;
use crate::options;
use crate::promise::promise;
use crate::value::{ValueError, ValueErrorKind};
use envoy_client::{stmt, Params, Statement, TransactionMode};
use js_sys::{Array, Promise};
use wasm_bindgen::prelude::*;

fn invalid(got: String) -> ValueError {
    ValueError { index: None, kind: ValueErrorKind::InvalidOption { option: "statements", got } }
}

/// `[{ sql, params? }, ...]` (a bare string is a statement without parameters).
fn statements(v: &JsValue) -> Result<Vec<Statement>, ValueError> {
    if !Array::is_array(v) {
        return Err(invalid("not an array of { sql, params? }".into()));
    }
    let arr: &Array = v.unchecked_ref();
    let mut out = Vec::with_capacity(arr.length() as usize);
    for (i, item) in arr.iter().enumerate() {
        if let Some(sql) = item.as_string() {
            out.push(stmt(sql, Params(None)));
            continue;
        }
        let sql = get(&item, "sql")
            .and_then(|s| s.as_string())
            .ok_or_else(|| invalid(format!("statement {i} has no `sql` string")))?;
        let params = match get(&item, "params") {
            None => None,
            Some(p) => js_convert::params(&p).map_err(|e| ValueError {
                kind: match e.kind {
                    // Which statement's parameter: "statement 2: parameter 1 ...".
                    ValueErrorKind::InvalidOption { option, got } => {
                        ValueErrorKind::InvalidOption { option, got: format!("statement {i}: {got}") }
                    }
                    k => k,
                },
                ..e
            })?,
        };
        out.push(stmt(sql, Params(params)));
    }
    Ok(out)
}

#[wasm_bindgen]
impl RawActor {
    /// One result per statement; the array carries `cost` and `replayed` of the batch.
    #[wasm_bindgen(unchecked_return_type = "Promise<any>")]
    pub fn batch(&self, list: JsValue, options: JsValue) -> Promise {
        let prepared = self.db_with_mode(&options).and_then(|(db, mode)| {
            let tx_mode =
                options::transaction_mode(&options, TransactionMode::Deferred).map_err(|e| js_error::value(&e))?;
            let list = statements(&list).map_err(|e| js_error::value(&e))?;
            Ok((db, mode, tx_mode, list))
        });
        let (db, mode, tx_mode, list) = match prepared {
            Ok(p) => p,
            Err(e) => return Promise::reject(&e),
        };
        promise(async move {
            let out = db.batch(tx_mode, list).await.map_err(|e| js_error::client(&e))?;
            let (cost, replayed, omitted) = (out.cost.clone(), out.replayed, out.rows_omitted);
            let results: Array = out.into_iter().map(|x| crate::outcome::execute(x, mode)).collect();
            set(&results, "cost", crate::outcome::cost(cost));
            set(&results, "replayed", JsValue::from_bool(replayed));
            if omitted {
                set(&results, "rowsOmitted", JsValue::TRUE);
            }
            Ok(results.into())
        })
    }
}
