// The server's table of guest memory mapped with DMA_MAP: it owns the mmaps and
// presents them to the device as a `GuestMemory` (pci_function.h).
#pragma once

#include <cstdint>
#include <vector>

#include "base/error.h"
#include "server/pci_function.h"

namespace vpci::server {

class DmaMappings : public GuestMemory {
 public:
  DmaMappings() = default;
  DmaMappings(const DmaMappings&) = delete;
  DmaMappings& operator=(const DmaMappings&) = delete;
  ~DmaMappings() { clear(); }

  // Adds [iova, iova + size). With `fd` >= 0, maps [file_offset, file_offset + size) of
  // it MAP_SHARED (the caller keeps ownership of the fd; the mapping outlives it). With
  // fd < 0 the range is recorded but not accessible (the client would serve it through
  // DMA_READ/DMA_WRITE, which this server does not use).
  // Spec "VFIO_USER_DMA_MAP": iova, size and offset must be multiples of the page size
  // advertised in pgsizes; a range overlapping an existing one is refused (EEXIST);
  // the file range must lie inside the file.
  Result<GuestMemoryRegion> add(std::uint64_t iova, std::uint64_t size, std::uint64_t file_offset,
                                int fd, bool writable);
  // The index of the region that is exactly [iova, iova + size) (spec
  // "VFIO_USER_DMA_UNMAP": unmaps must match an earlier map).
  [[nodiscard]] Result<std::size_t> find_exact(std::uint64_t iova, std::uint64_t size) const;
  // Unmaps region `index` (the device has been told and dropped its references).
  void erase(std::size_t index);
  void clear();
  [[nodiscard]] std::size_t size() const { return regions_.size(); }

 private:
  struct Mapping {
    void* base = nullptr;  // what mmap returned, page/block aligned below `host`
    std::size_t length = 0;
  };
  std::vector<Mapping> mappings_;  // parallel to regions_
};

}  // namespace vpci::server
