// A Worker served by `workerd serve` (tests/run.mjs drives it over HTTP) for what needs several
// requests or the package's default entry inside workerd. Bundled with esbuild WITHOUT the
// workerd condition, so it gets the `browser`/`default` entry and must call init itself:
//   GET /init     init() without an argument fails with a typed error that says what to do;
//                 init(module) with the imported .wasm works, and a query runs.
//   GET /open     connects, caches the Envoy and an Actor in module globals, runs a query,
//                 and returns without closing (what the user did).
//   GET /reuse    uses the cached Envoy/Actor from this second request: must fail at once with
//                 WrongContextError (not hang for 60 s).
//   GET /scoped   `await using` an Envoy and an Actor: both are disposed at the end of the block
//                 (later calls: DISPOSED / CLOSED).
//   GET /do       forwarded to one Durable Object (`Holder`), which keeps one Envoy in a field
//                 across requests: the documented pattern, so no WrongContextError.
// Each answers JSON { ok, ...facts }; the driver asserts on them.
import wasmModule from "rivetkit-wasm/rivetkit_wasm_bg.wasm";
import * as pkg from "rivetkit-wasm";

let cached = null;

/** A Durable Object keeping one Envoy for every request it gets (connected on first use). */
export class Holder {
  constructor(_state, env) {
    /** Bindings (ENGINE_URL). */
    this.env = env;
    /** The object's one Envoy, shared by its requests. */
    this.envoy = null;
    /** How many times this object connected (the test expects once). */
    this.connects = 0;
    /** Requests served. */
    this.served = 0;
  }

  async fetch() {
    await pkg.init(wasmModule);
    if (this.envoy === null) {
      this.envoy = await pkg.Envoy.connect({ endpoint: this.env.ENGINE_URL, namespace: "lifetimes", poolName: "objects" });
      this.connects++;
    }
    const actor = await this.envoy.getOrCreateActor("held", "one");
    this.served++;
    const answer = (await actor.db.execute("SELECT ?", [this.served])).rows[0][0];
    return Response.json({ ok: true, answer, connects: this.connects, served: this.served });
  }
}

const describe = (e) => ({ name: e?.constructor?.name, code: e?.code, group: e?.group, message: String(e?.message) });

async function capture(p) {
  try {
    await p;
    return { resolved: true };
  } catch (e) {
    return describe(e);
  }
}

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const opts = { endpoint: env.ENGINE_URL, namespace: "lifetimes", poolName: "workers" };
    const out = {};
    if (url.pathname === "/init") {
      out.withoutModule = await capture(pkg.init());
      out.beforeInit = await capture(pkg.Envoy.connect(opts));
      await pkg.init(wasmModule);
      const envoy = await pkg.Envoy.connect(opts);
      const actor = await envoy.getOrCreateActor("init", "k");
      out.answer = (await actor.db.execute("SELECT 41 + 1")).rows[0][0];
      await envoy.close();
    } else if (url.pathname === "/open") {
      await pkg.init(wasmModule);
      const envoy = await pkg.Envoy.connect(opts);
      const actor = await envoy.getOrCreateActor("cached", url.searchParams.get("key"));
      out.answer = (await actor.db.execute("SELECT 1")).rows[0][0];
      cached = { envoy, actor };
    } else if (url.pathname === "/reuse") {
      out.query = await capture(cached.actor.db.execute("SELECT 1"));
      out.kv = await capture(cached.actor.kv.get("k"));
      out.getOrCreate = await capture(cached.envoy.getOrCreateActor("cached", "other"));
      out.close = await capture(cached.envoy.close());
    } else if (url.pathname === "/scoped") {
      await pkg.init(wasmModule);
      let envoyRef, actorRef;
      {
        await using envoy = await pkg.Envoy.connect(opts);
        envoyRef = envoy;
        {
          await using actor = await envoy.getOrCreateActor("scoped", url.searchParams.get("key"));
          actorRef = actor;
          out.answer = (await actor.db.execute("SELECT 3")).rows[0][0];
        }
        out.actorAfter = await capture(actorRef.db.execute("SELECT 1"));
      }
      out.envoyAfter = await capture(envoyRef.getOrCreateActor("scoped", "again").then((a) => a.db.execute("SELECT 1")));
    } else if (url.pathname === "/do") {
      return env.HOLDER.get(env.HOLDER.idFromName("one")).fetch(request);
    } else {
      return new Response("not found", { status: 404 });
    }
    return Response.json({ ok: true, ...out });
  },
};
