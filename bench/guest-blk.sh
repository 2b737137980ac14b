#!/usr/bin/env bash
# Real-guest virtio-blk throughput: QEMU's own virtio-blk-pci against vpci's virtio-blk
# served by `vpci serve` over vfio-user (QEMU's vfio-user-pci), same Linux guest, same
# backing file, in one run (issue 9; docs/PERFORMANCE.md "Real guest").
#
#   sudo bench/guest-blk.sh [VPCI_BINARY] [ROUNDS]
#     VPCI_BINARY  default build/release/bin/vpci
#     ROUNDS       boots per variant, default 3; the variants are interleaved round by
#                  round so load from other users of the machine hits them alike
#   env: PERF_SECONDS  time cap of each guest test (default 3)
#        VARIANTS      which variants, in boot order (default "qemu-none qemu-wb
#                      qemu-wb-packed vpci")
#        PERF_TESTS    comma list of guest tests to run (default all; see the table)
#        KEEP=1        keep the work directory (console logs, server stats)
#
# Variants (one boot each per round, the guest runs the "blkperf" check of
# tests/guest/initramfs/checks.sh: O_DIRECT sequential 1 MiB and 4 KiB, random 4 KiB,
# at queue depth 1 and random 4 KiB at queue depth 4):
#   qemu-none  -drive cache=none (host O_DIRECT) + -device virtio-blk-pci,disable-legacy=on
#   qemu-wb    -drive cache=writeback (host page cache, QEMU's default)
#   qemu-wb-packed  the same with packed=on (vpci offers VIRTIO_F_RING_PACKED and the
#              guest takes it; QEMU's default is packed=off)
#   vpci       `vpci serve --stats` modern virtio-blk on the same image (buffered
#              pread/pwrite on the host, like cache=writeback), vfio-user-pci
#   vpci-poll  the same with `poll_us = $POLL_US` (default 100): the device polls the
#              ring after each request with the guest's notifications suppressed (issue 19)
# Prints a markdown table of the medians (MB/s and IOPS) with vpci/QEMU ratios, the
# median CPU seconds of the QEMU process and of the vpci serve process per boot, and
# the server's message statistics of the last vpci boot. Needs root (run-guest.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
vpci_bin=$(realpath "${1:-$repo/build/release/bin/vpci}")
rounds=${2:-3}
seconds=${PERF_SECONDS:-3}
[[ -x $vpci_bin ]] || { echo "guest-blk: no vpci binary at $vpci_bin" >&2; exit 2; }
[[ $(id -u) -eq 0 ]] || { echo "guest-blk: must run as root (tests/guest/run-guest.sh)" >&2; exit 2; }
"$repo/tests/guest/prepare.sh" >/dev/null

work=$(mktemp -d /tmp/vpci-guest-blk.XXXXXX)
server_pid=""
cleanup() {
  if [[ -n $server_pid ]]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  if [[ ${KEEP:-0} == 1 ]]; then echo "guest-blk: artifacts in $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
# Fully written (not sparse), so reads find real blocks on the host in every variant.
dd if=/dev/zero of="$work/disk.img" bs=1M count=64 status=none
cat >"$work/serve.toml" <<'EOF'
socket_dir = "sock"
[[device]]
name = "blk0"
kind = "virtio-blk"
transport = "modern"
path = "disk.img"
EOF
{ cat "$work/serve.toml"; echo "poll_us = ${POLL_US:-100}"; } >"$work/serve-poll.toml"

# shellcheck source=guest-lib.sh
source "$here/guest-lib.sh"

# boot VARIANT ROUND: one guest run; appends "variant test MB/s IOPS" lines to results.
boot() {
  local variant=$1 round=$2 log="$work/$1-$2.log" args=() pid qcpu="" scpu=""
  case $variant in
    qemu-none|qemu-wb|qemu-wb-packed)
      local cache=none packed=off
      [[ $variant == qemu-wb* ]] && cache=writeback
      [[ $variant == *-packed ]] && packed=on
      args=(--bind "$work" --qemu-arg -drive
            --qemu-arg "file=$work/disk.img,if=none,id=d,format=raw,cache=$cache"
            --qemu-arg -device --qemu-arg "virtio-blk-pci,drive=d,disable-legacy=on,packed=$packed") ;;
    vpci|vpci-poll)
      local config=$work/serve.toml
      [[ $variant == vpci-poll ]] && config=$work/serve-poll.toml
      "$vpci_bin" serve "$config" --stats >"$work/serve-$variant-$round.log" 2>&1 &
      server_pid=$!
      for _ in $(seq 100); do grep -q '^vpci serve: ready' "$work/serve-$variant-$round.log" && break; sleep 0.1; done
      args=(--socket "$work/sock/blk0.sock") ;;
    *) echo "guest-blk: unknown variant $variant" >&2; exit 2 ;;
  esac
  "$repo/tests/guest/run-guest.sh" "${args[@]}" --checks blkperf --timeout 300 \
    --append "vpci.perf_seconds=$seconds vpci.perf_tests=${PERF_TESTS:-all}" --log "$log" >/dev/null 2>"$log.err" &
  pid=$!
  watch_cpu "$pid" "$server_pid"
  qcpu=$qemu_cpu scpu=$server_cpu
  wait "$pid" || { echo "guest-blk: $variant round $round: run-guest.sh failed:" >&2; cat "$log.err" "$log" >&2; exit 1; }
  if [[ -n $server_pid ]]; then
    kill -TERM "$server_pid"; wait "$server_pid" || true; server_pid=""
  fi
  grep '^VPCI-PERF ' "$log" | awk -v v="$variant" '{ print v, $2, $3, $4 }' >>"$work/results"
  echo "$variant cpu-qemu $qcpu" >>"$work/results"
  [[ -n $scpu ]] && echo "$variant cpu-server $scpu" >>"$work/results"
  echo "guest-blk: round $round $variant: $(grep '^VPCI-PERF ' "$log" | awk '{ printf "%s %s MB/s; ", $2, $3 }')qemu cpu ${qcpu:-?} s${scpu:+, server cpu $scpu s}" >&2
}

read -r -a variants <<<"${VARIANTS:-qemu-none qemu-wb qemu-wb-packed vpci}"
for ((r = 1; r <= rounds; r++)); do
  for v in "${variants[@]}"; do boot "$v" "$r"; done
done

median() { median_of "$work/results" "$@"; }  # median VARIANT TEST COLUMN(3 = MB/s, 4 = IOPS)
title() {
  case $1 in
    qemu-none) echo "QEMU cache=none" ;; qemu-wb) echo "QEMU cache=writeback" ;;
    qemu-wb-packed) echo "QEMU writeback packed=on" ;; vpci) echo "vpci" ;;
    vpci-poll) echo "vpci poll_us=${POLL_US:-100}" ;;
  esac
}
qemu_variants=()
for v in "${variants[@]}"; do [[ $v == qemu-* ]] && qemu_variants+=("$v"); done
have_vpci=0
for v in "${variants[@]}"; do [[ $v == vpci ]] && have_vpci=1; done
echo
echo "Medians of $rounds boots per variant (interleaved), $seconds s cap per test; MB = 10^6 B."
echo
header="| test |" rule="|---|"
for v in "${variants[@]}"; do header+=" $(title "$v") MB/s (IOPS) |"; rule+="---:|"; done
if ((have_vpci)); then
  for v in "${qemu_variants[@]}"; do header+=" vpci / $(title "$v") |"; rule+="---:|"; done
fi
echo "$header"
echo "$rule"
for t in seqwrite-1M seqread-1M seqwrite-4k seqread-4k randwrite-4k randread-4k randwrite-4k-qd4 randread-4k-qd4; do
  [[ ,${PERF_TESTS:-all}, == ,all, || ,${PERF_TESTS:-all}, == *,$t,* ]] || continue
  line="| $t |"
  for v in "${variants[@]}"; do
    line+=$(awk -v m="$(median "$v" "$t" 3)" -v i="$(median "$v" "$t" 4)" 'BEGIN { printf " %.1f (%d) |", m, i }')
  done
  if ((have_vpci)); then
    ours=$(median vpci "$t" 3)
    for v in "${qemu_variants[@]}"; do
      line+=$(awk -v a="$ours" -v b="$(median "$v" "$t" 3)" 'BEGIN { printf " %.2f |", (b > 0 ? a / b : 0) }')
    done
  fi
  echo "$line"
done
echo
header="| CPU seconds per boot (median; boot + all tests) |" rule="|---|"
for v in "${variants[@]}"; do header+=" $(title "$v") |"; rule+="---:|"; done
echo "$header"
echo "$rule"
line="| QEMU process |"
for v in "${variants[@]}"; do line+=" $(median "$v" cpu-qemu 3) |"; done
echo "$line"
if ((have_vpci)); then
  line="| vpci serve process |"
  for v in "${variants[@]}"; do line+=" $(median "$v" cpu-server 3) |"; done
  echo "$line"
fi
((have_vpci)) || exit 0
echo
for v in vpci vpci-poll; do
  [[ -f $work/serve-$v-$rounds.log ]] || continue
  echo "Server statistics of the last $(title "$v") boot (vpci serve --stats):"
  grep '^vpci serve: stats' "$work/serve-$v-$rounds.log" | sed 's/^vpci serve: stats /    /'
  grep -h '^VPCI-RESULT blkperf' "$work/$v-$rounds.log" | sed 's/^/    guest: /'
done
