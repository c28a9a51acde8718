// W8 of envoy-bench: the JS package (wasm client) in Node doing W1, W2 and W4 against an engine
// envoy-bench started. Run by envoy-bench as
//   node --experimental-websocket bench/js/w8.mjs '<json config>'
// with {url, pkg, secs, rounds, warmup, inFlight}; prints one JSON line:
//   {"W8-W1": {roundRates, p50Us, p99Us, p999Us, count}, "W8-W2": …, "W8-W4": …}
// Figures only: nothing here asserts a speed.

const cfg = JSON.parse(process.argv[2]);
const { Envoy } = await import(cfg.pkg);

const now = () => performance.now();

/** Runs `workers` closed loops of `op` for `secs`; returns {ops, ms, lat} (lat in ms). */
async function closedLoop(workers, secs, op) {
  const end = now() + secs * 1000;
  const lat = [];
  const t0 = now();
  let i = 0;
  await Promise.all(
    Array.from({ length: workers }, async () => {
      while (now() < end) {
        const n = i++;
        const s = now();
        await op(n);
        lat.push(now() - s);
      }
    }),
  );
  return { ops: lat.length, ms: now() - t0, lat };
}

function summarize(rounds) {
  const lat = rounds.flatMap((r) => r.lat).sort((a, b) => a - b);
  const pct = (p) => (lat.length ? lat[Math.min(lat.length, Math.max(1, Math.ceil(p * lat.length))) - 1] * 1000 : null);
  return {
    roundRates: rounds.map((r) => r.ops / (r.ms / 1000)),
    p50Us: pct(0.5),
    p99Us: pct(0.99),
    p999Us: pct(0.999),
    count: lat.length,
  };
}

const envoy = await Envoy.connect({ endpoint: cfg.url, namespace: "bench", poolName: "default" });
try {
  const actor = await envoy.getOrCreateActor("bench-js", `w8-${process.pid}-${Date.now().toString(36)}`);
  const db = actor.db;
  await db.exec(cfg.schema);
  await db.exec(cfg.fill);

  const point = async (n) => {
    const r = await db.execute(cfg.pointSql, [(n % cfg.pointRows) + 1]);
    if (r.rows.length !== 1) throw new Error(`point select returned ${r.rows.length} rows`);
  };
  const wide = async () => {
    const r = await db.execute(cfg.wideSql, []);
    if (r.rows.length !== cfg.wideRows) throw new Error(`wide select returned ${r.rows.length} rows`);
  };
  const workloads = [
    ["W8-W1", 1, point],
    ["W8-W2", cfg.inFlight, point],
    ["W8-W4", 1, wide],
  ];
  for (const [, workers, op] of workloads) await closedLoop(workers, cfg.warmup, op);
  const rounds = Object.fromEntries(workloads.map(([id]) => [id, []]));
  for (let r = 0; r < cfg.rounds; r++) {
    for (const [id, workers, op] of workloads) rounds[id].push(await closedLoop(workers, cfg.secs, op));
  }
  const out = Object.fromEntries(Object.entries(rounds).map(([id, rs]) => [id, summarize(rs)]));
  console.log(JSON.stringify(out));
} finally {
  await envoy.close();
}
