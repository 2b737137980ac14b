#!/usr/bin/env bash
# Real-guest virtio-blk throughput: vpci's virtio-blk served by `vpci serve` over
# vfio-user (QEMU's vfio-user-pci) against QEMU's own virtio-blk-pci, QEMU on a null
# block driver and qemu-storage-daemon over vhost-user, same Linux guest, in one run
# (issues 9 and 19; docs/PERFORMANCE.md "Real guest").
#
#   sudo bench/guest-blk.sh [VPCI_BINARY] [ROUNDS]
#     VPCI_BINARY  default build/release/bin/vpci
#     ROUNDS       counted boots per variant, default 5, after the warm-up round; the
#                  variants are interleaved round by round so load from other users of
#                  the machine hits them alike
#   env: PERF_SECONDS  time cap of each guest test (default 3)
#        VARIANTS      which variants, in boot order (default "qemu-wb qemu-uring qemu-null
#                      qsd vpci vpci-poll vpci-mmap vpci-msgdma")
#        PERF_TESTS    comma list of guest tests to run (default all; see the table)
#        WARMUP        1 (default): boot every variant once first and discard its results;
#                      0: no warm-up round
#        POLL_US       poll window of vpci-poll and vpci-mmap (default 100)
#        COAL_US       interrupt_delay_us of vpci-coal (default 50)
#        COAL_BATCH    interrupt_batch of vpci-coal (default 4)
#        IDLE_SECONDS  after the tests the guest idles this long (the "idle" check) and
#                      the server's CPU meanwhile is reported (default 5; 0: no idle phase)
#        KEEP=1        keep the work directory (console logs, server logs and stats)
#
# Each boot runs the "blkperf" check of tests/guest/initramfs/checks.sh on the first
# virtio-blk disk: O_DIRECT sequential 1 MiB and 4 KiB, random 4 KiB, write then read,
# at queue depth 1, and random 4 KiB at queue depth 4. Before every boot the 64 MiB image
# is deleted and written afresh (dd of zeroes, fsync): every variant starts from the same
# state, all blocks allocated on the host and clean in its page cache, and no boot
# inherits dirty pages from the previous one. Variants (modern interface, one queue,
# split ring unless said):
#   qemu-wb     -drive cache=writeback,aio=threads (QEMU's defaults: host page cache,
#               thread pool) + -device virtio-blk-pci,disable-legacy=on
#   qemu-uring  the same with aio=io_uring
#   qemu-null   -blockdev null-co of the image's size, read-zeroes=on: no file at all, the
#               in-process floor (writes are dropped; reads still fill the guest's buffer
#               with zeroes, as a real read writes every byte: read-zeroes=off would skip
#               that and be cheaper than any device could be; set explicitly rather than
#               left to QEMU's default)
#   qsd         the tree's qemu-storage-daemon (the same QEMU build) exporting the image
#               with --export type=vhost-user-blk (writable, 1 queue; cache.direct=off and
#               aio=threads like qemu-wb) on a unix socket; the guest attaches with
#               -device vhost-user-blk-pci. It runs chrooted in the tree like QEMU.
#   vpci        `vpci serve --stats` modern virtio-blk on the image (buffered I/O on the
#               host, like cache=writeback), vfio-user-pci, guest RAM a shared memfd the
#               server maps (interrupt mode: the guest rings for every request)
#   vpci-poll   the same with `poll_us = $POLL_US`: the device polls the ring after each
#               request with the guest's notifications suppressed
#   vpci-msgdma vpci with run-guest.sh --plain-memory: guest RAM not shared, the device
#               reaches it only by DMA_READ/DMA_WRITE messages (message-DMA mode)
#   vpci-mmap   vpci-poll with `notify = "mapped"`: QEMU maps the notification area
#               (a sparse mmap of BAR4 with a memfd), so doorbells are guest memory writes,
#               never messages; the device polls (its window, then every 1 ms when idle)
#   vpci-coal   vpci with interrupt coalescing: `interrupt_delay_us = $COAL_US`,
#               `interrupt_batch = $COAL_BATCH` (one interrupt for up to that many
#               completions, at most that late)
#   not in the default set: qemu-none (cache=none: host O_DIRECT) and qemu-wb-packed
#               (qemu-wb with packed=on)
# Prints markdown tables: the medians (MB/s and IOPS) of every variant; for each vpci
# variant, the median of the per-round ratios vpci/peer of MB/s against every other
# variant; the median CPU seconds per boot of QEMU and of the server process (vpci serve
# or qemu-storage-daemon, from /proc/PID/stat at the server's start and at the boot's end);
# per request (median over rounds): the server's CPU microseconds (server CPU of the
# boot / the guest's blkperf operations of the boot, so boot-time I/O and idle time are
# charged to the tests' requests), and for vpci, doorbell messages (posted REGION_WRITE
# to BAR 4) and interrupts per request the device completed (`vpci serve --stats`);
# then the server statistics of the last vpci boot. Needs root (run-guest.sh, chroot).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
vpci_bin=$(realpath "${1:-$repo/build/release/bin/vpci}")
rounds=${2:-5}
seconds=${PERF_SECONDS:-3}
warmup=${WARMUP:-1}
poll_us=${POLL_US:-100}
coal_us=${COAL_US:-50}
coal_batch=${COAL_BATCH:-4}
idle_seconds=${IDLE_SECONDS:-5}
checks=blkperf
((idle_seconds > 0)) && checks=blkperf,idle
image_mib=64
root=${VPCI_GUEST_CACHE:-/var/cache/vpci-guest}/root
[[ -x $vpci_bin ]] || { echo "guest-blk: no vpci binary at $vpci_bin" >&2; exit 2; }
[[ $(id -u) -eq 0 ]] || { echo "guest-blk: must run as root (tests/guest/run-guest.sh)" >&2; exit 2; }
"$repo/tests/guest/prepare.sh" >/dev/null

# shellcheck source=guest-lib.sh
source "$here/guest-lib.sh"

work=$(mktemp -d /tmp/vpci-guest-blk.XXXXXX)
server_pid=""
cleanup() {
  if [[ -n $server_pid ]]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  # The empty mount point the bind mounts of $work (run-guest.sh --bind, start_qsd) left in
  # the tree; rmdir removes nothing else.
  rmdir "$root$work" 2>/dev/null || true
  if [[ ${KEEP:-0} == 1 ]]; then echo "guest-blk: artifacts in $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
blk_serve_toml >"$work/serve.toml"
{ cat "$work/serve.toml"; echo "poll_us = $poll_us"; } >"$work/serve-poll.toml"
{ cat "$work/serve-poll.toml"; echo 'notify = "mapped"'; } >"$work/serve-mmap.toml"
{ cat "$work/serve.toml"; echo "interrupt_delay_us = $coal_us"; echo "interrupt_batch = $coal_batch"; } \
  >"$work/serve-coal.toml"


# start_qsd LOG: qemu-storage-daemon exporting the image on $work/qsd/blk0.sock, chrooted
# in the tree in a private mount namespace where $work is bind-mounted at its own path
# (unshare and chroot exec, so $! is the daemon's PID); waits for the socket.
qsd_command=(/usr/bin/qemu-storage-daemon
  --blockdev "driver=file,node-name=file0,filename=$work/disk.img,cache.direct=off,aio=threads"
  --blockdev "driver=raw,node-name=disk0,file=file0"
  --export "type=vhost-user-blk,id=export0,node-name=disk0,addr.type=unix,addr.path=$work/qsd/blk0.sock,writable=on,num-queues=1")
start_qsd() {
  rm -rf "$work/qsd" && mkdir "$work/qsd"
  # shellcheck disable=SC2016  # expanded by the inner bash
  unshare --mount --propagation private bash -c \
    'mkdir -p "$1$2" && mount --bind "$2" "$1$2" && exec chroot "$1" "${@:3}"' \
    qsd "$root" "$work" "${qsd_command[@]}" >"$1" 2>&1 &
  server_pid=$!
  for _ in $(seq 100); do [[ -S $work/qsd/blk0.sock ]] && return; sleep 0.1; done
  echo "guest-blk: qemu-storage-daemon did not create its socket:" >&2; cat "$1" >&2; exit 1
}

# boot VARIANT ROUND: one guest run; appends "variant key value round" lines to results
# (test lines: "variant test MB/s IOPS round ops"); round 0 is the warm-up, not recorded.
boot() {
  local variant=$1 round=$2 log="$work/$1-$2.log" server_log="$work/serve-$1-$2.log"
  local args=() pid qcpu="" scpu0="" scpu="" ops
  rm -f "$work/disk.img"
  dd if=/dev/zero of="$work/disk.img" bs=1M count="$image_mib" conv=fsync status=none
  case $variant in
    qemu-none|qemu-wb|qemu-wb-packed|qemu-uring)
      local cache=writeback aio=threads packed=off
      [[ $variant == qemu-none ]] && cache=none
      [[ $variant == qemu-uring ]] && aio=io_uring
      [[ $variant == qemu-wb-packed ]] && packed=on
      args=(--bind "$work" --qemu-arg -drive
            --qemu-arg "file=$work/disk.img,if=none,id=d,format=raw,cache=$cache,aio=$aio"
            --qemu-arg -device --qemu-arg "virtio-blk-pci,drive=d,disable-legacy=on,packed=$packed") ;;
    qemu-null)
      args=(--qemu-arg -blockdev --qemu-arg "driver=null-co,node-name=d,size=$((image_mib << 20)),read-zeroes=on"
            --qemu-arg -device --qemu-arg "virtio-blk-pci,drive=d,disable-legacy=on") ;;
    qsd)
      start_qsd "$server_log"
      scpu0=$(cpu_seconds "$server_pid")
      args=(--bind "$work" --qemu-arg -chardev --qemu-arg "socket,id=qsd0,path=$work/qsd/blk0.sock"
            --qemu-arg -device --qemu-arg "vhost-user-blk-pci,chardev=qsd0,num-queues=1,disable-legacy=on") ;;
    vpci|vpci-poll|vpci-mmap|vpci-msgdma|vpci-coal)
      local config=$work/serve.toml
      [[ $variant == vpci-poll ]] && config=$work/serve-poll.toml
      [[ $variant == vpci-mmap ]] && config=$work/serve-mmap.toml
      [[ $variant == vpci-coal ]] && config=$work/serve-coal.toml
      "$vpci_bin" serve "$config" --stats >"$server_log" 2>&1 &
      server_pid=$!
      for _ in $(seq 100); do grep -qs '^vpci serve: ready' "$server_log" && break; sleep 0.1; done
      scpu0=$(cpu_seconds "$server_pid")
      args=(--socket "$work/sock/blk0.sock")
      [[ $variant == vpci-msgdma ]] && args+=(--plain-memory) ;;
    *) echo "guest-blk: unknown variant $variant" >&2; exit 2 ;;
  esac
  "$repo/tests/guest/run-guest.sh" "${args[@]}" --checks "$checks" --timeout 300 \
    --append "vpci.perf_seconds=$seconds vpci.perf_tests=${PERF_TESTS:-all} vpci.idle_seconds=$idle_seconds" \
    --log "$log" >/dev/null 2>"$log.err" &
  pid=$!
  watch_cpu "$pid" "$server_pid" "$log"
  qcpu=$qemu_cpu
  [[ -n $server_cpu ]] && scpu=$(awk -v a="$server_cpu" -v b="${scpu0:-0}" 'BEGIN { printf "%.2f", a - b }')
  wait "$pid" || { echo "guest-blk: $variant round $round: run-guest.sh failed:" >&2; cat "$log.err" "$log" >&2; exit 1; }
  if [[ -n $server_pid ]]; then
    kill -TERM "$server_pid"; wait "$server_pid" || true; server_pid=""
  fi
  ops=$(awk '/^VPCI-PERF / { for (i = 5; i <= NF; i++) if ($i ~ /^ops=/) n += substr($i, 5) } END { print n + 0 }' "$log")
  echo "guest-blk: $( ((round > 0)) && echo "round $round" || echo "warm-up (discarded)") $variant:" \
    "$(grep '^VPCI-PERF ' "$log" | awk '{ printf "%s %s MB/s; ", $2, $3 }')qemu cpu ${qcpu:-?} s${scpu:+, server cpu $scpu s}" >&2
  ((round > 0)) || return 0
  {
    grep '^VPCI-PERF ' "$log" | awk -v v="$variant" -v r="$round" '{ print v, $2, $3, $4, r, substr($5, 5) }'
    echo "$variant cpu-qemu $qcpu $round"
    echo "$variant requests $ops $round"
    [[ -n $server_idle_percent ]] && echo "$variant idle-cpu-percent $server_idle_percent $round"
    if [[ -n $scpu ]]; then
      echo "$variant cpu-server $scpu $round"
      awk -v v="$variant" -v c="$scpu" -v n="$ops" -v r="$round" \
        'BEGIN { if (n > 0) printf "%s us-per-request %.1f %s\n", v, c * 1e6 / n, r }'
    fi
    # vpci serve --stats: "blk0: N requests: ...", "blk0: ... K interrupts signalled",
    # "blk0:   REGION_WRITE region 4 posted  D messages ..." (BAR 4 holds the notify doorbells)
    if [[ $variant == vpci* ]]; then awk -v v="$variant" -v r="$round" '
      !/^vpci serve: stats / { next }
      / requests: / { n = $5 }
      /interrupts signalled/ { irqs = $(NF - 2) }
      /REGION_WRITE region 4 posted/ { for (i = 1; i <= NF; i++) if ($i == "messages") bells = $(i - 1) }
      END { if (n > 0) printf "%s doorbells-per-request %.3f %s\n%s irqs-per-request %.3f %s\n",
                              v, bells / n, r, v, irqs / n, r }' "$server_log"; fi
  } >>"$work/results"
}

read -r -a variants <<<"${VARIANTS:-qemu-wb qemu-uring qemu-null qsd vpci vpci-poll vpci-mmap vpci-msgdma}"
for ((r = warmup > 0 ? 0 : 1; r <= rounds; r++)); do
  ((r == 0)) && echo "guest-blk: warm-up round: every variant boots once, results discarded" >&2
  for v in "${variants[@]}"; do boot "$v" "$r"; done
done

ours=() peers=()
for v in "${variants[@]}"; do if [[ $v == vpci* ]]; then ours+=("$v"); else peers+=("$v"); fi; done
# The per-round ratios of MB/s, vpci variant / peer: "vpci/PEER test ratio".
awk -v ours="${ours[*]}" -v peers="${peers[*]}" '
  NF == 6 { mb[$1, $2, $5] = $3; tests[$2]; rounds[$5] }
  END {
    n = split(ours, o, " "); m = split(peers, p, " ")
    for (t in tests) for (r in rounds) for (i = 1; i <= n; i++) for (j = 1; j <= m; j++)
      if ((o[i], t, r) in mb && (p[j], t, r) in mb && mb[p[j], t, r] > 0)
        printf "%s/%s %s %.4f\n", o[i], p[j], t, mb[o[i], t, r] / mb[p[j], t, r]
  }' "$work/results" >"$work/ratios"

median() { median_of "$work/results" "$@"; }  # median VARIANT KEY COLUMN(3 = MB/s, 4 = IOPS)
# cell FORMAT VALUE: VALUE formatted, or "?" when there is none (a missing measurement).
cell() { if [[ -n $2 ]]; then awk -v x="$2" -v f="$1" 'BEGIN { printf f, x }'; else printf '?'; fi; }
title() {
  case $1 in
    qemu-none) echo "QEMU cache=none" ;; qemu-wb) echo "QEMU writeback threads" ;;
    qemu-uring) echo "QEMU writeback io_uring" ;; qemu-wb-packed) echo "QEMU writeback packed=on" ;;
    qemu-null) echo "QEMU null-co" ;; qsd) echo "qemu-storage-daemon vhost-user" ;;
    vpci) echo "vpci" ;; vpci-poll) echo "vpci poll_us=$poll_us" ;;
    vpci-mmap) echo "vpci mapped notify" ;; vpci-msgdma) echo "vpci message DMA" ;;
    vpci-coal) echo "vpci coalesced ${coal_us} us/${coal_batch}" ;;
  esac
}
tests=()
for t in seqwrite-1M seqread-1M seqwrite-4k seqread-4k randwrite-4k randread-4k randwrite-4k-qd4 randread-4k-qd4; do
  [[ ,${PERF_TESTS:-all}, == ,all, || ,${PERF_TESTS:-all}, == *,$t,* ]] && tests+=("$t")
done
# table TITLE COLUMN...: the header of a markdown table with one column per variant.
table() {
  local header="| $1 |" rule="|---|" v
  shift
  for v in "$@"; do header+=" $(title "$v") |"; rule+="---:|"; done
  echo "$header"
  echo "$rule"
}
echo
echo "Medians of $rounds boots per variant (interleaved$( ((warmup > 0)) && echo ", after a warm-up round")), $seconds s cap per test; MB = 10^6 B."
echo
table "test: MB/s (IOPS)" "${variants[@]}"
for t in "${tests[@]}"; do
  line="| $t |"
  for v in "${variants[@]}"; do line+=" $(cell "%.1f" "$(median "$v" "$t" 3)") ($(cell "%d" "$(median "$v" "$t" 4)")) |"; done
  echo "$line"
done
if ((${#ours[@]} && ${#peers[@]})); then
  for o in "${ours[@]}"; do
    echo
    table "$(title "$o") / peer (median of per-round MB/s ratios)" "${peers[@]}"
    for t in "${tests[@]}"; do
      line="| $t |"
      for p in "${peers[@]}"; do line+=" $(cell "%.2f" "$(median_of "$work/ratios" "$o/$p" "$t" 3)") |"; done
      echo "$line"
    done
  done
fi
servers=()
for v in "${variants[@]}"; do [[ $v == vpci* || $v == qsd ]] && servers+=("$v"); done
echo
table "CPU seconds per boot (median; boot + all tests)" "${variants[@]}"
line="| QEMU process |"
for v in "${variants[@]}"; do line+=" $(median "$v" cpu-qemu 3) |"; done
echo "$line"
if ((${#servers[@]})); then
  line="| server process (vpci serve, qemu-storage-daemon) |"
  for v in "${variants[@]}"; do
    if [[ $v == vpci* || $v == qsd ]]; then line+=" $(cell "%s" "$(median "$v" cpu-server 3)") |"; else line+=" n/a |"; fi
  done
  echo "$line"
  echo
  table "per guest request (median over boots)" "${servers[@]}"
  line="| guest requests per boot (blkperf ops) |"
  for v in "${servers[@]}"; do line+=" $(median "$v" requests 3) |"; done
  echo "$line"
  line="| server CPU us per request |"
  for v in "${servers[@]}"; do line+=" $(cell "%.1f" "$(median "$v" us-per-request 3)") |"; done
  echo "$line"
  line="| doorbell messages per request (vpci serve --stats) |"
  for v in "${servers[@]}"; do
    if [[ $v == qsd ]]; then line+=" n/a |"; else line+=" $(cell "%.2f" "$(median "$v" doorbells-per-request 3)") |"; fi
  done
  echo "$line"
  line="| interrupts per request (vpci serve --stats) |"
  for v in "${servers[@]}"; do
    if [[ $v == qsd ]]; then line+=" n/a |"; else line+=" $(cell "%.2f" "$(median "$v" irqs-per-request 3)") |"; fi
  done
  echo "$line"
  if ((idle_seconds > 0)); then
    line="| server CPU while the guest idles ${idle_seconds} s, % of one core |"
    for v in "${servers[@]}"; do line+=" $(cell "%.2f" "$(median "$v" idle-cpu-percent 3)") |"; done
    echo "$line"
  fi
fi
for v in "${ours[@]}"; do
  [[ -f $work/serve-$v-$rounds.log ]] || continue
  echo
  echo "Server statistics of the last $(title "$v") boot (vpci serve --stats):"
  grep '^vpci serve: stats' "$work/serve-$v-$rounds.log" | sed 's/^vpci serve: stats /    /'
  grep -h '^VPCI-RESULT blkperf' "$work/$v-$rounds.log" | sed 's/^/    guest: /'
done
