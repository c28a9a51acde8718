# workerd config to run the crawler Worker by hand (the test generates its own with free ports).
#   1. cargo run --release -p envoy-engine -- serve                 (engine on 127.0.0.1:6420)
#   2. node rivetkit-wasm/examples/crawler-worker/fixture-server.mjs (pages on 127.0.0.1:8788)
#   3. bash rivetkit-wasm/scripts/build.sh                          (dist/, once), then bundle:
#      NODE_PATH=. rivetkit-wasm/node_modules/.bin/esbuild rivetkit-wasm/examples/crawler-worker/worker.mjs \
#        --bundle --format=esm --platform=neutral --conditions=workerd,worker,browser \
#        --loader:.wasm=copy --asset-names=[name] --outdir=rivetkit-wasm/examples/crawler-worker/bundle
#      (NODE_PATH=. : the repo root holds the package directory rivetkit-wasm/; a user's project
#      has it in node_modules instead)
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
    (name = "worker.js", esModule = embed "bundle/worker.js"),
    (name = "rivetkit_wasm_bg.wasm", wasm = embed "bundle/rivetkit_wasm_bg.wasm"),
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
