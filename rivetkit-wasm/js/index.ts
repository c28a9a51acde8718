// Entry of the `deno` and `nodejs` builds: the glue loads the .wasm itself on import.
export * from "./envoy.js";
