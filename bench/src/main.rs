//! `envoy-bench`: the benchmark suite. Starts its own engines (release build,
//! separate processes, loopback) and an echo server, measures W1–W8 with the
//! real clients next to their baselines (L1 WebSocket echo, L2 in-process
//! SQLite) in the same run, prints a Markdown table and writes JSON.
//!
//! Usage: `scripts/bench.sh [--short] [--secs S] [--rounds N] [--with-js]`
//! (which builds and runs `envoy-bench`). `envoy-bench --help` lists every flag.
//! `envoy-bench check-json FILE` checks a written report is complete (the smoke test).
//! `envoy-bench stream [--stream-bytes N]` measures one v5 result stream (see `stream.rs`).
//! Figures only: nothing here fails because something is slow.

mod echo;
mod inproc;
mod js;
mod procs;
mod report;
mod stats;
mod stream;
mod workloads;

use anyhow::{Context, Result};
use clap::Parser;
use envoy_client::protocol::{
    encode_to_engine, SqliteExecuteRequest, ToEngine, ToEngineSqliteExecute, Value, IMPLEMENTED_PROTOCOL_VERSION,
};
use envoy_client::{Client, Db};
use report::{ratio, Goal, Report, Settings};
use stats::{summarize, Round, Summary};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Bytes;
use workloads::{Op, IN_FLIGHT};

#[derive(Parser, Debug)]
#[command(name = "envoy-bench", about = "The envoy benchmark suite: engine workloads against their baselines")]
struct Args {
    /// Seconds of each timed round of each workload.
    #[arg(long, default_value_t = 2.0)]
    secs: f64,
    /// Timed rounds per workload (interleaved with the baselines); ops/s is the median round.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Untimed warm-up seconds per workload.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Smoke form: every workload with tiny counts, in seconds. Figures mean nothing.
    #[arg(long)]
    short: bool,
    /// Where the JSON goes (the Markdown table goes next to it as .md).
    #[arg(long, default_value = "target/bench/latest.json")]
    json: PathBuf,
    /// The engine binary; default: `envoy-engine` next to this binary.
    #[arg(long)]
    engine_bin: Option<PathBuf>,
    /// Scratch directory for the engines' and in-process databases (emptied first, removed after).
    #[arg(long, default_value = "target/bench/run")]
    data_dir: PathBuf,
    /// The repository root (for the JS package and git).
    #[arg(long, default_value = ".")]
    repo: PathBuf,
    /// Build the JS package first if it is missing (else W8 is skipped).
    #[arg(long)]
    with_js: bool,
    /// Skip W8 even if the package is built.
    #[arg(long)]
    no_js: bool,
    /// W6: new actors created.
    #[arg(long)]
    w6_actors: Option<usize>,
    /// W7: actors opened then left idle.
    #[arg(long)]
    w7_actors: Option<usize>,
    /// W7: actors per connection (the engine allows 1024 by default).
    #[arg(long)]
    w7_per_connection: Option<usize>,
    /// Run only these ids, comma-separated (e.g. `W1,L1-seq` or `W7`), for profiling one workload.
    /// The report then lacks the others (and `check-json` refuses it).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// W7: the engine's `--idle-db-close-ms`.
    #[arg(long)]
    w7_idle_close_ms: Option<u64>,
}

fn main() -> Result<()> {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("echo-server") {
        let listen = argv.get(3).context("usage: envoy-bench echo-server --listen ADDR")?.parse()?;
        return echo::serve(listen);
    }
    if argv.get(1).map(String::as_str) == Some("stream") {
        // `envoy-bench stream [--stream-bytes N] ...`: the v5 result-stream benchmark (its own flags).
        return stream::main(stream::StreamArgs::parse_from(&argv[1..]));
    }
    if argv.get(1).map(String::as_str) == Some("check-json") {
        let path = argv.get(2).context("usage: envoy-bench check-json FILE")?;
        return report::check_json(std::path::Path::new(path));
    }
    let mut args = Args::parse();
    if args.short {
        args.secs = args.secs.min(0.2);
        args.rounds = 1;
        args.warmup = args.warmup.min(0.1);
    }
    // One thread for every client: client work never competes with itself, and
    // the echo and envoy clients get the same share of the machine.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(run(args))
}

/// The live sockets, clients and databases a round uses.
struct Ctx {
    /// Echo socket for L1-seq and L1-64 (one at a time).
    echo: echo::Ws,
    /// 16 echo sockets for L1-16.
    echo_many: Vec<echo::Ws>,
    /// The echo frame: as long as an encoded W1 request.
    payload: Bytes,
    /// W1, W2, W4: one actor on the fsync engine (one client, one socket).
    main: Db,
    /// W3 at fsync: its own actor and socket.
    w3_fsync: Db,
    /// W3 at os: an actor on the os engine.
    w3_os: Db,
    /// W5: 16 actors, each on its own client.
    w5: Vec<Db>,
    /// The clients behind the handles above, closed at the end.
    clients: Vec<Client>,
    /// L2 (blocking work: run off the runtime thread).
    inproc: Arc<Mutex<inproc::InProc>>,
}

/// One timed (or warm-up) run of one workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    L1Seq,
    W1,
    L1Pipe,
    W2,
    L1Many,
    W5,
    L2Point,
    W4,
    L2Wide,
    W3Fsync,
    L2Full,
    W3Os,
    L2Normal,
}

const PHASES: [Phase; 13] = [
    Phase::L1Seq,
    Phase::W1,
    Phase::L1Pipe,
    Phase::W2,
    Phase::L1Many,
    Phase::W5,
    Phase::L2Point,
    Phase::W4,
    Phase::L2Wide,
    Phase::W3Fsync,
    Phase::L2Full,
    Phase::W3Os,
    Phase::L2Normal,
];

impl Phase {
    /// Id, description and notes of the summary row.
    fn describe(self, frame: usize) -> (&'static str, String, &'static str) {
        const SDK: &str = "envoy-client (native transport)";
        match self {
            Phase::L1Seq => {
                ("L1-seq", format!("WebSocket echo, {frame} B frames, sequential"), "tokio-tungstenite both sides")
            }
            Phase::L1Pipe => (
                "L1-64",
                format!("WebSocket echo, {frame} B frames, 64 in flight, one socket"),
                "tokio-tungstenite both sides",
            ),
            Phase::L1Many => (
                "L1-16",
                format!("WebSocket echo, {frame} B frames, 16 sockets each sequential"),
                "tokio-tungstenite both sides",
            ),
            Phase::L2Point => (
                "L2-point",
                "in-process rusqlite: point SELECT by primary key".into(),
                "rusqlite, cached statement, WAL",
            ),
            Phase::L2Wide => {
                ("L2-1000", "in-process rusqlite: SELECT 1 000 rows × 100 B".into(), "rusqlite, owned values, WAL")
            }
            Phase::L2Full => (
                "L2-full",
                "in-process rusqlite: autocommit INSERT, synchronous=FULL".into(),
                "rusqlite, WAL: one fsync per commit",
            ),
            Phase::L2Normal => {
                ("L2-normal", "in-process rusqlite: autocommit INSERT, synchronous=NORMAL".into(), "rusqlite, WAL")
            }
            Phase::W1 => ("W1", "point SELECT by primary key, sequential".into(), SDK),
            Phase::W2 => ("W2", "point SELECT, 64 in flight, one socket".into(), SDK),
            Phase::W3Fsync => ("W3-fsync", "autocommit INSERT, 64 writers, one actor, --durability fsync".into(), SDK),
            Phase::W3Os => ("W3-os", "autocommit INSERT, 64 writers, one actor, --durability os".into(), SDK),
            Phase::W4 => ("W4", "SELECT 1 000 rows × 100 B, sequential".into(), SDK),
            Phase::W5 => {
                ("W5", "16 clients × 16 actors, each sequential, 80 % point SELECT / 20 % INSERT (fsync)".into(), SDK)
            }
        }
    }
}

/// A round of in-process SQLite, handed to a blocking thread.
type InProcRound = Box<dyn FnOnce(&mut inproc::InProc) -> Result<Round> + Send>;

async fn run_phase(ctx: &mut Ctx, phase: Phase, dur: Duration) -> Result<Round> {
    let blocking = |f: InProcRound| {
        let ip = ctx.inproc.clone();
        tokio::task::spawn_blocking(move || f(&mut ip.lock().unwrap_or_else(|e| e.into_inner())))
    };
    match phase {
        Phase::L1Seq => echo::sequential(&mut ctx.echo, &ctx.payload, dur).await,
        Phase::L1Pipe => echo::pipelined(&mut ctx.echo, &ctx.payload, IN_FLIGHT, dur).await,
        Phase::L1Many => echo::many(&mut ctx.echo_many, &ctx.payload, dur).await,
        Phase::L2Point => blocking(Box::new(move |ip| ip.point_select(dur))).await?,
        Phase::L2Wide => blocking(Box::new(move |ip| ip.wide_select(dur))).await?,
        Phase::L2Full => blocking(Box::new(move |ip| ip.insert("FULL", dur))).await?,
        Phase::L2Normal => blocking(Box::new(move |ip| ip.insert("NORMAL", dur))).await?,
        Phase::W1 => workloads::closed_loop(&ctx.main, Op::Point, 1, dur).await,
        Phase::W2 => workloads::closed_loop(&ctx.main, Op::Point, IN_FLIGHT, dur).await,
        Phase::W3Fsync => workloads::closed_loop(&ctx.w3_fsync, Op::Insert, IN_FLIGHT, dur).await,
        Phase::W3Os => workloads::closed_loop(&ctx.w3_os, Op::Insert, IN_FLIGHT, dur).await,
        Phase::W4 => workloads::closed_loop(&ctx.main, Op::Wide, 1, dur).await,
        Phase::W5 => workloads::per_db(&ctx.w5, Op::Mixed, dur).await,
    }
}

/// Bytes of the W1 request on the wire, so the echo moves frames of the same size.
fn w1_frame_bytes(actor_id: &str, generation: u64) -> Result<usize> {
    let msg = ToEngine::SqliteExecute(ToEngineSqliteExecute {
        request_id: 1_000_000,
        request: SqliteExecuteRequest {
            actor_id: actor_id.into(),
            generation,
            sql: workloads::POINT_SQL.into(),
            params: Some(vec![Value::Integer(5_000)]),
        },
    });
    Ok(encode_to_engine(&msg, IMPLEMENTED_PROTOCOL_VERSION)?.len())
}

fn date_utc() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn progress(msg: &str) {
    eprintln!("[envoy-bench] {msg}");
}

/// The first three fields of /proc/loadavg.
fn load_average() -> String {
    let s = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

async fn run(args: Args) -> Result<()> {
    let date = date_utc();
    let load_average_start = load_average();
    let engine_bin = match &args.engine_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("envoy-engine"),
    };
    anyhow::ensure!(
        engine_bin.exists(),
        "no engine binary at {} (build it, or pass --engine-bin)",
        engine_bin.display()
    );
    let data = args.data_dir.clone();
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data)?;
    let data = std::fs::canonicalize(&data)?;
    let machine = procs::machine(&data);
    let git_revision = procs::git_revision();
    let mut skipped = Vec::new();

    let js_entry = js::package_entry(&args.repo);
    let mut run_js = !args.no_js && js_entry.exists();
    if !args.no_js && !run_js {
        if args.with_js {
            progress("building the JS package (--with-js)");
            js::build_package(&args.repo)?;
            run_js = true;
        } else {
            skipped.push(
                "W8 skipped: build the JS package first (bash rivetkit-wasm/scripts/build.sh, or pass --with-js)"
                    .into(),
            );
        }
    } else if args.no_js {
        skipped.push("W8 skipped: --no-js".into());
    }

    let w6_actors = args.w6_actors.unwrap_or(if args.short { 20 } else { 1_000 });
    let w7_actors = args.w7_actors.unwrap_or(if args.short { 60 } else { 10_000 });
    let w7_per_conn = args.w7_per_connection.unwrap_or(if args.short { 25 } else { 1_000 });
    let w7_idle_ms = args.w7_idle_close_ms.unwrap_or(if args.short { 300 } else { 1_000 });

    let wanted = |id: &str| args.only.is_empty() || args.only.iter().any(|o| o == id);
    let phases: Vec<Phase> = PHASES.into_iter().filter(|p| wanted(p.describe(0).0)).collect();
    run_js &= wanted("W8-W1") || wanted("W8-W2") || wanted("W8-W4") || wanted("W8");

    let echo_srv = procs::start_echo(&data)?;
    let (eng_fsync, set_fsync) = procs::start_engine(&engine_bin, &data, "engine-fsync", "fsync", &[])?;
    let (eng_os, set_os) = procs::start_engine(&engine_bin, &data, "engine-os", "os", &[])?;
    progress(&format!(
        "engines {} (fsync pid {}, os pid {}), echo server pid {}; data in {}",
        engine_bin.display(),
        eng_fsync.pid(),
        eng_os.pid(),
        echo_srv.pid(),
        data.display()
    ));

    progress("setting up actors and tables");
    let stamp = format!("{}-{}", std::process::id(), date.replace(':', ""));
    let c_main = workloads::connect(&eng_fsync.ws_url(), "main").await?;
    let main_db = workloads::fixture(&c_main, "bench", &format!("main-{stamp}")).await?;
    let main_actor = c_main.get_or_create_actor("bench", &format!("main-{stamp}")).await?;
    let payload_len = w1_frame_bytes(main_actor.id(), main_actor.generation())?;
    let c_w3 = workloads::connect(&eng_fsync.ws_url(), "w3-fsync").await?;
    let w3_fsync = workloads::fixture(&c_w3, "bench", &format!("w3-{stamp}")).await?;
    let c_os = workloads::connect(&eng_os.ws_url(), "w3-os").await?;
    let w3_os = workloads::fixture(&c_os, "bench", &format!("w3-{stamp}")).await?;
    let mut clients = vec![c_main, c_w3, c_os];
    let mut w5 = Vec::new();
    for i in 0..16 {
        let c = workloads::connect(&eng_fsync.ws_url(), &format!("w5-{i}")).await?;
        w5.push(workloads::fixture(&c, "bench", &format!("w5-{stamp}-{i}")).await?);
        clients.push(c);
    }
    let mut echo_many = Vec::new();
    for _ in 0..16 {
        echo_many.push(echo::connect(echo_srv.addr).await?);
    }
    let inproc = inproc::InProc::open(&data.join("inproc"))?;
    let mut ctx = Ctx {
        echo: echo::connect(echo_srv.addr).await?,
        echo_many,
        payload: Bytes::from(vec![0x5a; payload_len]),
        main: main_db,
        w3_fsync,
        w3_os,
        w5,
        clients,
        inproc: Arc::new(Mutex::new(inproc)),
    };

    let secs = Duration::from_secs_f64(args.secs);
    progress(&format!("warm-up: {} s per workload", args.warmup));
    for &p in &phases {
        run_phase(&mut ctx, p, Duration::from_secs_f64(args.warmup)).await.with_context(|| format!("warm-up {p:?}"))?;
    }
    let mut rounds: BTreeMap<Phase, Vec<Round>> = BTreeMap::new();
    for r in 0..args.rounds {
        progress(&format!("round {}/{}: {} workloads × {} s", r + 1, args.rounds, phases.len(), args.secs));
        for &p in &phases {
            let round = run_phase(&mut ctx, p, secs).await.with_context(|| format!("{p:?}"))?;
            rounds.entry(p).or_default().push(round);
        }
    }
    let mut all: Vec<Summary> = Vec::new();
    for &p in &phases {
        let (id, name, notes) = p.describe(payload_len);
        all.push(summarize(id, &name, notes, rounds.remove(&p).unwrap_or_default()));
    }

    if wanted("W6") {
        progress(&format!("W6: {w6_actors} new actors"));
        let c_w6 = workloads::connect(&eng_fsync.ws_url(), "w6").await?;
        let w6 = workloads::cold_actors(&c_w6, &stamp, w6_actors, 16).await?;
        c_w6.close().await;
        all.push(summarize(
            "W6",
            &format!("{w6_actors} new actors: get-or-create + write + read each, 16 at a time (ops = actors)"),
            "envoy-client; latency per actor (3 requests); fsync engine; one round",
            vec![w6],
        ));
    }

    if run_js {
        progress("W8: the JS package in Node");
        let timing = js::Timing { secs: args.secs, rounds: args.rounds, warmup: args.warmup };
        let (repo, d, url) = (args.repo.clone(), data.clone(), eng_fsync.ws_url());
        match tokio::task::spawn_blocking(move || js::run(&repo, &d, &url, &timing)).await? {
            Ok(s) => all.extend(s),
            Err(e) => skipped.push(format!("W8 failed: {e:#}")),
        }
    }
    for c in &ctx.clients {
        c.close().await;
    }
    drop(ctx);
    drop(eng_fsync);
    drop(eng_os);
    drop(echo_srv);

    let (w7, set_w7) = if wanted("W7") {
        progress(&format!("W7: {w7_actors} actors over connections of {w7_per_conn}, idle close {w7_idle_ms} ms"));
        let w7_flags = vec!["--idle-db-close-ms".to_string(), w7_idle_ms.to_string()];
        let (eng_w7, set_w7) = procs::start_engine(&engine_bin, &data, "engine-w7", "fsync", &w7_flags)?;
        let w7 = workloads::idle_actors(&eng_w7, w7_actors, w7_per_conn, w7_idle_ms, 256).await?;
        (Some(w7), Some(set_w7))
    } else {
        (None, None)
    };

    let mut ratios: Vec<_> = [
        ratio(&all, "W1", "L1-seq", true, Goal::AtMost(1.2)),
        ratio(&all, "W2", "L1-64", false, Goal::AtLeast(0.35)),
        ratio(&all, "W3-fsync", "L2-full", false, Goal::AtLeast(5.0)),
        ratio(&all, "W3-os", "L2-normal", false, Goal::AtLeast(0.5)),
        ratio(&all, "W4", "L2-1000", false, Goal::None),
        ratio(&all, "W5", "L1-16", false, Goal::None),
        ratio(&all, "W8-W1", "W1", true, Goal::None),
        ratio(&all, "W8-W2", "W2", false, Goal::AtLeast(0.5)),
        ratio(&all, "W8-W4", "W4", false, Goal::None),
    ]
    .into_iter()
    .flatten()
    .collect();
    if let Some(w7) = &w7 {
        ratios.extend(report::w7_ratios(w7));
    }

    let report = Report {
        schema: "envoy-bench/1",
        date,
        git_revision,
        machine,
        settings: Settings {
            secs_per_round: args.secs,
            rounds: args.rounds,
            warmup_secs: args.warmup,
            short: args.short,
            in_flight: IN_FLIGHT,
            echo_frame_bytes: payload_len,
            w6_actors,
            engine_fsync: set_fsync,
            engine_os: set_os,
            engine_w7: set_w7,
            processes: "engines and echo server: separate processes (tokio multi-thread); clients: this process, \
                        one tokio current-thread runtime; all on loopback, TCP_NODELAY"
                .into(),
            data_dir: data.display().to_string(),
            load_average_start,
            load_average_end: load_average(),
        },
        workloads: all,
        ratios,
        w7,
        skipped,
    };
    let md = report::markdown(&report);
    println!("{md}");
    if let Some(dir) = args.json.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.json, serde_json::to_string_pretty(&report)? + "\n")?;
    std::fs::write(args.json.with_extension("md"), &md)?;
    progress(&format!("wrote {} and {}", args.json.display(), args.json.with_extension("md").display()));
    let _ = std::fs::remove_dir_all(&data);
    Ok(())
}
