// Per-device free-space tables: a TOML file, kept by the VMM operator or a vendor, that
// says which extended configuration space ranges of a device model hold no registers.
// The reviewers of QEMU's PASID series asked for such a table as the basis of an
// "auto" placement (see docs/placement.md); the format is this project's:
//
//   format = 1                                   # optional; only 1 is defined
//   [devices."8086:46a6"]                         # vendor:device, hex
//   free = [ { offset = 0x400, length = 0x100 } ] # DWORD aligned, inside [0x100, 0x1000)
//   note = "datasheet rev 3, table 5-12"          # optional, shown in the output
//   [devices."8086:46a6:1028:0b1c"]               # ...:subsystem vendor:subsystem device
//   free = []                                     # known: no free space at all
//
// The most specific key that matches a device wins. An entry is authoritative: when it
// has no room the placement fails instead of guessing elsewhere.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"
#include "pci/capabilities.h"

namespace vpci::pci {

struct DeviceKey {
  std::uint16_t vendor = 0;
  std::uint16_t device = 0;
  std::optional<std::uint16_t> subsystem_vendor;  // both or neither
  std::optional<std::uint16_t> subsystem_device;

  [[nodiscard]] std::string to_string() const;  // "8086:46a6" or "8086:46a6:1028:0b1c"
  friend bool operator==(const DeviceKey&, const DeviceKey&) = default;
};

// "VVVV:DDDD" or "VVVV:DDDD:SVVV:SDDD" (hex, 1-4 digits each). A lone third field is
// refused: a subsystem ID means nothing without its subsystem vendor.
Result<DeviceKey> parse_device_key(std::string_view text);

struct FreeSpaceTableEntry {
  DeviceKey key;
  std::vector<ConfigRange> free;  // extended space, sorted, non-overlapping
  std::string note;
  std::uint32_t line = 0;  // where the entry starts in the file
};

struct FreeSpaceTable {
  std::string source;  // file name, for messages
  std::vector<FreeSpaceTableEntry> entries;

  // The entry for this device: with a subsystem match first, then vendor:device only.
  [[nodiscard]] const FreeSpaceTableEntry* lookup(
      std::uint16_t vendor, std::uint16_t device, std::optional<std::uint16_t> subsystem_vendor,
      std::optional<std::uint16_t> subsystem_device) const;
};

// Parses a table. Everything wrong is an error naming the file, the line and the
// entry: TOML syntax, unknown keys (a typo must not silently drop a range), ranges that
// are unaligned, empty, outside [0x100, 0x1000) or overlapping each other, and two keys
// that name the same device ("8086:46A6" and "8086:46a6") — a conflicting entry.
Result<FreeSpaceTable> parse_free_space_table(std::string_view text, std::string source);
Result<FreeSpaceTable> load_free_space_table(const std::filesystem::path& path);

}  // namespace vpci::pci
