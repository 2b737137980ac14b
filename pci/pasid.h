// The PASID extended capability a VMM synthesizes for a passed-through function, and
// the two host interfaces that say what to put in it.
//
// Register layout (PCIe Base 6.0 §7.8.8, PASID Extended Capability, 8 bytes, version 1):
//   +0 header (ID 0x001B)
//   +4 PASID Capability register (RO): bit 1 Execute Permission Supported, bit 2
//      Privileged Mode Supported, bits 12:8 Max PASID Width (values above 20 reserved)
//   +6 PASID Control register: bit 0 PASID Enable, bit 1 Execute Permission Enable,
//      bit 2 Privileged Mode Enable (RW); everything else reserved
//
// Host sources, whose bit positions differ from the register (the trap this module
// exists to avoid):
//   * iommufd IOMMU_GET_HW_INFO (include/uapi/linux/iommufd.h, struct iommu_hw_info):
//     u8 out_max_pasid_log2 at byte 28 (0 = no PASID), u64 out_capabilities at byte 32
//     with IOMMU_HW_CAP_PCI_PASID_EXEC = 1 << 1 and IOMMU_HW_CAP_PCI_PASID_PRIV = 1 << 2.
//   * the proposed, never merged VFIO_DEVICE_FEATURE_PASID (Yi Liu, 2023/2024):
//     struct { u16 capabilities; u8 width; u8 reserved; } with EXEC = 1 << 0 and
//     PRIV = 1 << 1 — one bit lower than the register.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "base/error.h"

namespace vpci::pci {

namespace pasid {
inline constexpr std::uint32_t kCapabilitySize = 8;
inline constexpr std::uint8_t kVersion = 1;
inline constexpr std::uint32_t kCapabilityRegister = 0x04;  // u16, from the capability start
inline constexpr std::uint32_t kControlRegister = 0x06;     // u16
// PASID Capability register (§7.8.8.2).
inline constexpr std::uint16_t kExecuteSupported = 1u << 1;
inline constexpr std::uint16_t kPrivilegedSupported = 1u << 2;
inline constexpr unsigned kMaxWidthShift = 8;
inline constexpr std::uint16_t kMaxWidthMask = 0x1Fu << kMaxWidthShift;
inline constexpr unsigned kMaxWidthLimit = 20;  // "values greater than 20 are reserved"
// PASID Control register (§7.8.8.3).
inline constexpr std::uint16_t kEnable = 1u << 0;
inline constexpr std::uint16_t kExecuteEnable = 1u << 1;
inline constexpr std::uint16_t kPrivilegedEnable = 1u << 2;
// The only guest-writable bits of the whole capability, as QEMU's synthesized PASID
// capability has them (wmask on control bits 0-2).
inline constexpr std::uint16_t kControlWritableMask = kEnable | kExecuteEnable | kPrivilegedEnable;
}  // namespace pasid

// What the PASID Capability register advertises.
struct PasidFields {
  unsigned max_width = 0;  // log2 of the number of PASIDs, 0..20
  bool execute = false;
  bool privileged = false;
  friend bool operator==(const PasidFields&, const PasidFields&) = default;
};

// Checks max_width <= 20 (the register field is 5 bits, 21-31 reserved).
Result<PasidFields> validate_pasid_fields(const PasidFields& fields);

// The PASID Capability register value: width << 8 | exec << 1 | priv << 2.
std::uint16_t pasid_capability_register(const PasidFields& fields);
PasidFields decode_pasid_capability_register(std::uint16_t value);

// The capability after its 4-byte header: the capability register and a zero control
// register, little-endian.
std::array<std::uint8_t, 4> pasid_body(const PasidFields& fields);
// Guest-writable bits of the same 4 bytes: only control bits 0-2.
std::array<std::uint8_t, 4> pasid_body_write_mask();

// ---- iommufd ------------------------------------------------------------------------
namespace iommufd {
// enum iommufd_hw_capabilities. Only the two PASID bits matter here; the others
// describe unrelated IOMMU features and are ignored.
inline constexpr std::uint64_t kCapDirtyTracking = 1ull << 0;
inline constexpr std::uint64_t kCapPciPasidExec = 1ull << 1;
inline constexpr std::uint64_t kCapPciPasidPriv = 1ull << 2;
inline constexpr std::uint64_t kCapPciAtsNotSupported = 1ull << 3;
// struct iommu_hw_info byte layout (all little-endian on the hosts we target).
inline constexpr std::size_t kHwInfoSize = 40;
inline constexpr std::size_t kSizeOffset = 0;
inline constexpr std::size_t kMaxPasidLog2Offset = 28;
inline constexpr std::size_t kReservedOffset = 29;  // 3 bytes, zero
inline constexpr std::size_t kCapabilitiesOffset = 32;
}  // namespace iommufd

struct IommufdHwInfo {
  std::uint8_t out_max_pasid_log2 = 0;  // 0: the device/IOMMU pair has no PASID support
  std::uint64_t out_capabilities = 0;
};

// Reads the two PASID fields from a raw struct iommu_hw_info as the ioctl returned it.
// The struct's `size` must cover out_capabilities (40 bytes); kernels from before
// out_max_pasid_log2 existed left that byte reserved (zero), which correctly reads as
// "no PASID". Non-zero reserved bytes are refused: the producer speaks another layout.
Result<IommufdHwInfo> decode_iommu_hw_info(std::span<const std::uint8_t> bytes);

// iommufd -> register: width = out_max_pasid_log2, exec = bit 1, priv = bit 2.
// A width of 0 is an error (kUnsupported): iommufd reports "no PASID" that way, so
// there is nothing to synthesize. Widths above 20 cannot be encoded (kInvalidArgument).
Result<PasidFields> pasid_from_iommufd(const IommufdHwInfo& info);

// ---- the proposed VFIO device feature ----------------------------------------------
namespace vfio_feature {
inline constexpr std::uint16_t kCapExec = 1u << 0;  // NOT the register's bit 1
inline constexpr std::uint16_t kCapPriv = 1u << 1;  // NOT the register's bit 2
inline constexpr std::size_t kStructSize = 4;
}  // namespace vfio_feature

struct VfioDeviceFeaturePasid {
  std::uint16_t capabilities = 0;
  std::uint8_t width = 0;
  std::uint8_t reserved = 0;
};

// Reads the 4-byte struct (u16 capabilities, u8 width, u8 reserved), little-endian.
Result<VfioDeviceFeaturePasid> decode_vfio_device_feature_pasid(
    std::span<const std::uint8_t> bytes);

// VFIO feature -> register: exec = capabilities bit 0 -> register bit 1, priv = bit 1 ->
// register bit 2. Capability bits the proposal does not define and a non-zero reserved
// byte are refused (kMalformedInput): the proposal is not an ABI, so an unknown bit
// means the producer follows some other revision of it. Width 0 means no PASID.
Result<PasidFields> pasid_from_vfio_feature(const VfioDeviceFeaturePasid& feature);

// ---- command-line form --------------------------------------------------------------
enum class PasidSource : std::uint8_t { kRegister, kIommufd, kVfioFeature };
std::string_view pasid_source_name(PasidSource source);  // "register", "iommufd", "vfio-feature"

struct PasidSpec {
  PasidSource source = PasidSource::kRegister;
  PasidFields fields;
  IommufdHwInfo iommufd;        // when source == kIommufd
  VfioDeviceFeaturePasid vfio;  // when source == kVfioFeature
};

// Parses the `--pasid` argument:
//   width=N[,exec][,priv]                          register fields directly
//   iommufd,max_pasid_log2=N[,capabilities=X]      iommufd hw-info fields
//   vfio,width=N[,capabilities=X]                  the proposed VFIO feature struct
// Numbers are decimal or 0x-prefixed hex.
Result<PasidSpec> parse_pasid_spec(std::string_view text);

// Parses a decimal or 0x-prefixed hexadecimal unsigned number no larger than `max`.
Result<std::uint64_t> parse_number(std::string_view text, std::uint64_t max);

}  // namespace vpci::pci
