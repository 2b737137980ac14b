#include "virtio/ring_common.h"

#include <algorithm>
#include <bit>
#include <limits>

#include "virtio/spec.h"

namespace vpci::virtio {

Result<QueueLayout> legacy_split_layout(GuestAddress base, std::uint16_t size,
                                        std::uint64_t align) {
  if (!std::has_single_bit(size) || size > kMaxQueueSize) {
    return make_error(ErrorCode::kInvalidArgument,
                      "legacy queue size {} is not a power of two <= {}", size, kMaxQueueSize);
  }
  if (align == 0 || align > (1u << 16) || !std::has_single_bit(static_cast<std::uint32_t>(align))) {
    return make_error(ErrorCode::kInvalidArgument,
                      "legacy queue alignment {} is not a power of two", align);
  }
  // Everything fits below 2^64 iff the end of the used ring does.
  const std::uint64_t avail_offset = 16ull * size;
  const std::uint64_t used_offset = (avail_offset + 6 + 2ull * size + align - 1) & ~(align - 1);
  const std::uint64_t total = used_offset + 6 + 8ull * size;
  if (base > std::numeric_limits<std::uint64_t>::max() - total) {
    return make_error(ErrorCode::kOutOfRange, "legacy queue at {:#x} wraps past the address space",
                      base);
  }
  return QueueLayout{size, base, base + avail_offset, base + used_offset};
}

namespace ring_internal {

Status check_area(const MemoryMap& memory, const char* what, GuestAddress address,
                  std::uint64_t bytes, std::uint64_t align, Access access) {
  if (address % align != 0) {
    return make_error(ErrorCode::kProtocolViolation, "{} at {:#x} is not {}-byte aligned", what,
                      address, align);
  }
  auto status = memory.check_range(address, bytes, access);
  if (!status) {
    return tl::unexpected(Error{ErrorCode::kProtocolViolation, status.error().message}.with_context(
        fmt::format("{} {:#x}+{:#x}", what, address, bytes)));
  }
  return {};
}

Status append_buffer(const MemoryMap& memory, const RingOptions& options, ChainDescriptors& chain,
                     GuestAddress address, std::uint32_t length, bool writable) {
  if (!writable && !chain.writable.empty()) {
    return make_error(ErrorCode::kProtocolViolation,
                      "device-readable buffer {:#x}+{:#x} after a writable one", address, length);
  }
  // The running total never exceeds the cap (<= 2^32 - 1) and length < 2^32, so the
  // sum cannot overflow 64 bits.
  const std::uint64_t cap =
      std::min<std::uint64_t>(options.max_chain_bytes, std::numeric_limits<std::uint32_t>::max());
  const std::uint64_t total = chain.readable_bytes + chain.writable_bytes + length;
  if (total > cap) {
    return make_error(ErrorCode::kProtocolViolation, "descriptor chain of more than {} bytes", cap);
  }
  if (length == 0) return {};
  auto mapped = memory.check_range(address, length, writable ? Access::kWrite : Access::kRead);
  if (!mapped) {
    return tl::unexpected(Error{ErrorCode::kProtocolViolation, mapped.error().message}.with_context(
        fmt::format("{} buffer {:#x}+{:#x}", writable ? "writable" : "readable", address, length)));
  }
  if (writable) {
    chain.writable.push_back({address, length});
    chain.writable_bytes += length;
  } else {
    chain.readable.push_back({address, length});
    chain.readable_bytes += length;
  }
  return {};
}

}  // namespace ring_internal
}  // namespace vpci::virtio
