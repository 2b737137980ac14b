#!/usr/bin/env bash
# Boots the vpci test guest under the cached QEMU (prepare.sh) with one vfio-user-pci
# device per --socket, and reports the guest's verdict lines.
#
#   run-guest.sh --socket S1 [--socket S2 ...] [--checks enumerate,config,rng,blk]
#                [--expect 1af4:1044@virtio-pci,...] [--append "virtio_pci.force_legacy=1"]
#                [--timeout 300] [--memory 512] [--smp 1] [--plain-memory] [--log FILE] [--verbose]
#                [--qemu-arg ARG ...] [--bind DIR ...] [--kernel old|new]
#
# --kernel new boots the guest tree's own kernel (prepare.sh: trixie's cloud kernel,
# Linux >= 6.11) instead of Debian 12's 6.1.
# Guest RAM is a shared memfd (memory-backend-memfd,share=on: DMA_MAP carries an fd)
# unless --plain-memory gives QEMU's default, unshared RAM (DMA_MAP without an fd: the
# device reaches guest memory only through DMA_READ/DMA_WRITE messages).
# QEMU runs chrooted in the cached Debian tree (its own QEMU >= 10.1 with vfio-user-pci)
# under TCG, in a private mount namespace: /dev, /proc, /sys and each socket's directory
# are bind-mounted into the tree there, so every mount disappears with the run whatever
# happens; --bind DIR mounts DIR at the same absolute path inside the tree (e.g. the
# directory of an image given to QEMU's own -drive through --qemu-arg). Prints the
# guest's VPCI-* lines as they arrive and a VPCI-TIMING line.
# Exit status: 0 every check passed, 1 some check failed, 2 no verdict (boot failure,
# timeout, QEMU error) — then the console log is printed.
set -euo pipefail

cache=${VPCI_GUEST_CACHE:-/var/cache/vpci-guest}
here=$(cd "$(dirname "$0")" && pwd)
die() { printf 'run-guest: error: %s\n' "$*" >&2; exit 2; }

sockets=() qemu_args=() binds=() append="" checks="enumerate,config" expect="" timeout=300
memory=512 smp=1 log="" verbose=0 plain_memory=0 kernel=kernel
while (($#)); do
  case $1 in
    --socket) sockets+=("${2:?}"); shift 2 ;;
    --append) append="$append ${2?}"; shift 2 ;;
    --checks) checks=${2:?}; shift 2 ;;
    --expect) expect=${2?}; shift 2 ;;
    --timeout) timeout=${2:?}; shift 2 ;;
    --memory) memory=${2:?}; shift 2 ;;
    --smp) smp=${2:?}; shift 2 ;;
    --plain-memory) plain_memory=1; shift ;;
    --log) log=${2:?}; shift 2 ;;
    --verbose) verbose=1; shift ;;
    --qemu-arg) qemu_args+=("${2:?}"); shift 2 ;;
    --bind) binds+=("${2:?}"); shift 2 ;;
    --kernel)
      case ${2:-} in
        old) kernel="kernel" ;;
        new) kernel="kernel-new" ;;
        *) die "--kernel old|new, not '${2:-}'" ;;
      esac
      shift 2 ;;
    -h|--help) sed -n '2,24s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done

[[ $(id -u) -eq 0 ]] || die "must run as root (chroot, mounts)"
root="$cache/root"
[[ -f $cache/root.stamp && -s $cache/$kernel/vmlinuz ]] ||
  die "cache $cache is not prepared: run tests/guest/prepare.sh"

# Re-enter in a private mount namespace (see the header comment).
if [[ -z ${VPCI_GUEST_IN_NAMESPACE:-} ]]; then
  restore_args=()
  for s in "${sockets[@]}"; do restore_args+=(--socket "$s"); done
  for a in "${qemu_args[@]}"; do restore_args+=(--qemu-arg "$a"); done
  for b in "${binds[@]}"; do restore_args+=(--bind "$b"); done
  ((verbose)) && restore_args+=(--verbose)
  ((plain_memory)) && restore_args+=(--plain-memory)
  [[ $kernel == kernel-new ]] && restore_args+=(--kernel new)
  [[ -n $log ]] && restore_args+=(--log "$log")
  VPCI_GUEST_IN_NAMESPACE=1 exec unshare --mount --propagation private "$0" "${restore_args[@]}" \
    --checks "$checks" --expect "$expect" --append "$append" --timeout "$timeout" --memory "$memory" --smp "$smp"
fi

work=$(mktemp -d /tmp/vpci-guest.XXXXXX)
mounts=()
cleanup() {
  local i
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount -l "${mounts[i]}" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
bind() {  # bind SOURCE TARGET-INSIDE-ROOT
  mkdir -p "$root$2"
  mount --rbind "$1" "$root$2"
  mounts+=("$root$2")
}
bind /dev /dev
bind /proc /proc
bind /sys /sys
for b in "${binds[@]}"; do
  [[ -d $b ]] || die "--bind $b: not a directory"
  b=$(realpath "$b")
  bind "$b" "$b"
done

# Kernel and initramfs: built fresh each run (it takes well under a second) so edits to
# the guest scripts always take effect.
cp "$cache/$kernel/vmlinuz" "$work/vmlinuz"
"$here/build-initramfs.sh" "$work/initrd.gz" "$kernel"
bind "$work" /run/vpci-guest/work

devices=()
for i in "${!sockets[@]}"; do
  s=${sockets[i]}
  for _ in $(seq 50); do [[ -S $s ]] && break; sleep 0.2; done
  [[ -S $s ]] || die "socket $s does not exist (is the server running?)"
  s=$(realpath "$s")
  bind "$(dirname "$s")" "/run/vpci-guest/sock$i"
  devices+=(-device "{\"driver\":\"vfio-user-pci\",\"socket\":{\"path\":\"/run/vpci-guest/sock$i/$(basename "$s")\",\"type\":\"unix\"}}")
done

console=${log:-$work/console.log}
: >"$console"
kernel_args="console=ttyS0 panic=-1 loglevel=4 vpci.checks=$checks"
[[ -n $expect ]] && kernel_args="$kernel_args vpci.expect=$expect"
kernel_args="$kernel_args$append"
echo "run-guest: $(cat "$cache/root.stamp"), ${#sockets[@]} vfio-user device(s), append: $kernel_args" >&2

memory_args=(-machine q35,memory-backend=mem -object "memory-backend-memfd,id=mem,size=${memory}M,share=on")
((plain_memory)) && memory_args=(-machine q35)
echo "run-guest: guest RAM ${memory} MiB, $( ((plain_memory)) && echo "plain (not shared)" || echo "shared memfd")" >&2

started=$(date +%s.%N)
set +e
timeout --kill-after=10 "$timeout" chroot "$root" /usr/bin/qemu-system-x86_64 \
  "${memory_args[@]}" -accel tcg -m "${memory}M" -smp "$smp" \
  -nographic -no-reboot -nic none -vga none \
  -kernel /run/vpci-guest/work/vmlinuz -initrd /run/vpci-guest/work/initrd.gz \
  -append "$kernel_args" "${devices[@]}" "${qemu_args[@]}" </dev/null 2>&1 |
  tee "$console" | if ((verbose)); then cat; else grep --line-buffered '^VPCI-' | grep --line-buffered -v '^VPCI-CONFIG'; fi
qemu_status=${PIPESTATUS[0]}
set -e
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", a - b }'; }
wall=$(elapsed "$(date +%s.%N)" "$started")
tr -d '\r' <"$console" >"$console.clean" && mv "$console.clean" "$console"

uptime_of() { sed -n "s/^$1 uptime=\([0-9.]*\).*/\1/p" "$console" | head -1; }
boot=$(uptime_of VPCI-BOOT) checks_start=$(uptime_of VPCI-CHECKS-START) done_at=$(uptime_of VPCI-DONE)
checks_time=""
[[ -n $checks_start && -n $done_at ]] && checks_time=$(elapsed "$done_at" "$checks_start")
echo "VPCI-TIMING wall=${wall}s guest_boot_to_init=${boot:-?}s modules_loaded_at=${checks_start:-?}s" \
  "checks=${checks_time:-?}s qemu_status=$qemu_status"

fails=$(grep -c '^VPCI-RESULT [^ ]* FAIL' "$console" || true)
passes=$(grep -c '^VPCI-RESULT [^ ]* PASS' "$console" || true)
if [[ -z $done_at ]]; then
  ((qemu_status == 124)) && echo "run-guest: timed out after ${timeout}s" >&2
  echo "run-guest: no verdict (qemu exit $qemu_status); console log:" >&2
  sed 's/^/  | /' "$console" >&2
  exit 2
fi
echo "run-guest: $passes passed, $fails failed (console log: ${log:-not kept})" >&2
((fails == 0)) || exit 1
