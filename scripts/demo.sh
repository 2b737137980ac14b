#!/usr/bin/env bash
# The main job: installs what vpci needs, builds it, and decodes this machine's own
# PCI devices with `vpci inspect` (header, BARs, capabilities, free ranges,
# diagnostics), then writes an SVG map of the first device with extended space.
#
# (When `vpci serve` lands, this becomes a throwaway Linux guest driving our devices.)
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release

vpci=build/release/bin/vpci
shopt -s nullglob
devices=(/sys/bus/pci/devices/*)
if ((${#devices[@]} == 0)); then
  echo "demo: this machine exposes no PCI devices in sysfs; decoding the shared corpus instead"
  devices=(../shared/corpus/pci/microvm-virtio.lspci)
fi
for d in "${devices[@]}"; do
  "$vpci" inspect "$d"
  echo
done
map=build/release/config-map.svg
"$vpci" inspect "${devices[0]}" --map > "$map"
echo "demo: SVG map of ${devices[0]} written to $map"
