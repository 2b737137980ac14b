// How `vpci inspect` shows the decoded registers of one device, as JSON and as text:
// the BARs, a bridge's bus numbers and windows, the subsystem, and the fields of the
// capabilities it decodes (virtio, MSI, MSI-X, DVSEC). The decoding itself is in pci/
// (header_decode.h, capability_decode.h, virtio_capability.h); this file only renders.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "pci/capabilities.h"
#include "pci/header_decode.h"

namespace vpci::tools {

nlohmann::json bars_json(std::span<const pci::BarDecode> bars);
std::vector<std::string> bars_text(std::span<const pci::BarDecode> bars);

nlohmann::json bridge_json(const pci::BridgeDecode& bridge);
std::vector<std::string> bridge_text(const pci::BridgeDecode& bridge);

// The fields of one capability: `key` is the JSON member ("virtio", "msi", "msix",
// "dvsec"), `text` what the text report appends to the capability's line.
struct CapabilityDetail {
  std::string key;
  nlohmann::json json;
  std::string text;
  std::string map_label;  // a short tag for the SVG map; empty for none
};
std::optional<CapabilityDetail> capability_detail(std::span<const std::uint8_t> config,
                                                  const pci::Capability& cap);

}  // namespace vpci::tools
