//! The one error type of the client.
//!
//! Every failure is a variant with typed fields, so callers match on it instead
//! of parsing messages. The variants that matter for retry logic say whether
//! the work happened: [`Error::IndeterminateResult`] (unknown), [`Error::Sql`]
//! with `committed`, and the rejections that happen before any work
//! ([`Error::FenceMismatch`], [`Error::ActorStopping`], [`Error::LimitExceeded`],
//! [`Error::Overloaded`], [`Error::RemoteUnavailable`]), and
//! [`Error::ActorUnavailable`] with `committed`.
//!
//! Messages name protocol codes by their wire names (`SQLITE`,
//! `LIMIT_EXCEEDED`, `REQUEST_BYTES`, ...), never through `Debug`: formatting
//! protocol values with `Debug` would pull float and string-escape formatting
//! into the `.wasm` (specs/wasm.md, "Size").

pub use envoy_protocol::{
    ActorErrorCode, KvErrorCode, LimitKind, ProtocolCompatibilityError, ProtocolDecodeError, SqliteErrorCode,
    TransactionEndReason,
};

/// Result with the client's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the client.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The engine ran the SQL request and it failed (or was refused for a
    /// reason without a dedicated variant: invalid request, forbidden
    /// statement, statement deadline, interruption, internal error).
    #[error("SQL error ({}{}): {message}", code.wire_name(), extended_code.map(|c| format!(", extended code {c}")).unwrap_or_default())]
    Sql {
        /// Which kind of failure; [`SqliteErrorCode::Sqlite`] when SQLite itself failed.
        code: SqliteErrorCode,
        /// SQLite's extended result code, when SQLite produced the error.
        extended_code: Option<i32>,
        message: String,
        /// `Some(true)`: this request's changes are committed; `Some(false)`:
        /// nothing was committed; `None`: unknown.
        committed: Option<bool>,
        /// For `exec`: 0-based index of the statement that failed.
        statement_index: Option<u32>,
    },
    /// A KV request failed for a reason without a dedicated variant (including
    /// `LIMIT_EXCEEDED`: KV limit errors name the limit only in `message`).
    #[error("KV error ({}): {message}", code.wire_name())]
    Kv { code: KvErrorCode, message: String },
    /// The request named a generation that is no longer the actor's; nothing ran.
    #[error("fence mismatch: the request's generation is stale (the actor is now at {})", current_generation.map_or("an unknown generation".to_string(), |g| format!("generation {g}")))]
    FenceMismatch {
        /// The actor's generation now, when the engine said (KV errors may omit it).
        current_generation: Option<u64>,
    },
    /// The actor is stopping (draining); the request was not run.
    #[error("the actor is stopping; the request was not run")]
    ActorStopping,
    /// The engine does not know this actor.
    #[error("actor not found: {message}")]
    ActorNotFound { message: String },
    /// The actor exists but is not placed on this envoy.
    #[error("actor not placed on this envoy: {message}")]
    ActorNotPlaced { message: String },
    /// The request was sent and the connection was lost before its answer:
    /// it may or may not have run. Never retried automatically unless it is a
    /// read (see `RequestOptions::idempotent`).
    #[error("the connection was lost after the request was sent: it may or may not have run")]
    IndeterminateResult,
    /// The engine this client is connected to speaks a protocol version that
    /// cannot carry this request (e.g. SQL against a v3 engine). Nothing was sent.
    #[error("remote unavailable: {0}")]
    RemoteUnavailable(ProtocolCompatibilityError),
    /// The request's deadline passed before an answer came.
    #[error("request timed out after {timeout_ms} ms ({})", if *sent { "it was sent and may have run" } else { "it was never sent" })]
    Timeout {
        timeout_ms: u64,
        /// Whether the request had been sent: if so, it may still have run.
        sent: bool,
    },
    /// A limit was exceeded, before any work (checked by the client or the engine).
    #[error("limit exceeded: {} max {max}{} — {message}", kind.wire_name(), actual.map(|a| format!(", actual {a}")).unwrap_or_default())]
    LimitExceeded { kind: LimitKind, max: u64, actual: Option<u64>, message: String },
    /// The engine is overloaded (too many pending requests); nothing ran. Retry later.
    #[error("engine overloaded: {message}")]
    Overloaded { message: String },
    /// `get_or_create_actor` was refused.
    #[error("get-or-create actor failed ({}): {message}", code.wire_name())]
    GetOrCreateActor { code: ActorErrorCode, message: String },
    /// The connection ended for good (the engine evicted this envoy, rejected
    /// its token or hello) or could not be re-established; the request was not sent.
    #[error("disconnected for good: {reason}")]
    Disconnected { reason: DisconnectReason },
    /// The engine speaks no protocol version this client speaks (HTTP 426).
    #[error("the engine speaks no protocol version this client speaks (client v{client_min}–v{client_max}, engine {})", engine_versions.as_deref().unwrap_or("unknown"))]
    NoCommonVersion {
        client_min: u16,
        client_max: u16,
        /// The engine's `x-envoy-protocol-versions` header, e.g. `1-3`.
        engine_versions: Option<String>,
    },
    /// `close()` was called (or the client was dropped) before the request was sent.
    #[error("the client is closed")]
    Closed,
    /// The engine answered with something that does not fit the request.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// A column index or name that the row does not have.
    #[error("no such column: {0}")]
    InvalidColumn(String),
    /// A value could not be converted to the requested Rust type.
    #[error("column {column}: cannot convert {found} to {expected}")]
    FromSql { column: String, expected: &'static str, found: &'static str },
    /// Row deserialisation (feature `serde`) failed.
    #[error("cannot deserialize row: {0}")]
    Deserialize(String),
    /// The client's configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// v5: the request key is older than the engine's `requestKeyRetentionMs`:
    /// the engine can no longer tell whether the first send ran. Nothing ran now.
    #[error("request key expired: the engine no longer knows whether this write ran ({message})")]
    RequestKeyExpired { message: String },
    /// v5: the request key was recorded for a different request (another
    /// actor, other SQL or parameters). Nothing ran now.
    #[error("request key conflict: the key belongs to another request ({message})")]
    RequestKeyConflict { message: String },
    /// v5: the engine knows no open transaction by this id on this connection
    /// (never begun, already committed, or rolled back by this client).
    #[error("transaction not found: {message}")]
    TransactionNotFound { message: String },
    /// v5: the transaction's lease ran out (no request named it for its
    /// lease); the engine rolled it back. Nothing of it was committed.
    #[error("transaction expired: its lease ran out and it was rolled back ({message})")]
    TransactionExpired { message: String },
    /// v5: the actor's writer was held by another interactive transaction for
    /// longer than the engine's `maxTransactionWaitMs`, or a DEFERRED
    /// transaction's first write found a newer commit. The request did not run.
    #[error("transaction busy: {message}")]
    TransactionBusy { message: String },
    /// v5: the transaction was rolled back by the engine (or died with the
    /// connection that began it), for `reason` when known. Nothing of it was
    /// committed.
    #[error("transaction aborted ({}): {message}", reason.map_or("reason unknown", |r| r.wire_name()))]
    TransactionAborted { reason: Option<TransactionEndReason>, message: String },
    /// v5: the result stream was closed because the client granted no credit
    /// for longer than the stream's lease. Rows already yielded stay valid.
    #[error("result stream expired: {message}")]
    StreamExpired { message: String },
    /// v5: the request (a result stream) was cancelled by this client.
    #[error("cancelled: {message}")]
    Cancelled { message: String },
    /// v5: the connection was lost while a result stream was open. Rows
    /// already yielded stay valid; the rest were not delivered (open a new
    /// stream to read them).
    #[error("the connection was lost while the result stream was open")]
    StreamInterrupted,
    /// v5: the engine refused to place the actor because a placement limit
    /// (`maxActorsPerConnection` or `maxOpenActorDatabases`, named in the
    /// message) would be passed. Nothing was placed.
    #[error("actor placement limit exceeded: {message}")]
    ActorLimitExceeded { message: String },
    /// v6 (cluster mode): the engine node that owns the actor is down or
    /// unreachable, or the node this client talks to lost its cluster lease.
    /// Retry later (with backoff): the actor is never re-created empty on
    /// another node, so it comes back with its data once its owner does.
    /// Engines below v6 answer this as [`Error::Overloaded`] (a get-or-create
    /// below v5: [`Error::GetOrCreateActor`] with `INTERNAL`), the message
    /// starting with `actor unavailable: `.
    #[error("actor unavailable: {message}")]
    ActorUnavailable {
        message: String,
        /// `Some(false)`: nothing ran (SQL answers say so; a get-or-create
        /// placed nothing and is safe to send again); `None`: unknown — a SQL
        /// request the engine relayed to the owner node when the link dropped
        /// may have run (a keyed write sent again with its key would be
        /// answered `REPLAYED`), and KV answers never say.
        committed: Option<bool>,
    },
}

/// Why a connection ended for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The engine closed with a code after which the client must not reconnect
    /// (see `envoy_protocol::close`): evicted by a newer connection with the same
    /// envoy key, unauthorized, or a hello that did not match.
    ClosedByEngine { code: u16, reason: String },
    /// The upgrade was refused with HTTP 401/403.
    Unauthorized { status: u16 },
    /// The engine did not select a protocol version this client offered.
    NoVersionSelected,
    /// The reconnect budget (`ClientConfig::max_reconnect_attempts`) ran out.
    GaveUp { attempts: u32, last_error: String },
    /// The engine's TLS certificate was refused; `message` is rustls' reason.
    CertificateRejected { message: String },
}

impl std::fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DisconnectReason::ClosedByEngine { code, reason } => {
                write!(f, "the engine closed the connection with code {code} ({reason})")
            }
            DisconnectReason::Unauthorized { status: 401 } => write!(f, "the engine refused the token (HTTP 401)"),
            DisconnectReason::Unauthorized { status } => write!(
                f,
                "the engine refused this connection (HTTP {status}): the token may not use this namespace or \
                 envoy key (another token owns it), or the request's Origin or Host is not allowed"
            ),
            DisconnectReason::NoVersionSelected => write!(f, "the engine selected no protocol version"),
            DisconnectReason::GaveUp { attempts, last_error } => {
                write!(f, "gave up after {attempts} connection attempts (last error: {last_error})")
            }
            DisconnectReason::CertificateRejected { message } => write!(
                f,
                "the engine's TLS certificate was refused ({message}): trust its CA with \
                 ClientConfig::tls_root_ca_pem (shell: --tls-ca); a self-signed certificate must be an \
                 end-entity one that names the host (README, \"TLS with a self-signed certificate\")"
            ),
        }
    }
}

impl Error {
    /// The 0-based index of the failing statement, for an `exec` or a batch
    /// whose statement failed.
    pub fn statement_index(&self) -> Option<u32> {
        if let Error::Sql { statement_index, .. } = self {
            *statement_index
        } else {
            None
        }
    }

    /// Whether the request certainly did not run, so sending it again is safe.
    pub fn is_not_run(&self) -> bool {
        match self {
            Error::FenceMismatch { .. }
            | Error::ActorStopping
            | Error::ActorNotFound { .. }
            | Error::ActorNotPlaced { .. }
            | Error::RemoteUnavailable(_)
            | Error::LimitExceeded { .. }
            | Error::Overloaded { .. }
            | Error::Disconnected { .. }
            | Error::NoCommonVersion { .. }
            | Error::Closed
            | Error::RequestKeyConflict { .. }
            | Error::TransactionNotFound { .. }
            | Error::TransactionExpired { .. }
            | Error::TransactionBusy { .. }
            | Error::TransactionAborted { .. }
            | Error::StreamExpired { .. }
            | Error::Cancelled { .. }
            | Error::StreamInterrupted
            | Error::ActorLimitExceeded { .. } => true,
            Error::Sql { committed, .. } | Error::ActorUnavailable { committed, .. } => *committed == Some(false),
            Error::Timeout { sent, .. } => !*sent,
            // Refused before any work.
            Error::Kv { code, .. } => matches!(code, KvErrorCode::LimitExceeded | KvErrorCode::InvalidRequest),
            // Nothing ran now, but the first send may have: not safe to send again blindly.
            Error::RequestKeyExpired { .. }
            | Error::IndeterminateResult
            | Error::GetOrCreateActor { .. }
            | Error::Protocol(_)
            | Error::InvalidColumn(_)
            | Error::FromSql { .. }
            | Error::Deserialize(_)
            | Error::Config(_) => false,
        }
    }
}
