//! The ratios against baselines, the targets, the printed table and the JSON.

use crate::procs::{EngineSettings, Machine};
use crate::stats::Summary;
use crate::workloads::IdleActors;
use serde::Serialize;

/// One comparison of a workload with its baseline.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    /// The workload measured (`W1`, …).
    pub workload: String,
    /// What is compared: `p50 latency` or `ops/s`, or a W7 resource.
    pub measure: String,
    /// The baseline it is divided by (`L1-seq`, …), or a fixed limit.
    pub baseline: String,
    /// workload ÷ baseline.
    pub ratio: Option<f64>,
    /// The project's target for it (`≤ 1.2`, `≥ 0.35`, …), if it has one.
    pub target: Option<String>,
    /// Whether the target is met; `None` when there is no target or no figure.
    pub met: Option<bool>,
}

/// Which way a target points.
#[derive(Clone, Copy)]
pub enum Goal {
    /// The ratio must be at most this.
    AtMost(f64),
    /// The ratio must be at least this.
    AtLeast(f64),
    /// No target: the ratio is context.
    None,
}

fn find<'a>(all: &'a [Summary], id: &str) -> Option<&'a Summary> {
    all.iter().find(|s| s.id == id)
}

/// workload ÷ baseline on ops/s (`p50 = false`) or p50 latency (`p50 = true`).
pub fn ratio(all: &[Summary], workload: &str, baseline: &str, p50: bool, goal: Goal) -> Option<Ratio> {
    let w = find(all, workload)?;
    let b = find(all, baseline)?;
    let r = if p50 {
        match (w.p50_us, b.p50_us) {
            (Some(w), Some(b)) if b > 0.0 => Some(w / b),
            _ => None,
        }
    } else if b.ops_per_sec > 0.0 {
        Some(w.ops_per_sec / b.ops_per_sec)
    } else {
        None
    };
    let (target, met) = match goal {
        Goal::AtMost(t) => (Some(format!("≤ {t}×")), r.map(|r| r <= t)),
        Goal::AtLeast(t) => (Some(format!("≥ {t}×")), r.map(|r| r >= t)),
        Goal::None => (None, None),
    };
    Some(Ratio {
        workload: workload.into(),
        measure: if p50 { "p50 latency" } else { "ops/s" }.into(),
        baseline: baseline.into(),
        ratio: r,
        target,
        met,
    })
}

/// W7's two targets: peak RSS under 1 GiB, descriptors within the open-database cap's budget.
pub fn w7_ratios(w7: &IdleActors) -> Vec<Ratio> {
    const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
    vec![
        Ratio {
            workload: "W7".into(),
            measure: "peak RSS".into(),
            baseline: "1 GiB".into(),
            ratio: Some(w7.peak_rss_bytes as f64 / GIB),
            target: Some("≤ 1×".into()),
            met: Some((w7.peak_rss_bytes as f64) <= GIB),
        },
        Ratio {
            workload: "W7".into(),
            measure: "peak descriptors".into(),
            baseline: format!("{} (cap {} × 12 + 256)", w7.fd_bound, w7.max_open_actor_dbs),
            ratio: Some(w7.peak_fds as f64 / w7.fd_bound as f64),
            target: Some("≤ 1×".into()),
            met: Some(w7.peak_fds <= w7.fd_bound),
        },
    ]
}

/// How a run was set up, recorded with its figures.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// Seconds of each timed round.
    pub secs_per_round: f64,
    /// Timed rounds per workload; ops/s is their median.
    pub rounds: usize,
    /// Seconds of the untimed warm-up run of each workload.
    pub warmup_secs: f64,
    /// The short form (smoke test): tiny counts, figures meaningless.
    pub short: bool,
    /// Requests in flight for W2, W3 and L1-64.
    pub in_flight: usize,
    /// Size of the echo frames: the encoded W1 request.
    pub echo_frame_bytes: usize,
    /// W6: actors created (16 at a time on one client).
    pub w6_actors: usize,
    /// The engine serving W1–W6 and W8.
    pub engine_fsync: EngineSettings,
    /// The engine serving W3 at `--durability os`.
    pub engine_os: EngineSettings,
    /// The engine serving W7.
    pub engine_w7: Option<EngineSettings>,
    /// How client and server were run.
    pub processes: String,
    /// Where the databases lived.
    pub data_dir: String,
    /// /proc/loadavg (1, 5, 15 min) when the run started: other work on the
    /// machine shows here, and the figures should be read with it.
    pub load_average_start: String,
    /// /proc/loadavg when the run ended.
    pub load_average_end: String,
}

/// Everything one run wrote to its JSON file.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Format of this file, bumped when fields change meaning.
    pub schema: &'static str,
    /// When the run started (UTC, ISO 8601).
    pub date: String,
    /// Commit measured (`-dirty` when the tree had changes).
    pub git_revision: String,
    /// The machine measured.
    pub machine: Machine,
    /// How it was measured.
    pub settings: Settings,
    /// Every workload and baseline, in the order of the table.
    pub workloads: Vec<Summary>,
    /// Comparisons with baselines and where each target stands.
    pub ratios: Vec<Ratio>,
    /// W7's resource figures (absent if W7 did not run).
    pub w7: Option<IdleActors>,
    /// Workloads that did not run, and why.
    pub skipped: Vec<String>,
}

fn us(v: Option<f64>) -> String {
    match v {
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) => format!("{v:.1}"),
        None => "–".into(),
    }
}

fn rate(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

fn yes_no(m: Option<bool>) -> &'static str {
    match m {
        Some(true) => "yes",
        Some(false) => "**no**",
        None => "",
    }
}

/// The tables as Markdown (readable in a terminal, pasted into BENCHMARKS.md as is).
pub fn markdown(r: &Report) -> String {
    let mut o = String::new();
    let m = &r.machine;
    o.push_str(&format!(
        "envoy-bench {} · revision {} · {} × {} · {} MiB · kernel {} · disk {}\n",
        r.date, r.git_revision, m.nproc, m.cpu_model, m.mem_mib, m.kernel, m.disk
    ));
    o.push_str(&format!(
        "{} rounds × {} s per workload after {} s warm-up; ops/s is the median round, latencies pool every round; \
         load average {} at start, {} at end{}\n\n",
        r.settings.rounds,
        r.settings.secs_per_round,
        r.settings.warmup_secs,
        r.settings.load_average_start,
        r.settings.load_average_end,
        if r.settings.short { " — SHORT FORM: figures mean nothing" } else { "" }
    ));
    o.push_str("| id | workload | ops/s | p50 µs | p99 µs | p99.9 µs | n | vs baseline | target | met? |\n");
    o.push_str("|---|---|---:|---:|---:|---:|---:|---|---|---|\n");
    for s in &r.workloads {
        let ratio = r.ratios.iter().find(|x| x.workload == s.id && !x.workload.starts_with("W7"));
        let (rc, tc, mc) = match ratio {
            Some(x) => (
                x.ratio.map(|v| format!("{v:.2}× {} ({})", x.baseline, x.measure)).unwrap_or_default(),
                x.target.clone().unwrap_or_default(),
                yes_no(x.met),
            ),
            None => (String::new(), String::new(), ""),
        };
        o.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            s.id,
            s.name,
            rate(s.ops_per_sec),
            us(s.p50_us),
            us(s.p99_us),
            us(s.p999_us),
            s.count,
            rc,
            tc,
            mc
        ));
    }
    if let Some(w7) = &r.w7 {
        o.push_str(&format!(
            "\nW7: {} actors opened over {} connections in {:.1} s ({:.0}/s), then left idle (engine process):\n\n",
            w7.actors, w7.connections, w7.open_secs, w7.open_per_sec
        ));
        o.push_str("| when | RSS | descriptors | target | met? |\n|---|---:|---:|---|---|\n");
        o.push_str(&format!("| before any actor | {} | {} | | |\n", mib(w7.before.rss_bytes), w7.before.fds));
        let rss = r.ratios.iter().find(|x| x.workload == "W7" && x.measure == "peak RSS");
        let fds = r.ratios.iter().find(|x| x.workload == "W7" && x.measure == "peak descriptors");
        o.push_str(&format!(
            "| peak while opening | {} | {} | RSS ≤ 1 GiB; fds ≤ {} | {} / {} |\n",
            mib(w7.peak_rss_bytes),
            w7.peak_fds,
            w7.fd_bound,
            yes_no(rss.and_then(|x| x.met)),
            yes_no(fds.and_then(|x| x.met))
        ));
        o.push_str(&format!(
            "| {} ms after the last open (idle close) | {} | {} | | |\n",
            w7.idle_wait_ms,
            mib(w7.after_idle.rss_bytes),
            w7.after_idle.fds
        ));
    }
    for s in &r.skipped {
        o.push_str(&format!("\n{s}\n"));
    }
    o
}

/// Every workload and baseline a run must report (W8 only when it was not skipped).
const REQUIRED: [&str; 14] = [
    "L1-seq",
    "L1-64",
    "L1-16",
    "L2-point",
    "L2-1000",
    "L2-full",
    "L2-normal",
    "W1",
    "W2",
    "W3-fsync",
    "W3-os",
    "W4",
    "W5",
    "W6",
];

/// Reads a report back and checks it is whole: every workload present with
/// operations counted, W7 measured, W8 either measured or said to be skipped,
/// every ratio computed. Nothing about speed.
pub fn check_json(path: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::{bail, ensure, Context};
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    ensure!(v["schema"] == "envoy-bench/1", "unknown schema {}", v["schema"]);
    for key in ["date", "git_revision"] {
        ensure!(v[key].as_str().is_some_and(|s| !s.is_empty()), "{key} missing");
    }
    ensure!(v["machine"]["nproc"].as_u64().is_some_and(|n| n > 0), "machine.nproc missing");
    let workloads = v["workloads"].as_array().context("workloads missing")?;
    let count = |id: &str| workloads.iter().find(|w| w["id"] == id).and_then(|w| w["count"].as_u64());
    for id in REQUIRED {
        match count(id) {
            Some(n) if n > 0 => {}
            Some(_) => bail!("{id} measured no operation"),
            None => bail!("{id} missing"),
        }
    }
    let skipped = v["skipped"].as_array().context("skipped missing")?;
    let w8_skipped = skipped.iter().any(|s| s.as_str().is_some_and(|s| s.starts_with("W8")));
    for id in ["W8-W1", "W8-W2", "W8-W4"] {
        ensure!(w8_skipped || count(id).is_some_and(|n| n > 0), "{id} missing and W8 not reported skipped");
    }
    let w7 = &v["w7"];
    ensure!(w7["actors"].as_u64().is_some_and(|n| n > 0), "w7 missing");
    ensure!(w7["peak_rss_bytes"].as_u64().is_some_and(|n| n > 0), "w7.peak_rss_bytes missing");
    ensure!(w7["peak_fds"].as_u64().is_some_and(|n| n > 0), "w7.peak_fds missing");
    for r in v["ratios"].as_array().context("ratios missing")? {
        ensure!(r["ratio"].is_number(), "ratio {} / {} not computed", r["workload"], r["baseline"]);
    }
    println!(
        "{}: well-formed, {} workloads, W8 {}",
        path.display(),
        workloads.len(),
        if w8_skipped { "skipped" } else { "ran" }
    );
    Ok(())
}
