#!/usr/bin/env bash
# Runs every libFuzzer target in build/fuzz/bin for SECONDS each, starting from its
# seed corpus in fuzz/corpus/<target>/ and its dictionary fuzz/<target>.dict if there is
# one (new inputs go to a scratch copy, so the repository corpus only grows on
# purpose). A crash leaves its input in build/fuzz/crashes/; add it to fuzz/corpus/<target>/ as a regression input once fixed.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
crashes=build/fuzz/crashes
mkdir -p "$crashes"
status=0
for fuzzer in build/fuzz/bin/*_fuzzer; do
  name=$(basename "$fuzzer")
  work=$(mktemp -d)
  cp -r "fuzz/corpus/$name/." "$work/" 2>/dev/null || true
  dict=()
  [[ -f "fuzz/$name.dict" ]] && dict=(-dict="fuzz/$name.dict")
  echo "fuzz: $name for ${seconds}s"
  if ! "$fuzzer" "$work" "${dict[@]}" -max_total_time="$seconds" -print_final_stats=1 \
        -artifact_prefix="$crashes/$name-" >"$crashes/$name.log" 2>&1; then
    echo "fuzz: $name FAILED; see $crashes/$name.log"
    tail -30 "$crashes/$name.log"
    status=1
  else
    grep -E 'stat::number_of_executed_units' "$crashes/$name.log" || true
  fi
  rm -rf "$work"
done
exit $status
