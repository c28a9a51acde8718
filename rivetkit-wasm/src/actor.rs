//! `RawActor`: one actor generation as the JS layer sees it — SQL and KV calls that return
//! Promises. Arguments are converted (and refused) synchronously, before anything is sent; a
//! refused value rejects the Promise with an INVALID_VALUE-family error.

use crate::js_convert::{self, set};
use crate::js_error::{self, u64_to_js};
use crate::options;
use crate::promise::promise;
use crate::value::IntegerMode;
use envoy_client::protocol::KvQuery;
use envoy_client::{ActorContext, Db, Kv};
use js_sys::{Array, Object, Promise, Uint8Array};
use wasm_bindgen::prelude::*;

/// One placed actor generation (`Actor` in the public API wraps it).
#[wasm_bindgen]
pub struct RawActor {
    /// Identity and generation (the fence every request carries).
    ctx: ActorContext,
    /// SQL handle, made once: cloning it per call is cheap (an Arc and two strings).
    db: Db,
    /// KV handle, made once for the same reason.
    kv: Kv,
    /// The envoy's default for INTEGER results, overridable per call.
    integers: IntegerMode,
}

impl RawActor {
    pub(crate) fn new(ctx: ActorContext, integers: IntegerMode) -> RawActor {
        let (db, kv) = (ctx.sql(), ctx.kv());
        RawActor { ctx, db, kv, integers }
    }

    /// The SQL handle and the INTEGER mode of `options` (protocol v5 calls: batch.rs,
    /// transaction.rs, stream.rs).
    pub(crate) fn db_with_mode(&self, options: &JsValue) -> Result<(Db, IntegerMode), JsValue> {
        let mode = options::integer_mode(options, self.integers).map_err(|e| js_error::value(&e))?;
        Ok((self.db.clone(), mode))
    }
}

fn reject(e: JsValue) -> Promise {
    Promise::reject(&e)
}

fn bytes_js(b: &[u8]) -> JsValue {
    Uint8Array::from(b).into()
}

#[wasm_bindgen]
impl RawActor {
    #[wasm_bindgen(getter)]
    pub fn id(&self) -> String {
        self.ctx.id().to_string()
    }

    #[wasm_bindgen(getter)]
    pub fn name(&self) -> String {
        self.ctx.name().to_string()
    }

    #[wasm_bindgen(getter)]
    pub fn key(&self) -> String {
        self.ctx.key().to_string()
    }

    /// number when safe, else bigint.
    #[wasm_bindgen(getter, unchecked_return_type = "number | bigint")]
    pub fn generation(&self) -> JsValue {
        u64_to_js(self.ctx.generation())
    }

    /// `{ columns, rows }` of the last statement.
    #[wasm_bindgen(unchecked_return_type = "Promise<any>")]
    pub fn exec(&self, sql: String, options: JsValue) -> Promise {
        let mode = match options::integer_mode(&options, self.integers) {
            Ok(m) => m,
            Err(e) => return reject(js_error::value(&e)),
        };
        let db = self.db.clone();
        promise(async move {
            let rows = db.exec(&sql).await.map_err(|e| js_error::client(&e))?;
            let o = Object::new();
            set(&o, "cost", crate::outcome::cost(rows.cost()));
            set(&o, "columns", js_convert::strings(rows.columns()));
            set(&o, "rows", js_convert::rows(&rows.into_values(), mode));
            Ok(o.into())
        })
    }

    /// `{ columns, rows, changes, lastInsertRowId, route }`; `write` sends ExecuteWrite.
    #[wasm_bindgen(unchecked_return_type = "Promise<any>")]
    pub fn execute(&self, sql: String, params: JsValue, options: JsValue, write: bool) -> Promise {
        let mode = match options::integer_mode(&options, self.integers) {
            Ok(m) => m,
            Err(e) => return reject(js_error::value(&e)),
        };
        let params = match js_convert::params(&params) {
            Ok(p) => p,
            Err(e) => return reject(js_error::value(&e)),
        };
        let db = self.db.clone();
        promise(async move {
            let params = envoy_client::Params(params);
            let out = if write { db.execute_write(&sql, params).await } else { db.execute(&sql, params).await }
                .map_err(|e| js_error::client(&e))?;
            Ok(crate::outcome::execute(out, mode))
        })
    }

    /// `Uint8Array | null`.
    #[wasm_bindgen(js_name = kvGet, unchecked_return_type = "Promise<any>")]
    pub fn kv_get(&self, key: JsValue) -> Promise {
        let key = match js_convert::bytes(&key) {
            Ok(k) => k,
            Err(e) => return reject(js_error::value(&e)),
        };
        let kv = self.kv.clone();
        promise(async move {
            let v = kv.get(&key).await.map_err(|e| js_error::client(&e))?;
            Ok(v.as_deref().map(bytes_js).unwrap_or(JsValue::NULL))
        })
    }

    #[wasm_bindgen(js_name = kvPut, unchecked_return_type = "Promise<any>")]
    pub fn kv_put(&self, key: JsValue, value: JsValue) -> Promise {
        let (key, value) = match (js_convert::bytes(&key), js_convert::bytes(&value)) {
            (Ok(k), Ok(v)) => (k, v),
            (Err(e), _) | (_, Err(e)) => return reject(js_error::value(&e)),
        };
        let kv = self.kv.clone();
        promise(async move {
            kv.put(&key, &value).await.map_err(|e| js_error::client(&e))?;
            Ok(JsValue::UNDEFINED)
        })
    }

    #[wasm_bindgen(js_name = kvDelete, unchecked_return_type = "Promise<any>")]
    pub fn kv_delete(&self, key: JsValue) -> Promise {
        let key = match js_convert::bytes(&key) {
            Ok(k) => k,
            Err(e) => return reject(js_error::value(&e)),
        };
        let kv = self.kv.clone();
        promise(async move {
            kv.delete(&key).await.map_err(|e| js_error::client(&e))?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// `[{ key, value }]` in key order (or reversed).
    #[wasm_bindgen(js_name = kvList, unchecked_return_type = "Promise<any>")]
    pub fn kv_list(&self, options: JsValue) -> Promise {
        let list = match options::kv_list(&options) {
            Ok(l) => l,
            Err(e) => return reject(js_error::value(&e)),
        };
        let kv = self.kv.clone();
        promise(async move {
            let entries = match (list.query, list.reverse, list.limit) {
                // The v1 form, so a prefix listing also works against the oldest engines.
                (KvQuery::Prefix(p), false, None) => kv.list_prefix(&p.prefix).await,
                (query, reverse, limit) => kv.list(query, reverse, limit).await,
            }
            .map_err(|e| js_error::client(&e))?;
            let out: Array = entries
                .iter()
                .map(|e| {
                    let o = Object::new();
                    set(&o, "key", bytes_js(&e.key));
                    set(&o, "value", bytes_js(&e.value));
                    JsValue::from(o)
                })
                .collect();
            Ok(out.into())
        })
    }
}
