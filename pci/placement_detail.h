// Pieces shared by the files that implement pci/placement.h: placement_layout.cc (what
// occupies extended space and who the device is), placement_hide.cc (--hide),
// placement_overlay.cc (the bytes the VMM emulates), placement_rules.cc (one function
// per placement rule) and placement.cc (the driver that applies them in order).
// Internal to pci/.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <tl/expected.hpp>

#include "base/error.h"
#include "pci/capabilities.h"
#include "pci/capability_detail.h"
#include "pci/config_space.h"
#include "pci/free_space_dvsec.h"
#include "pci/free_space_table.h"
#include "pci/placement.h"

namespace vpci::pci::placement_detail {

inline constexpr auto kExt = CapabilitySpace::kExtended;
inline constexpr auto kStd = CapabilitySpace::kStandard;

// Capabilities are placed and sized on DWORD granularity, as the editor sizes them.
using capability_detail::round_up4;

std::string range_text(std::uint32_t begin, std::uint32_t end);  // "[0x100, 0x108)"
std::string ranges_text(const std::vector<ConfigRange>& ranges);

// ---- the current layout (placement_layout.cc) ---------------------------------------

// Scans for placement: like the editor, extended space is walked whenever the space is
// 4 KiB, so the checks see exactly what add_extended_capability will see.
inline CapabilityScan scan_guest(const ConfigSpace& space) {
  return scan_capabilities(space.bytes());
}

// A range of extended space nothing may be placed on, and what holds it.
struct Occupant {
  std::uint32_t begin;
  std::uint32_t end;
  std::string what;
};

std::string occupant_text(const Occupant& o);  // "AER [0x100] at [0x100, 0x148)"

// Occupied extended ranges, DWORD rounded as the engine rounds them. Capabilities at
// `excluded` offsets are left out (free-space gap DVSECs the dvsec rule may consume);
// an excluded capability at 0x100 still occupies its header, which must stay.
std::vector<Occupant> extended_occupants(std::span<const std::uint8_t> config,
                                         const CapabilityScan& scan,
                                         const std::set<std::uint16_t>& excluded = {});

// The occupant of [begin, end) with the lowest start, or nullptr when the range is free.
const Occupant* first_conflict(const std::vector<Occupant>& occupants, std::uint32_t begin,
                               std::uint32_t end);

// Lowest DWORD-aligned slot of `need` bytes inside `ranges` that meets no occupant, and
// the range it lies in.
std::optional<std::pair<std::uint16_t, ConfigRange>> first_fit(
    const std::vector<ConfigRange>& ranges, const std::vector<Occupant>& occupants,
    std::uint32_t need);

// The IDs a free-space table is keyed by.
struct DeviceIdentity {
  std::uint16_t vendor = 0;
  std::uint16_t device = 0;
  std::optional<std::uint16_t> subsystem_vendor;
  std::optional<std::uint16_t> subsystem_device;
};

DeviceIdentity identify(const ConfigSpace& space, const CapabilityScan& scan);
std::string identity_text(const DeviceIdentity& id);  // "8086:46a6 (subsystem 1028:0b10)"

// ---- hiding (placement_hide.cc) -----------------------------------------------------

// True when a PCI Express or PCI-X capability other than the one at
// `without_std_offset` remains: only then do Linux and lspci walk extended space.
bool reaches_extended_space(const CapabilityScan& scan,
                            std::optional<std::uint16_t> without_std_offset);

// Unlinks the capability at `offset` from `guest` and records it in `hidden` (sized as
// in the source). Refuses to hide the last PCIe/PCI-X capability while extended
// capabilities exist or are being added. Naming one capability twice is not an error.
Status hide_one(ConfigSpace& guest, const CapabilityScan& source_scan, CapabilitySpace space,
                std::uint16_t offset, std::string reason, bool adding_extended,
                std::vector<HiddenCapability>& hidden);

// Applies every --hide of `request`, in order.
Status apply_hides(ConfigSpace& guest, const CapabilityScan& source_scan,
                   const PlacementRequest& request, std::vector<HiddenCapability>& hidden);

// ---- the overlay (placement_overlay.cc) ---------------------------------------------

// Every byte of `guest` that differs from `source` or belongs to a placed capability,
// grouped into fields and explained.
std::vector<OverlayField> build_overlay(const ConfigSpace& source, const ConfigSpace& guest,
                                        const std::vector<PlacedCapability>& placed);

// ---- the rules (placement_rules.cc) -------------------------------------------------

// What the free-space sources say for this device, found once before placing.
struct FreeSpaceSources {
  const FreeSpaceTableEntry* table_entry = nullptr;    // rule 2 when non-null
  std::vector<FreeSpaceDvsec> dvsecs;                  // rule 3 when non-empty
  std::vector<ConfigRange> dvsec_ranges;               // sorted, from valid DVSECs
  std::map<std::uint32_t, std::uint16_t> range_owner;  // dvsec range begin -> DVSEC offset
  std::set<std::uint16_t> gap_owners;                  // gap DVSECs not yet consumed
  std::optional<std::uint16_t> default_tail;           // lowest offset placed by rule 4
};

// Where one capability goes, by which rule and why.
struct Slot {
  PlacementRule rule = PlacementRule::kDefault;
  std::uint16_t offset = 0;
  std::string detail;
  std::optional<std::uint16_t> consume_dvsec;  // a gap DVSEC to unlink before adding
  std::optional<std::string> warning;
};

// A table entry is authoritative only when it agrees with the device: none of its free
// ranges may overlap a capability.
Status validate_table_entry(const FreeSpaceTable& table, const FreeSpaceTableEntry& entry,
                            const std::vector<Occupant>& occupants);

// PASID is one per function (PCIe Base 6.0 §7.8.8): fails when `scan` has one.
Status check_no_pasid(const ConfigSpace& guest, const CapabilityScan& scan,
                      const std::vector<PlacedCapability>& placed);

// Rule 1: the requested offset, checked as QEMU checks x-vpasid-cap-offset.
Result<Slot> place_explicit(const ExtendedCapabilityRequest& cap, std::uint16_t offset,
                            const std::vector<Occupant>& occupants);

// Rule 2: the first fit in the table entry's free ranges.
Result<Slot> place_by_table(const ExtendedCapabilityRequest& cap, std::uint32_t need,
                            const FreeSpaceTable& table, const FreeSpaceTableEntry& entry,
                            const std::vector<Occupant>& occupants);

// Rule 3: the first fit in the ranges the device's free-space DVSECs describe.
// `occupants` leaves out the gap DVSECs, which the capability may replace.
Result<Slot> place_by_dvsec(const ExtendedCapabilityRequest& cap, std::uint32_t need,
                            const FreeSpaceSources& sources,
                            const std::vector<Occupant>& occupants);

// Rule 4: QEMU's default slot, or (unexpected) why it is taken. Not an error by itself:
// rule 5 may follow.
tl::expected<Slot, std::string> place_by_default(const ExtendedCapabilityRequest& cap,
                                                 std::uint32_t need, const CapabilityScan& scan,
                                                 std::optional<std::uint16_t> default_tail,
                                                 const std::vector<Occupant>& occupants);

// Rule 5: the highest free all-zero range, with a warning. `default_taken` says why
// rule 4 did not apply.
Result<Slot> place_by_gap_search(const ExtendedCapabilityRequest& cap, std::uint32_t need,
                                 const ConfigSpace& guest, const std::vector<Occupant>& occupants,
                                 const std::vector<HiddenCapability>& hidden,
                                 std::string_view default_taken);

}  // namespace vpci::pci::placement_detail
