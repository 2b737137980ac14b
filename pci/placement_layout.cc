// What occupies extended configuration space, and who the device is: the facts every
// placement rule checks against.
#include <algorithm>

#include "pci/capability_registers.h"
#include "pci/config_bytes.h"
#include "pci/placement_detail.h"
#include "pci/registers.h"

namespace vpci::pci::placement_detail {
namespace {

// AER is sized by the capability walker as vfio sizes it (0x2c, 0x38 for root ports),
// which stops before the TLP Prefix Log at +0x38..+0x47 (PCIe Base 6.0 §7.8.4.12). That
// register exists when the function supports End-End TLP Prefixes (Device Capabilities
// 2 bit 21) or Flit Mode (PCI Express Capabilities bit 15, which reuses it for the Flit
// header log); then nothing may be placed on it and AER extends to +0x48 (QEMU's
// PCI_ERR_SIZEOF), unless the next capability starts earlier.
std::uint32_t aer_extent(std::span<const std::uint8_t> config, const CapabilityScan& scan,
                         const Capability& aer) {
  constexpr std::uint32_t kFullAer = 0x48;
  bool prefix_log = false;
  for (const auto& cap : scan.capabilities) {
    if (cap.space != kStd || cap.id != cap_id::kPciExpress ||
        cap.offset + pcie::kDeviceCapabilities2 + 4u > config.size())
      continue;
    const std::uint16_t flags = config_word(config, cap.offset + pcie::kFlags);
    const std::uint32_t devcap2 = config_dword(config, cap.offset + pcie::kDeviceCapabilities2);
    const bool version2 = (flags & pcie::kFlagsVersionMask) >= 2;
    prefix_log = (flags & pcie::kFlagsFlitMode) != 0 ||
                 (version2 && (devcap2 & pcie::kDevcap2EndEndTlpPrefix) != 0);
    break;
  }
  if (!prefix_log) return 0;
  std::uint32_t end = aer.offset + kFullAer;
  for (const auto& other : scan.capabilities) {
    if (other.space == kExt && other.offset > aer.offset)
      end = std::min<std::uint32_t>(end, other.offset);
  }
  return std::min(end, kExtendedConfigSize) - aer.offset;
}

}  // namespace

std::string range_text(std::uint32_t begin, std::uint32_t end) {
  return fmt::format("[{:#x}, {:#x})", begin, end);
}

std::string ranges_text(const std::vector<ConfigRange>& ranges) {
  if (ranges.empty()) return "no ranges";
  std::string text;
  for (const auto& r : ranges) {
    if (!text.empty()) text += ", ";
    text += range_text(r.begin, r.end);
  }
  return text;
}

std::string occupant_text(const Occupant& o) {
  return fmt::format("{} at {}", o.what, range_text(o.begin, o.end));
}

std::vector<Occupant> extended_occupants(std::span<const std::uint8_t> config,
                                         const CapabilityScan& scan,
                                         const std::set<std::uint16_t>& excluded) {
  std::vector<Occupant> result;
  for (const auto& cap : scan.capabilities) {
    if (cap.space != kExt) continue;
    const std::string name(capability_name(kExt, cap.id));
    if (excluded.count(cap.offset) != 0) {
      if (cap.offset == kExtendedCapabilityStart) {
        result.push_back({cap.offset, cap.offset + 4u, "the extended list head"});
      }
      continue;
    }
    std::uint32_t length = occupied_length(scan, cap, kExtendedConfigSize);
    if (cap.id == ext_cap_id::kAer) length = std::max(length, aer_extent(config, scan, cap));
    result.push_back(
        {cap.offset, cap.offset + round_up4(length), fmt::format("{} [{:#x}]", name, cap.offset)});
  }
  // A chain whose last next pointer leads to an all-zero header ends there (Linux and
  // lspci stop on a zero header), but a capability added at that offset would be linked
  // into a loop through the stale pointer, and one added over it would be entered
  // mid-body. The header slot it names is therefore taken. Found by the fuzzer.
  for (const auto& d : scan.diagnostics) {
    if (d.space == kExt && d.code == "empty-header" && d.offset) {
      result.push_back(
          {*d.offset, *d.offset + 4u,
           fmt::format("the all-zero header at {:#x} that the chain's last next pointer leads to",
                       *d.offset)});
    }
  }
  return result;
}

const Occupant* first_conflict(const std::vector<Occupant>& occupants, std::uint32_t begin,
                               std::uint32_t end) {
  const Occupant* hit = nullptr;
  for (const auto& o : occupants) {
    if (begin < o.end && o.begin < end && (hit == nullptr || o.begin < hit->begin)) hit = &o;
  }
  return hit;
}

std::optional<std::pair<std::uint16_t, ConfigRange>> first_fit(
    const std::vector<ConfigRange>& ranges, const std::vector<Occupant>& occupants,
    std::uint32_t need) {
  for (const auto& range : ranges) {
    if (range.space != kExt) continue;
    for (std::uint32_t at = round_up4(range.begin); at + need <= range.end; at += 4) {
      if (first_conflict(occupants, at, at + need) == nullptr) {
        return std::make_pair(static_cast<std::uint16_t>(at), range);
      }
    }
  }
  return std::nullopt;
}

DeviceIdentity identify(const ConfigSpace& space, const CapabilityScan& scan) {
  DeviceIdentity id{space.raw16(reg::kVendorId), space.raw16(reg::kDeviceId), {}, {}};
  const std::uint8_t layout = space.header_layout();
  if (layout == header_type::kEndpoint) {
    id.subsystem_vendor = space.raw16(reg::kSubsystemVendorId);
    id.subsystem_device = space.raw16(reg::kSubsystemId);
  } else if (layout == header_type::kBridge) {
    // Bridges carry their subsystem IDs in the Bridge Subsystem Vendor ID capability
    // (PCI-to-PCI Bridge Architecture 1.2 §3.2.5.15 / capability 0x0D).
    for (const auto& cap : scan.capabilities) {
      if (cap.space == kStd && cap.id == cap_id::kBridgeSubsystemVendorId &&
          cap.offset + ssvid::kSize <= kConventionalConfigSize) {
        id.subsystem_vendor = space.raw16(cap.offset + ssvid::kVendorId);
        id.subsystem_device = space.raw16(cap.offset + ssvid::kSubsystemId);
        break;
      }
    }
  }
  return id;
}

std::string identity_text(const DeviceIdentity& id) {
  std::string text = fmt::format("{:04x}:{:04x}", id.vendor, id.device);
  if (id.subsystem_vendor && id.subsystem_device) {
    text += fmt::format(" (subsystem {:04x}:{:04x})", *id.subsystem_vendor, *id.subsystem_device);
  }
  return text;
}

}  // namespace vpci::pci::placement_detail
