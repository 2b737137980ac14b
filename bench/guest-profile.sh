#!/usr/bin/env bash
# Where a real-guest virtio-blk request's CPU time goes (issue 19: "where a goal is not
# reached, the page says what limits it, with a profile"): one guest boot per variant
# runs one blkperf test while `perf record` samples the QEMU process (all its threads:
# the TCG vCPU, the main loop, I/O workers) and, for vpci, `vpci serve`. Prints, per
# variant, the CPU share of every thread (perf's comm) and the hottest symbols of the
# vCPU thread and of the server.
#
#   sudo bench/guest-profile.sh [VPCI_BINARY]
#   env: VARIANTS    default "qemu-null vpci" (qemu-null: QEMU's virtio-blk on null-co,
#                    the in-process floor; vpci: interrupt mode; vpci-mmap: mapped
#                    doorbells with a 1 ms window)
#        PERF_TEST   the blkperf test (default randread-4k: queue depth 1)
#        SECONDS_ON  seconds of the test and of the recording (default 6)
#        KEEP=1      keep the work directory (perf.data files, logs)
# Needs root (run-guest.sh) and perf (linux-perf). The sample counts are CPU time at 999 Hz.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
vpci_bin=$(realpath "${1:-$repo/build/release/bin/vpci}")
test_name=${PERF_TEST:-randread-4k}
seconds=${SECONDS_ON:-6}
read -r -a variants <<<"${VARIANTS:-qemu-null vpci}"
[[ -x $vpci_bin ]] || { echo "guest-profile: no vpci binary at $vpci_bin" >&2; exit 2; }
[[ $(id -u) -eq 0 ]] || { echo "guest-profile: must run as root" >&2; exit 2; }
command -v perf >/dev/null || { echo "guest-profile: perf missing (linux-perf)" >&2; exit 2; }
"$repo/tests/guest/prepare.sh" >/dev/null
# shellcheck source=guest-lib.sh
source "$here/guest-lib.sh"

work=$(mktemp -d /tmp/vpci-guest-profile.XXXXXX)
server_pid=""
cleanup() {
  if [[ -n $server_pid ]]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  if [[ ${KEEP:-0} == 1 ]]; then echo "guest-profile: artifacts in $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
blk_serve_toml >"$work/serve.toml"
{ cat "$work/serve.toml"; echo "poll_us = 1000"; echo 'notify = "mapped"'; } >"$work/serve-mmap.toml"

profile() {  # profile VARIANT
  local variant=$1 args=() pid qpid="" pids
  dd if=/dev/zero of="$work/disk.img" bs=1M count=64 conv=fsync status=none
  case $variant in
    qemu-null)
      args=(--qemu-arg -blockdev --qemu-arg "driver=null-co,node-name=d,size=$((64 << 20)),read-zeroes=on"
            --qemu-arg -device --qemu-arg "virtio-blk-pci,drive=d,disable-legacy=on") ;;
    vpci|vpci-mmap)
      local config=$work/serve.toml
      [[ $variant == vpci-mmap ]] && config=$work/serve-mmap.toml
      "$vpci_bin" serve "$config" >"$work/serve-$variant.log" 2>&1 &
      server_pid=$!
      for _ in $(seq 100); do grep -qs '^vpci serve: ready' "$work/serve-$variant.log" && break; sleep 0.1; done
      args=(--socket "$work/sock/blk0.sock") ;;
    *) echo "guest-profile: unknown variant $variant" >&2; exit 2 ;;
  esac
  "$repo/tests/guest/run-guest.sh" "${args[@]}" --checks blkperf --timeout 300 \
    --append "vpci.perf_seconds=$seconds vpci.perf_tests=$test_name" --log "$work/$variant.log" \
    >/dev/null 2>"$work/$variant.err" &
  pid=$!
  # Record from the test's start (the guest prints nothing before it; its boot is ~5 s).
  for _ in $(seq 600); do
    [[ -z $qpid ]] && qpid=$(qemu_of "$pid")
    grep -qs '^VPCI-CHECKS-START' "$work/$variant.log" && break
    sleep 0.1
  done
  [[ -n $qpid ]] || { echo "guest-profile: $variant: no QEMU process" >&2; exit 1; }
  pids=$qpid
  [[ -n $server_pid ]] && pids+=",$server_pid"
  perf record -F 999 -g -p "$pids" -o "$work/$variant.data" -- sleep "$((seconds - 1))" >/dev/null 2>&1
  wait "$pid" || { echo "guest-profile: $variant: the guest run failed" >&2; cat "$work/$variant.err" >&2; exit 1; }
  if [[ -n $server_pid ]]; then kill -TERM "$server_pid"; wait "$server_pid" || true; server_pid=""; fi
  echo
  echo "### $variant: $(grep -h '^VPCI-PERF' "$work/$variant.log" | awk '{ print $2, $3 " MB/s", $4 " IOPS" }')"
  echo
  echo "CPU by thread over $((seconds - 1)) s (perf samples at 999 Hz; % of one core):"
  echo
  echo '```'
  perf report -i "$work/$variant.data" --no-children --sort comm -n -g none --stdio 2>/dev/null |
    awk -v s="$((seconds - 1))" '/^#/ || NF < 3 { next }
      $1 ~ /%$/ { comm = $3; for (i = 4; i <= NF; i++) comm = comm " " $i
                  printf "%6.1f%%  %s\n", $2 * 100 / (999 * s), comm }' | awk 'NR <= 8'
  echo '```'
  echo
  echo "Hottest symbols (all recorded threads, self time):"
  echo
  echo '```'
  perf report -i "$work/$variant.data" --no-children --sort comm,dso,sym -g none --stdio 2>/dev/null |
    grep -E '^ +[0-9.]+%' | awk 'NR <= 15'
  echo '```'
}

for v in "${variants[@]}"; do profile "$v"; done
