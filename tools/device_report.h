// What `vpci inspect` (and later `vpci place`) says about one device: the header,
// the capabilities, the free ranges and the diagnostics, as text, JSON and SVG panels.
#pragma once

#include <span>
#include <string>

#include <nlohmann/json.hpp>

#include "pci/capabilities.h"
#include "pci/dump.h"
#include "tools/config_map_svg.h"
#include "tools/pci_names.h"

namespace vpci::tools {

struct DeviceReport {
  pci::DeviceAddress address;
  std::span<const std::uint8_t> config;  // readable bytes
  pci::CapabilityScan scan;
  std::uint32_t space_size;  // 256 or 4096

  static DeviceReport build(const pci::DeviceDump& dump);
};

nlohmann::json report_json(const DeviceReport& report);
std::string report_text(const DeviceReport& report, PciNames& names);
MapPanel report_map_panel(const DeviceReport& report, PciNames& names);

}  // namespace vpci::tools
