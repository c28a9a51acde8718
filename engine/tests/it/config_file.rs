//! `--config FILE`, `ENVOY_*` and flags: precedence, error messages, `config print`
//! round trip, and a file-configured engine enforcing a file-set limit.
//!
//! Settings are resolved in-process from explicit arguments and an explicit
//! environment map (never the process environment), so these tests run in parallel.

use crate::support::*;
use envoy_engine::config_file::{load_args, parse_flags, print};
use envoy_protocol::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command as Proc;

const BIN: &str = env!("CARGO_BIN_EXE_envoy-engine");

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn flag_beats_env_beats_file_beats_default() {
    let dir = temp_dir();
    let file = write(
        dir.path(),
        "engine.toml",
        "max_sql_bytes = 1000\nmax_params = 10\nmax_kv_key_bytes = 100\ndurability = \"os\"\nallowed_origin = [\"https://file.example\"]\n",
    );
    let f = file.to_str().unwrap();
    let e = env(&[
        ("ENVOY_MAX_PARAMS", "20"),
        ("ENVOY_MAX_KV_KEY_BYTES", "200"),
        ("ENVOY_ALLOWED_ORIGIN", "https://env.example"),
    ]);
    let c = load_args(["--config", f, "--max-kv-key-bytes", "300"], &e).unwrap();
    assert_eq!(c.limits.max_sql_bytes, 1000, "set by the file alone");
    assert_eq!(c.durability, envoy_engine::config::Durability::Os, "set by the file alone");
    assert_eq!(c.limits.max_params, 20, "the environment overrides the file");
    assert_eq!(c.allowed_origins, vec!["https://env.example".to_string()], "a list is replaced, not appended to");
    assert_eq!(c.limits.max_kv_key_bytes, 300, "the flag overrides the environment");
    assert_eq!(c.limits.max_value_bytes, envoy_engine::config::DEFAULT_MAX_VALUE_BYTES, "set nowhere: the default");

    // The file may also be named by ENVOY_CONFIG; --config wins over it.
    let other = write(dir.path(), "other.toml", "max_sql_bytes = 2000\n");
    let e = env(&[("ENVOY_CONFIG", f)]);
    assert_eq!(load_args(Vec::<String>::new(), &e).unwrap().limits.max_sql_bytes, 1000);
    assert_eq!(load_args(["--config", other.to_str().unwrap()], &e).unwrap().limits.max_sql_bytes, 2000);

    // Without any file the old flags and ENVOY_AUTH_TOKEN behave as before.
    let c = load_args(["--listen", "0.0.0.0:7000"], &env(&[("ENVOY_AUTH_TOKEN", "t0k")])).unwrap();
    assert_eq!((c.listen.port(), c.auth_token.as_deref()), (7000, Some("t0k")));
}

#[test]
fn unknown_keys_are_named_with_file_and_line() {
    let dir = temp_dir();
    let file = write(dir.path(), "engine.toml", "max_sql_bytes = 10\nmax_sql_byte = 10\nlisten_addr = \"x\"\n");
    let e = load_args(["--config", file.to_str().unwrap()], &BTreeMap::new()).unwrap_err().to_string();
    assert!(e.contains(file.to_str().unwrap()), "{e}");
    assert!(e.contains("`max_sql_byte` (line 2)") && e.contains("`listen_addr` (line 3)"), "{e}");
    // `config` is not a key: the file cannot name another file.
    let nested = write(dir.path(), "nested.toml", "config = \"other.toml\"\n");
    let e = load_args(["--config", nested.to_str().unwrap()], &BTreeMap::new()).unwrap_err().to_string();
    assert!(e.contains("`config` (line 1)"), "{e}");
    // A missing file is named too.
    let e = load_args(["--config", "/nonexistent/engine.toml"], &BTreeMap::new()).unwrap_err().to_string();
    assert!(e.contains("/nonexistent/engine.toml"), "{e}");
}

#[test]
fn wrong_types_are_named() {
    let dir = temp_dir();
    for (text, key) in [
        ("max_sql_bytes = \"big\"\n", "max_sql_bytes"),
        ("max_batch = -1\n", "max_batch"),
        ("listen = 6420\n", "listen"),
        ("durability = \"disk\"\n", "durability"),
        ("allowed_origin = \"https://a.example\"\n", "allowed_origin"),
    ] {
        let file = write(dir.path(), "engine.toml", text);
        let e = load_args(["--config", file.to_str().unwrap()], &BTreeMap::new()).unwrap_err().to_string();
        assert!(e.contains(&format!("key `{key}`")) && e.contains("line 1"), "{text}: {e}");
    }
    let e = load_args(Vec::<String>::new(), &env(&[("ENVOY_MAX_SQL_BYTES", "big")])).unwrap_err().to_string();
    assert!(e.contains("ENVOY_MAX_SQL_BYTES"), "{e}");
}

#[test]
fn the_merged_result_is_validated() {
    let dir = temp_dir();
    // Each layer is fine alone; together the response no longer fits the frame.
    let file = write(dir.path(), "engine.toml", "max_response_bytes = 2000000\n");
    let e = load_args(["--config", file.to_str().unwrap(), "--max-frame-bytes", "1000000"], &BTreeMap::new())
        .unwrap_err()
        .to_string();
    assert!(e.contains("max_response_bytes"), "{e}");
}

#[test]
fn config_print_loads_back_to_the_same_config() {
    let dir = temp_dir();
    let tokens = write(
        dir.path(),
        "tokens.toml",
        "[[token]]\nname = \"a\"\ntoken = \"t3nant\"\nnamespaces = [\"a\"]\nrole = \"envoy\"\n",
    );
    let file = write(
        dir.path(),
        "engine.toml",
        &format!(
            "listen = \"0.0.0.0:7001\"\ndata_dir = {:?}\ntokens_file = {:?}\nmax_sql_bytes = 4096\nbusy_timeout_ms = 250\n",
            dir.path().join("data").to_str().unwrap(),
            tokens.to_str().unwrap()
        ),
    );
    let e = env(&[("ENVOY_AUTH_TOKEN", "s3cret"), ("ENVOY_READER_LANES_PER_ACTOR", "2")]);
    let args = ["--config", file.to_str().unwrap(), "--allowed-origin", "https://a.example", "--durability", "os"];
    let original = load_args(args, &e).unwrap();
    let printed = print(parse_flags(args).unwrap(), &e).unwrap();
    assert!(!printed.contains("s3cret") && !printed.contains("t3nant"), "secrets are redacted:\n{printed}");
    assert!(printed.contains("auth_token = \"<redacted>\""), "{printed}");

    // Loaded again (the real token coming from the environment, as it did).
    let again = write(dir.path(), "printed.toml", &printed);
    let reloaded = load_args(["--config", again.to_str().unwrap()], &env(&[("ENVOY_AUTH_TOKEN", "s3cret")])).unwrap();
    assert_eq!(format!("{reloaded:?}"), format!("{original:?}"));
    assert_eq!(reloaded.tokens[0].token, "t3nant");
    // And printing that gives the same text but for the file it came from.
    let reprinted =
        print(parse_flags(["--config", again.to_str().unwrap()]).unwrap(), &env(&[("ENVOY_AUTH_TOKEN", "s3cret")]))
            .unwrap();
    let body = |s: &str| s.lines().filter(|l| !l.starts_with('#')).collect::<Vec<_>>().join("\n");
    assert_eq!(body(&reprinted), body(&printed));

    // Without the real token the placeholder is refused by name, not used as a token.
    let e = load_args(["--config", again.to_str().unwrap()], &BTreeMap::new()).unwrap_err().to_string();
    assert!(e.contains("placeholder"), "{e}");
}

#[test]
fn config_print_binary() {
    let dir = temp_dir();
    let file = write(dir.path(), "engine.toml", "max_sql_bytes = 4096\nmax_batch = 2\n");
    let out = Proc::new(BIN)
        .args(["config", "print", "--config", file.to_str().unwrap(), "--max-batch", "3"])
        .env_clear()
        .env("ENVOY_MAX_PARAMS", "9")
        .env("ENVOY_AUTH_TOKEN", "s3cret")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for line in ["max_sql_bytes = 4096", "max_batch = 3", "max_params = 9", "auth_token = \"<redacted>\""] {
        assert!(stdout.lines().any(|l| l == line), "{line} in:\n{stdout}");
    }
    assert!(!stdout.contains("s3cret"));
    let bad = write(dir.path(), "bad.toml", "max_sql_bites = 1\n");
    let out = Proc::new(BIN).args(["serve", "--config", bad.to_str().unwrap()]).env_clear().output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("`max_sql_bites` (line 1)"), "{stderr}");
}

#[tokio::test]
async fn a_file_configured_engine_enforces_the_file_limit() {
    let dir = temp_dir();
    let file = write(
        dir.path(),
        "engine.toml",
        &format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = {:?}\nmax_sql_bytes = 128\n",
            dir.path().join("data").to_str().unwrap()
        ),
    );
    let config = load_args(["--config", file.to_str().unwrap()], &BTreeMap::new()).unwrap();
    let engine = start_with(config).await;
    let mut c = RawClient::connect(engine.local_addr(), ConnectOpts::new("ns", "e")).await;
    assert_eq!(c.init.metadata.sql_limits.as_ref().unwrap().max_sql_bytes, 128, "advertised");
    let a = c.get_or_create("db", "1").await;
    let long = format!("SELECT '{}'", "x".repeat(200));
    let e = sql_err(c.execute(&a, &long, vec![]).await);
    assert_eq!(e.code, SqliteErrorCode::LimitExceeded, "{e:?}");
    assert_eq!(e.limit.unwrap().kind, LimitKind::SqlBytes);
    assert_eq!(ok(c.execute(&a, "SELECT 1", vec![]).await).rows, vec![vec![Value::Integer(1)]]);
    engine.shutdown().await;
}

#[test]
fn the_spec_flag_table_lists_every_setting() {
    // The flag table of specs/engine.md is the key list of the config file: keep them one.
    let spec = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs/engine.md")).unwrap();
    for key in envoy_engine::config_file::file_keys() {
        let flag = format!("| `--{}`", key.replace('_', "-"));
        assert!(spec.contains(&flag), "specs/engine.md has no row for {flag}");
    }
}
