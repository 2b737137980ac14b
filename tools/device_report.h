// What `vpci inspect` (and later `vpci place`) says about one device: the header,
// the capabilities, the free ranges and the diagnostics, as text, JSON and SVG panels.
//
// A truncated dump (fewer bytes than the device's config space: `lspci -x`, or sysfs
// read without CAP_SYS_ADMIN) is reported as such: the bytes not read are "unread",
// never "free", in every output.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "pci/capabilities.h"
#include "pci/dump.h"
#include "pci/header_decode.h"
#include "tools/config_map_svg.h"
#include "tools/pci_names.h"

namespace vpci::tools {

struct DeviceReport {
  pci::DeviceAddress address;
  std::span<const std::uint8_t> config;  // readable bytes
  pci::CapabilityScan scan;
  std::uint32_t space_size;  // 256 or 4096
  pci::Truncation truncation;
  std::vector<pci::BarDecode> bars;
  std::optional<pci::BridgeDecode> bridge;
  std::optional<pci::SubsystemIds> subsystem;

  // `dump` must outlive the report (`config` points into it).
  static DeviceReport build(const pci::DeviceDump& dump);

  [[nodiscard]] bool truncated() const { return truncation != pci::Truncation::kNone; }
  // Ranges without a capability structure, within the readable bytes only.
  [[nodiscard]] std::vector<pci::ConfigRange> free() const;
  // [readable bytes, space size), split at the start of extended space; empty when
  // the whole space was read.
  [[nodiscard]] std::vector<pci::ConfigRange> unread() const;
  // The diagnostics `--strict` fails on: warnings and errors (an info note, such as a
  // capability ID our catalog does not name, says nothing wrong about the device).
  [[nodiscard]] std::vector<const pci::Diagnostic*> problems() const;
};

// How much of the space was read and why not all of it ("read 64 of 4096 bytes:
// without CAP_SYS_ADMIN ..."); empty when the report is complete.
std::string truncation_summary(const DeviceReport& report);

nlohmann::json report_json(const DeviceReport& report, PciNames& names);
std::string report_text(const DeviceReport& report, PciNames& names);
MapPanel report_map_panel(const DeviceReport& report, PciNames& names);

}  // namespace vpci::tools
