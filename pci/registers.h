// Offsets and bits of the PCI configuration header (PCI Local Bus 3.0 §6.2,
// PCIe Base 6.0 §7.5.1). Names follow Linux's pci_regs.h so readers can grep both.
#pragma once

#include <cstdint>

namespace vpci::pci {

inline constexpr std::uint32_t kHeaderSize = 0x40;  // the type 0/1/2 header, all layouts
inline constexpr std::uint32_t kConventionalConfigSize = 256;
inline constexpr std::uint32_t kExtendedConfigSize = 4096;
inline constexpr std::uint32_t kExtendedCapabilityStart = 0x100;
inline constexpr std::uint32_t kStandardCapabilityStart = kHeaderSize;

namespace reg {
inline constexpr std::uint32_t kVendorId = 0x00;
inline constexpr std::uint32_t kDeviceId = 0x02;
inline constexpr std::uint32_t kCommand = 0x04;
inline constexpr std::uint32_t kStatus = 0x06;
inline constexpr std::uint32_t kRevisionId = 0x08;
inline constexpr std::uint32_t kClassProgIf = 0x09;
inline constexpr std::uint32_t kSubclass = 0x0A;
inline constexpr std::uint32_t kBaseClass = 0x0B;
inline constexpr std::uint32_t kCacheLineSize = 0x0C;
inline constexpr std::uint32_t kLatencyTimer = 0x0D;
inline constexpr std::uint32_t kHeaderType = 0x0E;
inline constexpr std::uint32_t kBist = 0x0F;
inline constexpr std::uint32_t kBar0 = 0x10;
// Type 0
inline constexpr std::uint32_t kCardbusCis = 0x28;
inline constexpr std::uint32_t kSubsystemVendorId = 0x2C;
inline constexpr std::uint32_t kSubsystemId = 0x2E;
inline constexpr std::uint32_t kRomAddress = 0x30;
inline constexpr std::uint32_t kCapabilityPointer = 0x34;
inline constexpr std::uint32_t kInterruptLine = 0x3C;
inline constexpr std::uint32_t kInterruptPin = 0x3D;
inline constexpr std::uint32_t kMinGrant = 0x3E;
inline constexpr std::uint32_t kMaxLatency = 0x3F;
// Type 1 (PCI-to-PCI bridge)
inline constexpr std::uint32_t kPrimaryBus = 0x18;
inline constexpr std::uint32_t kSecondaryBus = 0x19;
inline constexpr std::uint32_t kSubordinateBus = 0x1A;
inline constexpr std::uint32_t kSecondaryLatency = 0x1B;
inline constexpr std::uint32_t kIoBase = 0x1C;
inline constexpr std::uint32_t kIoLimit = 0x1D;
inline constexpr std::uint32_t kSecondaryStatus = 0x1E;
inline constexpr std::uint32_t kMemoryBase = 0x20;
inline constexpr std::uint32_t kMemoryLimit = 0x22;
inline constexpr std::uint32_t kPrefetchBase = 0x24;
inline constexpr std::uint32_t kPrefetchLimit = 0x26;
inline constexpr std::uint32_t kPrefetchBaseUpper = 0x28;
inline constexpr std::uint32_t kPrefetchLimitUpper = 0x2C;
inline constexpr std::uint32_t kIoBaseUpper = 0x30;
inline constexpr std::uint32_t kIoLimitUpper = 0x32;
inline constexpr std::uint32_t kBridgeRomAddress = 0x38;
inline constexpr std::uint32_t kBridgeControl = 0x3E;
// Type 2 (CardBus bridge) keeps its capability pointer and subsystem IDs elsewhere
// (PC Card Standard 8.0 §4.5; where libpci and Linux read them).
inline constexpr std::uint32_t kCardbusCapabilityPointer = 0x14;
inline constexpr std::uint32_t kCardbusSubsystemVendorId = 0x40;
inline constexpr std::uint32_t kCardbusSubsystemId = 0x42;
}  // namespace reg

// Number of BARs per header layout (PCI Local Bus 3.0 §6.2.5.1; PCI-to-PCI Bridge
// Architecture 1.2 §3.2; a CardBus bridge's one is its socket/ExCa registers base, PC
// Card Standard 8.0 §4.5). A CardBus header keeps its bus numbers at the type 1
// offsets (kPrimaryBus ... kSecondaryLatency, there "CardBus latency timer").
inline constexpr unsigned kEndpointBarCount = 6;
inline constexpr unsigned kBridgeBarCount = 2;
inline constexpr unsigned kCardbusBarCount = 1;

// The windows a type 1 header forwards to its secondary bus (PCI-to-PCI Bridge
// Architecture 1.2 §3.2.5.6-§3.2.5.9). Base and limit registers hold the upper address
// bits; a window is open when base <= limit and ends at the limit plus its granularity.
namespace bridge {
// I/O Base/Limit: address bits 15:12 in bits 7:4, addressing capability in bits 3:0.
inline constexpr std::uint8_t kIoAddressMask = 0xF0;
inline constexpr std::uint8_t kIoTypeMask = 0x0F;
inline constexpr std::uint8_t kIoType16 = 0x00;
inline constexpr std::uint8_t kIoType32 = 0x01;  // upper 16 bits at kIoBaseUpper/kIoLimitUpper
inline constexpr unsigned kIoAddressShift = 8;
inline constexpr std::uint32_t kIoGranularity = 0x1000;
// Memory and Prefetchable Memory Base/Limit: address bits 31:20 in bits 15:4.
inline constexpr std::uint16_t kMemoryAddressMask = 0xFFF0;
inline constexpr std::uint16_t kMemoryTypeMask = 0x000F;
inline constexpr std::uint16_t kMemoryType32 = 0x0000;
inline constexpr std::uint16_t kMemoryType64 = 0x0001;  // prefetchable only: upper 32 bits
inline constexpr unsigned kMemoryAddressShift = 16;
inline constexpr std::uint32_t kMemoryGranularity = 0x100000;
}  // namespace bridge

namespace command {
inline constexpr std::uint16_t kIoSpace = 1u << 0;
inline constexpr std::uint16_t kMemorySpace = 1u << 1;
inline constexpr std::uint16_t kBusMaster = 1u << 2;
inline constexpr std::uint16_t kParityErrorResponse = 1u << 6;
inline constexpr std::uint16_t kSerrEnable = 1u << 8;
inline constexpr std::uint16_t kInterruptDisable = 1u << 10;
}  // namespace command

namespace status {
inline constexpr std::uint16_t kImmediateReadiness = 1u << 0;
inline constexpr std::uint16_t kInterruptStatus = 1u << 3;
inline constexpr std::uint16_t kCapabilityList = 1u << 4;
// RW1C error bits: Master Data Parity Error (8), Signaled/Received Target Abort
// (11, 12), Received Master Abort (13), Signaled System Error (14), Detected Parity
// Error (15). PCIe Base 6.0 §7.5.1.1.4.
inline constexpr std::uint16_t kWrite1ToClearMask = 0xF900;
// RsvdZ bits 1, 2 and 6.
inline constexpr std::uint16_t kReservedZeroMask = 0x0046;
}  // namespace status

namespace header_type {
inline constexpr std::uint8_t kEndpoint = 0;
inline constexpr std::uint8_t kBridge = 1;
inline constexpr std::uint8_t kCardbus = 2;
inline constexpr std::uint8_t kLayoutMask = 0x7F;
inline constexpr std::uint8_t kMultiFunction = 0x80;
}  // namespace header_type

namespace bar {
inline constexpr std::uint32_t kIoSpaceFlag = 0x1;
inline constexpr std::uint32_t kMemoryType32 = 0x0;
inline constexpr std::uint32_t kMemoryTypeBelow1M = 0x2;  // PCI 2.x legacy
inline constexpr std::uint32_t kMemoryType64 = 0x4;
inline constexpr std::uint32_t kMemoryTypeMask = 0x6;
inline constexpr std::uint32_t kPrefetchable = 0x8;
inline constexpr std::uint32_t kMemoryFlagsMask = 0xF;
inline constexpr std::uint32_t kIoFlagsMask = 0x3;
inline constexpr std::uint32_t kRomEnable = 0x1;
inline constexpr std::uint32_t kRomAddressMask = 0xFFFFF800;
}  // namespace bar

}  // namespace vpci::pci
