// The `browser` and `default` entry (browsers, Web Workers, bundlers, and any host without its
// own entry): load the .wasm with `await init()` (fetched next to this file) or
// `initSync({ module })` before `Envoy.connect`.
import glueInit, { initSync as glueInitSync } from "./rivetkit_wasm.js";
import type { InitInput, SyncInitInput } from "./rivetkit_wasm.js";
import { EnvoyError } from "./errors.js";
import { isReady, markReady } from "./state.js";

export * from "./envoy.js";
export type { InitInput, SyncInitInput };

/** Where the .wasm comes from: a URL / path, bytes, a Response, or a compiled `WebAssembly.Module`. */
export type InitSource = InitInput | Promise<InitInput>;

/**
 * Loads the .wasm (once; later calls resolve at once). Without an argument it is fetched from
 * next to this file (`new URL("rivetkit_wasm_bg.wasm", import.meta.url)`). In a Worker, pass the
 * imported module — or use the package's `workerd` entry, which needs no init at all.
 */
export async function init(source?: InitSource | { module_or_path: InitSource }): Promise<void> {
  if (isReady()) return;
  if (source === undefined) {
    // Fetched from next to this module. Where that cannot work (a Worker: no usable
    // import.meta.url, no fetch of the bundle's files) say what to do instead.
    try {
      await glueInit({ module_or_path: new URL("rivetkit_wasm_bg.wasm", import.meta.url) });
    } catch (cause) {
      throw new EnvoyError(
        "INIT_FAILED",
        "usage",
        `init(): could not load rivetkit_wasm_bg.wasm from next to this module (${String(cause)}). ` +
          'Pass it yourself: `import wasm from "rivetkit-wasm/rivetkit_wasm_bg.wasm"; await init(wasm)` ' +
          '(a compiled WebAssembly.Module, bytes, or a URL). In Workers the package\'s "workerd" export condition ' +
          "(wrangler uses it) loads it on import and needs no init.",
        { cause },
      );
    }
    markReady();
    return;
  }
  const arg = typeof source === "object" && source !== null && "module_or_path" in source ? source : { module_or_path: source };
  await glueInit(arg);
  markReady();
}

/** Loads the .wasm synchronously from bytes or a compiled `WebAssembly.Module` (as Workers import it). */
export function initSync(module: SyncInitInput | { module: SyncInitInput }): void {
  if (isReady()) return;
  const arg = module instanceof WebAssembly.Module || ArrayBuffer.isView(module) || module instanceof ArrayBuffer ? { module } : module;
  glueInitSync(arg);
  markReady();
}
