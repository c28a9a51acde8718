//! What JS sees of a failure, as plain Rust: a stable `code`, a `group`, a message and the
//! structured fields of that failure. [`crate::js_error`] turns an [`ErrorInfo`] into the JS
//! `Error` the glue throws; the TS layer (`js/errors.ts`) rethrows it as the matching
//! `EnvoyError` subclass. Building it here keeps the mapping exhaustive and unit-tested natively.

use crate::value::{ValueError, ValueErrorKind};
use envoy_client::{DisconnectReason, Error};
use envoy_protocol::Feature;

/// Which part failed (mirrors `EnvoyErrorGroup` in js/errors.ts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    Value,
    Sql,
    Kv,
    Actor,
    Limit,
    Connection,
    Protocol,
}

impl Group {
    pub fn as_str(self) -> &'static str {
        match self {
            Group::Value => "value",
            Group::Sql => "sql",
            Group::Kv => "kv",
            Group::Actor => "actor",
            Group::Limit => "limit",
            Group::Connection => "connection",
            Group::Protocol => "protocol",
        }
    }
}

/// One structured field's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    Bool(bool),
    /// u64 fields (generations, limits): a JS number when safe, else bigint.
    U64(u64),
    I64(i64),
    Str(String),
    /// `{ kind, max, actual? }` of a LIMIT_EXCEEDED.
    Limit {
        kind: String,
        max: u64,
        actual: Option<u64>,
    },
}

/// A failure as JS will see it.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorInfo {
    /// Stable machine-readable code (`FENCE_MISMATCH`, `SQLITE`, ...): what callers branch on.
    pub code: String,
    /// Which part failed: lets callers handle whole families (e.g. every connection error) at once.
    pub group: Group,
    /// Human-readable text; never to be parsed (every fact in it is also a field).
    pub message: String,
    /// The failure's facts as (camelCase JS property name, value).
    pub fields: Vec<(&'static str, Field)>,
}

impl ErrorInfo {
    fn new(code: impl Into<String>, group: Group, message: impl Into<String>) -> Self {
        ErrorInfo { code: code.into(), group, message: message.into(), fields: Vec::new() }
    }

    fn with(mut self, name: &'static str, value: Option<Field>) -> Self {
        if let Some(v) = value {
            self.fields.push((name, v));
        }
        self
    }

    /// The value of a field, for tests and the JS conversion.
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }
}

/// Stable name of a protocol feature (the Rust variant name; `Display` is prose).
pub fn feature_name(f: Feature) -> &'static str {
    match f {
        Feature::KvBatch => "KvBatch",
        Feature::KvDeleteRange => "KvDeleteRange",
        Feature::KvList => "KvList",
        Feature::ActorIntents => "ActorIntents",
        Feature::RemoteSqlite => "RemoteSqlite",
        // v5 features (db.batch, db.transaction, db.iterate): a gate error names them against
        // an engine below v5.
        Feature::RequestKeys => "RequestKeys",
        Feature::AtomicBatch => "AtomicBatch",
        Feature::Transactions => "Transactions",
        Feature::ResultStreams => "ResultStreams",
        Feature::LimitErrors => "LimitErrors",
    }
}

impl From<&ValueError> for ErrorInfo {
    fn from(e: &ValueError) -> Self {
        let type_name = match &e.kind {
            ValueErrorKind::UnsupportedType { type_name } | ValueErrorKind::NotBytes { type_name } => {
                Some(Field::Str(type_name.clone()))
            }
            ValueErrorKind::Undefined
            | ValueErrorKind::BigIntOutOfRange { .. }
            | ValueErrorKind::InvalidOption { .. }
            | ValueErrorKind::InvalidText => None,
        };
        ErrorInfo::new(e.kind.code(), Group::Value, e.to_string())
            .with("index", e.index.map(|i| Field::U64(i as u64)))
            .with("typeName", type_name)
    }
}

impl From<&Error> for ErrorInfo {
    fn from(e: &Error) -> Self {
        let message = e.to_string();
        match e {
            Error::Sql { code, extended_code, message: _, committed, statement_index } => {
                ErrorInfo::new(code.wire_name(), Group::Sql, message)
                    .with("extendedCode", extended_code.map(|c| Field::I64(i64::from(c))))
                    .with("committed", committed.map(Field::Bool))
                    .with("statementIndex", statement_index.map(|i| Field::U64(u64::from(i))))
            }
            Error::Kv { code, message: _ } => ErrorInfo::new(code.wire_name(), Group::Kv, message),
            Error::FenceMismatch { current_generation } => ErrorInfo::new("FENCE_MISMATCH", Group::Actor, message)
                .with("currentGeneration", current_generation.map(Field::U64)),
            Error::ActorStopping => ErrorInfo::new("ACTOR_STOPPING", Group::Actor, message),
            Error::ActorNotFound { .. } => ErrorInfo::new("ACTOR_NOT_FOUND", Group::Actor, message),
            Error::ActorNotPlaced { .. } => ErrorInfo::new("ACTOR_NOT_PLACED", Group::Actor, message),
            Error::IndeterminateResult => ErrorInfo::new("INDETERMINATE_RESULT", Group::Connection, message),
            Error::RemoteUnavailable(c) => ErrorInfo::new("REMOTE_UNAVAILABLE", Group::Protocol, message)
                .with("feature", Some(Field::Str(feature_name(c.feature).into())))
                .with("requiredVersion", Some(Field::U64(u64::from(c.required_version))))
                .with("targetVersion", Some(Field::U64(u64::from(c.target_version)))),
            Error::Timeout { timeout_ms, sent } => ErrorInfo::new("TIMEOUT", Group::Connection, message)
                .with("timeoutMs", Some(Field::U64(*timeout_ms)))
                .with("sent", Some(Field::Bool(*sent))),
            Error::LimitExceeded { kind, max, actual, message: _ } => {
                ErrorInfo::new("LIMIT_EXCEEDED", Group::Limit, message)
                    .with("limit", Some(Field::Limit { kind: kind.wire_name().into(), max: *max, actual: *actual }))
            }
            Error::Overloaded { .. } => ErrorInfo::new("OVERLOADED", Group::Limit, message),
            Error::GetOrCreateActor { code, .. } => ErrorInfo::new("GET_OR_CREATE_FAILED", Group::Actor, message)
                .with("engineCode", Some(Field::Str(code.wire_name().into()))),
            Error::Disconnected { reason } => {
                let info = ErrorInfo::new("DISCONNECTED", Group::Connection, message);
                match reason {
                    DisconnectReason::ClosedByEngine { code, .. } => info
                        .with("reason", Some(Field::Str("CLOSED_BY_ENGINE".into())))
                        .with("closeCode", Some(Field::U64(u64::from(*code)))),
                    DisconnectReason::Unauthorized { status } => info
                        .with("reason", Some(Field::Str("UNAUTHORIZED".into())))
                        .with("httpStatus", Some(Field::U64(u64::from(*status)))),
                    DisconnectReason::NoVersionSelected => {
                        info.with("reason", Some(Field::Str("NO_VERSION_SELECTED".into())))
                    }
                    DisconnectReason::GaveUp { attempts, .. } => info
                        .with("reason", Some(Field::Str("GAVE_UP".into())))
                        .with("attempts", Some(Field::U64(u64::from(*attempts)))),
                    // The wasm transport uses its host's TLS, which reports no such reason.
                    DisconnectReason::CertificateRejected { .. } => {
                        info.with("reason", Some(Field::Str("CERTIFICATE_REJECTED".into())))
                    }
                }
            }
            Error::NoCommonVersion { client_min, client_max, engine_versions } => {
                ErrorInfo::new("NO_COMMON_VERSION", Group::Protocol, message)
                    .with("clientMinVersion", Some(Field::U64(u64::from(*client_min))))
                    .with("clientMaxVersion", Some(Field::U64(u64::from(*client_max))))
                    .with("engineVersions", engine_versions.clone().map(Field::Str))
            }
            Error::Closed => ErrorInfo::new("CLOSED", Group::Connection, message),
            Error::Protocol(_) => ErrorInfo::new("PROTOCOL_VIOLATION", Group::Protocol, message),
            Error::InvalidColumn(_) => ErrorInfo::new("INVALID_COLUMN", Group::Value, message),
            Error::FromSql { .. } => ErrorInfo::new("FROM_SQL", Group::Value, message),
            Error::Deserialize(_) => ErrorInfo::new("DESERIALIZE", Group::Value, message),
            Error::Config(_) => ErrorInfo::new("INVALID_CONFIG", Group::Value, message),
            // Protocol v5 errors (js/errors.ts: TransactionError, StreamError, RequestKeyError;
            // ACTOR_LIMIT_EXCEEDED is a LimitExceededError).
            Error::RequestKeyExpired { .. } => ErrorInfo::new("REQUEST_KEY_EXPIRED", Group::Sql, message),
            Error::RequestKeyConflict { .. } => ErrorInfo::new("REQUEST_KEY_CONFLICT", Group::Sql, message),
            Error::TransactionNotFound { .. } => ErrorInfo::new("TRANSACTION_NOT_FOUND", Group::Sql, message),
            Error::TransactionExpired { .. } => ErrorInfo::new("TRANSACTION_EXPIRED", Group::Sql, message),
            Error::TransactionBusy { .. } => ErrorInfo::new("TRANSACTION_BUSY", Group::Sql, message),
            Error::TransactionAborted { reason, .. } => ErrorInfo::new("TRANSACTION_ABORTED", Group::Sql, message)
                .with("reason", reason.map(|r| Field::Str(r.wire_name().into()))),
            Error::StreamExpired { .. } => ErrorInfo::new("STREAM_EXPIRED", Group::Sql, message),
            Error::Cancelled { .. } => ErrorInfo::new("CANCELLED", Group::Sql, message),
            Error::StreamInterrupted => ErrorInfo::new("STREAM_INTERRUPTED", Group::Connection, message),
            Error::ActorLimitExceeded { .. } => ErrorInfo::new("ACTOR_LIMIT_EXCEEDED", Group::Limit, message),
            // Protocol v6 (js/errors.ts: ActorUnavailableError).
            Error::ActorUnavailable { committed, .. } => {
                ErrorInfo::new("ACTOR_UNAVAILABLE", Group::Actor, message).with("committed", committed.map(Field::Bool))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_protocol::Direction;
    use envoy_protocol::{LimitKind, ProtocolCompatibilityError, SqliteErrorCode};

    #[test]
    fn sql_error_keeps_every_fact_as_a_field() {
        let e = Error::Sql {
            code: SqliteErrorCode::Sqlite,
            extended_code: Some(2067),
            message: "UNIQUE constraint failed: t.id".into(),
            committed: Some(false),
            statement_index: Some(1),
        };
        let info = ErrorInfo::from(&e);
        assert_eq!(info.code, "SQLITE");
        assert_eq!(info.group, Group::Sql);
        assert_eq!(info.field("extendedCode"), Some(&Field::I64(2067)));
        assert_eq!(info.field("committed"), Some(&Field::Bool(false)));
        assert_eq!(info.field("statementIndex"), Some(&Field::U64(1)));
        assert!(info.message.contains("UNIQUE constraint failed"));
    }

    #[test]
    fn fence_remote_unavailable_and_limits() {
        let info = ErrorInfo::from(&Error::FenceMismatch { current_generation: Some(7) });
        assert_eq!((info.code.as_str(), info.group), ("FENCE_MISMATCH", Group::Actor));
        assert_eq!(info.field("currentGeneration"), Some(&Field::U64(7)));

        let c = ProtocolCompatibilityError {
            feature: Feature::RemoteSqlite,
            direction: Direction::ToEngine,
            required_version: 4,
            target_version: 3,
        };
        let info = ErrorInfo::from(&Error::RemoteUnavailable(c));
        assert_eq!((info.code.as_str(), info.group), ("REMOTE_UNAVAILABLE", Group::Protocol));
        assert_eq!(info.field("feature"), Some(&Field::Str("RemoteSqlite".into())));
        assert_eq!(info.field("requiredVersion"), Some(&Field::U64(4)));
        assert_eq!(info.field("targetVersion"), Some(&Field::U64(3)));

        let info = ErrorInfo::from(&Error::LimitExceeded {
            kind: LimitKind::Params,
            max: 100,
            actual: Some(101),
            message: "too many".into(),
        });
        assert_eq!(info.field("limit"), Some(&Field::Limit { kind: "PARAMS".into(), max: 100, actual: Some(101) }));
        assert_eq!(ErrorInfo::from(&Error::IndeterminateResult).code, "INDETERMINATE_RESULT");
        assert_eq!(ErrorInfo::from(&Error::ActorStopping).group, Group::Actor);
    }

    #[test]
    fn v5_errors_keep_their_code_and_reason() {
        use envoy_client::TransactionEndReason;
        let info = ErrorInfo::from(&Error::TransactionAborted {
            reason: Some(TransactionEndReason::StatementFailed),
            message: "x".into(),
        });
        assert_eq!((info.code.as_str(), info.group), ("TRANSACTION_ABORTED", Group::Sql));
        assert_eq!(info.field("reason"), Some(&Field::Str("STATEMENT_FAILED".into())));
        let info = ErrorInfo::from(&Error::TransactionExpired { message: "lease".into() });
        assert_eq!((info.code.as_str(), info.group), ("TRANSACTION_EXPIRED", Group::Sql));
        assert_eq!(ErrorInfo::from(&Error::StreamInterrupted).code, "STREAM_INTERRUPTED");
    }

    #[test]
    fn actor_unavailable_says_whether_it_ran() {
        let info = ErrorInfo::from(&Error::ActorUnavailable { message: "owner down".into(), committed: Some(false) });
        assert_eq!((info.code.as_str(), info.group), ("ACTOR_UNAVAILABLE", Group::Actor));
        assert_eq!(info.message, "actor unavailable: owner down");
        assert_eq!(info.field("committed"), Some(&Field::Bool(false)));
        // A relayed request that may have run: no `committed` (JS: undefined = unknown).
        let info = ErrorInfo::from(&Error::ActorUnavailable { message: "link dropped".into(), committed: None });
        assert_eq!(info.field("committed"), None);
    }

    #[test]
    fn value_errors() {
        let e = ValueError { index: Some(4), kind: ValueErrorKind::UnsupportedType { type_name: "Date".into() } };
        let info = ErrorInfo::from(&e);
        assert_eq!((info.code.as_str(), info.group), ("UNSUPPORTED_VALUE_TYPE", Group::Value));
        assert_eq!(info.field("index"), Some(&Field::U64(4)));
        assert_eq!(info.field("typeName"), Some(&Field::Str("Date".into())));
    }
}
