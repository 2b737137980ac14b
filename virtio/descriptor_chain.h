// What a device receives from a virtqueue: one available buffer (a descriptor chain,
// virtio 1.3 §2.7.5 / §2.8.6), already walked and validated by the ring code, presented
// as a reader over its device-readable part and a writer over its device-writable part.
// Devices never see descriptors, ring indices or raw guest addresses.
//
// `DescriptorChain` is move-only and must be handed back with `complete()` (the used
// ring entry, §2.7.8 / §2.8.4) or `fail()` (a device-level protocol violation, which
// stops the queue with DEVICE_NEEDS_RESET). A chain destroyed without either is
// completed with used length 0, so the driver gets its buffer back, and counted in
// `QueueStats::abandoned` so tests catch the programmer error.
//
// A chain keeps the guest-memory snapshot it was popped with, so its buffers stay
// mapped until it is completed even if the region is unmapped meanwhile. Chains are
// used on the queue's thread and must not outlive the queue (the device owns both).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "base/error.h"
#include "virtio/guest_memory.h"

namespace vpci::virtio {

class Virtqueue;

// One device-readable or device-writable buffer element of a chain.
struct ChainBuffer {
  GuestAddress address;
  std::uint32_t length;
};

// The buffers of one direction of a chain. The first kInline live inside the object,
// so the usual chain (a virtio-blk request: header, data, status; an rng buffer) costs
// no heap allocation; longer chains move everything to a vector. Moving a list with
// inline buffers copies them, so spans into it do not survive a move (DescriptorChain
// re-points its cursors).
class ChainBufferList {
 public:
  static constexpr std::size_t kInline = 4;

  void push_back(const ChainBuffer& buffer) {
    if (size_ < kInline) {
      inline_[size_++] = buffer;
      return;
    }
    if (size_ == kInline) overflow_.assign(inline_.begin(), inline_.end());
    overflow_.push_back(buffer);
    ++size_;
  }
  [[nodiscard]] bool empty() const { return size_ == 0; }
  [[nodiscard]] std::size_t size() const { return size_; }
  [[nodiscard]] const ChainBuffer* data() const {
    return size_ <= kInline ? inline_.data() : overflow_.data();
  }
  [[nodiscard]] const ChainBuffer* begin() const { return data(); }
  [[nodiscard]] const ChainBuffer* end() const { return data() + size_; }
  [[nodiscard]] const ChainBuffer& operator[](std::size_t i) const { return data()[i]; }
  // NOLINTNEXTLINE(google-explicit-constructor): a list is a span of its buffers
  operator std::span<const ChainBuffer>() const { return {data(), size_}; }

 private:
  std::array<ChainBuffer, kInline> inline_{};
  std::size_t size_ = 0;
  std::vector<ChainBuffer> overflow_;  // every buffer, once there are more than kInline
};

// The validated content of one available buffer, as produced by a ring.
struct ChainDescriptors {
  std::uint16_t id = 0;          // split: head descriptor index; packed: buffer ID
  std::uint16_t ring_slots = 1;  // packed: ring descriptors the chain occupied (skip on use)
  ChainBufferList readable;
  ChainBufferList writable;
  std::uint64_t readable_bytes = 0;
  std::uint64_t writable_bytes = 0;
};

// Sequential access to a list of guest buffers, shared by reader and writer.
class ChainCursor {
 public:
  ChainCursor() = default;
  ChainCursor(const MemoryMap* memory, std::span<const ChainBuffer> buffers, std::uint64_t total)
      : memory_(memory), buffers_(buffers), total_(total) {}

  [[nodiscard]] std::uint64_t position() const { return position_; }
  [[nodiscard]] std::uint64_t total() const { return total_; }
  [[nodiscard]] std::uint64_t remaining() const { return total_ - position_; }
  // The same buffers at a new address (their owner moved); the position is kept.
  void rebind(std::span<const ChainBuffer> buffers) { buffers_ = buffers; }

 protected:
  // Calls step(address, length) for consecutive pieces covering the next `length`
  // bytes; advances past each piece that step() accepts. Fails up front if fewer
  // than `length` bytes remain.
  template <typename Step>
  Status advance(std::uint64_t length, Step&& step);

  const MemoryMap* memory_ = nullptr;

 private:
  std::span<const ChainBuffer> buffers_;
  std::uint64_t total_ = 0;
  std::uint64_t position_ = 0;
  std::size_t buffer_index_ = 0;
  std::uint32_t buffer_offset_ = 0;
};

class ChainReader : public ChainCursor {
 public:
  using ChainCursor::ChainCursor;

  // Reads exactly out.size() bytes; an error (and nothing read) if fewer remain.
  Status read(std::span<std::uint8_t> out);
  template <GuestPod T>
  [[nodiscard]] Result<T> read_obj() {
    T value{};
    VPCI_TRY(read(std::span<std::uint8_t>(reinterpret_cast<std::uint8_t*>(&value), sizeof(T))));
    return value;
  }
  Status skip(std::uint64_t length);
  // The next `length` bytes as host spans for zero-copy consumption (pwritev).
  [[nodiscard]] Result<HostBufferList> take_buffers(std::uint64_t length);
};

class ChainWriter : public ChainCursor {
 public:
  using ChainCursor::ChainCursor;

  // Writes all of `data`; an error (and nothing written) if less room remains.
  Status write(std::span<const std::uint8_t> data);
  template <GuestPod T>
  Status write_obj(const T& value) {
    return write(
        std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(&value), sizeof(T)));
  }
  // Leaves `length` bytes untouched. The used length stops growing at the first skip,
  // because it must not claim bytes the device did not write (§2.7.8.2).
  Status skip(std::uint64_t length);
  // The next `length` bytes as host spans the caller fills (preadv); they count as written.
  [[nodiscard]] Result<HostBufferList> take_buffers(std::uint64_t length);
  // Bytes written contiguously from the start of the writable part: the used length.
  [[nodiscard]] std::uint64_t bytes_written() const {
    return skipped_ ? written_before_skip_ : position();
  }

 private:
  bool skipped_ = false;
  std::uint64_t written_before_skip_ = 0;
};

class DescriptorChain {
 public:
  DescriptorChain(Virtqueue* queue, std::uint64_t queue_epoch,
                  std::shared_ptr<const MemoryMap> memory, ChainDescriptors&& descriptors);
  DescriptorChain(DescriptorChain&& other) noexcept;
  DescriptorChain& operator=(DescriptorChain&& other) noexcept;
  DescriptorChain(const DescriptorChain&) = delete;
  DescriptorChain& operator=(const DescriptorChain&) = delete;
  ~DescriptorChain();

  [[nodiscard]] std::uint16_t id() const { return descriptors_.id; }
  [[nodiscard]] std::uint64_t readable_bytes() const { return descriptors_.readable_bytes; }
  [[nodiscard]] std::uint64_t writable_bytes() const { return descriptors_.writable_bytes; }
  [[nodiscard]] std::span<const ChainBuffer> readable_buffers() const {
    return descriptors_.readable;
  }
  [[nodiscard]] std::span<const ChainBuffer> writable_buffers() const {
    return descriptors_.writable;
  }
  [[nodiscard]] ChainReader& reader() { return reader_; }
  [[nodiscard]] ChainWriter& writer() { return writer_; }
  [[nodiscard]] const MemoryMap& memory() const { return *memory_; }
  [[nodiscard]] bool finished() const { return queue_ == nullptr; }

  // Returns the buffer to the driver with used length = writer().bytes_written().
  void complete();
  // Same with an explicit used length (clamped to the writable size).
  void complete(std::uint32_t used_length);
  // The driver broke a device-specific rule with this buffer (e.g. a virtio-blk
  // request without a status byte): the queue stops and the device needs a reset.
  void fail(Error error);
  // Gives the buffer back unused, as if it had never been popped: the driver's avail
  // entry is offered again by the next pop. Only for the most recently popped chain
  // still outstanding (return several newest first); a device that holds buffers it
  // cannot fill yet (virtio-net RX) uses it to release them before guest memory goes
  // away. The chain's memory snapshot is dropped.
  void return_to_ring();

 private:
  Virtqueue* queue_ = nullptr;  // null once completed, failed or moved from
  std::uint64_t queue_epoch_ = 0;
  std::shared_ptr<const MemoryMap> memory_;
  ChainDescriptors descriptors_;
  ChainReader reader_;
  ChainWriter writer_;
};

}  // namespace vpci::virtio
