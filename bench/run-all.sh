#!/usr/bin/env bash
# Runs every vpci benchmark and prints the Markdown tables of docs/PERFORMANCE.md,
# with the machine description. Each figure is a median over REPETITIONS; each ratio
# is against a baseline measured in the same run (a plain load/store, memcpy, a raw
# AF_UNIX peer, dtc).
#
#   bench/run-all.sh [BUILD_DIR] [REPETITIONS]      defaults: build/release 5
#
# Builds the benchmark targets first (configuring the release preset if BUILD_DIR is
# build/release and does not exist yet). Raw JSON and the tables are kept in
# BUILD_DIR/bench-results/. Takes about 10 minutes on 2 vCPUs.
#   VPCI_BENCH_SKIP_DT=1       skip the dtc comparison (the longest part, ~90 s)
#   VPCI_BENCH_SKIP_GUEST=1    skip the real-guest comparisons (bench/guest-blk.sh, ~10
#                              minutes with 3 rounds; bench/guest-net.sh, ~4 minutes with
#                              5 rounds; they run only as root)
#   VPCI_BENCH_SOCKET_DIR=DIR  where scale_bench binds its sockets (default /dev/shm)
set -euo pipefail
cd "$(dirname "$0")/.."

build=${1:-build/release}
reps=${2:-5}
bin="$build/bin"
out="$build/bench-results"

if [[ ! -d $build && $build == build/release ]]; then
  cmake --preset release >/dev/null
fi
cmake --build "$build" -j2 --target vpci dt_bind_bench register_path_bench virtqueue_bench \
  vfio_user_bench scale_bench >&2
mkdir -p "$out"

gbench=(--benchmark_repetitions="$reps" --benchmark_report_aggregates_only=true
        --benchmark_out_format=json)
load() { cut -d' ' -f1-3 /proc/loadavg; }
load_start=$(load)

echo "register_path_bench..." >&2
"$bin/register_path_bench" "${gbench[@]}" --benchmark_min_time=0.1 --benchmark_out="$out/register_path.json" >/dev/null
echo "virtqueue_bench..." >&2
"$bin/virtqueue_bench" "${gbench[@]}" --benchmark_min_time=0.2 --benchmark_out="$out/virtqueue.json" >/dev/null
echo "vfio_user_bench..." >&2
"$bin/vfio_user_bench" "${gbench[@]}" --benchmark_min_time=0.3 --benchmark_out="$out/vfio_user.json" >/dev/null
echo "scale_bench..." >&2
# Sockets on tmpfs (where a serving host keeps them, e.g. /run), plus one 4096-device
# run in $TMPDIR or /tmp to show what a disk file system costs bind().
socket_dir=${VPCI_BENCH_SOCKET_DIR:-/dev/shm}
: >"$out/scale.jsonl"
for ((r = 0; r < (reps + 1) / 2; r++)); do
  "$bin/scale_bench" --json --socket-dir="$socket_dir" >>"$out/scale.jsonl"
done
"$bin/scale_bench" --json --devices=4096 --socket-dir="${TMPDIR:-/tmp}" >>"$out/scale.jsonl"
# The bare ScratchFunction for comparison: what the virtio device adds per device.
"$bin/scale_bench" --json --device=scratch --devices=1024,4096 --socket-dir="$socket_dir" >>"$out/scale.jsonl"
echo "dt_bind_bench..." >&2
"$bin/dt_bind_bench" "${gbench[@]}" --benchmark_out="$out/dt_bind.json" >/dev/null
if [[ ${VPCI_BENCH_SKIP_DT:-0} != 1 ]] && command -v dtc >/dev/null; then
  echo "dt_vs_dtc.sh..." >&2
  bench/dt_vs_dtc.sh "$build" $((reps * 3)) | sed -n '/^|/p' >"$out/dt_vs_dtc.md"
else
  rm -f "$out/dt_vs_dtc.md"
fi
if [[ ${VPCI_BENCH_SKIP_GUEST:-0} != 1 && $(id -u) -eq 0 ]]; then
  echo "guest-blk.sh..." >&2
  cmake --build "$build" --target vpci >/dev/null
  bench/guest-blk.sh "$bin/vpci" 3 >"$out/guest_blk.md"
  echo "guest-net.sh..." >&2
  bench/guest-net.sh "$bin/vpci" 5 >"$out/guest_net.md"
else
  echo "guest-blk.sh skipped (needs root; VPCI_BENCH_SKIP_GUEST=1 skips it)" >"$out/guest_blk.md"
  echo "guest-net.sh skipped (needs root; VPCI_BENCH_SKIP_GUEST=1 skips it)" >"$out/guest_net.md"
fi
load_end=$(load)

{
  echo "## Machine and command"
  echo
  echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC'); command: \`bench/run-all.sh $build $reps\`"
  echo "- CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(nproc) CPUs online"
  echo "- Kernel: $(uname -srm); compiler: $(${CXX:-g++} --version | head -1)"
  echo "- Load average (1/5/15 min) at start: $load_start; at end: $load_end"
  echo "- Figures: medians of $reps repetitions (scale: $(((reps + 1) / 2)) whole runs)"
  echo
  python3 bench/tables.py "$out"
  echo
  echo "## Real guest: virtio-blk, QEMU vs vpci over vfio-user"
  echo
  cat "$out/guest_blk.md"
  echo
  echo "## Real guest: virtio-net, QEMU vs vpci over vfio-user"
  echo
  cat "$out/guest_net.md"
} | tee "$out/tables.md"
