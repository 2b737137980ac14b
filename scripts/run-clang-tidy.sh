#!/usr/bin/env bash
# Runs clang-tidy (.clang-tidy at the root) over every library and CLI source file, using
# the compile commands of BUILD_DIR (default build/clang: configure it with
# `cmake --preset clang` first). The bug-class checks are errors (WarningsAsErrors in
# .clang-tidy); the style checks are reported and counted. Run by scripts/test-all.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build/clang}
[[ -f $build/compile_commands.json ]] ||
  { echo "run-clang-tidy: $build/compile_commands.json missing (cmake --preset clang)" >&2; exit 2; }
log=$(mktemp /tmp/vpci-clang-tidy.XXXXXX)
trap 'rm -f "$log"' EXIT
status=0
run-clang-tidy-14 -p "$build" -j "$(nproc)" -quiet \
  "^$PWD/(base|pci|virtio|devices|server|dt|domain|tools)/" >"$log" 2>&1 || status=$?
# Our own findings only (system headers are filtered by HeaderFilterRegex already).
findings=$(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -E '^/.*: (warning|error): ' | sort -u || true)
errors=$(grep -c ': error: ' <<<"$findings" || true)
warnings=$(grep -c ': warning: ' <<<"$findings" || true)
if ((status != 0 || errors > 0)); then
  grep ': error: ' <<<"$findings" >&2 || sed 's/\x1b\[[0-9;]*m//g' "$log" | tail -20 >&2
  echo "run-clang-tidy: $errors error(s) from the bug-class checks (exit $status)" >&2
  exit 1
fi
echo "run-clang-tidy: no errors; $warnings style warning(s):"
sed 's/.*\[\(.*\)\]$/\1/' <<<"$(grep ': warning: ' <<<"$findings" || true)" | sort | uniq -c | sort -rn | head -20
