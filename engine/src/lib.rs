//! `envoy-engine`: the server at the centre of the envoy project.
//!
//! Envoys (actor hosts) connect over WebSocket (`/envoys/connect`); the engine
//! places actors on them with a generation number and runs each actor's SQL
//! against that actor's own SQLite database. Where things live:
//!
//! | concern | file |
//! |---|---|
//! | configuration and every limit | `config.rs` |
//! | start-up and the in-process API | `engine.rs` |
//! | what every task shares (`EngineState`) | `state.rs` |
//! | accept loop: header-read timeout, connection cap, TLS | `listener.rs`, `tls.rs` |
//! | configuration: flags, environment, file | `config.rs`, `cli.rs`, `config_file.rs` |
//! | HTTP router, Origin check, upgrade, version negotiation, auth | `server.rs`, `auth.rs` |
//! | tenants: tokens file, roles, namespaces | `tenants.rs` |
//! | a connection's read loop: decode frames, dispatch | `connection/mod.rs` |
//! | checks before work starts | `connection/admission.rs` |
//! | per-actor queues, permits, one blocking hop per batch | `connection/scheduler.rs` |
//! | outgoing queue, one flush per batch | `connection/writer.rs` |
//! | envoy sessions, command log, resume | `connection/session.rs` |
//! | actor registry (metadata DB) | `actor/registry.rs` |
//! | get-or-create, events, intents | `actor/lifecycle.rs` |
//! | where SQL runs | `sql/executor/` (`mod.rs` connections, `writer.rs`, `reader.rs`, `rows.rs`); `sql/group.rs` group commit; `sql/route.rs`, `sql/sandbox.rs`, `sql/values.rs` |
//! | the open actor database cap, idle close | `sql/open_dbs.rs` |
//! | protocol v5: admission of ExecV5/ExecuteV5/batches; their answers; costs | `connection/v5.rs`; `sql/v5.rs`; `sql/cost.rs` |
//! | v5 exactly-once request keys; atomic batches; keyed members on the writer | `sql/keys.rs`; `sql/batch.rs`; `sql/executor/keyed.rs` |
//! | v5 result streams: credit flow control, a thread per stream, lease, cancel, stops | `sql/stream.rs`; `sql/executor/stream.rs` |
//! | descriptor limit at start | `fdlimit.rs` |
//! | KV storage | `kv.rs` |
//! | every live (actor, generation): in-flight count and executor, one concurrent map | `generations.rs` |
//! | memory budgets for answers (per connection, engine-wide) | `budget.rs` |
//! | stop and drain, engine shutdown | `drain.rs`, `shutdown.rs` |
//! | admin HTTP API and its CLI client | `admin.rs`, `cli.rs` |
//! | operator SQL on an actor without moving it (`POST /actors/{id}/sql`) | `inspect.rs` |
//! | backup and restore of an actor's database | `backup.rs` |
//! | creating and deleting actors from the admin API | `manage.rs` |
//! | metrics (`GET /metrics`), log format | `metrics.rs`, `logging.rs` |

pub mod actor;
pub mod admin;
pub(crate) mod auth;
pub(crate) mod backup;
pub(crate) mod budget;
pub mod cli;
#[cfg(feature = "cluster")]
pub mod cluster;
pub mod config;
pub mod config_file;
pub(crate) mod connection;
pub(crate) mod drain;
mod engine;
pub mod fdlimit;
pub(crate) mod generations;
pub(crate) mod inspect;
pub(crate) mod kv;
mod listener;
pub mod logging;
pub(crate) mod manage;
pub(crate) mod metrics;
pub(crate) mod server;
pub mod shell;
pub(crate) mod shutdown;
pub mod sql;
pub(crate) mod state;
pub mod tenants;
pub(crate) mod tls;

pub use actor::registry::{ActorRecord, ActorState};
pub use config::{Config, Limits};
pub use drain::DrainReport;
pub use engine::{Engine, EngineState, RunningEngine};
