#!/usr/bin/env bash
# CTest driver of the real-guest test of `vpci serve` (label "guest", issue 6): one
# `vpci serve` process runs seven devices over every transport, and an unmodified Linux
# guest under QEMU >= 10.1 (vfio-user-pci) drives them. Three boots against the same
# server process:
#   1. the guest's default (modern) interface, two vCPUs: modern virtio-rng gives
#      /dev/hwrng bytes with MSI-X interrupts counted; modern virtio-blk (two request
#      queues, VIRTIO_BLK_F_MQ: the guest uses both; polled for 200 us after each
#      request with the guest's notifications suppressed, and interrupts coalesced: up to
#      8 completions or 100 us share one, issue 19) and transitional virtio-blk (on the
#      thread-pool I/O engine instead of io_uring; notify = "mapped": QEMU maps its
#      doorbell page, so the guest's kicks never become messages and the device polls)
#      write, read back and compare a pattern; the legacy-only blk does the same through the legacy
#      interface; the MMR device is present with its capabilities; after power-off the
#      host finds each pattern in its backing file.
#   2. virtio_pci.force_legacy=1: the transitional devices and the legacy-over-mmr device
#      bind through the legacy interface and pass the same checks (new pattern tag, so
#      the host knows boot 2 wrote it).
#   3. QEMU's default guest RAM (not shared: DMA_MAP without fds), modern interface:
#      every ring access and buffer copy goes through DMA_READ/DMA_WRITE messages; rng
#      bytes and blk patterns must work exactly as in boot 1, and the server says once
#      per device that memory is not shared; blk1's doorbells are messages again (a
#      device cannot poll through messages, so the page is not offered for mapping).
# The server's --trace shows that blk1's doorbells never arrive as messages in boot 1.
# Finally SIGTERM: the server must exit 0 and remove its sockets.
# VPCI_SKIP_GUEST=1 skips it (exit 77); anything else that keeps it from running fails.
# Usage: serve-test.sh VPCI_BINARY
set -euo pipefail
vpci_bin=${1:?usage: serve-test.sh VPCI_BINARY}
here=$(cd "$(dirname "$0")" && pwd)
test_name=serve-test
# shellcheck source=test-lib.sh
source "$here/test-lib.sh"

started=$SECONDS
"$here/prepare.sh"
echo "serve-test: cache ready in $((SECONDS - started)) s"

work=$(mktemp -d /tmp/vpci-serve-test.XXXXXX)
server_pid=""
cleanup() {
  if [[ -n $server_pid ]]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  if ((failures == 0 && ${KEEP:-0} == 0)); then rm -rf "$work"; else echo "serve-test: artifacts kept in $work" >&2; fi
}
trap cleanup EXIT

for image in modern transitional mmr lom legacy; do truncate -s 64M "$work/$image.img"; done
cat >"$work/serve.toml" <<'EOF'
socket_dir = "sockets"
[[device]]
name = "rng0"
kind = "virtio-rng"
transport = "modern"
[[device]]
name = "blk0"
kind = "virtio-blk"
transport = "modern"
path = "modern.img"
queues = 2
poll_us = 200
interrupt_delay_us = 100
interrupt_batch = 8
[[device]]
name = "blk1"
kind = "virtio-blk"
transport = "transitional"
path = "transitional.img"
io = "threads"
notify = "mapped"
poll_us = 100
[[device]]
name = "rng1"
kind = "virtio-rng"
transport = "transitional"
[[device]]
name = "mmr0"
kind = "virtio-blk"
transport = "mmr"
path = "mmr.img"
[[device]]
name = "lom0"
kind = "virtio-blk"
transport = "legacy-over-mmr"
path = "lom.img"
[[device]]
name = "leg0"
kind = "virtio-blk"
transport = "legacy"
path = "legacy.img"
EOF
names=(rng0 blk0 blk1 rng1 mmr0 lom0 leg0)
"$vpci_bin" serve "$work/serve.toml" --stats --trace "$work/trace.log" >"$work/serve.log" 2>&1 &
server_pid=$!
for ((i = 0; i < 100; i++)); do
  grep -q '^vpci serve: ready' "$work/serve.log" && break
  kill -0 "$server_pid" 2>/dev/null || break
  sleep 0.1
done
if ! grep -q '^vpci serve: ready (7 device(s))' "$work/serve.log"; then
  fail "vpci serve did not become ready"
  cat "$work/serve.log" >&2
  exit 1
fi
grep -q 'blk0: virtio-blk, modern, .*, 2 queues' "$work/serve.log" || fail "serve: blk0 does not say it has 2 queues"
grep -q 'blk1: virtio-blk, transitional, .*, io threads' "$work/serve.log" || fail "serve: blk1 does not say it uses the thread pool"
grep -q 'blk0: virtio-blk, modern, .*, polls 200 us' "$work/serve.log" || fail "serve: blk0 does not say it polls"
grep -q 'blk0: virtio-blk, modern, .*, interrupts coalesced up to 100 us or 8 buffers' "$work/serve.log" ||
  fail "serve: blk0 does not say it coalesces interrupts"
grep -q 'blk1: virtio-blk, transitional, .*, doorbells mapped' "$work/serve.log" || fail "serve: blk1 does not say its doorbells are mapped"
sockets=()
for name in "${names[@]}"; do sockets+=(--socket "$work/sockets/$name.sock"); done
# Guest PCI addresses follow the -device order: 00:01.0 rng0 ... 00:06.0 lom0, 00:07.0 leg0.

# What vpci's own client reads of each device before the guest runs (issue 18, read-only):
# compared below with the config space the guest read through QEMU.
for name in "${names[@]}"; do
  "$vpci_bin" dump "vfio-user:$work/sockets/$name.sock" -o "$work/host-$name.lspci" ||
    fail "vpci dump vfio-user: of $name failed"
done

# The identity and capability list lspci -F decodes from a dump, without the address:
# the device line, the subsystem, and each capability's offset and kind (its first word:
# QEMU turns a PCIe endpoint on its root bus into a root-complex integrated one, and the
# guest's own settings — BAR addresses, Command, MSI-X Enable — differ by design).
identity_and_capabilities() {
  lspci -O hwdb.disable=1 -F "$1" -nn -vv 2>/dev/null |
    sed -n -e '1s/^[0-9a-f:.]* //p' -e 's/^\t\(Subsystem: .*\)/\1/p' \
      -e 's/^\t\(Capabilities: \[[0-9a-f]*\( v[0-9]*\)\{0,1\}\] [A-Za-z-]*\).*/\1/p'
}

boot() {  # boot N EXTRA-APPEND EXPECT [RUN-GUEST-ARG...]
  local n=$1 append=$2 expect=$3 status=0
  shift 3
  "$here/run-guest.sh" "${sockets[@]}" --checks enumerate,config,rng,blk --expect "$expect" \
    --append "vpci.blk_tag=boot$n $append" --timeout 300 --log "$work/console$n.log" "$@" || status=$?
  if ((status != 0)); then
    fail "boot $n: run-guest.sh exited $status"
    sed 's/^/  | /' "$work/console$n.log" >&2
    return 1
  fi
}

# doorbells DEVICE FROM: the doorbell writes (REGION_WRITE into BAR4's notification area
# at 0x3000) that reached DEVICE as messages in the trace from line FROM on.
doorbells() {
  tail -n "+$2" "$work/trace.log" | grep -c "^\[$1\] <- #[0-9]* REGION_WRITE region 4 offset 0x3[0-9a-f]\{3\} " || true
}

# ---- boot 1: modern interface --------------------------------------------------------
trace_from=$(($(wc -l <"$work/trace.log") + 1))
if boot 1 "" "1af4:1044@virtio-pci,1af4:1042@virtio-pci,1af4:1001@virtio-pci,1af4:1005@virtio-pci,1af4:10fa" --smp 2; then
  log=$work/console1.log
  expect_line "$log" '^VPCI-RESULT rng-0000:00:01.0 PASS .*kind=msix iface=modern' "boot 1: modern rng with MSI-X"
  expect_line "$log" '^VPCI-RESULT blk-0000:00:02.0 PASS .*iface=modern queues=2' "boot 1: modern blk with two queues"
  expect_line "$log" '^VPCI-RESULT blk-0000:00:03.0 PASS .*iface=modern' "boot 1: transitional blk, modern interface"
  expect_line "$log" '^VPCI-RESULT rng-0000:00:04.0 PASS .*iface=modern' "boot 1: transitional rng, modern interface"
  expect_line "$log" '^VPCI-RESULT blk-0000:00:06.0 PASS' "boot 1: legacy-over-mmr blk (modern capabilities of the MMR device behind the mapper)"
  expect_line "$log" '^VPCI-RESULT blk-0000:00:07.0 PASS .*iface=legacy' "boot 1: legacy-only blk (no modern capabilities: the legacy interface)"
  expect_line "$log" '^VPCI-DEVICE 0000:00:05.0 id=1af4:10fa rev=0x00 .*subsys=0x1af4:0x0002 driver=none' \
    "boot 1: MMR device present, no stock driver binds it"
  expect_line "$log" '^VPCI-DEVICE 0000:00:06.0 id=1af4:1001 rev=0x00 .*subsys=0x1af4:0x0002 driver=virtio-pci' \
    "boot 1: legacy-over-mmr device bound"
  decoded=$("$here/decode-config.sh" "$log" -nn -vv) || fail "boot 1: lspci -F failed"
  mmr=$(sed -n '/\[1af4:10fa\]/,/^$/p' <<<"$decoded")
  grep -q 'Capabilities: \[100 v1\] Vendor Specific Information: ID=000a Rev=1' <<<"$mmr" ||
    fail "boot 1: the MMR device's vendor-specific extended capability (cfg_type 10) is missing: $mmr"
  grep -q 'Region 4: Memory at .* (64-bit' <<<"$mmr" || fail "boot 1: MMR memory BAR missing: $mmr"
  grep -q 'VirtIO: CommonCfg' <<<"$decoded" || fail "boot 1: lspci shows no virtio capabilities"
  # vpci dump vfio-user: decodes like the guest's view of each device (see above).
  for i in "${!names[@]}"; do
    addr=$(printf '0000:00:%02x.0' $((i + 1)))
    grep "^VPCI-CONFIG $addr " "$log" | awk '{ if (!s) { print substr($2, 6) " guest"; s = 1 }
      line = $3; for (j = 4; j <= NF; j++) line = line " " $j; print line }' >"$work/guest-${names[i]}.lspci"
    host=$(identity_and_capabilities "$work/host-${names[i]}.lspci")
    guest=$(identity_and_capabilities "$work/guest-${names[i]}.lspci")
    if [[ -z $host || $host != "$guest" ]]; then
      fail "boot 1: ${names[i]}: vpci dump vfio-user: and the guest's config space decode differently"
      diff <(echo "$host") <(echo "$guest") | sed 's/^/  | /' >&2 || true
    fi
  done
  echo "serve-test: boot 1: vpci dump vfio-user: decodes like the guest's view for ${#names[@]} devices"
  for image in modern transitional legacy; do
    "$here/check-pattern.sh" "$work/$image.img" 1048576 boot1 || fail "boot 1: pattern not in $image.img"
  done
  # blk1's doorbell page is mapped into the guest (notify = "mapped"): its kicks are
  # memory writes the server never receives; blk0's still arrive as messages.
  blk0_doorbells=$(doorbells blk0 "$trace_from") blk1_doorbells=$(doorbells blk1 "$trace_from")
  ((blk0_doorbells > 0)) || fail "boot 1: no doorbell message from blk0 in the trace (the check cannot see doorbells)"
  ((blk1_doorbells == 0)) || fail "boot 1: blk1's doorbells are mapped, yet $blk1_doorbells arrived as messages"
  echo "serve-test: boot 1: doorbell messages: blk0 $blk0_doorbells, blk1 (mapped) $blk1_doorbells"
fi

# ---- boot 2: legacy interface ---------------------------------------------------------
if boot 2 "virtio_pci.force_legacy=1" "1af4:1001@virtio-pci,1af4:1005@virtio-pci"; then
  log=$work/console2.log
  expect_line "$log" '^VPCI-RESULT blk-0000:00:03.0 PASS .*iface=legacy' "boot 2: transitional blk through legacy I/O"
  expect_line "$log" '^VPCI-RESULT rng-0000:00:04.0 PASS .*iface=legacy' "boot 2: transitional rng through legacy I/O"
  expect_line "$log" '^VPCI-RESULT blk-0000:00:06.0 PASS .*iface=legacy' "boot 2: legacy-over-mmr blk through legacy I/O"
  expect_line "$log" '^VPCI-RESULT blk-0000:00:07.0 PASS .*iface=legacy' "boot 2: legacy-only blk"
  for image in transitional lom legacy; do
    "$here/check-pattern.sh" "$work/$image.img" 1048576 boot2 || fail "boot 2: pattern not in $image.img"
  done
fi

# ---- boot 3: plain (unshared) guest RAM ------------------------------------------------
notices_before=$(grep -c 'is not shared with vpci' "$work/serve.log" || true)
trace_from=$(($(wc -l <"$work/trace.log") + 1))
if boot 3 "" "1af4:1044@virtio-pci,1af4:1042@virtio-pci,1af4:1001@virtio-pci,1af4:1005@virtio-pci" --plain-memory; then
  log=$work/console3.log
  expect_line "$log" '^VPCI-RESULT rng-0000:00:01.0 PASS .*kind=msix iface=modern' "boot 3: rng over message DMA"
  expect_line "$log" '^VPCI-RESULT blk-0000:00:02.0 PASS .*iface=modern' "boot 3: modern blk over message DMA"
  expect_line "$log" '^VPCI-RESULT blk-0000:00:03.0 PASS .*iface=modern' "boot 3: transitional blk over message DMA"
  expect_line "$log" '^VPCI-RESULT blk-0000:00:06.0 PASS' "boot 3: legacy-over-mmr blk over message DMA"
  expect_line "$log" '^VPCI-RESULT blk-0000:00:07.0 PASS .*iface=legacy' "boot 3: legacy-only blk over message DMA"
  for image in modern transitional lom legacy; do
    "$here/check-pattern.sh" "$work/$image.img" 1048576 boot3 || fail "boot 3: pattern not in $image.img"
  done
  # Without shared RAM the device cannot poll, so blk1's doorbell page is not offered for
  # mapping and its kicks come as messages again.
  blk1_doorbells=$(doorbells blk1 "$trace_from")
  ((blk1_doorbells > 0)) || fail "boot 3: blk1 (plain RAM) sent no doorbell message: were its doorbells mapped?"
fi
notices=$(($(grep -c 'is not shared with vpci' "$work/serve.log" || true) - notices_before))
# rng0, blk0, blk1, rng1, lom0 and leg0 touch guest memory; mmr0 has no driver. None
# before boot 3.
((notices_before == 0 && notices == 6)) ||
  fail "expected one unshared-memory notice per active device in boot 3 only (before: $notices_before, boot 3: $notices)"

kill -TERM "$server_pid"
status=0
wait "$server_pid" || status=$?
server_pid=""
((status == 0)) || fail "vpci serve exited $status on SIGTERM"
grep -q '^vpci serve: stopped' "$work/serve.log" || fail "vpci serve did not report a clean stop"
for name in "${names[@]}"; do
  [[ ! -e $work/sockets/$name.sock ]] || fail "socket $name.sock left behind"
done
sed -n 's/^VPCI-TIMING/serve-test: boot timing:/p' "$work"/console*.log
echo "serve-test: total $((SECONDS - started)) s, $failures failure(s)"
((failures == 0))
