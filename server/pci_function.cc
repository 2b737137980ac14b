#include "server/pci_function.h"

#include <algorithm>

namespace vpci::server {
namespace {

// The widest naturally aligned access (4, 2 or 1) starting at `offset` that fits in `remaining`.
unsigned access_width(std::uint32_t offset, std::size_t remaining) {
  if (offset % 4 == 0 && remaining >= 4) return 4;
  if (offset % 2 == 0 && remaining >= 2) return 2;
  return 1;
}

}  // namespace

Result<std::span<std::uint8_t>> GuestMemory::translate(std::uint64_t iova, std::uint64_t length,
                                                       bool for_write) const {
  // regions_ is sorted: the candidate is the last region starting at or before iova.
  auto it = std::upper_bound(regions_.begin(), regions_.end(), iova,
                             [](std::uint64_t a, const GuestMemoryRegion& r) { return a < r.iova; });
  if (it == regions_.begin()) {
    return make_error(ErrorCode::kOutOfRange, "guest address {:#x} is not mapped", iova);
  }
  const GuestMemoryRegion& region = *std::prev(it);
  const std::uint64_t offset = iova - region.iova;
  if (offset >= region.size || length > region.size - offset) {
    return make_error(ErrorCode::kOutOfRange, "guest range [{:#x}, +{:#x}) is not mapped", iova,
                      length);
  }
  if (region.host == nullptr) {
    return make_error(ErrorCode::kUnsupported,
                      "guest range at {:#x} was mapped without a file descriptor", iova);
  }
  if (for_write && !region.writable) {
    return make_error(ErrorCode::kInvalidArgument, "guest range at {:#x} is read-only", iova);
  }
  return std::span<std::uint8_t>(region.host + offset, static_cast<std::size_t>(length));
}

Status read_config_bytes(const pci::ConfigSpace& space, std::uint32_t offset,
                         std::span<std::uint8_t> data) {
  std::size_t done = 0;
  while (done < data.size()) {
    const auto at = static_cast<std::uint32_t>(offset + done);
    const unsigned width = access_width(at, data.size() - done);
    VPCI_ASSIGN_OR_RETURN(const std::uint32_t value, space.read(at, width));
    for (unsigned i = 0; i < width; ++i) data[done + i] = static_cast<std::uint8_t>(value >> (8 * i));
    done += width;
  }
  return {};
}

Status write_config_bytes(pci::ConfigSpace& space, std::uint32_t offset,
                          std::span<const std::uint8_t> data) {
  std::size_t done = 0;
  while (done < data.size()) {
    const auto at = static_cast<std::uint32_t>(offset + done);
    const unsigned width = access_width(at, data.size() - done);
    std::uint32_t value = 0;
    for (unsigned i = 0; i < width; ++i) value |= std::uint32_t{data[done + i]} << (8 * i);
    VPCI_TRY(space.write(at, width, value));
    done += width;
  }
  return {};
}

}  // namespace vpci::server
