// Memory a virtio driver owns and places its rings and buffers in, at the addresses the
// device sees (guest-physical addresses for a guest driver, IOVAs for a userspace one):
// a bump allocator over one block, with byte access for the driver. The driver writes it
// through host pointers on purpose: this is the driver's own memory, not the device's
// view of it (that goes through virtio::GuestMemory, bounds-checked, on the device side).
//
//   DriverMemory   the block and allocator over memory someone else owns;
//   DmaMemory      a block it owns: a memfd, mapped shared, that can be handed to a
//                  vfio-user server (DMA_MAP with the fd) or to VFIO (VFIO_IOMMU_MAP_DMA).
//
// Misuse by the driver itself (an address outside the block, a block too small for what
// the driver allocates) is a programming error and aborts with a message; nothing a
// device or server does reaches these paths.
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <vector>

#include "base/error.h"
#include "server/unique_fd.h"
#include "virtio/ring_layout.h"

namespace vpci::driver {

using virtio::GuestAddress;

// Logs `what` and aborts: for a driver's own misuse only (see the file comment).
[[noreturn]] void driver_misuse(const char* what);

class DriverMemory {
 public:
  DriverMemory(GuestAddress base, std::span<std::uint8_t> bytes) : base_(base), bytes_(bytes) {}
  virtual ~DriverMemory() = default;
  DriverMemory(const DriverMemory&) = delete;
  DriverMemory& operator=(const DriverMemory&) = delete;

  [[nodiscard]] GuestAddress base() const { return base_; }
  [[nodiscard]] std::size_t size() const { return bytes_.size(); }
  [[nodiscard]] std::span<std::uint8_t> bytes() const { return bytes_; }

  // Zeroed memory, `align`-aligned, or an error when the block is full.
  Result<GuestAddress> allocate(std::size_t bytes, std::size_t align = 16);
  // allocate(), for drivers that sized the block for what they allocate.
  GuestAddress alloc(std::size_t bytes, std::size_t align = 16);
  void reset_allocator(std::size_t keep_bytes = 0) { next_ = keep_bytes; }
  // Bytes not yet allocated (alignment padding aside).
  [[nodiscard]] std::size_t available() const { return bytes_.size() - next_; }

  [[nodiscard]] std::uint8_t* host(GuestAddress address, std::size_t length = 1) const;
  void write(GuestAddress address, std::span<const std::uint8_t> data) const;
  [[nodiscard]] std::vector<std::uint8_t> read(GuestAddress address, std::size_t length) const;
  template <typename T>
  void put(GuestAddress address, T value) const {
    write(address,
          std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(&value), sizeof(T)));
  }
  template <typename T>
  [[nodiscard]] T get(GuestAddress address) const {
    T value{};
    std::memcpy(&value, host(address, sizeof(T)), sizeof(T));
    return value;
  }
  // True if [host, host + length) lies inside this block.
  [[nodiscard]] bool owns(const std::uint8_t* host_address, std::uint64_t length) const;

 private:
  GuestAddress base_;
  std::span<std::uint8_t> bytes_;
  std::size_t next_ = 0;
};

class DmaMemory final : public DriverMemory {
 public:
  // `size` bytes (rounded up to pages) of a fresh memfd, mapped shared, at `iova`.
  static Result<std::unique_ptr<DmaMemory>> create(GuestAddress iova, std::size_t size);
  ~DmaMemory() override;

  // The memfd (offset 0 is the block's first byte).
  [[nodiscard]] int fd() const { return fd_.get(); }

 private:
  DmaMemory(GuestAddress iova, std::span<std::uint8_t> mapping, server::UniqueFd fd)
      : DriverMemory(iova, mapping), fd_(std::move(fd)) {}
  server::UniqueFd fd_;
};

}  // namespace vpci::driver
