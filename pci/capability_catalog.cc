// The capability catalog: names of every standard and extended capability ID, and the
// structure size each defines (from its own registers where the size varies).
#include <algorithm>
#include <array>

#include "pci/capabilities.h"
#include "pci/capability_detail.h"
#include "pci/capability_registers.h"
#include "pci/config_bytes.h"

namespace vpci::pci {
namespace {

using capability_detail::round_up4;

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
  if (c.size() < kHeaderSize || !(config_word(c, reg::kStatus) & status::kCapabilityList))
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
  return (config_dword(c, *exp + pcie::kLinkCapabilities) >> pcie::kLinkWidthShift) &
         pcie::kLinkWidthMask;
}

// Device/Port Type of the PCI Express capability at `off`.
unsigned express_port_type(std::span<const std::uint8_t> c, std::uint32_t off) {
  return (config_word(c, off + pcie::kFlags) >> pcie::kFlagsTypeShift) & pcie::kFlagsTypeMask;
}

// Root ports and root complex event collectors implement the root registers.
bool has_root_registers(unsigned port_type) {
  return port_type == pcie::kTypeRootPort || port_type == pcie::kTypeRcEventCollector;
}

// PCIe capability size by version and port type (PCIe Base 6.0 §7.5.3): version 2
// always carries the full 0x3C-byte structure; version 1 stops after the last
// register block its port type implements.
std::uint32_t express_size(std::span<const std::uint8_t> c, std::uint32_t off) {
  if ((config_word(c, off + pcie::kFlags) & pcie::kFlagsVersionMask) >= 2) return pcie::kSizeV2;
  const unsigned type = express_port_type(c, off);
  if (has_root_registers(type)) return pcie::kSizeV1Root;
  if (type == pcie::kTypeDownstreamPort || type == pcie::kTypeUpstreamPort) {
    return pcie::kSizeV1Slot;  // switch ports: slot registers
  }
  return pcie::kSizeV1Endpoint;
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
        if (off + size > kConventionalConfigSize) return std::nullopt;
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
      return exp && has_root_registers(express_port_type(c, *exp)) ? 0x38 : 0x2C;
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
    case ext_cap_id::kPasid:
    case 0x1C: return 8;                                 // PASID, LNR
    case 0x1D: return (reg4 & (1u << 5)) ? 0x34 : 0x0C;  // DPC, RP extensions
    case 0x1E: return 0x10;                              // L1 PM substates
    case 0x1F: return 0x0C;                              // PTM
    case 0x21: return 0x10;                              // FRS
    case 0x22:                                           // RTR
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

}  // namespace vpci::pci
