#include "tools/device_report.h"

#include <algorithm>

#include <fmt/format.h>

#include "pci/config_bytes.h"
#include "pci/registers.h"
#include "tools/device_decode.h"

namespace vpci::tools {
namespace {

using pci::CapabilitySpace;
using pci::config_dword;
using pci::config_word;

std::string_view layout_name(std::uint8_t layout) {
  switch (layout) {
    case pci::header_type::kEndpoint: return "endpoint";
    case pci::header_type::kBridge: return "bridge";
    case pci::header_type::kCardbus: return "CardBus";
    default: return "unknown";
  }
}

std::string range_text(const pci::ConfigRange& range) {
  return fmt::format("{} {:#05x}-{:#05x}  {} bytes", pci::space_name(range.space), range.begin,
                     range.end - 1, range.end - range.begin);
}

nlohmann::json ranges_json(const std::vector<pci::ConfigRange>& ranges) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& range : ranges) {
    out.push_back(
        {{"space", pci::space_name(range.space)}, {"start", range.begin}, {"end", range.end}});
  }
  return out;
}

// lspci's rule: a subsystem vendor ID of 0 or 0xFFFF names no subsystem.
bool subsystem_given(const pci::SubsystemIds& ids) {
  return ids.vendor_id != 0 && ids.vendor_id != 0xFFFF;
}

std::string header_text(const DeviceReport& r, PciNames& names) {
  const auto& c = r.config;
  const std::uint16_t vendor = config_word(c, pci::reg::kVendorId);
  const std::uint16_t device = config_word(c, pci::reg::kDeviceId);
  const std::uint8_t layout = c[pci::reg::kHeaderType] & pci::header_type::kLayoutMask;
  std::string out = fmt::format(
      "  class {:06x} ({}), header type {} ({}){}, {}-byte config space\n",
      config_dword(c, pci::reg::kRevisionId) >> 8,
      names.device_class(c[pci::reg::kBaseClass], c[pci::reg::kSubclass]), layout,
      layout_name(layout),
      (c[pci::reg::kHeaderType] & pci::header_type::kMultiFunction) ? ", multifunction" : "",
      r.space_size);
  out += fmt::format("  command {:#06x} status {:#06x}\n", config_word(c, pci::reg::kCommand),
                     config_word(c, pci::reg::kStatus));
  if (r.subsystem) {
    out += fmt::format(
        "  subsystem {:04x}:{:04x}  {}\n", r.subsystem->vendor_id, r.subsystem->device_id,
        subsystem_given(*r.subsystem)
            ? names.subsystem(vendor, device, r.subsystem->vendor_id, r.subsystem->device_id)
            : "(none given)");
  }
  for (const auto& line : bars_text(r.bars)) out += fmt::format("  {}\n", line);
  if (layout == pci::header_type::kEndpoint || layout == pci::header_type::kBridge) {
    const std::uint32_t rom =
        config_dword(c, layout == pci::header_type::kEndpoint ? pci::reg::kRomAddress
                                                              : pci::reg::kBridgeRomAddress);
    if (rom != 0) {
      out += fmt::format("  ROM:  {:#010x}  at {:#x} ({})\n", rom, rom & pci::bar::kRomAddressMask,
                         (rom & pci::bar::kRomEnable) ? "enabled" : "disabled");
    }
  }
  if (r.bridge) {
    for (const auto& line : bridge_text(*r.bridge)) out += fmt::format("  {}\n", line);
  }
  return out;
}

}  // namespace

DeviceReport DeviceReport::build(const pci::DeviceDump& dump) {
  DeviceReport report{dump.address,
                      dump.config,
                      pci::scan_capabilities(dump.config),
                      dump.space_size,
                      dump.truncation,
                      pci::decode_bars(dump.config, dump.bar_sizes),
                      pci::decode_bridge(dump.config),
                      std::nullopt};
  report.subsystem = pci::decode_subsystem(dump.config, report.scan);
  return report;
}

std::vector<pci::ConfigRange> DeviceReport::free() const {
  std::vector<pci::ConfigRange> ranges;
  if (config.size() < pci::kStandardCapabilityStart) return ranges;
  const auto readable = static_cast<std::uint32_t>(config.size());
  for (auto range : pci::free_ranges(scan, space_size)) {
    // Bytes never read are unknown, not free.
    range.end = std::min(range.end, readable);
    if (range.begin < range.end) ranges.push_back(range);
  }
  return ranges;
}

std::vector<pci::ConfigRange> DeviceReport::unread() const {
  std::vector<pci::ConfigRange> ranges;
  const auto readable = static_cast<std::uint32_t>(config.size());
  if (readable < std::min(space_size, pci::kExtendedCapabilityStart)) {
    ranges.push_back({CapabilitySpace::kStandard, readable,
                      std::min(space_size, pci::kExtendedCapabilityStart)});
  }
  if (space_size > pci::kExtendedCapabilityStart && readable < space_size) {
    ranges.push_back({CapabilitySpace::kExtended, std::max(readable, pci::kExtendedCapabilityStart),
                      space_size});
  }
  return ranges;
}

std::vector<const pci::Diagnostic*> DeviceReport::problems() const {
  std::vector<const pci::Diagnostic*> out;
  for (const auto& d : scan.diagnostics) {
    if (d.severity != pci::Severity::kInfo) out.push_back(&d);
  }
  return out;
}

std::string truncation_summary(const DeviceReport& r) {
  const std::string counts = fmt::format("{} of {} bytes", r.config.size(), r.space_size);
  switch (r.truncation) {
    case pci::Truncation::kPermissions:
      return fmt::format(
          "read {}: without CAP_SYS_ADMIN the kernel shows only the start of sysfs "
          "'config' (run as root for all of it)",
          counts);
    case pci::Truncation::kShortDump:
      return fmt::format("the dump holds {} (lspci -x dumps 64 bytes, -xxx 256, -xxxx 4096)",
                         counts);
    case pci::Truncation::kNone: break;
  }
  return "";
}

nlohmann::json report_json(const DeviceReport& r, PciNames& names) {
  nlohmann::json caps = nlohmann::json::array();
  for (const auto& cap : r.scan.capabilities) {
    nlohmann::json j = {{"space", pci::space_name(cap.space)},
                        {"offset", cap.offset},
                        {"id", cap.id},
                        {"name", pci::capability_name(cap.space, cap.id)},
                        {"size", pci::occupied_length(r.scan, cap, r.space_size)},
                        {"size_exact", cap.size.has_value()},
                        {"next", cap.next}};
    if (cap.space == CapabilitySpace::kExtended) j["version"] = cap.version;
    if (auto detail = capability_detail(r.config, cap)) j[detail->key] = std::move(detail->json);
    caps.push_back(std::move(j));
  }
  nlohmann::json diags = nlohmann::json::array();
  for (const auto& d : r.scan.diagnostics) {
    nlohmann::json j = {{"severity", pci::severity_name(d.severity)},
                        {"code", d.code},
                        {"space", pci::space_name(d.space)},
                        {"message", d.message}};
    j["offset"] = d.offset ? nlohmann::json(*d.offset) : nlohmann::json(nullptr);
    diags.push_back(std::move(j));
  }
  nlohmann::json device = {{"bdf", r.address.to_string()},      {"config_size", r.space_size},
                           {"readable_bytes", r.config.size()}, {"truncated", r.truncated()},
                           {"unread", ranges_json(r.unread())}, {"bars", bars_json(r.bars)},
                           {"capabilities", std::move(caps)},   {"free", ranges_json(r.free())},
                           {"diagnostics", std::move(diags)}};
  if (r.truncated()) device["truncation"] = pci::truncation_name(r.truncation);
  if (r.config.size() >= 0x10) {
    const std::uint16_t vendor = config_word(r.config, pci::reg::kVendorId);
    const std::uint16_t device_id = config_word(r.config, pci::reg::kDeviceId);
    device["vendor_id"] = vendor;
    device["device_id"] = device_id;
    device["revision"] = r.config[pci::reg::kRevisionId];
    device["class_code"] = (config_dword(r.config, pci::reg::kRevisionId) >> 8);
    device["header_type"] = r.config[pci::reg::kHeaderType] & pci::header_type::kLayoutMask;
    device["multifunction"] =
        (r.config[pci::reg::kHeaderType] & pci::header_type::kMultiFunction) != 0;
    if (r.subsystem) {
      device["subsystem"] = {
          {"vendor_id", r.subsystem->vendor_id},
          {"device_id", r.subsystem->device_id},
          {"name", subsystem_given(*r.subsystem)
                       ? nlohmann::json(names.subsystem(vendor, device_id, r.subsystem->vendor_id,
                                                        r.subsystem->device_id))
                       : nlohmann::json(nullptr)}};
    }
  }
  if (r.bridge) device["bridge"] = bridge_json(*r.bridge);
  return device;
}

std::string report_text(const DeviceReport& r, PciNames& names) {
  const auto& c = r.config;
  std::string out;
  if (c.size() < pci::kHeaderSize) {
    out += fmt::format("{}  (only {} bytes of config space)\n", r.address.to_string(), c.size());
  } else {
    const std::uint16_t vendor = config_word(c, pci::reg::kVendorId);
    const std::uint16_t device = config_word(c, pci::reg::kDeviceId);
    out += fmt::format("{}  {} [{:04x}:{:04x}] rev {:02x}\n", r.address.to_string(),
                       names.device(vendor, device), vendor, device, c[pci::reg::kRevisionId]);
  }
  if (r.truncated()) out += fmt::format("  TRUNCATED config space: {}\n", truncation_summary(r));
  if (c.size() >= pci::kHeaderSize) out += header_text(r, names);
  if (!r.scan.capabilities.empty()) out += "  capabilities:\n";
  for (const auto& cap : r.scan.capabilities) {
    const std::uint32_t size = pci::occupied_length(r.scan, cap, r.space_size);
    std::string line = fmt::format(
        "    {} {:#05x}  id {:#06x}  {:<40} {:>4} bytes{}", pci::space_name(cap.space), cap.offset,
        cap.id, pci::capability_name(cap.space, cap.id), size, cap.size ? "" : " (to next)");
    if (cap.space == CapabilitySpace::kExtended) line += fmt::format("  v{}", cap.version);
    if (auto detail = capability_detail(c, cap)) line += fmt::format("  {}", detail->text);
    out += fmt::format("{}\n", line);
  }
  const auto free = r.free();
  if (!free.empty()) out += "  free (no capability structure; may still hide registers):\n";
  for (const auto& range : free) out += fmt::format("    {}\n", range_text(range));
  const auto unread = r.unread();
  if (!unread.empty()) out += "  unread (not in the source; contents unknown, not free):\n";
  for (const auto& range : unread) out += fmt::format("    {}\n", range_text(range));
  if (!r.scan.diagnostics.empty()) out += "  diagnostics:\n";
  for (const auto& d : r.scan.diagnostics) {
    out += fmt::format("    {}: [{}] {}\n", pci::severity_name(d.severity), d.code, d.message);
  }
  return out;
}

MapPanel report_map_panel(const DeviceReport& r, PciNames& names) {
  MapPanel panel;
  panel.space_size = r.space_size;
  panel.title = r.address.to_string();
  if (r.config.size() >= 4) {
    panel.title += fmt::format("  {}", names.device(config_word(r.config, pci::reg::kVendorId),
                                                    config_word(r.config, pci::reg::kDeviceId)));
  }
  if (r.truncated()) {
    panel.title += fmt::format("  [TRUNCATED: {} of {} bytes read]", r.config.size(), r.space_size);
  }
  panel.regions.push_back(
      {0, std::min<std::uint32_t>(pci::kHeaderSize, static_cast<std::uint32_t>(r.config.size())),
       MapRegionKind::kHeader, "header"});
  for (const auto& cap : r.scan.capabilities) {
    const std::uint32_t size = pci::occupied_length(r.scan, cap, r.space_size);
    std::string label = fmt::format("{} ({:#x})", pci::capability_name(cap.space, cap.id), cap.id);
    if (auto detail = capability_detail(r.config, cap); detail && !detail->map_label.empty()) {
      label += fmt::format(" {}", detail->map_label);
    }
    panel.regions.push_back({cap.offset, cap.offset + size,
                             cap.size ? MapRegionKind::kCapability : MapRegionKind::kUnknownExtent,
                             std::move(label)});
  }
  for (const auto& range : r.free())
    panel.regions.push_back({range.begin, range.end, MapRegionKind::kFree, "free"});
  for (const auto& range : r.unread()) {
    panel.regions.push_back(
        {range.begin, range.end, MapRegionKind::kUnread, "unread (not in the source)"});
  }
  return panel;
}

}  // namespace vpci::tools
