#!/usr/bin/env bash
# Builds the tiny QEMU test guest: a Debian cloud kernel plus a busybox initramfs
# whose /init is guest/init, plus /bin/gnt-uevent compiled statically from
# guest/gnt-uevent.c. Results land in .cache/guest/ (vmlinuz, initrd.gz,
# KERNEL, BUILD_ID). Nothing is rebuilt when vmlinuz and initrd.gz exist and
# BUILD_ID matches the hash of every file in guest/, this script and the C
# compiler's version; pass --force to rebuild anyway.
#
# Needs: apt-get (with lists updated), dpkg-deb, busybox-static, cpio, kmod
# (modinfo), gzip, gcc and libc6-dev (a static libc). Runs as root or as a
# normal user.
set -euo pipefail
PATH="$PATH:/usr/sbin:/sbin"   # modinfo lives in sbin, not in a normal user's PATH

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SELF="$ROOT/scripts/build-guest.sh"
INIT="$ROOT/guest/init"
UEVENT_SRC="$ROOT/guest/gnt-uevent.c"
CC="${CC:-gcc}"
CACHE="$ROOT/.cache/guest"
BUSYBOX=/bin/busybox
KERNEL_META=linux-image-cloud-amd64

# Modules the guest loads. Missing ones (built in, or absent) are skipped;
# their dependencies are added automatically, and the load order is resolved
# at build time from each module's "depends" field, never hard-coded.
WANTED_MODULES=(virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev
  virtio_pci failover net_failover virtio_net virtio_blk virtio_mem
  virtio_scsi sd_mod virtio_pmem nd_pmem virtio_console)

WORK=""          # temp build dir, removed on exit
MODDIR=""        # unpacked lib/modules/<version>
declare -A KO_FILE=()   # module name -> .ko path inside the unpacked package
declare -A KO_DEPS=()   # module name -> space-separated module deps we ship
declare -A VISIT=()     # topological sort marks
LOAD_ORDER=()

log() { printf '[build-guest] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Every input: the guest's files (by name and content), this script, the compiler.
build_id() {
  {
    (cd "$ROOT/guest" && LC_ALL=C ls -A | while IFS= read -r f; do printf '%s\n' "$f"; cat "$f"; done)
    cat "$SELF"
    { "$CC" --version 2>/dev/null || echo "no $CC"; } | sed -n 1p
  } | sha256sum | cut -d' ' -f1
}

cache_is_fresh() {
  [ -f "$CACHE/vmlinuz" ] && [ -f "$CACHE/initrd.gz" ] && [ -f "$CACHE/BUILD_ID" ] &&
    [ "$(cat "$CACHE/BUILD_ID")" = "$(build_id)" ]
}

check_tools() {
  local t
  for t in apt-get apt-cache dpkg-deb cpio gzip modinfo sha256sum flock "$CC"; do
    command -v "$t" >/dev/null || die "missing tool: $t"
  done
  [ -x "$BUSYBOX" ] || die "$BUSYBOX not found (install busybox-static)"
  dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' ||
    die "busybox-static is not installed (a dynamic busybox cannot run in the guest)"
  [ -f "$INIT" ] || die "missing $INIT"
  [ -f "$UEVENT_SRC" ] || die "missing $UEVENT_SRC"
}

# The guest's uevent reporter: static, so that it needs nothing else in the initramfs.
compile_helpers() {
  log "compiling $(basename "$UEVENT_SRC")"
  "$CC" -static -Os -s -Wall -Wextra -Werror -o "$WORK/root/bin/gnt-uevent" "$UEVENT_SRC" ||
    die "cannot compile $UEVENT_SRC statically (needs gcc and libc6-dev)"
}

# Prints the versioned kernel package the cloud meta-package currently points at.
kernel_package() {
  apt-cache depends "$KERNEL_META" 2>/dev/null |
    awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }'
}

fetch_kernel() {
  local pkg deb
  pkg="$(kernel_package)"
  [ -n "$pkg" ] || die "cannot resolve $KERNEL_META (has apt-get update been run?)"
  log "downloading $pkg"
  mkdir -p "$WORK/deb" "$WORK/pkg"
  # Download as the calling user: the sandbox user _apt cannot write the temp dir.
  (cd "$WORK/deb" && apt-get -qq -o APT::Sandbox::User=root download "$pkg" >&2)
  deb="$(ls "$WORK"/deb/*.deb)"
  log "unpacking $(basename "$deb")"
  dpkg-deb -x "$deb" "$WORK/pkg"
  MODDIR="$(find "$WORK/pkg" -maxdepth 4 -type d -path '*/modules/*' -name '[0-9]*' | head -1)"
  [ -n "$MODDIR" ] || die "no lib/modules/<version> in $pkg"
}

# Indexes every module file of the kernel by module name (dashes -> underscores).
index_modules() {
  local f name
  while IFS= read -r f; do
    name="$(basename "$f")"
    name="${name%%.ko*}"
    KO_FILE["${name//-/_}"]="$f"
  done < <(find "$MODDIR" -name '*.ko' -o -name '*.ko.*')
}

is_builtin() { grep -Eq "/${1//_/[-_]}\.ko\$" "$MODDIR/modules.builtin" 2>/dev/null; }

# Writes the uncompressed module $1 to $2 (busybox insmod may not decompress).
unpack_module() {
  case "$1" in
    *.ko) cp "$1" "$2" ;;
    *.ko.xz) if command -v xz >/dev/null; then xz -dc "$1" >"$2"; else "$BUSYBOX" xz -dc "$1" >"$2"; fi ;;
    *.ko.zst) command -v zstd >/dev/null || die "zstd needed to unpack $1"; zstd -qdc "$1" >"$2" ;;
    *.ko.gz) gzip -dc "$1" >"$2" ;;
    *) die "unknown module format: $1" ;;
  esac
}

# Adds module $1 and, recursively, the modules it depends on to the image.
add_module() {
  local name="$1" src dst dep deps="" depends
  [ -n "${KO_DEPS[$name]+set}" ] && return 0
  src="${KO_FILE[$name]:-}"
  if [ -z "$src" ]; then
    if is_builtin "$name"; then log "module $name: built in"; else log "module $name: not in this kernel, skipped"; fi
    return 0
  fi
  if [ "$src" != "${src%.ko.*}" ]; then log "module $name: ${src##*.ko.} compressed, unpacking"; fi
  dst="$WORK/root/lib/modules/$name.ko"
  unpack_module "$src" "$dst"
  KO_DEPS[$name]=""
  depends="$(modinfo -F depends "$dst")"
  for dep in ${depends//,/ }; do
    dep="${dep//-/_}"
    add_module "$dep"
    if [ -n "${KO_DEPS[$dep]+set}" ]; then deps+=" $dep"; fi
  done
  KO_DEPS[$name]="${deps# }"
}

# Depth-first topological sort: dependencies before dependents.
visit() {
  local name="$1" dep
  case "${VISIT[$name]:-}" in
    done) return 0 ;;
    active) die "module dependency cycle at $name" ;;
  esac
  VISIT[$name]=active
  for dep in ${KO_DEPS[$name]}; do visit "$dep"; done
  VISIT[$name]=done
  LOAD_ORDER+=("$name")
}

resolve_modules() {
  local m
  mkdir -p "$WORK/root/lib/modules" "$WORK/root/etc"
  index_modules
  for m in "${WANTED_MODULES[@]}"; do add_module "$m"; done
  for m in "${WANTED_MODULES[@]}"; do
    if [ -n "${KO_DEPS[$m]+set}" ]; then visit "$m"; fi
  done
  printf '%s\n' "${LOAD_ORDER[@]}" >"$WORK/root/etc/modules.order"
  log "module load order: ${LOAD_ORDER[*]:-(none)}"
}

# Lays out busybox (with applet symlinks), /init and the empty mount points.
populate_root() {
  local r="$WORK/root" applet
  mkdir -p "$r"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,run,root}
  cp "$BUSYBOX" "$r/bin/busybox"
  for applet in $("$BUSYBOX" --list-full); do
    [ -e "$r/$applet" ] || ln -s /bin/busybox "$r/$applet"
  done
  install -m 0755 "$INIT" "$r/init"
  compile_helpers
  add_guest_agent
}

# Debian's qemu-guest-agent: the binary, the libraries ldd names for it (resolved
# here, from the build host's copies, never a fixed list) and the loader, each at
# its own path; and an /sbin/shutdown for guest-shutdown (busybox has none).
add_guest_agent() {
  local r="$WORK/root" lib
  mkdir -p "$WORK/qga-deb"
  (cd "$WORK/qga-deb" && apt-get -qq -o APT::Sandbox::User=root download qemu-guest-agent >&2) ||
    die "cannot download qemu-guest-agent (has apt-get update been run?)"
  dpkg-deb -x "$WORK"/qga-deb/qemu-guest-agent_*.deb "$WORK/qga"
  install -D -m 0755 "$WORK/qga/usr/sbin/qemu-ga" "$r/usr/sbin/qemu-ga"
  if ldd "$WORK/qga/usr/sbin/qemu-ga" | grep -q 'not found'; then
    die "qemu-ga needs libraries this host lacks: $(ldd "$WORK/qga/usr/sbin/qemu-ga" | grep 'not found' | tr -s ' \t' ' ')"
  fi
  for lib in $(ldd "$WORK/qga/usr/sbin/qemu-ga" | grep -o '/[^ ]*'); do
    mkdir -p "$r$(dirname "$lib")"
    cp -L "$lib" "$r$lib"
  done
  rm -f "$r/sbin/shutdown"
  printf '#!/bin/sh\n# guest-shutdown runs /sbin/shutdown -h|-P|-r +0 ...\ncase " $* " in *" -r "*) exec reboot -f ;; esac\nexec poweroff -f\n' >"$r/sbin/shutdown"
  chmod 0755 "$r/sbin/shutdown"
  log "qemu-guest-agent $(dpkg-deb -f "$WORK"/qga-deb/qemu-guest-agent_*.deb Version) with $(ldd "$WORK/qga/usr/sbin/qemu-ga" | grep -c '/') libraries"
}

pack_initrd() {
  log "packing initramfs"
  (cd "$WORK/root" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) |
    gzip -9n >"$WORK/out/initrd.gz"
}

build() {
  WORK="$(mktemp -d "$ROOT/.cache/guest-build.XXXXXX")"
  mkdir -p "$WORK/out" "$WORK/root"
  fetch_kernel
  cp "$(ls "$WORK"/pkg/boot/vmlinuz-* | head -1)" "$WORK/out/vmlinuz"
  basename "$MODDIR" >"$WORK/out/KERNEL"
  log "kernel $(cat "$WORK/out/KERNEL")"
  resolve_modules
  populate_root
  pack_initrd
  build_id >"$WORK/out/BUILD_ID"
}

# Moves the results into place; BUILD_ID goes last, so an interrupted install
# leaves a cache that is seen as stale and rebuilt.
install_results() {
  mkdir -p "$CACHE"
  rm -f "$CACHE/BUILD_ID"
  mv -f "$WORK/out/vmlinuz" "$WORK/out/initrd.gz" "$WORK/out/KERNEL" "$CACHE/"
  mv -f "$WORK/out/BUILD_ID" "$CACHE/BUILD_ID"
}

cleanup() { if [ -n "$WORK" ]; then rm -rf "$WORK"; fi; }

main() {
  local force=0
  case "${1:-}" in
    --force|-f) force=1 ;;
    "") ;;
    *) die "usage: $0 [--force]" ;;
  esac
  if [ "$force" = 0 ] && cache_is_fresh; then exit 0; fi
  check_tools
  mkdir -p "$ROOT/.cache"
  # Serialise concurrent builds (e.g. parallel test runners); re-check after waiting.
  exec 9>"$ROOT/.cache/guest.lock"
  flock 9
  if [ "$force" = 0 ] && cache_is_fresh; then log "guest already built"; exit 0; fi
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  build
  install_results
  log "guest ready in $CACHE ($(du -h "$CACHE/initrd.gz" | cut -f1) initrd)"
}

main "$@"
