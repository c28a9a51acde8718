//! # envoy-client
//!
//! The client actor hosts use to talk to the envoy engine: actor lifecycle
//! (start/stop handlers, acks and events handled for you), per-actor KV, and
//! remote SQLite with a rusqlite-like API.
//!
//! ```no_run
//! # #[cfg(feature = "native-transport")]
//! # async fn demo() -> envoy_client::Result<()> {
//! use envoy_client::{params, Client, ClientConfig};
//! let client = Client::connect(ClientConfig { endpoint: "ws://127.0.0.1:6420".into(), ..Default::default() }).await?;
//! let actor = client.get_or_create_actor("counter", "user-1").await?;
//! let db = actor.sql();
//! db.exec("CREATE TABLE IF NOT EXISTS hits(id INTEGER PRIMARY KEY, at TEXT)").await?;
//! db.execute("INSERT INTO hits(at) VALUES (?)", params!["now"]).await?;
//! let n: i64 = db.query("SELECT count(*) AS n FROM hits", ()).await?.first().unwrap().get("n")?;
//! # Ok(()) }
//! ```
//!
//! With an engine that speaks protocol v5 the client also runs atomic
//! batches ([`Db::batch`]), interactive transactions ([`Db::transaction`],
//! [`Db::begin`]) and streamed results ([`Db::stream`]), reports each
//! request's [`SqlCost`], and makes every write exactly-once across
//! reconnects with a request key ([`ExecuteOutcome::replayed`]). Against an
//! older engine these fail with [`Error::RemoteUnavailable`] and everything
//! else works as before.
//!
//! Layers: [`core`] is a sans-IO state machine (no sockets, clocks or tasks);
//! `driver` runs it over a [`runtime::Runtime`]; `transport::native` (tokio +
//! tokio-tungstenite, feature `native-transport`, the default) and
//! `transport::wasm` (web-sys WebSocket, feature `wasm-transport`) only move
//! bytes, sleep and spawn. Exactly one transport feature must be enabled.

#[cfg(all(feature = "native-transport", feature = "wasm-transport"))]
compile_error!(
    "envoy-client: features `native-transport` and `wasm-transport` are mutually exclusive. \
     For wasm32 use `default-features = false, features = [\"wasm-transport\"]`; natively keep the default \
     (`native-transport`)."
);

#[cfg(not(any(feature = "native-transport", feature = "wasm-transport")))]
compile_error!(
    "envoy-client: enable exactly one transport feature: `native-transport` (tokio, the default) or \
     `wasm-transport` (web-sys WebSocket, for wasm32-unknown-unknown)."
);

pub mod actor;
pub mod batch;
pub mod client;
pub mod config;
pub mod core;
#[cfg(feature = "serde")]
mod de;
mod driver;
pub mod error;
pub mod kv;
pub mod rows;
pub mod runtime;
pub mod sql;
pub mod stream;
pub mod transaction;
pub mod transport;
pub mod value;

pub use actor::{ActorContext, ActorHandle};
pub use batch::{stmt, BatchMode, BatchOutcome, Statement, TransactionMode};
pub use client::Client;
pub use config::{ClientConfig, SDK_PROTOCOL_VERSION};
pub use core::{ActorInfo, ConnectionState, RequestKey, RequestOptions, SessionInfo};
pub use envoy_protocol::{Durability, EngineLimits, TransactionEndReason};
pub use error::{DisconnectReason, Error, Result};
pub use kv::{Kv, KvEntry, KvQuery};
pub use rows::{ExecuteOutcome, OwnedRow, Row, RowIndex, Rows, SqlCost, SqliteRoute};
pub use sql::Db;
pub use stream::RowStream;
pub use transaction::{CommitOutcome, Transaction};
pub use value::{FromSql, FromSqlError, Params, ToSql, Value};

/// The protocol crate, for the types the API exposes.
pub use envoy_protocol as protocol;
