#!/usr/bin/env bash
# Everything both README commands need, idempotent: system packages (QEMU 10
# from backports, Ceph for the RBD tests), node modules, the TypeScript build
# and the cached test guest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-host.sh
# Ceph for the RBD tests' one-node cluster (installed here: the tests run in a
# network namespace that reaches no package mirror).
bash scripts/ceph-dev.sh install
npm ci --no-audit --no-fund
npm run build
bash scripts/build-guest.sh
