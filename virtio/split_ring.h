// The device side of a split virtqueue (virtio 1.3 §2.7).
//
// Checks made on every driver-controlled value (vpci policy, see
// ../shared/reference/virtio-pci.md §7):
//   at enable   size a power of two <= 32768; descriptor table 16-aligned, available
//               ring 2-aligned, used ring 4-aligned (§2.7.1); all three fully mapped,
//               the used ring writable; no address arithmetic wraps.
//   avail idx   never more than `size` entries ahead of the device (§2.7.6.1: the
//               driver never decrements it, so a larger jump is corruption).
//   chain walk  head and every `next` inside the table they index; at most `size`
//               buffer descriptors per chain (§2.7.5.3.1), which also bounds loops;
//               indirect only if negotiated, never nested, never with NEXT, table
//               length a non-zero multiple of 16 and fully mapped, at most
//               min(size, len/16) entries walked in it; readable buffers before
//               writable ones (§2.7.4.2); total bytes <= max_chain_bytes (§2.7.5.2);
//               every buffer fully mapped with the access it grants. Zero-length
//               buffers are accepted and dropped.
// Each descriptor is copied once from guest memory and only the copy is inspected.
// Any violation is returned as an error; the caller stops the queue.
//
// Memory ordering: an acquire fence after reading avail idx (the driver's release in
// §2.7.13 step 4); the used element is written before a release fence and the used
// idx (§2.7.8.2); a full fence separates publishing used idx or avail_event from
// reading the driver's suppression fields (§2.7.7, §2.7.10), so no notification is
// lost in either direction.
#pragma once

#include <cstdint>
#include <optional>

#include "base/error.h"
#include "virtio/descriptor_chain.h"
#include "virtio/guest_memory.h"
#include "virtio/ring_layout.h"

namespace vpci::virtio {

class SplitRing {
 public:
  // Validates the layout against guest memory as it is now.
  [[nodiscard]] static Result<SplitRing> create(const MemoryMap& memory, const QueueLayout& layout,
                                                const RingOptions& options);
  // The three areas of `layout` are aligned (§2.7.1) and mapped in `memory` now.
  [[nodiscard]] static Status check_areas(const MemoryMap& memory, const QueueLayout& layout);

  // Fills `chain` (empty on entry) with the next available chain and returns true, or
  // returns false when the driver has made none available. (An out-parameter, so the
  // chain's inline buffer lists are built in place rather than moved through results.)
  // When the ring is empty and EVENT_IDX is negotiated, publishes avail_event so the
  // driver notifies for the next buffer (§2.7.10.2) and re-checks once.
  [[nodiscard]] Result<bool> pop(const MemoryMap& memory, ChainDescriptors& chain);
  // Appends {id, length} to the used ring and publishes the new used idx — unless
  // `publish` is false, when the entry stays invisible until publish_used().
  Status push_used(const MemoryMap& memory, std::uint16_t id, std::uint32_t length,
                   bool publish = true);
  // Offers the most recently popped chain again (Virtqueue: DescriptorChain::return_to_ring).
  void unpop() { --next_avail_; }
  // Publishes the used idx over every entry pushed so far (one store, §2.7.8.2).
  Status publish_used(const MemoryMap& memory);
  // Whether the driver wants a used buffer notification for the entries pushed since
  // the last call (§2.7.7.2).
  [[nodiscard]] Result<bool> needs_notification(const MemoryMap& memory);
  // Polling (the device looks at the ring itself): `suppress` asks the driver not to
  // notify — VIRTQ_USED_F_NO_NOTIFY, or with EVENT_IDX an avail_event one entry behind
  // (§2.7.10: the driver then notifies only after 65535 more buffers) — and an empty
  // pop() no longer asks for a notification. Lifting it asks again (flags 0, or
  // avail_event = next_avail) with a full fence; the caller must then look at the ring
  // once more, since the driver may have added a buffer before it saw the request.
  Status set_notifications_suppressed(const MemoryMap& memory, bool suppress);
  [[nodiscard]] bool notifications_suppressed() const { return suppressed_; }

  [[nodiscard]] const QueueLayout& layout() const { return layout_; }
  [[nodiscard]] std::uint16_t next_avail() const { return next_avail_; }
  [[nodiscard]] std::uint16_t next_used() const { return next_used_; }
  // True once entries were pushed since the last needs_notification() (which then has
  // something to decide).
  [[nodiscard]] bool used_since_check() const { return used_since_check_ != 0; }

 private:
  SplitRing(const QueueLayout& layout, const RingOptions& options)
      : layout_(layout), options_(options) {}

  [[nodiscard]] Result<std::uint16_t> read_avail_idx(const MemoryMap& memory) const;
  // Writes avail_event (EVENT_IDX: the driver notifies when it fills entry `event`),
  // remembers it, then a full fence.
  Status publish_avail_event(const MemoryMap& memory, std::uint16_t event);
  [[nodiscard]] Status walk_chain(const MemoryMap& memory, std::uint16_t head,
                                  ChainDescriptors& chain) const;

  QueueLayout layout_;
  RingOptions options_;
  std::uint16_t next_avail_ = 0;      // the device's last_avail_idx
  std::uint16_t known_avail_ = 0;     // last avail idx read from the driver
  std::uint16_t next_used_ = 0;       // the used idx the device publishes
  std::uint16_t published_used_ = 0;  // the used idx the driver can see
  std::uint16_t checked_used_ = 0;    // used idx at the last needs_notification()
  std::uint32_t used_since_check_ = 0;
  // The avail_event the device last wrote (EVENT_IDX), to skip rewriting the same value.
  bool avail_event_published_ = false;
  std::uint16_t published_avail_event_ = 0;
  bool suppressed_ = false;  // set_notifications_suppressed
};

}  // namespace vpci::virtio
