// The conformance suite in a dedicated Web Worker of headless Chromium, against the installed
// package's `browser` entry (tests/browser.mjs serves the temp project and rewrites
// __BROWSER_ENTRY__ to the path the package's exports map gives for the "browser" condition).
import * as pkg from "__BROWSER_ENTRY__";
import { runConformance } from "/conformance.mjs";
import { runBench } from "/bench.mjs";

// Log lines go to the test server in order (one POST at a time).
let chain = Promise.resolve();
const post = (route, body) => (chain = chain.then(() => fetch(route, { method: "POST", body }).then((r) => r.text())).catch(() => {}));
const log = (line) => post("/log", `[chromium] ${line}`);

try {
  // Before init: the typed error that says what to do.
  let before;
  try {
    await pkg.Envoy.connect({ endpoint: "ws://127.0.0.1:9", namespace: "n", poolName: "p" });
  } catch (e) {
    before = e;
  }
  if (!(before instanceof pkg.NotInitializedError)) throw new Error(`connect before init: ${before?.constructor?.name} ${before?.message}`);
  await pkg.init(); // fetches rivetkit_wasm_bg.wasm from next to the entry
  const cfg = await (await fetch("/context.json")).json();
  const t0 = performance.now();
  const r = await runConformance({ ...cfg, pkg, host: "chromium", log });
  log(`suite time: ${Math.round(performance.now() - t0)} ms`);
  if (cfg.bench && r.failed === 0) await runBench({ ...cfg, pkg, host: "chromium", log });
  await post("/report", JSON.stringify({ passed: r.passed, failed: r.failed, skipped: r.skipped, failures: r.failures.map((f) => f.name) }));
} catch (e) {
  await post("/report", JSON.stringify({ passed: 0, failed: 1, skipped: 0, error: `${e?.stack ?? e}` }));
}
