#!/usr/bin/env bash
# Runs a command in a private network namespace (with its own /sys, so that
# /sys/class/net shows that namespace) and loopback up. Every tap and bridge
# the tests or the demo create lives and dies there: the namespace vanishes
# with the command, even after kill -9.
set -euo pipefail
if [ "${GNT_IN_TEST_NETNS:-}" = 1 ]; then exec "$@"; fi
exec unshare --net --mount -- bash -c '
  mount -t sysfs sysfs /sys
  ip link set lo up
  GNT_IN_TEST_NETNS=1 exec "$@"' bash "$@"
