// Whether the .wasm is loaded. The host entries (node.ts, deno.ts, workerd.ts) load it on import;
// the web entry (index.ts) waits for `init()` / `initSync()`. `Envoy.connect` checks this first,
// so forgetting the init step is a NotInitializedError that says what to do, not a TypeError
// from inside the wasm-bindgen glue.

import { NotInitializedError } from "./errors.js";

let ready = false;

export function markReady(): void {
  ready = true;
}

export function isReady(): boolean {
  return ready;
}

export function assertReady(): void {
  if (!ready) {
    throw new NotInitializedError(
      "NOT_INITIALIZED",
      "usage",
      'rivetkit-wasm is not initialised: call `await init()` (or `initSync({ module })`) from "rivetkit-wasm" before Envoy.connect. ' +
        "The node, deno and workerd entries of the package do this on import; browsers and the default entry do not.",
    );
  }
}
