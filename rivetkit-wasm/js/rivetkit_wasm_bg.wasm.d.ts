// `import wasm from "rivetkit-wasm/rivetkit_wasm_bg.wasm"`: Workers (wrangler, workerd) and
// bundlers configured for it give the compiled module, to pass to `init(wasm)` / `initSync(wasm)`.
declare const wasmModule: WebAssembly.Module;
export default wasmModule;
