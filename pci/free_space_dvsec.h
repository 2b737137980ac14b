// The free-space DVSEC: a Designated Vendor-Specific Extended Capability (PCIe Base 6.0
// §7.9.6) with which a device, or a vfio variant driver emulating one, says which parts
// of its configuration space hold no registers, so a VMM can put emulated capabilities
// (PASID first) there. Proposed on the kvm list (Alex Williamson, April 2024) and never
// specified; docs/free-space-dvsec.md is this project's format, with both variants from
// that discussion:
//   format 0, "gap":   one DVSEC per free gap; the DVSEC's own extent
//                      [offset, offset + DVSEC Length) is the free range.
//   format 1, "table": one DVSEC holding a table of free ranges elsewhere.
//
// PROVISIONAL: the DVSEC Vendor ID and DVSEC ID below are NOT assigned to this project
// by the PCI-SIG. 0x7670 ("vp") is absent from pci.ids 2023.04.10; it must be replaced by
// an assigned ID (or a PCI-SIG ECN) before any device ships this structure.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"
#include "pci/capabilities.h"
#include "pci/capability_registers.h"

namespace vpci::pci {

namespace free_space_dvsec {
inline constexpr std::uint16_t kProvisionalVendorId = 0x7670;  // PROVISIONAL, see above
inline constexpr std::uint16_t kProvisionalDvsecId = 0x0001;   // PROVISIONAL
inline constexpr std::uint8_t kRevision = 0;
inline constexpr std::uint8_t kCapabilityVersion = 1;  // DVSEC extended capability version
// Register offsets from the start of the capability.
inline constexpr std::uint32_t kDvsecHeader1 = dvsec::kHeader1;
inline constexpr std::uint32_t kDvsecHeader2 = dvsec::kHeader2;
inline constexpr std::uint32_t kControl = 0x0A;  // format 3:0, RsvdP 7:4, entry count 15:8
inline constexpr std::uint32_t kEntries = 0x0C;  // format 1: 4 bytes per range
inline constexpr std::uint32_t kMinimumLength = 0x0C;
inline constexpr std::uint32_t kMaximumLength = 0xFFC;  // 12-bit length, DWORD multiple
inline constexpr unsigned kMaxEntries = 0xFF;
}  // namespace free_space_dvsec

enum class FreeSpaceFormat : std::uint8_t { kGap = 0, kRangeTable = 1 };
std::string_view free_space_format_name(FreeSpaceFormat format);  // "gap" / "table"

struct FreeSpaceDvsec {
  std::uint16_t offset = 0;  // of the DVSEC itself
  std::uint8_t revision = 0;
  std::uint32_t length = 0;  // DVSEC Length
  FreeSpaceFormat format = FreeSpaceFormat::kGap;
  std::vector<ConfigRange> ranges;  // the free ranges it describes (gap: its own extent)
  std::string problem;              // non-empty: malformed or contradicted by the device
};

// Finds every capability in `scan` that is a free-space DVSEC (DVSEC Vendor ID and
// DVSEC ID above) and decodes it. A structure that breaks the format or claims a range
// that a capability occupies is returned with `problem` set, never silently dropped:
// the placement rule refuses to use a device whose own description is wrong.
std::vector<FreeSpaceDvsec> find_free_space_dvsecs(std::span<const std::uint8_t> config,
                                                   const CapabilityScan& scan);

// Bodies (everything after the 4-byte extended capability header) for
// add_extended_capability(space, ext_cap_id::kDesignatedVendorSpecific,
// free_space_dvsec::kCapabilityVersion, body, offset).
//   gap:   `gap_length` is the whole extent, >= 12 and a multiple of 4 (the DVSEC's
//          own 12 bytes count: the VMM replaces the DVSEC when it uses the gap).
//   table: the ranges to list (each DWORD aligned, 4-byte multiple, inside one space).
Result<std::vector<std::uint8_t>> free_space_gap_dvsec_body(std::uint32_t gap_length);
Result<std::vector<std::uint8_t>> free_space_table_dvsec_body(std::span<const ConfigRange> ranges);

}  // namespace vpci::pci
