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

}  // namespace vpci::pci
