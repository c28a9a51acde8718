//! `RawActor.begin` → `RawTransaction`: an interactive transaction (protocol v5,
//! `Db::begin`). The JS layer (`js/v5.ts`) runs `db.transaction(fn)` over it: commit when `fn`
//! resolves, rollback when it throws. A `RawTransaction` freed (or garbage-collected) without
//! commit or rollback rolls back, as the client's `Transaction` does on drop.

use crate::actor::RawActor;
use crate::js_convert::{self, set};
use crate::js_error::{self, u64_to_js};
use crate::options;
use crate::promise::promise;
use crate::value::IntegerMode;
use envoy_client::{Params, Transaction, TransactionMode};
use js_sys::{Object, Promise};
use wasm_bindgen::prelude::*;

/// An open interactive transaction (`Transaction` in the public API wraps it).
#[wasm_bindgen]
pub struct RawTransaction {
    tx: Transaction,
    /// The INTEGER mode of the `begin` call, the default of its statements.
    integers: IntegerMode,
}

#[wasm_bindgen]
impl RawActor {
    /// `{ mode?, leaseMs?, integers? }` → `RawTransaction`.
    #[wasm_bindgen(unchecked_return_type = "Promise<RawTransaction>")]
    pub fn begin(&self, options: JsValue) -> Promise {
        let prepared = self.db_with_mode(&options).and_then(|(db, integers)| {
            let mode = options::transaction_mode(&options, TransactionMode::Write).map_err(|e| js_error::value(&e))?;
            let lease = options::positive_u32(&options, "leaseMs").map_err(|e| js_error::value(&e))?;
            let db = match lease {
                Some(ms) => db.with_transaction_lease(std::time::Duration::from_millis(u64::from(ms))),
                None => db,
            };
            Ok((db, integers, mode))
        });
        let (db, integers, mode) = match prepared {
            Ok(p) => p,
            Err(e) => return Promise::reject(&e),
        };
        promise(async move {
            let tx = db.begin(mode).await.map_err(|e| js_error::client(&e))?;
            Ok(RawTransaction { tx, integers }.into())
        })
    }
}

#[wasm_bindgen]
impl RawTransaction {
    /// The idle lease the engine granted (ms).
    #[wasm_bindgen(getter, js_name = leaseMs)]
    pub fn lease_ms(&self) -> f64 {
        self.tx.lease().as_millis() as f64
    }

    /// One statement inside the transaction → the same object as `RawActor.execute`.
    #[wasm_bindgen(unchecked_return_type = "Promise<any>")]
    pub fn execute(&self, sql: String, params: JsValue, options: JsValue) -> Promise {
        let mode = match crate::options::integer_mode(&options, self.integers) {
            Ok(m) => m,
            Err(e) => return Promise::reject(&js_error::value(&e)),
        };
        let params = match js_convert::params(&params) {
            Ok(p) => p,
            Err(e) => return Promise::reject(&js_error::value(&e)),
        };
        let tx = self.tx.clone();
        promise(async move {
            let out = tx.execute(&sql, Params(params)).await.map_err(|e| js_error::client(&e))?;
            Ok(crate::outcome::execute(out, mode))
        })
    }

    /// `{ changes, cost, replayed }`.
    #[wasm_bindgen(unchecked_return_type = "Promise<any>")]
    pub fn commit(&self) -> Promise {
        let tx = self.tx.clone();
        promise(async move {
            let out = tx.commit().await.map_err(|e| js_error::client(&e))?;
            let o = Object::new();
            set(&o, "changes", u64_to_js(out.changes));
            set(&o, "cost", crate::outcome::cost(out.cost));
            set(&o, "replayed", JsValue::from_bool(out.replayed));
            Ok(o.into())
        })
    }

    /// Idempotent; succeeds for a transaction the engine already ended.
    #[wasm_bindgen(unchecked_return_type = "Promise<void>")]
    pub fn rollback(&self) -> Promise {
        let tx = self.tx.clone();
        promise(async move {
            tx.rollback().await.map_err(|e| js_error::client(&e))?;
            Ok(JsValue::UNDEFINED)
        })
    }
}
