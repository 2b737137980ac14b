// Editing capability chains in a ConfigSpace: adding standard and extended
// capabilities, hiding one, relinking a chain. Every edit first rescans and refuses a
// malformed chain.
#include <algorithm>
#include <array>
#include <bitset>

#include "base/little_endian.h"
#include "pci/capabilities.h"
#include "pci/capability_detail.h"

namespace vpci::pci {
namespace {

using capability_detail::round_up4;

// Scans a ConfigSpace for editing: extended space is walked even without a PCIe
// capability (the editor must see what is there), and malformed chains are refused.
Result<CapabilityScan> scan_for_edit(const ConfigSpace& space, CapabilitySpace which) {
  CapabilityScan scan = scan_capabilities(space.bytes());
  if (which == CapabilitySpace::kExtended && !scan.extended_walked && space.is_extended()) {
    capability_detail::scan_extended(space.bytes(), scan);
  }
  for (const auto& diag : scan.diagnostics) {
    if (diag.space == which && diag.severity == Severity::kError) {
      return make_error(ErrorCode::kConflict,
                        "refusing to edit a malformed {} capability chain: {}", space_name(which),
                        diag.message);
    }
  }
  return scan;
}

std::vector<const Capability*> caps_in(const CapabilityScan& scan, CapabilitySpace which) {
  std::vector<const Capability*> caps;
  for (const auto& cap : scan.capabilities) {
    if (cap.space == which) caps.push_back(&cap);
  }
  return caps;
}

// First capability whose occupied range intersects [begin, end), if any.
const Capability* first_overlap(const CapabilityScan& scan, CapabilitySpace which,
                                std::uint32_t begin, std::uint32_t end, std::uint32_t space_size) {
  for (const Capability* cap : caps_in(scan, which)) {
    const std::uint32_t cap_end = cap->offset + round_up4(occupied_length(scan, *cap, space_size));
    if (begin < cap_end && cap->offset < end) return cap;
  }
  return nullptr;
}

Result<std::uint16_t> choose_offset(const CapabilityScan& scan, CapabilitySpace which,
                                    std::uint32_t length, std::optional<std::uint16_t> offset,
                                    std::uint32_t lowest, std::uint32_t space_end,
                                    std::uint32_t space_size) {
  const std::uint32_t need = round_up4(length);
  if (offset) {
    if (*offset % 4 != 0) {
      return make_error(ErrorCode::kInvalidArgument, "offset {:#x} is not DWORD aligned", *offset);
    }
    if (*offset < lowest || *offset + need > space_end) {
      return make_error(ErrorCode::kOutOfRange,
                        "a {}-byte capability at {:#x} does not fit in [{:#x}, {:#x})", need,
                        *offset, lowest, space_end);
    }
    if (const Capability* hit = first_overlap(scan, which, *offset, *offset + need, space_size)) {
      return make_error(ErrorCode::kConflict, "[{:#x}, {:#x}) overlaps {} at [{:#x}, {:#x})",
                        *offset, *offset + need, capability_name(which, hit->id), hit->offset,
                        hit->offset + occupied_length(scan, *hit, space_size));
    }
    return *offset;
  }
  for (std::uint32_t at = lowest; at + need <= space_end; at += 4) {
    if (first_overlap(scan, which, at, at + need, space_size) == nullptr) {
      return static_cast<std::uint16_t>(at);
    }
  }
  return make_error(ErrorCode::kNoSpace, "no {}-byte gap left in {} capability space", need,
                    space_name(which));
}

void set_standard_next(ConfigSpace& space, std::uint16_t cap_offset, std::uint8_t next) {
  space.set_raw8(cap_offset + 1u, next);
}

void set_extended_next(ConfigSpace& space, std::uint16_t cap_offset, std::uint16_t next) {
  const std::uint32_t header = space.raw32(cap_offset);
  space.set_raw32(cap_offset, (header & 0x000FFFFF) | (static_cast<std::uint32_t>(next) << 20));
}

// The registers of a capability define its size (MSI flags, VSEC length, ...); a
// body shorter than that would leave a structure whose tail overlaps whatever
// follows, so the bytes as they would be written are sized before anything is.
Status check_body_covers_structure(const ConfigSpace& space, CapabilitySpace which,
                                   std::uint16_t id, std::uint16_t at,
                                   std::span<const std::uint8_t> header,
                                   std::span<const std::uint8_t> body) {
  std::vector<std::uint8_t> scratch(space.bytes().begin(), space.bytes().end());
  const auto header_at = scratch.begin() + static_cast<std::ptrdiff_t>(at);
  std::copy(header.begin(), header.end(), header_at);
  std::copy(body.begin(), body.end(), header_at + static_cast<std::ptrdiff_t>(header.size()));
  const auto structure = capability_size(which, id, scratch, at);
  const std::size_t given = header.size() + body.size();
  if (structure && *structure > given) {
    return make_error(ErrorCode::kInvalidArgument,
                      "{} ({:#x}) at {:#x} is {} bytes by its own registers but only {} bytes were "
                      "given",
                      capability_name(which, id), id, at, *structure, given);
  }
  return {};
}

}  // namespace

Result<std::uint16_t> add_standard_capability(ConfigSpace& space, std::uint8_t id,
                                              std::span<const std::uint8_t> body,
                                              std::optional<std::uint16_t> offset) {
  if (id == 0xFF) {
    // Walkers treat ID 0xFF as the end of a broken chain (Linux, lspci).
    return make_error(ErrorCode::kInvalidArgument,
                      "capability ID 0xff cannot be added: it marks a broken chain");
  }
  VPCI_ASSIGN_OR_RETURN(CapabilityScan scan, scan_for_edit(space, CapabilitySpace::kStandard));
  const std::uint32_t length = 2 + static_cast<std::uint32_t>(body.size());
  VPCI_ASSIGN_OR_RETURN(
      const std::uint16_t at,
      choose_offset(scan, CapabilitySpace::kStandard, length, offset, kStandardCapabilityStart,
                    kConventionalConfigSize, space.size()));
  const std::array<std::uint8_t, 2> header = {id, 0};
  VPCI_TRY(check_body_covers_structure(space, CapabilitySpace::kStandard, id, at, header, body));
  space.set_raw_bytes(at, header);
  space.set_raw_bytes(at + 2u, body);
  const auto caps = caps_in(scan, CapabilitySpace::kStandard);
  if (caps.empty()) {
    space.set_raw8(reg::kCapabilityPointer, static_cast<std::uint8_t>(at));
    space.set_raw16(reg::kStatus, static_cast<std::uint16_t>(space.raw16(reg::kStatus) |
                                                             status::kCapabilityList));
  } else {
    set_standard_next(space, caps.back()->offset, static_cast<std::uint8_t>(at));
  }
  return at;
}

Result<std::uint16_t> add_extended_capability(ConfigSpace& space, std::uint16_t id,
                                              std::uint8_t version,
                                              std::span<const std::uint8_t> body,
                                              std::optional<std::uint16_t> offset) {
  if (!space.is_extended()) {
    return make_error(ErrorCode::kUnsupported,
                      "the device has no extended configuration space (256-byte config)");
  }
  if (version > 0xF) {
    return make_error(ErrorCode::kInvalidArgument, "capability version {} exceeds 4 bits", version);
  }
  if (id == ext_cap_id::kNull || id == 0xFFFF) {
    // A Null header with next 0 reads as the end of the list, and 0xFFFF is the
    // placeholder QEMU writes while rebuilding a chain; neither is a capability to add.
    return make_error(ErrorCode::kInvalidArgument, "extended capability ID {:#06x} cannot be added",
                      id);
  }
  VPCI_ASSIGN_OR_RETURN(CapabilityScan scan, scan_for_edit(space, CapabilitySpace::kExtended));
  const std::uint32_t length = 4 + static_cast<std::uint32_t>(body.size());
  const auto caps = caps_in(scan, CapabilitySpace::kExtended);
  std::optional<std::uint16_t> wanted = offset;
  if (!wanted && caps.empty()) wanted = static_cast<std::uint16_t>(kExtendedCapabilityStart);
  // An empty list needs a Null header at 0x100 to reach a capability placed elsewhere.
  CapabilityScan with_anchor = scan;
  if (caps.empty() && wanted && *wanted != kExtendedCapabilityStart) {
    with_anchor.capabilities.push_back({CapabilitySpace::kExtended,
                                        static_cast<std::uint16_t>(kExtendedCapabilityStart), 0, 0,
                                        0, 4});
  }
  VPCI_ASSIGN_OR_RETURN(const std::uint16_t at,
                        choose_offset(with_anchor, CapabilitySpace::kExtended, length, wanted,
                                      kExtendedCapabilityStart, kExtendedConfigSize, space.size()));
  const std::uint32_t header = id | (static_cast<std::uint32_t>(version) << 16);
  std::array<std::uint8_t, 4> header_bytes{};
  store_le(std::span(header_bytes), header);
  VPCI_TRY(
      check_body_covers_structure(space, CapabilitySpace::kExtended, id, at, header_bytes, body));
  space.set_raw_bytes(at + 4u, body);
  if (caps.empty()) {
    space.set_raw32(at, header);
    if (at != kExtendedCapabilityStart) {
      space.set_raw32(kExtendedCapabilityStart, static_cast<std::uint32_t>(at) << 20);
    }
    return at;
  }
  // Link after the capability with the highest offset below `at` (QEMU
  // pcie_insert_capability keeps the list in address order the same way).
  const Capability* previous = nullptr;
  for (const Capability* cap : caps) {
    if (cap->offset < at && (previous == nullptr || cap->offset > previous->offset)) previous = cap;
  }
  // A chain whose last next pointer already names `at` (a dangling pointer to an
  // empty header) must not get a capability that points at itself.
  const std::uint16_t next = previous->next == at ? 0 : previous->next;
  space.set_raw32(at, header | (static_cast<std::uint32_t>(next) << 20));
  set_extended_next(space, previous->offset, at);
  return at;
}

Status hide_capability(ConfigSpace& space, CapabilitySpace which, std::uint16_t offset) {
  VPCI_ASSIGN_OR_RETURN(CapabilityScan scan, scan_for_edit(space, which));
  const auto caps = caps_in(scan, which);
  auto it = std::find_if(caps.begin(), caps.end(),
                         [&](const Capability* cap) { return cap->offset == offset; });
  if (it == caps.end()) {
    return make_error(ErrorCode::kNotFound, "no {} capability at {:#x} in the chain",
                      space_name(which), offset);
  }
  const Capability& cap = **it;
  if (which == CapabilitySpace::kStandard) {
    if (it == caps.begin()) {
      space.set_raw8(reg::kCapabilityPointer, static_cast<std::uint8_t>(cap.next));
      if (cap.next == 0) {
        space.set_raw16(reg::kStatus, static_cast<std::uint16_t>(space.raw16(reg::kStatus) &
                                                                 ~status::kCapabilityList));
      }
    } else {
      set_standard_next(space, (*(it - 1))->offset, static_cast<std::uint8_t>(cap.next));
    }
    return {};
  }
  if (offset == kExtendedCapabilityStart) {
    // PCIe Base 6.0 §7.6.3: the list starts at 0x100, so that header cannot be
    // unlinked; ID 0 keeps the rest of the chain reachable.
    space.set_raw32(offset, space.raw32(offset) & 0xFFFF0000u);
    return {};
  }
  set_extended_next(space, (*(it - 1))->offset, cap.next);
  return {};
}

Status relink_capabilities(ConfigSpace& space, CapabilitySpace which,
                           std::span<const std::uint16_t> order) {
  const bool standard = which == CapabilitySpace::kStandard;
  const std::uint32_t lowest = standard ? kStandardCapabilityStart : kExtendedCapabilityStart;
  const std::uint32_t end = standard ? kConventionalConfigSize : space.size();
  if (!standard && !space.is_extended()) {
    return make_error(ErrorCode::kUnsupported, "the device has no extended configuration space");
  }
  if (!standard && (order.empty() || order.front() != kExtendedCapabilityStart)) {
    return make_error(ErrorCode::kInvalidArgument,
                      "an extended capability chain must start at 0x100");
  }
  std::bitset<kExtendedConfigSize> seen;
  for (const std::uint16_t off : order) {
    if (off % 4 != 0 || off < lowest || off + 4u > end) {
      return make_error(ErrorCode::kInvalidArgument, "{:#x} is not a valid {} capability offset",
                        off, space_name(which));
    }
    if (seen[off]) {
      return make_error(ErrorCode::kInvalidArgument, "offset {:#x} appears twice in the chain",
                        off);
    }
    seen[off] = true;
  }
  for (std::size_t i = 0; i < order.size(); ++i) {
    const std::uint16_t next = i + 1 < order.size() ? order[i + 1] : 0;
    if (standard) {
      set_standard_next(space, order[i], static_cast<std::uint8_t>(next));
    } else {
      set_extended_next(space, order[i], next);
    }
  }
  if (standard) {
    space.set_raw8(reg::kCapabilityPointer,
                   order.empty() ? 0 : static_cast<std::uint8_t>(order[0]));
    std::uint16_t status_value = space.raw16(reg::kStatus);
    status_value = order.empty()
                       ? static_cast<std::uint16_t>(status_value & ~status::kCapabilityList)
                       : static_cast<std::uint16_t>(status_value | status::kCapabilityList);
    space.set_raw16(reg::kStatus, status_value);
  }
  return {};
}

}  // namespace vpci::pci