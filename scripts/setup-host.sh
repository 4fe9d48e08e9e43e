#!/usr/bin/env bash
# Installs the system packages gnt-hotplug needs on a Debian 12 host, as root.
# QEMU comes from bookworm-backports (QEMU 10): Debian 12's own QEMU 7.2 crashes on
# vCPU re-plug. Backports is enabled by reusing the URIs of the machine's existing
# Debian entry, so no package host is named here.
set -euo pipefail

PACKAGES=(busybox-static cpio iproute2 kmod gzip util-linux passwd openssl gcc libc6-dev)
SOURCES=/etc/apt/sources.list.d/debian.sources
BACKPORTS=/etc/apt/sources.list.d/gnt-hotplug-backports.sources
STAMP=/var/lib/gnt-hotplug-host-setup.done
QEMU_USER=gnt-qemu

log() { printf '[setup-host] %s\n' "$*" >&2; }

need_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "setup-host.sh must run as root (it installs packages)" >&2
    exit 1
  fi
}

codename() { . /etc/os-release && echo "${VERSION_CODENAME:-bookworm}"; }

# Prints the URIs: line of the first Debian (non-security) deb822 entry.
debian_uris() {
  awk '/^URIs:/ && $2 !~ /security/ { print $2; exit }' "$SOURCES" 2>/dev/null || true
}

debian_uris_legacy() {
  awk '$1=="deb" && $0 !~ /security/ { for (i=2;i<=NF;i++) if ($i ~ /:\/\//) { print $i; exit } }' \
    /etc/apt/sources.list 2>/dev/null || true
}

enable_backports() {
  local suite="$(codename)-backports" uris
  if grep -rqs -- "$suite" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    return 0
  fi
  uris="$(debian_uris)"
  [ -n "$uris" ] || uris="$(debian_uris_legacy)"
  if [ -z "$uris" ]; then
    log "no Debian apt entry found to derive $suite from; staying on the distribution's QEMU"
    return 0
  fi
  log "enabling $suite from the existing Debian entry"
  cat >"$BACKPORTS" <<SRC
Types: deb
URIs: $uris
Suites: $suite
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
}

qemu_is_current() {
  command -v qemu-system-x86_64 >/dev/null &&
    qemu-system-x86_64 --version | head -1 | grep -Eq 'version (9|[1-9][0-9])\.'
}

have_packages() {
  local p
  for p in "${PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || return 1; done
  qemu_is_current
}

# The dedicated unprivileged user QEMU runs as by default (gnt-noded --qemu-user,
# hvparams security_model=user). Every harness gets it: test.sh and demo.sh run
# prepare.sh, which runs this script.
ensure_qemu_user() {
  id -u "$QEMU_USER" >/dev/null 2>&1 && return 0
  log "creating system user $QEMU_USER"
  useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$QEMU_USER"
}

main() {
  need_root
  if [ -f "$STAMP" ] && have_packages; then
    ensure_qemu_user
    log "host packages already installed ($(qemu-system-x86_64 --version | head -1))"
    return 0
  fi
  enable_backports
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y "${PACKAGES[@]}"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -t "$(codename)-backports" qemu-system-x86; then
    log "backports QEMU not available; installing the distribution's QEMU"
    DEBIAN_FRONTEND=noninteractive apt-get install -y qemu-system-x86
  fi
  ensure_qemu_user
  touch "$STAMP"
  log "installed: $(qemu-system-x86_64 --version | head -1)"
}

main "$@"
