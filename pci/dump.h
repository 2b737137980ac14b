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
//     file is read and whose name gives the address.
// Format written: `lspci -xxxx` style text that `lspci -F FILE` decodes — the device
// line with its trailing space, every byte of the space, a terminating blank line.
#pragma once

#include <cstdint>
#include <filesystem>
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
};

// Parses "BB:DD.F" or "DDDD:BB:DD.F" (hex fields, as lspci and sysfs write them).
Result<DeviceAddress> parse_device_address(std::string_view text);

struct DeviceDump {
  DeviceAddress address;
  // The readable bytes: everything up to the highest offset the dump defines; bytes
  // the dump skipped inside that range read 0xFF (as pciutils' dump backend shows them).
  std::vector<std::uint8_t> config;
};

// Parses lspci text. A device line without data yields a device with no bytes.
// Malformed data lines are errors starting "LINE:COL: " and saying what was wrong.
Result<std::vector<DeviceDump>> parse_lspci_text(std::string_view text);

// Wraps raw config bytes (a sysfs config file) as one device.
Result<DeviceDump> parse_raw_config(std::span<const std::uint8_t> bytes,
                                    DeviceAddress address = {});

// Loads SOURCE: an lspci text file, a raw config file, or a sysfs device directory.
// Text and binary are told apart by content (text has only printable ASCII and
// whitespace).
Result<std::vector<DeviceDump>> load_dump_source(const std::filesystem::path& source);

// Writes one device as lspci -xxxx text: "DDDD:BB:DD.F <comment>\n", 16 bytes per
// line for the whole of `config` (256 or 4096 bytes), and a blank line.
std::string format_lspci_dump(const DeviceAddress& address, std::span<const std::uint8_t> config,
                              std::string_view comment = "");

}  // namespace vpci::pci
