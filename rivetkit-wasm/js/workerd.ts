// The `workerd` entry (Cloudflare Workers, workerd): the .wasm is imported as a compiled module
// (wrangler does this for `.wasm` imports; with plain esbuild use `--loader:.wasm=copy` and
// declare the copied file as a wasm module), and instantiated on import: no init step.
import wasmModule from "./rivetkit_wasm_bg.wasm";
import { initSync } from "./index.js";

initSync({ module: wasmModule });

export * from "./index.js";
