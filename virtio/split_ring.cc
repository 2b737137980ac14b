#include "virtio/split_ring.h"

#include <algorithm>
#include <bit>

#include "virtio/ring_common.h"
#include "virtio/spec.h"

namespace vpci::virtio {

using ring_internal::acquire_fence;
using ring_internal::full_fence;
using ring_internal::release_fence;

Result<SplitRing> SplitRing::create(const MemoryMap& memory, const QueueLayout& layout,
                                    const RingOptions& options) {
  // §2.7: "Queue Size value is always a power of 2. The maximum Queue Size value is 32768."
  if (!std::has_single_bit(layout.size) || layout.size > kMaxQueueSize) {
    return make_error(ErrorCode::kProtocolViolation,
                      "split queue size {} is not a power of two <= {}", layout.size,
                      kMaxQueueSize);
  }
  VPCI_TRY(check_areas(memory, layout));
  // Both indices start at 0 when the queue is enabled (§2.7.8: used idx "starts at 0").
  return SplitRing(layout, options);
}

Status SplitRing::check_areas(const MemoryMap& memory, const QueueLayout& layout) {
  // §2.7.1: each part aligned as in the §2.7 table; vpci also requires it mapped now.
  VPCI_TRY(ring_internal::check_area(memory, "descriptor table", layout.desc,
                                     split_layout::desc_bytes(layout.size),
                                     split_layout::kDescAlign, Access::kRead));
  VPCI_TRY(ring_internal::check_area(memory, "available ring", layout.driver,
                                     split_layout::avail_bytes(layout.size),
                                     split_layout::kAvailAlign, Access::kRead));
  return ring_internal::check_area(memory, "used ring", layout.device,
                                   split_layout::used_bytes(layout.size), split_layout::kUsedAlign,
                                   Access::kWrite);
}

Result<std::uint16_t> SplitRing::read_avail_idx(const MemoryMap& memory) const {
  VPCI_ASSIGN_OR_RETURN(std::uint16_t raw,
                        memory.read_obj<std::uint16_t>(layout_.driver + split_layout::kAvailIdx));
  const std::uint16_t idx = from_le(raw);
  // §2.7.6.1: the driver never decrements idx and never has more than Queue Size
  // buffers outstanding, so idx - last_avail_idx > size is a corrupt or hostile ring.
  const auto pending = static_cast<std::uint16_t>(idx - next_avail_);
  if (pending > layout_.size) {
    return make_error(ErrorCode::kProtocolViolation,
                      "available idx {} is {} entries ahead of the device (queue size {})", idx,
                      pending, layout_.size);
  }
  return idx;
}

Result<bool> SplitRing::pop(const MemoryMap& memory, ChainDescriptors& chain) {
  if (known_avail_ == next_avail_) {
    VPCI_ASSIGN_OR_RETURN(known_avail_, read_avail_idx(memory));
    if (known_avail_ == next_avail_) {
      if (!options_.event_idx || suppressed_) return false;
      // Already asked for exactly this entry, and looked again after asking: the driver
      // will notify when it fills it, so a doorbell on an empty ring costs one read, not a
      // write, a full fence and a second read.
      if (avail_event_published_ && published_avail_event_ == next_avail_) return false;
      // §2.7.10.2: ask for a notification when the driver fills entry next_avail,
      // then look again in case it did so before seeing our avail_event.
      VPCI_TRY(publish_avail_event(memory, next_avail_));
      VPCI_ASSIGN_OR_RETURN(known_avail_, read_avail_idx(memory));
      if (known_avail_ == next_avail_) return false;
    }
    // Ring entries and descriptors were written before idx (§2.7.13 step 4).
    acquire_fence();
  }
  const GuestAddress entry =
      layout_.driver + split_layout::kAvailRing + 2ull * (next_avail_ % layout_.size);
  VPCI_ASSIGN_OR_RETURN(std::uint16_t raw_head, memory.read_obj<std::uint16_t>(entry));
  const std::uint16_t head = from_le(raw_head);
  auto walked = walk_chain(memory, head, chain);
  if (!walked) {
    return tl::unexpected(std::move(walked).error().with_context(
        fmt::format("chain at avail[{}] (head {})", next_avail_, head)));
  }
  ++next_avail_;
  return true;
}

Status SplitRing::walk_chain(const MemoryMap& memory, std::uint16_t head,
                             ChainDescriptors& chain) const {
  if (head >= layout_.size) {
    return make_error(ErrorCode::kProtocolViolation, "head descriptor {} outside a table of {}",
                      head, layout_.size);
  }
  chain.id = head;

  GuestAddress table = layout_.desc;
  std::uint32_t table_entries = layout_.size;
  std::uint32_t index = head;
  bool in_indirect = false;
  std::uint32_t table_reads = 0;  // descriptors read from the current table
  std::uint32_t buffers = 0;      // buffer descriptors in the whole chain

  for (;;) {
    // In the main table `size` reads cover every entry once; any more means a loop.
    // In an indirect table the walk is bounded by its own length (and by `size` below).
    if (++table_reads > table_entries) {
      return make_error(ErrorCode::kProtocolViolation, "descriptor loop in the {} table",
                        in_indirect ? "indirect" : "descriptor");
    }
    VPCI_ASSIGN_OR_RETURN(SplitDescriptor raw,
                          memory.read_obj<SplitDescriptor>(table + 16ull * index));
    const SplitDescriptor desc{from_le(raw.addr), from_le(raw.len), from_le(raw.flags),
                               from_le(raw.next)};

    if ((desc.flags & desc_flags::kIndirect) != 0) {
      // §2.7.5.3.1 driver requirements, enforced by the device.
      if (!options_.indirect) {
        return make_error(ErrorCode::kProtocolViolation,
                          "descriptor {} is INDIRECT but INDIRECT_DESC was not negotiated", index);
      }
      if (in_indirect) {
        return make_error(ErrorCode::kProtocolViolation,
                          "nested indirect table in indirect descriptor {}", index);
      }
      if ((desc.flags & desc_flags::kNext) != 0) {
        return make_error(ErrorCode::kProtocolViolation, "descriptor {} has both INDIRECT and NEXT",
                          index);
      }
      if (desc.len == 0 || desc.len % sizeof(SplitDescriptor) != 0) {
        return make_error(ErrorCode::kProtocolViolation,
                          "indirect table length {} is not a non-zero multiple of 16", desc.len);
      }
      // §2.7.5.3.2: the WRITE flag of the descriptor naming the table is ignored.
      VPCI_TRY(ring_internal::check_area(memory, "indirect table", desc.addr, desc.len, 1,
                                         Access::kRead));
      table = desc.addr;
      table_entries = desc.len / static_cast<std::uint32_t>(sizeof(SplitDescriptor));
      index = 0;  // §2.7.5.3: the first indirect descriptor is at index 0
      in_indirect = true;
      table_reads = 0;
      continue;
    }

    // §2.7.5.3.1 / §2.7.4.1: no chain longer than the queue size.
    if (++buffers > layout_.size) {
      return make_error(ErrorCode::kProtocolViolation,
                        "descriptor chain longer than the queue size {}", layout_.size);
    }
    VPCI_TRY(ring_internal::append_buffer(memory, options_, chain, desc.addr, desc.len,
                                          (desc.flags & desc_flags::kWrite) != 0));
    if ((desc.flags & desc_flags::kNext) == 0) break;
    if (desc.next >= table_entries) {
      return make_error(ErrorCode::kProtocolViolation,
                        "descriptor {} links to {} outside a table of {}", index, desc.next,
                        table_entries);
    }
    index = desc.next;
  }
  return {};
}

Status SplitRing::push_used(const MemoryMap& memory, std::uint16_t id, std::uint32_t length,
                            bool publish) {
  const GuestAddress element =
      layout_.device + split_layout::kUsedRing + 8ull * (next_used_ % layout_.size);
  VPCI_TRY(memory.write_obj(element, UsedElement{to_le(std::uint32_t{id}), to_le(length)}));
  ++next_used_;
  ++used_since_check_;
  return publish ? publish_used(memory) : Status{};
}

Status SplitRing::publish_used(const MemoryMap& memory) {
  if (published_used_ == next_used_) return {};
  // §2.7.8.2: "The device MUST set len prior to updating the used idx."
  release_fence();
  VPCI_TRY(memory.write_obj(layout_.device + split_layout::kUsedIdx, to_le(next_used_)));
  published_used_ = next_used_;
  return {};
}

Status SplitRing::publish_avail_event(const MemoryMap& memory, std::uint16_t event) {
  VPCI_TRY(memory.write_obj(layout_.device + split_layout::avail_event_offset(layout_.size),
                            to_le(event)));
  avail_event_published_ = true;
  published_avail_event_ = event;
  // The request must be visible before the device's next look at avail idx (the driver
  // orders the other way: idx, fence, then reads the request; §2.7.13 step 4-5).
  full_fence();
  return {};
}

Status SplitRing::set_notifications_suppressed(const MemoryMap& memory, bool suppress) {
  suppressed_ = suppress;
  if (options_.event_idx) {
    VPCI_TRY(publish_avail_event(
        memory, static_cast<std::uint16_t>(suppress ? next_avail_ - 1 : next_avail_)));
  } else {
    VPCI_TRY(memory.write_obj(layout_.device + split_layout::kUsedFlags,
                              to_le(suppress ? kUsedFlagNoNotify : std::uint16_t{0})));
    full_fence();  // as in publish_avail_event
  }
  known_avail_ = next_avail_;  // make the next pop() read avail idx again
  return {};
}

Result<bool> SplitRing::needs_notification(const MemoryMap& memory) {
  if (used_since_check_ == 0) return false;
  full_fence();  // used idx must be visible before we read the driver's suppression state
  const std::uint16_t old_used = checked_used_;
  const std::uint32_t pushed = used_since_check_;
  checked_used_ = next_used_;
  used_since_check_ = 0;
  if (!options_.event_idx) {
    // §2.7.7.2 without EVENT_IDX: flags == 1 means "no notification".
    VPCI_ASSIGN_OR_RETURN(std::uint16_t flags, memory.read_obj<std::uint16_t>(
                                                   layout_.driver + split_layout::kAvailFlags));
    return (from_le(flags) & kAvailFlagNoInterrupt) == 0;
  }
  // A 16-bit comparison cannot tell whether 65536 or more entries went by; by then
  // used_event has certainly been crossed.
  if (pushed >= 0x10000) return true;
  VPCI_ASSIGN_OR_RETURN(std::uint16_t used_event,
                        memory.read_obj<std::uint16_t>(
                            layout_.driver + split_layout::used_event_offset(layout_.size)));
  return need_event(from_le(used_event), next_used_, old_used);
}

}  // namespace vpci::virtio
