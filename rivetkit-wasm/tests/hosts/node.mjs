// Runs the conformance suite in Node 20+ (start with `node --experimental-websocket`) against the
// installed package, imported by name (tests/run.mjs copies this file into a temp project that
// installed the `npm pack` tarball). argv[2]: the JSON context from tests/run.mjs.
import * as pkg from "rivetkit-wasm";
import { runConformance } from "./conformance.mjs";
import { runBench } from "./bench.mjs";

const cfg = JSON.parse(process.argv[2]);
const t0 = performance.now();
const r = await runConformance({ ...cfg, pkg, host: "node", log: (l) => console.log(`[node] ${l}`) });
console.log(`[node] suite time: ${Math.round(performance.now() - t0)} ms`);
if (cfg.bench && r.failed === 0) await runBench({ ...cfg, pkg, host: "node", log: (l) => console.log(`[node] ${l}`) });
console.log(`node: ${r.passed} passed, ${r.failed} failed, ${r.skipped} skipped`);
process.exit(r.failed === 0 ? 0 : 1);
