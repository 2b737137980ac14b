// PCI devices read from Linux sysfs (Documentation/ABI/testing/sysfs-bus-pci): a
// device directory such as /sys/bus/pci/devices/0000:00:02.0, or a directory of them.
//
// `config` is the device's config space; its file size is the size of that space (256
// or 4096) even when a read returns less: without CAP_SYS_ADMIN the kernel returns
// only the first 64 bytes (128 for a CardBus bridge), so such a read is recorded as
// truncated for permissions, never taken as the whole space. `resource` gives, one
// "start end flags" line per resource, where the kernel placed each BAR, and so its
// size, which config space alone does not tell.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string_view>
#include <vector>

#include "base/error.h"
#include "pci/dump.h"

namespace vpci::pci {

// True when `dir` is a directory holding a `config` file.
bool is_sysfs_device_directory(const std::filesystem::path& dir);

// Loads one device directory: the config space, the address from the directory's name,
// the BAR sizes from `resource` when it can be read.
Result<DeviceDump> load_sysfs_device(const std::filesystem::path& dir);

// Loads every entry of `dir` that is a device directory named by its address, in
// address order; empty when there is none.
Result<std::vector<DeviceDump>> load_sysfs_devices(const std::filesystem::path& dir);

// The BAR sizes in the text of a `resource` file: the first six lines are BARs 0-5; a
// line of zeros is a BAR that is not implemented (nullopt). Errors start "LINE: ".
Result<std::array<std::optional<std::uint64_t>, 6>> parse_sysfs_resource(std::string_view text);

}  // namespace vpci::pci
