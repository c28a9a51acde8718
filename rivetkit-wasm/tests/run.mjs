// Runs the conformance suite in Node, Deno and workerd, and the crawler example in workerd,
// against real engines, then prints the time each host took.
//
//   node tests/run.mjs --engine-bin ../target/debug/envoy-engine [--hosts node,deno,workerd] [--no-crawler] [--no-bench]
//
// Needs pkg/ built (scripts/build.sh) and npm packages installed (deno, workerd).

import path from "node:path";
import { fileURLToPath } from "node:url";
import { runProcess, startBlackHole, startCutProxy, startEngine, packageModules, writeWorkerdConfig } from "./support.mjs";
import { runCrawlerTest } from "./crawler.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "..");
const bin = (name) => path.join(root, "node_modules", ".bin", name);

const args = process.argv.slice(2);
const argValue = (flag, dflt) => {
  const i = args.indexOf(flag);
  return i >= 0 ? args[i + 1] : dflt;
};
const engineBin = path.resolve(argValue("--engine-bin", path.join(root, "..", "target", "debug", "envoy-engine")));
const hosts = argValue("--hosts", "node,deno,workerd").split(",").filter(Boolean);
const withCrawler = !args.includes("--no-crawler");
const withBench = !args.includes("--no-bench");

const engine = await startEngine(engineBin, { label: "engine v4" });
const v3 = await startEngine(engineBin, { maxProtocolVersion: 3, label: "engine v3" });
const authToken = `tok-${Math.floor(Math.random() * 1e9).toString(36)}`;
const authed = await startEngine(engineBin, { authToken, label: "engine with token" });
const proxy = await startCutProxy(engine.port);
const blackHole = await startBlackHole({ holdMs: 1500 });
const context = {
  engine: { wsUrl: engine.wsUrl, httpUrl: engine.httpUrl },
  v3: { wsUrl: v3.wsUrl },
  authed: { wsUrl: authed.wsUrl, token: authToken },
  blackHole: { wsUrl: blackHole.wsUrl, holdMs: blackHole.holdMs },
  proxy: { wsUrl: proxy.wsUrl, controlUrl: proxy.controlUrl },
  bench: withBench,
};
const json = JSON.stringify(context);

const results = [];
try {
  for (const host of hosts) {
    console.log(`--- conformance in ${host}`);
    let r;
    if (host === "node") {
      r = await runProcess(process.execPath, ["--experimental-websocket", path.join(here, "hosts", "node.mjs"), json], { label: "node" });
    } else if (host === "deno") {
      r = await runProcess(bin("deno"), ["run", "--allow-net", "--allow-read", path.join(here, "hosts", "deno.mjs"), json], {
        label: "deno",
        env: { DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1" },
      });
    } else if (host === "workerd") {
      const pkg = path.join(root, "pkg", "web");
      const cfg = writeWorkerdConfig({
        modules: [
          { name: "worker.mjs", path: path.join(here, "hosts", "workerd.mjs"), kind: "esModule" },
          { name: "conformance.mjs", path: path.join(here, "conformance.mjs"), kind: "esModule" },
          { name: "bench.mjs", path: path.join(here, "bench.mjs"), kind: "esModule" },
          ...packageModules(pkg),
        ],
        bindings: { CONFIG: json },
      });
      r = await runProcess(bin("workerd"), ["test", cfg.file], { label: "workerd" });
      cfg.cleanup();
    } else {
      throw new Error(`unknown host ${host}`);
    }
    const suite = /suite time: (\d+) ms/.exec(r.out)?.[1];
    const bench = /bench: (\{.*\})/.exec(r.out)?.[1];
    results.push({ name: `conformance/${host}`, ok: r.code === 0, ms: r.ms, suiteMs: suite ? Number(suite) : undefined, bench });
  }
  if (withCrawler) {
    console.log("--- crawler example in workerd");
    const t0 = performance.now();
    let ok = true;
    try {
      await runCrawlerTest({ engine, engineBin, workerdBin: bin("workerd"), root });
    } catch (e) {
      ok = false;
      console.log(`  crawler FAILED: ${e.stack ?? e}`);
    }
    results.push({ name: "crawler/workerd", ok, ms: Math.round(performance.now() - t0) });
  }
} finally {
  await proxy.stop();
  await blackHole.stop();
  await engine.stop();
  await v3.stop();
  await authed.stop();
}

console.log("--- summary");
for (const r of results) {
  const suite = r.suiteMs !== undefined ? `, suite ${r.suiteMs} ms in-host` : "";
  console.log(`${r.ok ? "ok  " : "FAIL"} ${r.name}: ${r.ms} ms wall (process)${suite}`);
  if (r.bench) console.log(`     bench (${r.name.split("/")[1]}): ${r.bench}`);
}
const failed = results.filter((r) => !r.ok).length;
console.log(`js: ${results.length - failed} passed, ${failed} failed`);
process.exit(failed === 0 && results.length > 0 ? 0 : 1);
