#!/usr/bin/env bash
# Checks tests/model/notify.pml with spin (Debian package spin): the protocol as vpci
# implements it has no lost wake-up and no deadlock, with and without EVENT_IDX; with the
# device's last look before sleeping removed (-DNO_RECHECK) spin must find the lost
# wake-up in both — so the check can fail, and the re-check is what prevents it.
# Usage: check-model.sh   (exit 0 when all four verdicts are as expected; 77 without spin)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
command -v spin >/dev/null || { echo "check-model: spin missing (scripts/install-deps.sh)" >&2; exit 77; }
command -v cc >/dev/null || { echo "check-model: no C compiler for spin's verifier" >&2; exit 77; }
work=$(mktemp -d /tmp/vpci-model.XXXXXX)
trap 'rm -rf "$work"' EXIT
failures=0
verify() {  # verify NAME EXPECTED(ok|error) [-D...]
  local name=$1 expected=$2
  shift 2
  mkdir "$work/$name"
  (cd "$work/$name" && spin -a "$@" "$here/notify.pml" >spin.log 2>&1 &&
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
verify no-notify ok
verify event-idx ok -DEVENT_IDX
verify no-notify-without-recheck error -DNO_RECHECK
verify event-idx-without-recheck error -DEVENT_IDX -DNO_RECHECK
((failures == 0))
