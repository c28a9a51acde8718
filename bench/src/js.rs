//! W8: the JS package (`rivetkit-wasm/dist/node.js`, the wasm client) in Node 20
//! doing W1, W2 and W4. The script (`bench/js/w8.mjs`) is compiled into this
//! binary and written next to the run's data, so the binary runs from anywhere.

use crate::stats::Summary;
use crate::workloads::{FILL, IN_FLIGHT, POINT_ROWS, POINT_SQL, SCHEMA, WIDE_ROWS, WIDE_SQL};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

const SCRIPT: &str = include_str!("../js/w8.mjs");

/// Where the package's Node entry point is expected.
pub fn package_entry(repo: &Path) -> PathBuf {
    repo.join("rivetkit-wasm/dist/node.js")
}

/// Builds the JS package (`--with-js` when it is missing).
pub fn build_package(repo: &Path) -> Result<()> {
    let status = Command::new("bash").arg(repo.join("rivetkit-wasm/scripts/build.sh")).status()?;
    if !status.success() {
        bail!("rivetkit-wasm/scripts/build.sh failed ({status})");
    }
    Ok(())
}

/// Timing knobs handed to the script.
pub struct Timing {
    /// Seconds per round.
    pub secs: f64,
    /// Rounds per workload.
    pub rounds: usize,
    /// Warm-up seconds per workload.
    pub warmup: f64,
}

/// Runs the script against `url` (blocking: call it off the async runtime).
pub fn run(repo: &Path, data: &Path, url: &str, t: &Timing) -> Result<Vec<Summary>> {
    let entry = std::fs::canonicalize(package_entry(repo))?;
    let script = data.join("w8.mjs");
    std::fs::write(&script, SCRIPT)?;
    let cfg = serde_json::json!({
        "url": url,
        "pkg": format!("file://{}", entry.display()),
        "secs": t.secs,
        "rounds": t.rounds,
        "warmup": t.warmup,
        "inFlight": IN_FLIGHT,
        "schema": SCHEMA,
        "fill": FILL,
        "pointSql": POINT_SQL,
        "pointRows": POINT_ROWS,
        "wideSql": WIDE_SQL,
        "wideRows": WIDE_ROWS,
    });
    let out = Command::new("node")
        .arg("--experimental-websocket")
        .arg("--no-warnings")
        .arg(&script)
        .arg(cfg.to_string())
        .output()
        .context("running node (Node 20+ is needed for W8)")?;
    if !out.status.success() {
        bail!(
            "node W8 failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().rev().find(|l| l.starts_with('{')).context("no JSON line from the W8 script")?;
    let v: serde_json::Value = serde_json::from_str(line)?;
    let names = [
        ("W8-W1", "JS package in Node: point SELECT, sequential"),
        ("W8-W2", "JS package in Node: point SELECT, 64 in flight, one socket"),
        ("W8-W4", "JS package in Node: SELECT 1 000 rows × 100 B, sequential"),
    ];
    let mut res = Vec::new();
    for (id, name) in names {
        let w = &v[id];
        let rates: Vec<f64> =
            w["roundRates"].as_array().context("roundRates")?.iter().filter_map(|x| x.as_f64()).collect();
        res.push(Summary {
            id: id.into(),
            name: name.into(),
            ops_per_sec: crate::stats::median(&rates),
            round_rates: rates,
            p50_us: w["p50Us"].as_f64(),
            p99_us: w["p99Us"].as_f64(),
            p999_us: w["p999Us"].as_f64(),
            count: w["count"].as_u64().unwrap_or(0),
            notes: "rivetkit-wasm nodejs build, node --experimental-websocket, Envoy db.execute".into(),
        });
    }
    Ok(res)
}
