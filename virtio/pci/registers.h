// Register numbers and IDs of the virtio PCI transport (virtio 1.3 §4.1), shared by the
// device side (virtio_pci_function.h, legacy_io_mapper.h) and the test driver.
// Constants follow the names of Linux's include/uapi/linux/virtio_pci.h so readers can
// grep both.
#pragma once

#include <cstdint>
#include <optional>

namespace vpci::virtio::pci {

inline constexpr std::uint16_t kVendorId = 0x1AF4;            // §4.1.2
inline constexpr std::uint16_t kModernDeviceIdBase = 0x1040;  // §4.1.2: 0x1040 + device ID
inline constexpr std::uint16_t kNoVector = 0xFFFF;            // VIRTIO_MSI_NO_VECTOR (§4.1.4.3)
inline constexpr std::uint16_t kMaxMsixVectors = 0x800;  // MSI-X table size limit (PCI §7.7.2)

// cfg_type of the virtio vendor capability (§4.1.4).
namespace cfg_type {
inline constexpr std::uint8_t kCommon = 1;
inline constexpr std::uint8_t kNotify = 2;
inline constexpr std::uint8_t kIsr = 3;
inline constexpr std::uint8_t kDevice = 4;
inline constexpr std::uint8_t kPciCfg = 5;
inline constexpr std::uint8_t kSharedMemory = 8;
inline constexpr std::uint8_t kVendor = 9;
// Not in the spec: the transitional MMR draft's legacy window (docs/transitional-mmr.md).
inline constexpr std::uint8_t kLegacyMmr = 10;
}  // namespace cfg_type

// struct virtio_pci_cap field offsets (§4.1.4) and sizes.
namespace cap {
inline constexpr std::uint32_t kLen = 2;
inline constexpr std::uint32_t kCfgType = 3;
inline constexpr std::uint32_t kBar = 4;
inline constexpr std::uint32_t kId = 5;
inline constexpr std::uint32_t kOffset = 8;
inline constexpr std::uint32_t kLength = 12;
inline constexpr std::uint32_t kNotifyMultiplier = 16;  // virtio_pci_notify_cap
inline constexpr std::uint32_t kPciCfgData = 16;        // virtio_pci_cfg_cap
inline constexpr std::uint32_t kOffsetHi = 16;          // virtio_pci_cap64
inline constexpr std::uint32_t kLengthHi = 20;
inline constexpr std::uint32_t kVendorDataVendorId = 4;  // virtio_pci_vndr_data
inline constexpr std::uint8_t kSize = 16;
inline constexpr std::uint8_t kNotifySize = 20;
inline constexpr std::uint8_t kPciCfgSize = 20;  // §4.1.4.9: cap_len MUST be 20
inline constexpr std::uint8_t kCap64Size = 24;
}  // namespace cap

// struct virtio_pci_common_cfg (§4.1.4.3), 64 bytes.
namespace common {
inline constexpr std::uint32_t kDeviceFeatureSelect = 0x00;
inline constexpr std::uint32_t kDeviceFeature = 0x04;
inline constexpr std::uint32_t kDriverFeatureSelect = 0x08;
inline constexpr std::uint32_t kDriverFeature = 0x0C;
inline constexpr std::uint32_t kConfigMsixVector = 0x10;
inline constexpr std::uint32_t kNumQueues = 0x12;
inline constexpr std::uint32_t kDeviceStatus = 0x14;
inline constexpr std::uint32_t kConfigGeneration = 0x15;
inline constexpr std::uint32_t kQueueSelect = 0x16;
inline constexpr std::uint32_t kQueueSize = 0x18;
inline constexpr std::uint32_t kQueueMsixVector = 0x1A;
inline constexpr std::uint32_t kQueueEnable = 0x1C;
inline constexpr std::uint32_t kQueueNotifyOff = 0x1E;
inline constexpr std::uint32_t kQueueDesc = 0x20;
inline constexpr std::uint32_t kQueueDriver = 0x28;
inline constexpr std::uint32_t kQueueDevice = 0x30;
inline constexpr std::uint32_t kQueueNotifConfigData = 0x38;
inline constexpr std::uint32_t kQueueReset = 0x3A;
inline constexpr std::uint32_t kAdminQueueIndex = 0x3C;
inline constexpr std::uint32_t kAdminQueueNum = 0x3E;
inline constexpr std::uint32_t kSize = 0x40;
}  // namespace common

// The legacy register block (§4.1.4.8): I/O BAR0 of a legacy or transitional device,
// and the window a transitional MMR device exposes in memory (docs/transitional-mmr.md).
namespace legacy {
inline constexpr std::uint32_t kHostFeatures = 0;   // 32-bit, RO
inline constexpr std::uint32_t kGuestFeatures = 4;  // 32-bit, RW
inline constexpr std::uint32_t kQueuePfn = 8;       // 32-bit, RW: address >> 12
inline constexpr std::uint32_t kQueueNum = 12;      // 16-bit, RO
inline constexpr std::uint32_t kQueueSelect = 14;   // 16-bit, RW
inline constexpr std::uint32_t kQueueNotify = 16;   // 16-bit, WO
inline constexpr std::uint32_t kStatus = 18;        // 8-bit, RW
inline constexpr std::uint32_t kIsr = 19;           // 8-bit, RO, read clears
inline constexpr std::uint32_t kConfigVector = 20;  // 16-bit, only while MSI-X is enabled
inline constexpr std::uint32_t kQueueVector = 22;   // 16-bit, only while MSI-X is enabled
inline constexpr std::uint32_t kConfigOffsetNoMsix = 20;
inline constexpr std::uint32_t kConfigOffsetMsix = 24;
inline constexpr std::uint32_t kQueueAddressShift = 12;
}  // namespace legacy

// ISR status bits (§4.1.4.5).
inline constexpr std::uint8_t kIsrQueue = 1;
inline constexpr std::uint8_t kIsrConfig = 2;

// Transitional PCI device IDs (§4.1.2.1): fixed per device type, not 0x1000 + id.
[[nodiscard]] constexpr std::optional<std::uint16_t> transitional_device_id(
    std::uint32_t virtio_id) {
  switch (virtio_id) {
    case 1: return 0x1000;  // network
    case 2: return 0x1001;  // block
    case 5: return 0x1002;  // memory balloon
    case 3: return 0x1003;  // console
    case 8: return 0x1004;  // SCSI host
    case 4: return 0x1005;  // entropy source
    case 9: return 0x1009;  // 9P transport
    default: return std::nullopt;
  }
}

// Transitional MMR device IDs: vpci's mapping onto the draft's range 0x10F9-0x10FF
// (docs/transitional-mmr.md §2). The draft's own assignment is not recoverable.
[[nodiscard]] constexpr std::optional<std::uint16_t> mmr_device_id(std::uint32_t virtio_id) {
  switch (virtio_id) {
    case 1: return 0x10F9;  // network
    case 2: return 0x10FA;  // block
    case 3: return 0x10FB;  // console
    case 4: return 0x10FC;  // entropy source
    case 5: return 0x10FD;  // memory balloon
    case 8: return 0x10FE;  // SCSI host
    case 9: return 0x10FF;  // 9P transport
    default: return std::nullopt;
  }
}
[[nodiscard]] constexpr std::optional<std::uint32_t> virtio_id_from_mmr_device_id(
    std::uint16_t id) {
  for (std::uint32_t type : {1u, 2u, 3u, 4u, 5u, 8u, 9u}) {
    if (mmr_device_id(type) == id) return type;
  }
  return std::nullopt;
}

// The PCIe Vendor-Specific Extended Capability (ID 0x000B) that locates the legacy
// window of a transitional MMR device (docs/transitional-mmr.md §3). Offsets from the
// start of the extended capability.
namespace mmr_vsec {
inline constexpr std::uint16_t kVsecId = 0x000A;  // = cfg_type 10
inline constexpr std::uint8_t kVsecRevision = 1;
inline constexpr std::uint32_t kVsecHeader = 4;  // le16 VSEC ID, rev:4 | length:12
inline constexpr std::uint32_t kCfgType = 8;     // u8, 10
inline constexpr std::uint32_t kBar = 9;         // u8, 0-5
inline constexpr std::uint32_t kReserved = 10;   // le16, 0
inline constexpr std::uint32_t kLength = 12;     // le32, bytes of the window
inline constexpr std::uint32_t kOffset = 16;     // le64, byte offset of the window in the BAR
inline constexpr std::uint32_t kSize = 24;       // VSEC Length field value
}  // namespace mmr_vsec

}  // namespace vpci::virtio::pci
