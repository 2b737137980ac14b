// The guest memory a vfio-user client mapped with DMA_MAP, fed into the device's one
// `virtio::GuestMemory` (virtio/guest_memory.h): this table validates each map, owns its
// mmap, and removes it again on DMA_UNMAP or disconnect.
//
// A map with an fd is mmapped MAP_SHARED and becomes a host-mapped region; a map without
// one (QEMU's ROM areas, or guest RAM that is not memory-backend-memfd,share=on) becomes a
// message-backed region reached through `messages` (the session's DMA_READ/DMA_WRITE
// path, server/message_dma.h). Unmapping waits until no snapshot lists the region any
// more (an in-flight request may hold one) and only then replies, because the client may
// reuse the memory as soon as it has the reply (spec "VFIO_USER_DMA_UNMAP").
//
// Threading: the server thread only (the session calls it between calls into the device).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "base/error.h"
#include "virtio/guest_memory.h"

namespace vpci::server {

class DmaMaps {
 public:
  DmaMaps(std::shared_ptr<virtio::GuestMemory> memory,
          std::shared_ptr<virtio::MessageMemory> messages);
  DmaMaps(const DmaMaps&) = delete;
  DmaMaps& operator=(const DmaMaps&) = delete;
  ~DmaMaps() { clear(); }

  // Adds [iova, iova + size). With `fd` >= 0, maps [file_offset, file_offset + size) of it
  // (the caller keeps the fd; the mapping outlives it). Spec "VFIO_USER_DMA_MAP": iova,
  // size and offset are multiples of the page size advertised in pgsizes; a range
  // overlapping an existing one is refused (EEXIST); the file range lies inside the file.
  Status add(std::uint64_t iova, std::uint64_t size, std::uint64_t file_offset, int fd,
             bool writable);
  // Removes the map that is exactly [iova, iova + size) (spec: unmaps match earlier maps).
  Status remove(std::uint64_t iova, std::uint64_t size);
  void clear();

  [[nodiscard]] std::size_t size() const { return maps_.size(); }
  // Maps that came without an fd.
  [[nodiscard]] std::size_t unshared_count() const;

 private:
  struct ReleaseLatch;
  struct Map {
    std::uint64_t iova = 0;
    std::uint64_t size = 0;
    bool shared = false;
    std::shared_ptr<ReleaseLatch> released;
  };
  void remove_at(std::size_t index);

  std::shared_ptr<virtio::GuestMemory> memory_;
  std::shared_ptr<virtio::MessageMemory> messages_;
  std::vector<Map> maps_;  // sorted by iova, non-overlapping
};

}  // namespace vpci::server
