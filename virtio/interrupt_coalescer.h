// Interrupt coalescing (issue 19, "interrupt coalescing knobs"): a device may send a used
// buffer notification later than the moment it could (virtio 1.3 §2.7.10, §2.8.10: the
// driver's suppression says when the device may skip one, never how soon it must send
// it), so several completions can share one interrupt. The host-side counterpart of
// virtio-net's driver-controlled VIRTIO_NET_F_NOTF_COAL (§5.1.6.5.6) and of ethtool's
// rx-usecs / rx-frames on a NIC.
//
// What is held back is the queue's notification *check*, not its result: the ring
// compares the driver's used_event (or flags) with everything used since its last check
// (split: vring_need_event over the whole range, §2.7.10.1; packed: the event offset
// against every slot written), so a notification the driver asked for at any point of the
// batch is still sent, and one it suppressed stays suppressed. A queue's check waits until
// `max_batch` buffers were used since the last check, or `max_delay` after the first of
// them, whichever comes first. tests/model/interrupt.pml model-checks this with spin. A
// held check runs at a moment nobody chose, and QEMU unmaps guest RAM for a moment while
// SeaBIOS (a virtio-blk driver too) reprograms PAM: then it notifies rather than fails
// (Virtqueue::check_held_notification).
//
// Threading: the device's event loop only (DeviceCore's callers).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>

#include "base/event_loop.h"

namespace vpci::virtio {

struct CoalescingLimits {
  std::chrono::microseconds max_delay{0};  // 0: off (every check at once)
  std::uint32_t max_batch = 0;             // 0: no count limit, only the delay
};

class InterruptCoalescer {
 public:
  explicit InterruptCoalescer(CoalescingLimits limits) : limits_(limits) {}
  ~InterruptCoalescer() { cancel_all(); }
  InterruptCoalescer(const InterruptCoalescer&) = delete;
  InterruptCoalescer& operator=(const InterruptCoalescer&) = delete;

  [[nodiscard]] bool enabled() const { return limits_.max_delay.count() > 0 && loop_ != nullptr; }
  void set_event_loop(EventLoop* loop) {
    cancel_all();
    loop_ = loop;
  }
  // `used` buffers were used on `queue` since its last notification check. Returns true
  // if the check is held back: `check` then runs from the loop within max_delay (once,
  // unless cancelled). False: check now (coalescing off, the batch is full — any pending
  // timer is dropped — or the timer could not be armed).
  [[nodiscard]] bool hold(std::uint16_t queue, std::uint64_t used, std::function<void()> check);
  // Drops a held check (the queue was reset or the device is going away).
  void cancel(std::uint16_t queue);
  void cancel_all();

  // Queues with a held check now.
  [[nodiscard]] std::size_t pending() const { return timers_.size(); }
  // Checks held back, and checks sent early because the batch was full.
  [[nodiscard]] std::uint64_t held() const { return held_; }
  [[nodiscard]] std::uint64_t batch_flushes() const { return batch_flushes_; }

 private:
  CoalescingLimits limits_;
  EventLoop* loop_ = nullptr;
  std::map<std::uint16_t, EventLoop::SourceId> timers_;  // queues with a held check
  std::uint64_t held_ = 0;
  std::uint64_t batch_flushes_ = 0;
};

}  // namespace vpci::virtio
