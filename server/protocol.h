// Wire constants of the vfio-user protocol, version 0.9.x ("vfio-user Protocol
// Specification", qemu/qemu docs/interop/vfio-user.rst). All integers travel in host
// byte order and structures are packed; this header only names offsets and values, the
// parsing lives in session.cc so every field is bounds-checked where it is read.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <type_traits>
#include <vector>

namespace vpci::server::vfio_user {

// Spec "Header": msg_id u16, command u16, message_size u32, flags u32, error u32.
inline constexpr std::size_t kHeaderSize = 16;

enum Command : std::uint16_t {
  kVersion = 1,
  kDmaMap = 2,
  kDmaUnmap = 3,
  kDeviceGetInfo = 4,
  kDeviceGetRegionInfo = 5,
  kDeviceGetRegionIoFds = 6,
  kDeviceGetIrqInfo = 7,
  kDeviceSetIrqs = 8,
  kRegionRead = 9,
  kRegionWrite = 10,
  kDmaRead = 11,
  kDmaWrite = 12,
  kDeviceReset = 13,
  kRegionWriteMulti = 15,
  kDeviceFeature = 16,
};

// Header flags (spec "Header": Type in bits 0-3, No_reply bit 4, Error bit 5).
inline constexpr std::uint32_t kFlagTypeMask = 0xF;
inline constexpr std::uint32_t kTypeCommand = 0;
inline constexpr std::uint32_t kTypeReply = 1;
inline constexpr std::uint32_t kFlagNoReply = 1u << 4;
inline constexpr std::uint32_t kFlagError = 1u << 5;

// Versions this server speaks (spec "VFIO_USER_VERSION": major must match, the
// reply's minor is at most the client's).
inline constexpr std::uint16_t kMajorVersion = 0;
inline constexpr std::uint16_t kMaxMinorVersion = 2;

// DMA_MAP flags (spec "VFIO_USER_DMA_MAP").
inline constexpr std::uint32_t kDmaMapRead = 1u << 0;
inline constexpr std::uint32_t kDmaMapWrite = 1u << 1;
inline constexpr std::size_t kDmaMapSize = 32;  // sizeof(DmaMapPayload)
// DMA_UNMAP flags (spec "VFIO_USER_DMA_UNMAP"): bit 0 asks for a dirty bitmap, bit 1
// unmaps everything (address and size then 0).
inline constexpr std::uint32_t kDmaUnmapGetDirtyBitmap = 1u << 0;
inline constexpr std::uint32_t kDmaUnmapAll = 1u << 1;
inline constexpr std::size_t kDmaUnmapSize = 24;  // sizeof(DmaUnmapPayload)

// DEVICE_GET_INFO (spec "VFIO_USER_DEVICE_GET_INFO", flags from linux/vfio.h).
inline constexpr std::size_t kDeviceInfoSize = 16;
inline constexpr std::uint32_t kDeviceFlagReset = 1u << 0;
inline constexpr std::uint32_t kDeviceFlagPci = 1u << 1;

// DEVICE_GET_REGION_INFO (spec "VFIO_USER_DEVICE_GET_REGION_INFO").
inline constexpr std::size_t kRegionInfoSize = 32;
inline constexpr std::uint32_t kRegionFlagRead = 1u << 0;
inline constexpr std::uint32_t kRegionFlagWrite = 1u << 1;
inline constexpr std::uint32_t kRegionFlagMmap = 1u << 2;
inline constexpr std::uint32_t kRegionFlagCaps = 1u << 3;
// Region-info capability IDs (linux/vfio.h VFIO_REGION_INFO_CAP_*).
inline constexpr std::uint16_t kCapSparseMmap = 1;
inline constexpr std::uint16_t kCapType = 2;

// DEVICE_GET_REGION_IO_FDS request: argsz, flags, index, count.
inline constexpr std::size_t kRegionIoFdsSize = 16;

// DEVICE_GET_IRQ_INFO (spec "VFIO_USER_DEVICE_GET_IRQ_INFO").
inline constexpr std::size_t kIrqInfoSize = 16;
inline constexpr std::uint32_t kIrqInfoEventfd = 1u << 0;
inline constexpr std::uint32_t kIrqInfoMaskable = 1u << 1;
inline constexpr std::uint32_t kIrqInfoAutomasked = 1u << 2;
inline constexpr std::uint32_t kIrqInfoNoResize = 1u << 3;

// DEVICE_SET_IRQS (spec "VFIO_USER_DEVICE_SET_IRQS"): argsz, flags, index, start, count.
inline constexpr std::size_t kSetIrqsSize = 20;
inline constexpr std::uint32_t kIrqSetDataNone = 1u << 0;
inline constexpr std::uint32_t kIrqSetDataBool = 1u << 1;
inline constexpr std::uint32_t kIrqSetDataEventfd = 1u << 2;
inline constexpr std::uint32_t kIrqSetActionMask = 1u << 3;
inline constexpr std::uint32_t kIrqSetActionUnmask = 1u << 4;
inline constexpr std::uint32_t kIrqSetActionTrigger = 1u << 5;
inline constexpr std::uint32_t kIrqSetDataMask =
    kIrqSetDataNone | kIrqSetDataBool | kIrqSetDataEventfd;
inline constexpr std::uint32_t kIrqSetActionMaskAll =
    kIrqSetActionMask | kIrqSetActionUnmask | kIrqSetActionTrigger;

// REGION_READ / REGION_WRITE (spec "VFIO_USER_REGION_READ"): offset u64, region u32,
// count u32, then data.
inline constexpr std::size_t kRegionAccessSize = 16;

// What this server advertises in its VERSION reply (spec "Version" capabilities).
// max_msg_fds is always stated because QEMU assumes 8 when it is absent while the spec
// default is 1 (reference §7). 16 lets QEMU send SET_IRQS for 16 MSI-X vectors at once.
inline constexpr std::uint32_t kMaxMsgFds = 16;
inline constexpr std::uint32_t kMaxDataXferSize = 1u << 20;
inline constexpr std::uint64_t kPageSize = 4096;
inline constexpr std::uint32_t kMaxDmaMaps = 65535;
// Largest message accepted: a REGION_WRITE of kMaxDataXferSize plus its headers, with
// room for a generous VERSION JSON. Anything larger cannot be a valid request.
inline constexpr std::size_t kMaxMessageSize = kHeaderSize + kRegionAccessSize + kMaxDataXferSize;

struct Header {
  std::uint16_t msg_id = 0;
  std::uint16_t command = 0;
  std::uint32_t message_size = 0;
  std::uint32_t flags = 0;
  std::uint32_t error = 0;
};
static_assert(sizeof(Header) == 16 && std::has_unique_object_representations_v<Header>,
              "spec \"Header\": 16 bytes, no padding");

// The fixed parts of the message payloads (spec section named on each), laid out exactly
// as on the wire: little-endian hosts only (x86-64, arm64), naturally aligned fields, no
// padding — checked below, so read_wire/append_wire may copy them whole.
struct VersionPayload {  // "VFIO_USER_VERSION", followed by optional NUL-terminated JSON
  std::uint16_t major;
  std::uint16_t minor;
};
struct DmaMapPayload {  // "VFIO_USER_DMA_MAP"
  std::uint32_t argsz;
  std::uint32_t flags;
  std::uint64_t offset;
  std::uint64_t address;
  std::uint64_t size;
};
struct DmaUnmapPayload {  // "VFIO_USER_DMA_UNMAP" (the reply echoes it)
  std::uint32_t argsz;
  std::uint32_t flags;
  std::uint64_t address;
  std::uint64_t size;
};
struct DeviceInfoPayload {  // "VFIO_USER_DEVICE_GET_INFO"
  std::uint32_t argsz;
  std::uint32_t flags;
  std::uint32_t num_regions;
  std::uint32_t num_irqs;
};
struct RegionInfoPayload {  // "VFIO_USER_DEVICE_GET_REGION_INFO"
  std::uint32_t argsz;
  std::uint32_t flags;
  std::uint32_t index;
  std::uint32_t cap_offset;
  std::uint64_t size;
  std::uint64_t offset;
};
// The capability chain after a region-info reply (cap_offset, then each header's next).
struct CapabilityHeader {  // struct vfio_info_cap_header
  std::uint16_t id;
  std::uint16_t version;
  std::uint32_t next;
};
struct SparseMmapHeader {  // struct vfio_region_info_cap_sparse_mmap, before its areas
  std::uint32_t nr_areas;
  std::uint32_t reserved;
};
struct SparseMmapEntry {  // struct vfio_region_sparse_mmap_area
  std::uint64_t offset;
  std::uint64_t size;
};
struct TypeCapability {  // struct vfio_region_info_cap_type, after its header
  std::uint32_t type;
  std::uint32_t subtype;
};
struct RegionIoFdsPayload {  // "VFIO_USER_DEVICE_GET_REGION_IO_FDS" (without sub-regions)
  std::uint32_t argsz;
  std::uint32_t flags;
  std::uint32_t index;
  std::uint32_t count;
};
struct IrqInfoPayload {  // "VFIO_USER_DEVICE_GET_IRQ_INFO"
  std::uint32_t argsz;
  std::uint32_t flags;
  std::uint32_t index;
  std::uint32_t count;
};
struct SetIrqsPayload {  // "VFIO_USER_DEVICE_SET_IRQS", followed by DATA_BOOL bytes
  std::uint32_t argsz;
  std::uint32_t flags;
  std::uint32_t index;
  std::uint32_t start;
  std::uint32_t count;
};
struct RegionAccessPayload {  // "VFIO_USER_REGION_READ/WRITE", followed by the data
  std::uint64_t offset;
  std::uint32_t region;
  std::uint32_t count;
};

template <typename T>
concept WireStruct = std::is_trivially_copyable_v<T> && std::has_unique_object_representations_v<T>;

static_assert(sizeof(VersionPayload) == 4 && WireStruct<VersionPayload>);
static_assert(sizeof(DmaMapPayload) == 32 && WireStruct<DmaMapPayload>);
static_assert(sizeof(DmaUnmapPayload) == 24 && WireStruct<DmaUnmapPayload>);
static_assert(sizeof(DeviceInfoPayload) == 16 && WireStruct<DeviceInfoPayload>);
static_assert(sizeof(RegionInfoPayload) == 32 && WireStruct<RegionInfoPayload>);
static_assert(sizeof(CapabilityHeader) == 8 && WireStruct<CapabilityHeader>);
static_assert(sizeof(SparseMmapHeader) == 8 && WireStruct<SparseMmapHeader>);
static_assert(sizeof(SparseMmapEntry) == 16 && WireStruct<SparseMmapEntry>);
static_assert(sizeof(TypeCapability) == 8 && WireStruct<TypeCapability>);
static_assert(sizeof(RegionIoFdsPayload) == 16 && WireStruct<RegionIoFdsPayload>);
static_assert(sizeof(IrqInfoPayload) == 16 && WireStruct<IrqInfoPayload>);
static_assert(sizeof(SetIrqsPayload) == 20 && WireStruct<SetIrqsPayload>);
static_assert(sizeof(RegionAccessPayload) == 16 && WireStruct<RegionAccessPayload>);

static_assert(kDmaMapSize == sizeof(DmaMapPayload) && kDmaUnmapSize == sizeof(DmaUnmapPayload) &&
              kDeviceInfoSize == sizeof(DeviceInfoPayload) &&
              kRegionInfoSize == sizeof(RegionInfoPayload) &&
              kRegionIoFdsSize == sizeof(RegionIoFdsPayload) &&
              kIrqInfoSize == sizeof(IrqInfoPayload) && kSetIrqsSize == sizeof(SetIrqsPayload) &&
              kRegionAccessSize == sizeof(RegionAccessPayload));

// The structure at the start of `bytes`, which the caller has checked holds sizeof(T).
template <WireStruct T>
T read_wire(std::span<const std::uint8_t> bytes) {
  T value;
  std::memcpy(&value, bytes.data(), sizeof(T));
  return value;
}

template <WireStruct T>
void append_wire(std::vector<std::uint8_t>& bytes, const T& value) {
  const std::size_t at = bytes.size();
  bytes.resize(at + sizeof(T));
  std::memcpy(bytes.data() + at, &value, sizeof(T));
}

// Loads a packed host-order integer; callers check the bounds first.
template <typename T>
T load(std::span<const std::uint8_t> bytes, std::size_t offset) {
  T value;
  std::memcpy(&value, bytes.data() + offset, sizeof(T));
  return value;
}

template <typename T>
void store(std::vector<std::uint8_t>& bytes, std::size_t offset, T value) {
  std::memcpy(bytes.data() + offset, &value, sizeof(T));
}

template <typename T>
void append(std::vector<std::uint8_t>& bytes, T value) {
  const std::size_t at = bytes.size();
  bytes.resize(at + sizeof(T));
  std::memcpy(bytes.data() + at, &value, sizeof(T));
}

inline Header decode_header(std::span<const std::uint8_t> bytes) {
  Header header;
  std::memcpy(&header, bytes.data(), sizeof(Header));
  return header;
}

inline void encode_header(std::vector<std::uint8_t>& out, const Header& header) {
  if (out.size() < kHeaderSize) out.resize(kHeaderSize);
  std::memcpy(out.data(), &header, sizeof(Header));
}

}  // namespace vpci::server::vfio_user
