# shellcheck shell=bash
# The host side of the guest's "net" check (tests/guest/initramfs/checks.sh), shared by
# the virtio-net guest test (net-test.sh) and its benchmark (bench/guest-net.sh): sourced,
# not run. Needs `ns` (the network namespace holding the taps), `work` (a directory) and
# `here` (tests/guest); `net_setup` must run first.

net_sink_pid="" net_feeder_pid=""

# net_setup MIB: the RX payload ($work/rx.bin, MIB MiB of random bytes, its md5 in
# net_rx_md5) and a FIFO held open on fd 3 as the host nc's never-ending stdin (busybox
# nc -l ends the connection when its own stdin ends).
net_setup() {
  head -c $(($1 << 20)) /dev/urandom >"$work/rx.bin"
  net_rx_md5=$(md5sum <"$work/rx.bin" | cut -d' ' -f1)
  mkfifo "$work/hold"
  exec 3<>"$work/hold"
}

# net_add_tap NAME ADDRESS/PREFIX: a tap with a virtio-net header in the namespace, up.
net_add_tap() {
  ip netns exec "$ns" ip tuntap add dev "$1" mode tap vnet_hdr
  ip netns exec "$ns" ip addr add "$2" dev "$1"
  ip netns exec "$ns" ip link set "$1" up
}

# net_boot N SUBNET MIB APPEND RUN-GUEST-ARGS...: one guest running the net check with
# the guest at 10.0.SUBNET.15 and the host at 10.0.SUBNET.1: the host's nc on port 5001
# keeps what the guest sends in $work/tx$N.bin; once the guest listens, rx.bin goes to
# its port 5002. QEMU runs inside the namespace (so it can open a tap there too). The
# console log is $work/console$N.log; returns run-guest.sh's status.
net_boot() {
  local n=$1 subnet=$2 mib=$3 append=$4 log=$work/console$1.log status=0
  shift 4
  : >"$log"
  ip netns exec "$ns" busybox nc -l -p 5001 <"$work/hold" >"$work/tx$n.bin" &
  net_sink_pid=$!
  (
    for ((i = 0; i < 6000; i++)); do
      grep -q '^VPCI-NET-LISTEN' "$log" 2>/dev/null && break
      sleep 0.05
    done
    ip netns exec "$ns" busybox nc -w 30 "10.0.$subnet.15" 5002 <"$work/rx.bin"
  ) &
  net_feeder_pid=$!
  ip netns exec "$ns" "$here/run-guest.sh" "$@" --checks enumerate,net \
    --append "vpci.net_ip=10.0.$subnet.15/24 vpci.net_peer=10.0.$subnet.1 vpci.net_mib=$mib $append" \
    --timeout 600 --log "$log" || status=$?
  # The guest is gone: a feeder still waiting for VPCI-NET-LISTEN (a boot that failed
  # early) would wait its full 5 minutes.
  grep -q '^VPCI-NET-LISTEN' "$log" 2>/dev/null || kill "$net_feeder_pid" 2>/dev/null || true
  wait "$net_feeder_pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do  # the sink ends with the guest's connection
    kill -0 "$net_sink_pid" 2>/dev/null || break
    sleep 0.1
  done
  kill "$net_sink_pid" 2>/dev/null || true
  net_feeder_pid="" net_sink_pid=""
  return "$status"
}

# net_verdict N: the guest's result line of boot N, checked against what the host sent
# and received; prints the line, returns 1 (with the reason on stderr) when it is wrong.
net_verdict() {
  local n=$1 line tx_md5 guest_rx_md5 ok=0
  line=$(grep '^VPCI-RESULT net-' "$work/console$n.log" | head -1)
  tx_md5=$(sed -n 's/.* tx_md5=\([^ ]*\).*/\1/p' <<<"$line")
  guest_rx_md5=$(sed -n 's/.* rx_md5=\([^ ]*\).*/\1/p' <<<"$line")
  if [[ $(md5sum <"$work/tx$n.bin" | cut -d' ' -f1) != "$tx_md5" ]]; then
    echo "boot $n: the host received $(stat -c %s "$work/tx$n.bin") bytes whose md5 is not the guest's $tx_md5" >&2
    ok=1
  fi
  if [[ $guest_rx_md5 != "$net_rx_md5" ]]; then
    echo "boot $n: the guest received md5 $guest_rx_md5, the host sent $net_rx_md5" >&2
    ok=1
  fi
  if ! grep -q ' rx_length_errors=0 rx_frame_errors=0 ' <<<"$line"; then
    echo "boot $n: receive errors: $line" >&2
    ok=1
  fi
  echo "$line"
  return "$ok"
}

# net_stop: ends a boot's helpers (for the callers' EXIT traps).
net_stop() {
  local pid
  for pid in $net_feeder_pid $net_sink_pid; do kill "$pid" 2>/dev/null || true; done
  exec 3>&- 2>/dev/null || true
}
