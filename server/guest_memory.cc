#include "server/guest_memory.h"

#include <sys/mman.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "server/protocol.h"

namespace vpci::server {

Result<GuestMemoryRegion> DmaMappings::add(std::uint64_t iova, std::uint64_t size,
                                           std::uint64_t file_offset, int fd, bool writable) {
  constexpr std::uint64_t kPage = vfio_user::kPageSize;
  if (size == 0 || iova % kPage != 0 || size % kPage != 0 || file_offset % kPage != 0) {
    return make_error(ErrorCode::kInvalidArgument,
                      "DMA map iova {:#x} size {:#x} offset {:#x} is not {}-byte aligned", iova,
                      size, file_offset, kPage);
  }
  if (iova + size < iova) {
    return make_error(ErrorCode::kOutOfRange, "DMA map [{:#x}, +{:#x}) wraps around", iova, size);
  }
  if (regions_.size() >= vfio_user::kMaxDmaMaps) {
    return make_error(ErrorCode::kNoSpace, "more than {} DMA maps", vfio_user::kMaxDmaMaps);
  }
  auto pos = std::upper_bound(regions_.begin(), regions_.end(), iova,
                              [](std::uint64_t a, const GuestMemoryRegion& r) { return a < r.iova; });
  const bool overlaps_previous =
      pos != regions_.begin() && std::prev(pos)->iova + std::prev(pos)->size > iova;
  const bool overlaps_next = pos != regions_.end() && pos->iova < iova + size;
  if (overlaps_previous || overlaps_next) {
    return make_error(ErrorCode::kAlreadyExists, "DMA map [{:#x}, +{:#x}) overlaps an existing map",
                      iova, size);
  }

  GuestMemoryRegion region{iova, size, nullptr, writable};
  Mapping mapping;
  if (fd >= 0) {
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      return make_error(ErrorCode::kIoError, "fstat of DMA fd: {}", std::strerror(errno));
    }
    if (!S_ISREG(st.st_mode)) {
      // memfd, shm and hugetlbfs files are all regular; anything else (a socket, a
      // device node) has no size to check the range against.
      return make_error(ErrorCode::kInvalidArgument, "DMA fd is not a regular file or memfd");
    }
    const auto file_size = static_cast<std::uint64_t>(st.st_size);
    if (file_offset > file_size || size > file_size - file_offset) {
      return make_error(ErrorCode::kOutOfRange,
                        "DMA map [{:#x}, +{:#x}) of the fd lies beyond its size {:#x}", file_offset,
                        size, file_size);
    }
    // hugetlbfs files must be mapped at huge-page-aligned offsets: align the mapping to
    // the file's block size and point `host` into it (reference §5).
    std::uint64_t align = kPage;
    if (st.st_blksize > 0 && static_cast<std::uint64_t>(st.st_blksize) > align &&
        (static_cast<std::uint64_t>(st.st_blksize) & (st.st_blksize - 1)) == 0) {
      align = static_cast<std::uint64_t>(st.st_blksize);
    }
    const std::uint64_t map_offset = file_offset & ~(align - 1);
    const std::uint64_t map_length = file_offset - map_offset + size;
    if (map_length > SIZE_MAX) {
      return make_error(ErrorCode::kOutOfRange, "DMA map of {:#x} bytes is too large", size);
    }
    const int prot = PROT_READ | (writable ? PROT_WRITE : 0);
    void* base = ::mmap(nullptr, static_cast<std::size_t>(map_length), prot, MAP_SHARED, fd,
                        static_cast<off_t>(map_offset));
    if (base == MAP_FAILED) {
      return make_error(ErrorCode::kIoError, "mmap of DMA fd range [{:#x}, +{:#x}): {}", file_offset,
                        size, std::strerror(errno));
    }
    mapping = Mapping{base, static_cast<std::size_t>(map_length)};
    region.host = static_cast<std::uint8_t*>(base) + (file_offset - map_offset);
  }
  const auto index = static_cast<std::size_t>(pos - regions_.begin());
  regions_.insert(pos, region);
  mappings_.insert(mappings_.begin() + static_cast<std::ptrdiff_t>(index), mapping);
  return region;
}

Result<std::size_t> DmaMappings::find_exact(std::uint64_t iova, std::uint64_t size) const {
  for (std::size_t i = 0; i < regions_.size(); ++i) {
    const GuestMemoryRegion& r = regions_[i];
    if (r.iova == iova && r.size == size) return i;
    if (r.iova < iova + size && iova < r.iova + r.size) {
      return make_error(ErrorCode::kInvalidArgument,
                        "DMA unmap [{:#x}, +{:#x}) does not match the map [{:#x}, +{:#x})", iova,
                        size, r.iova, r.size);
    }
  }
  return make_error(ErrorCode::kNotFound, "DMA unmap [{:#x}, +{:#x}): no such map", iova, size);
}

void DmaMappings::erase(std::size_t index) {
  if (mappings_[index].base != nullptr) ::munmap(mappings_[index].base, mappings_[index].length);
  regions_.erase(regions_.begin() + static_cast<std::ptrdiff_t>(index));
  mappings_.erase(mappings_.begin() + static_cast<std::ptrdiff_t>(index));
}

Status DmaMappings::read_unbacked(std::uint64_t iova, std::span<std::uint8_t> data) const {
  if (message_dma_ == nullptr) return GuestMemory::read_unbacked(iova, data);
  return message_dma_->dma_read(iova, data);
}

Status DmaMappings::write_unbacked(std::uint64_t iova, std::span<const std::uint8_t> data) const {
  if (message_dma_ == nullptr) return GuestMemory::write_unbacked(iova, data);
  return message_dma_->dma_write(iova, data);
}

void DmaMappings::clear() {
  while (!regions_.empty()) erase(regions_.size() - 1);
}

}  // namespace vpci::server
