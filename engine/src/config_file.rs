//! Where `serve`'s settings come from: flags, `ENVOY_*` variables and a `--config`
//! TOML file, merged with precedence **flag > environment > file > default**.
//!
//! Every layer is read into the same [`ServeArgs`] (every field an `Option`, `None`
//! meaning "this layer says nothing"), then the layers are overlaid key by key and
//! what none of them set takes its `DEFAULT_*` value ([`ServeArgs::into_config`]).
//! The merged [`Config`] is checked by [`Config::validate`], as any other.
//!
//! Names, all derived from the flag (so a new flag gets all three at once):
//!
//! | flag | environment | file key |
//! |---|---|---|
//! | `--max-sql-bytes` | `ENVOY_MAX_SQL_BYTES` | `max_sql_bytes` |
//! | `--allowed-origin` (repeatable) | `ENVOY_ALLOWED_ORIGIN` (comma-separated) | `allowed_origin` (array) |
//!
//! The file is flat (no tables), like the flags: one key per flag. Unknown keys are
//! refused all together, each with its line; a value of the wrong type names its key.
//! `--config` (or `ENVOY_CONFIG`) names the file; it is not a key of the file.

use crate::cli::ServeArgs;
use crate::config::Config;
use clap::{Args, FromArgMatches};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Prefix of every environment variable the engine reads for `serve`.
pub const ENV_PREFIX: &str = "ENVOY_";
/// What `config print` shows instead of the auth token. Not a valid token (`<` is
/// not a token character), and refused by name if it ever comes back in a file.
pub const REDACTED: &str = "<redacted>";

/// Why the settings could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("cannot read the config file {}: {source}", path.display())]
    Read {
        /// The file named by `--config` / `ENVOY_CONFIG`.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    #[error("the config file {} is not valid TOML: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The TOML parser's message (it carries the line and column).
        message: String,
    },
    #[error("the config file {} has unknown key(s): {}; keys are the flag names of `envoy-engine serve` in snake_case, in one flat table", path.display(), keys.join(", "))]
    UnknownKeys {
        /// The file.
        path: PathBuf,
        /// Every unknown key, each with its line when found ("`key` (line 3)").
        keys: Vec<String>,
    },
    #[error("the config file {}{}: key `{key}`: {message}", path.display(), line.map(|l| format!(", line {l}")).unwrap_or_default())]
    WrongType {
        /// The file.
        path: PathBuf,
        /// The key whose value does not fit.
        key: String,
        /// Its line, when found.
        line: Option<usize>,
        /// What was expected.
        message: String,
    },
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable (`ENVOY_...`).
        var: String,
        /// What was wrong with its value.
        message: String,
    },
    #[error("{origin}: {message}")]
    Unrepresentable {
        /// Where the value came from ("the command line", or an `ENVOY_*` variable).
        origin: String,
        /// Why it cannot be carried (TOML integers stop at i64::MAX).
        message: String,
    },
    #[error("auth_token is {REDACTED:?}, the placeholder `config print` writes: put the real token in the file, or set ENVOY_AUTH_TOKEN / --auth-token")]
    RedactedToken,
}

/// The environment variable of a flag (`max-sql-bytes` → `ENVOY_MAX_SQL_BYTES`).
pub fn env_var(long: &str) -> String {
    format!("{ENV_PREFIX}{}", long.replace('-', "_").to_ascii_uppercase())
}

/// The file key of a flag (`max-sql-bytes` → `max_sql_bytes`).
pub fn file_key(long: &str) -> String {
    long.replace('-', "_")
}

/// The `serve` flags as a clap command of their own (no binary name in front).
fn serve_command() -> clap::Command {
    ServeArgs::augment_args(clap::Command::new("serve")).no_binary_name(true)
}

/// The long name of every setting flag (everything but `--config`).
fn setting_longs() -> Vec<String> {
    serve_command()
        .get_arguments()
        .filter_map(|a| a.get_long())
        .filter(|l| *l != "config" && *l != "help")
        .map(String::from)
        .collect()
}

/// Every key a config file may hold.
pub fn file_keys() -> Vec<String> {
    setting_longs().iter().map(|l| file_key(l)).collect()
}

/// Parses `serve` flags (without `serve` itself) into a layer.
pub fn parse_flags<I, T>(args: I) -> Result<ServeArgs, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let m = serve_command().try_get_matches_from(args)?;
    ServeArgs::from_arg_matches(&m)
}

/// The first line of a clap error, without its `error: ` prefix.
fn clap_message(e: &clap::Error) -> String {
    let s = e.to_string();
    let first = s.lines().next().unwrap_or("").trim();
    first.strip_prefix("error: ").unwrap_or(first).to_string()
}

/// The `ENVOY_*` variables of this process. One whose value is not UTF-8 cannot be
/// a setting: it is left out with a warning rather than silently.
pub fn process_env() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (k, v) in std::env::vars_os() {
        let Ok(k) = k.into_string() else { continue };
        if !k.starts_with(ENV_PREFIX) {
            continue;
        }
        match v.into_string() {
            Ok(v) => {
                out.insert(k, v);
            }
            Err(_) => tracing::warn!(var = %k, "ignoring an environment variable whose value is not UTF-8"),
        }
    }
    out
}

/// The environment layer: each `ENVOY_<FLAG>` in `env` parsed exactly as its flag
/// would be (same parser, so `ENVOY_DURABILITY=disk` fails like `--durability disk`).
/// An empty variable counts as unset. Other `ENVOY_*` names are ignored: they may
/// belong to other tools (the SDK, scripts).
pub fn env_layer(env: &BTreeMap<String, String>) -> Result<ServeArgs, ConfigFileError> {
    let cmd = serve_command();
    let mut table = toml::Table::new();
    let mut config = None;
    for arg in cmd.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        let var = env_var(long);
        let Some(value) = env.get(&var).filter(|v| !v.is_empty()) else { continue };
        // A repeatable flag takes a comma-separated list (origins hold no commas).
        let values: Vec<&str> = if matches!(arg.get_action(), clap::ArgAction::Append) {
            value.split(',').map(str::trim).filter(|v| !v.is_empty()).collect()
        } else {
            vec![value.as_str()]
        };
        let argv: Vec<String> = values.iter().map(|v| format!("--{long}={v}")).collect();
        let layer =
            parse_flags(argv).map_err(|e| ConfigFileError::Env { var: var.clone(), message: clap_message(&e) })?;
        if layer.config.is_some() {
            config = layer.config.clone();
        }
        table.extend(to_table(&layer, &format!("environment variable {var}"))?);
    }
    // Each value parsed alone just above, so together they parse too.
    let mut layer =
        from_table(table).map_err(|message| ConfigFileError::Env { var: format!("{ENV_PREFIX}*"), message })?;
    layer.config = config;
    Ok(layer)
}

/// A layer as a TOML table holding only the settings it sets (`origin` names the
/// layer in the error). Fails only for an integer past TOML's i64 range, which no
/// setting needs; failing beats silently dropping the layer.
fn to_table(layer: &ServeArgs, origin: &str) -> Result<toml::Table, ConfigFileError> {
    // Serializing `None` fields skips them, which is exactly "not set here".
    toml::Table::try_from(layer)
        .map_err(|e| ConfigFileError::Unrepresentable { origin: origin.to_string(), message: e.to_string() })
}

/// A layer from a TOML table (keys already known to exist).
fn from_table(table: toml::Table) -> Result<ServeArgs, String> {
    toml::Value::Table(table).try_into::<ServeArgs>().map_err(|e| e.message().to_string())
}

/// The 1-based line where `key` is set in `text`, if found (`key = ...`, `"key" = ...`
/// or a `[key]` table header).
fn line_of(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|line| {
            let t = line.trim_start();
            let rest = t
                .strip_prefix(key)
                .or_else(|| t.strip_prefix(&format!("\"{key}\"")))
                .or_else(|| t.strip_prefix(&format!("'{key}'")));
            match rest {
                Some(r) => {
                    let r = r.trim_start();
                    r.starts_with('=') || r.starts_with('.')
                }
                None => {
                    t.strip_prefix('[').map(|h| h.trim_start().trim_start_matches('[').trim_start()).is_some_and(|h| {
                        h.strip_prefix(key).is_some_and(|r| r.trim_start().starts_with(']') || r.starts_with('.'))
                    })
                }
            }
        })
        .map(|i| i + 1)
}

/// The file layer from the text of the file at `path`.
pub fn parse_file(path: &Path, text: &str) -> Result<toml::Table, ConfigFileError> {
    let table: toml::Table = toml::from_str(text)
        .map_err(|e| ConfigFileError::Syntax { path: path.to_owned(), message: e.to_string().trim().to_string() })?;
    let known = file_keys();
    let unknown: Vec<String> = table
        .keys()
        .filter(|k| !known.iter().any(|n| n == *k))
        .map(|k| match line_of(text, k) {
            Some(n) => format!("`{k}` (line {n})"),
            None => format!("`{k}`"),
        })
        .collect();
    if !unknown.is_empty() {
        return Err(ConfigFileError::UnknownKeys { path: path.to_owned(), keys: unknown });
    }
    // One key at a time, so a type error is pinned on the key that has it.
    for (key, value) in &table {
        let mut one = toml::Table::new();
        one.insert(key.clone(), value.clone());
        if let Err(message) = from_table(one) {
            return Err(ConfigFileError::WrongType {
                path: path.to_owned(),
                key: key.clone(),
                line: line_of(text, key),
                message,
            });
        }
    }
    Ok(table)
}

/// The file layer from the file at `path`.
pub fn read_file(path: &Path) -> Result<toml::Table, ConfigFileError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read { path: path.to_owned(), source })?;
    parse_file(path, &text)
}

/// The merged settings: each key from the flags if set there, else from the
/// environment, else from the file; still `None` where no layer set it.
pub fn merge(flags: ServeArgs, env: &BTreeMap<String, String>) -> Result<ServeArgs, ConfigFileError> {
    let env_layer = env_layer(env)?;
    let path = flags.config.clone().or_else(|| env_layer.config.clone());
    let mut table = match &path {
        Some(p) => read_file(p)?,
        None => toml::Table::new(),
    };
    table.extend(to_table(&env_layer, "the environment")?);
    table.extend(to_table(&flags, "the command line")?);
    // Every value was checked in its own layer, so this only fails on a bug.
    let mut merged = from_table(table)
        .map_err(|message| ConfigFileError::Unrepresentable { origin: "the merged settings".into(), message })?;
    merged.config = path;
    if merged.auth_token.as_deref() == Some(REDACTED) || merged.cluster_token.as_deref() == Some(REDACTED) {
        return Err(ConfigFileError::RedactedToken);
    }
    Ok(merged)
}

/// The validated engine configuration of `flags` over `env` over the `--config` file.
pub fn load(flags: ServeArgs, env: &BTreeMap<String, String>) -> anyhow::Result<Config> {
    Ok(load_merged(flags, env)?.1)
}

fn load_merged(flags: ServeArgs, env: &BTreeMap<String, String>) -> anyhow::Result<(ServeArgs, Config)> {
    let merged = merge(flags, env)?;
    let config = merged.clone().into_config()?;
    config.validate()?;
    Ok((merged, config))
}

/// [`load`] from command-line words (the flags of `serve`, without `serve`).
pub fn load_args<I, T>(args: I, env: &BTreeMap<String, String>) -> anyhow::Result<Config>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    load(parse_flags(args)?, env)
}

/// What `config print` writes: every setting of the effective configuration, as a
/// config file (`--config` loads it back to the same `Config`). The auth token is
/// replaced by [`REDACTED`]; the tenants' tokens are never shown (only the path of
/// their file is a setting).
pub fn print(flags: ServeArgs, env: &BTreeMap<String, String>) -> anyhow::Result<String> {
    let (merged, config) = load_merged(flags, env)?;
    let mut shown = ServeArgs::from_config(&config);
    shown.tokens_file = merged.tokens_file;
    if shown.auth_token.is_some() {
        shown.auth_token = Some(REDACTED.into());
    }
    if shown.cluster_token.is_some() {
        shown.cluster_token = Some(REDACTED.into());
    }
    let body = toml::to_string(&shown)?;
    let from = match &merged.config {
        Some(p) => format!(" (file {})", p.display()),
        None => String::new(),
    };
    Ok(format!(
        "# Effective configuration of `envoy-engine serve`{from}: flags > ENVOY_* > file > defaults.\n\
         # Keys are the flag names in snake_case; load it with --config. Secrets are redacted.\n{body}"
    ))
}

/// The default of every setting, as the text `--help` shows.
fn default_texts() -> BTreeMap<String, String> {
    let defaults = ServeArgs::from_config(&Config::new(
        crate::config::DEFAULT_LISTEN.parse().expect("the default listen address parses"),
        crate::config::DEFAULT_DATA_DIR,
    ));
    // The defaults are constants well inside TOML's range.
    let mut defaults = to_table(&defaults, "the defaults").unwrap_or_default();
    defaults.retain(|_, v| !matches!(v, toml::Value::Array(a) if a.is_empty()));
    defaults
        .into_iter()
        .map(|(k, v)| {
            let text = match v {
                toml::Value::String(s) => s,
                other => other.to_string(),
            };
            (k, text)
        })
        .collect()
}

/// Adds `[default: ..]` and `[env: ENVOY_..]` to the help of every setting flag of a
/// command built from [`ServeArgs`] (the defaults live in `Config`, not in clap, so
/// clap cannot show them by itself).
pub fn annotate_help(mut cmd: clap::Command) -> clap::Command {
    let defaults = default_texts();
    let args: Vec<(String, String)> =
        cmd.get_arguments().filter_map(|a| Some((a.get_id().to_string(), a.get_long()?.to_string()))).collect();
    for (id, long) in args {
        let default = defaults.get(&file_key(&long)).cloned();
        let var = env_var(&long);
        cmd = cmd.mut_arg(id, |a| {
            let mut help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
            if let Some(d) = default {
                help.push_str(&format!(" [default: {d}]"));
            }
            help.push_str(&format!(" [env: {var}]"));
            a.help(help)
        });
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn every_flag_is_a_file_key_and_every_setting_has_a_flag() {
        // All set: the serialized keys are exactly the settings; they must be exactly
        // the flags (minus --config), or a setting would miss a flag, variable or key.
        let all = to_table(&ServeArgs::from_config(&Config::for_tests("/tmp/x")), "test").unwrap();
        let mut serialized: Vec<String> = all.keys().cloned().collect();
        serialized.push("auth_token".into());
        serialized.push("tokens_file".into());
        serialized.push("tls_cert".into());
        serialized.push("tls_key".into());
        for unset in ["cluster", "node_id", "advertise", "cluster_token"] {
            serialized.push(unset.into());
        }
        serialized.sort();
        serialized.dedup();
        let mut keys = file_keys();
        keys.sort();
        assert_eq!(serialized, keys);
        for k in [
            "max_sql_bytes",
            "max_frame_bytes",
            "busy_timeout_ms",
            "reader_lanes_per_actor",
            "max_batch",
            "allowed_origin",
        ] {
            assert!(keys.iter().any(|x| x == k), "{k}");
        }
        assert_eq!(env_var("max-sql-bytes"), "ENVOY_MAX_SQL_BYTES");
        assert_eq!(env_var("auth-token"), "ENVOY_AUTH_TOKEN");
    }

    #[test]
    fn unknown_keys_are_all_named_with_their_lines() {
        let text = "max_connections = 3\nmax_sql_byte = 10\n\n[limits]\nmax_params = 1\n";
        let e = parse_file(Path::new("e.toml"), text).unwrap_err().to_string();
        assert!(e.contains("e.toml"), "{e}");
        assert!(e.contains("`max_sql_byte` (line 2)"), "{e}");
        assert!(e.contains("`limits` (line 4)"), "{e}");
        assert!(!e.contains("max_connections"), "{e}");
    }

    #[test]
    fn wrong_types_name_the_key() {
        let e = parse_file(Path::new("e.toml"), "listen = \"127.0.0.1:1\"\nmax_connections = \"many\"\n").unwrap_err();
        match &e {
            ConfigFileError::WrongType { key, line, .. } => {
                assert_eq!(key, "max_connections");
                assert_eq!(*line, Some(2));
            }
            other => panic!("{other:?}"),
        }
        assert!(e.to_string().contains("key `max_connections`"), "{e}");
        let e = parse_file(Path::new("e.toml"), "durability = \"disk\"").unwrap_err().to_string();
        assert!(e.contains("key `durability`"), "{e}");
        let e = parse_file(Path::new("e.toml"), "listen = \"nowhere\"").unwrap_err().to_string();
        assert!(e.contains("key `listen`"), "{e}");
        let e = parse_file(Path::new("e.toml"), "max_connections = ").unwrap_err();
        assert!(matches!(e, ConfigFileError::Syntax { .. }), "{e:?}");
    }

    #[test]
    fn env_values_parse_like_flags_and_name_the_variable() {
        let l = env_layer(&env(&[
            ("ENVOY_MAX_SQL_BYTES", "77"),
            ("ENVOY_ALLOWED_ORIGIN", "https://a.example, https://b.example"),
            ("ENVOY_DURABILITY", "os"),
            ("ENVOY_MAX_BATCH", ""),
            ("ENVOY_SOMETHING_ELSE", "ignored"),
        ]))
        .unwrap();
        assert_eq!(l.max_sql_bytes, Some(77));
        assert_eq!(l.allowed_origins, Some(vec!["https://a.example".to_string(), "https://b.example".to_string()]));
        assert_eq!(l.durability, Some(crate::config::Durability::Os));
        assert_eq!(l.max_batch, None, "an empty variable is unset");
        let e = env_layer(&env(&[("ENVOY_MAX_PARAMS", "lots")])).unwrap_err().to_string();
        assert!(e.contains("ENVOY_MAX_PARAMS"), "{e}");
    }

    #[test]
    fn flag_over_env_over_file_over_default() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("engine.toml");
        std::fs::write(&file, "max_sql_bytes = 100\nmax_params = 5\nmax_batch = 7\n").unwrap();
        let e = env(&[("ENVOY_CONFIG", file.to_str().unwrap()), ("ENVOY_MAX_PARAMS", "6"), ("ENVOY_MAX_BATCH", "8")]);
        let c = load_args(["--max-batch", "9"], &e).unwrap();
        assert_eq!(c.limits.max_sql_bytes, 100, "file");
        assert_eq!(c.limits.max_params, 6, "env over file");
        assert_eq!(c.max_batch, 9, "flag over env");
        assert_eq!(c.readers_per_actor, crate::config::DEFAULT_READERS_PER_ACTOR, "default");
    }

    #[test]
    fn a_value_past_toml_range_is_an_error_not_dropped() {
        let e = load_args(["--idle-db-close-ms", "18446744073709551615"], &BTreeMap::new()).unwrap_err().to_string();
        assert!(e.contains("the command line"), "{e}");
    }

    #[test]
    fn the_redacted_placeholder_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("engine.toml");
        std::fs::write(&file, "auth_token = \"<redacted>\"\n").unwrap();
        let path = file.to_str().unwrap();
        let e = load_args(["--config", path], &BTreeMap::new()).unwrap_err().to_string();
        assert!(e.contains("placeholder"), "{e}");
        // The real token from the environment wins over the placeholder.
        let c = load_args(["--config", path], &env(&[("ENVOY_AUTH_TOKEN", "s3cret")])).unwrap();
        assert_eq!(c.auth_token.as_deref(), Some("s3cret"));
    }

    #[test]
    fn help_shows_defaults_and_variables() {
        let mut cmd = annotate_help(serve_command());
        let help = cmd.render_help().to_string();
        assert!(help.contains("[default: 512] [env: ENVOY_MAX_CONNECTIONS]"), "{help}");
        assert!(help.contains("[env: ENVOY_AUTH_TOKEN]"), "{help}");
    }
}
