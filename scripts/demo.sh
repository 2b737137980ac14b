#!/usr/bin/env bash
# The main job: a throwaway Linux guest under a real QEMU (>= 10.1, vfio-user-pci)
# driving the default devices of `vpci serve` — a modern virtio-rng and a modern
# virtio-blk on a fresh 64 MiB image — and what the guest sees.
#
# Steps: install the Debian packages, build vpci, prepare the guest cache (a Debian
# trixie tree with QEMU from trixie-backports, Debian 12's cloud kernel, busybox; ~35 s
# the first time, cached in $VPCI_GUEST_CACHE, default /var/cache/vpci-guest), start
# `vpci serve`, boot the guest against its sockets (TCG, a few seconds), print the
# guest's verdicts and lspci's decoding of the config spaces the guest read, then stop
# the server. Needs root (debootstrap, chroot, mount namespaces): run it with sudo.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
  echo "demo: the guest needs root (debootstrap, chroot, mounts); run: sudo $0" >&2
  exit 1
fi

scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release --target vpci
echo "==== guest cache (the first run debootstraps a Debian tree: a minute or two)"
tests/guest/prepare.sh

work=$(mktemp -d /tmp/vpci-demo.XXXXXX)
server_pid=""
# The logs stay (the guest's console log is what a failure message points to); only
# the 64 MiB image goes.
cleanup() {
  if [[ -n $server_pid ]]; then kill -TERM "$server_pid" 2>/dev/null || true; wait "$server_pid" || true; fi
  rm -f "$work/blk0.img"
  echo "demo: logs kept in $work (console.log: the guest's console, serve.log: vpci serve)"
}
trap cleanup EXIT

echo
echo "==== vpci serve (default devices)"
build/release/bin/vpci serve --socket-dir "$work" >"$work/serve.log" 2>&1 &
server_pid=$!
for ((i = 0; i < 100; i++)); do
  grep -q '^vpci serve: ready' "$work/serve.log" && break
  kill -0 "$server_pid" 2>/dev/null || break
  sleep 0.1
done
cat "$work/serve.log"
grep -q '^vpci serve: ready' "$work/serve.log" || { echo "demo: vpci serve did not start" >&2; exit 1; }

echo
echo "==== a throwaway Linux guest under QEMU, attached with vfio-user-pci"
tests/guest/run-guest.sh --socket "$work/rng0.sock" --socket "$work/blk0.sock" \
  --checks enumerate,config,rng,blk --expect 1af4:1044@virtio-pci,1af4:1042@virtio-pci \
  --log "$work/console.log"

echo
echo "==== our devices as the guest read their config space (decoded by lspci -F on the host)"
tests/guest/decode-config.sh "$work/console.log" -nn -vv

echo
echo "==== host side: the guest's blk pattern in the image"
tests/guest/check-pattern.sh "$work/blk0.img"

kill -TERM "$server_pid"
wait "$server_pid"
server_pid=""
tail -2 "$work/serve.log"
