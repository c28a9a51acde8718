//! Reads the JS option objects: `Envoy.connect({...})`, per-call `{ integers }`, `kv.list({...})`.
//! A wrong type is an INVALID_OPTION error, never a silent default.

use crate::js_convert::{self, get};
use crate::value::{IntegerMode, ValueError, ValueErrorKind};
use envoy_client::protocol::{KvQuery, KvQueryPrefix, KvQueryRange};
use envoy_client::ClientConfig;
use wasm_bindgen::JsValue;

fn invalid(option: &'static str, got: impl Into<String>) -> ValueError {
    ValueError { index: None, kind: ValueErrorKind::InvalidOption { option, got: got.into() } }
}

fn describe(v: &JsValue) -> String {
    v.as_string().map(|s| format!("\"{s}\"")).unwrap_or_else(|| format!("{v:?}"))
}

fn string(obj: &JsValue, key: &'static str, required: bool) -> Result<Option<String>, ValueError> {
    match get(obj, key) {
        None if required => Err(invalid(key, "missing (a string is required)")),
        None => Ok(None),
        Some(v) => v.as_string().map(Some).ok_or_else(|| invalid(key, format!("{} (not a string)", describe(&v)))),
    }
}

fn non_negative_integer(obj: &JsValue, key: &'static str) -> Result<Option<u64>, ValueError> {
    match get(obj, key) {
        None => Ok(None),
        Some(v) => match v.as_f64() {
            Some(n) if n >= 0.0 && n.fract() == 0.0 && n <= crate::value::MAX_SAFE_INTEGER as f64 => Ok(Some(n as u64)),
            _ => Err(invalid(key, format!("{} (not a non-negative integer)", describe(&v)))),
        },
    }
}

fn boolean(obj: &JsValue, key: &'static str) -> Result<Option<bool>, ValueError> {
    match get(obj, key) {
        None => Ok(None),
        Some(v) => v.as_bool().map(Some).ok_or_else(|| invalid(key, format!("{} (not a boolean)", describe(&v)))),
    }
}

/// `{ integers?: "auto" | "bigint" }`, falling back to `default`.
pub fn integer_mode(obj: &JsValue, default: IntegerMode) -> Result<IntegerMode, ValueError> {
    if !obj.is_undefined() && !obj.is_null() && !obj.is_object() {
        return Err(invalid("options", format!("{} (not an object)", describe(obj))));
    }
    match string(obj, "integers", false)? {
        None => Ok(default),
        Some(s) => IntegerMode::parse(&s),
    }
}

/// What `Envoy.connect(options)` is configured with.
pub struct ConnectOptions {
    /// The client's configuration.
    pub config: ClientConfig,
    /// How INTEGER results come back by default on every call of this envoy.
    pub integers: IntegerMode,
}

/// Reads `{ endpoint, namespace, poolName, token?, envoyKey?, integers?, connectTimeoutMs?,
/// requestTimeoutMs? }`.
pub fn connect(obj: &JsValue) -> Result<ConnectOptions, ValueError> {
    if !obj.is_object() {
        return Err(invalid("options", format!("{} (Envoy.connect takes an options object)", describe(obj))));
    }
    let mut config = ClientConfig {
        endpoint: string(obj, "endpoint", true)?.unwrap_or_default(),
        namespace: string(obj, "namespace", true)?.unwrap_or_default(),
        pool_name: string(obj, "poolName", true)?.unwrap_or_default(),
        token: string(obj, "token", false)?,
        ..ClientConfig::default()
    };
    if let Some(key) = string(obj, "envoyKey", false)? {
        config.envoy_key = key;
    }
    if let Some(ms) = non_negative_integer(obj, "connectTimeoutMs")? {
        if ms == 0 {
            return Err(invalid("connectTimeoutMs", "0 (must be positive)"));
        }
        config.initial_connect_timeout_ms = ms;
    }
    if let Some(ms) = non_negative_integer(obj, "requestTimeoutMs")? {
        config.request_timeout_ms = if ms == 0 { None } else { Some(ms) };
    }
    let integers = integer_mode(obj, IntegerMode::Auto)?;
    Ok(ConnectOptions { config, integers })
}

/// What `kv.list(options)` asks for.
pub struct KvList {
    pub query: KvQuery,
    pub reverse: bool,
    pub limit: Option<u32>,
}

/// Reads `{ prefix?, start?, end?, reverse?, limit? }` (prefix and start/end are exclusive).
pub fn kv_list(obj: &JsValue) -> Result<KvList, ValueError> {
    if !obj.is_undefined() && !obj.is_null() && !obj.is_object() {
        return Err(invalid("options", format!("{} (not an object)", describe(obj))));
    }
    let bytes = |key: &'static str| -> Result<Option<Vec<u8>>, ValueError> {
        get(obj, key)
            .map(|v| js_convert::bytes(&v).map_err(|_| invalid(key, "not a string, Uint8Array or ArrayBuffer")))
            .transpose()
    };
    let (prefix, start, end) = (bytes("prefix")?, bytes("start")?, bytes("end")?);
    let query = match (prefix, start, end) {
        (None, None, None) => KvQuery::All,
        (Some(prefix), None, None) => KvQuery::Prefix(KvQueryPrefix { prefix }),
        (None, Some(start), Some(end)) => KvQuery::Range(KvQueryRange { start, end }),
        (Some(_), _, _) => return Err(invalid("prefix", "given with start/end (use one or the other)")),
        (None, _, _) => return Err(invalid("start", "start and end must be given together")),
    };
    let limit = match non_negative_integer(obj, "limit")? {
        None => None,
        Some(n) => Some(u32::try_from(n).map_err(|_| invalid("limit", format!("{n} (above u32)")))?),
    };
    Ok(KvList { query, reverse: boolean(obj, "reverse")?.unwrap_or(false), limit })
}

// ---- protocol v5 calls --------------------------------------------------------------------

/// `mode: "read" | "write" | "deferred"` of `db.batch` / `db.transaction`, else `default`.
pub fn transaction_mode(
    obj: &JsValue,
    default: envoy_client::TransactionMode,
) -> Result<envoy_client::TransactionMode, ValueError> {
    use envoy_client::TransactionMode as M;
    match string(obj, "mode", false)?.as_deref() {
        None => Ok(default),
        Some("read") => Ok(M::Read),
        Some("write") => Ok(M::Write),
        Some("deferred") => Ok(M::Deferred),
        Some(other) => Err(invalid("mode", format!("\"{other}\" (\"read\", \"write\" or \"deferred\")"))),
    }
}

/// A positive `u32` option (`leaseMs`, `creditBytes`), if given.
pub fn positive_u32(obj: &JsValue, key: &'static str) -> Result<Option<u32>, ValueError> {
    match non_negative_integer(obj, key)? {
        None => Ok(None),
        Some(n) if n > 0 && n <= u64::from(u32::MAX) => Ok(Some(n as u32)),
        Some(n) => Err(invalid(key, format!("{n} (must be between 1 and 2^32 - 1)"))),
    }
}
