#!/usr/bin/env bash
# Decodes the config spaces a guest run dumped (VPCI-CONFIG lines of its console log,
# from the "config" check) with the host's lspci: lspci -F reads the lspci -xxxx layout.
# Usage: decode-config.sh CONSOLE_LOG [lspci options, default -vv -nn]
set -euo pipefail
log=${1:?usage: decode-config.sh CONSOLE_LOG [lspci options]}
shift
(($#)) || set -- -vv -nn
dump=$(mktemp)
trap 'rm -f "$dump"' EXIT
# lspci's dump reader wants "bus:dev.fn" headers followed by "off: bytes" lines.
awk '$1 == "VPCI-CONFIG" {
  addr = $2; sub(/^[0-9a-f]+:/, "", addr)
  if (addr != last) { if (last != "") print ""; print addr " vpci guest dump"; last = addr }
  line = $3; for (i = 4; i <= NF; i++) line = line " " $i; print line }' "$log" >"$dump"
[[ -s $dump ]] || { echo "decode-config: no VPCI-CONFIG lines in $log" >&2; exit 1; }
# -vv looks up kernel modules for the host, irrelevant for a dump: drop that complaint.
lspci -F "$dump" "$@" 2> >(grep -v "libkmod" >&2)
