#!/usr/bin/env bash
# CTest driver of the real-guest virtio-net test (label "guest", issue 15): in a network
# namespace this test creates (and deletes), two taps (host sides 10.0.2.1/24 and
# 10.0.3.1/24); inside it `vpci serve` runs a transitional virtio-net device on each. An
# unmodified Linux guest under QEMU >= 10.1 (vfio-user-pci) brings the interface up,
# pings the host side, sends N MiB to the host's nc and receives N MiB from it; both
# checksums must match, and the guest's rx_length_errors / rx_frame_errors must stay 0.
#   boot 1: net0 (mergeable receive buffers), the modern interface: 12-byte header;
#   boot 2: net1 (mergeable_rx_buffers = false), virtio_pci.force_legacy=1: the legacy
#           interface with the 10-byte header (VERSION_1 and MRG_RXBUF clear in the
#           guest's negotiated features).
# Nothing leaves the namespace. VPCI_SKIP_GUEST=1 skips it (exit 77).
# Usage: net-test.sh VPCI_BINARY
set -euo pipefail
vpci_bin=${1:?usage: net-test.sh VPCI_BINARY}
here=$(cd "$(dirname "$0")" && pwd)
test_name=net-test
# shellcheck source=test-lib.sh
source "$here/test-lib.sh"

"$here/prepare.sh"
mib=${VPCI_NET_MIB:-16}
ns=vpci-net-$$
work=$(mktemp -d /tmp/vpci-net-test.XXXXXX)
server_pid="" sink_pid="" feeder_pid=""
cleanup() {
  for pid in $feeder_pid $sink_pid $server_pid; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  exec 3>&- 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  if ((failures == 0)); then rm -rf "$work"; else echo "net-test: artifacts kept in $work" >&2; fi
}
trap cleanup EXIT
in_ns() { ip netns exec "$ns" "$@"; }

ip netns add "$ns"
in_ns ip link set lo up
for tap in vtap0:10.0.2.1 vtap1:10.0.3.1; do
  in_ns ip tuntap add dev "${tap%%:*}" mode tap vnet_hdr
  in_ns ip addr add "${tap#*:}/24" dev "${tap%%:*}"
  in_ns ip link set "${tap%%:*}" up
done

cat >"$work/serve.toml" <<'TOML'
socket_dir = "sockets"
[[device]]
name = "net0"
kind = "virtio-net"
transport = "transitional"
tap = "vtap0"
mac = "52:54:00:00:02:15"
[[device]]
name = "net1"
kind = "virtio-net"
transport = "transitional"
tap = "vtap1"
mac = "52:54:00:00:03:15"
mergeable_rx_buffers = false
TOML
ip netns exec "$ns" "$vpci_bin" ${VPCI_NET_SERVE_ARGS:-} serve "$work/serve.toml" --stats >"$work/serve.log" 2>&1 &
server_pid=$!
for ((i = 0; i < 100; i++)); do
  grep -q '^vpci serve: ready' "$work/serve.log" && break
  kill -0 "$server_pid" 2>/dev/null || break
  sleep 0.1
done
grep -q '^vpci serve: ready (2 device(s))' "$work/serve.log" ||
  { fail "vpci serve did not become ready"; cat "$work/serve.log" >&2; exit 1; }

head -c $((mib << 20)) /dev/urandom >"$work/rx.bin"
mkfifo "$work/hold"
exec 3<>"$work/hold"
rx_md5=$(md5sum <"$work/rx.bin" | cut -d' ' -f1)

boot() {  # boot N DEVICE SUBNET APPEND   (SUBNET: 2 for 10.0.2.0/24)
  local n=$1 device=$2 subnet=$3 append=$4 log=$work/console$1.log status=0
  : >"$log"
  # busybox nc -l ends the connection when its own stdin ends: its stdin is a FIFO this
  # script holds open (fd 3), which never ends.
  in_ns busybox nc -l -p 5001 <"$work/hold" >"$work/tx$n.bin" &
  sink_pid=$!
  # Sends rx.bin once the guest says it listens.
  (
    for ((i = 0; i < 3000; i++)); do
      grep -q '^VPCI-NET-LISTEN' "$log" 2>/dev/null && break
      sleep 0.1
    done
    in_ns busybox nc -w 30 "10.0.$subnet.15" 5002 <"$work/rx.bin"
  ) &
  feeder_pid=$!
  "$here/run-guest.sh" --socket "$work/sockets/$device.sock" --checks enumerate,net \
    --append "vpci.net_ip=10.0.$subnet.15/24 vpci.net_peer=10.0.$subnet.1 vpci.net_mib=$mib $append" \
    --timeout 600 --log "$log" || status=$?
  wait "$feeder_pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do  # the sink ends with the guest's connection
    kill -0 "$sink_pid" 2>/dev/null || break
    sleep 0.1
  done
  kill "$sink_pid" 2>/dev/null || true
  feeder_pid="" sink_pid=""
  if ((status != 0)); then
    fail "boot $n: run-guest.sh exited $status"
    sed 's/^/  | /' "$log" >&2
    return 1
  fi
  local line tx_md5 guest_rx_md5
  line=$(grep '^VPCI-RESULT net-' "$log" | head -1)
  tx_md5=$(sed -n 's/.* tx_md5=\([^ ]*\).*/\1/p' <<<"$line")
  guest_rx_md5=$(sed -n 's/.* rx_md5=\([^ ]*\).*/\1/p' <<<"$line")
  [[ $(md5sum <"$work/tx$n.bin" | cut -d' ' -f1) == "$tx_md5" ]] ||
    fail "boot $n: the host received $(stat -c %s "$work/tx$n.bin") bytes whose md5 is not the guest's $tx_md5"
  [[ $guest_rx_md5 == "$rx_md5" ]] || fail "boot $n: the guest received md5 $guest_rx_md5, the host sent $rx_md5"
  grep -q ' rx_length_errors=0 rx_frame_errors=0 ' <<<"$line" || fail "boot $n: receive errors: $line"
  echo "net-test: boot $n: $line"
}

# Boot 1: the modern interface (12-byte header, mergeable receive buffers).
if boot 1 net0 2 ""; then
  expect_line "$work/console1.log" '^VPCI-RESULT net-[^ ]* PASS .* iface=modern' "boot 1: modern virtio-net passes"
fi
# Boot 2: the legacy interface without MRG_RXBUF: the 10-byte header. The features string
# is bit 0 first: bit 15 (MRG_RXBUF) and bit 32 (VERSION_1) must be 0.
if boot 2 net1 3 "virtio_pci.force_legacy=1"; then
  log=$work/console2.log
  expect_line "$log" '^VPCI-RESULT net-[^ ]* PASS .* iface=legacy' "boot 2: legacy virtio-net passes"
  features=$(sed -n 's/^VPCI-RESULT net-.* features=\([01]*\).*/\1/p' "$log")
  [[ ${features:15:1} == 0 && ${features:32:1} == 0 && -n $features ]] ||
    fail "boot 2: negotiated features $features have MRG_RXBUF or VERSION_1: not the 10-byte header"
fi
kill -TERM "$server_pid"
wait "$server_pid" || fail "vpci serve exited $?"
server_pid=""
sed -n 's/^/serve: /p' "$work/serve.log" | grep 'stats net[01]: [rtc]' || true
# --stats counts the device's own traffic: both directions moved at least the test's bytes.
for device in net0 net1; do
  for dir in rx tx; do
    bytes=$(sed -n "s/^vpci serve: stats $device: ${dir}0: [0-9]* packets, \([0-9]*\) bytes.*/\1/p" "$work/serve.log")
    [[ -n $bytes ]] && ((bytes >= mib << 20)) ||
      fail "serve --stats: $device ${dir}0 moved ${bytes:-no} bytes, fewer than $((mib << 20))"
  done
done
echo "net-test: $failures failure(s)"
((failures == 0))
