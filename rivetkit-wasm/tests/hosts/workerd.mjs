// Runs the conformance suite inside workerd (`workerd test <config>`). tests/run.mjs bundles this
// file with esbuild for workerd (conditions workerd, worker, browser; the .wasm copied and
// imported as a module), as a user's Worker would be: the package's `workerd` entry loads the
// .wasm on import. The config passes the JSON context as the text binding CONFIG and routes
// outbound connections to a network service that allows 127.0.0.1.
import wasmModule from "rivetkit-wasm/rivetkit_wasm_bg.wasm";
import * as pkg from "rivetkit-wasm";
import { runConformance } from "./conformance.mjs";
import { runBench } from "./bench.mjs";

export default {
  async test(_controller, env) {
    const cfg = JSON.parse(env.CONFIG);
    // The workerd entry needs no init; init() and init(module) are harmless no-ops after it.
    if (!(wasmModule instanceof WebAssembly.Module)) throw new Error("the .wasm import is not a WebAssembly.Module");
    await pkg.init();
    await pkg.init(wasmModule);
    const t0 = Date.now(); // workerd's clock advances across I/O, which is all this suite waits on
    const r = await runConformance({ ...cfg, pkg, host: "workerd", log: (l) => console.log(`[workerd] ${l}`) });
    console.log(`[workerd] suite time: ${Date.now() - t0} ms`);
    if (cfg.bench && r.failed === 0) {
      // workerd's clock only advances across I/O; every timed step here awaits the engine.
      await runBench({ ...cfg, pkg, host: "workerd", log: (l) => console.log(`[workerd] ${l}`) });
    }
    console.log(`workerd: ${r.passed} passed, ${r.failed} failed, ${r.skipped} skipped`);
    if (r.failed !== 0) throw new Error(`${r.failed} conformance test(s) failed: ${r.failures.map((f) => f.name).join("; ")}`);
  },
};
