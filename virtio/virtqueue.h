// One virtqueue, device side: its driver-programmed configuration (the queue_* fields
// of virtio 1.3 §4.1.4.3), the split or packed ring engine chosen at enable time, and
// the device-facing operations `pop()` / `DescriptorChain::complete()` /
// `notify_driver_if_needed()`.
//
// A guest-caused violation (malformed ring, chain, or — through `fail()` — a device
// request) stops the queue: it records the error, stops popping and completing, and
// tells its `QueueEventSink`, which for a `DeviceCore` sets DEVICE_NEEDS_RESET and
// sends a configuration change notification (§2.1.2). Nothing is ever read or written
// outside guest memory, and nothing asserts.
//
// Threading: a Virtqueue and its chains belong to one thread at a time (the
// transport's, for synchronous devices). `reset()` bumps an epoch so chains still in
// flight complete harmlessly into nothing.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <variant>

#include "base/error.h"
#include "virtio/descriptor_chain.h"
#include "virtio/guest_memory.h"
#include "virtio/packed_ring.h"
#include "virtio/ring_layout.h"
#include "virtio/split_ring.h"

namespace vpci::virtio {

class QueueEventSink {
 public:
  // Entries were added to the used ring and the driver asked to be told.
  virtual void used_buffer_notification(std::uint16_t queue) = 0;
  // `used` entries were added since the queue's last notification check: true holds the
  // check back (interrupt coalescing, virtio/interrupt_coalescer.h); the sink then calls
  // Virtqueue::check_held_notification() itself later.
  virtual bool hold_notification_check(std::uint16_t queue, std::uint64_t used) {
    (void)queue;
    (void)used;
    return false;
  }
  // The queue stopped because of `error`.
  virtual void queue_failed(std::uint16_t queue, const Error& error) = 0;

 protected:
  ~QueueEventSink() = default;
};

struct QueueStats {
  std::uint64_t popped = 0;
  std::uint64_t completed = 0;
  std::uint64_t abandoned = 0;      // chains destroyed without complete()/fail()
  std::uint64_t stale = 0;          // completions dropped: the queue was reset meanwhile
  std::uint64_t notifications = 0;  // used buffer notifications requested
};

class Virtqueue {
 public:
  Virtqueue(std::uint16_t index, std::uint16_t max_size);
  Virtqueue(const Virtqueue&) = delete;
  Virtqueue& operator=(const Virtqueue&) = delete;

  [[nodiscard]] std::uint16_t index() const { return index_; }
  [[nodiscard]] std::uint16_t max_size() const { return max_size_; }
  [[nodiscard]] std::uint16_t size() const { return layout_.size; }
  [[nodiscard]] const QueueLayout& layout() const { return layout_; }
  [[nodiscard]] bool enabled() const { return enabled_; }
  [[nodiscard]] bool failed() const { return error_.has_value(); }
  [[nodiscard]] const std::optional<Error>& error() const { return error_; }
  [[nodiscard]] RingFormat format() const { return format_; }
  [[nodiscard]] const QueueStats& stats() const { return stats_; }
  // Ring engines, for tests and diagnostics; null unless enabled with that format.
  [[nodiscard]] const SplitRing* split_ring() const { return std::get_if<SplitRing>(&ring_); }
  [[nodiscard]] const PackedRing* packed_ring() const { return std::get_if<PackedRing>(&ring_); }

  // ---- configuration (refused while enabled) ----------------------------------------
  // 1..max_size; the format-specific rule (power of two for split) is checked at enable.
  Status set_size(std::uint16_t size);
  Status set_desc_address(GuestAddress address);
  Status set_driver_address(GuestAddress address);
  Status set_device_address(GuestAddress address);
  Status set_layout(const QueueLayout& layout);

  // Validates the layout against `memory` and starts the ring (indices at their
  // initial values). On failure the queue stays disabled, records the error and
  // reports it to `sink` like any other violation.
  Status enable(std::shared_ptr<GuestMemory> memory, RingFormat format, const RingOptions& options,
                QueueEventSink* sink);
  // Back to the reset state (§2.6.1.1.1): disabled, size = max, addresses 0, ring state
  // and error cleared. Chains popped before are ignored when completed.
  void reset();

  // The enabled queue's rings lie in guest memory as mapped now. A speculative look (the
  // poller's, with no notification asking for it) checks this first: QEMU unmaps and
  // remaps guest RAM while its firmware reprograms memory (PAM, SMRAM), and a look that
  // lands in that gap must skip the queue, not fail it.
  [[nodiscard]] bool rings_mapped() const;

  // ---- device side ---------------------------------------------------------------
  // The next available chain, or nullopt if none is available, the queue is not
  // running, or the ring is malformed (the queue is then failed).
  [[nodiscard]] std::optional<DescriptorChain> pop();
  // Sends a used buffer notification if entries were used since the last call and the
  // driver's suppression settings ask for one — unless the sink holds the check back.
  void notify_driver_if_needed();
  // The same check, now: what a held-back check runs when its time comes. That moment
  // is nobody's choice, so rings momentarily unmapped (see rings_mapped) do not fail the
  // queue: the driver is notified without being asked — a spurious notification is
  // harmless (§2.7.10), a missing one hangs the driver.
  void check_held_notification();
  // Between begin_used_batch() and end_used_batch(), completed chains are written to the
  // used ring but become visible to the driver only at the end, all together: a
  // virtio-net packet merged over several buffers (§5.1.6.4.2) must never be seen in
  // part. Batches do not nest; a reset drops an open one.
  // Polling (DeviceCore's poll window): asks the driver not to notify, or asks again
  // (SplitRing::set_notifications_suppressed). After lifting suppression the caller
  // must look at the ring once more before it stops polling.
  void set_notifications_suppressed(bool suppress);
  void begin_used_batch() { used_batch_ = true; }
  void end_used_batch();
  // Stops the queue because of a violation the device detected.
  void fail(Error error);

 private:
  friend class DescriptorChain;
  // `memory` is the snapshot the chain was popped with (and still holds): the used
  // entry is written through it rather than through a fresh snapshot per completion.
  void complete_chain(std::uint64_t epoch, const ChainDescriptors& chain, const MemoryMap& memory,
                      std::uint32_t used_length);
  void fail_chain(std::uint64_t epoch, Error error);
  void unpop_chain(std::uint64_t epoch, const ChainDescriptors& chain);
  void abandon_chain(std::uint64_t epoch, const ChainDescriptors& chain, const MemoryMap& memory);
  [[nodiscard]] bool running() const { return enabled_ && !error_.has_value(); }
  [[nodiscard]] bool used_since_check() const;
  void check_notification();

  const std::uint16_t index_;
  const std::uint16_t max_size_;
  QueueLayout layout_;
  bool enabled_ = false;
  RingFormat format_ = RingFormat::kSplit;
  std::optional<Error> error_;
  std::uint64_t epoch_ = 0;
  std::shared_ptr<GuestMemory> memory_;
  QueueEventSink* sink_ = nullptr;
  std::variant<std::monostate, SplitRing, PackedRing> ring_;
  QueueStats stats_;
  std::uint64_t completed_at_check_ = 0;  // stats_.completed at the last notification check
  bool used_batch_ = false;
};

}  // namespace vpci::virtio
