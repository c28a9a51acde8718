//! Log output of the `envoy-engine` binary: human text or one JSON object per line.
//!
//! What is logged and in which spans:
//! - `envoy` span per connection: `conn_id`, `identity`, `namespace`, `envoy_key`, `version`
//!   (connection/mod.rs); lanes running that connection's work enter it too;
//! - `request` span per request at DEBUG: `actor_id`, `request_id`, `kind`. Debug so an
//!   info-level engine pays only a level check per request; `RUST_LOG=envoy_engine=debug`
//!   shows them.
//!
//! No SQL text or parameter values are logged at info level or above (specs/engine.md).
//! The filter comes from `RUST_LOG` (default `info`).

use clap::ValueEnum;

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines (colours when stderr is a terminal).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `fields.message`, other fields, `target`, and the
    /// current span and span list (`span`, `spans`) with their fields.
    Json,
}

/// Installs the process's log subscriber writing to stderr. Call once, first thing.
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(true).init(),
    }
}
