// The public JS API of rivetkit-wasm: a typed layer over the wasm-bindgen classes
// (`RawEnvoy`, `RawActor`) that the Rust crate exports. The Rust side does the protocol work and
// every value conversion; this file adds the JS shapes (objects keyed by column, handlers taking
// `Actor`), and rethrows failures as `EnvoyError` instances.

import { RawActor, RawEnvoy } from "./rivetkit_wasm.js";
import { wrap } from "./errors.js";

export * from "./errors.js";

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
}

export interface CallOptions {
  integers?: IntegerMode;
}

/** Which connection ran a statement. */
export type SqlRoute = "READ" | "WRITE" | "WRITE_FALLBACK";

export interface QueryResult {
  columns: string[];
  rows: SqlValue[][];
}

export interface ExecuteResult extends QueryResult {
  /** Rows changed by this statement alone. */
  changes: number;
  /** Rowid of the last row this statement inserted, or null if it inserted none. */
  lastInsertRowId: number | bigint | null;
  route: SqlRoute;
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
}

/** The actor generation the engine stopped on this envoy. */
/** Why the engine stopped an actor (`UNSPECIFIED` from engines before protocol v3). */
export type StopReason =
  | "UNSPECIFIED"
  | "OPERATOR"
  | "ENVOY_STOP_INTENT"
  | "ENVOY_SLEEP_INTENT"
  | "REPLACED"
  | "ENGINE_SHUTDOWN"
  | "ENVOY_LOST";

export interface ActorStopInfo {
  actorId: string;
  name: string;
  key: string;
  generation: number | bigint;
  reason: StopReason;
}

/** Remote SQLite of one actor. */
export class Db {
  readonly #raw: RawActor;
  constructor(raw: RawActor) {
    this.#raw = raw;
  }

  /** Several statements separated by semicolons, no parameters; rows of the last one. */
  exec(sql: string, options?: CallOptions): Promise<QueryResult> {
    return wrap(() => this.#raw.exec(sql, options));
  }

  /** Exactly one statement; the engine routes reads to a reader connection. */
  execute(sql: string, params?: SqlParam[], options?: CallOptions): Promise<ExecuteResult> {
    return wrap(() => this.#raw.execute(sql, params, options, false));
  }

  /** Exactly one statement, always on the writer connection. */
  executeWrite(sql: string, params?: SqlParam[], options?: CallOptions): Promise<ExecuteResult> {
    return wrap(() => this.#raw.execute(sql, params, options, true));
  }

  /** Rows as objects keyed by column name (a later duplicate column name wins). */
  async query<T = Record<string, SqlValue>>(sql: string, params?: SqlParam[], options?: CallOptions): Promise<T[]> {
    const r = await this.execute(sql, params, options);
    return r.rows.map((row) => {
      const o: Record<string, SqlValue> = {};
      r.columns.forEach((c, i) => (o[c] = row[i]));
      return o as T;
    });
  }

  /** A statement run for its effect (on the writer): what it changed. */
  async run(sql: string, params?: SqlParam[], options?: CallOptions): Promise<RunResult> {
    const r = await this.executeWrite(sql, params, options);
    return { changes: r.changes, lastInsertRowId: r.lastInsertRowId };
  }
}

/** Durable key-value store of one actor. */
export class Kv {
  readonly #raw: RawActor;
  constructor(raw: RawActor) {
    this.#raw = raw;
  }
  /** The value, or null when the key is absent. */
  get(key: Bytes): Promise<Uint8Array | null> {
    return wrap(() => this.#raw.kvGet(key));
  }
  put(key: Bytes, value: Bytes): Promise<void> {
    return wrap(() => this.#raw.kvPut(key, value));
  }
  delete(key: Bytes): Promise<void> {
    return wrap(() => this.#raw.kvDelete(key));
  }
  /** Entries in key order (or reversed), all of them or those matching a prefix or range. */
  list(options: KvListOptions = {}): Promise<KvEntry[]> {
    return wrap(() => this.#raw.kvList(options));
  }
}

/** One actor placed on this envoy. */
export class Actor {
  readonly #raw: RawActor;
  readonly db: Db;
  readonly kv: Kv;
  constructor(raw: RawActor) {
    this.#raw = raw;
    this.db = new Db(raw);
    this.kv = new Kv(raw);
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
  /** The placement this handle fences its requests with. */
  get generation(): number | bigint {
    return this.#raw.generation;
  }
}

/** A connection to an engine: one WebSocket carrying every call of every actor. */
export class Envoy {
  readonly #raw: RawEnvoy;
  private constructor(raw: RawEnvoy) {
    this.#raw = raw;
  }

  /** Connects and completes the handshake (resolves once the engine answered the hello). */
  static async connect(options: ConnectOptions): Promise<Envoy> {
    return new Envoy(await wrap(() => RawEnvoy.connect(options)));
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
  async getOrCreateActor(name: string, key: string): Promise<Actor> {
    return new Actor(await wrap(() => this.#raw.getOrCreateActor(name, key)));
  }

  /** Called for every actor the engine starts on this envoy (including via getOrCreateActor). */
  onActorStart(handler: (actor: Actor) => void | Promise<void>): void {
    this.#raw.onActorStart((raw: RawActor) => handler(new Actor(raw)));
  }

  /** Called when the engine stops an actor placed here; its handle then fails with ActorStopping or FenceMismatch. */
  onActorStop(handler: (info: ActorStopInfo) => void | Promise<void>): void {
    this.#raw.onActorStop((info: ActorStopInfo) => handler(info));
  }

  /** Closes the connection; calls still pending fail with a ConnectionError. */
  close(): Promise<void> {
    return wrap(() => this.#raw.close());
  }
}
