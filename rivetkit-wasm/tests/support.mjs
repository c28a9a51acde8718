// Test support for tests/run.mjs (Node only): real engines on free ports, a TCP proxy whose
// connections a test can cut, workerd configs, child processes with captured output.

import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import http from "node:http";
import { tmpdir } from "node:os";
import path from "node:path";

/** A free TCP port on 127.0.0.1 (bound then released; the race is harmless on a test box). */
export async function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function waitHttp(url, timeoutMs, isAlive, token) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    if (!isAlive()) throw new Error(`process serving ${url} exited`);
    try {
      const r = await fetch(url, token ? { headers: { authorization: `Bearer ${token}` } } : {});
      await r.text();
      if (r.ok) return;
      last = `HTTP ${r.status}`;
    } catch (e) {
      last = e.message;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${url} not up after ${timeoutMs} ms (${last})`);
}

/**
 * Starts `envoy-engine serve` on a free port with a temp data dir.
 *
 * The engine refuses requests carrying an `Origin` header unless it is passed with `--allowed-origin`:
 * Node 20, Deno and workerd send none from `new WebSocket(url)`, but Chromium does (the test page's
 * origin), so tests/run.mjs passes that origin in `allowedOrigins`.
 *
 * `restart()` stops the process (SIGTERM: a graceful shutdown) and starts it again on the same
 * port and data dir, as an operator restarting the engine would.
 */
export async function startEngine(bin, { maxProtocolVersion, authToken, allowedOrigins = [], label = "engine", extraArgs = [] } = {}) {
  const port = await freePort();
  const dataDir = mkdtempSync(path.join(tmpdir(), "rivetkit-wasm-engine-"));
  const args = ["serve", "--listen", `127.0.0.1:${port}`, "--data-dir", dataDir];
  if (maxProtocolVersion) args.push("--max-protocol-version", String(maxProtocolVersion));
  if (authToken) args.push("--auth-token", authToken);
  for (const origin of allowedOrigins) args.push("--allowed-origin", origin);
  args.push(...extraArgs);
  const output = [];
  const httpUrl = `http://127.0.0.1:${port}`;
  let child;
  let alive = false;
  const spawnIt = async () => {
    child = spawn(bin, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "warn" } });
    alive = true;
    child.stdout.on("data", (d) => output.push(d.toString()));
    child.stderr.on("data", (d) => output.push(d.toString()));
    child.on("exit", () => (alive = false));
    try {
      await waitHttp(`${httpUrl}/health`, 30_000, () => alive, authToken);
    } catch (e) {
      console.error(`[${label}] failed to start:\n${output.join("")}`);
      throw e;
    }
  };
  const kill = async () => {
    if (!alive) return;
    const exited = new Promise((r) => child.on("exit", r));
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
    await exited;
    clearTimeout(timer);
  };
  await spawnIt();
  return {
    port,
    httpUrl,
    wsUrl: `ws://127.0.0.1:${port}`,
    dataDir,
    output,
    async restart() {
      await kill();
      await spawnIt();
    },
    async stop() {
      await kill();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/**
 * A TCP proxy to 127.0.0.1:targetPort, and a control HTTP server: `POST /cut` destroys every
 * proxied connection (both halves) at once, as a network failure would.
 */
export async function startCutProxy(targetPort) {
  const sockets = new Set();
  const proxy = net.createServer((client) => {
    const upstream = net.connect(targetPort, "127.0.0.1");
    sockets.add(client);
    sockets.add(upstream);
    client.pipe(upstream);
    upstream.pipe(client);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on("error", drop);
    upstream.on("error", drop);
    client.on("close", drop);
    upstream.on("close", drop);
  });
  const cuts = { count: 0 };
  const control = http.createServer((req, res) => {
    if (req.method === "POST" && req.url === "/cut") {
      const n = sockets.size;
      for (const s of sockets) s.resetAndDestroy ? s.resetAndDestroy() : s.destroy();
      sockets.clear();
      cuts.count++;
      res.end(JSON.stringify({ cut: n }));
    } else {
      res.statusCode = 404;
      res.end();
    }
  });
  const port = await freePort();
  const controlPort = await freePort();
  await new Promise((r) => proxy.listen(port, "127.0.0.1", r));
  await new Promise((r) => control.listen(controlPort, "127.0.0.1", r));
  return {
    wsUrl: `ws://127.0.0.1:${port}`,
    controlUrl: `http://127.0.0.1:${controlPort}`,
    cuts,
    async stop() {
      for (const s of sockets) s.destroy();
      await new Promise((r) => proxy.close(r));
      await new Promise((r) => control.close(r));
    },
  };
}

/**
 * A "black hole": accepts TCP connections, never answers (a WebSocket upgrade to it hangs), and
 * resets each connection after `holdMs` — so a connect attempt is still pending when a short
 * connect deadline passes, and its socket fails only afterwards.
 */
export async function startBlackHole({ holdMs = 1500 } = {}) {
  const sockets = new Set();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on("error", () => {});
    s.on("close", () => sockets.delete(s));
    setTimeout(() => (s.resetAndDestroy ? s.resetAndDestroy() : s.destroy()), holdMs);
  });
  const port = await freePort();
  await new Promise((r) => server.listen(port, "127.0.0.1", r));
  return {
    wsUrl: `ws://127.0.0.1:${port}`,
    holdMs,
    async stop() {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}

/** Runs a command to completion, echoing its output with a prefix; resolves { code, ms, out, stdout }. */
export function runProcess(cmd, args, { label, cwd, env, timeoutMs = 300_000, quiet = false } = {}) {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const child = spawn(cmd, args, { cwd, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    const out = [];
    const stdout = [];
    const echo = (d) => {
      const s = d.toString();
      out.push(s);
      if (quiet) return;
      for (const line of s.split("\n")) if (line.trim()) console.log(`  ${label ? `${label} | ` : ""}${line}`);
    };
    child.stdout.on("data", (d) => {
      stdout.push(d.toString());
      echo(d);
    });
    child.stderr.on("data", echo);
    const timer = setTimeout(() => {
      out.push(`\n[killed after ${timeoutMs} ms]\n`);
      child.kill("SIGKILL");
    }, timeoutMs);
    child.on("exit", (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : 1), ms: Math.round(performance.now() - t0), out: out.join(""), stdout: stdout.join("") });
    });
  });
}

/** Starts a long-running process; returns { child, output, stop }. */
export function startProcess(cmd, args, { label, cwd, env } = {}) {
  const child = spawn(cmd, args, { cwd, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  const output = [];
  const echo = (d) => {
    const s = d.toString();
    output.push(s);
    if (process.env.RIVETKIT_TEST_VERBOSE) for (const line of s.split("\n")) if (line.trim()) console.log(`  ${label} | ${line}`);
  };
  child.stdout.on("data", echo);
  child.stderr.on("data", echo);
  let alive = true;
  child.on("exit", () => (alive = false));
  return {
    child,
    output,
    isAlive: () => alive,
    async stop() {
      if (!alive) return;
      const exited = new Promise((r) => child.on("exit", r));
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

export { waitHttp };

/** A capnp text literal (JSON string escaping is valid capnp escaping for what we embed). */
const capnpString = (s) => JSON.stringify(s);

/**
 * Writes a workerd config into a fresh temp dir and returns its path.
 * modules: [{ name, path, kind: "esModule" | "wasm" }]; bindings: { NAME: text };
 * durableObjects: [{ className, binding }] (in-memory storage);
 * socket: optional { port } to serve HTTP on 127.0.0.1.
 */
export function writeWorkerdConfig({ modules, bindings = {}, socket, durableObjects = [], compatibilityDate = "2026-11-01" }) {
  const dir = mkdtempSync(path.join(tmpdir(), "rivetkit-wasm-workerd-"));
  // embed paths are resolved relative to the config file (absolute ones are not read).
  const mods = modules
    .map((m) => `      (name = ${capnpString(m.name)}, ${m.kind} = embed ${capnpString(path.relative(dir, m.path))})`)
    .join(",\n");
  const binds = [
    ...Object.entries(bindings).map(([k, v]) => `      (name = ${capnpString(k)}, text = ${capnpString(v)})`),
    ...durableObjects.map((d) => `      (name = ${capnpString(d.binding)}, durableObjectNamespace = ${capnpString(d.className)})`),
  ].join(",\n");
  const objects = durableObjects.length
    ? `  durableObjectNamespaces = [ ${durableObjects
        .map((d) => `(className = ${capnpString(d.className)}, uniqueKey = ${capnpString(`${d.className}-key`)})`)
        .join(", ")} ],\n  durableObjectStorage = (inMemory = void),\n`
    : "";
  const sockets = socket
    ? `  sockets = [ (name = "http", address = ${capnpString(`127.0.0.1:${socket.port}`)}, http = (), service = "main") ],\n`
    : "";
  const text = `using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [
    (name = "main", worker = .worker),
    # Outbound fetch/WebSocket from the worker; "local" lets it reach 127.0.0.1 (engine, fixtures).
    (name = "net", network = (allow = ["public", "private", "local"])),
  ],
${sockets});

const worker :Workerd.Worker = (
  modules = [
${mods}
  ],
  bindings = [
${binds}
  ],
${objects}  compatibilityDate = ${capnpString(compatibilityDate)},
  globalOutbound = "net",
);
`;
  const file = path.join(dir, "config.capnp");
  writeFileSync(file, text);
  return { file, dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}
