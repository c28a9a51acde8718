// A small typed usage of the package, checked with `tsc --noEmit` (scripts/check-types.sh) against
// the .d.ts the build generated: the public API must type-check as documented, and misuse must not.
import {
  Envoy,
  EnvoyError,
  FenceMismatchError,
  type Actor,
  type ExecuteResult,
  type KvEntry,
  type QueryResult,
  type SqlValue,
} from "../../pkg/web/index.js";

interface Job {
  id: string;
  title: string;
  remote: number;
}

export async function usage(): Promise<void> {
  const envoy: Envoy = await Envoy.connect({ endpoint: "ws://127.0.0.1:6420", namespace: "ns", poolName: "default", token: "t" });
  const version: number = envoy.protocolVersion;
  const maxParams: number | undefined = envoy.session?.sqlLimits?.maxParams;
  envoy.onActorStart(async (actor: Actor) => {
    await actor.db.exec("SELECT 1");
  });
  envoy.onActorStop((info) => {
    const id: string = info.actorId;
    const gen: number | bigint = info.generation;
    void id, gen;
  });
  const actor = await envoy.getOrCreateActor("crawler", "default");
  const r: QueryResult = await actor.db.exec("CREATE TABLE IF NOT EXISTS t(x)");
  const e: ExecuteResult = await actor.db.execute("SELECT ?, ?, ?, ?, ?, ?", [1, 2n, "s", null, true, new Uint8Array(1)]);
  const first: SqlValue = e.rows[0][0];
  const route: "READ" | "WRITE" | "WRITE_FALLBACK" = e.route;
  const jobs: Job[] = await actor.db.query<Job>("SELECT id, title, remote FROM jobs", [], { integers: "auto" });
  const { changes, lastInsertRowId } = await actor.db.run("DELETE FROM t");
  const n: number = changes;
  const rowid: number | bigint | null = lastInsertRowId;
  await actor.kv.put("k", "v");
  const v: Uint8Array | null = await actor.kv.get(new Uint8Array([1]));
  const list: KvEntry[] = await actor.kv.list({ prefix: "k", reverse: true, limit: 10 });
  try {
    await actor.db.executeWrite("INSERT INTO t VALUES (?)", [1]);
  } catch (err) {
    if (err instanceof FenceMismatchError) {
      const g: number | bigint | undefined = err.currentGeneration;
      void g;
    } else if (err instanceof EnvoyError) {
      const code: string = err.code;
      const group: "value" | "sql" | "kv" | "actor" | "limit" | "connection" | "protocol" = err.group;
      void code, group;
    }
  }
  // @ts-expect-error undefined is not a SQL parameter
  await actor.db.execute("SELECT ?", [undefined]);
  // @ts-expect-error objects are not SQL parameters
  await actor.db.execute("SELECT ?", [{ a: 1 }]);
  // @ts-expect-error integers takes "auto" | "bigint"
  await actor.db.execute("SELECT 1", [], { integers: "number" });
  // @ts-expect-error poolName is required
  await Envoy.connect({ endpoint: "ws://x", namespace: "ns" });
  await envoy.close();
  void version, maxParams, r, first, route, jobs, n, rowid, v, list;
}
