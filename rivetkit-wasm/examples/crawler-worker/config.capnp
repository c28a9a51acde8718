# workerd config to run the crawler Worker by hand (the test generates its own with free ports).
#   1. cargo run --release -p envoy-engine -- serve                 (engine on 127.0.0.1:6420)
#   2. node rivetkit-wasm/examples/crawler-worker/fixture-server.mjs (pages on 127.0.0.1:8788)
#   3. bash rivetkit-wasm/scripts/build.sh                          (pkg/web, once)
#   4. rivetkit-wasm/node_modules/.bin/workerd serve rivetkit-wasm/examples/crawler-worker/config.capnp
#   5. curl http://127.0.0.1:8787/crawl
using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [
    (name = "main", worker = .crawler),
    # Outbound fetch/WebSocket; "local" lets the Worker reach 127.0.0.1 (engine and pages).
    (name = "net", network = (allow = ["public", "private", "local"])),
  ],
  sockets = [ (name = "http", address = "127.0.0.1:8787", http = (), service = "main") ],
);

const crawler :Workerd.Worker = (
  modules = [
    (name = "worker.mjs", esModule = embed "worker.mjs"),
    (name = "crawl.mjs", esModule = embed "crawl.mjs"),
    (name = "parse.mjs", esModule = embed "parse.mjs"),
    (name = "store.mjs", esModule = embed "store.mjs"),
    (name = "pkg/index.js", esModule = embed "../../pkg/web/index.js"),
    (name = "pkg/envoy.js", esModule = embed "../../pkg/web/envoy.js"),
    (name = "pkg/errors.js", esModule = embed "../../pkg/web/errors.js"),
    (name = "pkg/rivetkit_wasm.js", esModule = embed "../../pkg/web/rivetkit_wasm.js"),
    (name = "pkg/rivetkit_wasm_bg.wasm", wasm = embed "../../pkg/web/rivetkit_wasm_bg.wasm"),
  ],
  bindings = [
    (name = "ENGINE_URL", text = "ws://127.0.0.1:6420"),
    (name = "PAGES_URL", text = "http://127.0.0.1:8788"),
    (name = "NAMESPACE", text = "crawler"),
    (name = "ACTOR_NAME", text = "crawler"),
    (name = "ACTOR_KEY", text = "default"),
  ],
  compatibilityDate = "2026-11-01",
  globalOutbound = "net",
);
