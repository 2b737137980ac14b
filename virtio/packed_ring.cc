#include "virtio/packed_ring.h"

#include <vector>

#include "virtio/ring_common.h"
#include "virtio/spec.h"

namespace vpci::virtio {
namespace {

using ring_internal::acquire_fence;
using ring_internal::full_fence;
using ring_internal::release_fence;

constexpr GuestAddress kLenOffset = 8;
constexpr GuestAddress kIdOffset = 12;
constexpr GuestAddress kFlagsOffset = 14;

// §2.8.1: available iff AVAIL matches the wrap counter and USED does not.
bool is_available(std::uint16_t flags, bool wrap) {
  const bool avail = (flags & desc_flags::kPackedAvail) != 0;
  const bool used = (flags & desc_flags::kPackedUsed) != 0;
  return avail == wrap && used != wrap;
}

PackedDescriptor to_host(const PackedDescriptor& raw) {
  return PackedDescriptor{from_le(raw.addr), from_le(raw.len), from_le(raw.id), from_le(raw.flags)};
}

}  // namespace

Result<PackedRing> PackedRing::create(const MemoryMap& memory, const QueueLayout& layout,
                                      const RingOptions& options) {
  // §2.8: "Packed virtqueues support up to 2^15 entries each"; any size is allowed.
  if (layout.size == 0 || layout.size > kMaxQueueSize) {
    return make_error(ErrorCode::kProtocolViolation, "packed queue size {} is not in 1..{}",
                      layout.size, kMaxQueueSize);
  }
  VPCI_TRY(check_areas(memory, layout));
  // Notifications start enabled whatever the driver left in the device area.
  VPCI_TRY(memory.write_obj(layout.device, PackedEventSuppress{0, to_le(ring_event::kEnable)}));
  return PackedRing(layout, options);
}

Status PackedRing::check_areas(const MemoryMap& memory, const QueueLayout& layout) {
  // §2.8.10.1 alignment table. The descriptor ring must be writable: used descriptors
  // are written into it.
  VPCI_TRY(ring_internal::check_area(memory, "descriptor ring", layout.desc,
                                     packed_layout::desc_bytes(layout.size),
                                     packed_layout::kDescAlign, Access::kWrite));
  VPCI_TRY(ring_internal::check_area(memory, "driver event suppression", layout.driver,
                                     packed_layout::kEventBytes, packed_layout::kEventAlign,
                                     Access::kRead));
  return ring_internal::check_area(memory, "device event suppression", layout.device,
                                   packed_layout::kEventBytes, packed_layout::kEventAlign,
                                   Access::kWrite);
}

Result<bool> PackedRing::head_available(const MemoryMap& memory) const {
  VPCI_ASSIGN_OR_RETURN(
      std::uint16_t flags,
      memory.read_obj<std::uint16_t>(layout_.desc + 16ull * next_avail_ + kFlagsOffset));
  return is_available(from_le(flags), avail_wrap_);
}

Status PackedRing::write_device_event(const MemoryMap& memory, bool notify) {
  // §2.8.10: DESC names the next descriptor (EVENT_IDX), ENABLE any, DISABLE none.
  const std::uint16_t event_desc =
      static_cast<std::uint16_t>(next_avail_ | (avail_wrap_ ? 0x8000u : 0u));
  const std::uint16_t flags = !notify              ? ring_event::kDisable
                              : options_.event_idx ? ring_event::kDesc
                                                   : ring_event::kEnable;
  VPCI_TRY(memory.write_obj(layout_.device, PackedEventSuppress{to_le(event_desc), to_le(flags)}));
  full_fence();
  return {};
}

Status PackedRing::set_notifications_suppressed(const MemoryMap& memory, bool suppress) {
  suppressed_ = suppress;
  return write_device_event(memory, !suppress);
}

Result<bool> PackedRing::pop(const MemoryMap& memory, ChainDescriptors& chain) {
  VPCI_ASSIGN_OR_RETURN(bool available, head_available(memory));
  if (!available && suppressed_) return false;  // polling: no notification wanted
  if (!available) {
    // §2.8.10 / §2.8.14: ask for a notification for the next descriptor (EVENT_IDX) or
    // any descriptor, then look again in case the driver got there first.
    VPCI_TRY(write_device_event(memory, true));
    VPCI_ASSIGN_OR_RETURN(available, head_available(memory));
    if (!available) return false;
  }
  // The driver wrote the list before the head's flags (§2.8.21 "Updating flags").
  acquire_fence();
  auto walked = walk_chain(memory, chain);
  if (!walked) {
    return tl::unexpected(std::move(walked).error().with_context(
        fmt::format("list at descriptor {} (wrap {})", next_avail_, avail_wrap_ ? 1 : 0)));
  }
  const std::uint32_t next = std::uint32_t{next_avail_} + chain.ring_slots;
  if (next >= layout_.size) {
    next_avail_ = static_cast<std::uint16_t>(next - layout_.size);
    avail_wrap_ = !avail_wrap_;
  } else {
    next_avail_ = static_cast<std::uint16_t>(next);
  }
  return true;
}

Status PackedRing::walk_chain(const MemoryMap& memory, ChainDescriptors& chain) const {
  std::uint32_t index = next_avail_;
  bool wrap = avail_wrap_;
  std::uint32_t slots = 0;
  for (;;) {
    // §2.8.17: "A driver MUST NOT create a descriptor list longer than the Queue Size."
    if (slots == layout_.size) {
      return make_error(ErrorCode::kProtocolViolation,
                        "descriptor list longer than the queue size {}", layout_.size);
    }
    VPCI_ASSIGN_OR_RETURN(PackedDescriptor raw,
                          memory.read_obj<PackedDescriptor>(layout_.desc + 16ull * index));
    const PackedDescriptor desc = to_host(raw);
    ++slots;
    // The head was checked before the acquire fence; every later descriptor of the
    // list must be available under the wrap counter of its own slot (§2.8.6 note).
    if (slots > 1 && !is_available(desc.flags, wrap)) {
      return make_error(ErrorCode::kProtocolViolation,
                        "descriptor {} continues a list but is not available", index);
    }
    if ((desc.flags & desc_flags::kIndirect) != 0) {
      if (!options_.indirect) {
        return make_error(ErrorCode::kProtocolViolation,
                          "descriptor {} is INDIRECT but INDIRECT_DESC was not negotiated", index);
      }
      // §2.8.19: "A driver MUST NOT write direct descriptors with DESC_F_INDIRECT set
      // in a scatter-gather list linked by VIRTQ_DESC_F_NEXT."
      if (slots > 1 || (desc.flags & desc_flags::kNext) != 0) {
        return make_error(ErrorCode::kProtocolViolation,
                          "INDIRECT descriptor {} is part of a NEXT-linked list", index);
      }
      VPCI_TRY(walk_indirect(memory, desc.addr, desc.len, chain));
      chain.id = desc.id;
      break;
    }
    VPCI_TRY(ring_internal::append_buffer(memory, options_, chain, desc.addr, desc.len,
                                          (desc.flags & desc_flags::kWrite) != 0));
    if ((desc.flags & desc_flags::kNext) == 0) {
      chain.id = desc.id;  // §2.8.6: "Buffer ID is included in the last descriptor in the list."
      break;
    }
    if (++index == layout_.size) {
      index = 0;
      wrap = !wrap;
    }
  }
  chain.ring_slots = static_cast<std::uint16_t>(slots);
  return {};
}

Status PackedRing::walk_indirect(const MemoryMap& memory, GuestAddress table, std::uint32_t length,
                                 ChainDescriptors& chain) const {
  if (length == 0 || length % sizeof(PackedDescriptor) != 0) {
    return make_error(ErrorCode::kProtocolViolation,
                      "indirect table length {} is not a non-zero multiple of 16", length);
  }
  const std::uint32_t entries = length / static_cast<std::uint32_t>(sizeof(PackedDescriptor));
  // §2.8.5: without a device limit "the maximum number of descriptors in a list is the
  // virt queue size"; all len/16 entries of a packed table are used (§2.8.7).
  if (entries > layout_.size) {
    return make_error(ErrorCode::kProtocolViolation,
                      "indirect table of {} entries exceeds the queue size {}", entries,
                      layout_.size);
  }
  VPCI_TRY(ring_internal::check_area(memory, "indirect table", table, length, 1, Access::kRead));
  std::vector<PackedDescriptor> descriptors(entries);
  VPCI_TRY(memory.read(
      table, std::span<std::uint8_t>(reinterpret_cast<std::uint8_t*>(descriptors.data()), length)));
  for (std::uint32_t i = 0; i < entries; ++i) {
    const PackedDescriptor desc = to_host(descriptors[i]);
    // §2.8.19: only WRITE is valid in an indirect table; a nested table is refused
    // rather than ignored, because following it is exactly what a hostile ring wants.
    if ((desc.flags & desc_flags::kIndirect) != 0) {
      return make_error(ErrorCode::kProtocolViolation, "nested indirect table in indirect entry {}",
                        i);
    }
    VPCI_TRY(ring_internal::append_buffer(memory, options_, chain, desc.addr, desc.len,
                                          (desc.flags & desc_flags::kWrite) != 0));
  }
  return {};
}

Status PackedRing::push_used(const MemoryMap& memory, std::uint16_t id, std::uint16_t ring_slots,
                             std::uint32_t length, bool publish) {
  if (ring_slots == 0 || ring_slots > layout_.size) {
    return make_error(ErrorCode::kInvalidArgument, "used buffer of {} ring slots in a ring of {}",
                      ring_slots, layout_.size);
  }
  const GuestAddress slot = layout_.desc + 16ull * next_used_;
  VPCI_TRY(memory.write_obj(slot + kLenOffset, to_le(length)));
  VPCI_TRY(memory.write_obj(slot + kIdOffset, to_le(id)));
  // The driver reads id/len after it sees the flags change; publish them first.
  release_fence();
  std::uint16_t flags =
      used_wrap_ ? static_cast<std::uint16_t>(desc_flags::kPackedAvail | desc_flags::kPackedUsed)
                 : 0;
  if (length > 0) flags |= desc_flags::kWrite;  // §2.8.3: WRITE in a used descriptor = data written
  if (!publish && !unpublished_flags_) {
    // The driver walks used descriptors in ring order and stops at the first one not
    // yet used: holding this one's flags back hides every later one too.
    unpublished_flags_.emplace(slot + kFlagsOffset, flags);
  } else {
    VPCI_TRY(memory.write_obj(slot + kFlagsOffset, to_le(flags)));
  }
  const std::uint32_t next = std::uint32_t{next_used_} + ring_slots;
  if (next >= layout_.size) {
    next_used_ = static_cast<std::uint16_t>(next - layout_.size);
    used_wrap_ = !used_wrap_;
  } else {
    next_used_ = static_cast<std::uint16_t>(next);
  }
  slots_since_check_ += ring_slots;
  return {};
}

Status PackedRing::publish_used(const MemoryMap& memory) {
  if (!unpublished_flags_) return {};
  const auto [address, flags] = *unpublished_flags_;
  unpublished_flags_.reset();
  release_fence();  // every later descriptor is complete before the first becomes used
  return memory.write_obj(address, to_le(flags));
}

Result<bool> PackedRing::needs_notification(const MemoryMap& memory) {
  if (slots_since_check_ == 0) return false;
  full_fence();  // our flags writes must be visible before we read the driver's choice
  const std::uint32_t ring = 2u * layout_.size;
  const std::uint32_t new_position = position(next_used_, used_wrap_);
  const std::uint64_t advanced = slots_since_check_;
  slots_since_check_ = 0;

  VPCI_ASSIGN_OR_RETURN(PackedEventSuppress raw,
                        memory.read_obj<PackedEventSuppress>(layout_.driver));
  const std::uint16_t mode = from_le(raw.flags) & 0x3;
  if (mode == ring_event::kDisable) return false;
  // ENABLE, the reserved value 3, and DESC without EVENT_IDX all notify: a spurious
  // notification is harmless (§2.7.7.1: drivers handle them), a missing one hangs.
  if (mode != ring_event::kDesc || !options_.event_idx) return true;
  if (advanced >= ring) return true;  // every slot was passed since the last check
  const std::uint16_t desc = from_le(raw.desc);
  const std::uint16_t offset = desc & 0x7FFF;
  if (offset >= layout_.size) return true;
  const std::uint32_t event_position = position(offset, (desc & 0x8000) != 0);
  // Notify iff the event slot is among the `advanced` slots just before new_position.
  const std::uint32_t behind = (new_position + ring - event_position - 1) % ring;
  return behind < advanced;
}

}  // namespace vpci::virtio
