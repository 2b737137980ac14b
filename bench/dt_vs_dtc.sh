#!/usr/bin/env bash
# Times `vpci dt bind` on 10,000 masters across 64 SMMUs against `dtc` compiling
# the same output tree, all in one run on this machine, and prints a Markdown table
# for docs/PERFORMANCE.md.
#
#   bench/dt_vs_dtc.sh [BUILD_DIR] [RUNS]      defaults: build/release 15
#
# The trees come from dt_bind_bench --write-trees (the same synthetic host and
# partial tree as the Google Benchmark). Every figure is wall time of a whole
# process (start, file I/O, exit included), median of RUNS runs, the commands
# interleaved run by run so that machine noise hits all of them alike.
set -euo pipefail

build=${1:-build/release}
runs=${2:-15}
vpci="$build/bin/vpci"
bench="$build/bin/dt_bind_bench"
for tool in "$vpci" "$bench"; do
  [[ -x $tool ]] || { echo "dt_vs_dtc.sh: $tool not built (cmake --build --preset release)" >&2; exit 2; }
done
command -v dtc >/dev/null || { echo "dt_vs_dtc.sh: dtc not installed" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$bench" --write-trees="$work"
# The output tree once, as DTB and as (reference-keeping) DTS, for dtc.
"$vpci" dt bind --host "$work/host.dtb" --partial "$work/partial.dtb" \
  -o "$work/guest.dtb" --dts-out "$work/guest.dts" --map-out "$work/map.json" 2>/dev/null
masters=$(grep -c '"vsid"' "$work/map.json")

names=("vpci dt bind (DTB in; DTB + JSON map out)"
       "vpci dt bind (DTB in; DTB + DTS + JSON map out)"
       "dtc -I dts -O dtb guest.dts (compile the output tree)"
       "dtc -I dtb -O dtb guest.dtb (reload + rewrite the output blob)")
cmds=("$vpci dt bind --host $work/host.dtb --partial $work/partial.dtb -o $work/o1.dtb --map-out $work/o1.json"
      "$vpci dt bind --host $work/host.dtb --partial $work/partial.dtb -o $work/o2.dtb --dts-out $work/o2.dts --map-out $work/o2.json"
      "dtc -I dts -O dtb -o $work/o3.dtb $work/guest.dts"
      "dtc -I dtb -O dtb -o $work/o4.dtb $work/guest.dtb")

declare -a samples
for ((r = 0; r < runs; r++)); do
  for i in "${!cmds[@]}"; do
    start=$(date +%s%N)
    ${cmds[$i]} >/dev/null 2>&1
    end=$(date +%s%N)
    samples[$i]+="$(( (end - start) / 1000 )) "
  done
done

median_us() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
reference=$(median_us "${samples[2]}")

echo "Machine: $(uname -srm); $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'); $(nproc) CPUs"
echo "dtc: $(dtc --version | head -1); host.dtb $(stat -c %s "$work/host.dtb") bytes, partial.dtb $(stat -c %s "$work/partial.dtb") bytes, guest.dtb $(stat -c %s "$work/guest.dtb") bytes, guest.dts $(stat -c %s "$work/guest.dts") bytes; $masters bound streams"
echo "Command: bench/dt_vs_dtc.sh $build $runs"
echo
echo "| Command | median ms | ratio to dtc compiling the output |"
echo "|---|---:|---:|"
for i in "${!cmds[@]}"; do
  m=$(median_us "${samples[$i]}")
  awk -v n="${names[$i]}" -v m="$m" -v ref="$reference" 'BEGIN {printf "| %s | %.1f | %.2f |\n", n, m / 1000, m / ref}'
done
