#!/usr/bin/env bash
# Real-guest virtio-net throughput and latency: QEMU's own virtio-net-pci (tap,
# vhost=off) against vpci's virtio-net served by `vpci serve` over vfio-user, same Linux
# guest, same transfers, in one run (issue 15; docs/PERFORMANCE.md "Real guest:
# virtio-net").
#
#   sudo bench/guest-net.sh [VPCI_BINARY] [ROUNDS]
#     VPCI_BINARY  default build/release/bin/vpci
#     ROUNDS       counted boots per variant, default 5, after one warm-up round; the
#                  variants are interleaved round by round so load from other users of
#                  the machine hits them alike
#   env: MIB       MiB moved each way per boot (default 64: the guest clock counts in
#                  10 ms steps, and 16 MiB of RX takes about 0.3 s)
#        VARIANTS  which variants, in boot order (default "qemu vpci vpci-poll vpci-mmap")
#        POLL_US   poll window of vpci-poll and vpci-mmap (default 1000)
#        KEEP=1    keep the work directory (console logs, server stats)
#
# Both variants run in one network namespace the script creates and deletes, each on its
# own tap (host 10.0.5.1 for QEMU, 10.0.6.1 for vpci; the guest is .15); the guest runs
# the "net" check of tests/guest/initramfs/checks.sh: 5 pings, then MIB MiB guest -> host
# (TX) and host -> guest (RX) through busybox nc, timed by the guest's clock, checksums
# compared on the host. Variants, modern interface, one queue pair, mergeable buffers:
#   qemu       -netdev tap,vhost=off + -device virtio-net-pci,disable-legacy=on
#   vpci       `vpci serve --stats` virtio-net, transport modern, vfio-user-pci
#   vpci-poll  the same with `poll_us = $POLL_US` (issue 19)
#   vpci-mmap  vpci-poll with `notify = "mapped"`: the guest's kicks never leave it
# Prints a markdown table of the medians (MB/s each way, ping ms) and, for every vpci
# variant, the median of the per-round ratios against QEMU, the CPU seconds of each QEMU
# process per boot, the vpci server's CPU milliseconds per MB moved and its doorbell
# messages and interrupts per MB. Needs root (namespaces, run-guest.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
vpci_bin=$(realpath "${1:-$repo/build/release/bin/vpci}")
rounds=${2:-5}
mib=${MIB:-64}
poll_us=${POLL_US:-1000}
read -r -a variants <<<"${VARIANTS:-qemu vpci vpci-poll vpci-mmap}"
[[ -x $vpci_bin ]] || { echo "guest-net: no vpci binary at $vpci_bin" >&2; exit 2; }
[[ $(id -u) -eq 0 ]] || { echo "guest-net: must run as root (namespaces, run-guest.sh)" >&2; exit 2; }
"$repo/tests/guest/prepare.sh" >/dev/null

# shellcheck source=guest-lib.sh
source "$here/guest-lib.sh"
here=$repo/tests/guest  # what net-lib.sh expects
# shellcheck source=../tests/guest/net-lib.sh
source "$here/net-lib.sh"

work=$(mktemp -d /tmp/vpci-guest-net.XXXXXX)
ns=vpci-bench-net-$$
server_pid=""
cleanup() {
  net_stop
  if [[ -n $server_pid ]]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  ip netns del "$ns" 2>/dev/null || true
  if [[ ${KEEP:-0} == 1 ]]; then echo "guest-net: artifacts in $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
ip netns add "$ns"
ip netns exec "$ns" ip link set lo up
net_add_tap vtapq 10.0.5.1/24
net_add_tap vtapv 10.0.6.1/24
net_setup "$mib"
cat >"$work/serve.toml" <<'TOML'
socket_dir = "sock"
[[device]]
name = "net0"
kind = "virtio-net"
transport = "modern"
tap = "vtapv"
mac = "52:54:00:00:06:15"
TOML
{ cat "$work/serve.toml"; echo "poll_us = $poll_us"; } >"$work/serve-poll.toml"
{ cat "$work/serve-poll.toml"; echo 'notify = "mapped"'; } >"$work/serve-mmap.toml"

seconds_between() {  # seconds_between A..B
  awk -v r="$1" 'BEGIN { split(r, t, /\.\./); printf "%.3f", t[2] - t[1] }'
}

# boot VARIANT ROUND: one guest run; appends "variant key value" lines to results
# (round 0 is the warm-up and is not recorded).
boot() {
  local variant=$1 round=$2 n="$1-$2" args=() subnet pid qcpu="" scpu0="" scpu="" line
  case $variant in
    qemu)
      subnet=5
      args=(--qemu-arg -netdev --qemu-arg "tap,id=n0,ifname=vtapq,script=no,downscript=no,vhost=off"
            --qemu-arg -device --qemu-arg "virtio-net-pci,netdev=n0,mac=52:54:00:00:05:15,disable-legacy=on") ;;
    vpci|vpci-poll|vpci-mmap)
      local config=$work/serve.toml
      [[ $variant == vpci-poll ]] && config=$work/serve-poll.toml
      [[ $variant == vpci-mmap ]] && config=$work/serve-mmap.toml
      subnet=6
      ip netns exec "$ns" "$vpci_bin" serve "$config" --stats >"$work/serve-$n.log" 2>&1 &
      server_pid=$!
      for _ in $(seq 100); do grep -q '^vpci serve: ready' "$work/serve-$n.log" && break; sleep 0.1; done
      scpu0=$(cpu_seconds "$server_pid")
      args=(--socket "$work/sock/net0.sock") ;;
    *) echo "guest-net: unknown variant $variant" >&2; exit 2 ;;
  esac
  net_boot "$n" "$subnet" "$mib" "" "${args[@]}" >/dev/null 2>"$work/$n.err" &
  pid=$!
  watch_cpu "$pid" "$server_pid"
  qcpu=$qemu_cpu scpu=$server_cpu
  wait "$pid" || { echo "guest-net: $variant round $round: the guest run failed:" >&2; cat "$work/$n.err" "$work/console$n.log" >&2; exit 1; }
  if [[ -n $server_pid ]]; then
    kill -TERM "$server_pid"; wait "$server_pid" || true; server_pid=""
  fi
  line=$(net_verdict "$n") || { echo "guest-net: $variant round $round: transfers do not match" >&2; exit 1; }
  local tx_s rx_s rtt tx rx
  tx_s=$(seconds_between "$(sed -n 's/.* tx_s=\([^ ]*\).*/\1/p' <<<"$line")")
  rx_s=$(seconds_between "$(sed -n 's/.* rx_s=\([^ ]*\).*/\1/p' <<<"$line")")
  rtt=$(sed -n 's/.* rtt_ms=\([^ ]*\).*/\1/p' <<<"$line")
  tx=$(awk -v m="$mib" -v s="$tx_s" 'BEGIN { printf "%.2f", m * 1.048576 / s }')
  rx=$(awk -v m="$mib" -v s="$rx_s" 'BEGIN { printf "%.2f", m * 1.048576 / s }')
  echo "guest-net: round $round $variant: tx $tx MB/s, rx $rx MB/s, ping $rtt ms; qemu cpu ${qcpu:-?} s${scpu:+, server cpu $(awk -v a="$scpu" -v b="$scpu0" 'BEGIN { printf "%.2f", a - b }') s}" >&2
  ((round > 0)) || return 0
  {
    echo "$variant tx $tx"
    echo "$variant rx $rx"
    echo "$variant rtt $rtt"
    echo "$variant cpu-qemu $qcpu"
    [[ -n $scpu ]] && awk -v v="$variant" -v a="$scpu" -v b="$scpu0" -v m="$mib" \
      'BEGIN { printf "%s cpu-server-ms-per-mb %.3f\n", v, (a - b) * 1000 / (2 * m * 1.048576) }'
    # vpci serve --stats: "net0: ... K interrupts signalled", "net0:   REGION_WRITE region 4
    # posted  D messages" (BAR 4 holds the doorbells), per MB moved (both directions).
    if [[ $variant == vpci* ]]; then awk -v v="$variant" -v m="$mib" '
      !/^vpci serve: stats / { next }
      /interrupts signalled/ { irqs = $(NF - 2) }
      /REGION_WRITE region 4 posted/ { for (i = 1; i <= NF; i++) if ($i == "messages") bells = $(i - 1) }
      END { mb = 2 * m * 1.048576; printf "%s doorbells-per-mb %.1f\n%s irqs-per-mb %.1f\n", v, bells / mb, v, irqs / mb }' \
      "$work/serve-$n.log"; fi
    echo "round$round tx-ratio-$variant $tx"
    echo "round$round rx-ratio-$variant $rx"
    echo "round$round rtt-ratio-$variant $rtt"
  } >>"$work/results"
}

for ((r = 0; r <= rounds; r++)); do
  for v in "${variants[@]}"; do boot "$v" "$r"; done
done

median() { median_of "$work/results" "$@"; }
ours=()
for v in "${variants[@]}"; do [[ $v == vpci* ]] && ours+=("$v"); done
# The per-round ratios vpci variant / QEMU (for ping: QEMU/vpci, so that > 1 means vpci is
# better): "ratio-VARIANT KEY value" lines.
for ((r = 1; r <= rounds; r++)); do
  for o in "${ours[@]}"; do
    for k in tx rx rtt; do
      q=$(awk -v k="$k-ratio-qemu" -v r="round$r" '$1 == r && $2 == k { print $3 }' "$work/results")
      v=$(awk -v k="$k-ratio-$o" -v r="round$r" '$1 == r && $2 == k { print $3 }' "$work/results")
      if [[ $k == rtt ]]; then a=$q b=$v; else a=$v b=$q; fi
      awk -v o="$o" -v k="$k" -v a="$a" -v b="$b" 'BEGIN { if (a > 0 && b > 0) printf "ratio-%s %s %.3f\n", o, k, a / b }' >>"$work/results"
    done
  done
done
title() {
  case $1 in
    qemu) echo "QEMU virtio-net-pci (tap, vhost=off)" ;; vpci) echo "vpci virtio-net" ;;
    vpci-poll) echo "vpci poll_us=$poll_us" ;; vpci-mmap) echo "vpci mapped notify, poll_us=$poll_us" ;;
  esac
}
row() {  # row LABEL KEY FORMAT: one value per variant
  local line="| $1 |" v x
  for v in "${variants[@]}"; do
    x=$(median "$v" "$2" 3)
    if [[ -n $x ]]; then line+=" $(awk -v x="$x" -v f="$3" 'BEGIN { printf f, x }') |"; else line+=" |"; fi
  done
  echo "$line"
}
echo
echo "$rounds counted boots per variant after a warm-up round (interleaved), $mib MiB each way; MB = 10^6 B."
echo
header="| measure |" rule="|---|"
for v in "${variants[@]}"; do header+=" $(title "$v") |"; rule+="---:|"; done
echo "$header"
echo "$rule"
row "TX guest -> host, MB/s" tx "%.2f"
row "RX host -> guest, MB/s" rx "%.2f"
row "ping round trip, ms" rtt "%.3f"
row "QEMU process CPU s per boot" cpu-qemu "%.2f"
row "vpci serve CPU ms per MB moved" cpu-server-ms-per-mb "%.2f"
row "doorbell messages per MB moved" doorbells-per-mb "%.1f"
row "interrupts per MB moved" irqs-per-mb "%.1f"
if ((${#ours[@]})) && [[ " ${variants[*]} " == *" qemu "* ]]; then
  echo
  echo "| vpci / QEMU, median of per-round ratios (ping: QEMU/vpci, > 1 = vpci faster) | TX | RX | ping |"
  echo "|---|---:|---:|---:|"
  for o in "${ours[@]}"; do
    echo "| $(title "$o") | $(median "ratio-$o" tx 3) | $(median "ratio-$o" rx 3) | $(median "ratio-$o" rtt 3) |"
  done
fi
for o in "${ours[@]}"; do
  [[ -f $work/serve-$o-$rounds.log ]] || continue
  echo
  echo "Server statistics of the last $(title "$o") boot (vpci serve --stats):"
  grep '^vpci serve: stats' "$work/serve-$o-$rounds.log" | sed 's/^vpci serve: stats /    /'
done
