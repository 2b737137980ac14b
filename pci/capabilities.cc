#include "pci/capabilities.h"

#include <algorithm>
#include <array>
#include <bitset>

#include "pci/capability_registers.h"
#include "pci/config_bytes.h"

namespace vpci::pci {
namespace {

std::uint32_t round_up4(std::uint32_t v) {
  return (v + 3u) & ~3u;
}

constexpr std::array<std::string_view, 0x16> kStandardNames = {
    "Null",
    "Power Management",
    "AGP",
    "Vital Product Data",
    "Slot Identification",
    "MSI",
    "CompactPCI Hot Swap",
    "PCI-X",
    "HyperTransport",
    "Vendor Specific",
    "Debug Port",
    "CompactPCI Central Resource Control",
    "PCI Hot-Plug (SHPC)",
    "Bridge Subsystem Vendor ID",
    "AGP 8x",
    "Secure Device",
    "PCI Express",
    "MSI-X",
    "SATA HBA",
    "Advanced Features",
    "Enhanced Allocation",
    "Flattening Portal Bridge",
};

constexpr std::array<std::string_view, 0x37> kExtendedNames = {
    "Null",
    "Advanced Error Reporting",
    "Virtual Channel",
    "Device Serial Number",
    "Power Budgeting",
    "Root Complex Link Declaration",
    "Root Complex Internal Link Control",
    "Root Complex Event Collector Endpoint Association",
    "Multi-Function Virtual Channel",
    "Virtual Channel (MFVC)",
    "Root Complex Register Block",
    "Vendor-Specific Extended",
    "Configuration Access Correlation",
    "Access Control Services",
    "Alternative Routing-ID Interpretation",
    "Address Translation Services",
    "Single Root I/O Virtualization",
    "Multi-Root I/O Virtualization",
    "Multicast",
    "Page Request Interface",
    "Reserved for AMD",
    "Resizable BAR",
    "Dynamic Power Allocation",
    "TPH Requester",
    "Latency Tolerance Reporting",
    "Secondary PCI Express",
    "Protocol Multiplexing",
    "Process Address Space ID",
    "LN Requester",
    "Downstream Port Containment",
    "L1 PM Substates",
    "Precision Time Measurement",
    "PCI Express over M-PHY",
    "FRS Queueing",
    "Readiness Time Reporting",
    "Designated Vendor-Specific",
    "VF Resizable BAR",
    "Data Link Feature",
    "Physical Layer 16.0 GT/s",
    "Lane Margining at the Receiver",
    "Hierarchy ID",
    "Native PCIe Enclosure Management",
    "Physical Layer 32.0 GT/s",
    "Alternate Protocol",
    "System Firmware Intermediary",
    "Shadow Functions",
    "Data Object Exchange",
    "Device 3",
    "Integrity and Data Encryption",
    "Physical Layer 64.0 GT/s",
    "Flit Logging",
    "Flit Performance Measurement",
    "Flit Error Injection",
    "Streamlined Virtual Channel",
    "MMIO Register Block Locator",
};

// Finds the PCI Express capability in the standard chain (bounded walk).
std::optional<std::uint32_t> find_express_capability(std::span<const std::uint8_t> c) {
  if (c.size() < 0x40 || !(config_word(c, reg::kStatus) & status::kCapabilityList))
    return std::nullopt;
  std::uint32_t where = config_byte(c, reg::kCapabilityPointer) & ~3u;
  for (int ttl = 48; where != 0 && ttl > 0; --ttl) {
    if (where + 2 > c.size()) return std::nullopt;
    if (c[where] == cap_id::kPciExpress) return where;
    where = c[where + 1] & ~3u;
  }
  return std::nullopt;
}

// Maximum link width from the PCIe capability's Link Capabilities (bits 9:4).
std::uint32_t link_width(std::span<const std::uint8_t> c) {
  const auto exp = find_express_capability(c);
  if (!exp) return 0;
  return (config_dword(c, *exp + 0x0C) >> 4) & 0x3F;
}

// PCIe capability size by version and port type (PCIe Base 6.0 §7.5.3): version 2
// always carries the full 0x3C-byte structure; version 1 stops after the last
// register block its port type implements.
std::uint32_t express_size(std::span<const std::uint8_t> c, std::uint32_t off) {
  const std::uint16_t flags = config_word(c, off + 2);
  if ((flags & 0xF) >= 2) return 0x3C;
  const unsigned type = (flags >> 4) & 0xF;
  if (type == 4 || type == 0xA) return 0x24;  // root port / RC event collector: root regs
  if (type == 6 || type == 5) return 0x1C;    // switch ports: slot regs
  return 0x14;
}

std::optional<std::uint32_t> standard_size(std::uint8_t id, std::span<const std::uint8_t> c,
                                           std::uint32_t off) {
  const std::uint16_t flags = config_word(c, off + 2);
  switch (id) {
    case 0x00: return 4;
    case 0x01: return 8;   // PM
    case 0x02: return 12;  // AGP
    case 0x03: return 8;   // VPD
    case 0x04: return 4;   // slot ID
    case cap_id::kMsi: {   // PCI 3.0 §6.8.1: 64-bit address +4, per-vector masking +10
      std::uint32_t size = msi::kSize32;
      if (flags & msi::kAddress64) size += msi::kAddress64Extra;
      if (flags & msi::kPerVectorMasking) size += msi::kMaskingExtra;
      return size;
    }
    case 0x06: return 4;  // CompactPCI hot swap
    case cap_id::kPciX: {
      if ((config_byte(c, reg::kHeaderType) & header_type::kLayoutMask) == header_type::kBridge) {
        return 16;
      }
      // Mode 2 capable devices (status bits 29:28 nonzero... PCI-X 2.0) add ECC registers.
      return ((config_dword(c, off + 4) >> 28) & 3) != 0 ? 24 : 8;
    }
    case 0x08: {  // HyperTransport: capability type in bits 15:13 (or 15:11)
      const unsigned type3 = flags >> 13;
      if (type3 == 0) return 28;             // slave/primary interface
      if (type3 == 1) return 24;             // host/secondary interface
      if ((flags >> 11) == 0x15) return 12;  // MSI mapping
      return std::nullopt;
    }
    case cap_id::kVendorSpecific: {
      const std::uint8_t len = config_byte(c, off + 2);
      if (len < 3) return std::nullopt;
      return len;
    }
    case 0x0A: return 4;  // debug port
    case 0x0C: return 8;  // SHPC: DWORD select + data
    case cap_id::kBridgeSubsystemVendorId: return ssvid::kSize;
    case cap_id::kPciExpress: return express_size(c, off);
    case cap_id::kMsiX: return msix::kSize;
    case 0x12: return 8;  // SATA
    case 0x13: return 6;  // advanced features
    case 0x14: {          // Enhanced Allocation (PCI EA ECN): header, type 1 extra DWORD, entries
      std::uint32_t size = 4;
      if ((config_byte(c, reg::kHeaderType) & header_type::kLayoutMask) == header_type::kBridge)
        size += 4;
      const unsigned entries = flags & 0x3F;
      for (unsigned i = 0; i < entries; ++i) {
        if (off + size + 4 > c.size()) return std::nullopt;
        size += 4 + 4 * (config_dword(c, off + size) & 0x7);
        if (off + size > 0x100) return std::nullopt;
      }
      return size;
    }
    default: return std::nullopt;
  }
}

std::optional<std::uint32_t> extended_size(std::uint16_t id, std::span<const std::uint8_t> c,
                                           std::uint32_t off) {
  const std::uint32_t header = config_dword(c, off);
  const std::uint32_t reg4 = config_dword(c, off + 4);
  const unsigned version = (header >> 16) & 0xF;
  switch (id) {
    case 0x00: return 4;
    case 0x01: {  // AER: root ports and event collectors add the root error registers
      const auto exp = find_express_capability(c);
      const unsigned type = exp ? (config_word(c, *exp + 2) >> 4) & 0xF : 0;
      return (type == 4 || type == 0xA) ? 0x38 : 0x2C;
    }
    case 0x02:
    case 0x08:
    case 0x09:  // VC / MFVC: 0x10 + 0xC per VC resource (Extended VC Count + 1)
      return 0x10 + 0xC * ((reg4 & 0x7) + 1);
    case 0x03: return 0x0C;                                // DSN
    case 0x04: return 0x10;                                // power budgeting
    case 0x05: return 0x10 + 0x10 * ((reg4 >> 8) & 0xFF);  // RCLD: link entries
    case 0x07: return version >= 2 ? 0x0C : 0x08;          // RCEC association
    case 0x0A: return 0x14;                                // RCRB header
    case ext_cap_id::kVendorSpecific:
    case ext_cap_id::kDesignatedVendorSpecific: {  // length field, bits 31:20 of +4
      const std::uint32_t len = reg4 >> 20;
      const std::uint32_t minimum = id == ext_cap_id::kVendorSpecific ? 8u : dvsec::kMinimumLength;
      if (len < minimum) return std::nullopt;
      return len;
    }
    case 0x0D: {  // ACS: egress control vector when Egress Control is supported
      std::uint32_t size = 8;
      if (reg4 & (1u << 5)) {
        std::uint32_t bits = (reg4 >> 8) & 0xFF;
        if (bits == 0) bits = 256;
        size += 4 * ((bits + 31) / 32);
      }
      return size;
    }
    case ext_cap_id::kAri:
    case ext_cap_id::kAts: return 8;
    case ext_cap_id::kSriov: return 0x40;
    case 0x12: return 0x30;  // multicast
    case ext_cap_id::kPri: return 0x10;
    case 0x15:
    case 0x24: {  // (VF) Resizable BAR: number of BARs in bits 7:5 of the first control
      const unsigned count = (config_dword(c, off + 8) >> 5) & 0x7;
      return 4 + 8 * std::max(count, 1u);
    }
    case 0x16: return 0x10 + round_up4((reg4 & 0x1F) + 1);  // DPA allocation array
    case 0x17: {  // TPH: ST table in the capability when location bits 10:9 == 01
      std::uint32_t size = 0x0C;
      if (((reg4 >> 9) & 3) == 1) size += round_up4(2 * (((reg4 >> 16) & 0x7FF) + 1));
      return size;
    }
    case 0x18: return 8;                                                  // LTR
    case 0x19: return 0x0C + round_up4(2 * std::max(link_width(c), 1u));  // lane EQ control
    case ext_cap_id::kPasid: return 8;
    case 0x1C: return 8;                                 // LNR
    case 0x1D: return (reg4 & (1u << 5)) ? 0x34 : 0x0C;  // DPC, RP extensions
    case 0x1E: return 0x10;                              // L1 PM substates
    case 0x1F: return 0x0C;                              // PTM
    case 0x21: return 0x10;                              // FRS
    case 0x22: return 0x0C;                              // RTR
    case 0x25: return 0x0C;                              // DLF
    case 0x26:
    case 0x2A: return 0x20 + round_up4(std::max(link_width(c), 1u));  // PL 16/32 GT/s
    case 0x27: return 0x08 + 4 * std::max(link_width(c), 1u);         // lane margining
    case 0x29: return 0x10;                                           // NPEM
    case 0x2E: return 0x18;                                           // DOE
    case 0x2F: return 0x10;                                           // device 3
    default: return std::nullopt;
  }
}

void add_diag(CapabilityScan& scan, Severity severity, std::string code, CapabilitySpace space,
              std::optional<std::uint16_t> offset, std::string message) {
  scan.diagnostics.push_back({severity, std::move(code), space, offset, std::move(message)});
}

void check_overlaps(CapabilityScan& scan, CapabilitySpace space, std::uint32_t space_end) {
  std::vector<const Capability*> caps;
  for (const auto& cap : scan.capabilities) {
    if (cap.space == space) caps.push_back(&cap);
  }
  std::sort(caps.begin(), caps.end(),
            [](const Capability* a, const Capability* b) { return a->offset < b->offset; });
  for (std::size_t i = 0; i < caps.size(); ++i) {
    const Capability& cap = *caps[i];
    if (!cap.size) continue;
    const std::uint32_t end = cap.offset + *cap.size;
    if (end > space_end) {
      add_diag(scan, Severity::kError, "capability-out-of-range", space, cap.offset,
               fmt::format("{} at {:#x} is {} bytes long and ends past {:#x}",
                           capability_name(space, cap.id), cap.offset, *cap.size, space_end));
    }
    if (i + 1 < caps.size() && end > caps[i + 1]->offset && caps[i + 1]->offset != cap.offset) {
      add_diag(scan, Severity::kWarning, "capability-overlap", space, cap.offset,
               fmt::format("{} at {:#x} ({} bytes) overlaps {} at {:#x}",
                           capability_name(space, cap.id), cap.offset, *cap.size,
                           capability_name(space, caps[i + 1]->id), caps[i + 1]->offset));
    }
  }
}

void scan_standard(std::span<const std::uint8_t> c, CapabilityScan& scan, bool& can_have_extended) {
  constexpr auto kStd = CapabilitySpace::kStandard;
  const std::uint8_t layout = c[reg::kHeaderType] & header_type::kLayoutMask;
  if (layout > header_type::kCardbus) {
    add_diag(scan, Severity::kError, "unknown-header-type", kStd, reg::kHeaderType,
             fmt::format("header type {:#04x} is not 0, 1 or 2; capabilities not walked", layout));
    return;
  }
  const std::uint32_t pointer_offset =
      layout == header_type::kCardbus ? reg::kCardbusCapabilityPointer : reg::kCapabilityPointer;
  const std::uint8_t raw_pointer = c[pointer_offset];
  if (!(config_word(c, reg::kStatus) & status::kCapabilityList)) {
    if (raw_pointer != 0 && raw_pointer != 0xFF) {
      add_diag(
          scan, Severity::kInfo, "pointer-without-cap-list", kStd, pointer_offset,
          fmt::format("capability pointer {:#04x} ignored: Status.CapList is clear", raw_pointer));
    }
    return;
  }
  if (raw_pointer & 3) {
    add_diag(scan, Severity::kWarning, "misaligned-pointer", kStd, pointer_offset,
             fmt::format("capability pointer {:#04x} is not DWORD aligned (low bits ignored)",
                         raw_pointer));
  }
  std::bitset<256> visited;
  std::uint32_t where = raw_pointer & ~3u;
  while (where != 0) {
    if (where + 4 > c.size()) {
      add_diag(
          scan, Severity::kError, "truncated", kStd, static_cast<std::uint16_t>(where),
          fmt::format("capability at {:#04x} lies beyond the {} readable bytes", where, c.size()));
      break;
    }
    if (visited[where]) {
      add_diag(scan, Severity::kError, "chain-loop", kStd, static_cast<std::uint16_t>(where),
               fmt::format("capability chain loops back to {:#04x}", where));
      break;
    }
    visited[where] = true;
    const std::uint8_t id = c[where];
    if (id == 0xFF) {
      add_diag(scan, Severity::kError, "chain-broken", kStd, static_cast<std::uint16_t>(where),
               fmt::format("capability at {:#04x} has ID 0xff (chain broken)", where));
      break;
    }
    if (where < kStandardCapabilityStart) {
      add_diag(scan, Severity::kError, "pointer-into-header", kStd,
               static_cast<std::uint16_t>(where),
               fmt::format("capability pointer {:#04x} points into the header (< 0x40); Linux "
                           "stops here, lspci does not",
                           where));
    }
    const std::uint8_t raw_next = c[where + 1];
    if (raw_next & 3) {
      add_diag(scan, Severity::kWarning, "misaligned-pointer", kStd,
               static_cast<std::uint16_t>(where + 1),
               fmt::format("next pointer {:#04x} of capability at {:#04x} is not DWORD aligned",
                           raw_next, where));
    }
    const std::uint16_t next = raw_next & ~3u;
    scan.capabilities.push_back(
        {kStd, static_cast<std::uint16_t>(where), id, 0, next, standard_size(id, c, where)});
    if (capability_name(kStd, id) == "Unknown") {
      add_diag(scan, Severity::kInfo, "unknown-id", kStd, static_cast<std::uint16_t>(where),
               fmt::format("capability ID {:#04x} at {:#04x} is not in the catalog", id, where));
    }
    if (id == cap_id::kPciExpress || id == cap_id::kPciX) can_have_extended = true;
    where = next;
  }
  check_overlaps(scan, kStd, kConventionalConfigSize);
}

void scan_extended(std::span<const std::uint8_t> c, CapabilityScan& scan) {
  constexpr auto kExt = CapabilitySpace::kExtended;
  scan.extended_walked = true;
  std::bitset<kExtendedConfigSize> visited;
  std::uint32_t where = kExtendedCapabilityStart;
  do {
    if (where + 4 > c.size()) {
      if (where != kExtendedCapabilityStart) {
        add_diag(scan, Severity::kError, "truncated", kExt, static_cast<std::uint16_t>(where),
                 fmt::format("extended capability at {:#05x} lies beyond the {} readable bytes",
                             where, c.size()));
      }
      break;
    }
    const std::uint32_t header = config_dword(c, where);
    if (header == 0) {
      if (where != kExtendedCapabilityStart) {
        add_diag(scan, Severity::kWarning, "empty-header", kExt, static_cast<std::uint16_t>(where),
                 fmt::format("next pointer leads to an all-zero header at {:#05x}", where));
      }
      break;
    }
    if (header == 0xFFFFFFFF) {
      add_diag(scan, where == kExtendedCapabilityStart ? Severity::kInfo : Severity::kError,
               "all-ones-header", kExt, static_cast<std::uint16_t>(where),
               fmt::format("extended capability header at {:#05x} reads all ones", where));
      break;
    }
    if (visited[where]) {
      add_diag(scan, Severity::kError, "chain-loop", kExt, static_cast<std::uint16_t>(where),
               fmt::format("extended capability chain loops back to {:#05x}", where));
      break;
    }
    visited[where] = true;
    const auto id = static_cast<std::uint16_t>(header & 0xFFFF);
    const auto version = static_cast<std::uint8_t>((header >> 16) & 0xF);
    const std::uint32_t raw_next = header >> 20;
    if (raw_next & 3) {
      add_diag(scan, Severity::kWarning, "misaligned-pointer", kExt,
               static_cast<std::uint16_t>(where),
               fmt::format("next pointer {:#05x} of extended capability at {:#05x} is not DWORD "
                           "aligned",
                           raw_next, where));
    }
    const auto next = static_cast<std::uint16_t>(raw_next & ~3u);
    if (next != 0 && next < kExtendedCapabilityStart) {
      add_diag(scan, Severity::kError, "pointer-below-extended", kExt,
               static_cast<std::uint16_t>(where),
               fmt::format("next pointer {:#05x} of extended capability at {:#05x} is below 0x100; "
                           "Linux stops there, lspci does not",
                           next, where));
    }
    scan.capabilities.push_back(
        {kExt, static_cast<std::uint16_t>(where), id, version, next, extended_size(id, c, where)});
    if (capability_name(kExt, id) == "Unknown") {
      add_diag(scan, Severity::kInfo, "unknown-id", kExt, static_cast<std::uint16_t>(where),
               fmt::format("extended capability ID {:#06x} at {:#05x} is not in the catalog", id,
                           where));
    }
    where = next;
  } while (where != 0);
  check_overlaps(scan, kExt, kExtendedConfigSize);
}

}  // namespace

std::string_view space_name(CapabilitySpace space) {
  return space == CapabilitySpace::kStandard ? "std" : "ext";
}

std::string_view severity_name(Severity severity) {
  switch (severity) {
    case Severity::kInfo: return "info";
    case Severity::kWarning: return "warning";
    case Severity::kError: return "error";
  }
  return "error";
}

std::string_view capability_name(CapabilitySpace space, std::uint16_t id) {
  if (space == CapabilitySpace::kStandard) {
    return id < kStandardNames.size() ? kStandardNames[id] : "Unknown";
  }
  if (id == 0x38) return "Scalable I/O Virtualization";
  if (id == 0x39) return "Physical Layer 128.0 GT/s";
  return id < kExtendedNames.size() ? kExtendedNames[id] : "Unknown";
}

std::optional<std::uint32_t> capability_size(CapabilitySpace space, std::uint16_t id,
                                             std::span<const std::uint8_t> config,
                                             std::uint32_t offset) {
  if (space == CapabilitySpace::kStandard) {
    return standard_size(static_cast<std::uint8_t>(id), config, offset);
  }
  return extended_size(id, config, offset);
}

CapabilityScan scan_capabilities(std::span<const std::uint8_t> config) {
  CapabilityScan scan;
  if (config.size() < 0x40) {
    add_diag(
        scan, Severity::kError, "truncated-header", CapabilitySpace::kStandard, std::nullopt,
        fmt::format("only {} bytes readable; the 64-byte header is incomplete", config.size()));
    return scan;
  }
  bool can_have_extended = false;
  scan_standard(config, scan, can_have_extended);
  if (can_have_extended) {
    scan_extended(config, scan);
  } else if (config.size() >= kExtendedCapabilityStart + 4) {
    const std::uint32_t header = config_dword(config, kExtendedCapabilityStart);
    if (header != 0 && header != 0xFFFFFFFF) {
      add_diag(scan, Severity::kWarning, "extended-without-express", CapabilitySpace::kExtended,
               static_cast<std::uint16_t>(kExtendedCapabilityStart),
               "extended capabilities present but no PCI Express or PCI-X capability; they are "
               "not walked (as lspci and Linux do)");
    }
  }
  return scan;
}

std::uint32_t occupied_length(const CapabilityScan& scan, const Capability& cap,
                              std::uint32_t space_size) {
  if (cap.size) return *cap.size;
  std::uint32_t end = cap.space == CapabilitySpace::kStandard
                          ? kConventionalConfigSize
                          : std::max(space_size, kConventionalConfigSize);
  for (const auto& other : scan.capabilities) {
    if (other.space == cap.space && other.offset > cap.offset) {
      end = std::min<std::uint32_t>(end, other.offset);
    }
  }
  return end > cap.offset ? end - cap.offset : 4;
}

std::vector<ConfigRange> free_ranges(const CapabilityScan& scan, std::uint32_t space_size) {
  std::vector<ConfigRange> result;
  auto collect = [&](CapabilitySpace space, std::uint32_t begin, std::uint32_t end) {
    std::vector<bool> used(end - begin, false);
    for (const auto& cap : scan.capabilities) {
      if (cap.space != space || cap.offset < begin) continue;
      const std::uint32_t stop = std::min(end, cap.offset + occupied_length(scan, cap, space_size));
      for (std::uint32_t b = cap.offset; b < stop; ++b) used[b - begin] = true;
    }
    std::uint32_t b = begin;
    while (b < end) {
      if (used[b - begin]) {
        ++b;
        continue;
      }
      const std::uint32_t start = b;
      while (b < end && !used[b - begin]) ++b;
      result.push_back({space, start, b});
    }
  };
  collect(CapabilitySpace::kStandard, kStandardCapabilityStart, kConventionalConfigSize);
  if (space_size == kExtendedConfigSize) {
    collect(CapabilitySpace::kExtended, kExtendedCapabilityStart, kExtendedConfigSize);
  }
  return result;
}

// ---- editing ------------------------------------------------------------------------

namespace {

// Scans a ConfigSpace for editing: extended space is walked even without a PCIe
// capability (the editor must see what is there), and malformed chains are refused.
Result<CapabilityScan> scan_for_edit(const ConfigSpace& space, CapabilitySpace which) {
  CapabilityScan scan = scan_capabilities(space.bytes());
  if (which == CapabilitySpace::kExtended && !scan.extended_walked && space.is_extended()) {
    scan_extended(space.bytes(), scan);
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
  std::copy(header.begin(), header.end(), scratch.begin() + at);
  std::copy(body.begin(), body.end(), scratch.begin() + at + header.size());
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
  const std::array<std::uint8_t, 4> header_bytes = {static_cast<std::uint8_t>(header),
                                                    static_cast<std::uint8_t>(header >> 8),
                                                    static_cast<std::uint8_t>(header >> 16), 0};
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
