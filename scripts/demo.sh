#!/usr/bin/env bash
# Sets up everything and runs the main job: boots the test guest and shows
# NIC and disk hotplug as the guest itself sees it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/prepare.sh
exec scripts/in-netns.sh scripts/cluster-demo.sh "$@"
