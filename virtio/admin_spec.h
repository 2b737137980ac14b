// Wire formats and constants of virtio administration commands (virtio 1.3 §2.12
// "Administration Virtqueues" and §2.12.1.2 "Legacy Interfaces"; reference
// ../shared/reference/virtio-admin.md §2-3). Every field is little-endian on the wire;
// structures hold raw values, converted with from_le/to_le (virtio/spec.h) where used.
#pragma once

#include <cstdint>
#include <type_traits>

namespace vpci::virtio::admin {

// ---- feature bits (§6) ------------------------------------------------------------------
inline constexpr unsigned kFeatureSrIov = 37;    // VIRTIO_F_SR_IOV
inline constexpr unsigned kFeatureAdminVq = 41;  // VIRTIO_F_ADMIN_VQ (PCI only)

// ---- group types (§2.12.1) ----------------------------------------------------------------
inline constexpr std::uint16_t kGroupSrIov = 0x1;  // owner: the PF; members: VF 1..NumVFs

// ---- opcodes (§2.12.1.1-2) ----------------------------------------------------------------
inline constexpr std::uint16_t kListQuery = 0x0;
inline constexpr std::uint16_t kListUse = 0x1;
inline constexpr std::uint16_t kLegacyCommonCfgWrite = 0x2;
inline constexpr std::uint16_t kLegacyCommonCfgRead = 0x3;
inline constexpr std::uint16_t kLegacyDevCfgWrite = 0x4;
inline constexpr std::uint16_t kLegacyDevCfgRead = 0x5;
inline constexpr std::uint16_t kLegacyNotifyInfo = 0x6;
// LIST_QUERY/LIST_USE carry le64 bitmaps, bit n = opcode n: opcodes 0..63 fit one word.
inline constexpr std::uint16_t kOpcodeLimit = 64;
[[nodiscard]] constexpr std::uint64_t opcode_bit(std::uint16_t opcode) {
  return std::uint64_t{1} << opcode;
}

// ---- status and status qualifier (§2.12.1) ------------------------------------------------
inline constexpr std::uint16_t kStatusOk = 0;
inline constexpr std::uint16_t kStatusEagain = 11;
inline constexpr std::uint16_t kStatusEnomem = 12;
inline constexpr std::uint16_t kStatusEinval = 22;

inline constexpr std::uint16_t kQualifierOk = 0x0;
inline constexpr std::uint16_t kQualifierInvalidCommand = 0x1;
inline constexpr std::uint16_t kQualifierInvalidOpcode = 0x2;
inline constexpr std::uint16_t kQualifierInvalidField = 0x3;
inline constexpr std::uint16_t kQualifierInvalidGroup = 0x4;
inline constexpr std::uint16_t kQualifierInvalidMember = 0x5;
inline constexpr std::uint16_t kQualifierNoResource = 0x6;
inline constexpr std::uint16_t kQualifierTryAgain = 0x7;

// ---- command layout (§2.12.1 struct virtio_admin_cmd) ---------------------------------------
// The device-readable part: this header, then command_specific_data[].
struct CommandHeader {
  std::uint16_t opcode;
  std::uint16_t group_type;
  std::uint8_t reserved1[12];
  std::uint64_t group_member_id;
};
static_assert(sizeof(CommandHeader) == 24 && std::is_trivially_copyable_v<CommandHeader>);

// The device-writable part: this, then command_specific_result[].
struct CommandStatus {
  std::uint16_t status;
  std::uint16_t status_qualifier;
  std::uint8_t reserved2[4];
};
static_assert(sizeof(CommandStatus) == 8 && std::is_trivially_copyable_v<CommandStatus>);

// ---- legacy commands (§2.12.1.2) --------------------------------------------------------------
// LEGACY_COMMON_CFG_WRITE / LEGACY_DEV_CFG_WRITE data: this, then u8 data[] (the write
// length is what follows). The READ commands' data is the offset byte alone; the read
// length is the result buffer's length.
struct LegacyWriteHeader {
  std::uint8_t offset;
  std::uint8_t reserved[7];
};
static_assert(sizeof(LegacyWriteHeader) == 8);

// LEGACY_NOTIFY_INFO result: up to 4 entries in order of preference; flags 0 ends the list.
struct NotifyInfoEntry {
  std::uint8_t flags;
  std::uint8_t bar;
  std::uint8_t padding[6];
  std::uint64_t offset;  // 2-byte aligned
};
static_assert(sizeof(NotifyInfoEntry) == 16);
inline constexpr std::uint8_t kNotifyEnd = 0x0;
inline constexpr std::uint8_t kNotifyOwnerBar = 0x1;   // a BAR of the PF
inline constexpr std::uint8_t kNotifyMemberBar = 0x2;  // a BAR of the VF (Linux uses only this)
inline constexpr unsigned kNotifyInfoEntries = 4;

}  // namespace vpci::virtio::admin
