#!/usr/bin/env bash
# vpci's vfio-user client against servers nobody here wrote (issue 18): libvfio-user's
# sample servers, built from the peer source in ../shared/peers (BSD-3; built here in a
# scratch directory, never copied into the repository) with meson and libjson-c-dev.
#   gpio-pci-idio-16  494f:0dc8, one I/O BAR (BAR2, 256 bytes), INTx
#   server            dead:beef, BAR0 and a BAR1 with sparse mmap areas and an fd
# For each: `vpci inspect vfio-user:` decodes IDs, BARs and regions, `vpci dump
# vfio-user:` decodes with the real lspci, and `vpci probe` reports "not virtio" and
# passes. The peer source is outside the repository: without it (a standalone checkout,
# as CI's) the test is skipped (exit 77), saying so.
# Usage: libvfio-user-test.sh VPCI_BINARY
set -euo pipefail
vpci=${1:?usage: libvfio-user-test.sh VPCI_BINARY}
here=$(cd "$(dirname "$0")" && pwd)
peers=${VPCI_PEERS_DIR:-$here/../../../shared/peers}
tarball=$(ls "$peers"/libvfio-user-*.tar.gz 2>/dev/null | head -1 || true)
skip() { echo "libvfio-user-test: skipped: $*" >&2; exit 77; }
[[ -n $tarball ]] || skip "no libvfio-user source in $peers (set VPCI_PEERS_DIR)"
for tool in meson ninja lspci; do command -v "$tool" >/dev/null || skip "$tool missing (scripts/install-deps.sh)"; done
for lib in json-c cmocka; do pkg-config --exists "$lib" || skip "lib$lib-dev missing (scripts/install-deps.sh)"; done

work=$(mktemp -d /tmp/vpci-peer.XXXXXX)
pids=()
failures=0
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "libvfio-user-test: FAIL: $*" >&2; failures=$((failures + 1)); }
# run_vpci WHAT ARGS...: runs vpci, leaves its output (stdout and stderr) in `out`; a
# non-zero exit is a failure that shows what it printed.
run_vpci() {
  local what=$1 status=0
  shift
  out=$("$vpci" "$@" 2>&1) || status=$?
  ((status == 0)) || { fail "$what exited $status"; printf '%s\n' "$out" | sed 's/^/  | /' >&2; }
}
expect() {  # expect TEXT REGEX WHAT
  grep -Eq "$2" <<<"$1" || { fail "$3 (no line matching '$2')"; printf '%s\n' "$1" | sed 's/^/  | /' >&2; }
}

tar -xzf "$tarball" -C "$work"
src=$(ls -d "$work"/libvfio-user* | head -1)
# The `server` sample at this commit registers a 0x3000-byte BAR1, which the library's own
# BAR size check (a power of two) refuses, so it cannot start; the smallest power of two
# that holds its sparse areas (0x0-0x1000, 0x2000-0x3000) makes it run unchanged otherwise.
sed -i 's/const size_t bar1_size = 0x3000;/const size_t bar1_size = 0x4000;/' "$src/samples/server.c"
meson setup "$work/build" "$src" >"$work/meson.log" 2>&1 || { cat "$work/meson.log" >&2; exit 1; }
ninja -C "$work/build" samples/gpio-pci-idio-16 samples/server >"$work/ninja.log" 2>&1 ||
  { tail -30 "$work/ninja.log" >&2; exit 1; }

# start SAMPLE: a fresh sample server on a socket of its own (samples serve one client).
n=0
start() {
  n=$((n + 1))
  sock=$work/$1-$n.sock
  "$work/build/samples/$1" "$sock" >"$work/$1-$n.log" 2>&1 &
  pids+=($!)
  for ((i = 0; i < 100; i++)); do [[ -S $sock ]] && return 0; sleep 0.05; done
  fail "$1 did not create its socket"; cat "$work/$1-$n.log" >&2; return 1
}

# --- gpio-pci-idio-16 ---------------------------------------------------------------------
start gpio-pci-idio-16
run_vpci "inspect gpio-pci-idio-16" inspect "vfio-user:$sock"
expect "$out" '^vfio-user server .*: protocol 0\.[0-9]+, max_msg_fds [0-9]+' "gpio: the server's version and capabilities"
expect "$out" 'region 2 \(BAR2\): 0x100 bytes, read,write' "gpio: BAR2 is a 256-byte region"
expect "$out" 'irq 0 \(INTx\): 1 vector' "gpio: one INTx vector"
expect "$out" '\[494f:0dc8\] rev 00' "gpio: IDs 494f:0dc8"
expect "$out" 'BAR2: 0x00000001  I/O at 0x0, size 256 bytes' "gpio: BAR2 decoded as I/O, 256 bytes"
start gpio-pci-idio-16
run_vpci "dump gpio-pci-idio-16" dump "vfio-user:$sock" -o "$work/gpio.lspci"
decoded=$(lspci -O hwdb.disable=1 -F "$work/gpio.lspci" -vv 2>/dev/null)
expect "$decoded" 'ACCES I/O Products, Inc\. PCI-IDIO-16' "gpio: lspci -F names the device"
expect "$decoded" 'Region 2: I/O ports at <unassigned>' "gpio: lspci -F shows the I/O BAR"
start gpio-pci-idio-16
run_vpci "probe gpio-pci-idio-16 (a non-virtio device is not a failure)" probe "vfio-user:$sock"
expect "$out" '494f:0dc8, not virtio' "gpio: probe says not virtio"
expect "$out" 'result: pass' "gpio: probe passes"
echo "libvfio-user-test: gpio-pci-idio-16: inspect, dump (lspci -F) and probe ok"

# --- server --------------------------------------------------------------------------------
start server
run_vpci "inspect --json server" inspect --json "vfio-user:$sock"
expect "$out" '"vendor_id": 57005' "server: vendor dead"
expect "$out" '"device_id": 48879' "server: device beef"
start server
run_vpci "inspect server" inspect "vfio-user:$sock"
expect "$out" 'region 0 \(BAR0\): 0x8 bytes, read,write' "server: BAR0 of 8 bytes"
expect "$out" 'region 1 \(BAR1\): 0x4000 bytes, read,write,mmap,caps, fd, sparse mmap 0x0\+0x1000, sparse mmap 0x2000\+0x1000' \
  "server: BAR1 mmappable with its fd and two sparse areas"
expect "$out" 'subsystem cafe:babe' "server: subsystem cafe:babe"
start server
run_vpci "dump server" dump "vfio-user:$sock" -o "$work/server.lspci"
decoded=$(lspci -O hwdb.disable=1 -F "$work/server.lspci" -vv 2>/dev/null)
expect "$decoded" 'Device dead:beef|Device beef' "server: lspci -F decodes the device"
start server
run_vpci "probe server" probe --json "vfio-user:$sock"
expect "$out" '"type": "not virtio"' "server: probe says not virtio"
echo "libvfio-user-test: server: inspect (text, JSON), dump (lspci -F) and probe ok"

echo "libvfio-user-test: $failures failure(s)"
((failures == 0))
