//! `RawEnvoy`: one client connection as the JS layer sees it — connect, get-or-create,
//! lifecycle handlers, close.

use crate::actor::RawActor;
use crate::js_convert::set;
use crate::js_error::{self, u64_to_js};
use crate::options;
use crate::promise::promise;
use crate::value::IntegerMode;
use envoy_client::{ActorContext, Client};
use js_sys::{Function, Object, Promise, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

/// A connection to an engine (`Envoy` in the public API wraps it).
#[wasm_bindgen]
pub struct RawEnvoy {
    /// The client; clones share its one socket and driver task.
    client: Client,
    /// Default INTEGER result mode for the actors this envoy hands out.
    integers: IntegerMode,
    /// Version negotiated on the first connection (a reconnect may land on another engine
    /// build, so the live value is read from the session when connected).
    first_version: u16,
}

/// Calls a JS handler and waits for it if it returned a Promise. A handler that throws or
/// rejects is reported on the console (it must not take the connection down).
async fn call_handler(f: &Function, arg: JsValue, what: &str) {
    let result = match f.call1(&JsValue::NULL, &arg) {
        Ok(v) => match v.dyn_into::<Promise>() {
            Ok(p) => JsFuture::from(p).await.map(|_| ()),
            Err(_) => Ok(()),
        },
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        report(what, &e);
    }
}

/// `console.error(what, error)`, where the host has a console.
fn report(what: &str, e: &JsValue) {
    let global = js_sys::global();
    let console = Reflect::get(&global, &"console".into()).ok();
    if let Some(error) = console.as_ref().and_then(|c| Reflect::get(c, &"error".into()).ok()) {
        if let Some(f) = error.dyn_ref::<Function>() {
            let _ = f.call2(console.as_ref().unwrap_or(&JsValue::NULL), &JsValue::from_str(what), e);
        }
    }
}

fn stop_info(ctx: &ActorContext) -> JsValue {
    let o = Object::new();
    set(&o, "actorId", JsValue::from_str(ctx.id()));
    set(&o, "name", JsValue::from_str(ctx.name()));
    set(&o, "key", JsValue::from_str(ctx.key()));
    set(&o, "generation", u64_to_js(ctx.generation()));
    // The schema's name for it, e.g. "REPLACED"; engines before v3 send "UNSPECIFIED".
    let reason = ctx.stop_reason().unwrap_or(envoy_client::protocol::StopReason::Unspecified);
    set(&o, "reason", JsValue::from_str(reason.wire_name()));
    o.into()
}

#[wasm_bindgen]
impl RawEnvoy {
    /// Connects and waits for the engine's Init. (Not an `async fn`: wasm-bindgen would give it
    /// its own copy of the Promise glue; see `promise.rs`.)
    #[wasm_bindgen(unchecked_return_type = "Promise<RawEnvoy>")]
    pub fn connect(options: JsValue) -> Promise {
        promise(async move {
            let opts = options::connect(&options).map_err(|e| js_error::value(&e))?;
            let client = Client::connect(opts.config).await.map_err(|e| js_error::client(&e))?;
            let first_version = client.session().map(|s| s.protocol_version).unwrap_or(0);
            Ok(RawEnvoy { client, integers: opts.integers, first_version }.into())
        })
    }

    /// The negotiated protocol version.
    #[wasm_bindgen(getter, js_name = protocolVersion)]
    pub fn protocol_version(&self) -> u16 {
        self.client.session().map(|s| s.protocol_version).unwrap_or(self.first_version)
    }

    /// What the engine advertised (limits enforced before work starts), or `null` while not
    /// connected. Limits absent at the negotiated version (below v3 / v4) are `null`.
    #[wasm_bindgen(getter, unchecked_return_type = "any")]
    pub fn session(&self) -> JsValue {
        let Some(s) = self.client.session() else { return JsValue::NULL };
        let o = Object::new();
        set(&o, "protocolVersion", JsValue::from(s.protocol_version));
        set(&o, "envoyId", JsValue::from_str(&s.envoy_id));
        set(&o, "pingIntervalMs", u64_to_js(s.ping_interval_ms));
        set(&o, "envoyLostThresholdMs", u64_to_js(s.envoy_lost_threshold_ms));
        set(&o, "actorStopThresholdMs", u64_to_js(s.actor_stop_threshold_ms));
        set(&o, "maxFrameBytes", JsValue::from(s.max_frame_bytes));
        let limits = s.limits.map(|l| {
            let o = Object::new();
            set(&o, "maxRequestBytes", JsValue::from(l.max_request_bytes));
            set(&o, "maxResponseBytes", JsValue::from(l.max_response_bytes));
            set(&o, "maxKvKeyBytes", JsValue::from(l.max_kv_key_bytes));
            set(&o, "maxKvValueBytes", JsValue::from(l.max_kv_value_bytes));
            set(&o, "maxKvBatchEntries", JsValue::from(l.max_kv_batch_entries));
            set(&o, "maxPendingRequests", JsValue::from(l.max_pending_requests));
            JsValue::from(o)
        });
        set(&o, "limits", limits.unwrap_or(JsValue::NULL));
        let sql = s.sql_limits.map(|l| {
            let o = Object::new();
            set(&o, "maxSqlBytes", JsValue::from(l.max_sql_bytes));
            set(&o, "maxParams", JsValue::from(l.max_params));
            set(&o, "maxValueBytes", JsValue::from(l.max_value_bytes));
            set(&o, "maxStatementMs", JsValue::from(l.max_statement_ms));
            JsValue::from(o)
        });
        set(&o, "sqlLimits", sql.unwrap_or(JsValue::NULL));
        // v5: what batch / transaction / iterate are bounded by (null below v5).
        let v5 = s.engine_limits.map(|l| {
            let o = Object::new();
            set(&o, "maxBatchStatements", JsValue::from(l.max_batch_statements));
            set(&o, "minTransactionLeaseMs", JsValue::from(l.min_transaction_lease_ms));
            set(&o, "maxTransactionLeaseMs", JsValue::from(l.max_transaction_lease_ms));
            set(&o, "maxTransactionWaitMs", JsValue::from(l.max_transaction_wait_ms));
            set(&o, "maxOpenTransactions", JsValue::from(l.max_open_transactions));
            set(&o, "requestKeyRetentionMs", u64_to_js(l.request_key_retention_ms));
            set(&o, "streamWindowBytes", JsValue::from(l.stream_window_bytes));
            JsValue::from(o)
        });
        set(&o, "engineLimits", v5.unwrap_or(JsValue::NULL));
        let durability = s.durability.map(|d| JsValue::from_str(d.wire_name()));
        set(&o, "durability", durability.unwrap_or(JsValue::NULL));
        o.into()
    }

    /// Resolves to a `RawActor`.
    #[wasm_bindgen(js_name = getOrCreateActor, unchecked_return_type = "Promise<RawActor>")]
    pub fn get_or_create_actor(&self, name: String, key: String) -> Promise {
        let client = self.client.clone();
        let integers = self.integers;
        promise(async move {
            let ctx = client.get_or_create_actor(&name, &key).await.map_err(|e| js_error::client(&e))?;
            Ok(RawActor::new(ctx, integers).into())
        })
    }

    /// `handler(actor: RawActor)` for every actor the engine starts here.
    #[wasm_bindgen(js_name = onActorStart)]
    pub fn on_actor_start(&self, handler: Function) {
        let integers = self.integers;
        self.client.on_actor_start(move |ctx| {
            let handler = handler.clone();
            async move { call_handler(&handler, RawActor::new(ctx, integers).into(), "onActorStart handler failed:").await }
        });
    }

    /// `handler({ actorId, name, key, generation })` when the engine stops an actor here; the
    /// engine is told the actor stopped once the handler (or its Promise) completes.
    #[wasm_bindgen(js_name = onActorStop)]
    pub fn on_actor_stop(&self, handler: Function) {
        self.client.on_actor_stop(move |ctx| {
            let handler = handler.clone();
            async move { call_handler(&handler, stop_info(&ctx), "onActorStop handler failed:").await }
        });
    }

    /// Closes the connection (in-flight calls are answered first, up to the client's close timeout).
    #[wasm_bindgen(unchecked_return_type = "Promise<void>")]
    pub fn close(&self) -> Promise {
        let client = self.client.clone();
        promise(async move {
            client.close().await;
            Ok(JsValue::UNDEFINED)
        })
    }
}
