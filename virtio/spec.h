// Constants and wire layouts of the virtio specification that every transport and
// device shares: feature bits (virtio 1.3 §6), device status bits (§2.1), descriptor
// flags and ring structures of split (§2.7) and packed (§2.8) virtqueues.
//
// Ring structures are declared with raw integer fields that hold little-endian values
// (virtio 1.3 §1.4: "le16/le32/le64"); code converts with `from_le`/`to_le` at the
// point of use. Legacy drivers use guest-native endianness (§2.7.3); vpci serves
// little-endian guests only, so both interpretations coincide.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace vpci::virtio {

// ---- endianness ---------------------------------------------------------------------
template <typename T>
[[nodiscard]] constexpr T byte_swap(T value) {
  static_assert(std::is_unsigned_v<T>);
  if constexpr (sizeof(T) == 1) {
    return value;
  } else if constexpr (sizeof(T) == 2) {
    return static_cast<T>(__builtin_bswap16(value));
  } else if constexpr (sizeof(T) == 4) {
    return static_cast<T>(__builtin_bswap32(value));
  } else {
    static_assert(sizeof(T) == 8);
    return static_cast<T>(__builtin_bswap64(value));
  }
}

// Converts a little-endian wire value to host order (a no-op on little-endian hosts).
template <typename T>
[[nodiscard]] constexpr T from_le(T value) {
  if constexpr (std::endian::native == std::endian::little) {
    return value;
  } else {
    return byte_swap(value);
  }
}
template <typename T>
[[nodiscard]] constexpr T to_le(T value) {
  return from_le(value);
}

// ---- device IDs (virtio 1.3 §5, "Device Types") ---------------------------------------
namespace device_id {
inline constexpr std::uint32_t kNetwork = 1;
inline constexpr std::uint32_t kBlock = 2;
inline constexpr std::uint32_t kConsole = 3;
inline constexpr std::uint32_t kEntropy = 4;
}  // namespace device_id

// ---- feature bits (virtio 1.3 §6 "Reserved Feature Bits") ------------------------------
namespace feature {
inline constexpr unsigned kNotifyOnEmpty = 24;  // legacy only
inline constexpr unsigned kAnyLayout = 27;      // legacy only
inline constexpr unsigned kIndirectDesc = 28;
inline constexpr unsigned kEventIdx = 29;
inline constexpr unsigned kVersion1 = 32;
inline constexpr unsigned kAccessPlatform = 33;
inline constexpr unsigned kRingPacked = 34;
inline constexpr unsigned kInOrder = 35;
inline constexpr unsigned kOrderPlatform = 36;
inline constexpr unsigned kSrIov = 37;
inline constexpr unsigned kNotificationData = 38;
inline constexpr unsigned kNotifConfigData = 39;
inline constexpr unsigned kRingReset = 40;
inline constexpr unsigned kAdminVq = 41;
inline constexpr unsigned kSuspend = 43;
}  // namespace feature

[[nodiscard]] constexpr std::uint64_t feature_bit(unsigned bit) { return std::uint64_t{1} << bit; }
[[nodiscard]] constexpr bool has_feature(std::uint64_t features, unsigned bit) {
  return (features & feature_bit(bit)) != 0;
}

// ---- device status bits (virtio 1.3 §2.1) -------------------------------------------
namespace status {
inline constexpr std::uint8_t kAcknowledge = 1;
inline constexpr std::uint8_t kDriver = 2;
inline constexpr std::uint8_t kDriverOk = 4;
inline constexpr std::uint8_t kFeaturesOk = 8;
inline constexpr std::uint8_t kSuspend = 16;
inline constexpr std::uint8_t kDeviceNeedsReset = 64;
inline constexpr std::uint8_t kFailed = 128;
}  // namespace status

// ---- descriptor flags -----------------------------------------------------------------
namespace desc_flags {
inline constexpr std::uint16_t kNext = 1;      // §2.7.5 / §2.8.6
inline constexpr std::uint16_t kWrite = 2;     // device-writable buffer
inline constexpr std::uint16_t kIndirect = 4;  // buffer holds a descriptor table (§2.7.5.3)
inline constexpr std::uint16_t kPackedAvail = 1u << 7;   // §2.8.1
inline constexpr std::uint16_t kPackedUsed = 1u << 15;   // §2.8.1
}  // namespace desc_flags

// Split ring flags (§2.7.7, §2.7.10).
inline constexpr std::uint16_t kAvailFlagNoInterrupt = 1;
inline constexpr std::uint16_t kUsedFlagNoNotify = 1;

// Packed event suppression flags (§2.8.10).
namespace ring_event {
inline constexpr std::uint16_t kEnable = 0;
inline constexpr std::uint16_t kDisable = 1;
inline constexpr std::uint16_t kDesc = 2;  // only with VIRTIO_F_EVENT_IDX
}  // namespace ring_event

// Queue Size limits: split rings are powers of two up to 32768 (§2.7), packed rings
// any size up to 2^15 (§2.8).
inline constexpr std::uint32_t kMaxQueueSize = 32768;

// ---- wire structures ------------------------------------------------------------------
// struct virtq_desc (§2.7.5)
struct SplitDescriptor {
  std::uint64_t addr;
  std::uint32_t len;
  std::uint16_t flags;
  std::uint16_t next;
};
static_assert(sizeof(SplitDescriptor) == 16 && std::has_unique_object_representations_v<SplitDescriptor>);

// struct virtq_used_elem (§2.7.8)
struct UsedElement {
  std::uint32_t id;
  std::uint32_t len;
};
static_assert(sizeof(UsedElement) == 8 && std::has_unique_object_representations_v<UsedElement>);

// struct pvirtq_desc (§2.8.13)
struct PackedDescriptor {
  std::uint64_t addr;
  std::uint32_t len;
  std::uint16_t id;
  std::uint16_t flags;
};
static_assert(sizeof(PackedDescriptor) == 16 && std::has_unique_object_representations_v<PackedDescriptor>);

// struct pvirtq_event_suppress (§2.8.14): desc = off:15 | wrap:1, flags = 2-bit mode.
struct PackedEventSuppress {
  std::uint16_t desc;
  std::uint16_t flags;
};
static_assert(sizeof(PackedEventSuppress) == 4);

// Byte offsets inside the split rings (§2.7.6 avail: flags, idx, ring[N], used_event;
// §2.7.8 used: flags, idx, ring[N], avail_event).
namespace split_layout {
inline constexpr std::uint64_t kAvailFlags = 0;
inline constexpr std::uint64_t kAvailIdx = 2;
inline constexpr std::uint64_t kAvailRing = 4;
[[nodiscard]] constexpr std::uint64_t used_event_offset(std::uint32_t size) { return 4 + 2ull * size; }
[[nodiscard]] constexpr std::uint64_t avail_bytes(std::uint32_t size) { return 6 + 2ull * size; }
inline constexpr std::uint64_t kUsedFlags = 0;
inline constexpr std::uint64_t kUsedIdx = 2;
inline constexpr std::uint64_t kUsedRing = 4;
[[nodiscard]] constexpr std::uint64_t avail_event_offset(std::uint32_t size) { return 4 + 8ull * size; }
[[nodiscard]] constexpr std::uint64_t used_bytes(std::uint32_t size) { return 6 + 8ull * size; }
[[nodiscard]] constexpr std::uint64_t desc_bytes(std::uint32_t size) { return 16ull * size; }
inline constexpr std::uint64_t kDescAlign = 16;
inline constexpr std::uint64_t kAvailAlign = 2;
inline constexpr std::uint64_t kUsedAlign = 4;
}  // namespace split_layout

namespace packed_layout {
[[nodiscard]] constexpr std::uint64_t desc_bytes(std::uint32_t size) { return 16ull * size; }
inline constexpr std::uint64_t kDescAlign = 16;
inline constexpr std::uint64_t kEventBytes = 4;
inline constexpr std::uint64_t kEventAlign = 4;
}  // namespace packed_layout

// The "need event" test of §2.7.7.2 / §2.7.10: with EVENT_IDX an index move from `old_idx`
// to `new_idx` crosses `event_idx` iff (u16)(new - event - 1) < (u16)(new - old).
[[nodiscard]] constexpr bool need_event(std::uint16_t event_idx, std::uint16_t new_idx,
                                        std::uint16_t old_idx) {
  return static_cast<std::uint16_t>(new_idx - event_idx - 1) <
         static_cast<std::uint16_t>(new_idx - old_idx);
}

}  // namespace vpci::virtio
