// The device side of a packed virtqueue (virtio 1.3 §2.8, VIRTIO_F_RING_PACKED).
//
// Checks made on every driver-controlled value:
//   at enable   1 <= size <= 32768 (any value, §2.8.10.1); descriptor ring 16-aligned
//               and writable (used descriptors overwrite it), both event suppression
//               areas 4-aligned, the device area writable; all fully mapped.
//   chain walk  the head is available by the wrap-counter rule (§2.8.1); every later
//               descriptor of a NEXT list must be available too (§2.8.6: flags are
//               set correctly in all descriptors of a list); at most `size`
//               descriptors per list (§2.8.17); an INDIRECT descriptor only if
//               negotiated, only alone (§2.8.19: never in a NEXT-linked list, never
//               with NEXT), table length a non-zero multiple of 16 with at most
//               `size` entries, fully mapped, and no INDIRECT entry inside it;
//               readable before writable; total bytes capped; buffers mapped.
// Each descriptor is copied once; only the copy is inspected.
//
// Wrap counters start at 1 (§2.8.1). A used descriptor gets id and len first, then,
// after a release fence, flags with AVAIL = USED = the device wrap counter (§2.8.21-
// style ordering mirrored from the driver side); the device then skips the number of
// ring slots the chain occupied (§2.8.6).
//
// Event suppression (§2.8.10): when the ring runs empty the device publishes its
// Device Event Suppression (ENABLE, or DESC at the next slot when EVENT_IDX is
// negotiated) and re-checks. Used buffer notifications honour the driver's ENABLE /
// DISABLE / DESC setting; DESC is evaluated on positions modulo 2 x size, where the
// wrap counter supplies the extra bit.
#pragma once

#include <cstdint>
#include <optional>
#include <utility>

#include "base/error.h"
#include "virtio/descriptor_chain.h"
#include "virtio/guest_memory.h"
#include "virtio/ring_layout.h"

namespace vpci::virtio {

class PackedRing {
 public:
  [[nodiscard]] static Result<PackedRing> create(const MemoryMap& memory, const QueueLayout& layout,
                                                 const RingOptions& options);
  // The three areas of `layout` are aligned (§2.8.10.1) and mapped in `memory` now.
  [[nodiscard]] static Status check_areas(const MemoryMap& memory, const QueueLayout& layout);

  // Fills `chain` (empty on entry) with the next available buffer and returns true, or
  // returns false when there is none (see SplitRing::pop).
  [[nodiscard]] Result<bool> pop(const MemoryMap& memory, ChainDescriptors& chain);
  // Writes the used descriptor for a buffer that occupied `ring_slots` ring entries.
  // With `publish` false the first such entry's flags (what makes it, and so every
  // later entry, visible to the driver) are written only by publish_used().
  Status push_used(const MemoryMap& memory, std::uint16_t id, std::uint16_t ring_slots,
                   std::uint32_t length, bool publish = true);
  // Offers the most recently popped buffer, which took `ring_slots` entries, again.
  void unpop(std::uint16_t ring_slots) {
    if (next_avail_ < ring_slots) {
      next_avail_ = static_cast<std::uint16_t>(next_avail_ + layout_.size - ring_slots);
      avail_wrap_ = !avail_wrap_;
    } else {
      next_avail_ = static_cast<std::uint16_t>(next_avail_ - ring_slots);
    }
  }
  // Makes every used descriptor pushed so far visible (§2.8.4: flags of the first last).
  Status publish_used(const MemoryMap& memory);
  [[nodiscard]] Result<bool> needs_notification(const MemoryMap& memory);
  // See SplitRing::set_notifications_suppressed: the device event suppression area
  // says DISABLE (§2.8.10), and lifting it writes ENABLE (or DESC for the next
  // descriptor with EVENT_IDX) with a full fence.
  Status set_notifications_suppressed(const MemoryMap& memory, bool suppress);
  [[nodiscard]] bool notifications_suppressed() const { return suppressed_; }

  [[nodiscard]] const QueueLayout& layout() const { return layout_; }
  [[nodiscard]] std::uint16_t next_avail() const { return next_avail_; }
  [[nodiscard]] bool avail_wrap_counter() const { return avail_wrap_; }
  [[nodiscard]] std::uint16_t next_used() const { return next_used_; }
  [[nodiscard]] bool used_wrap_counter() const { return used_wrap_; }

  // True once entries were pushed since the last needs_notification() (which then has
  // something to decide).
  [[nodiscard]] bool used_since_check() const { return slots_since_check_ != 0; }

 private:
  PackedRing(const QueueLayout& layout, const RingOptions& options)
      : layout_(layout), options_(options) {}

  [[nodiscard]] Result<bool> head_available(const MemoryMap& memory) const;
  // The device event suppression area: a notification for the next descriptor (or any,
  // without EVENT_IDX) when `notify`, none otherwise; then a full fence.
  Status write_device_event(const MemoryMap& memory, bool notify);
  [[nodiscard]] Status walk_chain(const MemoryMap& memory, ChainDescriptors& chain) const;
  Status walk_indirect(const MemoryMap& memory, GuestAddress table, std::uint32_t length,
                       ChainDescriptors& chain) const;
  // Position of (index, wrap) on a circle of 2 x size slots.
  [[nodiscard]] std::uint32_t position(std::uint16_t index, bool wrap) const {
    return index + (wrap ? 0u : layout_.size);
  }

  QueueLayout layout_;
  RingOptions options_;
  std::uint16_t next_avail_ = 0;
  bool avail_wrap_ = true;
  bool suppressed_ = false;  // set_notifications_suppressed
  std::uint16_t next_used_ = 0;
  bool used_wrap_ = true;
  // The held-back flags of the first unpublished used descriptor (push_used, publish).
  std::optional<std::pair<GuestAddress, std::uint16_t>> unpublished_flags_;
  std::uint64_t slots_since_check_ = 0;  // used slots written since needs_notification()
};

}  // namespace vpci::virtio
