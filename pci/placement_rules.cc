// The placement rules of pci/placement.h, one function each. Each answers where one
// capability goes under its rule, or why that rule's source has no room; which rule
// applies is decided by place_capabilities (placement.cc).
#include <algorithm>

#include "pci/pasid.h"
#include "pci/placement_detail.h"
#include "pci/registers.h"

namespace vpci::pci::placement_detail {
namespace {

// Highest DWORD-aligned slot that no capability (and no hidden capability) occupies and
// whose bytes all read zero: a zero check is the usual heuristic for "no registers",
// and the tail end is QEMU's preference.
std::optional<std::uint16_t> search_gap(const ConfigSpace& guest,
                                        const std::vector<Occupant>& occupants,
                                        const std::vector<HiddenCapability>& hidden,
                                        std::uint32_t need) {
  for (std::uint32_t at = kExtendedConfigSize - need;; at -= 4) {
    if (at < kExtendedCapabilityStart) return std::nullopt;
    bool usable = first_conflict(occupants, at, at + need) == nullptr;
    for (const auto& h : hidden) {
      if (h.space == kExt && at < h.offset + h.length && h.offset < at + need) usable = false;
    }
    for (std::uint32_t i = 0; usable && i < need; ++i) usable = guest.raw8(at + i) == 0;
    if (usable) return static_cast<std::uint16_t>(at);
  }
}

}  // namespace

Status validate_table_entry(const FreeSpaceTable& table, const FreeSpaceTableEntry& entry,
                            const std::vector<Occupant>& occupants) {
  for (const auto& range : entry.free) {
    if (const Occupant* hit = first_conflict(occupants, range.begin, range.end)) {
      return make_error(ErrorCode::kConflict,
                        "conflicting table entry {} ({}:{}): free range {} overlaps {}",
                        entry.key.to_string(), table.source, entry.line,
                        range_text(range.begin, range.end), occupant_text(*hit));
    }
  }
  return {};
}

// A second PASID would leave the guest driver to pick one of two register sets. See
// docs/placement.md for why this is an error rather than a silent no-op.
Status check_no_pasid(const ConfigSpace& guest, const CapabilityScan& scan,
                      const std::vector<PlacedCapability>& placed) {
  for (const auto& existing : scan.capabilities) {
    if (existing.space != kExt || existing.id != ext_cap_id::kPasid) continue;
    const auto range = range_text(existing.offset, existing.offset + pasid::kCapabilitySize);
    for (const auto& p : placed) {
      if (p.offset == existing.offset) {
        return make_error(ErrorCode::kAlreadyExists,
                          "two PASID capabilities requested; the first is already at {}", range);
      }
    }
    const auto fields =
        decode_pasid_capability_register(guest.raw16(existing.offset + pasid::kCapabilityRegister));
    return make_error(
        ErrorCode::kAlreadyExists,
        "the device already has a PASID capability at {} (Max PASID Width {} ({:#x}), "
        "Exec{}, Priv{}); hide it (--hide 0x1b or --hide @{:#x}) to replace it with the "
        "emulated one",
        range, fields.max_width, fields.max_width, fields.execute ? '+' : '-',
        fields.privileged ? '+' : '-', existing.offset);
  }
  return {};
}

Result<Slot> place_explicit(const ExtendedCapabilityRequest& cap, std::uint16_t offset,
                            const std::vector<Occupant>& occupants) {
  const std::uint32_t need = round_up4(cap.length());
  // QEMU's x-vpasid-cap-offset checks, in its order: alignment, >= 0x100, fits.
  if (offset % 4 != 0) {
    return make_error(ErrorCode::kInvalidArgument, "{}: offset {:#x} is not DWORD aligned",
                      cap.label, offset);
  }
  if (offset < kExtendedCapabilityStart || offset + need > kExtendedConfigSize) {
    return make_error(ErrorCode::kOutOfRange,
                      "{}: {} is outside extended configuration space [0x100, 0x1000)", cap.label,
                      range_text(offset, offset + need));
  }
  if (const Occupant* hit = first_conflict(occupants, offset, offset + need)) {
    return make_error(ErrorCode::kConflict, "{}: {} overlaps {}", cap.label,
                      range_text(offset, offset + need), occupant_text(*hit));
  }
  return Slot{
      PlacementRule::kExplicit, offset, fmt::format("requested offset {:#x}", offset), {}, {}};
}

Result<Slot> place_by_table(const ExtendedCapabilityRequest& cap, std::uint32_t need,
                            const FreeSpaceTable& table, const FreeSpaceTableEntry& entry,
                            const std::vector<Occupant>& occupants) {
  const auto fit = first_fit(entry.free, occupants, need);
  if (!fit) {
    return make_error(
        ErrorCode::kNoSpace,
        "no room for {} ({} bytes): table entry {} ({}:{}) lists {}, all taken or too small",
        cap.label, need, entry.key.to_string(), table.source, entry.line, ranges_text(entry.free));
  }
  return Slot{PlacementRule::kTable,
              fit->first,
              fmt::format("table {} entry {}: free range {}", table.source, entry.key.to_string(),
                          range_text(fit->second.begin, fit->second.end)),
              {},
              {}};
}

Result<Slot> place_by_dvsec(const ExtendedCapabilityRequest& cap, std::uint32_t need,
                            const FreeSpaceSources& sources,
                            const std::vector<Occupant>& occupants) {
  for (const auto& d : sources.dvsecs) {
    if (!d.problem.empty()) {
      return make_error(ErrorCode::kConflict,
                        "conflicting free-space DVSEC at {:#x} ({} format): {}; refusing to "
                        "place {} by a description the device contradicts",
                        d.offset, free_space_format_name(d.format), d.problem, cap.label);
    }
  }
  const auto fit = first_fit(sources.dvsec_ranges, occupants, need);
  if (!fit) {
    return make_error(ErrorCode::kNoSpace,
                      "no room for {} ({} bytes): the device's free-space DVSECs describe {}, all "
                      "taken or too small",
                      cap.label, need, ranges_text(sources.dvsec_ranges));
  }
  const std::uint16_t owner = sources.range_owner.at(fit->second.begin);
  const bool gap = sources.gap_owners.count(owner) != 0;
  Slot slot{PlacementRule::kDvsec,
            fit->first,
            fmt::format("free-space DVSEC ({}) at {:#x}: free range {}", gap ? "gap" : "table",
                        owner, range_text(fit->second.begin, fit->second.end)),
            {},
            {}};
  // A gap DVSEC only marks its own body as free: the capability replaces it.
  if (gap) slot.consume_dvsec = owner;
  return slot;
}

tl::expected<Slot, std::string> place_by_default(const ExtendedCapabilityRequest& cap,
                                                 std::uint32_t need, const CapabilityScan& scan,
                                                 std::optional<std::uint16_t> default_tail,
                                                 const std::vector<Occupant>& occupants) {
  const bool empty_list = std::none_of(scan.capabilities.begin(), scan.capabilities.end(),
                                       [](const Capability& c) { return c.space == kExt; });
  std::uint32_t candidate = 0;
  std::string detail;
  if (empty_list) {
    candidate = kExtendedCapabilityStart;
    detail = "0x100: the device has no extended capabilities and the list must start there";
  } else {
    const std::uint32_t tail = default_tail.value_or(kExtendedConfigSize);
    candidate = tail >= kExtendedCapabilityStart + need ? tail - need : 0;
    detail =
        default_tail
            ? fmt::format("tail of extended space, below the capability placed at {:#x}", tail)
        : cap.id == ext_cap_id::kPasid
            ? fmt::format("QEMU's default: the last {} bytes of extended space", need)
            : fmt::format("the last {} bytes of extended space (the tail, where QEMU puts PASID)",
                          need);
  }
  if (candidate < kExtendedCapabilityStart) {
    return tl::unexpected<std::string>("the tail of extended space is used up");
  }
  if (const Occupant* hit = first_conflict(occupants, candidate, candidate + need)) {
    return tl::unexpected<std::string>(fmt::format(
        "{} overlaps {}", range_text(candidate, candidate + need), occupant_text(*hit)));
  }
  return Slot{
      PlacementRule::kDefault, static_cast<std::uint16_t>(candidate), std::move(detail), {}, {}};
}

Result<Slot> place_by_gap_search(const ExtendedCapabilityRequest& cap, std::uint32_t need,
                                 const ConfigSpace& guest, const std::vector<Occupant>& occupants,
                                 const std::vector<HiddenCapability>& hidden,
                                 std::string_view default_taken) {
  const auto gap = search_gap(guest, occupants, hidden, need);
  if (!gap) {
    return make_error(ErrorCode::kNoSpace,
                      "no room for {}: {} and no {}-byte all-zero range is free in extended space",
                      cap.label, default_taken, need);
  }
  const std::string range = range_text(*gap, *gap + need);
  return Slot{PlacementRule::kGapSearch,
              *gap,
              fmt::format("highest free all-zero range {} (the default {})", range, default_taken),
              {},
              fmt::format("{} placed at {:#x} by gap search: no capability claims {} and it reads "
                          "zero, but holes between capabilities can hold undocumented registers; "
                          "confirm with the vendor and record the range in a free-space table",
                          cap.label, *gap, range)};
}

}  // namespace vpci::pci::placement_detail
