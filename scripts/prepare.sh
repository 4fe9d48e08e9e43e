#!/usr/bin/env bash
# Everything both README commands need, idempotent: system packages (QEMU 10
# from backports), node modules, the TypeScript build and the cached test guest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-host.sh
npm ci --no-audit --no-fund
npm run build
bash scripts/build-guest.sh
