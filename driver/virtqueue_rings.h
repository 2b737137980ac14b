// The driver side of virtqueues, in the driver's own memory (driver_memory.h): chains of
// buffers (direct or in an indirect table) and split and packed rings, built the way a
// guest driver builds them (virtio 1.3 §2.7.13, §2.8.21). The raw accessors exist for
// tests that build the hostile rings a real driver never would.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <vector>

#include "driver/driver_memory.h"
#include "virtio/ring_layout.h"
#include "virtio/spec.h"

namespace vpci::driver {

using virtio::PackedDescriptor;
using virtio::PackedEventSuppress;
using virtio::QueueLayout;
using virtio::SplitDescriptor;

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
  explicit ChainBuilder(DriverMemory& ram) : ram_(&ram) {}
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
  DriverMemory* ram_;
  std::vector<BufferElement> elements_;
  bool indirect_ = false;
};

struct UsedBuffer {
  std::uint32_t id;
  std::uint32_t length;
};

class SplitRing {
 public:
  SplitRing(DriverMemory& ram, std::uint16_t size);
  // What SplitRing(ram, size) allocates, alignment included.
  [[nodiscard]] static std::size_t bytes_needed(std::uint16_t size);
  // A ring at a layout the caller placed (legacy PCI: legacy_split_layout at PFN << 12).
  SplitRing(DriverMemory& ram, const QueueLayout& layout);
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
  [[nodiscard]] DriverMemory& ram() { return *ram_; }

 private:
  std::uint16_t take_descriptor();

  DriverMemory* ram_;
  QueueLayout layout_;
  std::vector<std::uint16_t> free_;
  std::map<std::uint16_t, std::vector<std::uint16_t>> in_flight_;  // head -> descriptors
  std::uint16_t avail_shadow_ = 0;                                 // next avail idx to publish
  std::uint16_t last_used_ = 0;
};

class PackedRing {
 public:
  PackedRing(DriverMemory& ram, std::uint16_t size);
  // What PackedRing(ram, size) allocates, alignment included.
  [[nodiscard]] static std::size_t bytes_needed(std::uint16_t size);
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
  [[nodiscard]] DriverMemory& ram() { return *ram_; }

 private:
  DriverMemory* ram_;
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

}  // namespace vpci::driver
