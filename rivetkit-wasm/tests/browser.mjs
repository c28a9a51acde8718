// Runs the conformance suite in headless Chromium (Debian's `chromium`) inside a dedicated module
// Web Worker. A test server on 127.0.0.1 serves the page, the worker, the suite and the temp
// project's node_modules (the installed tarball); the worker imports the package's `browser`
// entry, calls init() (which fetches the .wasm) and reports log lines and the result back by POST.
// No driver library: Chromium is started with the page's URL and stopped once the report came.
//
// The page's origin is what the engines must allow (`--allowed-origin`): createTestServer() runs
// before the engines start, so run.mjs knows it. Engine admin calls and the test controls have
// no CORS, so the server forwards them same-origin: /engine-admin/* -> the v4 engine's HTTP,
// /proxy-control/* -> the cut proxy's control port, /control/* -> run.mjs's control server.

import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { freePort } from "./support.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const TYPES = { ".js": "text/javascript", ".mjs": "text/javascript", ".html": "text/html", ".wasm": "application/wasm", ".json": "application/json" };

export const CHROMIUM = process.env.CHROMIUM_BIN ?? "/usr/bin/chromium";

/** Starts the test server on a free port; `configure(...)` is called once the engines run. */
export async function createTestServer() {
  const port = await freePort();
  const origin = `http://127.0.0.1:${port}`;
  let cfg = null;
  let onReport;
  const report = new Promise((r) => (onReport = r));

  const forward = async (req, res, base, rest) => {
    const body = await new Promise((r) => {
      const chunks = [];
      req.on("data", (c) => chunks.push(c));
      req.on("end", () => r(Buffer.concat(chunks)));
    });
    try {
      const upstream = await fetch(base + rest, { method: req.method, body: req.method === "GET" ? undefined : body });
      res.statusCode = upstream.status;
      res.end(Buffer.from(await upstream.arrayBuffer()));
    } catch (e) {
      res.statusCode = 502;
      res.end(String(e));
    }
  };
  const file = (res, p, transform) => {
    if (!existsSync(p)) {
      res.statusCode = 404;
      return res.end();
    }
    res.setHeader("content-type", TYPES[path.extname(p)] ?? "application/octet-stream");
    res.end(transform ? transform(readFileSync(p, "utf8")) : readFileSync(p));
  };
  const readBody = (req) =>
    new Promise((r) => {
      let s = "";
      req.on("data", (c) => (s += c));
      req.on("end", () => r(s));
    });

  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, origin);
    const p = url.pathname;
    if (p.startsWith("/engine-admin/")) return forward(req, res, cfg.engineHttp, p.slice("/engine-admin".length));
    if (p.startsWith("/proxy-control/")) return forward(req, res, cfg.proxyControl, p.slice("/proxy-control".length));
    if (p.startsWith("/control/")) return forward(req, res, cfg.control, p.slice("/control".length));
    if (req.method === "POST" && p === "/log") {
      console.log(`  chromium | ${await readBody(req)}`);
      return res.end();
    }
    if (req.method === "POST" && p === "/report") {
      onReport(JSON.parse(await readBody(req)));
      return res.end();
    }
    if (p === "/" || p === "/index.html") return file(res, path.join(here, "browser", "index.html"));
    if (p === "/worker.mjs") return file(res, path.join(here, "browser", "worker.mjs"), (s) => s.replaceAll("__BROWSER_ENTRY__", cfg.browserEntry));
    if (p === "/context.json") {
      res.setHeader("content-type", "application/json");
      return res.end(JSON.stringify(cfg.context));
    }
    if (p === "/conformance.mjs" || p === "/bench.mjs") return file(res, path.join(here, p.slice(1)));
    if (p.startsWith("/node_modules/") && !p.includes("..")) return file(res, path.join(cfg.projectDir, p));
    res.statusCode = 404;
    res.end();
  });
  await new Promise((r) => server.listen(port, "127.0.0.1", r));

  return {
    origin,
    /** projectDir: the temp project; entries: its package's exports["."]; context: run.mjs's JSON context. */
    configure({ projectDir, entries, context, engineHttp, proxyControl, control }) {
      const browserEntry = `/node_modules/rivetkit-wasm/${entries.browser.replace(/^\.\//, "")}`;
      cfg = {
        projectDir,
        browserEntry,
        engineHttp,
        proxyControl,
        control,
        // Same-origin routes for what the page cannot call cross-origin.
        context: {
          ...context,
          engine: { ...context.engine, httpUrl: `${origin}/engine-admin` },
          proxy: { ...context.proxy, controlUrl: `${origin}/proxy-control` },
          restart: context.restart && { ...context.restart, controlUrl: `${origin}/control` },
        },
      };
    },
    /** Starts Chromium on the page and resolves the worker's report (or a failure). */
    async run({ timeoutMs = 300_000 } = {}) {
      const profile = mkdtempSync(path.join(tmpdir(), "rivetkit-wasm-chromium-"));
      const args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        `--user-data-dir=${profile}`,
        `${origin}/`,
      ];
      const child = spawn(CHROMIUM, args, { stdio: ["ignore", "pipe", "pipe"], detached: true });
      const output = [];
      child.stdout.on("data", (d) => output.push(d.toString()));
      child.stderr.on("data", (d) => output.push(d.toString()));
      const exited = new Promise((r) => child.on("exit", (code) => r({ passed: 0, failed: 1, skipped: 0, error: `chromium exited (${code}) before reporting:\n${output.join("").slice(-3000)}` })));
      let timer;
      const timeout = new Promise((r) => (timer = setTimeout(() => r({ passed: 0, failed: 1, skipped: 0, error: `no report within ${timeoutMs} ms` }), timeoutMs)));
      const result = await Promise.race([report, exited, timeout]);
      clearTimeout(timer);
      // Chromium runs several processes: stop its whole process group (it was started detached).
      try {
        process.kill(-child.pid, "SIGTERM");
      } catch {
        // already gone
      }
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
      try {
        process.kill(-child.pid, "SIGKILL");
      } catch {
        // already gone
      }
      rmSync(profile, { recursive: true, force: true });
      return result;
    },
    close: () => new Promise((r) => server.close(r)),
  };
}
