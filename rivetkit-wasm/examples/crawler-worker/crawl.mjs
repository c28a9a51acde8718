// The crawl, with three levels of concurrency (no threads, no tasks: promises on one event loop):
//
//   Level 1 — startup I/O joined: the board list (HTTP) ∥ connect + get-or-create actor + schema (remote SQL).
//   Level 2 — every board page fetch runs at once; per board, its job pages are fetched at once.
//   Level 3 — per board, the company and all its jobs are written in ONE atomic batch (db.batch,
//             write mode), while other boards are still being fetched or written.
//
// A tracker counts in-flight fetches and writes, so the result proves the overlap happened.

import { parseBoard, parseJob } from "./parse.mjs";
import { migrate, storeBoard } from "./store.mjs";

class Tracker {
  fetches = 0;
  writes = 0;
  maxFetches = 0;
  maxWrites = 0;
  /** Writes started while at least one fetch was in flight. */
  writesDuringFetches = 0;
  async fetch(url) {
    this.fetches++;
    this.maxFetches = Math.max(this.maxFetches, this.fetches);
    try {
      const r = await fetch(url);
      if (!r.ok) throw new Error(`GET ${url}: HTTP ${r.status}`);
      return await r.text();
    } finally {
      this.fetches--;
    }
  }
  async write(p) {
    this.writes++;
    this.maxWrites = Math.max(this.maxWrites, this.writes);
    if (this.fetches > 0) this.writesDuringFetches++;
    try {
      return await p();
    } finally {
      this.writes--;
    }
  }
}

/**
 * Crawls `pagesUrl` and stores companies and jobs in the actor (actorName, actorKey).
 * `Envoy` is the package's class; `connect` are its Envoy.connect options.
 */
export async function crawl({ Envoy, connect, actorName, actorKey, pagesUrl, now = Date.now() }) {
  const t = new Tracker();
  // Level 1: independent startup I/O, joined.
  const [slugs, { envoy, actor }] = await Promise.all([
    t.fetch(`${pagesUrl}/boards.json`).then((s) => JSON.parse(s)),
    (async () => {
      const envoy = await Envoy.connect(connect);
      const actor = await envoy.getOrCreateActor(actorName, actorKey);
      await migrate(actor.db);
      return { envoy, actor };
    })(),
  ]);
  const db = actor.db;
  try {
    // Level 2: all boards at once; each board's job pages at once.
    const perBoard = await Promise.all(
      slugs.map(async (slug) => {
        const board = parseBoard(slug, await t.fetch(`${pagesUrl}/boards/${slug}`));
        const jobs = await Promise.all(
          board.jobLinks.map(async (href) => parseJob(slug, href, await t.fetch(`${pagesUrl}${href}`))),
        );
        // Level 3: the company with its jobs, one atomic batch.
        return t.write(() => storeBoard(db, board.company, jobs, now));
      }),
    );
    return {
      actor: { id: actor.id, name: actor.name, key: actor.key },
      boards: slugs.length,
      companies: perBoard.reduce((n, b) => n + b.companies, 0),
      jobs: perBoard.reduce((n, b) => n + b.jobs, 0),
      /** One batch per board; statements over all batches (1 company + its jobs each). */
      batches: perBoard.length,
      batchStatements: perBoard.map((b) => b.statements),
      concurrency: {
        maxFetchesInFlight: t.maxFetches,
        maxWritesInFlight: t.maxWrites,
        writesStartedDuringFetches: t.writesDuringFetches,
      },
    };
  } finally {
    await envoy.close();
  }
}
