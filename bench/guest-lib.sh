# shellcheck shell=bash
# Helpers shared by the real-guest benchmarks (bench/guest-blk.sh, bench/guest-net.sh):
# sourced, not run. They read /proc, so the caller runs as root like run-guest.sh.

ticks=$(getconf CLK_TCK)
cpu_seconds() {  # cpu_seconds PID: utime + stime so far (fields 14, 15 of /proc/PID/stat)
  awk -v t="$ticks" '{ sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / t }' "/proc/$1/stat" 2>/dev/null
}
# The QEMU process of the run-guest.sh started as $1: the qemu-system-x86_64 whose
# ancestors include $1.
qemu_of() {
  local p q
  for p in $(pgrep -x qemu-system-x86 || true); do
    q=$p
    while [[ $q -gt 1 ]]; do
      [[ $q == "$1" ]] && { echo "$p"; return; }
      q=$(awk '{ sub(/^.*\) /, ""); print $2 }' "/proc/$q/stat" 2>/dev/null || echo 1)
    done
  done
}
# median FILE VARIANT KEY COLUMN: the median of column COLUMN over the lines of FILE whose
# first two fields are VARIANT and KEY (empty when there are none).
median_of() {
  awk -v v="$2" -v t="$3" -v c="$4" '$1 == v && $2 == t { print $c }' "$1" | sort -g |
    awk '{ a[NR] = $1 } END { if (NR) print a[int((NR + 1) / 2)]; else print "" }'
}
# watch_cpu RUN_PID [SERVER_PID [CONSOLE_LOG]]: while RUN_PID (a guest run in the
# background) lives, samples the CPU seconds of the QEMU it started and of SERVER_PID;
# leaves the last samples in qemu_cpu and server_cpu (a process's counters vanish with
# it). With CONSOLE_LOG, also the server's CPU between the guest's VPCI-IDLE-START and
# VPCI-IDLE-END lines (the "idle" check), as a percentage of one core over that wall time,
# in server_idle_percent (empty without both lines).
watch_cpu() {
  local pid=$1 server=${2:-} console=${3:-} qpid="" c idle0="" idle1="" t0="" t1=""
  qemu_cpu="" server_cpu="" server_idle_percent=""
  while kill -0 "$pid" 2>/dev/null; do
    [[ -z $qpid ]] && qpid=$(qemu_of "$pid")
    if [[ -n $qpid ]]; then
      c=$(cpu_seconds "$qpid") && [[ -n $c ]] && qemu_cpu=$c
    fi
    [[ -n $server ]] && server_cpu=$(cpu_seconds "$server")
    if [[ -n $console && -n $server && -n $server_cpu ]]; then
      if [[ -z $idle0 ]] && grep -qs '^VPCI-IDLE-START' "$console"; then
        idle0=$server_cpu t0=$(date +%s.%N)
      elif [[ -n $idle0 && -z $idle1 ]] && grep -qs '^VPCI-IDLE-END' "$console"; then
        idle1=$server_cpu t1=$(date +%s.%N)
      fi
    fi
    sleep 0.2
  done
  if [[ -n $idle1 ]]; then
    server_idle_percent=$(awk -v a="$idle0" -v b="$idle1" -v s="$t0" -v e="$t1" \
      'BEGIN { printf "%.2f", (b - a) * 100 / (e - s) }')
  fi
}
# blk_serve_toml: the `vpci serve` configuration of the block benchmarks: one modern
# virtio-blk on disk.img, its socket in sock/ (both relative to the file's directory).
blk_serve_toml() {
  cat <<'EOF'
socket_dir = "sock"
[[device]]
name = "blk0"
kind = "virtio-blk"
transport = "modern"
path = "disk.img"
EOF
}
