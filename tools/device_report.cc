#include "tools/device_report.h"

#include <fmt/format.h>

#include "pci/registers.h"
#include "pci/virtio_capability.h"

namespace vpci::tools {
namespace {

using pci::CapabilitySpace;

std::uint16_t word(std::span<const std::uint8_t> c, std::uint32_t off) {
  return off + 2 <= c.size() ? static_cast<std::uint16_t>(c[off] | (c[off + 1] << 8)) : 0xFFFF;
}
std::uint32_t dword(std::span<const std::uint8_t> c, std::uint32_t off) {
  return static_cast<std::uint32_t>(word(c, off)) |
         (static_cast<std::uint32_t>(word(c, off + 2)) << 16);
}

std::string describe_bar(std::span<const std::uint8_t> c, unsigned index, bool& skip_next) {
  const std::uint32_t value = dword(c, pci::reg::kBar0 + 4 * index);
  if (value & pci::bar::kIoSpaceFlag) {
    return fmt::format("BAR{}: {:#010x}  I/O at {:#x}", index, value, value & ~3u);
  }
  const unsigned type = (value & pci::bar::kMemoryTypeMask) >> 1;
  const bool prefetch = (value & pci::bar::kPrefetchable) != 0;
  if (type == 2) {
    const std::uint32_t high = dword(c, pci::reg::kBar0 + 4 * (index + 1));
    skip_next = true;
    return fmt::format("BAR{}: {:#010x} {:#010x}  memory at {:#x} (64-bit, {}prefetchable)", index,
                       value, high, (static_cast<std::uint64_t>(high) << 32) | (value & ~0xFu),
                       prefetch ? "" : "non-");
  }
  return fmt::format("BAR{}: {:#010x}  memory at {:#x} ({}, {}prefetchable)", index, value,
                     value & ~0xFu, type == 0 ? "32-bit" : "below 1M", prefetch ? "" : "non-");
}

nlohmann::json virtio_json(const pci::VirtioCapabilityFields& v) {
  nlohmann::json j = {{"cfg_type", v.cfg_type},
                      {"type_name", pci::virtio_cfg_type_name(v.cfg_type)},
                      {"bar", v.bar},
                      {"offset", v.offset},
                      {"length", v.length}};
  if (v.notify_off_multiplier) j["notify_off_multiplier"] = *v.notify_off_multiplier;
  if (v.vendor_id) j["vendor_id"] = *v.vendor_id;
  return j;
}

std::string virtio_text(const pci::VirtioCapabilityFields& v) {
  if (v.vendor_id) {
    return fmt::format("virtio {} (cfg_type {}) vendor {:#06x}",
                       pci::virtio_cfg_type_name(v.cfg_type), v.cfg_type, *v.vendor_id);
  }
  std::string text =
      fmt::format("virtio {} (cfg_type {}) bar {} offset {:#x} length {:#x}",
                  pci::virtio_cfg_type_name(v.cfg_type), v.cfg_type, v.bar, v.offset, v.length);
  if (v.notify_off_multiplier) text += fmt::format(" multiplier {}", *v.notify_off_multiplier);
  return text;
}

std::optional<pci::VirtioCapabilityFields> virtio_fields(const DeviceReport& r,
                                                         const pci::Capability& cap) {
  if (cap.space != CapabilitySpace::kStandard || cap.id != pci::cap_id::kVendorSpecific) {
    return std::nullopt;
  }
  return pci::decode_virtio_capability(r.config, cap.offset);
}

}  // namespace

DeviceReport DeviceReport::build(const pci::DeviceDump& dump) {
  DeviceReport report{dump.address, dump.config, pci::scan_capabilities(dump.config),
                      dump.config.size() > pci::kConventionalConfigSize
                          ? pci::kExtendedConfigSize
                          : pci::kConventionalConfigSize};
  return report;
}

nlohmann::json report_json(const DeviceReport& r) {
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
    if (auto v = virtio_fields(r, cap)) j["virtio"] = virtio_json(*v);
    caps.push_back(std::move(j));
  }
  nlohmann::json free = nlohmann::json::array();
  if (r.config.size() >= 0x40) {
    for (const auto& range : pci::free_ranges(r.scan, r.space_size)) {
      free.push_back(
          {{"space", pci::space_name(range.space)}, {"start", range.begin}, {"end", range.end}});
    }
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
                           {"readable_bytes", r.config.size()}, {"capabilities", std::move(caps)},
                           {"free", std::move(free)},           {"diagnostics", std::move(diags)}};
  if (r.config.size() >= 0x10) {
    device["vendor_id"] = word(r.config, pci::reg::kVendorId);
    device["device_id"] = word(r.config, pci::reg::kDeviceId);
    device["revision"] = r.config[pci::reg::kRevisionId];
    device["class_code"] = (dword(r.config, pci::reg::kRevisionId) >> 8);
    device["header_type"] = r.config[pci::reg::kHeaderType] & pci::header_type::kLayoutMask;
    device["multifunction"] =
        (r.config[pci::reg::kHeaderType] & pci::header_type::kMultiFunction) != 0;
  }
  return device;
}

std::string report_text(const DeviceReport& r, PciNames& names) {
  const auto& c = r.config;
  std::string out;
  if (c.size() < 0x40) {
    out += fmt::format("{}  (only {} bytes of config space)\n", r.address.to_string(), c.size());
  } else {
    const std::uint16_t vendor = word(c, 0), device = word(c, 2);
    const std::uint8_t layout = c[pci::reg::kHeaderType] & pci::header_type::kLayoutMask;
    out += fmt::format("{}  {} [{:04x}:{:04x}] rev {:02x}\n", r.address.to_string(),
                       names.device(vendor, device), vendor, device, c[pci::reg::kRevisionId]);
    out += fmt::format("  class {:06x} ({}), header type {} ({}){}, {}-byte config space\n",
                       dword(c, 8) >> 8, names.device_class(c[0x0B], c[0x0A]), layout,
                       layout == 0   ? "endpoint"
                       : layout == 1 ? "bridge"
                       : layout == 2 ? "CardBus"
                                     : "unknown",
                       (c[pci::reg::kHeaderType] & 0x80) ? ", multifunction" : "", r.space_size);
    out += fmt::format("  command {:#06x} status {:#06x}\n", word(c, 4), word(c, 6));
    if (layout == 0) {
      out += fmt::format("  subsystem {:04x}:{:04x}\n", word(c, 0x2C), word(c, 0x2E));
    }
    if (layout <= 1) {
      const unsigned bars = layout == 0 ? 6 : 2;
      for (unsigned i = 0; i < bars; ++i) {
        bool skip_next = false;
        if (dword(c, pci::reg::kBar0 + 4 * i) == 0) continue;
        out += fmt::format("  {}\n", describe_bar(c, i, skip_next));
        if (skip_next) ++i;
      }
      const std::uint32_t rom =
          dword(c, layout == 0 ? pci::reg::kRomAddress : pci::reg::kBridgeRomAddress);
      if (rom != 0) {
        out += fmt::format("  ROM:  {:#010x}  at {:#x} ({})\n", rom,
                           rom & pci::bar::kRomAddressMask, (rom & 1) ? "enabled" : "disabled");
      }
    }
  }
  if (!r.scan.capabilities.empty()) out += "  capabilities:\n";
  for (const auto& cap : r.scan.capabilities) {
    const std::uint32_t size = pci::occupied_length(r.scan, cap, r.space_size);
    std::string line = fmt::format(
        "    {} {:#05x}  id {:#06x}  {:<40} {:>4} bytes{}", pci::space_name(cap.space), cap.offset,
        cap.id, pci::capability_name(cap.space, cap.id), size, cap.size ? "" : " (to next)");
    if (cap.space == CapabilitySpace::kExtended) line += fmt::format("  v{}", cap.version);
    if (auto v = virtio_fields(r, cap)) line += fmt::format("  {}", virtio_text(*v));
    out += fmt::format("{}\n", line);
  }
  if (c.size() >= 0x40) {
    const auto free = pci::free_ranges(r.scan, r.space_size);
    if (!free.empty()) out += "  free (no capability structure; may still hide registers):\n";
    for (const auto& range : free) {
      out += fmt::format("    {} {:#05x}-{:#05x}  {} bytes\n", pci::space_name(range.space),
                         range.begin, range.end - 1, range.end - range.begin);
    }
  }
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
    panel.title += fmt::format("  {}", names.device(word(r.config, 0), word(r.config, 2)));
  }
  panel.regions.push_back({0, 0x40, MapRegionKind::kHeader, "header"});
  for (const auto& cap : r.scan.capabilities) {
    const std::uint32_t size = pci::occupied_length(r.scan, cap, r.space_size);
    std::string label = fmt::format("{} ({:#x})", pci::capability_name(cap.space, cap.id), cap.id);
    if (auto v = virtio_fields(r, cap))
      label += fmt::format(" {}", pci::virtio_cfg_type_name(v->cfg_type));
    panel.regions.push_back({cap.offset, cap.offset + size,
                             cap.size ? MapRegionKind::kCapability : MapRegionKind::kUnknownExtent,
                             std::move(label)});
  }
  if (r.config.size() >= 0x40) {
    for (const auto& range : pci::free_ranges(r.scan, r.space_size)) {
      panel.regions.push_back({range.begin, range.end, MapRegionKind::kFree, "free"});
    }
  }
  return panel;
}

}  // namespace vpci::tools
