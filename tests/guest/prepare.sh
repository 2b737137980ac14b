#!/usr/bin/env bash
# Prepares the cache the real-guest test boots from (issue 6). Idempotent: each part has a
# stamp and a health check; a part that fails its check is rebuilt. Everything lives outside
# the repository, in $VPCI_GUEST_CACHE (default /var/cache/vpci-guest):
#   root/          Debian tree (trixie + trixie-backports, or sid) with qemu-system-x86 >= 10.1
#                  whose vfio-user-pci device is our server's client; QEMU runs chrooted in it.
#                  Also qemu-utils of the same version (qemu-storage-daemon, the vhost-user-blk
#                  peer of bench/guest-blk.sh), added to an older tree without rebuilding it.
#   kernel/        Debian 12 linux-image-cloud-amd64: vmlinuz + the virtio modules (uncompressed
#                  .ko, loadable by busybox insmod in a tiny initramfs).
#   kernel-new/    the same from the tree's archive (trixie: Linux >= 6.11, for the admin queue).
#   busybox        busybox-static, the whole guest userland.
# Needs root (debootstrap, chroot) and the host packages in scripts/install-deps.sh.
set -euo pipefail

cache=${VPCI_GUEST_CACHE:-/var/cache/vpci-guest}
suite=${VPCI_GUEST_SUITE:-trixie}   # trixie (+backports) or sid
log() { printf 'prepare: %s\n' "$*" >&2; }
die() { printf 'prepare: error: %s\n' "$*" >&2; exit 1; }

# with_progress LOG COMMAND...: runs COMMAND with its output in LOG and, every 10 s
# until it ends, prints the elapsed time and LOG's latest line, so a first run (a
# minute or more of debootstrap and apt) never looks hung. Returns COMMAND's status.
with_progress() {
  local logfile=$1 started=$SECONDS pid status=0 last
  shift
  "$@" >"$logfile" 2>&1 &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break 2; sleep 0.1; done
    last=$(tail -n 1 "$logfile" 2>/dev/null | tr -d '\r' | cut -c1-100)
    log "  ... $((SECONDS - started)) s: ${last:-(no output yet)}"
  done
  wait "$pid" || status=$?
  return "$status"
}

[[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap and chroot)"
for tool in debootstrap chroot apt-get dpkg-deb xz; do
  command -v "$tool" >/dev/null || die "$tool missing: run scripts/install-deps.sh"
done
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9   # two preparers at once (parallel ctest runs) would corrupt the tree

# --- Debian tree with QEMU ---------------------------------------------------------------
root="$cache/root"
root_stamp="$cache/root.stamp"

tree_ok() {
  [[ -f $root_stamp && -x $root/usr/bin/qemu-system-x86_64 ]] || return 1
  # -device help needs no /proc or /dev; a broken tree (missing libs, wrong binary) fails here.
  chroot "$root" /usr/bin/qemu-system-x86_64 -device help 2>/dev/null | grep -q '"vfio-user-pci"'
}

mounted_proc=""
cleanup_tree_mounts() {
  if [[ -n $mounted_proc ]]; then umount "$mounted_proc" 2>/dev/null || umount -l "$mounted_proc"; fi
  mounted_proc=""
}
trap cleanup_tree_mounts EXIT

# rm -rf of a tree with /proc (or a runner's bind mounts) still mounted in it would
# recurse into the host's /proc, /dev or /sys: refuse instead.
remove_tree() {
  local dir=$1
  [[ -e $dir ]] || return 0
  if awk -v d="$(realpath "$dir")/" 'index($2, d) == 1 { found = 1 } END { exit !found }' /proc/mounts; then
    die "$dir has mounts below it (a guest run in progress?); not removing it"
  fi
  rm -rf "$dir"
}

build_tree() {
  local target="$cache/root.new" started=$SECONDS
  remove_tree "$target"
  if [[ $suite == trixie ]]; then
    log "debootstrap --variant=minbase trixie $target (default mirror)"
    with_progress "$cache/debootstrap.log" debootstrap --variant=minbase trixie "$target" ||
      { tail -20 "$cache/debootstrap.log" >&2; return 1; }
    # Reuse the mirror debootstrap wrote into the tree's own sources instead of naming one.
    local uri
    uri=$(awk '$1 == "deb" { print $2; exit }' "$target/etc/apt/sources.list" 2>/dev/null || true)
    if [[ -z $uri ]]; then
      uri=$(awk '/^URIs:/ { print $2; exit }' "$target"/etc/apt/sources.list.d/*.sources 2>/dev/null || true)
    fi
    [[ -n $uri ]] || { log "no mirror URI found in the tree's apt sources"; return 1; }
    log "adding trixie-backports from $uri"
    echo "deb $uri trixie-backports main" >"$target/etc/apt/sources.list.d/backports.list"
    mount -t proc proc "$target/proc"; mounted_proc="$target/proc"
    # -t (not pkg/suite): QEMU's own dependencies (qemu-system-common, seabios) must come
    # from backports too.
    log "installing qemu-system-x86 and qemu-utils from trixie-backports in the tree"
    if ! with_progress "$cache/apt.log" chroot "$target" /usr/bin/env DEBIAN_FRONTEND=noninteractive sh -c \
        'apt-get update -q && apt-get install -y -q --no-install-recommends -t trixie-backports qemu-system-x86 qemu-utils'; then
      tail -20 "$cache/apt.log" >&2; cleanup_tree_mounts; return 1
    fi
  else
    log "debootstrap --variant=minbase --include=qemu-system-x86,qemu-utils $suite $target"
    with_progress "$cache/debootstrap.log" \
      debootstrap --variant=minbase --include=qemu-system-x86,qemu-utils "$suite" "$target" ||
      { tail -20 "$cache/debootstrap.log" >&2; return 1; }
    mount -t proc proc "$target/proc"; mounted_proc="$target/proc"
  fi
  chroot "$target" apt-get clean >/dev/null 2>&1 || true
  cleanup_tree_mounts
  remove_tree "$root"
  mv "$target" "$root"
  local version
  version=$(chroot "$root" /usr/bin/qemu-system-x86_64 --version | head -1)
  echo "$suite $version" >"$root_stamp"
  log "tree ready in $((SECONDS - started)) s: $version"
}

if tree_ok; then
  log "tree ok: $(cat "$root_stamp") ($root)"
else
  [[ -e $root || -e $root_stamp ]] && log "tree missing or broken: rebuilding"
  rm -f "$root_stamp"
  if ! build_tree; then
    if [[ $suite == trixie && -z ${VPCI_GUEST_SUITE:-} ]]; then
      log "trixie-backports failed; falling back to sid"
      suite=sid
      build_tree || die "could not build the Debian tree (logs in $cache)"
    else
      die "could not build the Debian tree (logs in $cache)"
    fi
  fi
  tree_ok || die "tree built but qemu-system-x86_64 in it has no vfio-user-pci device"
fi

# --- qemu-utils in the tree (qemu-storage-daemon) ----------------------------------------------
# bench/guest-blk.sh's "qsd" variant runs the tree's qemu-storage-daemon (package qemu-utils),
# which must be the very build of the tree's QEMU (same block layer, same version). A tree
# built before qemu-utils was part of it gets the package here, pinned to qemu-system-x86's
# version, without being rebuilt.
# shellcheck disable=SC2016  # ${Version} is dpkg-query's format, not a shell expansion
package_version() { chroot "$root" dpkg-query -W -f='${Version}' "$1" 2>/dev/null || true; }
qemu_utils_ok() {
  [[ -x $root/usr/bin/qemu-storage-daemon ]] || return 1
  [[ -n $(package_version qemu-utils) && $(package_version qemu-utils) == "$(package_version qemu-system-x86)" ]] ||
    return 1
  chroot "$root" /usr/bin/qemu-storage-daemon --version >/dev/null 2>&1
}

if qemu_utils_ok; then
  log "qemu-utils ok: $(package_version qemu-utils)"
else
  qemu_version=$(package_version qemu-system-x86)
  [[ -n $qemu_version ]] || die "the tree has no qemu-system-x86 package"
  log "installing qemu-utils=$qemu_version in the tree"
  mount -t proc proc "$root/proc"; mounted_proc="$root/proc"
  if ! with_progress "$cache/apt-qemu-utils.log" chroot "$root" /usr/bin/env DEBIAN_FRONTEND=noninteractive \
      sh -c "apt-get update -q && apt-get install -y -q --no-install-recommends qemu-utils=$qemu_version"; then
    tail -20 "$cache/apt-qemu-utils.log" >&2; cleanup_tree_mounts
    die "could not install qemu-utils=$qemu_version in the tree (its archive may have moved on:" \
      "remove $root_stamp to rebuild the tree)"
  fi
  chroot "$root" apt-get clean >/dev/null 2>&1 || true
  cleanup_tree_mounts
  qemu_utils_ok || die "qemu-utils installed but qemu-storage-daemon in the tree does not run"
  log "qemu-utils ready: $(package_version qemu-utils)"
fi

# --- guest kernels and modules ----------------------------------------------------------------
# Two kernels, each with its own directory and stamp:
#   kernel/      Debian 12's linux-image-cloud-amd64 (6.1), resolved with the host's apt;
#   kernel-new/  the guest tree's own linux-image-cloud-amd64 (trixie: 6.12 or newer), for
#                what needs Linux >= 6.11 (the admin virtqueue, CONFIG_VIRTIO_PCI_ADMIN_LEGACY);
#                run-guest.sh --kernel new boots it.
# Modules the guest's /init loads, in order; their dependencies come from each module's
# modinfo. Modules built into an image (modules.builtin) are skipped.
guest_modules=(virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci
  rng-core virtio-rng virtio_blk virtio_net)

kernel_ok() {  # kernel_ok DIR
  local dir=$1 stamp="$1.stamp" m
  [[ -f $stamp && -s $dir/vmlinuz && -f $dir/modules.order ]] || return 1
  # The stamp's second line lists the modules it was built for; a new one rebuilds it.
  [[ $(sed -n 2p "$stamp") == "${guest_modules[*]}" ]] || return 1
  while read -r m; do [[ -s $dir/$m ]] || return 1; done <"$dir/modules.order"
}

# download_image_package SOURCE WORKDIR: fetches linux-image-cloud-amd64's real image
# package (the metapackage names it) into WORKDIR and prints its name. SOURCE "host" asks
# the host's apt (Debian 12), "tree" the guest tree's apt (its suite and backports pins).
download_image_package() {
  local source=$1 work=$2 image
  if [[ $source == host ]]; then
    image=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
    [[ -n $image ]] || die "apt-cache cannot resolve linux-image-cloud-amd64 (run apt-get update?)"
    (cd "$work" && apt-get download -q -o APT::Sandbox::User=root "$image" >/dev/null) ||
      die "apt-get download $image failed"
  else
    image=$(chroot "$root" apt-cache depends linux-image-cloud-amd64 |
      awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
    [[ -n $image ]] || die "the guest tree's apt cannot resolve linux-image-cloud-amd64"
    mkdir -p "$root/tmp/kernel-download"
    chroot "$root" sh -c "cd /tmp/kernel-download && apt-get download -q -o APT::Sandbox::User=root $image"       >/dev/null || die "apt-get download $image in the guest tree failed"
    mv "$root"/tmp/kernel-download/*.deb "$work/"
    rm -rf "$root/tmp/kernel-download"
  fi
  echo "$image"
}

build_kernel() {  # build_kernel DIR SOURCE
  local dir=$1 source=$2 stamp="$1.stamp" work="$1.work" started=$SECONDS
  rm -rf "$work" "$dir.new"; mkdir -p "$work" "$dir.new"
  local image
  log "downloading linux-image-cloud-amd64 ($source apt) for $dir"
  image=$(download_image_package "$source" "$work")
  dpkg-deb -x "$work"/*.deb "$work/x"
  # Modules are in /lib/modules (Debian 12) or /usr/lib/modules (merged /usr, trixie).
  local modroot="$work/x/lib/modules" kver
  [[ -d $modroot ]] || modroot="$work/x/usr/lib/modules"
  kver=$(ls "$modroot")
  cp "$work/x/boot/vmlinuz-$kver" "$dir.new/vmlinuz"
  local moddir="$modroot/$kver"
  # modules.dep is generated by depmod at install time, so it is not in the package: read each
  # wanted module's "depends=" string from its .modinfo section instead (NUL-separated).
  # Newer kernels ship modules xz-compressed (.ko.xz): busybox insmod wants them plain.
  declare -A seen=()
  local order=()
  add_module() {
    local name=$1 file dep plain
    [[ -n ${seen[$name]:-} ]] && return 0
    seen[$name]=1
    file=$(find "$moddir/kernel" \( -name "$name.ko*" -o -name "${name//-/_}.ko*" -o -name "${name//_/-}.ko*" \) | head -1)
    if [[ -z $file ]]; then
      # Built into the image (e.g. rng-core on some configs): nothing to load.
      if grep -qE "/${name//[-_]/[-_]}\.ko$" "$moddir/modules.builtin" 2>/dev/null; then return 0; fi
      die "module $name not found in $image"
    fi
    plain="$dir.new/$(basename "${file%.xz}")"
    case $file in
      *.ko.xz) xz -dc "$file" >"$plain" ;;
      *.ko) cp "$file" "$plain" ;;
      *) die "module $file: unknown compression" ;;
    esac
    for dep in $(tr '\0' '\n' <"$plain" | sed -n 's/^depends=//p' | head -1 | tr ',' ' '); do add_module "$dep"; done
    order+=("$(basename "$plain")")
  }
  for m in "${guest_modules[@]}"; do add_module "$m"; done
  printf '%s\n' "${order[@]}" >"$dir.new/modules.order"
  rm -rf "$dir"; mv "$dir.new" "$dir"; rm -rf "$work"
  printf '%s\n%s\n' "$image $kver" "${guest_modules[*]}" >"$stamp"
  log "kernel ready in $((SECONDS - started)) s: $kver, modules: ${order[*]:-(all built in)}"
}

if kernel_ok "$cache/kernel"; then log "kernel ok: $(head -1 "$cache/kernel.stamp")"
else build_kernel "$cache/kernel" host; fi
if kernel_ok "$cache/kernel-new"; then log "new kernel ok: $(head -1 "$cache/kernel-new.stamp")"
else build_kernel "$cache/kernel-new" tree; fi

# --- busybox ---------------------------------------------------------------------------------
busybox_bin=$(command -v busybox || true)
if [[ ! -x $cache/busybox ]] || ! "$cache/busybox" true 2>/dev/null; then
  # The initramfs has no libc: the binary must have no program interpreter.
  [[ -n $busybox_bin ]] && ! readelf -l "$busybox_bin" 2>/dev/null | grep -q 'interpreter' ||
    die "a static busybox is needed: apt-get install busybox-static (scripts/install-deps.sh)"
  cp "$busybox_bin" "$cache/busybox"
  log "busybox copied from $busybox_bin"
else
  log "busybox ok"
fi
log "cache ready: $cache"
