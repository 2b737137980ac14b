#include "server/dma_maps.h"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <mutex>

#include <sys/mman.h>
#include <sys/stat.h>

#include "server/protocol.h"

namespace vpci::server {

// Set by a region's on_release hook (whichever thread drops the last snapshot), awaited
// by remove().
struct DmaMaps::ReleaseLatch {
  std::mutex mutex;
  std::condition_variable released_cv;
  bool released = false;

  void set() {
    {
      std::lock_guard lock(mutex);
      released = true;
    }
    released_cv.notify_all();
  }
  void wait() {
    std::unique_lock lock(mutex);
    released_cv.wait(lock, [&] { return released; });
  }
};

DmaMaps::DmaMaps(std::shared_ptr<virtio::GuestMemory> memory,
                 std::shared_ptr<virtio::MessageMemory> messages)
    : memory_(std::move(memory)), messages_(std::move(messages)) {}

Status DmaMaps::add(std::uint64_t iova, std::uint64_t size, std::uint64_t file_offset, int fd,
                    bool writable) {
  constexpr std::uint64_t kPage = vfio_user::kPageSize;
  if (size == 0 || iova % kPage != 0 || size % kPage != 0 || file_offset % kPage != 0) {
    return make_error(ErrorCode::kInvalidArgument,
                      "DMA map iova {:#x} size {:#x} offset {:#x} is not {}-byte aligned", iova,
                      size, file_offset, kPage);
  }
  if (iova + size < iova) {
    return make_error(ErrorCode::kOutOfRange, "DMA map [{:#x}, +{:#x}) wraps around", iova, size);
  }
  if (maps_.size() >= vfio_user::kMaxDmaMaps) {
    return make_error(ErrorCode::kNoSpace, "more than {} DMA maps", vfio_user::kMaxDmaMaps);
  }
  auto pos = std::upper_bound(maps_.begin(), maps_.end(), iova,
                              [](std::uint64_t a, const Map& m) { return a < m.iova; });
  const bool overlaps_previous =
      pos != maps_.begin() && std::prev(pos)->iova + std::prev(pos)->size > iova;
  const bool overlaps_next = pos != maps_.end() && pos->iova < iova + size;
  if (overlaps_previous || overlaps_next) {
    return make_error(ErrorCode::kAlreadyExists, "DMA map [{:#x}, +{:#x}) overlaps an existing map",
                      iova, size);
  }

  auto latch = std::make_shared<ReleaseLatch>();
  virtio::MemoryRegionSpec spec;
  spec.guest_address = iova;
  spec.size = size;
  spec.writable = writable;
  if (fd >= 0) {
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      return make_error(ErrorCode::kIoError, "fstat of DMA fd: {}", errno_text(errno));
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
    const auto block = static_cast<std::uint64_t>(st.st_blksize);
    if (block > align && std::has_single_bit(block)) align = block;
    const std::uint64_t map_offset = file_offset & ~(align - 1);
    const std::uint64_t map_length = file_offset - map_offset + size;
    if (map_length > SIZE_MAX) {
      return make_error(ErrorCode::kOutOfRange, "DMA map of {:#x} bytes is too large", size);
    }
    const int prot = PROT_READ | (writable ? PROT_WRITE : 0);
    void* base = ::mmap(nullptr, static_cast<std::size_t>(map_length), prot, MAP_SHARED, fd,
                        static_cast<off_t>(map_offset));
    if (base == MAP_FAILED) {
      return make_error(ErrorCode::kIoError, "mmap of DMA fd range [{:#x}, +{:#x}): {}",
                        file_offset, size, errno_text(errno));
    }
    spec.host = static_cast<std::uint8_t*>(base) + (file_offset - map_offset);
    spec.on_release = [latch, base, length = static_cast<std::size_t>(map_length)] {
      ::munmap(base, length);
      latch->set();
    };
  } else {
    spec.messages = messages_;
    spec.on_release = [latch] { latch->set(); };
  }
  // Overlaps were refused above, so the device's memory accepts every map we accept;
  // should it not, the region's on_release has already run (munmap) and we refuse too.
  VPCI_TRY(memory_->add_region(std::move(spec)));
  maps_.insert(pos, Map{iova, size, fd >= 0, std::move(latch)});
  return {};
}

Status DmaMaps::remove(std::uint64_t iova, std::uint64_t size) {
  for (std::size_t i = 0; i < maps_.size(); ++i) {
    const Map& m = maps_[i];
    if (m.iova == iova && m.size == size) {
      remove_at(i);
      return {};
    }
    if (m.iova < iova + size && iova < m.iova + m.size) {
      return make_error(ErrorCode::kInvalidArgument,
                        "DMA unmap [{:#x}, +{:#x}) does not match the map [{:#x}, +{:#x})", iova,
                        size, m.iova, m.size);
    }
  }
  return make_error(ErrorCode::kNotFound, "DMA unmap [{:#x}, +{:#x}): no such map", iova, size);
}

void DmaMaps::remove_at(std::size_t index) {
  const Map map = maps_[index];
  maps_.erase(maps_.begin() + static_cast<std::ptrdiff_t>(index));
  // Cannot fail: the region is exactly one we added.
  [[maybe_unused]] const auto removed = memory_->remove_range(map.iova, map.size);
  // A device must not hold a snapshot across an unbounded wait (virtio/guest_memory.h),
  // so this returns once in-flight requests over the region have completed.
  map.released->wait();
}

void DmaMaps::clear() {
  while (!maps_.empty()) remove_at(maps_.size() - 1);
}

std::size_t DmaMaps::unshared_count() const {
  return static_cast<std::size_t>(
      std::count_if(maps_.begin(), maps_.end(), [](const Map& m) { return !m.shared; }));
}

}  // namespace vpci::server
