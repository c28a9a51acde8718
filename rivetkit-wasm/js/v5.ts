// Protocol v5 calls of the public API: atomic batches, interactive transactions, result streams,
// and the cost every SQL result carries. `Db` (envoy.ts) exposes them as `db.batch`,
// `db.transaction` / `db.begin` and `db.iterate`; this file holds their classes and types.
// Against an engine below v5 each of them fails with RemoteUnavailableError (nothing is sent).

import type { RawRowStream, RawTransaction } from "./rivetkit_wasm.js";
import type { CallOptions, ExecuteResult, IntegerMode, Row, RunResult, SqlParam } from "./envoy.js";
import { AbortedError, wrap } from "./errors.js";

/** What a request cost the engine (protocol v5; null below v5). */
export interface SqlCost {
  /** Rows SQLite visited in tables and indexes (scans, sorts and rows returned). */
  rowsRead: number | bigint;
  /** Rows inserted, updated or deleted (including by triggers and cascades). */
  rowsWritten: number | bigint;
  /** Engine time from admission to the answer, in microseconds. */
  durationUs: number | bigint;
}

/**
 * How a batch or transaction takes its locks: "read" (one snapshot on a reader; a statement
 * that writes fails with SQLite's READONLY), "write" (takes the actor's writer at the start,
 * BEGIN IMMEDIATE) or "deferred" (a read until its first write takes the writer).
 */
export type TransactionMode = "read" | "write" | "deferred";

/** One statement of a batch: `{ sql, params? }`, or a SQL string without parameters. */
export type BatchStatement = string | { sql: string; params?: SqlParam[] };

export interface BatchOptions extends CallOptions {
  /** Default "deferred". */
  mode?: TransactionMode;
}

/**
 * One result per statement, in order (each with `cost: null`: the engine reports the batch's
 * cost as a whole, on the array), plus the batch's `cost` and `replayed`.
 */
export type BatchResult = ExecuteResult[] & {
  cost: SqlCost | null;
  /** The batch's answer was lost to a disconnect, the client re-sent it, and the engine answered the recorded outcome: it ran once. */
  replayed: boolean;
  /** With `replayed`: the recorded result was too large to keep; every statement's `rows` is empty. */
  rowsOmitted?: true;
};

export interface TransactionOptions extends CallOptions {
  /** Default "write". */
  mode?: TransactionMode;
  /**
   * Idle lease asked for (ms): the engine rolls the transaction back when no statement names it
   * for this long (later use: TransactionError TRANSACTION_EXPIRED). The engine clamps it into
   * its bounds; omitted, the client's default (10 s).
   */
  leaseMs?: number;
}

/** What `tx.commit()` returns. */
export interface CommitResult {
  /** Rows changed by the transaction's statements. */
  changes: number | bigint;
  cost: SqlCost | null;
  /** The commit's answer was lost, the client re-sent it, and the engine answered that it had committed. */
  replayed: boolean;
}

export interface IterateOptions<T> {
  integers?: IntegerMode;
  /** Converts or checks each row (an object keyed by column); without it rows are only cast to `T`. */
  row?: (row: Row) => T;
  /**
   * The stream's credit window in row bytes (default 1 MiB): at most this much of the result is
   * in flight or buffered in the client at once.
   */
  creditBytes?: number;
  /** Most rows handed from the wasm core to JS at once (default 256). */
  chunkRows?: number;
  /** Aborting cancels the stream; the pending and later `next()` reject with AbortedError. */
  signal?: AbortSignal;
}

/** Runs one call of a transaction: option checks, deadline/abort, errors as EnvoyError. */
export type RunCall = <T>(work: () => Promise<T>, options: CallOptions | undefined) => Promise<T>;

function objects<T>(r: { columns: string[]; rows: unknown[][] }, check?: (row: Row) => T): T[] {
  return r.rows.map((values) => {
    const o: Row = {};
    r.columns.forEach((c, i) => (o[c] = values[i] as Row[string]));
    return check ? check(o) : (o as T);
  });
}

/**
 * An open interactive transaction (protocol v5): statements run one by one inside it until
 * `commit()` or `rollback()`. Made by `db.begin()` or handed to the function of
 * `db.transaction()`. A transaction the engine ended (lease ran out, actor stopping, connection
 * lost) fails every later call with a TransactionError (`TRANSACTION_EXPIRED`,
 * `TRANSACTION_ABORTED` with `reason`); its `rollback()` still succeeds.
 */
export class Transaction {
  readonly #raw: RawTransaction;
  readonly #run: RunCall;
  #finished = false;
  /** @internal Made by Db; not for users. */
  constructor(raw: RawTransaction, run: RunCall) {
    this.#raw = raw;
    this.#run = run;
  }
  /** The idle lease the engine granted (ms). */
  get leaseMs(): number {
    return this.#raw.leaseMs;
  }
  /** Whether commit() or rollback() was called. */
  get finished(): boolean {
    return this.#finished;
  }
  /** One statement inside the transaction (renews its lease). */
  execute(sql: string, params?: SqlParam[], options?: CallOptions): Promise<ExecuteResult> {
    return this.#run(() => this.#raw.execute(sql, params, options), options);
  }
  /** Rows as objects keyed by column name (see `db.query`). */
  async query<T = Row>(sql: string, params?: SqlParam[], options?: CallOptions & { row?: (row: Row) => T }): Promise<T[]> {
    return objects(await this.execute(sql, params, options), options?.row);
  }
  /** A statement run for its effect: what it changed. */
  async run(sql: string, params?: SqlParam[], options?: CallOptions): Promise<RunResult> {
    const r = await this.execute(sql, params, options);
    return { changes: r.changes, lastInsertRowId: r.lastInsertRowId };
  }
  /** Commits (exactly once, also across a lost answer: see `replayed`). A failed commit applied nothing. */
  commit(options?: CallOptions): Promise<CommitResult> {
    this.#finished = true;
    return this.#run(() => this.#raw.commit(), options);
  }
  /** Rolls back (idempotent; succeeds for a transaction the engine already ended). */
  rollback(options?: CallOptions): Promise<void> {
    this.#finished = true;
    return this.#run(() => this.#raw.rollback(), options);
  }
  /** `await using tx = await db.begin()`: rolls back unless committed or rolled back. */
  async [Symbol.asyncDispose](): Promise<void> {
    if (!this.#finished) await this.rollback().catch(() => {});
  }
}

/**
 * `db.transaction(fn)`: begins, runs `fn(tx)`, commits when it resolves (returning its value)
 * and rolls back when it throws (rethrowing the original error; a failed rollback is left to
 * the lease). If `fn` commits or rolls back itself, its value is returned as is.
 */
export async function runTransaction<T>(begin: Promise<Transaction>, fn: (tx: Transaction) => Promise<T>): Promise<T> {
  const tx = await begin;
  let value: T;
  try {
    value = await fn(tx);
  } catch (e) {
    if (!tx.finished) await tx.rollback().catch(() => {});
    throw e;
  }
  if (!tx.finished) await tx.commit();
  return value;
}

/**
 * The rows of one read-only statement as they come (protocol v5): an async iterator with
 * bounded memory. Leaving a `for await` loop early (break, return, throw) calls `return()`,
 * which cancels the stream in the engine. `columns` is known after the first row, `cost` once
 * the stream ended.
 */
export class RowStream<T = Row> implements AsyncIterableIterator<T> {
  readonly #open: Promise<RawRowStream>;
  readonly #options: IterateOptions<T> | undefined;
  #raw: RawRowStream | undefined;
  #buffer: T[] = [];
  #columns: string[] | undefined;
  #cost: SqlCost | null = null;
  #done = false;
  /** The `next()` in progress: calls are served one after another. */
  #tail: Promise<unknown> = Promise.resolve();
  /** @internal Made by Db; not for users. */
  constructor(open: Promise<RawRowStream>, options: IterateOptions<T> | undefined) {
    this.#open = open;
    this.#options = options;
    open.catch(() => {}); // reported by the first next()
    options?.signal?.addEventListener("abort", () => this.#close(), { once: true });
  }
  /** Column names (after the first row). */
  get columns(): string[] | undefined {
    return this.#columns;
  }
  /** What the whole stream cost the engine, once it ended (null before, and below v5). */
  get cost(): SqlCost | null {
    return this.#cost;
  }
  [Symbol.asyncIterator](): this {
    return this;
  }
  next(): Promise<IteratorResult<T, undefined>> {
    const p = this.#tail.then(() => this.#next());
    this.#tail = p.catch(() => {});
    return p;
  }
  async #next(): Promise<IteratorResult<T, undefined>> {
    const signal = this.#options?.signal;
    if (signal?.aborted) {
      this.#close();
      throw new AbortedError("ABORTED", "connection", "the stream's signal was aborted; the stream was cancelled", { cause: signal.reason });
    }
    if (this.#buffer.length > 0) return { value: this.#buffer.shift()!, done: false };
    if (this.#done) return { value: undefined, done: true };
    try {
      if (this.#raw === undefined) {
        const opened = await this.#open;
        if (this.#done) return { value: undefined, done: true }; // closed while opening (#close frees it)
        this.#raw = opened;
      }
      const raw = this.#raw;
      const chunk = (await wrap(() => raw.next(this.#options?.chunkRows ?? 256))) as { columns: string[]; rows: unknown[][] } | null;
      if (signal?.aborted) throw new AbortedError("ABORTED", "connection", "the stream's signal was aborted; the stream was cancelled", { cause: signal.reason });
      if (this.#done) return { value: undefined, done: true }; // return() came while this chunk was on its way
      if (chunk === null) {
        this.#cost = raw.cost as SqlCost | null;
        this.#finish();
        return { value: undefined, done: true };
      }
      this.#columns = chunk.columns;
      this.#buffer = objects(chunk, this.#options?.row);
      return { value: this.#buffer.shift()!, done: false };
    } catch (e) {
      this.#close();
      throw e;
    }
  }
  /** Stops early: cancels the stream in the engine (what `break` in `for await` calls). */
  async return(): Promise<IteratorResult<T, undefined>> {
    this.#close();
    return { value: undefined, done: true };
  }
  /** Every row left, collected (for small results; defeats the point of a stream). */
  async toArray(): Promise<T[]> {
    const out: T[] = [];
    for await (const row of this) out.push(row);
    return out;
  }
  #finish(): void {
    this.#done = true;
    this.#buffer = [];
    this.#raw?.close();
    this.#raw?.free();
    this.#raw = undefined;
  }
  #close(): void {
    if (this.#done) return;
    this.#done = true;
    this.#buffer = [];
    if (this.#raw !== undefined) {
      this.#finish();
    } else {
      // Not opened yet (or opening): close it as soon as it is.
      this.#open.then((raw) => {
        raw.close();
        raw.free();
      }, () => {});
    }
  }
}
