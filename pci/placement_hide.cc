// Hiding capabilities (--hide), and whether a device has extended space to place into:
// both turn on which PCI Express / PCI-X capability makes Linux and lspci walk
// 0x100-0xFFF.
#include <algorithm>

#include "base/little_endian.h"
#include "pci/placement_detail.h"
#include "pci/registers.h"

namespace vpci::pci {
namespace placement_detail {

bool reaches_extended_space(const CapabilityScan& scan,
                            std::optional<std::uint16_t> without_std_offset) {
  return std::any_of(
      scan.capabilities.begin(), scan.capabilities.end(), [&](const Capability& cap) {
        return cap.space == kStd && (cap.id == cap_id::kPciExpress || cap.id == cap_id::kPciX) &&
               cap.offset != without_std_offset;
      });
}

Status hide_one(ConfigSpace& guest, const CapabilityScan& source_scan, CapabilitySpace space,
                std::uint16_t offset, std::string reason, bool adding_extended,
                std::vector<HiddenCapability>& hidden) {
  for (const auto& h : hidden) {
    if (h.space == space && h.offset == offset) return {};  // named twice (by ID and offset)
  }
  const CapabilityScan scan = scan_guest(guest);
  const auto it =
      std::find_if(scan.capabilities.begin(), scan.capabilities.end(),
                   [&](const Capability& c) { return c.space == space && c.offset == offset; });
  if (it == scan.capabilities.end()) {
    return make_error(ErrorCode::kNotFound, "--hide: no {} capability at {:#x} in the chain",
                      space_name(space), offset);
  }
  if (space == kStd && (it->id == cap_id::kPciExpress || it->id == cap_id::kPciX)) {
    const bool has_extended = std::any_of(scan.capabilities.begin(), scan.capabilities.end(),
                                          [](const Capability& c) { return c.space == kExt; });
    if ((has_extended || adding_extended) && !reaches_extended_space(scan, offset)) {
      return make_error(ErrorCode::kConflict,
                        "--hide: hiding {} at {:#x} would make every extended capability "
                        "unreachable (Linux and lspci walk 0x100-0xfff only behind a PCI Express "
                        "or PCI-X capability)",
                        capability_name(kStd, it->id), offset);
    }
  }
  VPCI_TRY(hide_capability(guest, space, offset));
  std::uint32_t length = 4;
  for (const auto& cap : source_scan.capabilities) {
    if (cap.space == space && cap.offset == offset) {
      length = occupied_length(source_scan, cap,
                               space == kExt ? kExtendedConfigSize : kConventionalConfigSize);
    }
  }
  hidden.push_back({space, offset, it->id, length,
                    space == kExt && offset == kExtendedCapabilityStart, std::move(reason)});
  return {};
}

Status apply_hides(ConfigSpace& guest, const CapabilityScan& source_scan,
                   const PlacementRequest& request, std::vector<HiddenCapability>& hidden) {
  const bool adding = !request.add.empty();
  for (const auto& h : request.hide) {
    const CapabilityScan scan = scan_guest(guest);
    switch (h.kind) {
      case HideRequest::Kind::kOffset: {
        const CapabilitySpace space = h.value >= kExtendedCapabilityStart ? kExt : kStd;
        VPCI_TRY(hide_one(guest, source_scan, space, h.value, "requested", adding, hidden));
        break;
      }
      case HideRequest::Kind::kExtendedId:
      case HideRequest::Kind::kStandardId: {
        const CapabilitySpace space = h.kind == HideRequest::Kind::kExtendedId ? kExt : kStd;
        std::vector<std::uint16_t> offsets;
        for (const auto& cap : scan.capabilities) {
          if (cap.space == space && cap.id == h.value) offsets.push_back(cap.offset);
        }
        if (offsets.empty()) {
          return make_error(
              ErrorCode::kNotFound, "--hide: the device has no {} capability with ID {:#x} ({})",
              space == kExt ? "extended" : "standard", h.value, capability_name(space, h.value));
        }
        for (const std::uint16_t offset : offsets) {
          VPCI_TRY(hide_one(guest, source_scan, space, offset, "requested", adding, hidden));
        }
        break;
      }
    }
  }
  return {};
}

}  // namespace placement_detail

std::optional<std::string> extended_space_problem(std::span<const std::uint8_t> readable,
                                                  const CapabilityScan& scan) {
  if (readable.size() <= kConventionalConfigSize) {
    return fmt::format(
        "the source has only {} bytes of config space: no extended configuration "
        "space (for a PCIe device take a 4096-byte dump: lspci -xxxx as root or the "
        "sysfs config file)",
        readable.size());
  }
  if (readable.size() < kExtendedCapabilityStart + 4) {
    return fmt::format("the source ends at {:#x}, before the first extended capability header",
                       readable.size());
  }
  const auto head = load_le<std::uint32_t>(readable.subspan(kExtendedCapabilityStart));
  if (!placement_detail::reaches_extended_space(scan, std::nullopt)) {
    std::string why =
        "the device has no extended configuration space: it has no PCI Express or PCI-X "
        "capability, so neither Linux nor lspci walks 0x100-0xfff";
    if (readable.size() >= kExtendedCapabilityStart + kHeaderSize &&
        std::equal(readable.begin(), readable.begin() + kHeaderSize,
                   readable.begin() + kExtendedCapabilityStart)) {
      why += " (0x100-0x13f repeats the header: the platform aliases the 256-byte space)";
    }
    return why;
  }
  if (head == 0xFFFFFFFF) {
    return std::string(
        "the device has no accessible extended configuration space: 0x100 reads all "
        "ones (Linux then sizes its config space at 256 bytes)");
  }
  return std::nullopt;
}

}  // namespace vpci::pci
