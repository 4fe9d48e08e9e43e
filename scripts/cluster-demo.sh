#!/usr/bin/env bash
# The main job: a one-node gnt-hotplug cluster on loopback. It initialises the
# cluster, starts gnt-masterd and one gnt-noded, adds and starts an instance
# with the test guest, hot-adds and removes a NIC and a disk with the CLI, and
# prints what the guest itself reports after each step. Runs inside a private
# network namespace (scripts/demo.sh arranges that); cleans up after itself.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
[ "${GNT_IN_TEST_NETNS:-}" = 1 ] || { echo "run through scripts/demo.sh" >&2; exit 2; }

WORK=$(mktemp -d /tmp/gnt-demo.XXXXXX)
export GNT_CLUSTER_DIR=$WORK/cluster
export PATH=$ROOT/bin:$PATH
BRIDGE=gntdemo0
PIDS=()

cleanup() {
  gnt-instance remove demo1 >/dev/null 2>&1 || true
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  ip link del "$BRIDGE" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

free_port() { node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }

# Starts a daemon in the background and waits for its "listening on" line.
start_daemon() {
  local log=$1 pattern=$2; shift 2
  "$@" >"$log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 200); do grep -q "$pattern" "$log" && return 0; sleep 0.1; done
  echo "daemon did not start: $(cat "$log")" >&2; return 1
}

# Prints the guest's own view (from its serial console) once it matches $1 (a JS predicate on g).
guest_view() {
  local want=${1:-true}
  for _ in $(seq 1 150); do
    if gnt-instance info demo1 --output json | node -e '
      const d = JSON.parse(require("fs").readFileSync(0, "utf8")); const g = d.runtime.guest;
      if (!g.known || !('"$want"')) process.exit(1);
      console.log("   guest sees NICs : " + (g.nics.join(" | ") || "none"));
      console.log("   guest sees disks: " + (g.disks.map((l) => { const [n, s, p] = l.split(" "); return `${n} ${s * 512 / 1048576} MiB @${p}`; }).join(" | ") || "none"));
      console.log("   guest sees online CPU list " + g.cpusOnline + ", MemTotal " + g.memTotalKib + " kB");'; then return 0; fi
    sleep 0.4
  done
  echo "the guest never showed: $want" >&2; return 1
}

say "gnt-cluster init (CA, certificates, SQLite config)"
MASTER_PORT=$(free_port)
run gnt-cluster init --master-address "127.0.0.1:$MASTER_PORT" --name demo

say "start gnt-masterd and one gnt-noded (mutual TLS on loopback)"
start_daemon "$WORK/masterd.log" "listening on" gnt-masterd
gnt-cluster issue-node-cert node1 --out "$WORK/node1-certs" >/dev/null
NODE_PORT=$(free_port)
mkdir -p "$WORK/node1-data" "$WORK/node1-storage"
start_daemon "$WORK/noded.log" "listening on" gnt-noded --name node1 --listen "127.0.0.1:$NODE_PORT" \
  --data-dir "$WORK/node1-data" --storage-dir "$WORK/node1-storage" --image-dir "$ROOT/.cache/guest" \
  --ca "$WORK/node1-certs/ca.pem" --cert "$WORK/node1-certs/node.pem" --key "$WORK/node1-certs/node.key"
run gnt-node add node1 --address "127.0.0.1:$NODE_PORT"
run gnt-node list

say "add and start instance demo1 with the test guest (one disk, one NIC on bridge $BRIDGE)"
ip link add "$BRIDGE" type bridge && ip link set "$BRIDGE" up
run gnt-instance add -n node1 --vcpus 1 --maxvcpus 4 --memory 256M --maxmem 1G \
  --kernel "$ROOT/.cache/guest/vmlinuz" --initrd "$ROOT/.cache/guest/initrd.gz" \
  --kernel-args "console=ttyS0 quiet loglevel=1 panic=-1" \
  --disk size=64M --net "link=$BRIDGE" demo1
guest_view 'g.nics.length === 1 && g.disks.length === 1'

say "QEMU runs unprivileged by default: the node's gnt-qemu user, seccomp sandbox, no capabilities"
QEMU_PID="$(gnt-instance info demo1 --output json | node -e 'console.log(JSON.parse(require("fs").readFileSync(0, "utf8")).runtime.pid)')"
grep -E '^(Uid|Seccomp|CapEff):' "/proc/$QEMU_PID/status" | sed "s/^/   QEMU pid $QEMU_PID /"

say "hot-add a NIC"
run gnt-instance modify --hotplug --net "add:mac=52:54:00:de:00:02,link=$BRIDGE" demo1
guest_view 'g.nics.some((l) => l.includes("52:54:00:de:00:02"))'

say "hot-add a 128 MiB disk"
run gnt-instance modify --hotplug --disk add:size=128M demo1
guest_view 'g.disks.some((l) => l.split(" ")[1] === "262144")'

say "gnt-instance info: configuration next to the node's runtime view"
run gnt-instance info demo1

say "hot-remove the NIC and the disk"
run gnt-instance modify --hotplug --net 1:remove demo1
run gnt-instance modify --hotplug --disk 1:remove demo1
guest_view 'g.nics.length === 1 && g.disks.length === 1'

say "configuration, runtime file, QEMU and the host agree"
run gnt-cluster verify

say "every change was a job"
run gnt-job list

printf '\nhotplug demo finished: every change above was made live and seen by the guest itself\n'
