// A Worker (run by workerd) that crawls job boards into its actor's SQLite database through
// rivetkit-wasm. `GET /crawl` runs a crawl and answers a JSON summary; the cron trigger
// (`scheduled`) runs the same crawl.
//
// Bindings (text): ENGINE_URL (ws://host:port of envoy-engine), PAGES_URL (the site to crawl),
// ACTOR_NAME, ACTOR_KEY, NAMESPACE; optional ENGINE_TOKEN.
// Bundle it as for any Worker (wrangler does this itself): esbuild with the `workerd` condition,
// which picks the package entry that loads its .wasm on import (see config.capnp).

import { Envoy, EnvoyError } from "rivetkit-wasm";
import { crawl } from "./crawl.mjs";

function run(env) {
  return crawl({
    Envoy,
    connect: {
      endpoint: env.ENGINE_URL,
      namespace: env.NAMESPACE ?? "crawler",
      poolName: "workers",
      token: env.ENGINE_TOKEN || undefined,
    },
    actorName: env.ACTOR_NAME ?? "crawler",
    actorKey: env.ACTOR_KEY ?? "default",
    pagesUrl: env.PAGES_URL,
  });
}

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    if (url.pathname !== "/crawl") return new Response("GET /crawl runs a crawl\n", { status: 404 });
    try {
      return Response.json(await run(env));
    } catch (e) {
      const body = e instanceof EnvoyError ? { error: e.code, group: e.group, message: e.message } : { error: String(e?.stack ?? e) };
      return Response.json(body, { status: 500 });
    }
  },
  async scheduled(_event, env, ctx) {
    ctx.waitUntil(run(env).then((r) => console.log(`crawled ${r.companies} companies, ${r.jobs} jobs`)));
  },
};
