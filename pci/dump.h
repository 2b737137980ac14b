// Reading and writing configuration-space dumps.
//
// Formats read:
//   * `lspci -x`, `-xxx`, `-xxxx` text, with or without `-v` lines, many devices per
//     file, with or without a PCI domain — the grammar of pciutils lib/dump.c: a device
//     line is "BB:DD.F " or "DDDD:BB:DD.F " (trailing space required); a data line is a
//     2-8 hex digit offset, ": ", then two-digit hex bytes separated by single spaces;
//     a blank line ends the device; any other line is ignored.
//   * raw binary, as read from a sysfs `config` file (64, 256 or 4096 bytes, or any
//     length up to 4096);
//   * a sysfs device directory (`/sys/bus/pci/devices/0000:00:02.0`), whose `config`
//     file is read and whose name gives the address, with its BAR sizes from the
//     `resource` file when it can be read; or a directory of such directories
//     (`/sys/bus/pci/devices`): every device in it (pci/sysfs_source.h).
// Damaged text is an error, never a silently different config space: a device whose
// rows leave a gap or repeat bytes, an impossible address (device > 0x1f, function >
// 7), the same device twice.
// Format written: `lspci -xxxx` style text that `lspci -F FILE` decodes — the device
// line with its trailing space, every byte of the space, a terminating blank line.
#pragma once

#include <array>
#include <compare>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"

namespace vpci::pci {

struct DeviceAddress {
  std::uint32_t domain = 0;
  std::uint8_t bus = 0;
  std::uint8_t device = 0;    // 0-31
  std::uint8_t function = 0;  // 0-7

  // "0000:00:02.0"
  [[nodiscard]] std::string to_string() const;
  friend bool operator==(const DeviceAddress&, const DeviceAddress&) = default;
  // Bus order: domain, bus, device, function.
  friend auto operator<=>(const DeviceAddress&, const DeviceAddress&) = default;
};

// Parses "BB:DD.F" or "DDDD:BB:DD.F" (hex fields, as lspci and sysfs write them).
Result<DeviceAddress> parse_device_address(std::string_view text);

// Where a dump's bytes came from, so that messages can say why some are missing.
enum class DumpOrigin : std::uint8_t { kLspciText, kRawFile, kSysfs };

// Why a dump holds fewer bytes than its device's config space.
enum class Truncation : std::uint8_t {
  kNone,
  kShortDump,    // the file stops early (`lspci -x` keeps 64 bytes)
  kPermissions,  // sysfs: without CAP_SYS_ADMIN the kernel shows only the first 64
                 // bytes (128 for CardBus) of `config`
};
std::string_view truncation_name(Truncation truncation);  // "none", "short-dump", "permissions"

struct DeviceDump {
  DeviceAddress address;
  // The readable bytes, from offset 0 without a gap.
  std::vector<std::uint8_t> config;
  // The size of the device's config space, 256 or 4096: for sysfs the size of its
  // `config` file; otherwise 256 for up to 256 bytes and 4096 beyond (lspci -xxx
  // dumps 256 bytes, -xxxx all 4096 of a PCIe device).
  std::uint32_t space_size = 0;
  Truncation truncation = Truncation::kNone;  // kNone iff config.size() == space_size
  DumpOrigin origin = DumpOrigin::kLspciText;
  std::filesystem::path file;  // the file the bytes were read from
  std::size_t line = 0;        // lspci text: the 1-based line of the device line
  // BAR sizes the source knows (sysfs `resource`); nullopt when unknown or unused.
  std::array<std::optional<std::uint64_t>, 6> bar_sizes{};

  [[nodiscard]] bool truncated() const { return truncation != Truncation::kNone; }
};

// Sets `space_size` and `truncation` from the bytes read, for dumps whose source
// states no size (text, raw files): anything short of 256 or 4096 is truncated.
void classify_dump_size(DeviceDump& dump);

// Parses lspci text. A device line without data yields a device with no bytes.
// Malformed data lines, gaps, repeated rows, impossible addresses and repeated devices
// are errors starting "LINE:COL: " (or "LINE: " for a whole line) and saying what was
// wrong.
Result<std::vector<DeviceDump>> parse_lspci_text(std::string_view text);

// Wraps raw config bytes (a sysfs config file) as one device.
Result<DeviceDump> parse_raw_config(std::span<const std::uint8_t> bytes,
                                    DeviceAddress address = {});

// Loads SOURCE: an lspci text file, a raw config file, a sysfs device directory, or a
// directory of sysfs device directories.
// Text and binary are told apart by content (text has only printable ASCII and
// whitespace).
Result<std::vector<DeviceDump>> load_dump_source(const std::filesystem::path& source);

// Writes one device as lspci -xxxx text: "DDDD:BB:DD.F <comment>\n", 16 bytes per
// line for the whole of `config` (256 or 4096 bytes), and a blank line.
std::string format_lspci_dump(const DeviceAddress& address, std::span<const std::uint8_t> config,
                              std::string_view comment = "");

}  // namespace vpci::pci
