// The rivetkit-wasm conformance suite: one body of tests, run unchanged in Node, Deno and workerd
// by the tiny runners in tests/hosts/. It only uses what every host has (fetch, WebSocket via the
// package, timers, TextEncoder) and the package's public API.
//
// ctx = {
//   pkg,        // the package module (Envoy, EnvoyError, subclasses)
//   engine,     // { wsUrl, httpUrl } of a v6 engine
//   small,      // { wsUrl, maxResponseBytes }: a v6 engine whose responses are capped small
//   v3,         // { wsUrl } of an engine started with --max-protocol-version 3
//   proxy,      // { wsUrl, controlUrl }: a TCP proxy to `engine` whose connections the test can cut
//   restart,    // { wsUrl, controlUrl }: an engine that `POST {controlUrl}/restart-engine` restarts
//   unavailable, // { v6, v5, v4 }: ws URLs of scripted engines whose actors' owner node is down
//               //   (ACTOR_UNAVAILABLE; tests/support.mjs startUnavailableEngine)
//   host,       // "node" | "deno" | "workerd" | "chromium", for names and logs
//   log,        // (line) => void
// }
// Returns { passed, failed, skipped, failures: [{ name, error }] }.

const enc = new TextEncoder();
const dec = new TextDecoder();

class AssertionError extends Error {}
/** Thrown by a test that cannot run in this host (counted and printed as skipped, never as passed). */
class Skip extends Error {}

function assert(cond, msg) {
  if (!cond) throw new AssertionError(msg ?? "assertion failed");
}

function show(v) {
  if (typeof v === "bigint") return `${v}n`;
  if (v instanceof Uint8Array) return `Uint8Array[${Array.from(v).join(",")}]`;
  if (Object.is(v, -0)) return "-0";
  if (Array.isArray(v)) return `[${v.map(show).join(", ")}]`;
  if (v && typeof v === "object") return `{${Object.entries(v).map(([k, x]) => `${k}: ${show(x)}`).join(", ")}}`;
  return typeof v === "string" ? JSON.stringify(v) : String(v);
}

function same(a, b) {
  if (a instanceof Uint8Array && b instanceof Uint8Array) {
    return a.length === b.length && a.every((x, i) => x === b[i]);
  }
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((x, i) => same(x, b[i]));
  return Object.is(a, b);
}

function eq(actual, expected, what = "value") {
  if (!same(actual, expected)) throw new AssertionError(`${what}: expected ${show(expected)}, got ${show(actual)}`);
}

async function rejects(promise, Class, check) {
  let err;
  try {
    await promise;
  } catch (e) {
    err = e;
  }
  assert(err !== undefined, `expected a ${Class.name}, but the call succeeded`);
  assert(err instanceof Class, `expected a ${Class.name}, got ${err?.constructor?.name}: ${err?.code} ${err?.message}`);
  if (check) check(err);
  return err;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// A statement that keeps SQLite busy for a while (a recursive CTE counting up).
const SLOW_COUNT = 4_000_000;
const SLOW_SQL = `WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ${SLOW_COUNT}) SELECT count(*) AS n FROM c`;

export async function runConformance(ctx) {
  const { pkg, host, log } = ctx;
  const { Envoy, EnvoyError } = pkg;
  const run = `${host}-${Date.now().toString(36)}-${Math.floor(Math.random() * 1e6).toString(36)}`;
  const opts = (extra = {}) => ({ endpoint: ctx.engine.wsUrl, namespace: "conformance", poolName: "default", ...extra });
  const tests = [];
  const test = (name, fn) => tests.push({ name, fn });
  const cleanup = [];
  const connect = async (extra) => {
    const e = await Envoy.connect(opts(extra));
    cleanup.push(e);
    return e;
  };

  test("connect, get-or-create, start handler, protocol v6", async () => {
    const envoy = await connect();
    eq(envoy.protocolVersion, 6, "protocolVersion");
    const started = [];
    envoy.onActorStart((actor) => started.push(actor));
    const actor = await envoy.getOrCreateActor("counter", `life-${run}`);
    assert(typeof actor.id === "string" && actor.id.length > 0, "actor.id");
    eq(actor.name, "counter", "actor.name");
    eq(actor.key, `life-${run}`, "actor.key");
    assert(Number(actor.generation) >= 1, `generation ${show(actor.generation)}`);
    for (let i = 0; i < 50 && started.length === 0; i++) await sleep(10);
    eq(started.length, 1, "onActorStart calls");
    eq(started[0].id, actor.id, "started actor id");
    // The same (name, key) is the same actor.
    const again = await envoy.getOrCreateActor("counter", `life-${run}`);
    eq(again.id, actor.id, "same actor for same name/key");
  });

  test("a handler that throws does not take the envoy down", async () => {
    const envoy = await connect();
    let calls = 0;
    envoy.onActorStart(() => {
      calls++;
      throw new Error("expected: a failing onActorStart handler (reported on the console)");
    });
    const actor = await envoy.getOrCreateActor("counter", `throwing-${run}`);
    for (let i = 0; i < 50 && calls === 0; i++) await sleep(10);
    eq(calls, 1, "handler called");
    eq((await actor.db.execute("SELECT 2")).rows[0][0], 2, "still serves");
  });

  test("exec, execute, executeWrite, query, run", async () => {
    const envoy = await connect();
    const { db } = await envoy.getOrCreateActor("sql", `basic-${run}`);
    const r = await db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE); INSERT INTO t(name) VALUES ('a'); SELECT count(*) AS n FROM t");
    eq(r.columns, ["n"], "exec columns");
    eq(r.rows, [[1]], "exec rows");
    const w = await db.executeWrite("INSERT INTO t(name) VALUES (?)", ["b"]);
    eq(w.changes, 1, "changes");
    eq(w.lastInsertRowId, 2, "lastInsertRowId");
    eq(w.route, "WRITE", "route of executeWrite");
    const s = await db.execute("SELECT id, name FROM t ORDER BY id", []);
    eq(s.columns, ["id", "name"], "columns");
    eq(s.rows, [[1, "a"], [2, "b"]], "rows");
    eq(s.changes, 0, "SELECT changes");
    eq(s.lastInsertRowId, null, "SELECT lastInsertRowId");
    // At v5 every execute carries a request key; one that only reads keeps its reader (specs/engine.md).
    eq(s.route, "READ", "route of a (keyed) read");
    const q = await db.query("SELECT id, name FROM t WHERE id = ?", [2]);
    eq(q.length, 1, "query rows");
    eq(q[0].id, 2, "query row.id");
    eq(q[0].name, "b", "query row.name");
    const u = await db.run("UPDATE t SET name = name || '!'");
    eq(u.changes, 2, "run changes");
    eq(u.lastInsertRowId, null, "run lastInsertRowId of an UPDATE");
  });

  test("values JS -> SQLite -> JS, every type", async () => {
    const envoy = await connect();
    const { db } = await envoy.getOrCreateActor("sql", `values-${run}`);
    await db.exec("CREATE TABLE v(id INTEGER PRIMARY KEY, x)");
    const big = 2n ** 62n;
    const cases = [
      // [param, expected SQLite type, expected value back]
      [null, "null", null],
      [0, "integer", 0],
      [42, "integer", 42],
      [-42, "integer", -42],
      [Number.MAX_SAFE_INTEGER, "integer", Number.MAX_SAFE_INTEGER],
      [Number.MIN_SAFE_INTEGER, "integer", Number.MIN_SAFE_INTEGER],
      [1.5, "real", 1.5],
      [2 ** 53, "real", 2 ** 53],
      [-0, "real", -0],
      [Infinity, "real", Infinity],
      [-Infinity, "real", -Infinity],
      [NaN, "null", null], // SQLite stores NaN as NULL
      [big, "integer", big],
      [-(2n ** 63n), "integer", -(2n ** 63n)],
      [2n ** 63n - 1n, "integer", 2n ** 63n - 1n],
      [7n, "integer", 7], // a small bigint comes back as a number in "auto" mode
      ["", "text", ""],
      ["héllo wörld ✓ 🦀", "text", "héllo wörld ✓ 🦀"],
      ["a\u0000b", "text", "a\u0000b"],
      [true, "integer", 1],
      [false, "integer", 0],
      [new Uint8Array([]), "blob", new Uint8Array([])],
      [new Uint8Array([0, 1, 254, 255]), "blob", new Uint8Array([0, 1, 254, 255])],
      [new Uint8Array([9, 8, 7]).buffer, "blob", new Uint8Array([9, 8, 7])],
      [new Uint16Array([0x0102]), "blob", new Uint8Array(new Uint16Array([0x0102]).buffer)],
    ];
    for (const [i, [param, type, back]] of cases.entries()) {
      await db.executeWrite("INSERT INTO v(id, x) VALUES (?, ?)", [i, param]);
      const [row] = (await db.execute("SELECT x, typeof(x) FROM v WHERE id = ?", [i])).rows;
      eq(row[1], type, `typeof of ${show(param)}`);
      eq(row[0], back, `value of ${show(param)}`);
    }
    // Large values both ways.
    const bigText = "x".repeat(200_000);
    const bigBlob = new Uint8Array(300_000).map((_, i) => i % 251);
    await db.executeWrite("INSERT INTO v(id, x) VALUES (1000, ?), (1001, ?)", [bigText, bigBlob]);
    const rows = (await db.execute("SELECT x FROM v WHERE id IN (1000, 1001) ORDER BY id")).rows;
    eq(rows[0][0].length, bigText.length, "big text length");
    eq(rows[1][0], bigBlob, "big blob");
    // Integers as bigint on request.
    const asBig = await db.execute("SELECT 1, 2.5, ?", [5], { integers: "bigint" });
    eq(asBig.rows[0], [1n, 2.5, 5n], "integers: bigint");
    const auto = await db.execute("SELECT 9007199254740993, -9007199254740993");
    eq(auto.rows[0], [9007199254740993n, -9007199254740993n], "unsafe integers come back as bigint");
  });

  test("refused values are typed errors, nothing sent", async () => {
    const envoy = await connect();
    const { db } = await envoy.getOrCreateActor("sql", `refuse-${run}`);
    const { InvalidValueError } = pkg;
    await rejects(db.execute("SELECT ?, ?", [1, undefined]), InvalidValueError, (e) => {
      eq(e.code, "UNDEFINED_VALUE", "code");
      eq(e.group, "value", "group");
      eq(e.index, 1, "index");
      assert(e instanceof EnvoyError && e instanceof Error, "is an EnvoyError and an Error");
    });
    await rejects(db.execute("SELECT ?", [{ a: 1 }]), InvalidValueError, (e) => {
      eq(e.code, "UNSUPPORTED_VALUE_TYPE", "code");
      eq(e.typeName, "Object", "typeName");
    });
    await rejects(db.execute("SELECT ?", [new Date(0)]), InvalidValueError, (e) => eq(e.typeName, "Date", "typeName"));
    await rejects(db.execute("SELECT ?", [[1, 2]]), InvalidValueError, (e) => eq(e.typeName, "Array", "typeName"));
    await rejects(db.execute("SELECT ?", [Symbol("s")]), InvalidValueError, (e) => eq(e.typeName, "symbol", "typeName"));
    await rejects(db.execute("SELECT ?", ["ok\uD800"]), InvalidValueError, (e) => eq(e.code, "INVALID_TEXT", "lone surrogate"));
    await rejects(db.execute("SELECT ?", [2n ** 63n]), InvalidValueError, (e) => eq(e.code, "BIGINT_OUT_OF_RANGE", "code"));
    await rejects(db.execute("SELECT ?", [-(2n ** 63n) - 1n]), InvalidValueError);
    await rejects(db.execute("SELECT 1", "nope"), InvalidValueError, (e) => eq(e.code, "INVALID_OPTION", "code"));
    await rejects(db.execute("SELECT 1", [], { integers: "huge" }), InvalidValueError);
    await rejects(envoy.getOrCreateActor("sql", `refuse-${run}`).then((a) => a.kv.get(12)), InvalidValueError, (e) =>
      eq(e.code, "NOT_BYTES", "code"),
    );
  });

  test("SQL errors carry structured fields", async () => {
    const envoy = await connect();
    const { db } = await envoy.getOrCreateActor("sql", `errors-${run}`);
    const { SqlError } = pkg;
    await db.exec("CREATE TABLE u(id INTEGER PRIMARY KEY, name TEXT UNIQUE); INSERT INTO u(name) VALUES ('a')");
    await rejects(db.execute("SELECT * FROM no_such_table"), SqlError, (e) => {
      eq(e.code, "SQLITE", "code");
      eq(e.group, "sql", "group");
      eq(e.extendedCode, 1, "extendedCode (SQLITE_ERROR)");
      assert(/no such table/.test(e.message), `message: ${e.message}`);
    });
    await rejects(db.execute("SELEC nope"), SqlError, (e) => {
      eq(e.code, "SQLITE", "code of a syntax error");
      eq(e.extendedCode, 1, "extendedCode of a syntax error");
      assert(/syntax/i.test(e.message), `message: ${e.message}`);
    });
    await rejects(db.executeWrite("INSERT INTO u(name) VALUES (?)", ["a"]), SqlError, (e) => {
      eq(e.extendedCode, 2067, "extendedCode (SQLITE_CONSTRAINT_UNIQUE)");
      eq(e.committed, false, "committed");
    });
    await rejects(db.exec("INSERT INTO u(name) VALUES ('b'); INSERT INTO u(name) VALUES ('a')"), SqlError, (e) => {
      eq(e.statementIndex, 1, "statementIndex");
    });
    await rejects(db.execute("SELECT 1; SELECT 2"), SqlError, (e) => eq(e.code, "INVALID_REQUEST", "code"));
    await rejects(db.exec("ATTACH DATABASE ':memory:' AS other"), SqlError, (e) => eq(e.code, "FORBIDDEN", "code"));
  });

  test("v6 ACTOR_UNAVAILABLE: ActorUnavailableError from a v6 engine, what older versions have from older ones", async () => {
    const { ActorUnavailableError } = pkg;
    const why = "the owner node of actor-1 is unreachable";
    for (const v of [6, 5, 4]) {
      const envoy = await connect({ endpoint: ctx.unavailable[`v${v}`] });
      eq(envoy.protocolVersion, v, "negotiated version");
      const goc = await rejects(envoy.getOrCreateActor("notes", "elsewhere"), EnvoyError);
      const actor = await envoy.getOrCreateActor("notes", "placed");
      const kv = await rejects(actor.kv.get("k"), EnvoyError);
      // v5+: an exec relayed to the owner when its link dropped (committed unknown); v4: an execute.
      const sql = await rejects(v >= 5 ? actor.db.exec("INSERT INTO t VALUES (1)") : actor.db.execute("INSERT INTO t VALUES (1)"), EnvoyError);
      if (v === 6) {
        // KV answers cannot say whether it ran (no `committed`); the SQL one is a relayed exec.
        for (const [what, e, committed, message] of [
          ["get-or-create", goc, false, why],
          ["KV", kv, undefined, "this node lost its cluster lease"],
          ["SQL", sql, undefined, why],
        ]) {
          assert(e instanceof ActorUnavailableError, `${what}: ${e.constructor.name} ${e.code}`);
          eq(e.code, "ACTOR_UNAVAILABLE", `${what} code`);
          eq(e.group, "actor", `${what} group`);
          eq(e.committed, committed, `${what} committed`);
          eq(e.message, `actor unavailable: ${message}`, `${what} message`);
        }
        continue;
      }
      // Below v6 the engine's encoder says OVERLOADED (v4's get-or-create has none: INTERNAL),
      // the message starting with "actor unavailable: ".
      for (const [what, e, message] of [["KV", kv, "this node lost its cluster lease"], ["SQL", sql, why], ...(v === 5 ? [["get-or-create", goc, why]] : [])]) {
        assert(!(e instanceof ActorUnavailableError), `v${v} ${what}: not typed`);
        eq(e.code, "OVERLOADED", `v${v} ${what} code`);
        eq(e.message, `engine overloaded: actor unavailable: ${message}`, `v${v} ${what} message`);
      }
      if (v === 4) {
        eq(goc.code, "GET_OR_CREATE_FAILED", "v4 get-or-create code");
        eq(goc.engineCode, "INTERNAL", "v4 get-or-create engineCode");
        assert(goc.message.includes(`actor unavailable: ${why}`), `v4 get-or-create message: ${goc.message}`);
      }
    }
  });

  test("advertised limits are enforced with LimitExceeded before work starts", async () => {
    const envoy = await connect();
    const session = envoy.session;
    assert(session && session.sqlLimits && session.limits, `session with limits: ${show(session)}`);
    eq(session.protocolVersion, 6, "session.protocolVersion");
    const { maxParams, maxSqlBytes } = session.sqlLimits;
    const { db, kv } = await envoy.getOrCreateActor("sql", `limits-${run}`);
    const n = maxParams + 1;
    await rejects(db.execute(`SELECT ${"?,".repeat(n - 1)}?`, new Array(n).fill(1)), pkg.LimitExceededError, (e) => {
      eq(e.code, "LIMIT_EXCEEDED", "code");
      eq(e.group, "limit", "group");
      eq(e.limit.kind, "PARAMS", "limit.kind");
      eq(e.limit.max, maxParams, "limit.max");
      eq(e.limit.actual, n, "limit.actual");
    });
    await rejects(db.execute(`SELECT 1 -- ${"x".repeat(maxSqlBytes)}`), pkg.LimitExceededError, (e) => {
      eq(e.limit.kind, "SQL_BYTES", "limit.kind");
      eq(e.limit.max, maxSqlBytes, "limit.max");
    });
    await rejects(kv.put("k".repeat(session.limits.maxKvKeyBytes + 1), "v"), EnvoyError, (e) => eq(e.code, "LIMIT_EXCEEDED", "KV key code"));
    // Nothing ran, and the actor is fine.
    eq((await db.execute("SELECT 1")).rows[0][0], 1, "actor still serves");
  });

  test("per-call deadline -> TimeoutError (sent: it may have run)", async () => {
    const envoy = await connect({ requestTimeoutMs: 100 });
    const { db } = await envoy.getOrCreateActor("sql", `timeout-${run}`);
    await db.execute("SELECT 1"); // warm: actor placed, connections open
    await rejects(db.execute(SLOW_SQL), pkg.TimeoutError, (e) => {
      eq(e.code, "TIMEOUT", "code");
      eq(e.timeoutMs, 100, "timeoutMs");
      eq(e.sent, true, "sent");
    });
  });

  test("KV get/put/delete/list", async () => {
    const envoy = await connect();
    const { kv } = await envoy.getOrCreateActor("kv", `kv-${run}`);
    eq(await kv.get("missing"), null, "absent key");
    await kv.put("user:1", "alice");
    await kv.put("user:2", new Uint8Array([0, 255]));
    await kv.put(enc.encode("user:3"), enc.encode("carol").buffer);
    await kv.put("zzz", "last");
    eq(dec.decode(await kv.get("user:1")), "alice", "get text");
    eq(await kv.get("user:2"), new Uint8Array([0, 255]), "get bytes");
    const all = await kv.list({ prefix: "user:" });
    eq(all.map((e) => dec.decode(e.key)), ["user:1", "user:2", "user:3"], "list prefix keys");
    eq(dec.decode(all[2].value), "carol", "list value");
    const rev = await kv.list({ reverse: true, limit: 2 });
    eq(rev.map((e) => dec.decode(e.key)), ["zzz", "user:3"], "list reverse limit");
    const range = await kv.list({ start: "user:2", end: "user:3" });
    eq(range.map((e) => dec.decode(e.key)), ["user:2"], "list range");
    await kv.delete("user:1");
    eq(await kv.get("user:1"), null, "deleted");
  });

  test("300 concurrent calls on one socket", async () => {
    const envoy = await connect();
    const { db, kv } = await envoy.getOrCreateActor("sql", `many-${run}`);
    await db.exec("CREATE TABLE m(id INTEGER PRIMARY KEY, v TEXT)");
    const calls = [];
    for (let i = 0; i < 300; i++) {
      if (i % 3 === 0) calls.push(db.executeWrite("INSERT INTO m(id, v) VALUES (?, ?)", [i, `v${i}`]).then((r) => r.changes));
      else if (i % 3 === 1) calls.push(db.execute("SELECT ? * 2 AS d", [i]).then((r) => r.rows[0][0]));
      else calls.push(kv.put(`k${i}`, `v${i}`).then(() => kv.get(`k${i}`)).then((v) => dec.decode(v)));
    }
    const results = await Promise.all(calls);
    for (let i = 0; i < 300; i++) {
      const want = i % 3 === 0 ? 1 : i % 3 === 1 ? i * 2 : `v${i}`;
      eq(results[i], want, `result ${i}`);
    }
    eq((await db.execute("SELECT count(*) FROM m")).rows[0][0], 100, "rows inserted");
  });

  test("stale generation: ActorStopped at once, or the engine's FenceMismatch", async () => {
    const a = await connect();
    const b = await connect();
    const key = `fence-${run}`;
    const stoppedOnA = [];
    a.onActorStop((info) => stoppedOnA.push(info));
    const first = await a.getOrCreateActor("sql", key, { reacquire: false });
    await first.db.exec("CREATE TABLE f(x)");
    await b.getOrCreateActor("sql", key); // moves the actor to b (a is drained)
    // a hears of the stop on its own socket, not necessarily before b's answer.
    const movedAway = () => stoppedOnA.some((s) => s.actorId === first.id);
    for (let i = 0; i < 200 && !movedAway(); i++) await sleep(10);
    assert(
      stoppedOnA.some((s) => s.actorId === first.id && Number(s.generation) === Number(first.generation) && s.reason === "REPLACED"),
      `a's onActorStop saw the move (reason REPLACED): ${show(stoppedOnA)}`,
    );
    // a's handle knows its generation was stopped: its calls fail at once, unsent.
    assert(first.stopped, "first.stopped");
    await rejects(first.db.execute("SELECT count(*) FROM f"), pkg.ActorStoppedError, (e) => {
      eq(e.stopReason, "REPLACED", "stopReason");
      eq(e.sent, false, "sent");
    });
    const back = await a.getOrCreateActor("sql", key, { reacquire: false }); // and back to a, at a newer generation
    assert(Number(back.generation) > Number(first.generation), "generation grew");
    await back.db.execute("SELECT count(*) FROM f");
    // A handle on b, whose envoy learns of the move only as it happens: a request racing the
    // stop is refused by the engine's fence, or stopped locally — never run on a stale generation.
    const onB = await b.getOrCreateActor("sql", key, { reacquire: false });
    await a.getOrCreateActor("sql", key);
    const err = await rejects(onB.db.execute("SELECT count(*) FROM f"), EnvoyError);
    assert(["FENCE_MISMATCH", "ACTOR_STOPPED", "ACTOR_NOT_PLACED"].includes(err.code), `code ${err.code}`);
    if (err.code === "FENCE_MISMATCH") {
      assert(err instanceof pkg.FenceMismatchError, "FenceMismatchError");
      eq(err.group, "actor", "group");
    }
  });

  test("drain: in-flight work answered, new work ActorStopping while the stop handler runs, ActorStopped after", async () => {
    const envoy = await connect({ reacquire: false }); // (with reacquire, new work would re-place the actor once stopped)
    const stopped = [];
    let release;
    const held = new Promise((r) => (release = r));
    envoy.onActorStop(async (info) => {
      stopped.push(info);
      await held; // the actor drains until the handler settles
    });
    const actor = await envoy.getOrCreateActor("sql", `drain-${run}`);
    await actor.db.exec("CREATE TABLE d(x)");
    const slow = actor.db.execute(SLOW_SQL);
    slow.catch(() => {}); // awaited below; keeps an early failure from being "unhandled" meanwhile
    await sleep(150);
    const stop = fetch(`${ctx.engine.httpUrl}/actors/${encodeURIComponent(actor.id)}/stop`, { method: "POST" });
    stop.catch(() => {});
    for (let i = 0; i < 300 && stopped.length === 0; i++) await sleep(10);
    assert(stopped.some((s) => s.actorId === actor.id && s.reason === "OPERATOR"), `onActorStop called for ${actor.id} (reason OPERATOR): ${show(stopped)}`);
    await rejects(actor.db.execute("SELECT 1"), pkg.ActorStoppingError, (e) => eq(e.code, "ACTOR_STOPPING", "code"));
    await rejects(actor.kv.get("x"), EnvoyError, (e) => eq(e.code, "ACTOR_STOPPING", "KV code"));
    eq(actor.stopped, false, "still draining");
    release();
    const r = await slow;
    eq(r.rows[0][0], SLOW_COUNT, "in-flight query answered");
    const resp = await stop;
    assert(resp.ok, `admin stop answered ${resp.status}`);
    await resp.text();
    assert(actor.stopped, "stopped once the handler settled");
    await rejects(actor.db.execute("SELECT 1"), pkg.ActorStoppedError, (e) => eq(e.stopReason, "OPERATOR", "stopReason"));
  });

  test("v5 exactly-once: a write whose connection is cut is re-sent with its key and applied once", async () => {
    const envoy = await connect({ endpoint: ctx.proxy.wsUrl });
    const { db } = await envoy.getOrCreateActor("sql", `cut-${run}`);
    await db.exec("CREATE TABLE c(x); CREATE TABLE w(n)");
    // A slow, non-idempotent write: the cut comes while it runs. Below v5 this was an
    // IndeterminateResultError; at v5 the client re-sends it with its request key after the
    // reconnect and the engine runs it once (answering the recorded outcome if it committed).
    const slow = db.executeWrite(`INSERT INTO w(n) ${SLOW_SQL}`);
    slow.catch(() => {});
    await sleep(150);
    const cut = await fetch(`${ctx.proxy.controlUrl}/cut`, { method: "POST" });
    assert(cut.ok, "proxy cut");
    assert(JSON.parse(await cut.text()).cut > 0, "the proxy had connections to cut");
    const done = await slow;
    eq(done.changes, 1, "changes of the re-sent write");
    eq(typeof done.replayed, "boolean", "replayed is reported");
    log(`  (the cut write: replayed=${done.replayed})`);
    eq((await db.execute("SELECT count(*), max(n) FROM w")).rows[0], [1, SLOW_COUNT], "applied exactly once");
    // The same for a write batch (keyed as a whole): cut while its first statement runs.
    const batch = db.batch([`INSERT INTO w(n) ${SLOW_SQL}`, "INSERT INTO w(n) VALUES (-1)"], { mode: "write" });
    batch.catch(() => {});
    await sleep(150);
    const cut2 = await fetch(`${ctx.proxy.controlUrl}/cut`, { method: "POST" });
    assert(cut2.ok && JSON.parse(await cut2.text()).cut > 0, "the proxy cut the batch's connection");
    const b = await batch;
    eq([b[0].changes, b[1].changes], [1, 1], "changes of the re-sent batch");
    log(`  (the cut batch: replayed=${b.replayed})`);
    eq((await db.execute("SELECT count(*), sum(n = -1) FROM w")).rows[0], [3, 1], "the batch applied exactly once");
    // The envoy reconnects by itself (same envoy key: the session resumes) and work goes on.
    const after = await db.executeWrite("INSERT INTO c(x) VALUES (1)");
    eq(after.changes, 1, "write after reconnect");
  });

  test("engine pinned to v3: KV works, SQL -> RemoteUnavailable", async () => {
    const envoy = await Envoy.connect({ ...opts(), endpoint: ctx.v3.wsUrl });
    cleanup.push(envoy);
    eq(envoy.protocolVersion, 3, "negotiated version");
    const actor = await envoy.getOrCreateActor("old", `v3-${run}`);
    await actor.kv.put("k", "v");
    eq(dec.decode(await actor.kv.get("k")), "v", "KV at v3");
    await rejects(actor.db.execute("SELECT 1"), pkg.RemoteUnavailableError, (e) => {
      eq(e.code, "REMOTE_UNAVAILABLE", "code");
      eq(e.group, "protocol", "group");
      eq(e.feature, "RemoteSqlite", "feature");
      eq(e.requiredVersion, 4, "requiredVersion");
      eq(e.targetVersion, 3, "targetVersion");
    });
  });

  test("token: the right one connects; malformed options are refused before connecting", async () => {
    const good = await Envoy.connect({ ...opts(), endpoint: ctx.authed.wsUrl, token: ctx.authed.token });
    cleanup.push(good);
    const actor = await good.getOrCreateActor("auth", `auth-${run}`);
    eq((await actor.db.execute("SELECT 7")).rows[0][0], 7, "query with the right token");
    await rejects(Envoy.connect({ ...opts(), token: "bad token" }), pkg.InvalidValueError, (e) => eq(e.code, "INVALID_CONFIG", "token with a space"));
    await rejects(Envoy.connect({ endpoint: ctx.engine.wsUrl, namespace: "n" }), pkg.InvalidValueError, (e) => eq(e.code, "INVALID_OPTION", "missing poolName"));
    await rejects(Envoy.connect({ ...opts(), connectTimeoutMs: "1s" }), pkg.InvalidValueError, (e) => eq(e.code, "INVALID_OPTION", "connectTimeoutMs type"));
  });

  test("wrong token, no token, nothing listening -> ConnectionError at the connect deadline", async () => {
    const refused = (extra) => Envoy.connect({ ...opts(), connectTimeoutMs: 600, ...extra });
    // The three refusals wait out the same short deadline, so they run together.
    await Promise.all([
      rejects(refused({ endpoint: ctx.authed.wsUrl, token: "wrong" }), pkg.ConnectionError, (e) => {
        eq(e.code, "DISCONNECTED", "code");
        // Native clients see the 401; a host WebSocket cannot, so there it is retried until the deadline.
        assert(["UNAUTHORIZED", "CLOSED_BY_ENGINE", "GAVE_UP"].includes(e.reason), `reason ${e.reason}`);
      }),
      rejects(refused({ endpoint: ctx.authed.wsUrl }), pkg.ConnectionError, (e) => eq(e.code, "DISCONNECTED", "no token")),
      rejects(refused({ endpoint: "ws://127.0.0.1:9" }), pkg.ConnectionError, (e) => {
        eq(e.code, "DISCONNECTED", "nothing listening");
        eq(e.reason, "GAVE_UP", "reason");
      }),
    ]);
  });

  test("a connect abandoned at its deadline leaves nothing behind", async () => {
    // The upgrade hangs, the 300 ms deadline passes with the attempt still pending, and the
    // socket fails only later: its late error/close events must find no freed callbacks.
    const t0 = Date.now();
    await rejects(Envoy.connect({ ...opts(), endpoint: ctx.blackHole.wsUrl, connectTimeoutMs: 300 }), pkg.ConnectionError, (e) =>
      eq(e.code, "DISCONNECTED", "code"),
    );
    await sleep(ctx.blackHole.holdMs + 300 - (Date.now() - t0));
    // Still alive (in Node or Deno an exception from a freed callback would have ended the process).
    const envoy = await connect();
    eq((await (await envoy.getOrCreateActor("sql", `after-abandon-${run}`)).db.execute("SELECT 1")).rows[0][0], 1, "works after");
  });

  test("close: later calls fail with a ConnectionError", async () => {
    const envoy = await Envoy.connect(opts());
    const actor = await envoy.getOrCreateActor("sql", `close-${run}`);
    await envoy.close();
    await rejects(actor.db.execute("SELECT 1"), pkg.ConnectionError, (e) => eq(e.code, "CLOSED", "code"));
  });

  test("constraint errors carry SQLite's symbolic name and the constraint kind", async () => {
    const envoy = await connect();
    const { db } = await envoy.getOrCreateActor("sql", `constraints-${run}`);
    const { SqlError, ConstraintError } = pkg;
    await db.exec("CREATE TABLE c(id INTEGER PRIMARY KEY, email TEXT UNIQUE, name TEXT NOT NULL, age INTEGER CHECK (age >= 0)); " +
      "CREATE TABLE p(k TEXT PRIMARY KEY); INSERT INTO c VALUES (1, 'a@x', 'a', 1); INSERT INTO p VALUES ('k')");
    const cases = [
      ["INSERT INTO c VALUES (1, 'b@x', 'b', 1)", 1555, "SQLITE_CONSTRAINT_PRIMARYKEY", "PRIMARY_KEY"],
      ["INSERT INTO p VALUES ('k')", 1555, "SQLITE_CONSTRAINT_PRIMARYKEY", "PRIMARY_KEY"],
      ["INSERT INTO c VALUES (2, 'a@x', 'b', 1)", 2067, "SQLITE_CONSTRAINT_UNIQUE", "UNIQUE"],
      ["INSERT INTO c VALUES (3, 'c@x', NULL, 1)", 1299, "SQLITE_CONSTRAINT_NOTNULL", "NOT_NULL"],
      ["INSERT INTO c VALUES (4, 'd@x', 'd', -1)", 275, "SQLITE_CONSTRAINT_CHECK", "CHECK"],
    ];
    for (const [sql, ext, name, kind] of cases) {
      await rejects(db.executeWrite(sql), ConstraintError, (e) => {
        assert(e instanceof SqlError && e instanceof EnvoyError, "a ConstraintError is a SqlError");
        eq(e.code, "SQLITE", "code");
        eq(e.extendedCode, ext, `extendedCode of ${sql}`);
        eq(e.sqliteName, name, `sqliteName of ${sql}`);
        eq(e.constraint, kind, `constraint of ${sql}`);
      });
    }
    await rejects(db.execute("SELECT * FROM nowhere"), SqlError, (e) => {
      assert(!(e instanceof ConstraintError), "not a constraint error");
      eq(e.sqliteName, "SQLITE_ERROR", "sqliteName of a plain error");
      eq(e.constraint, undefined, "constraint of a plain error");
    });
    eq(pkg.sqliteName(787), "SQLITE_CONSTRAINT_FOREIGNKEY", "sqliteName(787)");
    eq(pkg.sqliteName(5), "SQLITE_BUSY", "sqliteName(5)");
    // The wasm side's message for an actor that is not placed no longer says it twice.
    const notPlaced = pkg.toEnvoyError({ envoyCode: "ACTOR_NOT_PLACED", group: "actor", message: "actor not placed on this envoy: the actor is not placed on this envoy" });
    eq(notPlaced.message, "the actor is not placed on this envoy", "deduplicated message");
    const other = pkg.toEnvoyError({ envoyCode: "ACTOR_NOT_PLACED", group: "actor", message: "actor not placed on this envoy: generation 3 moved" });
    eq(other.message, "actor not placed on this envoy: generation 3 moved", "a message with news kept whole");
  });

  test("query: T is a cast unless `row` checks each row", async () => {
    const envoy = await connect();
    const { db } = await envoy.getOrCreateActor("sql", `rows-${run}`);
    await db.exec("CREATE TABLE r(id INTEGER PRIMARY KEY, label TEXT); INSERT INTO r VALUES (1, 'one'), (2, NULL)");
    const toLabel = (r) => {
      if (typeof r.id !== "number" || typeof r.label !== "string") throw new TypeError(`bad row ${show(r)}`);
      return { id: r.id, label: r.label.toUpperCase() };
    };
    const ok = await db.query("SELECT id, label FROM r WHERE id = 1", [], { row: toLabel });
    eq(ok.length, 1, "rows");
    eq(ok[0].label, "ONE", "row converted by the validator");
    await rejects(db.query("SELECT id, label FROM r ORDER BY id", [], { row: toLabel }), TypeError, (e) =>
      assert(/bad row/.test(e.message), e.message),
    );
  });

  test("per-call timeoutMs and signal", async () => {
    const envoy = await connect();
    const actor = await envoy.getOrCreateActor("sql", `deadline-${run}`);
    const { db } = actor;
    await db.execute("SELECT 1");
    await rejects(db.execute(SLOW_SQL, [], { timeoutMs: 100 }), pkg.TimeoutError, (e) => {
      eq(e.code, "TIMEOUT", "code");
      eq(e.timeoutMs, 100, "timeoutMs");
      eq(e.sent, undefined, "sent (unknown for a per-call deadline)");
    });
    const ac = new AbortController();
    const reason = new Error("user went away");
    const aborted = rejects(db.execute(SLOW_SQL, [], { signal: ac.signal }), pkg.AbortedError, (e) => {
      eq(e.code, "ABORTED", "code");
      assert(e.cause === reason, "cause is the signal's reason");
    });
    await sleep(50);
    ac.abort(reason);
    await aborted;
    const pre = new AbortController();
    pre.abort();
    await rejects(actor.kv.get("k", { signal: pre.signal }), pkg.AbortedError, (e) => eq(e.sent, false, "already aborted: nothing sent"));
    await rejects(db.execute("SELECT 1", [], { timeoutMs: -1 }), pkg.InvalidValueError, (e) => eq(e.code, "INVALID_OPTION", "code"));
    await rejects(db.execute("SELECT 1", [], { signal: "soon" }), pkg.InvalidValueError, (e) => eq(e.code, "INVALID_OPTION", "code"));
    // Neither option spoils the envoy; a call that beats its deadline resolves normally.
    eq((await db.execute("SELECT 5", [], { timeoutMs: 30_000, signal: new AbortController().signal })).rows[0][0], 5, "in time");
  });

  test("stopped actor: reacquire false fails at once with ActorStoppedError; reacquire() places it again", async () => {
    const envoy = await connect({ reacquire: false });
    const stops = [];
    envoy.onActorStop((info) => stops.push(info));
    const actor = await envoy.getOrCreateActor("sql", `stopped-${run}`);
    await actor.db.exec("CREATE TABLE s(x); INSERT INTO s VALUES (7)");
    const gen = actor.generation;
    const resp = await fetch(`${ctx.engine.httpUrl}/actors/${encodeURIComponent(actor.id)}/stop`, { method: "POST" });
    assert(resp.ok, `admin stop answered ${resp.status}`);
    await resp.text();
    for (let i = 0; i < 200 && !actor.stopped; i++) await sleep(10);
    assert(actor.stopped, "actor.stopped after the engine stopped it");
    await rejects(actor.db.execute("SELECT x FROM s"), pkg.ActorStoppedError, (e) => {
      eq(e.code, "ACTOR_STOPPED", "code");
      eq(e.group, "actor", "group");
      eq(e.stopReason, "OPERATOR", "stopReason");
      eq(Number(e.stoppedGeneration), Number(gen), "stoppedGeneration");
      eq(e.sent, false, "sent");
    });
    await rejects(actor.kv.put("k", "v"), pkg.ActorStoppedError);
    const id = actor.id;
    await actor.reacquire();
    eq(actor.id, id, "same actor id");
    assert(Number(actor.generation) > Number(gen), `new generation ${show(actor.generation)} > ${show(gen)}`);
    eq(actor.stopped, false, "not stopped any more");
    eq((await actor.db.execute("SELECT x FROM s")).rows, [[7]], "its data, through the same handle");
  });

  test("reacquire (default): a handle whose actor moved away re-acquires it by itself", async () => {
    const a = await connect();
    const b = await connect();
    const key = `moved-${run}`;
    const actor = await a.getOrCreateActor("sql", key);
    await actor.db.exec("CREATE TABLE m(x); INSERT INTO m VALUES (1)");
    const gen = actor.generation;
    const onB = await b.getOrCreateActor("sql", key); // moves it to b
    await onB.db.executeWrite("INSERT INTO m VALUES (2)");
    for (let i = 0; i < 200 && !actor.stopped; i++) await sleep(10);
    // Whether or not a's stop record arrived yet, the call lands on a fresh generation.
    eq((await actor.db.execute("SELECT count(*) FROM m")).rows[0][0], 2, "sees b's write");
    eq(actor.id, onB.id, "same actor id");
    assert(Number(actor.generation) > Number(onB.generation) && Number(onB.generation) > Number(gen), "generation grew twice");
    // A write right after a move is also exact: the refused call never ran, the retry runs once.
    await onB.db.executeWrite("INSERT INTO m VALUES (3)"); // b's handle re-acquires now, moving it back to b
    eq((await actor.db.run("INSERT INTO m VALUES (4)")).changes, 1, "write after a move");
    eq((await actor.db.execute("SELECT group_concat(x) FROM (SELECT x FROM m ORDER BY x)")).rows[0][0], "1,2,3,4", "each write ran once");
  });

  test("engine restart: the handle re-acquires (same id, new generation, data kept)", async () => {
    const envoy = await connect({ endpoint: ctx.restart.wsUrl });
    const manualEnvoy = await connect({ endpoint: ctx.restart.wsUrl, reacquire: false });
    const key = `restart-${run}`;
    const actor = await envoy.getOrCreateActor("sql", key);
    await actor.db.exec("CREATE TABLE r(x); INSERT INTO r VALUES ('before')");
    const manual = await manualEnvoy.getOrCreateActor("kv", key);
    await manual.kv.put("k", "v");
    const gen = actor.generation;
    const resp = await fetch(`${ctx.restart.controlUrl}/restart-engine`, { method: "POST" });
    assert(resp.ok, `restart answered ${resp.status}: ${await resp.text()}`);
    const rows = await actor.db.query("SELECT x FROM r");
    eq(rows.map((r) => r.x), ["before"], "data after the restart");
    assert(Number(actor.generation) > Number(gen), `generation ${show(actor.generation)} > ${show(gen)}`);
    eq((await actor.db.run("INSERT INTO r VALUES ('after')")).changes, 1, "writes after the restart");
    // Without reacquire the handle fails with a typed error, and reacquire() repairs it.
    const err = await rejects(manual.kv.get("k"), EnvoyError);
    assert(["ACTOR_STOPPED", "ACTOR_NOT_PLACED", "FENCE_MISMATCH"].includes(err.code), `typed error ${err.code}: ${err.message}`);
    assert(!/not placed on this envoy: the actor is not placed/i.test(err.message), `message says it once: ${err.message}`);
    await manual.reacquire();
    eq(dec.decode(await manual.kv.get("k")), "v", "after reacquire()");
  });

  test("retry recipe for reads: exact across a connection cut", async () => {
    // The recipe from specs/wasm.md: a read has no effect, so retrying it on an outcome that
    // leaves "did it run?" open is exact.
    const RETRYABLE = new Set(["INDETERMINATE_RESULT", "TIMEOUT", "DISCONNECTED", "OVERLOADED", "ACTOR_STOPPING", "ACTOR_UNAVAILABLE"]);
    async function read(f, attempts = 3) {
      for (let i = 1; ; i++) {
        try {
          return await f();
        } catch (e) {
          if (!(e instanceof EnvoyError) || !RETRYABLE.has(e.code) || i >= attempts) throw e;
        }
      }
    }
    const envoy = await connect({ endpoint: ctx.proxy.wsUrl });
    const { db } = await envoy.getOrCreateActor("sql", `retry-${run}`);
    await db.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1), (2), (3)");
    let calls = 0;
    const result = read(() => {
      calls++;
      return db.execute(calls === 1 ? SLOW_SQL : "SELECT sum(x) FROM t");
    });
    await sleep(150);
    const cut = await fetch(`${ctx.proxy.controlUrl}/cut`, { method: "POST" });
    assert(cut.ok && JSON.parse(await cut.text()).cut > 0, "the proxy cut a connection");
    // At v5 the client itself re-sends the cut read (with its key) after reconnecting, so the
    // recipe's own retry is not needed: the first call answers. (Against a v4 engine the first call
    // fails with INDETERMINATE_RESULT and the recipe's retry answers 6.)
    eq((await result).rows[0][0], SLOW_COUNT, "the re-sent read's answer");
    eq(calls, 1, "no retry needed at v5");
  });

  test("Symbol.asyncDispose: an actor waits for its calls; an envoy closes", async () => {
    const envoy = await Envoy.connect(opts());
    const actor = await envoy.getOrCreateActor("sql", `dispose-${run}`);
    const inflight = actor.db.execute("SELECT 11");
    await actor[Symbol.asyncDispose]();
    eq((await inflight).rows[0][0], 11, "the call in flight was answered");
    await rejects(actor.db.execute("SELECT 1"), EnvoyError, (e) => eq(e.code, "DISPOSED", "after dispose"));
    await envoy[Symbol.asyncDispose]();
    await rejects(envoy.getOrCreateActor("sql", `dispose-${run}`), pkg.ConnectionError, (e) => eq(e.code, "CLOSED", "after dispose"));
  });

  // ---- protocol v5: cost, batch, transactions, result streams ------------------------------

  test("v5: cost on every SQL result; session advertises the v5 limits", async () => {
    const envoy = await connect();
    const s = envoy.session;
    assert(s.engineLimits && s.engineLimits.maxBatchStatements > 0, `engineLimits: ${show(s.engineLimits)}`);
    assert(s.durability === "FSYNC" || s.durability === "OS", `durability ${s.durability}`);
    const { db } = await envoy.getOrCreateActor("sql", `cost-${run}`);
    const isCost = (c, what) => {
      assert(c && typeof c === "object", `${what}: cost ${show(c)}`);
      for (const k of ["rowsRead", "rowsWritten", "durationUs"]) assert(typeof c[k] === "number" && c[k] >= 0, `${what}: cost.${k} = ${show(c[k])}`);
      return c;
    };
    isCost((await db.exec("CREATE TABLE k(x); INSERT INTO k VALUES (1), (2), (3)")).cost, "exec");
    const w = await db.executeWrite("INSERT INTO k VALUES (4), (5)");
    eq(isCost(w.cost, "executeWrite").rowsWritten, 2, "rowsWritten of a 2-row insert");
    eq(w.replayed, false, "replayed of a write sent once");
    const r = await db.execute("SELECT sum(x) FROM k");
    assert(isCost(r.cost, "execute").rowsRead >= 5, `rowsRead ${r.cost.rowsRead} >= 5`);
    eq(r.replayed, false, "replayed of a read");
  });

  test("v5 batch: one result per statement, all or nothing, statementIndex of the failing one", async () => {
    const envoy = await connect();
    const { db } = await envoy.getOrCreateActor("sql", `batch-${run}`);
    await db.exec("CREATE TABLE acct(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)");
    const out = await db.batch(
      [
        { sql: "INSERT INTO acct(id, balance) VALUES (?, ?)", params: [1, 100] },
        { sql: "INSERT INTO acct(id, balance) VALUES (?, ?)", params: [2, 0n] },
        "UPDATE acct SET balance = balance + 10",
        { sql: "SELECT id, balance FROM acct ORDER BY id" },
      ],
      { mode: "write" },
    );
    eq(out.length, 4, "one result per statement");
    eq(out[0].lastInsertRowId, 1, "lastInsertRowId of statement 0");
    eq(out[1].changes, 1, "changes of statement 1");
    eq(out[2].changes, 2, "changes of statement 2");
    eq(out[3].columns, ["id", "balance"], "columns of statement 3");
    eq(out[3].rows, [[1, 110], [2, 10]], "statement 3 sees the earlier ones");
    eq(out[3].cost, null, "a statement's cost (the batch reports it as a whole)");
    assert(out.cost && out.cost.rowsWritten >= 4, `the batch's cost ${show(out.cost)}`);
    eq(out.replayed, false, "replayed");
    // All or nothing: statement 1 fails, statement 0 is not applied either.
    const { ConstraintError, SqlError, InvalidValueError } = pkg;
    await rejects(
      db.batch([
        { sql: "UPDATE acct SET balance = 0 WHERE id = 1" },
        { sql: "INSERT INTO acct(id, balance) VALUES (?, ?)", params: [2, 5] },
        { sql: "INSERT INTO acct(id, balance) VALUES (3, 3)" },
      ], { mode: "write" }),
      ConstraintError,
      (e) => {
        assert(e instanceof SqlError, "a SqlError");
        eq(e.statementIndex, 1, "statementIndex");
        eq(e.committed, false, "committed");
        eq(e.constraint, "PRIMARY_KEY", "constraint");
      },
    );
    eq((await db.query("SELECT id, balance FROM acct ORDER BY id")).map((r) => [r.id, r.balance]), [[1, 110], [2, 10]], "nothing of the failed batch applied");
    // A read batch that writes fails (READONLY), and applies nothing.
    await rejects(db.batch(["SELECT 1", "DELETE FROM acct"], { mode: "read" }), SqlError, (e) => eq(e.statementIndex, 1, "statementIndex in a read batch"));
    eq((await db.execute("SELECT count(*) FROM acct")).rows[0][0], 2, "the read batch deleted nothing");
    // Deferred (the default) reads and writes.
    const d = await db.batch(["SELECT count(*) FROM acct", { sql: "DELETE FROM acct WHERE id = ?", params: [2] }]);
    eq(d[0].rows[0][0], 2, "deferred batch read");
    eq(d[1].changes, 1, "deferred batch write");
    eq((await db.batch([])).length, 0, "an empty batch");
    // Refused before anything is sent.
    await rejects(db.batch([{ sql: "SELECT ?", params: [undefined] }]), InvalidValueError, (e) => eq(e.code, "UNDEFINED_VALUE", "code"));
    await rejects(db.batch("SELECT 1"), InvalidValueError, (e) => eq(e.code, "INVALID_OPTION", "not an array"));
    await rejects(db.batch([{ params: [] }]), InvalidValueError, (e) => eq(e.code, "INVALID_OPTION", "no sql"));
    await rejects(db.batch(["SELECT 1"], { mode: "exclusive" }), InvalidValueError, (e) => eq(e.code, "INVALID_OPTION", "mode"));
    const max = envoy.session.engineLimits.maxBatchStatements;
    await rejects(db.batch(new Array(max + 1).fill("SELECT 1")), pkg.LimitExceededError, (e) => eq(e.limit.kind, "BATCH_STATEMENTS", "limit.kind"));
  });

  test("v5 transaction: commit returns the value; a throw rolls back and rethrows the original error", async () => {
    const envoy = await connect();
    const { db } = await envoy.getOrCreateActor("sql", `tx-${run}`);
    await db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");
    const n = await db.transaction(async (tx) => {
      await tx.execute("INSERT INTO t(v) VALUES (?)", ["a"]);
      await tx.run("INSERT INTO t(v) VALUES (?)", ["b"]);
      const [row] = await tx.query("SELECT count(*) AS n FROM t");
      return row.n;
    }, { mode: "write" });
    eq(n, 2, "the function's value (it saw its own writes)");
    eq((await db.execute("SELECT group_concat(v) FROM t")).rows[0][0], "a,b", "committed");
    // A throw: rolled back, the original error rethrown.
    class Boom extends Error {}
    const boom = new Boom("no");
    const err = await rejects(db.transaction(async (tx) => {
      await tx.run("INSERT INTO t(v) VALUES ('c')");
      throw boom;
    }), Boom);
    assert(err === boom, "the very error thrown");
    // A failing statement left uncaught: its SqlError, and the transaction's earlier write undone.
    await rejects(db.transaction(async (tx) => {
      await tx.run("INSERT INTO t(v) VALUES ('d')");
      await tx.run("INSERT INTO t(id, v) VALUES (1, 'dup')");
    }, { mode: "deferred" }), pkg.ConstraintError, (e) => eq(e.constraint, "PRIMARY_KEY", "constraint"));
    eq((await db.execute("SELECT group_concat(v) FROM t")).rows[0][0], "a,b", "rolled back twice");
    // A caught failing statement keeps the transaction usable.
    const kept = await db.transaction(async (tx) => {
      await rejects(tx.execute("INSERT INTO t(id, v) VALUES (1, 'dup')"), pkg.ConstraintError);
      await tx.run("INSERT INTO t(v) VALUES ('e')");
      return "ok";
    });
    eq(kept, "ok", "value after a caught statement error");
    eq((await db.execute("SELECT group_concat(v) FROM t")).rows[0][0], "a,b,e", "committed after a caught error");
    // begin / commit by hand.
    const tx = await db.begin({ mode: "deferred" });
    assert(tx.leaseMs > 0, `leaseMs ${tx.leaseMs}`);
    eq((await tx.execute("UPDATE t SET v = upper(v)")).changes, 3, "changes in the transaction");
    const c = await tx.commit();
    eq(c.changes, 3, "commit changes");
    assert(c.cost && typeof c.cost.durationUs === "number", `commit cost ${show(c.cost)}`);
    eq(c.replayed, false, "commit replayed");
    await rejects(tx.execute("SELECT 1"), pkg.TransactionError, (e) => eq(e.code, "TRANSACTION_NOT_FOUND", "after commit"));
    const rb = await db.begin();
    await rb.run("DELETE FROM t");
    await rb.rollback();
    await rb.rollback(); // idempotent
    eq((await db.execute("SELECT group_concat(v) FROM t")).rows[0][0], "A,B,E", "rolled back by hand");
    await rejects(db.begin({ mode: "exclusive" }), pkg.InvalidValueError, (e) => eq(e.code, "INVALID_OPTION", "mode"));
    await rejects(db.begin({ leaseMs: 0 }), pkg.InvalidValueError, (e) => eq(e.code, "INVALID_OPTION", "leaseMs"));
  });

  test("v5 transaction: one the engine ended (lease ran out) rejects with TransactionError", async () => {
    const envoy = await connect();
    const { db } = await envoy.getOrCreateActor("sql", `lease-${run}`);
    await db.exec("CREATE TABLE l(x)");
    const min = envoy.session.engineLimits.minTransactionLeaseMs;
    const leaseMs = Math.max(min, 150);
    const tx = await db.begin({ leaseMs });
    eq(tx.leaseMs, leaseMs, "granted lease");
    await tx.run("INSERT INTO l VALUES (1)");
    // Idle for well past the lease: the engine rolls it back (no assertion on when).
    await sleep(leaseMs * 5);
    await rejects(tx.execute("INSERT INTO l VALUES (2)"), pkg.TransactionError, (e) => {
      eq(e.code, "TRANSACTION_EXPIRED", "code");
      eq(e.group, "sql", "group");
    });
    await tx.rollback(); // still succeeds
    // The closure form: the commit of an expired transaction rejects typed.
    await rejects(db.transaction(async (t) => {
      await t.run("INSERT INTO l VALUES (3)");
      await sleep(leaseMs * 5);
    }, { leaseMs }), pkg.TransactionError, (e) => eq(e.code, "TRANSACTION_EXPIRED", "commit after the lease"));
    eq((await db.execute("SELECT count(*) FROM l")).rows[0][0], 0, "nothing of either committed");
  });

  test("v5 iterate: a result larger than one response, row by row; break cancels the stream", async () => {
    const envoy = await connect({ endpoint: ctx.small.wsUrl });
    const { db } = await envoy.getOrCreateActor("sql", `stream-${run}`);
    const N = 600; // 600 rows of ~1 KB: several times the engine's maxResponseBytes (64 KiB here)
    await db.exec(`CREATE TABLE big(id INTEGER PRIMARY KEY, body TEXT);
      INSERT INTO big(id, body) WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ${N})
      SELECT x, replace(hex(zeroblob(500)), '0', 'x') FROM c`);
    // In one response it does not fit.
    await rejects(db.execute("SELECT id, body FROM big ORDER BY id"), pkg.LimitExceededError, (e) => eq(e.limit.kind, "RESPONSE_BYTES", "limit.kind"));
    // Streamed, it does: every row, in order, with a small credit window (bounded memory).
    const rows = db.iterate("SELECT id, body FROM big WHERE id > ? ORDER BY id", [0], { creditBytes: 16 * 1024 });
    let count = 0;
    for await (const row of rows) {
      count++;
      eq(row.id, count, "row order");
      eq(row.body.length, 1000, "row body");
    }
    eq(count, N, "rows streamed");
    eq(rows.columns, ["id", "body"], "columns");
    assert(rows.cost && rows.cost.rowsRead >= N, `the stream's cost ${show(rows.cost)}`);
    // break: return() cancels the stream in the engine. The engine allows one open stream per
    // connection here (--max-open-streams 1), so a cancelled stream must free its slot: without
    // the cancel it would hold it until its lease (30 s), and the next iterate would fail.
    const early = db.iterate("SELECT id FROM big ORDER BY id", [], { creditBytes: 4096, integers: "bigint" });
    let seen = 0;
    for await (const row of early) {
      eq(typeof row.id, "bigint", "integers: bigint");
      if (++seen === 10) break;
    }
    eq((await early.next()).done, true, "done after break");
    let again;
    for (let i = 0; i < 100; i++) {
      try {
        again = await db.iterate("SELECT count(*) AS n FROM big").toArray();
        break;
      } catch (e) {
        if (!(e instanceof pkg.LimitExceededError && e.limit?.kind === "OPEN_STREAMS")) throw e;
        await sleep(20); // the cancel is on its way: its slot frees when the engine ends the stream
      }
    }
    assert(again !== undefined, "a new stream after break (the cancelled one freed its slot)");
    eq(again[0].n, N, "the new stream's answer");
    // Errors come from the first next(), typed.
    await rejects(db.iterate("SELECT * FROM nowhere").next(), pkg.SqlError, (e) => eq(e.code, "SQLITE", "code"));
    await rejects(db.iterate("SELECT ?", [undefined]).next(), pkg.InvalidValueError, (e) => eq(e.code, "UNDEFINED_VALUE", "code"));
    const ac = new AbortController();
    const aborted = db.iterate("SELECT id FROM big", [], { signal: ac.signal });
    await aborted.next();
    ac.abort();
    await rejects(aborted.next(), pkg.AbortedError);
  });

  test("v5 calls against an engine below v5 -> RemoteUnavailable, nothing sent", async () => {
    const envoy = await Envoy.connect({ ...opts(), endpoint: ctx.v3.wsUrl });
    cleanup.push(envoy);
    const { db } = await envoy.getOrCreateActor("old", `v3-v5-${run}`);
    const gate = (feature) => (e) => eq(e.feature, feature, "feature");
    await rejects(db.batch(["SELECT 1"]), pkg.RemoteUnavailableError, gate("AtomicBatch"));
    let ran = false;
    await rejects(db.transaction(async () => (ran = true)), pkg.RemoteUnavailableError, gate("Transactions"));
    eq(ran, false, "the transaction's function never ran");
    await rejects(db.iterate("SELECT 1").next(), pkg.RemoteUnavailableError, gate("ResultStreams"));
  });

  let passed = 0;
  let failed = 0;
  let skipped = 0;
  const failures = [];
  for (const { name, fn } of tests) {
    const t0 = Date.now();
    try {
      await fn();
      passed++;
      log(`ok   ${name} (${Date.now() - t0} ms)`);
    } catch (e) {
      if (e instanceof Skip) {
        skipped++;
        log(`skip ${name}: ${e.message}`);
        continue;
      }
      failed++;
      failures.push({ name, error: e });
      log(`FAIL ${name} (${Date.now() - t0} ms): ${e?.constructor?.name} ${e?.code ?? ""} ${e?.message}`);
      if (!(e instanceof AssertionError) && e?.stack) log(e.stack);
    }
  }
  for (const e of cleanup) {
    try {
      await e.close();
    } catch {
      // already closed
    }
  }
  return { passed, failed, skipped, failures };
}
