// The one Node API the `node` entry uses, declared here so the build needs no @types/node.
declare module "node:fs" {
  export function readFileSync(path: URL): Uint8Array;
}
