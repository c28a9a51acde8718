// Runs the conformance suite in Deno against the installed package, imported by name (Deno
// resolves it from the temp project's node_modules through its package.json; the `deno` export
// condition picks the entry). `deno run --allow-net --allow-read deno.mjs '<json context>'`
// (--allow-read: the entry reads the package's .wasm).
import * as pkg from "rivetkit-wasm";
import { runConformance } from "./conformance.mjs";
import { runBench } from "./bench.mjs";

const cfg = JSON.parse(Deno.args[0]);
const t0 = performance.now();
const r = await runConformance({ ...cfg, pkg, host: "deno", log: (l) => console.log(`[deno] ${l}`) });
console.log(`[deno] suite time: ${Math.round(performance.now() - t0)} ms`);
if (cfg.bench && r.failed === 0) await runBench({ ...cfg, pkg, host: "deno", log: (l) => console.log(`[deno] ${l}`) });
console.log(`deno: ${r.passed} passed, ${r.failed} failed, ${r.skipped} skipped`);
Deno.exit(r.failed === 0 ? 0 : 1);
