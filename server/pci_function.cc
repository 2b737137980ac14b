#include "server/pci_function.h"

#include <algorithm>
#include <cstring>

namespace vpci::server {
namespace {

// The widest naturally aligned access (4, 2 or 1) starting at `offset` that fits in `remaining`.
unsigned access_width(std::uint32_t offset, std::size_t remaining) {
  if (offset % 4 == 0 && remaining >= 4) return 4;
  if (offset % 2 == 0 && remaining >= 2) return 2;
  return 1;
}

}  // namespace

namespace {

// The pieces of [iova, iova + length) per map, checked before any byte moves: every
// byte mapped, contiguous across adjacent maps, writable when `for_write`.
struct Piece {
  const GuestMemoryRegion* region;
  std::uint64_t iova;
  std::size_t offset;  // into the caller's buffer
  std::size_t length;
};

Result<std::vector<Piece>> split_by_region(const std::vector<GuestMemoryRegion>& regions,
                                           std::uint64_t iova, std::size_t length, bool for_write) {
  std::vector<Piece> pieces;
  if (length == 0) return pieces;
  if (iova + length < iova) {
    return make_error(ErrorCode::kOutOfRange, "guest range [{:#x}, +{:#x}) wraps around", iova, length);
  }
  auto it = std::upper_bound(regions.begin(), regions.end(), iova,
                             [](std::uint64_t a, const GuestMemoryRegion& r) { return a < r.iova; });
  if (it == regions.begin()) {
    return make_error(ErrorCode::kOutOfRange, "guest address {:#x} is not mapped", iova);
  }
  --it;
  std::size_t done = 0;
  while (done < length) {
    const std::uint64_t at = iova + done;
    if (it == regions.end() || at < it->iova || at - it->iova >= it->size) {
      return make_error(ErrorCode::kOutOfRange, "guest address {:#x} is not mapped", at);
    }
    if (for_write && !it->writable) {
      return make_error(ErrorCode::kInvalidArgument, "guest range at {:#x} is read-only", at);
    }
    const std::uint64_t in_region = it->size - (at - it->iova);
    const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(in_region, length - done));
    pieces.push_back(Piece{&*it, at, done, n});
    done += n;
    ++it;
  }
  return pieces;
}

}  // namespace

Status GuestMemory::read(std::uint64_t iova, std::span<std::uint8_t> data) const {
  VPCI_ASSIGN_OR_RETURN(const std::vector<Piece> pieces,
                        split_by_region(regions_, iova, data.size(), /*for_write=*/false));
  for (const Piece& piece : pieces) {
    const auto part = data.subspan(piece.offset, piece.length);
    if (piece.region->host != nullptr) {
      std::memcpy(part.data(), piece.region->host + (piece.iova - piece.region->iova), part.size());
    } else {
      VPCI_TRY(read_unbacked(piece.iova, part));
    }
  }
  return {};
}

Status GuestMemory::write(std::uint64_t iova, std::span<const std::uint8_t> data) const {
  VPCI_ASSIGN_OR_RETURN(const std::vector<Piece> pieces,
                        split_by_region(regions_, iova, data.size(), /*for_write=*/true));
  for (const Piece& piece : pieces) {
    const auto part = data.subspan(piece.offset, piece.length);
    if (piece.region->host != nullptr) {
      std::memcpy(piece.region->host + (piece.iova - piece.region->iova), part.data(), part.size());
    } else {
      VPCI_TRY(write_unbacked(piece.iova, part));
    }
  }
  return {};
}

Status GuestMemory::read_unbacked(std::uint64_t iova, std::span<std::uint8_t> /*data*/) const {
  return make_error(ErrorCode::kUnsupported,
                    "guest range at {:#x} was mapped without a file descriptor", iova);
}

Status GuestMemory::write_unbacked(std::uint64_t iova, std::span<const std::uint8_t> /*data*/) const {
  return make_error(ErrorCode::kUnsupported,
                    "guest range at {:#x} was mapped without a file descriptor", iova);
}

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
