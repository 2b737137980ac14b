#include "driver/virtqueue_rings.h"

#include <cstring>

namespace vpci::driver {

using namespace vpci::virtio;

// ---- ChainBuilder ------------------------------------------------------------------------------

ChainBuilder& ChainBuilder::readable(std::span<const std::uint8_t> data) {
  const GuestAddress address = ram_->alloc(data.size() == 0 ? 1 : data.size(), 8);
  ram_->write(address, data);
  elements_.push_back({address, static_cast<std::uint32_t>(data.size()), false, 0});
  return *this;
}

ChainBuilder& ChainBuilder::writable(std::uint32_t length) {
  const GuestAddress address = ram_->alloc(length == 0 ? 1 : length, 8);
  elements_.push_back({address, length, true, 0});
  return *this;
}

ChainBuilder& ChainBuilder::element(BufferElement element) {
  elements_.push_back(element);
  return *this;
}

std::vector<std::uint8_t> ChainBuilder::written_bytes() const {
  std::vector<std::uint8_t> out;
  for (const auto& e : elements_) {
    if (!e.writable) continue;
    auto bytes = ram_->read(e.address, e.length);
    out.insert(out.end(), bytes.begin(), bytes.end());
  }
  return out;
}

// ---- SplitRing
// -----------------------------------------------------------------------------

SplitRing::SplitRing(DriverMemory& ram, std::uint16_t size) : ram_(&ram) {
  layout_.size = size;
  layout_.desc = ram.alloc(split_layout::desc_bytes(size), 16);
  layout_.driver = ram.alloc(split_layout::avail_bytes(size), 2);
  layout_.device = ram.alloc(split_layout::used_bytes(size), 4);
  for (std::uint32_t i = 0; i < size; ++i)
    free_.push_back(static_cast<std::uint16_t>(size - 1 - i));
}

std::size_t SplitRing::bytes_needed(std::uint16_t size) {
  return split_layout::desc_bytes(size) + split_layout::avail_bytes(size) +
         split_layout::used_bytes(size) + 16 + 2 + 4;
}

SplitRing::SplitRing(DriverMemory& ram, const QueueLayout& layout) : ram_(&ram), layout_(layout) {
  for (std::uint32_t i = 0; i < layout.size; ++i)
    free_.push_back(static_cast<std::uint16_t>(layout.size - 1 - i));
}

std::uint16_t SplitRing::take_descriptor() {
  if (free_.empty()) driver_misuse("split ring out of descriptors");
  const std::uint16_t index = free_.back();
  free_.pop_back();
  return index;
}

void SplitRing::write_desc(std::uint16_t index, const SplitDescriptor& desc) {
  ram_->put(desc_address(index), SplitDescriptor{to_le(desc.addr), to_le(desc.len),
                                                 to_le(desc.flags), to_le(desc.next)});
}

std::uint16_t SplitRing::add(const ChainBuilder& chain, bool publish_now) {
  const auto& elements = chain.elements();
  std::vector<std::uint16_t> used;
  std::uint16_t head;
  if (chain.is_indirect()) {
    // §2.7.5.3: a table of len/16 descriptors chained by next from index 0.
    const GuestAddress table = ram_->alloc(16 * elements.size(), 16);
    for (std::size_t i = 0; i < elements.size(); ++i) {
      std::uint16_t flags = elements[i].extra_flags;
      if (elements[i].writable) flags |= desc_flags::kWrite;
      if (i + 1 < elements.size()) flags |= desc_flags::kNext;
      ram_->put(table + 16 * i,
                SplitDescriptor{to_le(elements[i].address), to_le(elements[i].length), to_le(flags),
                                to_le(static_cast<std::uint16_t>(i + 1))});
    }
    head = take_descriptor();
    used.push_back(head);
    write_desc(head, SplitDescriptor{table, static_cast<std::uint32_t>(16 * elements.size()),
                                     desc_flags::kIndirect, 0});
  } else {
    std::vector<std::uint16_t> indices;
    for (std::size_t i = 0; i < elements.size(); ++i) indices.push_back(take_descriptor());
    for (std::size_t i = 0; i < elements.size(); ++i) {
      std::uint16_t flags = elements[i].extra_flags;
      if (elements[i].writable) flags |= desc_flags::kWrite;
      std::uint16_t next = 0;
      if (i + 1 < elements.size()) {
        flags |= desc_flags::kNext;
        next = indices[i + 1];
      }
      write_desc(indices[i], SplitDescriptor{elements[i].address, elements[i].length, flags, next});
    }
    head = indices.front();
    used = indices;
  }
  in_flight_[head] = used;
  set_avail_entry(avail_shadow_, head);
  ++avail_shadow_;
  if (publish_now) publish();
  return head;
}

void SplitRing::publish() {
  std::atomic_thread_fence(std::memory_order_release);  // ring entries before idx (§2.7.13 step 4)
  set_avail_idx(avail_shadow_);
}

void SplitRing::set_avail_entry(std::uint16_t slot, std::uint16_t head) {
  ram_->put(layout_.driver + split_layout::kAvailRing + 2ull * (slot % layout_.size), to_le(head));
}

void SplitRing::set_avail_idx(std::uint16_t idx) {
  ram_->put(layout_.driver + split_layout::kAvailIdx, to_le(idx));
}

std::uint16_t SplitRing::avail_idx() {
  return from_le(ram_->get<std::uint16_t>(layout_.driver + split_layout::kAvailIdx));
}

void SplitRing::set_avail_flags(std::uint16_t flags) {
  ram_->put(layout_.driver + split_layout::kAvailFlags, to_le(flags));
}

void SplitRing::set_used_event(std::uint16_t value) {
  ram_->put(layout_.driver + split_layout::used_event_offset(layout_.size), to_le(value));
}

std::uint16_t SplitRing::used_idx() {
  return from_le(ram_->get<std::uint16_t>(layout_.device + split_layout::kUsedIdx));
}

std::uint16_t SplitRing::avail_event() {
  return from_le(
      ram_->get<std::uint16_t>(layout_.device + split_layout::avail_event_offset(layout_.size)));
}

std::optional<UsedBuffer> SplitRing::pop_used() {
  if (used_idx() == last_used_) return std::nullopt;
  std::atomic_thread_fence(std::memory_order_acquire);
  const GuestAddress element =
      layout_.device + split_layout::kUsedRing + 8ull * (last_used_ % layout_.size);
  const auto raw = ram_->get<UsedElement>(element);
  ++last_used_;
  UsedBuffer used{from_le(raw.id), from_le(raw.len)};
  auto it = in_flight_.find(static_cast<std::uint16_t>(used.id));
  if (it != in_flight_.end()) {
    for (auto index : it->second) free_.push_back(index);
    in_flight_.erase(it);
  }
  return used;
}

// ---- PackedRing
// -------------------------------------------------------------------------------

PackedRing::PackedRing(DriverMemory& ram, std::uint16_t size) : ram_(&ram), free_slots_(size) {
  layout_.size = size;
  layout_.desc = ram.alloc(packed_layout::desc_bytes(size), 16);
  layout_.driver = ram.alloc(packed_layout::kEventBytes, 4);
  layout_.device = ram.alloc(packed_layout::kEventBytes, 4);
}

std::size_t PackedRing::bytes_needed(std::uint16_t size) {
  return packed_layout::desc_bytes(size) + 2 * packed_layout::kEventBytes + 16 + 4 + 4;
}

std::uint16_t PackedRing::avail_flags(bool wrap) const {
  // §2.8.1: AVAIL = wrap counter, USED = its inverse.
  return wrap ? desc_flags::kPackedAvail : desc_flags::kPackedUsed;
}

void PackedRing::write_desc(std::uint16_t index, const PackedDescriptor& desc) {
  ram_->put(desc_address(index),
            PackedDescriptor{to_le(desc.addr), to_le(desc.len), to_le(desc.id), to_le(desc.flags)});
}

std::uint16_t PackedRing::add(const ChainBuilder& chain, std::optional<std::uint16_t> id) {
  const auto& elements = chain.elements();
  const std::uint16_t buffer_id = id.value_or(next_id_);
  if (!id) next_id_ = static_cast<std::uint16_t>((next_id_ + 1) % layout_.size);
  struct Slot {
    std::uint16_t index;
    PackedDescriptor desc;
  };
  std::vector<Slot> slots;
  if (chain.is_indirect()) {
    // §2.8.7: a table of packed descriptors used in order; only WRITE is meaningful.
    const GuestAddress table = ram_->alloc(16 * elements.size(), 16);
    for (std::size_t i = 0; i < elements.size(); ++i) {
      std::uint16_t flags = elements[i].extra_flags;
      if (elements[i].writable) flags |= desc_flags::kWrite;
      ram_->put(table + 16 * i, PackedDescriptor{to_le(elements[i].address),
                                                 to_le(elements[i].length), 0, to_le(flags)});
    }
    slots.push_back({0, PackedDescriptor{table, static_cast<std::uint32_t>(16 * elements.size()),
                                         buffer_id, desc_flags::kIndirect}});
  } else {
    for (std::size_t i = 0; i < elements.size(); ++i) {
      std::uint16_t flags = elements[i].extra_flags;
      if (elements[i].writable) flags |= desc_flags::kWrite;
      if (i + 1 < elements.size()) flags |= desc_flags::kNext;
      slots.push_back(
          {0, PackedDescriptor{elements[i].address, elements[i].length, buffer_id, flags}});
    }
  }
  if (slots.size() > free_slots_) driver_misuse("packed ring full");
  free_slots_ -= static_cast<std::uint32_t>(slots.size());
  // Assign ring positions; every descriptor carries the wrap counter of its own slot.
  std::uint16_t head_flags = 0;
  for (std::size_t i = 0; i < slots.size(); ++i) {
    slots[i].index = next_avail_;
    slots[i].desc.flags |= avail_flags(avail_wrap_);
    if (i == 0) {
      // The head is made available last (§2.8.6): until then AVAIL = USED = 0, which is
      // not "available" under either wrap counter.
      head_flags = slots[i].desc.flags;
      slots[i].desc.flags &=
          static_cast<std::uint16_t>(~(desc_flags::kPackedAvail | desc_flags::kPackedUsed));
    }
    write_desc(slots[i].index, slots[i].desc);
    if (++next_avail_ == layout_.size) {
      next_avail_ = 0;
      avail_wrap_ = !avail_wrap_;
    }
  }
  std::atomic_thread_fence(std::memory_order_release);
  ram_->put(desc_address(slots[0].index) + 14, to_le(head_flags));
  slots_by_id_[buffer_id] = static_cast<std::uint16_t>(slots.size());
  return buffer_id;
}

std::optional<UsedBuffer> PackedRing::pop_used() {
  const std::uint16_t flags = from_le(ram_->get<std::uint16_t>(desc_address(next_used_) + 14));
  const bool avail = (flags & desc_flags::kPackedAvail) != 0;
  const bool used = (flags & desc_flags::kPackedUsed) != 0;
  if (avail != used || used != used_wrap_) return std::nullopt;
  std::atomic_thread_fence(std::memory_order_acquire);
  const auto raw = ram_->get<PackedDescriptor>(desc_address(next_used_));
  last_used_flags_ = flags;
  UsedBuffer result{from_le(raw.id), from_le(raw.len)};
  std::uint16_t skip = 1;
  if (auto it = slots_by_id_.find(static_cast<std::uint16_t>(result.id));
      it != slots_by_id_.end()) {
    skip = it->second;
    slots_by_id_.erase(it);
  }
  free_slots_ += skip;
  const std::uint32_t next = std::uint32_t{next_used_} + skip;
  if (next >= layout_.size) {
    next_used_ = static_cast<std::uint16_t>(next - layout_.size);
    used_wrap_ = !used_wrap_;
  } else {
    next_used_ = static_cast<std::uint16_t>(next);
  }
  return result;
}

void PackedRing::set_driver_event(std::uint16_t flags, std::uint16_t offset, bool wrap) {
  ram_->put(layout_.driver,
            PackedEventSuppress{to_le(static_cast<std::uint16_t>(offset | (wrap ? 0x8000 : 0))),
                                to_le(flags)});
}

PackedEventSuppress PackedRing::device_event() {
  const auto raw = ram_->get<PackedEventSuppress>(layout_.device);
  return PackedEventSuppress{from_le(raw.desc), from_le(raw.flags)};
}

}  // namespace vpci::driver
