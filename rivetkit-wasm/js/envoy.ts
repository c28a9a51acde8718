// The public JS API of rivetkit-wasm: a typed layer over the wasm-bindgen classes
// (`RawEnvoy`, `RawActor`) that the Rust crate exports. The Rust side does the protocol work and
// every value conversion; this file adds the JS shapes (objects keyed by column, handlers taking
// `Actor`), and rethrows failures as `EnvoyError` instances.

import { RawActor, RawEnvoy } from "./rivetkit_wasm.js";
import {
  AbortedError,
  ActorStoppedError,
  EnvoyError,
  InvalidValueError,
  TimeoutError,
  WrongContextError,
  toEnvoyError,
  wrap,
} from "./errors.js";
import { assertReady } from "./state.js";
import { RowStream, Transaction, runTransaction } from "./v5.js";
import type { BatchOptions, BatchResult, BatchStatement, IterateOptions, SqlCost, TransactionOptions } from "./v5.js";

export * from "./errors.js";
export * from "./v5.js";

/** A value SQLite stores. Integers outside ±(2^53−1) come back as bigint (or always, with `integers: "bigint"`). */
export type SqlValue = null | number | bigint | string | Uint8Array;
/** A value accepted as a parameter. `undefined` and other types are refused with an InvalidValueError. */
export type SqlParam = null | number | bigint | string | boolean | Uint8Array | ArrayBuffer | ArrayBufferView;
/** KV keys and values: strings are stored as their UTF-8 bytes. */
export type Bytes = string | Uint8Array | ArrayBuffer;

/** How INTEGER results come back: "auto" (number when safe, else bigint) or "bigint" (always). */
export type IntegerMode = "auto" | "bigint";

export interface ConnectOptions {
  /** Engine URL, e.g. "ws://127.0.0.1:6420" (http(s):// is accepted and turned into ws(s)://). */
  endpoint: string;
  namespace: string;
  /** Sent as the `envoy.token.<TOKEN>` subprotocol; omit on an engine without auth. */
  token?: string;
  poolName: string;
  /** Stable identity across reconnects; a random one is made when omitted. */
  envoyKey?: string;
  /** Default for every call: how INTEGER results come back. */
  integers?: IntegerMode;
  /**
   * How long `connect` waits for the engine's first answer (default 15 s). In browsers and
   * Workers a refused upgrade (wrong token: HTTP 401) is indistinguishable from a failed
   * connect, so it is retried until this deadline and then fails with DISCONNECTED / GAVE_UP.
   */
  connectTimeoutMs?: number;
  /** Per-request deadline in milliseconds: 0 means none; omitted, the client default applies. */
  requestTimeoutMs?: number;
  /**
   * Whether `Actor` handles re-acquire their actor by themselves (default true): a call on a
   * handle whose generation the engine stopped (engine restart, move to another envoy, operator
   * stop, envoy lost), or that the engine answers ACTOR_NOT_PLACED / FENCE_MISMATCH, first runs
   * `getOrCreateActor(name, key)` again (same actor id, new generation) and then runs — once —
   * on the new generation. Those answers mean the call did not run, so this is exact for writes
   * too. With false, such calls fail with ActorStoppedError / FenceMismatchError /
   * ACTOR_NOT_PLACED and `actor.reacquire()` is the user's to call. Note that with two envoys
   * using the same actor, each re-acquire moves the actor to the calling envoy.
   */
  reacquire?: boolean;
}

export interface CallOptions {
  integers?: IntegerMode;
  /**
   * Deadline for this call in milliseconds, on top of the envoy's `requestTimeoutMs`: past it the
   * call rejects with TimeoutError (`sent` undefined: the package cannot know whether it ran).
   * 0 or omitted: none.
   */
  timeoutMs?: number;
  /** Aborting rejects the call with AbortedError at once (an already aborted signal: nothing is sent). */
  signal?: AbortSignal;
}

/** Options of `query`: `row` checks or converts each row (without it, `T` is not checked at run time). */
export interface QueryOptions<T> extends CallOptions {
  /** Called with each row (an object keyed by column); returns the row as `T` or throws. */
  row?: (row: Row) => T;
}

/** A row as `query` builds it: values keyed by column name. */
export type Row = Record<string, SqlValue>;

/** Options of `getOrCreateActor`. */
export interface ActorOptions {
  /** Overrides the envoy's `reacquire` for this handle. */
  reacquire?: boolean;
}

/** Which connection ran a statement. */
export type SqlRoute = "READ" | "WRITE" | "WRITE_FALLBACK";

export interface QueryResult {
  columns: string[];
  rows: SqlValue[][];
  /** What the request cost the engine (protocol v5); null below v5 and for one statement of a batch. */
  cost: SqlCost | null;
}

export interface ExecuteResult extends QueryResult {
  /** Rows changed by this statement alone. */
  changes: number;
  /** Rowid of the last row this statement inserted, or null if it inserted none. */
  lastInsertRowId: number | bigint | null;
  route: SqlRoute;
  /**
   * v5: the answer was lost to a disconnect, the client re-sent the request with its request key,
   * and the engine answered the recorded outcome of the first send: it ran once.
   */
  replayed: boolean;
  /** With `replayed`: the recorded result was too large to keep, so `rows` is empty. */
  rowsOmitted?: true;
}

export interface RunResult {
  changes: number;
  lastInsertRowId: number | bigint | null;
}

export interface KvEntry {
  key: Uint8Array;
  value: Uint8Array;
}

export interface KvListOptions {
  /** Only keys starting with these bytes. */
  prefix?: Bytes;
  /** Keys k with start <= k < end (byte order); both must be given. */
  start?: Bytes;
  end?: Bytes;
  reverse?: boolean;
  limit?: number;
}

/** Limits the engine enforces before work starts (protocol v3+); past one: LimitExceededError. */
export interface EngineLimits {
  maxRequestBytes: number;
  maxResponseBytes: number;
  maxKvKeyBytes: number;
  maxKvValueBytes: number;
  maxKvBatchEntries: number;
  maxPendingRequests: number;
}

/** Limits on SQL requests (protocol v4), checked before a statement is prepared. */
export interface SqlLimits {
  maxSqlBytes: number;
  maxParams: number;
  /** Largest single bound or returned TEXT/BLOB value. */
  maxValueBytes: number;
  /** Statements running longer are interrupted (0: no deadline). */
  maxStatementMs: number;
}

/** What the engine advertised when this envoy connected. */
export interface SessionInfo {
  protocolVersion: number;
  envoyId: string;
  pingIntervalMs: number;
  envoyLostThresholdMs: number;
  actorStopThresholdMs: number;
  maxFrameBytes: number;
  /** null below protocol v3. */
  limits: EngineLimits | null;
  /** null below protocol v4. */
  sqlLimits: SqlLimits | null;
  /** What batches, transactions and streams are bounded by; null below protocol v5. */
  engineLimits: V5Limits | null;
  /** Whether an acknowledged write survives a machine crash ("FSYNC") or only an engine crash ("OS"); null below v5. */
  durability: "FSYNC" | "OS" | null;
}

/** Protocol v5 limits (a subset of the engine's EngineLimits). */
export interface V5Limits {
  /** Most statements in one `db.batch` (more: LimitExceededError BATCH_STATEMENTS, nothing sent). */
  maxBatchStatements: number;
  /** Bounds a transaction's `leaseMs` is clamped into. */
  minTransactionLeaseMs: number;
  maxTransactionLeaseMs: number;
  /** How long a write waits behind another open transaction before TransactionError TRANSACTION_BUSY. */
  maxTransactionWaitMs: number;
  /** Interactive transactions open at once per connection. */
  maxOpenTransactions: number;
  /** How long a write's request key is remembered (re-sends after it: RequestKeyError REQUEST_KEY_EXPIRED). */
  requestKeyRetentionMs: number | bigint;
  /** Row bytes the engine reads ahead of a stream's credit. */
  streamWindowBytes: number;
}

/** Why the engine stopped an actor (`UNSPECIFIED` from engines before protocol v3). */
export type StopReason =
  | "UNSPECIFIED"
  | "OPERATOR"
  | "ENVOY_STOP_INTENT"
  | "ENVOY_SLEEP_INTENT"
  | "REPLACED"
  | "ENGINE_SHUTDOWN"
  | "ENVOY_LOST"
  /** Protocol v6: the actor moved to another engine node (a node drain); get-or-create it again
   *  (a `reacquire: true` handle does) for its new generation. `UNSPECIFIED` from v5 engines. */
  | "MOVED";

export interface ActorStopInfo {
  actorId: string;
  name: string;
  key: string;
  generation: number | bigint;
  reason: StopReason;
}

/** Rejects at once when `signal` is aborted or `timeoutMs` passes; else settles like `work`. */
function bounded<T>(work: Promise<T>, options: CallOptions | undefined): Promise<T> {
  const timeoutMs = options?.timeoutMs;
  const signal = options?.signal;
  if (!timeoutMs && !signal) return work;
  work.catch(() => {}); // its late rejection, after the deadline or abort, is nobody's to handle
  return new Promise<T>((resolve, reject) => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const onAbort = () => {
      finish();
      reject(new AbortedError("ABORTED", "connection", "the call was aborted (it may have run)", { cause: signal!.reason }));
    };
    const finish = () => {
      if (timer !== undefined) clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
    };
    if (timeoutMs) {
      timer = setTimeout(() => {
        finish();
        reject(new TimeoutError("TIMEOUT", "connection", `no answer within timeoutMs ${timeoutMs} ms (the call may have run)`, { timeoutMs }));
      }, timeoutMs);
    }
    signal?.addEventListener("abort", onAbort, { once: true });
    work.then(
      (v) => {
        finish();
        resolve(v);
      },
      (e) => {
        finish();
        reject(e);
      },
    );
  });
}

function checkCallOptions(options: CallOptions | undefined): void {
  if (options === undefined || options === null || typeof options !== "object") return; // the Rust side refuses a non-object
  const { timeoutMs, signal } = options;
  if (timeoutMs !== undefined && !(typeof timeoutMs === "number" && Number.isFinite(timeoutMs) && timeoutMs >= 0)) {
    throw new InvalidValueError("INVALID_OPTION", "value", `invalid option timeoutMs: ${String(timeoutMs)} (not a non-negative number)`);
  }
  if (signal !== undefined && !(typeof signal === "object" && signal !== null && typeof signal.addEventListener === "function" && "aborted" in signal)) {
    throw new InvalidValueError("INVALID_OPTION", "value", "invalid option signal: not an AbortSignal");
  }
  if (signal?.aborted) {
    throw new AbortedError("ABORTED", "connection", "the call's signal was already aborted; nothing was sent", { sent: false, cause: signal.reason });
  }
}

/** Codes that mean the engine refused the call before running it because the handle's generation is gone. */
const REACQUIRE_CODES = new Set(["ACTOR_NOT_PLACED", "FENCE_MISMATCH", "ACTOR_STOPPED"]);

/** Remote SQLite of one actor. */
export class Db {
  /** The handle whose current generation every call goes to (it may re-acquire). */
  readonly #actor: Actor;
  constructor(actor: Actor) {
    this.#actor = actor;
  }

  /** Several statements separated by semicolons, no parameters; rows of the last one. */
  exec(sql: string, options?: CallOptions): Promise<QueryResult> {
    return this.#actor[CALL]((raw) => raw.exec(sql, options), options);
  }

  /** Exactly one statement; the engine routes reads to a reader connection. */
  execute(sql: string, params?: SqlParam[], options?: CallOptions): Promise<ExecuteResult> {
    return this.#actor[CALL]((raw) => raw.execute(sql, params, options, false), options);
  }

  /** Exactly one statement, always on the writer connection. */
  executeWrite(sql: string, params?: SqlParam[], options?: CallOptions): Promise<ExecuteResult> {
    return this.#actor[CALL]((raw) => raw.execute(sql, params, options, true), options);
  }

  /**
   * Rows as objects keyed by column name (a later duplicate column name wins). `T` is NOT
   * checked at run time: without `options.row` the rows are only cast to `T`. Pass
   * `row: (r) => T` to check or convert each row (what it throws rejects the call).
   */
  async query<T = Row>(sql: string, params?: SqlParam[], options?: QueryOptions<T>): Promise<T[]> {
    const r = await this.execute(sql, params, options);
    const check = options?.row;
    return r.rows.map((values) => {
      const o: Row = {};
      r.columns.forEach((c, i) => (o[c] = values[i]));
      return check ? check(o) : (o as T);
    });
  }

  /** A statement run for its effect (on the writer): what it changed. */
  async run(sql: string, params?: SqlParam[], options?: CallOptions): Promise<RunResult> {
    const r = await this.executeWrite(sql, params, options);
    return { changes: r.changes, lastInsertRowId: r.lastInsertRowId };
  }

  /**
   * Protocol v5: several statements in one transaction, all or nothing, one round trip → one
   * result per statement. A failing statement rejects with a SqlError whose `statementIndex`
   * names it (0-based); nothing was applied. Write batches run exactly once across reconnects.
   */
  batch(statements: BatchStatement[], options?: BatchOptions): Promise<BatchResult> {
    return this.#actor[CALL]((raw) => raw.batch(statements, options), options);
  }

  /** Protocol v5: begins an interactive transaction (commit or roll it back yourself). */
  begin(options?: TransactionOptions): Promise<Transaction> {
    return this.#actor[CALL]((raw) => raw.begin(options), options).then((raw) => new Transaction(raw, runOnce));
  }

  /**
   * Protocol v5: runs `fn` in an interactive transaction: commits when it resolves (returning its
   * value), rolls back when it throws (rethrowing the original error).
   */
  transaction<T>(fn: (tx: Transaction) => Promise<T>, options?: TransactionOptions): Promise<T> {
    return runTransaction(this.begin(options), fn);
  }

  /**
   * Protocol v5: the rows of one read-only statement as an async iterator with bounded memory
   * (`for await (const row of db.iterate(sql, params))`); `break` cancels the stream.
   */
  iterate<T = Row>(sql: string, params?: SqlParam[], options?: IterateOptions<T>): RowStream<T> {
    const open = this.#actor[CALL](async (raw) => raw.stream(sql, params, options), undefined);
    return new RowStream<T>(open, options);
  }
}

/** A call of an open transaction: checked options, deadline/abort, typed errors; never re-acquires (a transaction lives on its generation). */
function runOnce<T>(work: () => Promise<T>, options: CallOptions | undefined): Promise<T> {
  try {
    checkCallOptions(options);
  } catch (e) {
    return Promise.reject(e);
  }
  return bounded(wrap(work), options);
}

/** Durable key-value store of one actor. */
export class Kv {
  /** The handle whose current generation every call goes to (it may re-acquire). */
  readonly #actor: Actor;
  constructor(actor: Actor) {
    this.#actor = actor;
  }
  /** The value, or null when the key is absent. */
  get(key: Bytes, options?: CallOptions): Promise<Uint8Array | null> {
    return this.#actor[CALL]((raw) => raw.kvGet(key), options);
  }
  put(key: Bytes, value: Bytes, options?: CallOptions): Promise<void> {
    return this.#actor[CALL]((raw) => raw.kvPut(key, value), options);
  }
  delete(key: Bytes, options?: CallOptions): Promise<void> {
    return this.#actor[CALL]((raw) => raw.kvDelete(key), options);
  }
  /** Entries in key order (or reversed), all of them or those matching a prefix or range. */
  list(options: KvListOptions & CallOptions = {}): Promise<KvEntry[]> {
    return this.#actor[CALL]((raw) => raw.kvList(options), options);
  }
}

/** The internal call entry of an Actor (a symbol, so it is not part of the public API). */
const CALL = Symbol("call");

/** What an Envoy shares with the Actor handles it made. */
interface EnvoyLink {
  /** Throws WrongContextError / the closed error before any use. */
  check(): void;
  /** The highest stopped generation of an actor, and why. */
  stopped(actorId: string): { generation: number | bigint; reason: StopReason } | undefined;
  /** A fresh RawActor for (name, key). */
  acquire(name: string, key: string): Promise<RawActor>;
}

/**
 * One actor placed on this envoy. `generation` changes when the handle re-acquires its actor
 * (see `reacquire` in ConnectOptions); `id`, `name` and `key` never do.
 */
export class Actor {
  /** The current generation's wasm handle (swapped by `reacquire`). */
  #raw: RawActor;
  /** The envoy this handle calls through (context checks, stop records, re-acquiring). */
  readonly #envoy: EnvoyLink;
  /** Whether calls re-acquire by themselves (ConnectOptions.reacquire / ActorOptions.reacquire). */
  readonly #auto: boolean;
  /** The re-acquire in progress, shared by every call that needs it. */
  #reacquiring: Promise<void> | undefined;
  /** Calls in flight on this handle, awaited by `[Symbol.asyncDispose]`. */
  readonly #inflight = new Set<Promise<unknown>>();
  /** Set once disposed: later calls fail with DISPOSED. */
  #disposed = false;
  /** The actor's SQLite database (its calls follow this handle across re-acquires). */
  readonly db: Db;
  /** The actor's KV store (its calls follow this handle across re-acquires). */
  readonly kv: Kv;
  /** @internal Made by Envoy; not for users. */
  constructor(raw: RawActor, envoy: EnvoyLink, auto: boolean) {
    this.#raw = raw;
    this.#envoy = envoy;
    this.#auto = auto;
    this.db = new Db(this);
    this.kv = new Kv(this);
  }
  get id(): string {
    return this.#raw.id;
  }
  get name(): string {
    return this.#raw.name;
  }
  get key(): string {
    return this.#raw.key;
  }
  /** The placement this handle fences its requests with (grows when it re-acquires). */
  get generation(): number | bigint {
    return this.#raw.generation;
  }
  /** Whether the engine stopped this handle's current generation (calls would fail or re-acquire). */
  get stopped(): boolean {
    return this.#stoppedInfo() !== undefined;
  }

  #stoppedInfo(): { generation: number | bigint; reason: StopReason } | undefined {
    const s = this.#envoy.stopped(this.#raw.id);
    return s !== undefined && BigInt(s.generation) >= BigInt(this.#raw.generation) ? s : undefined;
  }

  /**
   * Places the actor on this handle's envoy again (`getOrCreateActor(name, key)`: same actor id,
   * a new generation after a restart or move) and points this handle — its `db` and `kv` — at it.
   */
  reacquire(): Promise<void> {
    this.#envoy.check();
    const from = this.#raw;
    this.#reacquiring ??= (async () => {
      try {
        const raw = await this.#envoy.acquire(from.name, from.key);
        if (this.#raw === from) this.#raw = raw;
      } finally {
        this.#reacquiring = undefined;
      }
    })();
    return this.#reacquiring;
  }

  /** @internal Runs one call on the current generation, re-acquiring once when that is allowed. */
  [CALL]<T>(f: (raw: RawActor) => Promise<T>, options: CallOptions | undefined): Promise<T> {
    let work: Promise<T>;
    try {
      this.#envoy.check();
      if (this.#disposed) throw new EnvoyError("DISPOSED", "usage", "this Actor handle was disposed; get a new one with envoy.getOrCreateActor");
      checkCallOptions(options);
      work = this.#run(f);
    } catch (e) {
      return Promise.reject(toEnvoyError(e));
    }
    const p = bounded(work, options);
    this.#inflight.add(work);
    const forget = () => this.#inflight.delete(work);
    work.then(forget, forget);
    return p;
  }

  async #run<T>(f: (raw: RawActor) => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      if (this.#reacquiring) await this.#reacquiring;
      const stopped = this.#stoppedInfo();
      if (stopped !== undefined) {
        if (!this.#auto || attempt > 0) {
          throw new ActorStoppedError(
            "ACTOR_STOPPED",
            "actor",
            `actor ${this.id} generation ${stopped.generation} was stopped by the engine (${stopped.reason}); the call was not sent. ` +
              "Call actor.reacquire() (or connect with reacquire: true) to place it again.",
            { stoppedGeneration: stopped.generation, stopReason: stopped.reason, sent: false },
          );
        }
        await this.reacquire();
        continue;
      }
      const raw = this.#raw;
      try {
        return await wrap(() => f(raw));
      } catch (e) {
        const code = (e as EnvoyError).code;
        if (this.#auto && attempt === 0 && e instanceof EnvoyError && REACQUIRE_CODES.has(code)) {
          if (this.#raw === raw) await this.reacquire();
          continue;
        }
        throw e;
      }
    }
  }

  /** `await using actor = ...`: waits for this handle's calls in flight, then refuses new ones. */
  async [Symbol.asyncDispose](): Promise<void> {
    this.#disposed = true;
    await Promise.allSettled([...this.#inflight]);
  }
}

/** A probe of the Worker request that opened an envoy (workerd only; null elsewhere). */
type ContextProbe = { readyState: number } | null;

/** In workerd: an object tied to the current request; reading it from another request throws. */
function contextProbe(): ContextProbe {
  const Pair = (globalThis as { WebSocketPair?: new () => Record<0 | 1, { readyState: number }> }).WebSocketPair;
  return typeof Pair === "function" ? new Pair()[0] : null;
}

/** A connection to an engine: one WebSocket carrying every call of every actor. */
export class Envoy {
  /** The wasm connection. */
  readonly #raw: RawEnvoy;
  /** workerd: touched before every use, to fail at once (not after 60 s) from another request. */
  readonly #probe: ContextProbe;
  /** The default of `reacquire` for the handles this envoy makes. */
  readonly #reacquire: boolean;
  /** Per actor id: the highest generation the engine stopped here, and why (handles check it). */
  readonly #stopped = new Map<string, { generation: number | bigint; reason: StopReason }>();
  /** The user's onActorStop handler (the envoy keeps the raw handler to record stops first). */
  #onStop: ((info: ActorStopInfo) => void | Promise<void>) | undefined;
  /** What the Actor handles see of this envoy. */
  readonly #link: EnvoyLink;

  private constructor(raw: RawEnvoy, reacquire: boolean) {
    this.#raw = raw;
    this.#probe = contextProbe();
    this.#reacquire = reacquire;
    this.#link = {
      check: () => this.#check(),
      stopped: (id) => this.#stopped.get(id),
      acquire: (name, key) => wrap(() => this.#raw.getOrCreateActor(name, key)),
    };
    raw.onActorStop(async (info: ActorStopInfo) => {
      try {
        if (this.#onStop) await this.#onStop(info);
      } finally {
        // Recorded once the stop is complete (the engine is told right after): while the handler
        // runs the actor is draining and calls fail with ActorStoppingError from the client.
        const prev = this.#stopped.get(info.actorId);
        if (prev === undefined || BigInt(prev.generation) < BigInt(info.generation)) {
          this.#stopped.set(info.actorId, { generation: info.generation, reason: info.reason });
        }
      }
    });
  }

  /** Connects and completes the handshake (resolves once the engine answered the hello). */
  static async connect(options: ConnectOptions): Promise<Envoy> {
    assertReady();
    if (typeof (globalThis as { WebSocket?: unknown }).WebSocket !== "function") {
      throw new EnvoyError(
        "NO_WEBSOCKET",
        "usage",
        "this host has no global WebSocket: on Node 20 run with --experimental-websocket (Node 22+ has it)",
      );
    }
    const reacquire = options?.reacquire ?? true;
    if (typeof reacquire !== "boolean") {
      throw new InvalidValueError("INVALID_OPTION", "value", `invalid option reacquire: ${String(reacquire)} (not a boolean)`);
    }
    return new Envoy(await wrap(() => RawEnvoy.connect(options)), reacquire);
  }

  #check(): void {
    if (this.#probe === null) return;
    try {
      void this.#probe.readyState;
    } catch (cause) {
      throw new WrongContextError(
        "WRONG_CONTEXT",
        "usage",
        "this Envoy was opened by another Worker request, and Workers tie a socket to the request that opened it: " +
          "it cannot be used here. Connect per request (`await using envoy = await Envoy.connect(...)`, or close() it " +
          "before the response ends), or keep one Envoy per Durable Object.",
        { cause },
      );
    }
  }

  /** The protocol version negotiated with the engine. */
  get protocolVersion(): number {
    return this.#raw.protocolVersion;
  }

  /** The engine's advertised session settings and limits; null while (re)connecting. */
  get session(): SessionInfo | null {
    return this.#raw.session as SessionInfo | null;
  }

  /** Finds or creates the actor (name, key) and places it on this envoy. */
  async getOrCreateActor(name: string, key: string, options?: ActorOptions): Promise<Actor> {
    this.#check();
    const auto = options?.reacquire ?? this.#reacquire;
    return new Actor(await this.#link.acquire(name, key), this.#link, auto);
  }

  /** Called for every actor the engine starts on this envoy (including via getOrCreateActor). */
  onActorStart(handler: (actor: Actor) => void | Promise<void>): void {
    this.#raw.onActorStart((raw: RawActor) => handler(new Actor(raw, this.#link, this.#reacquire)));
  }

  /**
   * Called when the engine stops an actor placed here (replaces an earlier handler). While it
   * runs, the actor drains (new calls: ActorStoppingError); once it settles, calls on the stopped
   * generation re-acquire or fail with ActorStoppedError without being sent.
   */
  onActorStop(handler: (info: ActorStopInfo) => void | Promise<void>): void {
    this.#onStop = handler;
  }

  /** Closes the connection; calls still pending fail with a ConnectionError. */
  close(): Promise<void> {
    try {
      this.#check();
    } catch (e) {
      return Promise.reject(e);
    }
    return wrap(() => this.#raw.close());
  }

  /** `await using envoy = await Envoy.connect(...)`: closes it at the end of the scope. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
