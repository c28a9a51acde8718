// The npm package as users meet it: `npm pack` of rivetkit-wasm/, installed into an empty temp
// project (no Rust there), checked (metadata, exports, the shipped .wasm's gzip size), and the
// bundler step users run for Workers (esbuild, as wrangler uses).

import { spawnSync } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { gzipSync } from "node:zlib";
import { runProcess } from "./support.mjs";

/** The size target of the shipped .wasm, gzip -9 (issue 13): printed, with how far off it is. */
export const TARGET_WASM_GZIP = 120 * 1024;
/**
 * What the test enforces: the target itself. (While the v5 JS API put the package over it, a
 * 125 KiB ceiling stood here; specs/wasm.md, "Size", has the figures per change.)
 */
export const MAX_WASM_GZIP = TARGET_WASM_GZIP;

function check(cond, msg) {
  if (!cond) throw new Error(`package: ${msg}`);
}

/**
 * Packs rivetkit-wasm/ (dist/ must be built: `--ignore-scripts` skips the prepack build) and
 * installs the tarball into a fresh project. Copies `files` (test modules) into the project, so
 * they import the package by name. Returns { dir, tarball, wasmGzip, entries, cleanup }.
 */
export async function installPackage(root, files) {
  const work = mkdtempSync(path.join(tmpdir(), "rivetkit-wasm-consumer-"));
  const npmEnv = { npm_config_update_notifier: "false", npm_config_fund: "false", npm_config_audit: "false" };
  const packed = await runProcess("npm", ["pack", "--ignore-scripts", "--json", "--pack-destination", work], {
    label: "npm pack",
    cwd: root,
    env: npmEnv,
    quiet: true,
  });
  check(packed.code === 0, `npm pack failed:\n${packed.out}`);
  const info = JSON.parse(packed.stdout)[0];
  const tarball = path.join(work, info.filename);
  const shipped = info.files.map((f) => f.path).sort();
  console.log(`  npm pack: ${info.filename}, ${info.size} bytes, ${shipped.length} files: ${shipped.join(" ")}`);
  for (const f of ["package.json", "README.md", "dist/index.js", "dist/index.d.ts", "dist/node.js", "dist/deno.js", "dist/workerd.js", "dist/rivetkit_wasm_bg.wasm", "dist/rivetkit_wasm_bg.wasm.d.ts"]) {
    check(shipped.includes(f), `the tarball lacks ${f}`);
  }
  check(!shipped.some((f) => f.endsWith(".rs") || f.startsWith("tests/") || f.startsWith("scripts/")), "the tarball ships sources or tests");

  const dir = path.join(work, "app");
  mkdirSync(dir);
  writeFileSync(path.join(dir, "package.json"), JSON.stringify({ name: "consumer", private: true, type: "module" }, null, 2));
  const installed = await runProcess("npm", ["install", "--no-audit", "--no-fund", "--ignore-scripts", tarball], {
    label: "npm install",
    cwd: dir,
    env: npmEnv,
    quiet: true,
  });
  check(installed.code === 0, `npm install of the tarball failed:\n${installed.out}`);

  const pkgDir = path.join(dir, "node_modules", "rivetkit-wasm");
  const meta = JSON.parse(readFileSync(path.join(pkgDir, "package.json"), "utf8"));
  for (const k of ["name", "version", "description", "license", "types", "exports", "files"]) check(meta[k], `package.json lacks ${k}`);
  check(meta.name === "rivetkit-wasm", `name ${meta.name}`);
  check(!meta.private, "package.json is private");
  check(!meta.dependencies || Object.keys(meta.dependencies).length === 0, "the package has runtime dependencies");
  const dot = meta.exports["."];
  for (const c of ["types", "workerd", "browser", "deno", "node", "default"]) check(typeof dot[c] === "string", `exports["."] has no "${c}" condition`);
  check(Object.keys(dot)[0] === "types", 'exports["."]: "types" must come first');
  check(meta.exports["./rivetkit_wasm_bg.wasm"]?.default === "./dist/rivetkit_wasm_bg.wasm", "exports lacks ./rivetkit_wasm_bg.wasm");

  const wasmPath = path.join(pkgDir, "dist", "rivetkit_wasm_bg.wasm");
  const wasm = readFileSync(wasmPath);
  // GNU gzip -9, as scripts/build.sh prints it (zlib's level 9 differs by ~1 %; used only without gzip).
  const gz = spawnSync("gzip", ["-9", "-c", wasmPath], { maxBuffer: 64 << 20 });
  const wasmGzip = gz.status === 0 ? gz.stdout.length : gzipSync(wasm, { level: 9 }).length;
  const vsTarget = wasmGzip <= TARGET_WASM_GZIP ? "within" : `OVER by ${wasmGzip - TARGET_WASM_GZIP} B`;
  console.log(
    `  shipped rivetkit_wasm_bg.wasm: ${wasm.length} bytes raw, ${wasmGzip} bytes gzip -9; ` +
      `target ${TARGET_WASM_GZIP} B (${vsTarget}), enforced ceiling ${MAX_WASM_GZIP} B`,
  );

  for (const [name, from] of Object.entries(files)) copyFileSync(from, path.join(dir, name));
  return {
    dir,
    tarball,
    wasmGzip,
    wasmGzipOk: wasmGzip <= MAX_WASM_GZIP,
    entries: dot,
    cleanup: () => rmSync(work, { recursive: true, force: true }),
  };
}

/**
 * Bundles a Worker the way users do for Workers: esbuild, `--conditions=workerd,worker,browser`
 * (wrangler's), the .wasm copied next to the bundle (`--loader:.wasm=copy`) and imported as a
 * module. Returns the workerd modules: [{ name, path, kind }].
 */
export async function bundleWorker({ root, entry, outdir, nodePaths = [], conditions = ["workerd", "worker", "browser"] }) {
  const { build } = await import(path.join(root, "node_modules", "esbuild", "lib", "main.js"));
  const result = await build({
    entryPoints: [entry],
    bundle: true,
    format: "esm",
    platform: "neutral",
    target: "esnext",
    conditions,
    mainFields: ["module", "main"],
    loader: { ".wasm": "copy" },
    assetNames: "[name]",
    outdir,
    nodePaths,
    metafile: true,
    logLevel: "warning",
  });
  const outputs = Object.keys(result.metafile.outputs).map((p) => path.resolve(p));
  const js = outputs.filter((p) => p.endsWith(".js"));
  const wasm = outputs.filter((p) => p.endsWith(".wasm"));
  check(js.length === 1 && wasm.length === 1, `esbuild wrote ${outputs.join(", ")}`);
  return [
    { name: path.basename(js[0]), path: js[0], kind: "esModule" },
    { name: path.basename(wasm[0]), path: wasm[0], kind: "wasm" },
  ];
}
