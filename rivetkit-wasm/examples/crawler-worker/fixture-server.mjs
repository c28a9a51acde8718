// A small local HTTP server with job-board pages for the crawler to fetch (Node).
//   GET /boards.json                 -> ["slug", ...]
//   GET /boards/<slug>               -> HTML: company name, website, industries, links to jobs
//   GET /boards/<slug>/jobs/<id>     -> HTML: title, location, remote
// Every answer waits DELAY_MS, like a real site, so concurrent fetches visibly overlap.
// Standalone: `node fixture-server.mjs [--port 8788] [--delay 25]`.

import http from "node:http";
import { fileURLToPath } from "node:url";
import { boards } from "./fixture-data.mjs";

const esc = (s) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;").replace(/'/g, "&#39;");

export function startFixtureServer({ port = 0, delayMs = 25 } = {}) {
  const data = boards();
  const bySlug = new Map(data.map((b) => [b.slug, b]));
  const hits = { total: 0 };
  const server = http.createServer((req, res) => {
    hits.total++;
    const send = (status, type, body) =>
      setTimeout(() => {
        res.writeHead(status, { "content-type": type });
        res.end(body);
      }, delayMs);
    const url = new URL(req.url, "http://fixture");
    let m;
    if (url.pathname === "/boards.json") return send(200, "application/json", JSON.stringify(data.map((b) => b.slug)));
    if ((m = /^\/boards\/([a-z0-9-]+)$/.exec(url.pathname)) && bySlug.has(m[1])) {
      const b = bySlug.get(m[1]);
      return send(200, "text/html; charset=utf-8", `<!doctype html><html><body>
<h1 class="company">${esc(b.name)}</h1>
<a class="website" href="${esc(b.website)}">website</a>
<ul class="industries">${b.industries.map((x) => `<li>${esc(x)}</li>`).join("")}</ul>
<ul class="jobs">${b.jobs.map((j) => `<li><a class="job" href="/boards/${b.slug}/jobs/${j.id}">${esc(j.title)}</a></li>`).join("\n")}</ul>
</body></html>`);
    }
    if ((m = /^\/boards\/([a-z0-9-]+)\/jobs\/([a-z0-9-]+)$/.exec(url.pathname)) && bySlug.has(m[1])) {
      const j = bySlug.get(m[1]).jobs.find((x) => x.id === m[2]);
      if (j) {
        return send(200, "text/html; charset=utf-8", `<!doctype html><html><body>
<h1 class="title">${esc(j.title)}</h1><span class="location">${esc(j.location)}</span>
<span class="remote">${j.remote ? "yes" : "no"}</span></body></html>`);
      }
    }
    send(404, "text/plain", "not found");
  });
  return new Promise((resolve) =>
    server.listen(port, "127.0.0.1", () =>
      resolve({
        url: `http://127.0.0.1:${server.address().port}`,
        data,
        hits,
        stop: () => new Promise((r) => server.close(r)),
      }),
    ),
  );
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const arg = (f, d) => (process.argv.includes(f) ? Number(process.argv[process.argv.indexOf(f) + 1]) : d);
  const s = await startFixtureServer({ port: arg("--port", 8788), delayMs: arg("--delay", 25) });
  console.log(`fixture server on ${s.url}`);
}
