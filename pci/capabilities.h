// Capability lists: the catalog of IDs (capability_catalog.cc), the walker
// (capability_scan.cc), and the editors (capability_editor.cc).
//
// The walker follows exactly the rules `lspci` applies (pciutils ls-caps.c and
// ls-ecaps.c), so what `vpci inspect` reports is what lspci decodes, and it reports
// every deviation from the PCI rules Linux enforces (drivers/pci/pci.c
// __pci_find_next_cap_ttl, pci_find_next_ext_capability) as a diagnostic:
//   standard: present iff Status.CapList; pointer at 0x34 (0x14 for CardBus) & ~3;
//             entries must lie in 0x40-0xFF; ID 0xFF ends a broken chain.
//   extended: only when a PCIe or PCI-X capability exists; starts at 0x100; a header
//             of 0 or ~0 ends the list; next pointers must be >= 0x100.
// Each offset is visited at most once, so malformed chains cannot loop the walker.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"
#include "pci/config_space.h"

namespace vpci::pci {

enum class CapabilitySpace : std::uint8_t { kStandard, kExtended };
std::string_view space_name(CapabilitySpace space);  // "std" / "ext"

namespace cap_id {
inline constexpr std::uint8_t kPowerManagement = 0x01;
inline constexpr std::uint8_t kMsi = 0x05;
inline constexpr std::uint8_t kPciX = 0x07;
inline constexpr std::uint8_t kVendorSpecific = 0x09;
inline constexpr std::uint8_t kBridgeSubsystemVendorId = 0x0D;
inline constexpr std::uint8_t kPciExpress = 0x10;
inline constexpr std::uint8_t kMsiX = 0x11;
}  // namespace cap_id

namespace ext_cap_id {
inline constexpr std::uint16_t kNull = 0x0000;
inline constexpr std::uint16_t kAer = 0x0001;
inline constexpr std::uint16_t kVendorSpecific = 0x000B;
inline constexpr std::uint16_t kAri = 0x000E;
inline constexpr std::uint16_t kAts = 0x000F;
inline constexpr std::uint16_t kSriov = 0x0010;
inline constexpr std::uint16_t kPri = 0x0013;
inline constexpr std::uint16_t kPasid = 0x001B;
inline constexpr std::uint16_t kDesignatedVendorSpecific = 0x0023;
}  // namespace ext_cap_id

// Human name of a capability ID ("MSI-X", "Process Address Space ID"); "Unknown" if
// the catalog does not know it.
std::string_view capability_name(CapabilitySpace space, std::uint16_t id);

// Structure size of the capability at `offset` in `config` (the readable bytes), as
// far as the registers define it; variable-size structures (MSI, VSEC/DVSEC, VC,
// ReBAR, EA, ...) are sized from their own fields. nullopt when the size cannot be
// known from the ID and contents.
std::optional<std::uint32_t> capability_size(CapabilitySpace space, std::uint16_t id,
                                             std::span<const std::uint8_t> config,
                                             std::uint32_t offset);

struct Capability {
  CapabilitySpace space;
  std::uint16_t offset;
  std::uint16_t id;
  std::uint8_t version;  // extended capabilities only
  std::uint16_t next;    // raw next pointer (already & ~3)
  std::optional<std::uint32_t> size;
};

enum class Severity : std::uint8_t { kInfo, kWarning, kError };
std::string_view severity_name(Severity severity);

struct Diagnostic {
  Severity severity;
  std::string code;  // stable, machine-readable ("chain-loop", "pointer-into-header", ...)
  CapabilitySpace space;
  std::optional<std::uint16_t> offset;
  std::string message;
};

struct CapabilityScan {
  std::vector<Capability> capabilities;  // in chain order, standard first
  std::vector<Diagnostic> diagnostics;
  bool extended_walked = false;  // lspci walks extended space only after PCIe/PCI-X
};

// Walks both chains of `config`, whose length is the number of bytes that can be read
// (a truncated dump is shorter than its space). Never fails; problems are diagnostics.
CapabilityScan scan_capabilities(std::span<const std::uint8_t> config);

struct ConfigRange {
  CapabilitySpace space;
  std::uint32_t begin;  // inclusive
  std::uint32_t end;    // exclusive
};

// Bytes a capability occupies for layout purposes: its structure size when known,
// otherwise everything up to the next capability in address order (or the end of
// its space) — the conservative rule QEMU's vfio uses for every capability.
std::uint32_t occupied_length(const CapabilityScan& scan, const Capability& cap,
                              std::uint32_t space_size);

// Ranges not covered by any capability: 0x40-0xFF in standard space and, for a
// 4096-byte space, 0x100-0xFFF in extended space. "Free" only in the sense of the
// capability structures: undocumented registers can still live there.
std::vector<ConfigRange> free_ranges(const CapabilityScan& scan, std::uint32_t space_size);

// ---- editing a ConfigSpace ------------------------------------------------------
// Adds a standard capability: `body` is everything after the ID/next bytes. With no
// offset, first fit in 0x40-0xFF on DWORD granularity (QEMU pci_add_capability). The
// new capability is appended to the chain; Status.CapList is set.
Result<std::uint16_t> add_standard_capability(ConfigSpace& space, std::uint8_t id,
                                              std::span<const std::uint8_t> body,
                                              std::optional<std::uint16_t> offset = {});

// Adds an extended capability: `body` is everything after the 4-byte header. The
// offset must be >= 0x100, DWORD aligned, fit in 4 KiB and overlap no capability;
// with no offset, the first fitting gap is used. The capability is linked in address
// order; when the space has no extended capabilities and the offset is not 0x100, a
// Null header at 0x100 points to it (an empty list has nowhere else to start).
Result<std::uint16_t> add_extended_capability(ConfigSpace& space, std::uint16_t id,
                                              std::uint8_t version,
                                              std::span<const std::uint8_t> body,
                                              std::optional<std::uint16_t> offset = {});

// Unlinks the capability at `offset`. The extended capability at 0x100 cannot be
// unlinked (the list starts there), so it keeps its version and next pointer and gets
// ID 0, which walkers show as "Null" and skip — the rule QEMU and Xen follow.
Status hide_capability(ConfigSpace& space, CapabilitySpace which, std::uint16_t offset);

// Rewrites the next pointers so the chain visits `order` (capability offsets) in that
// order. In extended space the first entry must be 0x100.
Status relink_capabilities(ConfigSpace& space, CapabilitySpace which,
                           std::span<const std::uint16_t> order);

}  // namespace vpci::pci
