#!/usr/bin/env bash
# Sets up everything and runs the whole test suite (unit + real-QEMU integration).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/prepare.sh
npm test
