// Register layouts inside the capabilities `vpci inspect` decodes: offsets from the
// start of the capability and the bits of each register. The capability IDs are in
// pci/capabilities.h; the header's own registers in pci/registers.h. Names follow
// Linux's pci_regs.h so readers can grep both.
#pragma once

#include <cstdint>

namespace vpci::pci {

// MSI (PCI Local Bus 3.0 §6.8.1). The structure grows with its Message Control bits:
// a 64-bit address moves the data register by 4, per-vector masking adds Mask Bits and
// Pending Bits after the data.
namespace msi {
inline constexpr std::uint32_t kControl = 0x02;
inline constexpr std::uint32_t kAddressLow = 0x04;
inline constexpr std::uint32_t kAddressHigh = 0x08;  // 64-bit only
inline constexpr std::uint32_t kData32 = 0x08;
inline constexpr std::uint32_t kData64 = 0x0C;
inline constexpr std::uint32_t kMask32 = 0x0C;
inline constexpr std::uint32_t kPending32 = 0x10;
inline constexpr std::uint32_t kMask64 = 0x10;
inline constexpr std::uint32_t kPending64 = 0x14;
inline constexpr std::uint32_t kSize32 = 0x0A;        // without per-vector masking
inline constexpr std::uint32_t kAddress64Extra = 4;   // 64-bit address: +4 bytes
inline constexpr std::uint32_t kMaskingExtra = 0x0A;  // per-vector masking: +10 bytes
// Message Control bits.
inline constexpr std::uint16_t kEnable = 1u << 0;
inline constexpr std::uint16_t kMultipleMessageCapableMask = 0x000E;  // log2(vectors), 3:1
inline constexpr unsigned kMultipleMessageCapableShift = 1;
inline constexpr std::uint16_t kMultipleMessageEnableMask = 0x0070;  // log2(vectors), 6:4
inline constexpr unsigned kMultipleMessageEnableShift = 4;
inline constexpr std::uint16_t kAddress64 = 1u << 7;
inline constexpr std::uint16_t kPerVectorMasking = 1u << 8;
}  // namespace msi

// PCI Express Capability (PCIe Base 6.0 §7.5.3), offsets from its start. Version 1
// structures stop after the last register block the port type implements; version 2
// always has all 0x3C bytes.
namespace pcie {
inline constexpr std::uint32_t kFlags = 0x02;  // PCI Express Capabilities register
inline constexpr std::uint32_t kDeviceCapabilities = 0x04;
inline constexpr std::uint32_t kDeviceControl = 0x08;
inline constexpr std::uint32_t kLinkCapabilities = 0x0C;
inline constexpr std::uint32_t kLinkControl = 0x10;
inline constexpr std::uint32_t kLinkStatus = 0x12;
inline constexpr std::uint32_t kDeviceCapabilities2 = 0x24;
inline constexpr std::uint32_t kLinkCapabilities2 = 0x2C;
inline constexpr std::uint32_t kLinkControl2 = 0x30;
inline constexpr std::uint32_t kSizeV1Endpoint = 0x14;  // through Link Status
inline constexpr std::uint32_t kSizeV1Slot = 0x1C;      // through the slot registers
inline constexpr std::uint32_t kSizeV1Root = 0x24;      // through the root registers
inline constexpr std::uint32_t kSizeV2 = 0x3C;
// PCI Express Capabilities register.
inline constexpr std::uint16_t kFlagsVersionMask = 0x000F;
inline constexpr unsigned kFlagsTypeShift = 4;  // Device/Port Type, bits 7:4
inline constexpr std::uint16_t kFlagsTypeMask = 0xF;
inline constexpr std::uint16_t kFlagsFlitMode = 1u << 15;
// Device/Port Types.
inline constexpr unsigned kTypeEndpoint = 0x0;
inline constexpr unsigned kTypeRootPort = 0x4;
inline constexpr unsigned kTypeUpstreamPort = 0x5;
inline constexpr unsigned kTypeDownstreamPort = 0x6;
inline constexpr unsigned kTypeRcEventCollector = 0xA;
// Link Capabilities: Maximum Link Width, bits 9:4.
inline constexpr unsigned kLinkWidthShift = 4;
inline constexpr std::uint32_t kLinkWidthMask = 0x3F;
// Device Capabilities 2: End-End TLP Prefix Supported.
inline constexpr std::uint32_t kDevcap2EndEndTlpPrefix = 1u << 21;
}  // namespace pcie

// MSI-X (PCIe Base 6.0 §7.7.2).
namespace msix {
inline constexpr std::uint32_t kControl = 0x02;
inline constexpr std::uint32_t kTable = 0x04;  // Table Offset/Table BIR
inline constexpr std::uint32_t kPba = 0x08;    // PBA Offset/PBA BIR
inline constexpr std::uint32_t kSize = 0x0C;
// Message Control bits: Table Size is N-1.
inline constexpr std::uint16_t kTableSizeMask = 0x07FF;
inline constexpr std::uint16_t kFunctionMask = 1u << 14;
inline constexpr std::uint16_t kEnable = 1u << 15;
// Table and PBA registers: BIR in bits 2:0, QWORD-aligned offset above.
inline constexpr std::uint32_t kBirMask = 0x7;
inline constexpr std::uint32_t kOffsetMask = ~kBirMask;
// A table entry in the BAR: four DWORDs.
inline constexpr std::uint32_t kEntrySize = 16;
inline constexpr std::uint32_t kEntryAddressLow = 0x0;
inline constexpr std::uint32_t kEntryAddressHigh = 0x4;
inline constexpr std::uint32_t kEntryData = 0x8;
inline constexpr std::uint32_t kEntryVectorControl = 0xC;
// Vector Control: Mask bit 0, the rest RsvdP.
inline constexpr std::uint32_t kVectorControlMask = 1u << 0;
// Pending Bit Array: one bit per vector, in QWORDs.
inline constexpr std::uint32_t kPbaVectorsPerQword = 64;
}  // namespace msix

// Bridge Subsystem Vendor ID capability (ID 0x0D, PCI Code and ID Assignment
// Specification): a type 1 header has no subsystem registers, so a bridge carries its
// subsystem IDs here (the layout Linux's PCI_SSVID_* and libpci read).
namespace ssvid {
inline constexpr std::uint32_t kVendorId = 0x04;
inline constexpr std::uint32_t kSubsystemId = 0x06;
inline constexpr std::uint32_t kSize = 0x08;
}  // namespace ssvid

// Designated Vendor-Specific Extended Capability (PCIe Base 6.0 §7.9.6).
namespace dvsec {
inline constexpr std::uint32_t kHeader1 = 0x04;  // vendor 15:0, revision 19:16, length 31:20
inline constexpr std::uint32_t kHeader2 = 0x08;  // DVSEC ID 15:0
inline constexpr std::uint32_t kVendorMask = 0xFFFF;
inline constexpr unsigned kRevisionShift = 16;
inline constexpr std::uint32_t kRevisionMask = 0xF;
inline constexpr unsigned kLengthShift = 20;
inline constexpr std::uint32_t kMinimumLength = 0x0A;  // both headers and the ID
}  // namespace dvsec

// Single Root I/O Virtualization Extended Capability (PCIe Base 6.0 §7.9.3), offsets from
// the capability header.
namespace sriov {
inline constexpr std::uint32_t kCapabilities = 0x04;
inline constexpr std::uint32_t kControl = 0x08;
inline constexpr std::uint32_t kStatus = 0x0A;
inline constexpr std::uint32_t kInitialVfs = 0x0C;
inline constexpr std::uint32_t kTotalVfs = 0x0E;
inline constexpr std::uint32_t kNumVfs = 0x10;
inline constexpr std::uint32_t kFunctionDependencyLink = 0x12;
inline constexpr std::uint32_t kFirstVfOffset = 0x14;
inline constexpr std::uint32_t kVfStride = 0x16;
inline constexpr std::uint32_t kVfDeviceId = 0x1A;
inline constexpr std::uint32_t kSupportedPageSizes = 0x1C;
inline constexpr std::uint32_t kSystemPageSize = 0x20;
inline constexpr std::uint32_t kVfBar0 = 0x24;  // six DWORD VF BARs
inline constexpr std::uint32_t kVfMigrationStateArray = 0x3C;
inline constexpr std::uint32_t kSize = 0x40;
// SR-IOV Control bits.
inline constexpr std::uint16_t kVfEnable = 1u << 0;
inline constexpr std::uint16_t kVfMemorySpaceEnable = 1u << 3;
inline constexpr std::uint16_t kAriCapableHierarchy = 1u << 4;
inline constexpr std::uint32_t kPageSize4K = 0x1;  // Supported/System Page Size bit 0
}  // namespace sriov

}  // namespace vpci::pci
