// A small typed usage of the package, checked with `tsc --noEmit --strict` by tests/run.mjs in a
// temp project that installed the `npm pack` tarball (so it imports the package by name, through
// its exports map): the public API must type-check as documented, and misuse must not.
import wasmModule from "rivetkit-wasm/rivetkit_wasm_bg.wasm";
import {
  ActorUnavailableError,
  ConstraintError,
  Envoy,
  EnvoyError,
  FenceMismatchError,
  init,
  initSync,
  type Actor,
  type ConstraintKind,
  type ExecuteResult,
  type KvEntry,
  type QueryResult,
  type SqlValue,
  type StopReason,
  type BatchResult,
  type CommitResult,
  type RowStream,
  type SqlCost,
  type Transaction,
  TransactionError,
} from "rivetkit-wasm";

// The .wasm export is a compiled module, as Workers import it.
const compiled: WebAssembly.Module = wasmModule;
initSync({ module: compiled });
await init(compiled);
// @ts-expect-error the .wasm import is a Module, not bytes or a string
const notBytes: string = wasmModule;

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
    // v6: an actor moved to another engine node.
    const moved: boolean = info.reason === "MOVED";
    void id, gen, moved;
  });
  const reason: StopReason = "MOVED";
  // @ts-expect-error not a stop reason
  const notAReason: StopReason = "TELEPORTED";
  void reason, notAReason;
  const actor = await envoy.getOrCreateActor("crawler", "default");
  const r: QueryResult = await actor.db.exec("CREATE TABLE IF NOT EXISTS t(x)");
  const e: ExecuteResult = await actor.db.execute("SELECT ?, ?, ?, ?, ?, ?", [1, 2n, "s", null, true, new Uint8Array(1)]);
  const first: SqlValue = e.rows[0][0];
  const route: "READ" | "WRITE" | "WRITE_FALLBACK" = e.route;
  const jobs: Job[] = await actor.db.query<Job>("SELECT id, title, remote FROM jobs", [], { integers: "auto" });
  // With a row validator, T is inferred from what it returns.
  const checked = await actor.db.query("SELECT id FROM jobs", [], {
    row: (r) => {
      if (typeof r.id !== "string") throw new TypeError("id");
      return { id: r.id };
    },
  });
  const firstId: string | undefined = checked[0]?.id;
  const ac = new AbortController();
  await actor.db.execute("SELECT 1", [], { timeoutMs: 500, signal: ac.signal });
  await actor.kv.get("k", { timeoutMs: 100 });
  const again: Actor = await envoy.getOrCreateActor("crawler", "default", { reacquire: false });
  await again.reacquire();
  const stopped: boolean = again.stopped;
  {
    await using scoped = await Envoy.connect({ endpoint: "ws://x", namespace: "ns", poolName: "p", reacquire: true });
    await using handle = await scoped.getOrCreateActor("a", "b");
    void handle;
  }
  const { changes, lastInsertRowId } = await actor.db.run("DELETE FROM t");
  const n: number = changes;
  const rowid: number | bigint | null = lastInsertRowId;
  await actor.kv.put("k", "v");
  const v: Uint8Array | null = await actor.kv.get(new Uint8Array([1]));
  const list: KvEntry[] = await actor.kv.list({ prefix: "k", reverse: true, limit: 10 });
  try {
    await actor.db.executeWrite("INSERT INTO t VALUES (?)", [1]);
  } catch (err) {
    if (err instanceof ConstraintError) {
      const kind: ConstraintKind | undefined = err.constraint;
      const name: string | undefined = err.sqliteName;
      void kind, name;
    } else if (err instanceof ActorUnavailableError) {
      // v6: false = nothing ran; undefined = a relayed request that may have run.
      const committed: boolean | undefined = err.committed;
      void committed;
    } else if (err instanceof FenceMismatchError) {
      const g: number | bigint | undefined = err.currentGeneration;
      void g;
    } else if (err instanceof EnvoyError) {
      const code: string = err.code;
      const group: "value" | "sql" | "kv" | "actor" | "limit" | "connection" | "protocol" | "usage" = err.group;
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
  // @ts-expect-error timeoutMs is a number
  await actor.db.execute("SELECT 1", [], { timeoutMs: "1s" });
  await envoy.close();
  void firstId, stopped, notBytes;
  void version, maxParams, r, first, route, jobs, n, rowid, v, list;
}

// Protocol v5: batch, transactions, result streams, cost.
export async function usageV5(actor: Actor): Promise<void> {
  const out: BatchResult = await actor.db.batch(
    [{ sql: "INSERT INTO t(x) VALUES (?)", params: [1] }, "SELECT count(*) AS n FROM t"],
    { mode: "write", timeoutMs: 1000 },
  );
  const cost: SqlCost | null = out.cost;
  const each: SqlCost | null = out[0].cost;
  const replayed: boolean = out.replayed || out[1].replayed;
  const total: number = await actor.db.transaction(
    async (tx: Transaction) => {
      await tx.execute("UPDATE t SET x = x + 1");
      const rows = await tx.query<{ n: number }>("SELECT count(*) AS n FROM t");
      return rows[0].n;
    },
    { mode: "deferred", leaseMs: 5000 },
  );
  const tx = await actor.db.begin({ mode: "read" });
  const committed: CommitResult = await tx.commit();
  const rowsRead: number | bigint | undefined = committed.cost?.rowsRead;
  const stream: RowStream<{ id: number }> = actor.db.iterate("SELECT id FROM t", [], {
    creditBytes: 65536,
    row: (r) => ({ id: Number(r.id) }),
  });
  for await (const row of stream) {
    const id: number = row.id;
    if (id > 10) break;
  }
  const streamCost: SqlCost | null = stream.cost;
  try {
    await actor.db.batch(["SELECT 1"]);
  } catch (err) {
    if (err instanceof TransactionError) {
      const reason: string | undefined = err.reason;
      void reason;
    } else if (err instanceof EnvoyError) {
      const index: number | undefined = err.statementIndex;
      void index;
    }
  }
  // @ts-expect-error mode is "read" | "write" | "deferred"
  await actor.db.batch(["SELECT 1"], { mode: "exclusive" });
  // @ts-expect-error a statement needs sql
  await actor.db.batch([{ params: [1] }]);
  void cost, each, replayed, total, rowsRead, streamCost;
}
