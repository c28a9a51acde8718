// Errors of the rivetkit-wasm package.
//
// Every failure the package reports is an instance of `EnvoyError` (a real `Error` subclass)
// with a stable `code` (e.g. "FENCE_MISMATCH"), a `group` (which part failed) and the
// structured fields of that failure as typed properties — never JSON inside the message.
// Subclasses let callers `instanceof` the common cases.

/** Which part of the system an error comes from. */
export type EnvoyErrorGroup =
  | "value" // a JS value or option this package refuses (nothing was sent)
  | "sql" // SQLite or the engine's SQL front end rejected the request
  | "kv" // the engine's KV store rejected the request
  | "actor" // the actor is not where / what the request assumed (fence, stopping, not placed)
  | "limit" // a limit advertised by the engine was exceeded
  | "connection" // the socket, the handshake, or the client's own lifecycle
  | "protocol" // the engine's protocol version cannot carry the request, or a frame was malformed
  | "usage"; // the package was used in a way that cannot work (not initialised, wrong Worker request, disposed handle)

/** Details of a LIMIT_EXCEEDED error. */
export interface LimitInfo {
  /** Which limit: "SQL_BYTES", "PARAMS", "VALUE_BYTES", "REQUEST_BYTES", "RESPONSE_BYTES", "PENDING_REQUESTS", "STATEMENT_MS", or a KV/client limit name. */
  kind: string;
  max: number | bigint;
  actual?: number | bigint;
}

/** Fields an EnvoyError may carry, depending on its code. */
export interface EnvoyErrorFields {
  /** FENCE_MISMATCH: the actor's current generation. */
  currentGeneration?: number | bigint;
  /** SQLITE: SQLite's extended result code. */
  extendedCode?: number;
  /** SQLITE: the symbolic name of `extendedCode`, e.g. "SQLITE_CONSTRAINT_PRIMARYKEY" (absent for an unknown code). */
  sqliteName?: string;
  /** SQLITE constraint violations (primary code 19): which kind of constraint failed. */
  constraint?: ConstraintKind;
  /** SQL errors and ACTOR_UNAVAILABLE: true = committed, false = nothing committed, undefined = unknown. */
  committed?: boolean;
  /** exec() and batch(): 0-based index of the failing statement. */
  statementIndex?: number;
  /** LIMIT_EXCEEDED: which limit and by how much. */
  limit?: LimitInfo;
  /** REMOTE_UNAVAILABLE: the feature and the versions involved. */
  feature?: string;
  requiredVersion?: number;
  targetVersion?: number;
  /** Value errors: 0-based index of the offending parameter. */
  index?: number;
  /** Value errors: the JS type that was refused. */
  typeName?: string;
  /** Connection errors: the WebSocket close code, when there was one. */
  closeCode?: number;
  /** The engine's error code for the request, where different from `code`. */
  engineCode?: string;
  /** TIMEOUT: the deadline, and whether the request had been sent (then it may have run;
   *  undefined when the per-call `timeoutMs` passed and the package cannot know). */
  timeoutMs?: number;
  sent?: boolean;
  /** ACTOR_STOPPED: the stopped generation and why the engine stopped it. */
  stoppedGeneration?: number | bigint;
  stopReason?: string;
  /** DISCONNECTED: why ("CLOSED_BY_ENGINE", "UNAUTHORIZED", "NO_VERSION_SELECTED", "GAVE_UP");
   *  TRANSACTION_ABORTED: why the engine ended it ("STATEMENT_FAILED", "FENCED", "CONNECTION_CLOSED", ...). */
  reason?: string;
  /** DISCONNECTED/UNAUTHORIZED: the HTTP status of the refused upgrade. */
  httpStatus?: number;
  /** DISCONNECTED/GAVE_UP: connection attempts made. */
  attempts?: number;
  /** NO_COMMON_VERSION: what each side speaks. */
  clientMinVersion?: number;
  clientMaxVersion?: number;
  engineVersions?: string;
}

export class EnvoyError extends Error implements EnvoyErrorFields {
  readonly code: string;
  readonly group: EnvoyErrorGroup;
  declare currentGeneration?: number | bigint;
  declare extendedCode?: number;
  declare sqliteName?: string;
  declare constraint?: ConstraintKind;
  declare stoppedGeneration?: number | bigint;
  declare stopReason?: string;
  declare committed?: boolean;
  declare statementIndex?: number;
  declare limit?: LimitInfo;
  declare feature?: string;
  declare requiredVersion?: number;
  declare targetVersion?: number;
  declare index?: number;
  declare typeName?: string;
  declare closeCode?: number;
  declare engineCode?: string;
  declare timeoutMs?: number;
  declare sent?: boolean;
  declare reason?: string;
  declare httpStatus?: number;
  declare attempts?: number;
  declare clientMinVersion?: number;
  declare clientMaxVersion?: number;
  declare engineVersions?: string;

  constructor(code: string, group: EnvoyErrorGroup, message: string, fields: EnvoyErrorFields & { cause?: unknown } = {}) {
    const { cause, ...facts } = fields;
    super(message, cause === undefined ? undefined : { cause });
    this.name = new.target.name;
    this.code = code;
    this.group = group;
    Object.assign(this, facts);
  }
}

/** The engine or SQLite rejected a statement (`code` "SQLITE", "INVALID_REQUEST", "FORBIDDEN", "TIMEOUT", ...). */
export class SqlError extends EnvoyError {}
/** The request named a generation that is no longer the actor's; see `currentGeneration`. */
export class FenceMismatchError extends EnvoyError {}
/** A constraint failed (SQLite primary code 19); `constraint` says which kind, `sqliteName` the exact code. */
export class ConstraintError extends SqlError {}
/** The actor is draining; the request was not run. */
export class ActorStoppingError extends EnvoyError {}
/**
 * Protocol v6 (cluster mode): the engine node that owns the actor is down or unreachable, or the
 * node this envoy talks to lost its cluster lease. Retry later with backoff: the actor is never
 * re-created empty on another node. `committed` is false when nothing ran, undefined when
 * unknown (a SQL request relayed to the owner when the link dropped may have run; KV answers
 * never say). Engines below v6 answer
 * OVERLOADED instead (a get-or-create below v5: GET_OR_CREATE_FAILED with engineCode INTERNAL),
 * the message starting with "actor unavailable: ".
 */
export class ActorUnavailableError extends EnvoyError {}
/**
 * The handle's actor generation was stopped by the engine (see `stopReason`); the call was not
 * sent. Handles made with `reacquire: true` (the default) re-acquire instead of failing.
 */
export class ActorStoppedError extends EnvoyError {}
/** The call's `signal` was aborted (`cause` is the signal's reason); `sent` says whether it may have run. */
export class AbortedError extends EnvoyError {}
/** `Envoy.connect` was called before the .wasm was loaded: call `await init()` (or `initSync`) first. */
export class NotInitializedError extends EnvoyError {}
/**
 * A Cloudflare Worker used an Envoy opened by another request: Workers tie a socket to the
 * request that opened it. Connect per request (`await using envoy = await Envoy.connect(...)`),
 * or keep one Envoy per Durable Object.
 */
export class WrongContextError extends EnvoyError {}
/** The request was sent but the connection dropped before its answer: it may or may not have run. */
export class IndeterminateResultError extends EnvoyError {}
/** The engine's protocol version cannot carry this request (e.g. SQL against a v3 engine). */
export class RemoteUnavailableError extends EnvoyError {}
/** A limit was exceeded; see `limit`. */
export class LimitExceededError extends EnvoyError {}
/** A JS value or option was refused before anything was sent. */
export class InvalidValueError extends EnvoyError {}
/** The connection is gone, closed, or could not be made. */
export class ConnectionError extends EnvoyError {}
/** The request's deadline passed. */
export class TimeoutError extends EnvoyError {}
/**
 * Protocol v5: an interactive transaction cannot go on. `code`: TRANSACTION_EXPIRED (its lease
 * ran out; rolled back), TRANSACTION_ABORTED (rolled back by the engine or with its connection;
 * `reason`: "STATEMENT_FAILED", "ACTOR_STOPPING", "ENGINE_STOPPING", "FENCED",
 * "CONNECTION_CLOSED", ...), TRANSACTION_BUSY (the writer stayed held by another transaction;
 * not run), TRANSACTION_NOT_FOUND (not open: already committed or rolled back). Nothing of it
 * was committed.
 */
export class TransactionError extends SqlError {}
/** Protocol v5: a result stream ended early: STREAM_EXPIRED (no credit for its lease), CANCELLED, STREAM_INTERRUPTED (connection lost). Rows already yielded stay valid. */
export class StreamError extends EnvoyError {}
/** Protocol v5: a re-sent write's request key: REQUEST_KEY_EXPIRED (older than the engine's retention: whether the first send ran is unknown) or REQUEST_KEY_CONFLICT (recorded for another request). Nothing ran now. */
export class RequestKeyError extends EnvoyError {}

const SUBCLASS_BY_CODE: Record<string, typeof EnvoyError> = {
  FENCE_MISMATCH: FenceMismatchError,
  ACTOR_NOT_FOUND: EnvoyError,
  ACTOR_NOT_PLACED: EnvoyError,
  ACTOR_STOPPING: ActorStoppingError,
  ACTOR_STOPPED: ActorStoppedError,
  ACTOR_UNAVAILABLE: ActorUnavailableError,
  ABORTED: AbortedError,
  NOT_INITIALIZED: NotInitializedError,
  WRONG_CONTEXT: WrongContextError,
  INDETERMINATE_RESULT: IndeterminateResultError,
  REMOTE_UNAVAILABLE: RemoteUnavailableError,
  LIMIT_EXCEEDED: LimitExceededError,
  TIMEOUT: TimeoutError,
  TRANSACTION_EXPIRED: TransactionError,
  TRANSACTION_ABORTED: TransactionError,
  TRANSACTION_BUSY: TransactionError,
  TRANSACTION_NOT_FOUND: TransactionError,
  STREAM_EXPIRED: StreamError,
  STREAM_INTERRUPTED: StreamError,
  CANCELLED: StreamError,
  REQUEST_KEY_EXPIRED: RequestKeyError,
  REQUEST_KEY_CONFLICT: RequestKeyError,
  ACTOR_LIMIT_EXCEEDED: LimitExceededError,
};

const SUBCLASS_BY_GROUP: Partial<Record<EnvoyErrorGroup, typeof EnvoyError>> = {
  value: InvalidValueError,
  sql: SqlError,
  connection: ConnectionError,
};

const FIELD_NAMES: (keyof EnvoyErrorFields)[] = [
  "currentGeneration",
  "extendedCode",
  "committed",
  "statementIndex",
  "limit",
  "feature",
  "requiredVersion",
  "targetVersion",
  "index",
  "typeName",
  "closeCode",
  "engineCode",
  "timeoutMs",
  "sent",
  "reason",
  "httpStatus",
  "attempts",
  "clientMinVersion",
  "clientMaxVersion",
  "engineVersions",
];

/**
 * Turns what the wasm core threw (an `Error` with `envoyCode`, `group` and field properties)
 * into the matching EnvoyError subclass. Anything else (a bug, a JS exception from a handler)
 * is passed through unchanged.
 */
export function toEnvoyError(e: unknown): unknown {
  if (e instanceof EnvoyError) return e;
  if (typeof e !== "object" || e === null || typeof (e as { envoyCode?: unknown }).envoyCode !== "string") return e;
  const raw = e as Record<string, unknown>;
  const code = raw.envoyCode as string;
  const group = raw.group as EnvoyErrorGroup;
  const fields: Record<string, unknown> = {};
  for (const name of FIELD_NAMES) {
    if (raw[name] !== undefined) fields[name] = raw[name];
  }
  let Class = SUBCLASS_BY_CODE[code] ?? SUBCLASS_BY_GROUP[group] ?? EnvoyError;
  if (code === "SQLITE" && typeof fields.extendedCode === "number") {
    const ext = fields.extendedCode as number;
    const name = sqliteName(ext);
    if (name !== undefined) fields.sqliteName = name;
    if ((ext & 0xff) === 19) {
      fields.constraint = constraintKind(ext);
      Class = ConstraintError;
    }
  }
  return new Class(code, group, onceOnly(String(raw.message)), fields as EnvoyErrorFields);
}

/**
 * "<client's words>: <engine's words>" where the engine's words already say it ("actor not placed
 * on this envoy: the actor is not placed on this envoy") becomes the engine's words alone.
 */
function onceOnly(message: string): string {
  const m = /^(actor not placed on this envoy|actor not found): (.*)$/s.exec(message);
  if (!m) return message;
  const key = m[1] === "actor not found" ? "not found" : "not placed";
  return m[2].toLowerCase().includes(key) ? m[2] : message;
}

/** Runs `f`, rethrowing wasm errors as EnvoyError instances. */
export async function wrap<T>(f: () => Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (e) {
    throw toEnvoyError(e);
  }
}

/** Which kind of constraint failed (from SQLite's extended code; "OTHER" for a plain SQLITE_CONSTRAINT). */
export type ConstraintKind =
  | "PRIMARY_KEY"
  | "UNIQUE"
  | "NOT_NULL"
  | "CHECK"
  | "FOREIGN_KEY"
  | "TRIGGER"
  | "ROWID"
  | "DATATYPE"
  | "COMMIT_HOOK"
  | "FUNCTION"
  | "VTAB"
  | "PINNED"
  | "OTHER";

// SQLite's primary result codes (https://sqlite.org/rescode.html), by number.
const PRIMARY = [
  "OK", "ERROR", "INTERNAL", "PERM", "ABORT", "BUSY", "LOCKED", "NOMEM", "READONLY", "INTERRUPT",
  "IOERR", "CORRUPT", "NOTFOUND", "FULL", "CANTOPEN", "PROTOCOL", "EMPTY", "SCHEMA", "TOOBIG",
  "CONSTRAINT", "MISMATCH", "MISUSE", "NOLFS", "AUTH", "FORMAT", "RANGE", "NOTADB", "NOTICE", "WARNING",
];

// Extended codes: primary | (n << 8). Only the suffixes, keyed by primary name then n.
const EXTENDED: Record<string, Record<number, string>> = {
  ERROR: { 1: "MISSING_COLLSEQ", 2: "RETRY", 3: "SNAPSHOT" },
  ABORT: { 2: "ROLLBACK" },
  BUSY: { 1: "RECOVERY", 2: "SNAPSHOT", 3: "TIMEOUT" },
  LOCKED: { 1: "SHAREDCACHE", 2: "VTAB" },
  READONLY: { 1: "RECOVERY", 2: "CANTLOCK", 3: "ROLLBACK", 4: "DBMOVED", 5: "CANTINIT", 6: "DIRECTORY" },
  IOERR: {
    1: "READ", 2: "SHORT_READ", 3: "WRITE", 4: "FSYNC", 5: "DIR_FSYNC", 6: "TRUNCATE", 7: "FSTAT", 8: "UNLOCK",
    9: "RDLOCK", 10: "DELETE", 11: "BLOCKED", 12: "NOMEM", 13: "ACCESS", 14: "CHECKRESERVEDLOCK", 15: "LOCK",
    16: "CLOSE", 17: "DIR_CLOSE", 18: "SHMOPEN", 19: "SHMSIZE", 20: "SHMLOCK", 21: "SHMMAP", 22: "SEEK",
    23: "DELETE_NOENT", 24: "MMAP", 25: "GETTEMPPATH", 26: "CONVPATH", 27: "VNODE", 28: "AUTH",
    29: "BEGIN_ATOMIC", 30: "COMMIT_ATOMIC", 31: "ROLLBACK_ATOMIC", 32: "DATA", 33: "CORRUPTFS",
  },
  CORRUPT: { 1: "VTAB", 2: "SEQUENCE", 3: "INDEX" },
  CANTOPEN: { 1: "NOTEMPDIR", 2: "ISDIR", 3: "FULLPATH", 4: "CONVPATH", 5: "DIRTYWAL", 6: "SYMLINK" },
  CONSTRAINT: {
    1: "CHECK", 2: "COMMITHOOK", 3: "FOREIGNKEY", 4: "FUNCTION", 5: "NOTNULL", 6: "PRIMARYKEY",
    7: "TRIGGER", 8: "UNIQUE", 9: "VTAB", 10: "ROWID", 11: "PINNED", 12: "DATATYPE",
  },
  NOTICE: { 1: "RECOVER_WAL", 2: "RECOVER_ROLLBACK", 3: "RBU" },
  WARNING: { 1: "AUTOINDEX" },
  AUTH: { 1: "USER" },
  OK: { 1: "LOAD_PERMANENTLY", 2: "SYMLINK" },
};

const CONSTRAINT_KINDS: Record<string, ConstraintKind> = {
  CHECK: "CHECK",
  COMMITHOOK: "COMMIT_HOOK",
  FOREIGNKEY: "FOREIGN_KEY",
  FUNCTION: "FUNCTION",
  NOTNULL: "NOT_NULL",
  PRIMARYKEY: "PRIMARY_KEY",
  TRIGGER: "TRIGGER",
  UNIQUE: "UNIQUE",
  VTAB: "VTAB",
  ROWID: "ROWID",
  PINNED: "PINNED",
  DATATYPE: "DATATYPE",
};

/** SQLite's symbolic name of a (primary or extended) result code, e.g. 1555 -> "SQLITE_CONSTRAINT_PRIMARYKEY". */
export function sqliteName(code: number): string | undefined {
  const primary = PRIMARY[code & 0xff];
  if (primary === undefined) return undefined;
  const n = code >> 8;
  if (n === 0) return `SQLITE_${primary}`;
  const suffix = EXTENDED[primary]?.[n];
  return suffix === undefined ? undefined : `SQLITE_${primary}_${suffix}`;
}

function constraintKind(code: number): ConstraintKind {
  const suffix = EXTENDED.CONSTRAINT[code >> 8];
  return (suffix !== undefined && CONSTRAINT_KINDS[suffix]) || "OTHER";
}
