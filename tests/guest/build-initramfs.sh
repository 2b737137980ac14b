#!/usr/bin/env bash
# Builds the guest initramfs (newc cpio, gzip) from the prepared cache (prepare.sh):
# busybox-static, the kernel's virtio modules, tests/guest/initramfs/{init,checks.sh} and
# blkperf (blkperf.c, compiled static with the host's gcc).
# Usage: build-initramfs.sh OUTPUT [KERNEL]   (KERNEL: the cache's kernel directory,
# "kernel" (default) or "kernel-new"; cache: $VPCI_GUEST_CACHE, default /var/cache/vpci-guest)
set -euo pipefail
out=${1:?usage: build-initramfs.sh OUTPUT [KERNEL]}
kernel=${2:-kernel}
cache=${VPCI_GUEST_CACHE:-/var/cache/vpci-guest}
here=$(cd "$(dirname "$0")" && pwd)
[[ -x $cache/busybox && -f $cache/$kernel/modules.order ]] ||
  { echo "build-initramfs: cache $cache is not prepared (run tests/guest/prepare.sh)" >&2; exit 1; }

staging=$(mktemp -d)
trap 'rm -rf "$staging"' EXIT
mkdir -p "$staging"/{bin,dev,proc,sys,tmp,lib/modules}
cp "$cache/busybox" "$staging/bin/busybox"
ln -s busybox "$staging/bin/sh"
cp "$cache/$kernel/modules.order" "$staging/lib/modules/"
# A kernel with every module built in has none to copy.
find "$cache/$kernel" -maxdepth 1 -name "*.ko" -exec cp -t "$staging/lib/modules/" {} +
install -m 0755 "$here/initramfs/init" "$staging/init"
install -m 0755 "$here/initramfs/checks.sh" "$staging/checks.sh"
# The "blkperf" check's timing tool (blkperf.c): static, so it needs no libc in the guest.
if command -v gcc >/dev/null; then
  gcc -static -O2 -pthread -o "$staging/bin/blkperf" "$here/blkperf.c"
else
  echo "build-initramfs: no gcc: the guest has no blkperf tool (the blkperf check fails)" >&2
fi
# The kernel needs /dev/console before /init runs to give it stdout.
mknod -m 600 "$staging/dev/console" c 5 1
(cd "$staging" && find . -print0 | cpio --null -o -H newc --quiet) | gzip -1 >"$out"
