#include "tools/device_decode.h"

#include <fmt/format.h>

#include "base/input_file.h"
#include "pci/capability_decode.h"
#include "pci/virtio_capability.h"

namespace vpci::tools {
namespace {

using pci::CapabilitySpace;

nlohmann::json window_json(const pci::BridgeWindow& w) {
  nlohmann::json j = {
      {"type_known", w.type_known}, {"raw_base", w.raw_base}, {"raw_limit", w.raw_limit}};
  if (w.type_known) {
    j["base"] = w.base;
    j["limit"] = w.limit;  // inclusive, as lspci prints it
    j["bits"] = w.bits;
    j["open"] = w.open();
  }
  return j;
}

std::string window_text(const char* name, const pci::BridgeWindow& w) {
  if (!w.type_known) {
    return fmt::format("{} window: unknown addressing type (base {:#x}, limit {:#x})", name,
                       w.raw_base, w.raw_limit);
  }
  if (!w.open()) {
    return fmt::format("{} window: closed (base {:#x} above limit {:#x}, {}-bit)", name, w.base,
                       w.limit, w.bits);
  }
  return fmt::format("{} window: {:#x}-{:#x} ({}, {}-bit)", name, w.base, w.limit,
                     describe_size(static_cast<std::size_t>(w.limit - w.base + 1)), w.bits);
}

std::string bar_type_text(const pci::BarDecode& b) {
  switch (b.kind) {
    case pci::BarKind::kIo: return "I/O";
    case pci::BarKind::kMemory32: return "32-bit";
    case pci::BarKind::kMemory64: return "64-bit";
    case pci::BarKind::kMemoryBelow1M: return "below 1M";
    case pci::BarKind::kMemoryReserved: return "reserved type";
  }
  return "";
}

CapabilityDetail virtio_detail(const pci::VirtioCapabilityFields& v) {
  CapabilityDetail d{"virtio",
                     {{"cfg_type", v.cfg_type},
                      {"type_name", pci::virtio_cfg_type_name(v.cfg_type)},
                      {"bar", v.bar},
                      {"offset", v.offset},
                      {"length", v.length}},
                     "",
                     std::string(pci::virtio_cfg_type_name(v.cfg_type))};
  if (v.notify_off_multiplier) d.json["notify_off_multiplier"] = *v.notify_off_multiplier;
  if (v.vendor_id) d.json["vendor_id"] = *v.vendor_id;
  if (v.vendor_id) {
    d.text = fmt::format("virtio {} (cfg_type {}) vendor {:#06x}",
                         pci::virtio_cfg_type_name(v.cfg_type), v.cfg_type, *v.vendor_id);
    return d;
  }
  d.text =
      fmt::format("virtio {} (cfg_type {}) bar {} offset {:#x} length {:#x}",
                  pci::virtio_cfg_type_name(v.cfg_type), v.cfg_type, v.bar, v.offset, v.length);
  if (v.notify_off_multiplier) d.text += fmt::format(" multiplier {}", *v.notify_off_multiplier);
  return d;
}

CapabilityDetail msi_detail(const pci::MsiDecode& m) {
  CapabilityDetail d{"msi",
                     {{"enabled", m.enabled},
                      {"vectors_capable", m.vectors_capable},
                      {"vectors_enabled", m.vectors_enabled},
                      {"per_vector_masking", m.per_vector_masking},
                      {"address_64bit", m.address_64bit},
                      {"address", m.address},
                      {"data", m.data}},
                     "",
                     ""};
  d.text = fmt::format(
      "{}, {}/{} vectors enabled/capable, {}-bit address, {}; address {:#x} data {:#06x}",
      m.enabled ? "enabled" : "disabled", m.vectors_enabled, m.vectors_capable,
      m.address_64bit ? 64 : 32, m.per_vector_masking ? "maskable" : "not maskable", m.address,
      m.data);
  if (m.mask_bits) {
    d.json["mask_bits"] = *m.mask_bits;
    d.json["pending_bits"] = *m.pending_bits;
    d.text += fmt::format(" mask {:#010x} pending {:#010x}", *m.mask_bits, *m.pending_bits);
  }
  return d;
}

CapabilityDetail msix_detail(const pci::MsixDecode& m) {
  return {
      "msix",
      {{"enabled", m.enabled},
       {"function_mask", m.function_mask},
       {"table_size", m.table_size},
       {"table", {{"bar", m.table_bir}, {"offset", m.table_offset}}},
       {"pba", {{"bar", m.pba_bir}, {"offset", m.pba_offset}}}},
      fmt::format(
          "{}, {} vectors, function mask {}; table BAR {} offset {:#x}, PBA BAR {} offset {:#x}",
          m.enabled ? "enabled" : "disabled", m.table_size, m.function_mask ? "on" : "off",
          m.table_bir, m.table_offset, m.pba_bir, m.pba_offset),
      fmt::format("{} vectors", m.table_size)};
}

CapabilityDetail dvsec_detail(const pci::DvsecDecode& v) {
  return {
      "dvsec",
      {{"vendor_id", v.vendor_id}, {"id", v.id}, {"revision", v.revision}, {"length", v.length}},
      fmt::format("vendor {:#06x} id {:#06x} rev {} length {:#x}", v.vendor_id, v.id, v.revision,
                  v.length),
      fmt::format("{:04x}:{:04x}", v.vendor_id, v.id)};
}

}  // namespace

nlohmann::json bars_json(std::span<const pci::BarDecode> bars) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& b : bars) {
    nlohmann::json j = {{"index", b.index},
                        {"kind", pci::bar_kind_name(b.kind)},
                        {"prefetchable", b.prefetchable},
                        {"address", b.address},
                        {"raw", b.raw}};
    if (b.raw_upper) j["raw_upper"] = *b.raw_upper;
    if (b.upper_missing) j["upper_missing"] = true;
    if (b.size) j["size"] = *b.size;
    out.push_back(std::move(j));
  }
  return out;
}

std::vector<std::string> bars_text(std::span<const pci::BarDecode> bars) {
  std::vector<std::string> lines;
  for (const auto& b : bars) {
    std::string raw = fmt::format("{:#010x}", b.raw);
    if (b.raw_upper) raw += fmt::format(" {:#010x}", *b.raw_upper);
    std::string line;
    if (b.kind == pci::BarKind::kIo) {
      line = fmt::format("BAR{}: {}  I/O at {:#x}", b.index, raw, b.address);
    } else {
      line = fmt::format("BAR{}: {}  memory at {:#x} ({}, {}prefetchable)", b.index, raw, b.address,
                         bar_type_text(b), b.prefetchable ? "" : "non-");
    }
    if (b.upper_missing) line += " [64-bit BAR in the last register: no upper half]";
    if (b.size) line += fmt::format(", size {}", describe_size(static_cast<std::size_t>(*b.size)));
    lines.push_back(std::move(line));
  }
  return lines;
}

nlohmann::json bridge_json(const pci::BridgeDecode& bridge) {
  nlohmann::json j = {{"primary_bus", bridge.primary_bus},
                      {"secondary_bus", bridge.secondary_bus},
                      {"subordinate_bus", bridge.subordinate_bus},
                      {"secondary_latency", bridge.secondary_latency}};
  if (bridge.io) j["io_window"] = window_json(*bridge.io);
  if (bridge.memory) j["memory_window"] = window_json(*bridge.memory);
  if (bridge.prefetchable) j["prefetchable_window"] = window_json(*bridge.prefetchable);
  return j;
}

std::vector<std::string> bridge_text(const pci::BridgeDecode& bridge) {
  std::vector<std::string> lines = {fmt::format(
      "buses: primary {:02x}, secondary {:02x}, subordinate {:02x}, secondary latency {}",
      bridge.primary_bus, bridge.secondary_bus, bridge.subordinate_bus, bridge.secondary_latency)};
  if (bridge.io) lines.push_back(window_text("I/O", *bridge.io));
  if (bridge.memory) lines.push_back(window_text("memory", *bridge.memory));
  if (bridge.prefetchable)
    lines.push_back(window_text("prefetchable memory", *bridge.prefetchable));
  return lines;
}

std::optional<CapabilityDetail> capability_detail(std::span<const std::uint8_t> config,
                                                  const pci::Capability& cap) {
  if (cap.space == CapabilitySpace::kStandard) {
    switch (cap.id) {
      case pci::cap_id::kVendorSpecific:
        if (auto v = pci::decode_virtio_capability(config, cap.offset)) return virtio_detail(*v);
        return std::nullopt;
      case pci::cap_id::kMsi:
        if (auto m = pci::decode_msi(config, cap.offset)) return msi_detail(*m);
        return std::nullopt;
      case pci::cap_id::kMsiX:
        if (auto m = pci::decode_msix(config, cap.offset)) return msix_detail(*m);
        return std::nullopt;
      default: return std::nullopt;
    }
  }
  if (cap.id == pci::ext_cap_id::kDesignatedVendorSpecific) {
    if (auto v = pci::decode_dvsec(config, cap.offset)) return dvsec_detail(*v);
  }
  return std::nullopt;
}

}  // namespace vpci::tools
