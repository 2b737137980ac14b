#!/usr/bin/env bash
# Validates the harness itself against QEMU's own virtio devices (no vpci code involved),
# so a failing vpci guest test points at vpci, not at the guest scripts: a modern
# virtio-rng and a modern virtio-blk, then a transitional virtio-blk bound through the
# legacy interface (virtio_pci.force_legacy=1). Exit 77 when VPCI_SKIP_GUEST=1.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [[ ${VPCI_SKIP_GUEST:-0} == 1 ]]; then echo "selftest: SKIPPED because VPCI_SKIP_GUEST=1"; exit 77; fi
"$here/prepare.sh"
# /dev is bind-mounted into QEMU's chroot, so an image in /dev/shm is visible to both.
image=$(mktemp /dev/shm/vpci-selftest.XXXXXX)
truncate -s 16M "$image"
drive=(--qemu-arg -drive --qemu-arg "if=none,id=d0,format=raw,file=$image")

log=$(mktemp)
trap 'rm -f "$image" "$log"' EXIT
verdict() {  # verdict REGEX: the last run's console must have a line matching it
  grep -Eq "$1" "$log" || { echo "selftest: FAIL: no line matching '$1'" >&2; exit 1; }
}
"$here/run-guest.sh" --log "$log" --checks enumerate,rng,blk --timeout 300 \
  --expect 1af4:1044@virtio-pci,1af4:1042@virtio-pci \
  --qemu-arg -device --qemu-arg virtio-rng-pci,disable-legacy=on \
  "${drive[@]}" --qemu-arg -device --qemu-arg virtio-blk-pci,drive=d0,disable-legacy=on
"$here/check-pattern.sh" "$image"
verdict '^VPCI-RESULT rng-[^ ]* PASS .*kind=msix iface=modern'
verdict '^VPCI-RESULT blk-[^ ]* PASS .*kind=msix iface=modern'

truncate -s 0 "$image"; truncate -s 16M "$image"
"$here/run-guest.sh" --log "$log" --checks enumerate,blk --timeout 300 --append virtio_pci.force_legacy=1 \
  --append vpci.blk_tag=legacy --expect 1af4:1001@virtio-pci \
  "${drive[@]}" --qemu-arg -device --qemu-arg virtio-blk-pci,drive=d0,disable-legacy=off
"$here/check-pattern.sh" "$image" 1048576 legacy
verdict '^VPCI-RESULT blk-[^ ]* PASS .*iface=legacy'
echo "selftest: PASS"
