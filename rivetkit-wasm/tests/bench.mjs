// A small benchmark run in each host after the conformance suite: prints figures, asserts
// nothing about speed. Point SELECTs pipelined on one socket, sequential round trips, and
// pipelined KV gets, against the real engine tests/run.mjs started.

const now = () => (typeof performance !== "undefined" ? performance.now() : Date.now());

export async function runBench({ pkg, engine, host, log }) {
  const { Envoy } = pkg;
  const envoy = await Envoy.connect({ endpoint: engine.wsUrl, namespace: "bench", poolName: "default" });
  try {
    const actor = await envoy.getOrCreateActor("bench", `${host}-${Date.now().toString(36)}`);
    const { db, kv } = actor;
    await db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");
    await db.exec(`WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000) INSERT INTO t SELECT x, 'value ' || x FROM c`);
    await Promise.all(Array.from({ length: 100 }, (_, i) => kv.put(`k${i}`, `v${i}`)));

    const figures = {};
    const pipelined = 2000;
    let t0 = now();
    const rows = await Promise.all(Array.from({ length: pipelined }, (_, i) => db.execute("SELECT v FROM t WHERE id = ?", [(i % 1000) + 1])));
    let ms = now() - t0;
    if (rows.some((r, i) => r.rows[0][0] !== `value ${(i % 1000) + 1}`)) throw new Error("bench: wrong row");
    figures.pipelinedSelectsPerSec = Math.round(pipelined / (ms / 1000));

    const sequential = 300;
    const lat = [];
    for (let i = 0; i < sequential; i++) {
      const s = now();
      await db.execute("SELECT v FROM t WHERE id = ?", [(i % 1000) + 1]);
      lat.push(now() - s);
    }
    lat.sort((a, b) => a - b);
    figures.sequentialRoundTripP50Ms = Number(lat[Math.floor(lat.length / 2)].toFixed(2));
    figures.sequentialRoundTripP99Ms = Number(lat[Math.floor(lat.length * 0.99)].toFixed(2));

    const kvGets = 2000;
    t0 = now();
    await Promise.all(Array.from({ length: kvGets }, (_, i) => kv.get(`k${i % 100}`)));
    ms = now() - t0;
    figures.pipelinedKvGetsPerSec = Math.round(kvGets / (ms / 1000));
    log(`bench: ${JSON.stringify(figures)}`);
    return figures;
  } finally {
    await envoy.close();
  }
}
