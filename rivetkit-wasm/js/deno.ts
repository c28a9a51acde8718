// The `deno` entry: loads the .wasm from next to this file on import (needs --allow-read for it).
import { initSync } from "./index.js";

declare const Deno: { readFileSync(path: URL): Uint8Array };
initSync({ module: Deno.readFileSync(new URL("rivetkit_wasm_bg.wasm", import.meta.url)) });

export * from "./index.js";
