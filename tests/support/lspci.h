// How the tests run the real lspci. Names must not depend on the machine: with udev
// installed (/lib/udev/hwdb.bin, as on most real systems) libpci looks names up in
// udev's hwdb before pci.ids and, for example, names virtio subsystem 1af4:1100
// "Virtio 1.0 block device" instead of "Device". The tests pin the name source to
// pci.ids by disabling the hwdb (libpci access parameter `hwdb.disable`).
#pragma once

namespace vpci::testing {

// "lspci -O hwdb.disable=1": the start of every lspci command line a test runs.
inline constexpr const char* kLspci = "lspci -O hwdb.disable=1";
// The same as separate arguments, for runners that take an argument vector.
inline constexpr const char* kLspciArgv[] = {"lspci", "-O", "hwdb.disable=1"};

}  // namespace vpci::testing
