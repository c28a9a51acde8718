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
  | "protocol"; // the engine's protocol version cannot carry the request, or a frame was malformed

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
  /** SQL errors: true = committed, false = nothing committed, undefined = unknown. */
  committed?: boolean;
  /** exec(): 0-based index of the failing statement. */
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
  /** TIMEOUT: the deadline, and whether the request had been sent (then it may have run). */
  timeoutMs?: number;
  sent?: boolean;
  /** DISCONNECTED: why ("CLOSED_BY_ENGINE", "UNAUTHORIZED", "NO_VERSION_SELECTED", "GAVE_UP"). */
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

  constructor(code: string, group: EnvoyErrorGroup, message: string, fields: EnvoyErrorFields = {}) {
    super(message);
    this.name = new.target.name;
    this.code = code;
    this.group = group;
    Object.assign(this, fields);
  }
}

/** The engine or SQLite rejected a statement (`code` "SQLITE", "INVALID_REQUEST", "FORBIDDEN", "TIMEOUT", ...). */
export class SqlError extends EnvoyError {}
/** The request named a generation that is no longer the actor's; see `currentGeneration`. */
export class FenceMismatchError extends EnvoyError {}
/** The actor is draining; the request was not run. */
export class ActorStoppingError extends EnvoyError {}
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

const SUBCLASS_BY_CODE: Record<string, typeof EnvoyError> = {
  FENCE_MISMATCH: FenceMismatchError,
  ACTOR_NOT_FOUND: EnvoyError,
  ACTOR_NOT_PLACED: EnvoyError,
  ACTOR_STOPPING: ActorStoppingError,
  INDETERMINATE_RESULT: IndeterminateResultError,
  REMOTE_UNAVAILABLE: RemoteUnavailableError,
  LIMIT_EXCEEDED: LimitExceededError,
  TIMEOUT: TimeoutError,
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
  const Class = SUBCLASS_BY_CODE[code] ?? SUBCLASS_BY_GROUP[group] ?? EnvoyError;
  return new Class(code, group, String(raw.message), fields as EnvoyErrorFields);
}

/** Runs `f`, rethrowing wasm errors as EnvoyError instances. */
export async function wrap<T>(f: () => Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (e) {
    throw toEnvoyError(e);
  }
}
