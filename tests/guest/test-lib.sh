# Shared by the CTest drivers of the real-guest tests (guest-test.sh, serve-test.sh):
# the skip/root preamble and failure bookkeeping. Source it after setting `test_name`.
#   VPCI_SKIP_GUEST=1 skips the test (exit 77, CTest's SKIP_RETURN_CODE); anything else
#   that keeps it from running is a failure.
if [[ ${VPCI_SKIP_GUEST:-0} == 1 ]]; then
  echo "$test_name: SKIPPED because VPCI_SKIP_GUEST=1"
  exit 77
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "$test_name: FAILED: needs root (debootstrap, chroot, mounts); set VPCI_SKIP_GUEST=1 to skip" >&2
  exit 1
fi

failures=0
fail() { echo "$test_name: FAIL: $*" >&2; failures=$((failures + 1)); }
expect_line() {  # expect_line FILE REGEX WHAT
  grep -Eq "$2" "$1" || fail "$3 (no line matching '$2' in $1)"
}
