// Entry of the `web` build (browsers, Workers/workerd): call `init()` (fetches the .wasm) or
// `initSync({ module })` (a compiled WebAssembly.Module, as workerd imports it) before use.
export * from "./envoy.js";
export { default as init, initSync } from "./rivetkit_wasm.js";
export type { InitInput, InitOutput, SyncInitInput } from "./rivetkit_wasm.js";
