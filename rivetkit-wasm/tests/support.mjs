// Test support for tests/run.mjs (Node only): real engines on free ports, a TCP proxy whose
// connections a test can cut, a scripted engine for answers the real one cannot give yet,
// workerd configs, child processes with captured output.

import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
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
 * A scripted engine whose actors' owner node is down (protocol v6, cluster mode): it answers
 * every get-or-create with ACTOR_UNAVAILABLE except key "placed" (placed as actor-1), every KV
 * request with ACTOR_UNAVAILABLE (nothing ran), and an exec at v5+ / an execute at v4 with
 * ACTOR_UNAVAILABLE whose `committed` is unknown (relayed to the owner when its link dropped).
 * It speaks at most `maxVersion` and sends the golden vectors of that version
 * (protocol/tests/vectors/v<N>/ToEnvoy/*.hex, the normative bytes, downgraded by the protocol
 * crate below v6) with the request id patched in. A plain WebSocket server over node:http: binary
 * frames only, every message in one frame (what the envoy client sends).
 */
export async function startUnavailableEngine({ maxVersion, vectorsDir }) {
  const vector = (v, name) => Buffer.from(readFileSync(path.join(vectorsDir, `v${v}`, "ToEnvoy", `${name}.hex`), "utf8").trim(), "hex");
  const answerWithId = (template, requestId) => {
    // Every answer used here is a union tag (one byte) followed by the u32 request id.
    const out = Buffer.from(template);
    requestId.copy(out, 1);
    return out;
  };
  const sockets = new Set();
  const server = http.createServer((req, res) => {
    res.statusCode = 404;
    res.end();
  });
  server.on("upgrade", (req, socket) => {
    const offered = String(req.headers["sec-websocket-protocol"] ?? "")
      .split(",")
      .map((p) => /^envoy\.v([1-9][0-9]*)$/.exec(p.trim()))
      .filter(Boolean)
      .map((m) => Number(m[1]));
    const version = Math.max(0, ...offered.filter((v) => v <= maxVersion));
    if (version < 4) {
      socket.end("HTTP/1.1 426 Upgrade Required\r\nconnection: close\r\n\r\n");
      return;
    }
    const accept = createHash("sha1").update(`${req.headers["sec-websocket-key"]}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest("base64");
    socket.write(
      "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n" +
        `sec-websocket-accept: ${accept}\r\nsec-websocket-protocol: envoy.v${version}\r\n\r\n`,
    );
    sockets.add(socket);
    const send = (payload) => {
      const n = payload.length;
      if (n > 0xffff) throw new Error("frame too large for this test engine");
      const head = n < 126 ? Buffer.from([0x82, n]) : Buffer.from([0x82, 126, n >> 8, n & 0xff]);
      socket.write(Buffer.concat([head, payload]));
    };
    // Pings keep the client's liveness check quiet.
    const ping = vector(version, "ping");
    const pinger = setInterval(() => send(ping), 1000);
    const close = () => {
      clearInterval(pinger);
      sockets.delete(socket);
      socket.destroy();
    };
    socket.on("error", close);
    socket.on("close", close);
    let buffered = Buffer.alloc(0);
    socket.on("data", (chunk) => {
      buffered = Buffer.concat([buffered, chunk]);
      for (;;) {
        if (buffered.length < 2) return;
        const opcode = buffered[0] & 0x0f;
        let len = buffered[1] & 0x7f;
        let at = 2;
        if (len === 126) {
          if (buffered.length < 4) return;
          len = buffered.readUInt16BE(2);
          at = 4;
        } else if (len === 127) {
          if (buffered.length < 10) return;
          len = Number(buffered.readBigUInt64BE(2));
          at = 10;
        }
        const masked = (buffered[1] & 0x80) !== 0;
        const mask = masked ? buffered.subarray(at, at + 4) : null;
        if (masked) at += 4;
        if (buffered.length < at + len) return;
        const payload = Buffer.from(buffered.subarray(at, at + len));
        buffered = buffered.subarray(at + len);
        if (mask) for (let i = 0; i < payload.length; i++) payload[i] ^= mask[i % 4];
        if (opcode === 0x8) return close();
        if (opcode !== 0x2) continue;
        // The ToEngine union tag (one byte for every member), then for requests the u32 id.
        const tag = payload[0];
        const requestId = payload.subarray(1, 5);
        if (tag === 0) {
          send(vector(version, version >= 5 ? "init_v5" : "init"));
        } else if (tag === 6) {
          // ToEngineGetOrCreateActor { requestId, name: str, key: str } (names here are < 128 bytes).
          const nameLen = payload[5];
          const key = payload.subarray(7 + nameLen, 7 + nameLen + payload[6 + nameLen]).toString("utf8");
          send(answerWithId(vector(version, key === "placed" ? "get_or_create_actor_ok" : "get_or_create_actor_unavailable"), requestId));
        } else if (tag === 5) {
          send(answerWithId(vector(version, "kv_error_actor_unavailable"), requestId));
        } else if (tag === 10) {
          send(answerWithId(vector(version, "sqlite_exec_v5_actor_unavailable_relayed"), requestId));
        } else if (tag === 8 || tag === 9) {
          send(answerWithId(vector(version, "sqlite_execute_actor_unavailable"), requestId));
        }
      }
    });
  });
  const port = await freePort();
  await new Promise((r) => server.listen(port, "127.0.0.1", r));
  return {
    wsUrl: `ws://127.0.0.1:${port}`,
    async stop() {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
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
