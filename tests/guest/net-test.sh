#!/usr/bin/env bash
# CTest driver of the real-guest virtio-net test (label "guest", issue 15): in a network
# namespace this test creates (and deletes), eight taps (host sides 10.0.2.1/24 to
# 10.0.9.1/24); inside it `vpci serve` runs a virtio-net device on each but vtapq (10.0.7.x),
# and QEMU runs there too. An unmodified Linux guest under QEMU >= 10.1 (vfio-user-pci)
# brings the interface up,
# pings the host side, sends N MiB to the host's nc and receives N MiB from it; both
# checksums must match, and the guest's rx_length_errors / rx_frame_errors must stay 0.
#   boot 1: net0 (mergeable receive buffers), the modern interface: 12-byte header;
#   boot 2: net1 (mergeable_rx_buffers = false), virtio_pci.force_legacy=1: the legacy
#           interface with the 10-byte header (VERSION_1 and MRG_RXBUF clear in the
#           guest's negotiated features);
#   boot 3: net2, modern with queues = 2 on a multi-queue tap, two vCPUs: the guest
#           runs both queue pairs (a quarter of the bytes: the point is the queues);
#   boot 4: net3 (legacy-over-mmr, mergeable_rx_buffers = false), force_legacy=1: the
#           10-byte header through the mapper and the MMR device's legacy window; net4
#           (transitional MMR) is attached too: present, and no stock driver binds it;
#   boot 6: net5 (legacy-over-admin, mergeable_rx_buffers = false), force_legacy=1: the
#           legacy driver's register accesses become admin commands on a PF's admin
#           queue (virtio 1.3 §2.12.1.2); 10-byte header;
#   boot 7: net6 (sriov-pf, 2 VFs) under the guest tree's own kernel (Linux >= 6.11,
#           prepare.sh's kernel-new): the guest binds the PF, negotiates ADMIN_VQ (bit 41)
#           and its admin-queue LIST_QUERY/LIST_USE succeed (a second server's --trace);
#           the PF's own net function passes the same transfers;
#   boot 5: the baseline: QEMU's own virtio-net-pci (vhost=off) on its own tap, the same
#           check and transfers (figures printed, never asserted).
# Nothing leaves the namespace. VPCI_SKIP_GUEST=1 skips it (exit 77).
# Usage: net-test.sh VPCI_BINARY
set -euo pipefail
vpci_bin=${1:?usage: net-test.sh VPCI_BINARY}
here=$(cd "$(dirname "$0")" && pwd)
test_name=net-test
# shellcheck source=test-lib.sh
source "$here/test-lib.sh"

"$here/prepare.sh"
# shellcheck source=net-lib.sh
source "$here/net-lib.sh"
mib=${VPCI_NET_MIB:-16}
ns=vpci-net-$$
work=$(mktemp -d /tmp/vpci-net-test.XXXXXX)
server_pid="" admin_server_pid=""
cleanup() {
  net_stop
  # (never a failing command here: under set -e it would end the cleanup early)
  for pid in $server_pid $admin_server_pid; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  if ((failures == 0)); then rm -rf "$work"; else echo "net-test: artifacts kept in $work" >&2; fi
}
trap cleanup EXIT

ip netns add "$ns"
ip netns exec "$ns" ip link set lo up
net_add_tap vtap0 10.0.2.1/24
net_add_tap vtap1 10.0.3.1/24
ip netns exec "$ns" ip tuntap add dev vtap2 mode tap vnet_hdr multi_queue
ip netns exec "$ns" ip addr add 10.0.4.1/24 dev vtap2
ip netns exec "$ns" ip link set vtap2 up
net_add_tap vtap3 10.0.5.1/24
net_add_tap vtap4 10.0.6.1/24
net_add_tap vtapq 10.0.7.1/24
net_add_tap vtap5 10.0.8.1/24
net_add_tap vtap6 10.0.9.1/24

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
[[device]]
name = "net2"
kind = "virtio-net"
transport = "modern"
tap = "vtap2"
mac = "52:54:00:00:04:15"
queues = 2
[[device]]
name = "net3"
kind = "virtio-net"
transport = "legacy-over-mmr"
tap = "vtap3"
mac = "52:54:00:00:05:15"
mergeable_rx_buffers = false
[[device]]
name = "net4"
kind = "virtio-net"
transport = "mmr"
tap = "vtap4"
mac = "52:54:00:00:06:15"
[[device]]
name = "net5"
kind = "virtio-net"
transport = "legacy-over-admin"
tap = "vtap5"
mac = "52:54:00:00:08:15"
mergeable_rx_buffers = false
TOML
# start_serve CONFIG LOG COUNT [SERVE-ARGS...]: `vpci serve` in the namespace, ready with
# COUNT devices; its pid in served_pid.
start_serve() {
  local config=$1 log=$2 count=$3 i
  shift 3
  # shellcheck disable=SC2086 # VPCI_NET_SERVE_ARGS: words on purpose
  ip netns exec "$ns" "$vpci_bin" ${VPCI_NET_SERVE_ARGS:-} serve "$config" --stats "$@" >"$log" 2>&1 &
  served_pid=$!
  for ((i = 0; i < 100; i++)); do
    grep -q "^vpci serve: ready" "$log" 2>/dev/null && break
    kill -0 "$served_pid" 2>/dev/null || break
    sleep 0.1
  done
  grep -q "^vpci serve: ready ($count device(s))" "$log" ||
    { fail "vpci serve $config did not become ready"; cat "$log" >&2; exit 1; }
}
start_serve "$work/serve.toml" "$work/serve.log" 6
server_pid=$served_pid
# The PF of boot 7 on a server of its own, whose --trace holds the admin commands.
cat >"$work/admin.toml" <<'TOML'
socket_dir = "sockets"
[[device]]
name = "net6"
kind = "virtio-net"
transport = "sriov-pf"
vfs = 2
tap = "vtap6"
mac = "52:54:00:00:09:15"
TOML
start_serve "$work/admin.toml" "$work/serve-admin.log" 1 --trace "$work/trace.log"
admin_server_pid=$served_pid

# vpci's own driver first (issue 18, `vpci probe`): net0 through its modern interface and
# net1 through its legacy one report the configured MAC and the link up, and are left
# reset for the guest.
probe=$("$vpci_bin" probe "vfio-user:$work/sockets/net0.sock" 2>&1) || fail "probe net0 exited $?"
expect_line <(echo "$probe") '^  mac: 52:54:00:00:02:15$' "probe: net0's MAC through the modern interface"
expect_line <(echo "$probe") '^  link: up$' "probe: net0's link is up"
expect_line <(echo "$probe") 'network \(modern interface' "probe: net0 driven through the modern interface"
probe=$("$vpci_bin" probe --legacy "vfio-user:$work/sockets/net1.sock" 2>&1) || fail "probe --legacy net1 exited $?"
expect_line <(echo "$probe") '^  mac: 52:54:00:00:03:15$' "probe: net1's MAC through the legacy interface"
expect_line <(echo "$probe") 'network \(legacy I/O interface' "probe: net1 driven through the legacy interface"
echo "net-test: vpci probe: net0 (modern) and net1 (legacy): MAC and link read, devices reset"

net_setup "$mib"
boot() {  # boot N DEVICE SUBNET APPEND [RUN-GUEST-ARGS...]   (SUBNET: 2 for 10.0.2.0/24)
  local status=0 line n=$1 device=$2 subnet=$3 append=$4
  shift 4
  net_boot "$n" "$subnet" "$boot_mib" "$append" --socket "$work/sockets/$device.sock" "$@" || status=$?
  set -- "$n"
  if ((status != 0)); then
    fail "boot $1: run-guest.sh exited $status"
    sed 's/^/  | /' "$work/console$1.log" >&2
    return 1
  fi
  line=$(net_verdict "$1") || fail "boot $1: the transfers do not match (above)"
  echo "net-test: boot $1: $line"
}

boot_mib=$mib
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
# Boot 3: two queue pairs, two vCPUs: Linux sets VQ_PAIRS to 2 (one per CPU) and shows
# two queues each way; the device steers the tap's queues to both pairs.
boot_mib=$(((mib + 3) / 4))
if boot 3 net2 4 "" --smp 2; then
  expect_line "$work/console3.log" '^VPCI-RESULT net-[^ ]* PASS .* queues=rx-0,rx-1,tx-0,tx-1 ' \
    "boot 3: the guest runs two queue pairs"
fi
# Boot 4: legacy-over-mmr with force_legacy=1: stock Linux binds the mapper's transitional
# device (1af4:1000) and runs the 10-byte header through the MMR device's legacy window;
# the MMR device itself (1af4:10f9) is present but no stock driver binds it.
boot_mib=$mib
if boot 4 net3 5 "virtio_pci.force_legacy=1" --socket "$work/sockets/net4.sock" \
  --expect "1af4:1000@virtio-pci,1af4:10f9"; then
  log=$work/console4.log
  expect_line "$log" '^VPCI-RESULT net-0000:00:01.0 PASS .* iface=legacy' "boot 4: legacy-over-mmr virtio-net passes"
  features=$(sed -n 's/^VPCI-RESULT net-.* features=\([01]*\).*/\1/p' "$log")
  [[ ${features:15:1} == 0 && ${features:32:1} == 0 && -n $features ]] ||
    fail "boot 4: negotiated features $features have MRG_RXBUF or VERSION_1: not the 10-byte header"
  expect_line "$log" '^VPCI-DEVICE 0000:00:02.0 id=1af4:10f9 rev=0x00 .* driver=none' \
    "boot 4: the MMR virtio-net device is present and unbound"
fi
# Boot 6: legacy-over-admin with force_legacy=1: the guest's legacy driver drives a VF
# whose every legacy register access becomes an admin command on its PF's admin queue
# (virtio 1.3 §2.12.1.2), sent by vpci's own PF driver; 10-byte header, the same checks.
boot_mib=$mib
if boot 6 net5 8 "virtio_pci.force_legacy=1" --expect "1af4:1000@virtio-pci"; then
  log=$work/console6.log
  expect_line "$log" '^VPCI-RESULT net-0000:00:01.0 PASS .* iface=legacy' "boot 6: legacy-over-admin virtio-net passes"
  expect_line "$log" '^VPCI-DEVICE 0000:00:01.0 id=1af4:1000 rev=0x00 .*subsys=0x1af4:0x0001 driver=virtio-pci' \
    "boot 6: the guest sees a transitional virtio-net device (1af4:1000 rev 0, subsystem 1af4:0001)"
  features=$(sed -n 's/^VPCI-RESULT net-.* features=\([01]*\).*/\1/p' "$log")
  [[ ${features:15:1} == 0 && ${features:32:1} == 0 && -n $features ]] ||
    fail "boot 6: negotiated features $features have MRG_RXBUF or VERSION_1: not the 10-byte header"
fi
# Boot 7 (issue 16): Linux >= 6.11 binds the sriov-pf PF: ADMIN_VQ (bit 41 of the
# features string, bit 0 first) negotiated, and at DRIVER_OK its virtio_pci sends
# LIST_QUERY then LIST_USE on the admin queue (drivers/virtio/virtio_pci_modern.c), both
# answered OK with the legacy commands in the list. VIRTIO_F_SR_IOV (bit 37) stays clear:
# QEMU's vfio-pci hides the SR-IOV capability from the guest, so no VF can be enabled there.
boot_mib=$mib
if boot 7 net6 9 "" --kernel new --expect "1af4:1041@virtio-pci"; then
  log=$work/console7.log
  expect_line "$log" '^VPCI-BOOT .* kernel=6\.(1[1-9]|[2-9][0-9])' "boot 7: the guest runs Linux >= 6.11"
  expect_line "$log" '^VPCI-RESULT net-[^ ]* PASS .* iface=modern' "boot 7: the PF's own virtio-net passes"
  features=$(sed -n 's/^VPCI-RESULT net-.* features=\([01]*\).*/\1/p' "$log")
  [[ ${features:41:1} == 1 ]] || fail "boot 7: negotiated features $features lack ADMIN_VQ (bit 41)"
  expect_line "$work/trace.log" '^\[net6\] admin LIST_QUERY group 1 member 0: OK' \
    "boot 7: the guest's LIST_QUERY succeeded"
  expect_line "$work/trace.log" '^\[net6\] admin LIST_USE group 1 member 0: OK' \
    "boot 7: the guest's LIST_USE succeeded"
  grep '^\[net6\] admin ' "$work/trace.log" | sed 's/^/net-test: boot 7: /' || true
  if grep '^\[net6\] admin ' "$work/trace.log" | grep -v ': OK'; then
    fail "boot 7: an admin command of the guest was refused (above)"
  fi
fi
# Boot 5: the baseline, QEMU's own virtio-net-pci (vhost=off) on its own tap, same
# guest, same transfers: the check itself must pass on a device nobody here wrote, and
# the figures are printed beside vpci's (bench/guest-net.sh measures them properly).
boot_mib=$mib
status=0
net_boot 5 7 "$boot_mib" "" --qemu-arg -netdev \
  --qemu-arg "tap,id=n0,ifname=vtapq,script=no,downscript=no,vhost=off" \
  --qemu-arg -device --qemu-arg "virtio-net-pci,netdev=n0,mac=52:54:00:00:07:15,disable-legacy=on" ||
  status=$?
if ((status != 0)); then
  fail "boot 5 (QEMU's virtio-net-pci): run-guest.sh exited $status"
  sed 's/^/  | /' "$work/console5.log" >&2
else
  line=$(net_verdict 5) || fail "boot 5 (QEMU's virtio-net-pci): the transfers do not match (above)"
  echo "net-test: boot 5 (QEMU's virtio-net-pci): $line"
  expect_line "$work/console5.log" '^VPCI-RESULT net-[^ ]* PASS .* iface=modern' \
    "boot 5: QEMU's own virtio-net passes the same check"
fi
for n in 1 5; do
  sed -n 's/^VPCI-RESULT net-[^ ]* PASS .* tx_s=\([0-9.]*\)\.\.\([0-9.]*\) .* rx_s=\([0-9.]*\)\.\.\([0-9.]*\) rtt_ms=\([^ ]*\) .*/\1 \2 \3 \4 \5/p' \
    "$work/console$n.log" | awk -v who="$( ((n == 1)) && echo "vpci (boot 1)" || echo "QEMU virtio-net-pci (boot 5)")" -v m="$boot_mib" \
    '{ printf "net-test: %s: tx %.1f MB/s, rx %.1f MB/s, ping %s ms (one boot each: not a measurement)\n", who, m * 1.048576 / ($2 - $1), m * 1.048576 / ($4 - $3), $5 }'
done
kill -TERM "$server_pid" "$admin_server_pid"
wait "$server_pid" || fail "vpci serve exited $?"
wait "$admin_server_pid" || fail "vpci serve (sriov-pf) exited $?"
server_pid="" admin_server_pid=""
sed -n 's/^/serve: /p' "$work/serve.log" | grep 'stats net[01]: [rtc]' || true
# Both of net2's pairs carried frames each way (at exit the guest's reset has set the
# active pairs back to 1, so the counters are the evidence).
for queue in rx0 tx0 rx1 tx1; do
  packets=$(sed -n "s/^vpci serve: stats net2: $queue: \([0-9]*\) packets.*/\1/p" "$work/serve.log")
  ((${packets:-0} > 0)) || fail "serve --stats: net2 $queue carried no frames: both queue pairs should"
done
# --stats counts the device's own traffic: both directions moved at least the test's bytes.
for device in net0 net1 net3 net5; do
  for dir in rx tx; do
    bytes=$(sed -n "s/^vpci serve: stats $device: ${dir}0: [0-9]* packets, \([0-9]*\) bytes.*/\1/p" "$work/serve.log")
    [[ -n $bytes ]] && ((bytes >= mib << 20)) ||
      fail "serve --stats: $device ${dir}0 moved ${bytes:-no} bytes, fewer than $((mib << 20))"
  done
done
echo "net-test: $failures failure(s)"
((failures == 0))
