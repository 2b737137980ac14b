// Composing the guest view of a passed-through device: hiding capabilities, placing
// emulated extended capabilities (PASID first), and reporting which bytes the VMM must
// emulate. docs/placement.md describes the rules for users; this header the API.
//
// Where a capability goes, first rule that applies (each reported in the result):
//   1. explicit  — the request names an offset. Checked as QEMU checks its
//                  x-vpasid-cap-offset (DWORD aligned, >= 0x100, offset + size <= 0x1000)
//                  and, stricter than QEMU, against every capability's occupied range.
//   2. table     — a free-space table (free_space_table.h) has an entry for the device.
//   3. dvsec     — the device describes its free space with free-space DVSECs
//                  (free_space_dvsec.h, docs/free-space-dvsec.md).
//   4. default   — QEMU's choice: the tail of extended space (PASID at 0xFF8), stacking
//                  downwards for further capabilities; 0x100 when the device has no
//                  extended capabilities (the list must start there).
//   5. gap-search — only when asked for, and only when the default does not fit: the
//                  highest DWORD-aligned range no capability claims and whose bytes read
//                  zero, with a warning (holes can hold undocumented registers).
// A source that applies is authoritative: when it has no room the request fails rather
// than falling through to a guess.
//
// Nothing is modified on error: the input is const and the result is a new ConfigSpace.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"
#include "pci/capabilities.h"
#include "pci/config_space.h"
#include "pci/free_space_dvsec.h"
#include "pci/free_space_table.h"
#include "pci/pasid.h"

namespace vpci::pci {

enum class PlacementRule : std::uint8_t { kExplicit, kTable, kDvsec, kDefault, kGapSearch };
std::string_view placement_rule_name(
    PlacementRule rule);  // "explicit", "table", "dvsec", "default", "gap-search"

// One extended capability to add: its header fields, everything after the header, and
// which bits of that body the guest may write (shorter than the body: the rest is RO).
struct ExtendedCapabilityRequest {
  std::uint16_t id = 0;
  std::uint8_t version = 1;
  std::vector<std::uint8_t> body;
  std::vector<std::uint8_t> body_write_mask;
  std::optional<std::uint16_t> offset;  // rule 1
  std::string label;                    // for messages: "PASID", "VSEC 0x1234"

  [[nodiscard]] std::uint32_t length() const { return 4 + static_cast<std::uint32_t>(body.size()); }
};

ExtendedCapabilityRequest make_pasid_request(const PasidFields& fields,
                                             std::optional<std::uint16_t> offset = {});
// VSEC (PCIe Base 6.0 §7.9.5): VSEC ID, revision, length = 8 + data (or `length` when
// larger, zero padded).
Result<ExtendedCapabilityRequest> make_vsec_request(std::uint16_t vsec_id, std::uint8_t revision,
                                                    std::span<const std::uint8_t> data,
                                                    std::optional<std::uint32_t> length = {});
// DVSEC (§7.9.6): DVSEC vendor, revision, DVSEC ID, registers from +0xA.
Result<ExtendedCapabilityRequest> make_dvsec_request(std::uint16_t vendor, std::uint16_t dvsec_id,
                                                     std::uint8_t revision,
                                                     std::span<const std::uint8_t> data,
                                                     std::optional<std::uint32_t> length = {});

// Parses an `--add` argument (all numbers decimal or 0x hex, DATA/MASK as hex bytes):
//   vsec,id=N[,rev=N][,data=HEX][,length=N][,at=OFF]
//   dvsec,vendor=N,id=N[,rev=N][,data=HEX][,length=N][,at=OFF]
//   raw,id=N[,version=N][,data=HEX][,wmask=HEX][,at=OFF]
//   free-space-gap,length=N[,at=OFF]
//   free-space-table,ranges=OFF+LEN[/OFF+LEN...][,at=OFF]
Result<ExtendedCapabilityRequest> parse_capability_spec(std::string_view text);

struct HideRequest {
  enum class Kind : std::uint8_t { kExtendedId, kStandardId, kOffset };
  Kind kind = Kind::kExtendedId;
  std::uint16_t value = 0;
};
// "0x1b" / "27" (extended capability ID), "std:0x09" (standard ID), "@0x100" (offset:
// standard below 0x100, extended from 0x100).
Result<HideRequest> parse_hide_spec(std::string_view text);

struct PlacementRequest {
  std::vector<HideRequest> hide;               // applied first
  std::vector<ExtendedCapabilityRequest> add;  // placed in order
  std::optional<FreeSpaceTable> table;         // rule 2 when it has an entry
  bool search_gaps = false;                    // allows rule 5
};

struct PlacedCapability {
  std::uint16_t id = 0;
  std::uint8_t version = 0;
  std::uint16_t offset = 0;
  std::uint32_t length = 0;
  PlacementRule rule = PlacementRule::kDefault;
  std::string label;
  std::string detail;  // why this offset ("table 8086:46a6 (free.toml): [0x400, 0x500)")
};

struct HiddenCapability {
  CapabilitySpace space = CapabilitySpace::kExtended;
  std::uint16_t offset = 0;
  std::uint16_t id = 0;
  std::uint32_t length = 0;  // occupied length in the source
  bool id_zeroed = false;    // the 0x100 rule: kept in the chain as a Null header
  std::string reason;        // "requested", "free-space DVSEC consumed", ...
};

// Bits the VMM serves from its own copy instead of the device, per byte: a VMM
// implements this as QEMU's emulated_config_bits plus its wmask.
struct OverlayField {
  std::uint16_t offset = 0;
  std::vector<std::uint8_t> value;          // guest-visible bytes
  std::vector<std::uint8_t> emulated_mask;  // 1 = from the overlay, 0 = from the device
  std::vector<std::uint8_t> write_mask;     // emulated bits the guest may change
  std::string what;
};

// How a rule's source stood for this device, one word per rule in the report.
enum class FreeSpaceStatus : std::uint8_t {
  kUsed,        // it placed at least one capability
  kUnused,      // available, but an earlier rule placed everything
  kNotGiven,    // rules 1 and 2: no offset / no table in the request
  kNoEntry,     // rule 2: the table has no entry for the device
  kNoneFound,   // rule 3: the device has no free-space DVSEC
  kTaken,       // rule 4: the default slot is occupied
  kNotEnabled,  // rule 5: --search-gaps was not given
  kNotNeeded,   // rule 5: enabled, but the earlier rules placed everything
};
// "used", "unused", "not-given", "no-entry", "none-found", "taken", "not-enabled",
// "not-needed": the words `vpci place` prints and its JSON carries.
std::string_view free_space_status_name(FreeSpaceStatus status);

// What each free-space source said for this device, in rule order.
struct FreeSpaceSourceReport {
  PlacementRule rule = PlacementRule::kDefault;
  FreeSpaceStatus status = FreeSpaceStatus::kUnused;
  std::string detail;
  std::vector<ConfigRange> ranges;
};

struct PlacementResult {
  ConfigSpace guest;
  std::vector<PlacedCapability> placed;
  std::vector<HiddenCapability> hidden;
  std::vector<OverlayField> overlay;
  std::vector<FreeSpaceSourceReport> free_space;
  std::vector<std::string> warnings;
};

// Applies `request` to a copy of the device whose readable config bytes are `readable`
// (a dump: 256 or 4096 bytes, or a shorter, truncated image). Errors (each naming the
// conflicting range): no extended space, PASID already present, offset outside
// extended space or unaligned, overlap with a capability, a conflicting table entry or
// free-space DVSEC, no room.
Result<PlacementResult> place_capabilities(std::span<const std::uint8_t> readable,
                                           const PlacementRequest& request);

// Why this device has no usable extended capability space, or nullopt if it has one:
// too few readable bytes, 0x100 reads all ones (Linux then sizes the space at 256
// bytes), or no PCI Express / PCI-X capability (neither Linux nor lspci walks 0x100+).
std::optional<std::string> extended_space_problem(std::span<const std::uint8_t> readable,
                                                  const CapabilityScan& scan);

}  // namespace vpci::pci
