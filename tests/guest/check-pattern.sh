#!/usr/bin/env bash
# Host side of the "blk" guest check: verifies that FILE (a virtio-blk backing image)
# holds the pattern the guest wrote at OFFSET with TAG (vpci.blk_offset / vpci.blk_tag,
# defaults 1048576 and vpci). The pattern is generated exactly as checks.sh does.
# Usage: check-pattern.sh FILE [OFFSET] [TAG]
set -euo pipefail
file=${1:?usage: check-pattern.sh FILE [OFFSET] [TAG]}
offset=${2:-1048576}
tag=${3:-vpci}
want=$(for ((i = 0; i < 1024; i++)); do printf '%-63s\n' "vpci-pattern $tag line $i"; done | md5sum | cut -d' ' -f1)
got=$(dd if="$file" bs=4096 skip=$((offset / 4096)) count=16 2>/dev/null | md5sum | cut -d' ' -f1)
if [[ $got == "$want" ]]; then
  echo "check-pattern: $file holds the guest's pattern at $offset (md5 $got)"
else
  echo "check-pattern: $file at $offset has md5 $got, the pattern is $want" >&2
  exit 1
fi
