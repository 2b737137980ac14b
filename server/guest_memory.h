// The server's table of guest memory mapped with DMA_MAP: it owns the mmaps and
// presents them to the device as a `GuestMemory` (pci_function.h). Maps that came
// without an fd are reached through a `MessageDma` (the session, which sends
// DMA_READ/DMA_WRITE to the client); without one they stay inaccessible.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "base/error.h"
#include "server/pci_function.h"

namespace vpci::server {

// Moves bytes of an fd-less map over the connection (spec "VFIO_USER_DMA_READ",
// "VFIO_USER_DMA_WRITE"). [iova, iova + data.size()) lies inside one map and has been
// checked against its permissions.
class MessageDma {
 public:
  virtual Status dma_read(std::uint64_t iova, std::span<std::uint8_t> data) = 0;
  virtual Status dma_write(std::uint64_t iova, std::span<const std::uint8_t> data) = 0;

 protected:
  ~MessageDma() = default;
};

class DmaMappings final : public GuestMemory {
 public:
  DmaMappings() = default;
  DmaMappings(const DmaMappings&) = delete;
  DmaMappings& operator=(const DmaMappings&) = delete;
  ~DmaMappings() { clear(); }

  // Adds [iova, iova + size). With `fd` >= 0, maps [file_offset, file_offset + size) of
  // it MAP_SHARED (the caller keeps ownership of the fd; the mapping outlives it). With
  // fd < 0 the range is recorded with host == nullptr: translate() refuses it and
  // read()/write() go through the MessageDma, if one is set.
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
  // The message path for fd-less maps; nullptr (the default) leaves them inaccessible.
  void set_message_dma(MessageDma* dma) { message_dma_ = dma; }

 private:
  Status read_unbacked(std::uint64_t iova, std::span<std::uint8_t> data) const override;
  Status write_unbacked(std::uint64_t iova, std::span<const std::uint8_t> data) const override;

  MessageDma* message_dma_ = nullptr;
  struct Mapping {
    void* base = nullptr;  // what mmap returned, page/block aligned below `host`
    std::size_t length = 0;
  };
  std::vector<Mapping> mappings_;  // parallel to regions_
};

}  // namespace vpci::server
