#!/usr/bin/env bash
# A one-node Ceph cluster for development and tests: 1 mon, 1 mgr and 1
# BlueStore OSD on a sparse file beneath DIR, on 127.0.0.1 only, no systemd,
# no cephadm, no LVM, no kernel modules. Each daemon runs in the foreground,
# started in the background by this script; its pid is in DIR/<daemon>.pid.
#
#   scripts/ceph-dev.sh start DIR    bootstrap (or say it runs already) and print
#                                    CEPH_MONITORS=, CEPH_POOL=, CEPH_CLIENT=,
#                                    CEPH_KEYRING=, CEPH_CONF= lines
#   scripts/ceph-dev.sh stop DIR     SIGTERM to the recorded pids (SIGKILL after
#                                    a few seconds), then remove DIR
#   scripts/ceph-dev.sh status DIR   ceph -s
#   scripts/ceph-dev.sh install      only install the packages (scripts/prepare.sh runs
#                                    it: the tests run in a network namespace that
#                                    reaches no package mirror)
#
# It makes pool "rbd" (size 1, rbd pool init) and client.gnt with the caps an
# RBD client needs (mon 'profile rbd', osd/mgr 'profile rbd pool=rbd'), whose
# keyring is DIR/client.gnt.keyring (0600). Installs ceph-mon, ceph-mgr,
# ceph-osd and ceph-common through the machine's apt configuration if missing.
# Env: CEPH_DEV_TIMEOUT (seconds to wait for each stage, default 90).
set -euo pipefail

PACKAGES=(ceph-mon ceph-mgr ceph-osd ceph-common)
POOL=rbd
CLIENT=gnt
MON_V2=3300
MON_V1=6789
TIMEOUT="${CEPH_DEV_TIMEOUT:-90}"
DAEMONS=(osd mgr mon) # stop order

log() { printf '[ceph-dev] %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

usage() {
  echo "usage: $0 start|stop|status DIR | $0 install" >&2
  exit 2
}

if [ $# -eq 1 ] && [ "$1" = install ]; then
  INSTALL_ONLY=1
  set -- install /nonexistent
fi
[ $# -eq 2 ] || usage
CMD=$1
[ -n "$2" ] || usage
case "$2" in /*) DIR=$2 ;; *) DIR="$(pwd)/$2" ;; esac
DIR="${DIR%/}"
CONF="$DIR/ceph.conf"

pid_alive() { # pid file -> 0 if the recorded process is alive
  local f="$DIR/$1.pid" pid
  [ -s "$f" ] || return 1
  pid=$(cat "$f")
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null
}

any_alive() {
  local d
  for d in "${DAEMONS[@]}"; do pid_alive "$d" && return 0; done
  return 1
}

# ceph with the cluster's conf and a bound on every call (an unreachable mon never hangs us).
ceph_() { timeout 30 ceph -c "$CONF" --connect-timeout 15 "$@"; }
rbd_() { timeout 30 rbd -c "$CONF" "$@"; }

tail_logs() {
  local f
  for f in "$DIR"/log/*.log; do
    [ -f "$f" ] || continue
    echo "---- last lines of $f" >&2
    tail -n 15 "$f" >&2
  done
}

fail() {
  log "error: $*"
  tail_logs
  exit 1
}

# Runs a command until it succeeds or TIMEOUT seconds pass.
wait_for() {
  local what=$1
  shift
  local deadline=$((SECONDS + TIMEOUT))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || fail "timed out after ${TIMEOUT}s waiting for $what"
    sleep 0.5
  done
}

install_packages() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || die "packages ${missing[*]} are missing and only root can install them"
  log "installing ${missing[*]}"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >"${TMPDIR:-/tmp}/ceph-dev-apt.log" 2>&1; then
    log "apt-get install failed; updating the package lists once and trying again"
    DEBIAN_FRONTEND=noninteractive apt-get update >>"${TMPDIR:-/tmp}/ceph-dev-apt.log" 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >>"${TMPDIR:-/tmp}/ceph-dev-apt.log" 2>&1 || {
      tail -n 20 "${TMPDIR:-/tmp}/ceph-dev-apt.log" >&2
      die "could not install ${missing[*]} (apt-get install failed, see above)"
    }
  fi
}

write_conf() {
  local fsid=$1
  cat >"$CONF" <<EOF
[global]
fsid = $fsid
mon_initial_members = a
mon_host = [v2:127.0.0.1:$MON_V2,v1:127.0.0.1:$MON_V1]
public_network = 127.0.0.0/8
cluster_network = 127.0.0.0/8
public_addr = 127.0.0.1
cluster_addr = 127.0.0.1
ms_bind_ipv4 = true
ms_bind_ipv6 = false
auth_cluster_required = cephx
auth_service_required = cephx
auth_client_required = cephx
auth_allow_insecure_global_id_reclaim = false
osd_pool_default_size = 1
osd_pool_default_min_size = 1
mon_allow_pool_size_one = true
mon_allow_pool_delete = true
mon_warn_on_pool_no_redundancy = false
osd_crush_chooseleaf_type = 0
run_dir = $DIR/run
admin_socket = $DIR/run/\$cluster-\$name.asok
log_file = $DIR/log/\$cluster-\$name.log
crash_dir = $DIR/crash
mon_data = $DIR/mon/\$cluster-\$id
mgr_data = $DIR/mgr/\$cluster-\$id
osd_data = $DIR/osd/\$cluster-\$id
keyring = $DIR/\$cluster.\$name.keyring
osd_objectstore = bluestore
osd_memory_target = 1073741824
bluestore_cache_autotune = false
bluestore_cache_size = 134217728
bluestore_block_path = $DIR/osd/osd.\$id.block
bluestore_block_create = true
bluestore_block_size = 4294967296
bluestore_block_db_create = false
bluestore_block_wal_create = false
[mon]
keyring = $DIR/mon/\$cluster-\$id/keyring
mon_data_avail_warn = 10
[osd]
keyring = $DIR/osd/\$cluster-\$id/keyring
[mgr]
keyring = $DIR/mgr/\$cluster-\$id/keyring
EOF
}

# Starts a daemon in the foreground, in the background, detached from our stdio.
run_daemon() {
  local name=$1
  shift
  setsid "$@" -f </dev/null >>"$DIR/log/$name.out" 2>&1 &
  echo $! >"$DIR/$name.pid"
}

print_info() {
  echo "CEPH_MONITORS=127.0.0.1:$MON_V2"
  echo "CEPH_POOL=$POOL"
  echo "CEPH_CLIENT=$CLIENT"
  echo "CEPH_KEYRING=$DIR/client.$CLIENT.keyring"
  echo "CEPH_CONF=$CONF"
}

health_ok() { [ "$(ceph_ health 2>/dev/null)" = HEALTH_OK ]; }
osd_up() { ceph_ osd dump --format json 2>/dev/null | grep -q '"up":1'; }

start() {
  if [ -f "$CONF" ] && any_alive; then
    log "already running in $DIR"
    print_info
    return 0
  fi
  if [ -e "$DIR" ] && [ -n "$(ls -A "$DIR" 2>/dev/null)" ]; then
    die "$DIR is not empty and holds no running cluster; run: $0 stop $DIR (it removes $DIR)"
  fi
  install_packages
  local t0=$SECONDS
  mkdir -p "$DIR"/{run,log,crash,mon/ceph-a,mgr/ceph-a,osd/ceph-0}
  chmod 0700 "$DIR"
  local fsid
  fsid=$(cat /proc/sys/kernel/random/uuid)
  write_conf "$fsid"

  log "monitor"
  ceph-authtool --create-keyring "$DIR/ceph.mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
  ceph-authtool --create-keyring "$DIR/ceph.client.admin.keyring" --gen-key -n client.admin \
    --cap mon 'allow *' --cap osd 'allow *' --cap mds 'allow *' --cap mgr 'allow *' >/dev/null
  ceph-authtool --create-keyring "$DIR/ceph.client.bootstrap-osd.keyring" --gen-key -n client.bootstrap-osd \
    --cap mon 'profile bootstrap-osd' --cap mgr 'allow r' >/dev/null
  ceph-authtool "$DIR/ceph.mon.keyring" --import-keyring "$DIR/ceph.client.admin.keyring" >/dev/null
  ceph-authtool "$DIR/ceph.mon.keyring" --import-keyring "$DIR/ceph.client.bootstrap-osd.keyring" >/dev/null
  monmaptool --create --addv a "[v2:127.0.0.1:$MON_V2,v1:127.0.0.1:$MON_V1]" --fsid "$fsid" "$DIR/monmap" >/dev/null
  ceph-mon -c "$CONF" --mkfs -i a --monmap "$DIR/monmap" --keyring "$DIR/ceph.mon.keyring" >>"$DIR/log/mkfs.out" 2>&1 ||
    fail "ceph-mon --mkfs failed"
  run_daemon mon ceph-mon -c "$CONF" -i a
  wait_for "the monitor to answer" ceph_ mon stat

  log "manager"
  ceph_ auth get-or-create mgr.a mon 'allow profile mgr' osd 'allow *' mds 'allow *' -o "$DIR/mgr/ceph-a/keyring" >/dev/null
  run_daemon mgr ceph-mgr -c "$CONF" -i a

  log "OSD (BlueStore on a sparse file)"
  local uuid secret
  uuid=$(cat /proc/sys/kernel/random/uuid)
  secret=$(ceph-authtool --gen-print-key)
  echo "{\"cephx_secret\": \"$secret\"}" |
    ceph_ osd new "$uuid" -i - -n client.bootstrap-osd -k "$DIR/ceph.client.bootstrap-osd.keyring" >/dev/null ||
    fail "ceph osd new failed"
  ceph-authtool --create-keyring "$DIR/osd/ceph-0/keyring" --name osd.0 --add-key "$secret" >/dev/null
  ceph-osd -c "$CONF" -i 0 --mkfs --osd-uuid "$uuid" --osd-objectstore bluestore >>"$DIR/log/mkfs.out" 2>&1 ||
    fail "ceph-osd --mkfs failed"
  run_daemon osd ceph-osd -c "$CONF" -i 0
  wait_for "the OSD to be up" osd_up

  log "pool $POOL and client.$CLIENT"
  ceph_ osd pool create "$POOL" 8 8 replicated >/dev/null
  ceph_ osd pool set "$POOL" size 1 --yes-i-really-mean-it >/dev/null
  rbd_ pool init "$POOL" || fail "rbd pool init $POOL failed"
  ceph_ auth get-or-create "client.$CLIENT" mon 'profile rbd' osd "profile rbd pool=$POOL" mgr "profile rbd pool=$POOL" \
    -o "$DIR/client.$CLIENT.keyring" >/dev/null
  chmod 0600 "$DIR/client.$CLIENT.keyring"

  local deadline=$((SECONDS + TIMEOUT))
  until health_ok; do
    if [ $SECONDS -ge $deadline ]; then
      # Usable without HEALTH_OK (e.g. a warning about this one-node set-up): say so, go on.
      if rbd_ ls "$POOL" >/dev/null 2>&1; then
        log "warning: not HEALTH_OK after ${TIMEOUT}s, but the OSD is up and pool $POOL is usable: $(ceph_ health 2>&1 | head -1)"
        break
      fi
      fail "not HEALTH_OK after ${TIMEOUT}s and pool $POOL not usable: $(ceph_ health detail 2>&1 | head -5)"
    fi
    sleep 0.5
  done
  log "up in $((SECONDS - t0)) s: monitor 127.0.0.1:$MON_V2, pool $POOL, client.$CLIENT"
  print_info
}

stop() {
  [ -e "$DIR" ] || {
    log "$DIR does not exist: nothing to stop"
    return 0
  }
  local d
  # One at a time, the OSD first: each gets SIGTERM, then SIGKILL after 5 s.
  for d in "${DAEMONS[@]}"; do
    pid_alive "$d" || continue
    local pid deadline
    pid=$(cat "$DIR/$d.pid")
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + 5))
    while kill -0 "$pid" 2>/dev/null; do
      if [ $SECONDS -ge $deadline ]; then
        log "$d (pid $pid) did not stop on SIGTERM: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.2
        break
      fi
      sleep 0.1
    done
  done
  rm -rf "$DIR"
  log "stopped; $DIR removed"
}

status() {
  [ -f "$CONF" ] || die "no cluster in $DIR"
  any_alive || die "the cluster in $DIR is not running"
  ceph_ -s
}

case "$CMD" in
  install)
    [ "${INSTALL_ONLY:-}" = 1 ] || usage
    install_packages
    log "packages present: ${PACKAGES[*]}"
    ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) usage ;;
esac
