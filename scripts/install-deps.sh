#!/usr/bin/env bash
# Installs every Debian package vpci, its tests, fuzzers and benchmarks need.
# Idempotent and non-interactive: packages already present are left alone.
set -euo pipefail

packages=(
  # toolchains and build
  build-essential cmake ninja-build clang-14 libclang-rt-14-dev clang-format clang-tidy
  # libraries (see DEVELOPERS.md for why each one)
  libexpected-dev libfmt-dev libspdlog-dev libcli11-dev libtomlplusplus-dev nlohmann-json3-dev
  libfdt-dev libpci-dev pciutils liburing-dev
  # tests and benchmarks
  libgtest-dev libgmock-dev libbenchmark-dev device-tree-compiler python3
  # dt-validate (dt-schema, core schemas) for the trees `vpci dt bind` writes
  dt-schema
  # real-guest test (tests/guest/): Debian tree with QEMU, busybox initramfs, xz for the
  # newer guest kernel's compressed modules
  debootstrap busybox-static cpio xz-utils
  # peer test (tests/peers/): libvfio-user's sample servers, built from ../shared/peers
  meson libjson-c-dev libcmocka-dev pkg-config
  # the notification protocol model (tests/model/)
  spin
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

sudo_cmd=()
if [[ $(id -u) -ne 0 ]]; then sudo_cmd=(sudo); fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -q
"${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
