// A test-side virtio driver: owns a block of "guest RAM" registered in a GuestMemory
// and builds split and packed rings and descriptor chains (direct and indirect) in it,
// the way a guest driver would (virtio 1.3 §2.7.13, §2.8.21). It also exposes raw ring
// access so tests can build the hostile rings a real driver never would.
//
// The fake driver writes guest memory through host pointers on purpose: it plays the
// guest, which is not bound by the device-side API.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "virtio/device_core.h"
#include "virtio/guest_memory.h"
#include "virtio/ring_layout.h"
#include "virtio/spec.h"
#include "virtio/virtqueue.h"

namespace vpci::virtio::testing {

// How the device reaches a FakeGuestRam: host-mapped (the device gets a host pointer, as
// with memfd-shared guest RAM) or message-backed (every access goes through a
// MessageMemory, as with vfio-user maps without an fd).
enum class RamBacking : std::uint8_t { kMapped, kMessages };

// One block of guest RAM at [base, base + size) with a bump allocator.
class FakeGuestRam {
 public:
  FakeGuestRam(std::shared_ptr<GuestMemory> memory, GuestAddress base, std::size_t size,
               RamBacking backing = RamBacking::kMapped);
  // RAM the caller owns (e.g. a memfd mapping shared with a vfio-user server); it must
  // outlive this object. Registered in `memory` like owned RAM.
  FakeGuestRam(std::shared_ptr<GuestMemory> memory, GuestAddress base,
               std::span<std::uint8_t> external);
  ~FakeGuestRam();
  FakeGuestRam(const FakeGuestRam&) = delete;
  FakeGuestRam& operator=(const FakeGuestRam&) = delete;

  [[nodiscard]] GuestAddress base() const { return base_; }
  [[nodiscard]] std::size_t size() const { return size_; }
  [[nodiscard]] const std::shared_ptr<GuestMemory>& memory() const { return memory_; }
  // Zeroed guest memory, `align`-aligned; aborts the test program when RAM runs out.
  GuestAddress alloc(std::size_t bytes, std::size_t align = 16);
  void reset_allocator(std::size_t keep_bytes = 0) { next_ = keep_bytes; }

  [[nodiscard]] std::uint8_t* host(GuestAddress address, std::size_t length = 1);
  void write(GuestAddress address, std::span<const std::uint8_t> data);
  [[nodiscard]] std::vector<std::uint8_t> read(GuestAddress address, std::size_t length);
  template <typename T>
  void put(GuestAddress address, T value) {
    write(address,
          std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(&value), sizeof(T)));
  }
  template <typename T>
  [[nodiscard]] T get(GuestAddress address) {
    T value{};
    auto bytes = read(address, sizeof(T));
    std::memcpy(&value, bytes.data(), sizeof(T));
    return value;
  }
  // Device accesses through the message path (RamBacking::kMessages).
  [[nodiscard]] std::uint64_t message_accesses() const;
  // From now on every message access fails (kIoError), as when the peer stops answering
  // DMA_READ/DMA_WRITE (RamBacking::kMessages only).
  void fail_messages(bool fail);
  // True if [host, host + length) lies inside this RAM block.
  [[nodiscard]] bool owns(const std::uint8_t* host, std::uint64_t length) const;

 private:
  std::shared_ptr<GuestMemory> memory_;
  GuestAddress base_;
  std::vector<std::uint8_t> owned_;  // empty for external RAM
  std::uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
  std::size_t next_ = 0;
  class Messages;
  std::shared_ptr<Messages> messages_;  // RamBacking::kMessages only
};

// One buffer element as the driver describes it.
struct BufferElement {
  GuestAddress address = 0;
  std::uint32_t length = 0;
  bool writable = false;
  std::uint16_t extra_flags = 0;  // for hostile chains (e.g. INDIRECT inside a table)
};

// A chain under construction. readable()/writable() allocate buffers in guest RAM;
// element() adds an arbitrary (possibly hostile) descriptor.
class ChainBuilder {
 public:
  explicit ChainBuilder(FakeGuestRam& ram) : ram_(&ram) {}
  ChainBuilder& readable(std::span<const std::uint8_t> data);
  ChainBuilder& readable(std::initializer_list<std::uint8_t> data) {
    return readable(std::span<const std::uint8_t>(data.begin(), data.size()));
  }
  ChainBuilder& writable(std::uint32_t length);
  ChainBuilder& element(BufferElement element);
  // Put the elements in an indirect table referenced by a single descriptor.
  ChainBuilder& indirect(bool on = true) {
    indirect_ = on;
    return *this;
  }

  [[nodiscard]] const std::vector<BufferElement>& elements() const { return elements_; }
  [[nodiscard]] bool is_indirect() const { return indirect_; }
  // Concatenated contents of all writable elements (after the device used the chain).
  [[nodiscard]] std::vector<std::uint8_t> written_bytes() const;

 private:
  FakeGuestRam* ram_;
  std::vector<BufferElement> elements_;
  bool indirect_ = false;
};

struct UsedBuffer {
  std::uint32_t id;
  std::uint32_t length;
};

class FakeSplitDriver {
 public:
  FakeSplitDriver(FakeGuestRam& ram, std::uint16_t size);
  // A ring at a layout the caller placed (legacy PCI: legacy_split_layout at PFN << 12).
  FakeSplitDriver(FakeGuestRam& ram, const QueueLayout& layout);
  [[nodiscard]] QueueLayout layout() const { return layout_; }
  [[nodiscard]] std::uint16_t size() const { return layout_.size; }

  // Places the chain in free descriptors, adds its head to the available ring and
  // (if `publish`) bumps avail idx. Returns the head index.
  std::uint16_t add(const ChainBuilder& chain, bool publish = true);
  void publish();  // makes every added-but-unpublished head visible
  // Next used-ring entry not yet consumed; frees its descriptors.
  std::optional<UsedBuffer> pop_used();

  // ---- raw access for hostile rings -------------------------------------------------
  [[nodiscard]] GuestAddress desc_address(std::uint16_t index) const {
    return layout_.desc + 16ull * index;
  }
  void write_desc(std::uint16_t index, const SplitDescriptor& desc);
  void set_avail_entry(std::uint16_t slot, std::uint16_t head);
  void set_avail_idx(std::uint16_t idx);
  [[nodiscard]] std::uint16_t avail_idx();
  void set_avail_flags(std::uint16_t flags);
  void set_used_event(std::uint16_t value);
  [[nodiscard]] std::uint16_t used_idx();
  [[nodiscard]] std::uint16_t avail_event();
  [[nodiscard]] FakeGuestRam& ram() { return *ram_; }

 private:
  std::uint16_t take_descriptor();

  FakeGuestRam* ram_;
  QueueLayout layout_;
  std::vector<std::uint16_t> free_;
  std::map<std::uint16_t, std::vector<std::uint16_t>> in_flight_;  // head -> descriptors
  std::uint16_t avail_shadow_ = 0;                                 // next avail idx to publish
  std::uint16_t last_used_ = 0;
};

class FakePackedDriver {
 public:
  FakePackedDriver(FakeGuestRam& ram, std::uint16_t size);
  [[nodiscard]] QueueLayout layout() const { return layout_; }
  [[nodiscard]] std::uint16_t size() const { return layout_.size; }

  // Writes the chain at the next free ring slots (head flags last) and returns the
  // buffer ID, or uses `id` if given.
  std::uint16_t add(const ChainBuilder& chain, std::optional<std::uint16_t> id = std::nullopt);
  std::optional<UsedBuffer> pop_used();
  [[nodiscard]] std::optional<std::uint16_t> last_used_flags() const { return last_used_flags_; }

  // ---- raw access ------------------------------------------------------------------
  [[nodiscard]] GuestAddress desc_address(std::uint16_t index) const {
    return layout_.desc + 16ull * index;
  }
  void write_desc(std::uint16_t index, const PackedDescriptor& desc);
  // Flags that make a descriptor available at the current driver wrap counter.
  [[nodiscard]] std::uint16_t avail_flags(bool wrap) const;
  [[nodiscard]] std::uint16_t next_avail() const { return next_avail_; }
  [[nodiscard]] bool avail_wrap() const { return avail_wrap_; }
  void set_driver_event(std::uint16_t flags, std::uint16_t offset = 0, bool wrap = false);
  [[nodiscard]] PackedEventSuppress device_event();
  [[nodiscard]] FakeGuestRam& ram() { return *ram_; }

 private:
  FakeGuestRam* ram_;
  QueueLayout layout_;
  std::uint16_t next_avail_ = 0;
  bool avail_wrap_ = true;
  std::uint16_t next_used_ = 0;
  bool used_wrap_ = true;
  std::uint16_t next_id_ = 0;
  std::map<std::uint16_t, std::uint16_t> slots_by_id_;
  std::uint32_t free_slots_;
  std::optional<std::uint16_t> last_used_flags_;
};

// Records what a Virtqueue reports.
class RecordingQueueSink final : public QueueEventSink {
 public:
  void used_buffer_notification(std::uint16_t queue) override { notifications.push_back(queue); }
  void queue_failed(std::uint16_t queue, const Error& error) override {
    failures.push_back(queue);
    last_error = error;
  }
  std::vector<std::uint16_t> notifications;
  std::vector<std::uint16_t> failures;
  std::optional<Error> last_error;
};

// Records what a DeviceCore raises.
class RecordingInterrupts final : public InterruptSink {
 public:
  void raise_queue_interrupt(std::uint16_t queue) override { queue_interrupts.push_back(queue); }
  void raise_config_interrupt() override { ++config_interrupts; }
  std::vector<std::uint16_t> queue_interrupts;
  int config_interrupts = 0;
};

// Drives a DeviceCore through the modern initialisation sequence (§3.1.1) and sets up
// queues with fake drivers. `features` are accepted if offered (VERSION_1 always).
struct ModernSetup {
  static Status initialise(DeviceCore& core, std::uint64_t features);
  static Status enable_split(DeviceCore& core, std::uint16_t queue, const FakeSplitDriver& driver);
  static Status enable_packed(DeviceCore& core, std::uint16_t queue,
                              const FakePackedDriver& driver);
  static Status driver_ok(DeviceCore& core);
};

}  // namespace vpci::virtio::testing
