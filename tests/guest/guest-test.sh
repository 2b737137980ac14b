#!/usr/bin/env bash
# CTest driver of the real-guest test (label "guest", issue 6): prepares the cache,
# serves two ScratchFunctions (server/scratch_function.h) from one vpci_scratch_server
# process, boots the guest twice against them — first with shared guest RAM (DMA_MAP
# with fds), then with QEMU's default unshared RAM (DMA through DMA_READ/DMA_WRITE
# messages); the second boot also proves disconnect + reconnect on the same sockets — and
# asserts the guest's verdict lines, the host-side decode of the dumped config space and
# the server's own counters. VPCI_SKIP_GUEST=1 skips it (exit 77); anything else that
# keeps it from running is a failure.
# Usage: guest-test.sh SCRATCH_SERVER_BINARY
set -euo pipefail
server_bin=${1:?usage: guest-test.sh SCRATCH_SERVER_BINARY}
here=$(cd "$(dirname "$0")" && pwd)
test_name=guest-test
# shellcheck source=test-lib.sh
source "$here/test-lib.sh"

started=$SECONDS
"$here/prepare.sh"
echo "guest-test: cache ready in $((SECONDS - started)) s"

work=$(mktemp -d /tmp/vpci-guest-test.XXXXXX)
server_pid=""
cleanup() {
  if [[ -n $server_pid ]]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  if ((failures == 0)); then rm -rf "$work"; else echo "guest-test: artifacts kept in $work" >&2; fi
}
trap cleanup EXIT

"$server_bin" --socket "$work/scratch0.sock" --socket "$work/scratch1.sock" \
  --trace "$work/trace.log" >"$work/summary.txt" 2>"$work/server.err" &
server_pid=$!

for boot in 1 2; do
  status=0
  memory_mode=()
  ((boot == 2)) && memory_mode=(--plain-memory)
  "$here/run-guest.sh" --socket "$work/scratch0.sock" --socket "$work/scratch1.sock" \
    --checks enumerate,config,scratch --expect 1b36:0005 --timeout 300 "${memory_mode[@]}" \
    --log "$work/console$boot.log" || status=$?
  log="$work/console$boot.log"
  if ((status != 0)); then
    fail "boot $boot: run-guest.sh exited $status"
    sed 's/^/  | /' "$log" >&2
    continue
  fi
  [[ $(grep -c '^VPCI-RESULT enumerate-1b36:0005 PASS' "$log") -eq 2 ]] ||
    fail "boot $boot: expected two enumerated 1b36:0005 functions"
  [[ $(grep -c '^VPCI-RESULT scratch-[^ ]* PASS .*dma=ok' "$log") -eq 2 ]] ||
    fail "boot $boot: expected BAR and DMA to work on both functions"
  [[ $(grep -c '^VPCI-DEVICE [^ ]* id=1b36:0005 rev=0x01 class=0xff0000 subsys=0x1b36:0x1100' "$log") -eq 2 ]] ||
    fail "boot $boot: identity of the ScratchFunctions"
  decoded=$("$here/decode-config.sh" "$log" -nn -vv) || fail "boot $boot: lspci -F failed"
  grep -q '\[1b36:0005\] (rev 01)' <<<"$decoded" || fail "boot $boot: lspci -F does not decode the device: $decoded"
  grep -q 'Region 0: Memory at [0-9a-f]* (64-bit, non-prefetchable)' <<<"$decoded" ||
    fail "boot $boot: lspci -F shows no 64-bit BAR0: $decoded"
done

kill "$server_pid"
wait "$server_pid" || fail "server exited with status $?"
server_pid=""
cat "$work/summary.txt"
summary() { grep "^SCRATCH-SUMMARY $work/$1.sock " "$work/summary.txt" || true; }
value() { sed -n "s/.* $1=\([0-9]*\).*/\1/p" <<<"$2"; }
for sock in scratch0 scratch1; do
  line=$(summary $sock)
  [[ -n $line ]] || { fail "no server summary for $sock"; continue; }
  [[ $(value connections "$line") -eq 2 ]] || fail "$sock: expected 2 connections (boot + reconnect): $line"
  [[ $(value protocol_errors "$line") -eq 0 ]] || fail "$sock: protocol errors: $line (trace: $work/trace.log)"
done
for sock in scratch0 scratch1; do
  line=$(summary $sock)
  # Doorbell + two BAR reads per boot: the first trigger, then re-triggers after QEMU's
  # INTx unmasks while the level was still asserted.
  [[ $(value interrupts "$line") -ge 4 ]] || fail "$sock: INTx automask/unmask cycle not seen: $line"
  [[ $(value intx_raised "$line") -ge 2 ]] || fail "$sock: INTx level never asserted: $line"
  # Boot 2's unshared RAM: the guest's DMA test went through DMA_READ/DMA_WRITE.
  [[ $(value dma_requests "$line") -ge 1 ]] || fail "$sock: no message-based DMA in the plain-RAM boot: $line"
  # One notice per connection that touched unshared memory: boot 2 only.
  [[ $(grep -c "$sock.sock: guest memory at .* is not shared" "$work/server.err") -eq 1 ]] ||
    fail "$sock: expected exactly one unshared-memory notice: $(cat "$work/server.err")"
  [[ $(value guest_memory_regions "$line") -eq 0 ]] || fail "$sock: guest memory not emptied on disconnect: $line"
  # QEMU's INTx EOI reaches the server as UNMASK (DATA_NONE|ACTION_UNMASK = 0x11).
  grep -q "^\[$sock.sock\] <- #[0-9]* DEVICE_SET_IRQS flags 0x11 index 0" "$work/trace.log" ||
    fail "$sock: no INTx unmask from QEMU in the trace"
done
echo "guest-test: total $((SECONDS - started)) s, $failures failure(s)"
((failures == 0))
