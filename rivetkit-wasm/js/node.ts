// The `node` entry: loads the .wasm from next to this file on import (no init step).
// Node 20 has a global WebSocket only with `--experimental-websocket`; Node 22+ always.
import { readFileSync } from "node:fs";
import { initSync } from "./index.js";

initSync({ module: readFileSync(new URL("rivetkit_wasm_bg.wasm", import.meta.url)) });

export * from "./index.js";
