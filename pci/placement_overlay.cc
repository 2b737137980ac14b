// The emulated overlay: every guest byte the VMM must serve from its own copy, grouped
// into fields with a reason each (QEMU's emulated_config_bits plus its wmask).
#include <map>

#include "pci/placement_detail.h"
#include "pci/registers.h"

namespace vpci::pci::placement_detail {
namespace {

struct OverlayBuilder {
  const ConfigSpace& source;
  const ConfigSpace& guest;
  std::map<std::uint16_t, OverlayField> fields;

  void add(std::uint16_t offset, std::uint32_t length, std::uint8_t mask_all, std::string what,
           const std::vector<std::uint8_t>* masks = nullptr) {
    if (fields.count(offset) != 0) return;
    OverlayField field;
    field.offset = offset;
    field.what = std::move(what);
    for (std::uint32_t i = 0; i < length; ++i) {
      const std::uint8_t mask = masks != nullptr ? (*masks)[i] : mask_all;
      field.value.push_back(guest.raw8(offset + i));
      field.emulated_mask.push_back(mask);
      field.write_mask.push_back(static_cast<std::uint8_t>(guest.writable_mask(offset + i) & mask));
    }
    fields.emplace(offset, std::move(field));
  }
};

const Capability* find_cap(const CapabilityScan& scan, CapabilitySpace space,
                           std::uint32_t offset) {
  for (const auto& cap : scan.capabilities) {
    if (cap.space == space && cap.offset == offset) return &cap;
  }
  return nullptr;
}

// Why the extended header at `header` changed: the 0x100 anchor, a hidden capability
// at 0x100, or a relinked next pointer.
std::string extended_header_text(const CapabilityScan& source_scan,
                                 const CapabilityScan& guest_scan, std::uint16_t header) {
  const Capability* before = find_cap(source_scan, kExt, header);
  const Capability* after = find_cap(guest_scan, kExt, header);
  if (before == nullptr && after != nullptr && header == kExtendedCapabilityStart) {
    return "Null header at 0x100: anchors the extended list (it must start there)";
  }
  if (before != nullptr && after != nullptr && after->id == 0 && before->id != 0) {
    return fmt::format("header of {} at {:#x}: ID zeroed, next kept (hidden; the 0x100 rule)",
                       capability_name(kExt, before->id), header);
  }
  if (before != nullptr) {
    return fmt::format("header of {} at {:#x}: next pointer", capability_name(kExt, before->id),
                       header);
  }
  return fmt::format("extended header at {:#x}", header);
}

}  // namespace

std::vector<OverlayField> build_overlay(const ConfigSpace& source, const ConfigSpace& guest,
                                        const std::vector<PlacedCapability>& placed) {
  OverlayBuilder builder{source, guest, {}};
  std::vector<bool> covered(guest.size(), false);
  for (const auto& p : placed) {
    builder.add(p.offset, p.length, 0xFF,
                fmt::format("{} (added, rule {})", p.label, placement_rule_name(p.rule)));
    for (std::uint32_t i = 0; i < p.length; ++i) covered[p.offset + i] = true;
  }
  const CapabilityScan source_scan = scan_capabilities(source.bytes());
  const CapabilityScan guest_scan = scan_guest(guest);
  const std::uint32_t pointer = source.header_layout() == header_type::kCardbus
                                    ? reg::kCardbusCapabilityPointer
                                    : reg::kCapabilityPointer;
  for (std::uint32_t b = 0; b < guest.size(); ++b) {
    if (covered[b] || guest.raw8(b) == source.raw8(b)) continue;
    const auto at = static_cast<std::uint16_t>(b);
    if (b >= kExtendedCapabilityStart) {
      const auto header = static_cast<std::uint16_t>(b & ~3u);
      builder.add(header, 4, 0xFF, extended_header_text(source_scan, guest_scan, header));
      for (std::uint32_t i = 0; i < 4; ++i) covered[header + i] = true;
      continue;
    }
    if (b == reg::kStatus) {
      const std::vector<std::uint8_t> mask{
          static_cast<std::uint8_t>(guest.raw8(b) ^ source.raw8(b))};
      builder.add(at, 1, 0, "Status: Capabilities List bit", &mask);
    } else if (b == pointer) {
      builder.add(at, 1, 0xFF, "Capabilities Pointer");
    } else if (const Capability* cap = find_cap(source_scan, kStd, b - 1);
               cap != nullptr && b >= 1) {
      builder.add(
          at, 1, 0xFF,
          fmt::format("next pointer of {} at {:#x}", capability_name(kStd, cap->id), cap->offset));
    } else {
      builder.add(at, 1, 0xFF, "changed byte");
    }
    covered[b] = true;
  }
  std::vector<OverlayField> overlay;
  for (auto& [offset, field] : builder.fields) overlay.push_back(std::move(field));
  return overlay;
}

}  // namespace vpci::pci::placement_detail
