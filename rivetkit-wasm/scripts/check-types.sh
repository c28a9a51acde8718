#!/usr/bin/env bash
# Type-checks tests/types/usage.ts against the generated .d.ts of pkg/web (tsc --noEmit --strict).
set -euo pipefail
cd "$(dirname "$0")/.."
node_modules/.bin/tsc --noEmit --strict --target es2022 --module es2022 --moduleResolution bundler \
  --lib esnext,dom tests/types/usage.ts
echo "types: tests/types/usage.ts type-checks against pkg/web/*.d.ts"
