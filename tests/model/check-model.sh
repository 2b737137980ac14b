#!/usr/bin/env bash
# Checks the notification models with spin (Debian package spin):
#   notify.pml (available buffer notifications, the poll window): no lost wake-up and no
#     deadlock, with and without EVENT_IDX; with the device's last look before sleeping
#     removed (-DNO_RECHECK) spin must find the lost wake-up in both — so the check can
#     fail, and the re-check is what prevents it.
#   interrupt.pml (used buffer notifications, interrupt coalescing): no lost interrupt,
#     with and without EVENT_IDX and coalescing; with a held check that compares only the
#     newest entry (-DCHECK_LAST_ONLY) spin must find the lost interrupt.
# Usage: check-model.sh   (exit 0 when every verdict is as expected; 77 without spin)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
command -v spin >/dev/null || { echo "check-model: spin missing (scripts/install-deps.sh)" >&2; exit 77; }
command -v cc >/dev/null || { echo "check-model: no C compiler for spin's verifier" >&2; exit 77; }
work=$(mktemp -d /tmp/vpci-model.XXXXXX)
trap 'rm -rf "$work"' EXIT
failures=0
verify() {  # verify MODEL NAME EXPECTED(ok|error) [-D...]
  local model=$1 name=$2 expected=$3
  shift 3
  mkdir "$work/$name"
  (cd "$work/$name" && spin -a "$@" "$here/$model.pml" >spin.log 2>&1 &&
    cc -O2 -DSAFETY -o pan pan.c >cc.log 2>&1 && ./pan -m100000 >pan.log 2>&1) ||
    { echo "check-model: $name: spin or its verifier did not run" >&2; cat "$work/$name"/*.log >&2; failures=$((failures + 1)); return; }
  local errors
  errors=$(sed -n 's/.*errors: \([0-9]*\).*/\1/p' "$work/$name/pan.log")
  local states
  states=$(sed -n 's/^ *\([0-9e+.]*\) states, stored.*/\1/p' "$work/$name/pan.log" | head -1)
  if [[ $expected == ok && $errors == 0 ]] || [[ $expected == error && ${errors:-0} -gt 0 ]]; then
    echo "check-model: $name: ${errors} error(s) as expected ($states states)"
    if [[ $expected == error ]]; then
      grep -m1 'invalid end state\|assertion violated' "$work/$name/pan.log" | sed 's/^/check-model:   /' || true
    fi
  else
    echo "check-model: $name: expected $expected, spin found ${errors:-?} error(s)" >&2
    cat "$work/$name/pan.log" >&2
    failures=$((failures + 1))
  fi
}
verify notify no-notify ok
verify notify event-idx ok -DEVENT_IDX
verify notify no-notify-without-recheck error -DNO_RECHECK
verify notify event-idx-without-recheck error -DEVENT_IDX -DNO_RECHECK
verify interrupt coalesced-flags ok
verify interrupt coalesced-event-idx ok -DEVENT_IDX
verify interrupt uncoalesced-flags ok -DNO_COALESCE
verify interrupt uncoalesced-event-idx ok -DEVENT_IDX -DNO_COALESCE
verify interrupt uncoalesced-event-idx-last-only ok -DEVENT_IDX -DNO_COALESCE -DCHECK_LAST_ONLY
verify interrupt coalesced-event-idx-last-only error -DEVENT_IDX -DCHECK_LAST_ONLY
((failures == 0))
