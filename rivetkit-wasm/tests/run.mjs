// The JS package's integration tests, against real engines:
//   1. `npm pack` of rivetkit-wasm/, installed into an empty temp project (tests/package.mjs):
//      metadata, exports conditions, the shipped .wasm's gzip size (<= 120 KiB), and a type check
//      of tests/types/usage.ts importing the package by name;
//   2. the conformance suite (tests/conformance.mjs) from that project, importing the package by
//      name: in Node 20, in Deno, in workerd (a Worker bundled with esbuild for workerd, run by
//      `workerd test`) and in headless Chromium inside a dedicated Web Worker;
//   3. workerd serving a Worker over several requests (tests/hosts/workerd-serve.mjs): init() in
//      workerd, an Envoy reused from another request, `await using`;
//   4. the crawler example, bundled the same way, in workerd.
//
//   node tests/run.mjs --engine-bin ../target/debug/envoy-engine [--hosts node,deno,workerd,chromium] [--no-crawler] [--no-bench]
//
// Needs dist/ built (scripts/build.sh) and the dev npm packages installed.

import { spawnSync } from "node:child_process";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { freePort, runProcess, startBlackHole, startCutProxy, startEngine, startProcess, startUnavailableEngine, writeWorkerdConfig } from "./support.mjs";
import { runCrawlerTest } from "./crawler.mjs";
import { bundleWorker, installPackage, MAX_WASM_GZIP, TARGET_WASM_GZIP } from "./package.mjs";
import { CHROMIUM, createTestServer } from "./browser.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "..");
const bin = (name) => path.join(root, "node_modules", ".bin", name);

const args = process.argv.slice(2);
const argValue = (flag, dflt) => {
  const i = args.indexOf(flag);
  return i >= 0 ? args[i + 1] : dflt;
};
const engineBin = path.resolve(argValue("--engine-bin", path.join(root, "..", "target", "debug", "envoy-engine")));
const hosts = argValue("--hosts", "node,deno,workerd,chromium").split(",").filter(Boolean);
const withCrawler = !args.includes("--no-crawler");
const withBench = !args.includes("--no-bench");

const results = [];
const step = async (name, fn) => {
  console.log(`--- ${name}`);
  const t0 = performance.now();
  let ok = true;
  let extra;
  try {
    extra = await fn();
  } catch (e) {
    ok = false;
    console.log(`  ${name} FAILED: ${e.stack ?? e}`);
  }
  results.push({ name, ok: ok && extra?.ok !== false, ms: Math.round(performance.now() - t0), ...extra });
};

// The package, installed as a user would (before the engines: it needs none).
const pkg = await installPackage(root, {
  "conformance.mjs": path.join(here, "conformance.mjs"),
  "bench.mjs": path.join(here, "bench.mjs"),
  "node.mjs": path.join(here, "hosts", "node.mjs"),
  "deno.mjs": path.join(here, "hosts", "deno.mjs"),
  "workerd.mjs": path.join(here, "hosts", "workerd.mjs"),
  "workerd-serve.mjs": path.join(here, "hosts", "workerd-serve.mjs"),
  "usage.ts": path.join(here, "types", "usage.ts"),
});
results.push({ name: `package/wasm-size (${pkg.wasmGzip} B gzip -9; target ${TARGET_WASM_GZIP}, ceiling ${MAX_WASM_GZIP})`, ok: pkg.wasmGzipOk, ms: 0 });

await step("package/types", async () => {
  const r = await runProcess(
    process.execPath,
    [path.join(root, "node_modules", "typescript", "bin", "tsc"), "--noEmit", "--strict", "--target", "es2022", "--module", "esnext",
      "--moduleResolution", "bundler", "--lib", "esnext,dom", "usage.ts"],
    { label: "tsc", cwd: pkg.dir },
  );
  if (r.code !== 0) throw new Error(`tsc --noEmit of usage.ts against the installed package failed`);
  console.log("  usage.ts type-checks against the installed package (import by name)");
});

await step("package/not-initialised (browser entry in Node)", async () => {
  // The `browser` / `default` entry has no init of its own: connecting first must say so.
  const code = `const m = await import("rivetkit-wasm");
    try { await m.Envoy.connect({ endpoint: "ws://127.0.0.1:9", namespace: "n", poolName: "p" }); console.log("NO ERROR"); }
    catch (e) { console.log(JSON.stringify({ name: e.constructor.name, code: e.code, message: e.message })); }`;
  const r = spawnSync(process.execPath, ["--experimental-websocket", "--conditions=browser", "--input-type=module", "-e", code], { cwd: pkg.dir, encoding: "utf8" });
  const got = JSON.parse(r.stdout.trim().split("\n").pop());
  console.log(`  ${got.name} ${got.code}: ${got.message}`);
  if (got.name !== "NotInitializedError" || got.code !== "NOT_INITIALIZED" || !/init\(\)/.test(got.message)) throw new Error(`got ${r.stdout}${r.stderr}`);
});

const server = hosts.includes("chromium") ? await createTestServer() : null;
const allowedOrigins = server ? [server.origin] : [];
const engine = await startEngine(engineBin, { label: "engine v4", allowedOrigins });
const v3 = await startEngine(engineBin, { maxProtocolVersion: 3, label: "engine v3", allowedOrigins });
const authToken = `tok-${Math.floor(Math.random() * 1e9).toString(36)}`;
const authed = await startEngine(engineBin, { authToken, label: "engine with token", allowedOrigins });
const restartable = await startEngine(engineBin, { label: "engine to restart", allowedOrigins });
// v5 result streams: responses capped small, so iterating a result larger than one response is cheap.
const SMALL_RESPONSE_BYTES = 64 * 1024;
const small = await startEngine(engineBin, { label: "engine with small responses", allowedOrigins, extraArgs: ["--max-response-bytes", String(SMALL_RESPONSE_BYTES), "--max-open-streams", "1"] });
const proxy = await startCutProxy(engine.port);
const blackHole = await startBlackHole({ holdMs: 1500 });
// v6 answers the engine gives only in cluster mode (ACTOR_UNAVAILABLE), from scripted engines of v6, v5 and v4.
const vectorsDir = path.join(root, "..", "protocol", "tests", "vectors");
const unavailable = {};
for (const v of [6, 5, 4]) unavailable[`v${v}`] = await startUnavailableEngine({ maxVersion: v, vectorsDir });

// POST /restart-engine: restarts `restartable` (SIGTERM, then the same port and data dir).
const controlPort = await freePort();
const control = http.createServer(async (req, res) => {
  if (req.method === "POST" && req.url === "/restart-engine") {
    try {
      await restartable.restart();
      res.end("restarted");
    } catch (e) {
      res.statusCode = 500;
      res.end(String(e));
    }
  } else {
    res.statusCode = 404;
    res.end();
  }
});
await new Promise((r) => control.listen(controlPort, "127.0.0.1", r));
const controlUrl = `http://127.0.0.1:${controlPort}`;

const context = {
  engine: { wsUrl: engine.wsUrl, httpUrl: engine.httpUrl },
  v3: { wsUrl: v3.wsUrl },
  authed: { wsUrl: authed.wsUrl, token: authToken },
  blackHole: { wsUrl: blackHole.wsUrl, holdMs: blackHole.holdMs },
  proxy: { wsUrl: proxy.wsUrl, controlUrl: proxy.controlUrl },
  restart: { wsUrl: restartable.wsUrl, controlUrl },
  small: { wsUrl: small.wsUrl, maxResponseBytes: SMALL_RESPONSE_BYTES },
  unavailable: Object.fromEntries(Object.entries(unavailable).map(([v, e]) => [v, e.wsUrl])),
  bench: withBench,
};
const json = JSON.stringify(context);
const suiteFigures = (r) => ({
  suiteMs: Number(/suite time: (\d+) ms/.exec(r.out)?.[1]) || undefined,
  bench: /bench: (\{.*\})/.exec(r.out)?.[1],
  ok: r.code === 0,
});

try {
  for (const host of hosts) {
    if (host === "node") {
      await step("conformance/node", async () =>
        suiteFigures(await runProcess(process.execPath, ["--experimental-websocket", "node.mjs", json], { label: "node", cwd: pkg.dir })),
      );
    } else if (host === "deno") {
      await step("conformance/deno", async () =>
        suiteFigures(
          await runProcess(bin("deno"), ["run", "--allow-net", "--allow-read", "deno.mjs", json], {
            label: "deno",
            cwd: pkg.dir,
            env: { DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1" },
          }),
        ),
      );
    } else if (host === "workerd") {
      await step("conformance/workerd (esbuild bundle, workerd condition)", async () => {
        const modules = await bundleWorker({ root, entry: path.join(pkg.dir, "workerd.mjs"), outdir: path.join(pkg.dir, "bundle-test") });
        const cfg = writeWorkerdConfig({ modules, bindings: { CONFIG: json } });
        try {
          return suiteFigures(await runProcess(bin("workerd"), ["test", cfg.file], { label: "workerd" }));
        } finally {
          cfg.cleanup();
        }
      });
      await step("lifetimes/workerd (serve: init, another request's Envoy, await using, a Durable Object's Envoy)", () => workerdServeTest());
    } else if (host === "chromium") {
      await step("conformance/chromium (dedicated Web Worker)", async () => {
        const v = spawnSync(CHROMIUM, ["--version"], { encoding: "utf8" });
        if (v.status !== 0) throw new Error(`no Chromium at ${CHROMIUM} (scripts/test.sh installs Debian's chromium)`);
        console.log(`  ${v.stdout.trim()}`);
        server.configure({ projectDir: pkg.dir, entries: pkg.entries, context, engineHttp: engine.httpUrl, proxyControl: proxy.controlUrl, control: controlUrl });
        const r = await server.run();
        if (r.error) console.log(`  chromium: ${r.error}`);
        if (r.failures?.length) console.log(`  chromium failures: ${r.failures.join("; ")}`);
        console.log(`  chromium: ${r.passed} passed, ${r.failed} failed, ${r.skipped} skipped`);
        return { ok: r.failed === 0 && r.passed > 0 };
      });
    } else {
      throw new Error(`unknown host ${host}`);
    }
  }
  if (withCrawler) {
    await step("crawler/workerd", () =>
      runCrawlerTest({ engine, engineBin, workerdBin: bin("workerd"), root, projectDir: pkg.dir, bundle: bundleWorker }),
    );
  }
} finally {
  await server?.close();
  await new Promise((r) => control.close(r));
  await proxy.stop();
  await blackHole.stop();
  for (const e of Object.values(unavailable)) await e.stop();
  await engine.stop();
  await v3.stop();
  await authed.stop();
  await restartable.stop();
  await small.stop();
  pkg.cleanup();
}

/** workerd serve of tests/hosts/workerd-serve.mjs, driven over HTTP (see that file). */
async function workerdServeTest() {
  const modules = await bundleWorker({
    root,
    entry: path.join(pkg.dir, "workerd-serve.mjs"),
    outdir: path.join(pkg.dir, "bundle-serve"),
    conditions: ["browser"], // the default entry, whose init() must be told the module in workerd
  });
  const port = await freePort();
  const cfg = writeWorkerdConfig({
    modules,
    bindings: { ENGINE_URL: engine.wsUrl },
    durableObjects: [{ className: "Holder", binding: "HOLDER" }],
    socket: { port },
  });
  const workerd = startProcess(bin("workerd"), ["serve", cfg.file], { label: "workerd" });
  const base = `http://127.0.0.1:${port}`;
  const expect = (cond, msg) => {
    if (!cond) throw new Error(`${msg}\nworkerd output:\n${workerd.output.join("")}`);
  };
  // A hang guard only (the symptom was a 60 s wait); nothing is asserted about time.
  const get = async (p) => {
    const r = await fetch(base + p, { signal: AbortSignal.timeout(45_000) });
    const text = await r.text();
    expect(r.ok, `GET ${p}: ${r.status} ${text}`);
    const body = JSON.parse(text);
    console.log(`  GET ${p} -> ${JSON.stringify(body)}`);
    return body;
  };
  try {
    for (let i = 0; ; i++) {
      expect(workerd.isAlive(), "workerd exited");
      try {
        await (await fetch(`${base}/`)).text();
        break;
      } catch {
        expect(i < 150, "workerd not serving");
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    const init = await get("/init");
    expect(init.withoutModule.code === "INIT_FAILED" && /rivetkit_wasm_bg\.wasm/.test(init.withoutModule.message), "init() without the module: typed INIT_FAILED");
    expect(init.beforeInit.name === "NotInitializedError", "connect before init: NotInitializedError");
    expect(init.answer === 42, "init(module) then a query");
    const key = `k-${Date.now().toString(36)}`;
    expect((await get(`/open?key=${key}`)).answer === 1, "open + query");
    const reuse = await get("/reuse");
    for (const what of ["query", "kv", "getOrCreate", "close"]) {
      expect(reuse[what].name === "WrongContextError" && reuse[what].code === "WRONG_CONTEXT", `${what} from another request: WrongContextError`);
      expect(/Connect per request/.test(reuse[what].message) && /Durable Object/.test(reuse[what].message), `${what}: the message says what to do`);
    }
    const scoped = await get(`/scoped?key=${key}`);
    expect(scoped.answer === 3, "query inside await using");
    expect(scoped.actorAfter.code === "DISPOSED", "the actor handle is disposed after its block");
    expect(scoped.envoyAfter.name === "ConnectionError" && scoped.envoyAfter.code === "CLOSED", "the envoy is closed after its block");
    // One envoy per Durable Object: reused by the object's later requests.
    for (const n of [1, 2, 3]) {
      const held = await get("/do");
      expect(held.answer === n && held.served === n && held.connects === 1, `Durable Object request ${n}: one envoy, reused`);
    }
  } finally {
    await workerd.stop();
    cfg.cleanup();
  }
}

console.log("--- summary");
for (const r of results) {
  const suite = r.suiteMs !== undefined ? `, suite ${r.suiteMs} ms in-host` : "";
  console.log(`${r.ok ? "ok  " : "FAIL"} ${r.name}: ${r.ms} ms wall${suite}`);
  if (r.bench) console.log(`     bench (${r.name.split("/")[1]}): ${r.bench}`);
}
const failed = results.filter((r) => !r.ok).length;
console.log(`js: ${results.length - failed} passed, ${failed} failed`);
process.exit(failed === 0 && results.length > 0 ? 0 : 1);
