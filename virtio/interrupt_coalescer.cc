#include "virtio/interrupt_coalescer.h"

namespace vpci::virtio {

bool InterruptCoalescer::hold(std::uint16_t queue, std::uint64_t used,
                              std::function<void()> check) {
  if (!enabled()) return false;
  if (limits_.max_batch != 0 && used >= limits_.max_batch) {
    if (timers_.contains(queue)) ++batch_flushes_;
    cancel(queue);
    return false;
  }
  if (timers_.contains(queue)) return true;  // the armed timer covers these buffers too
  auto timer = loop_->add_timer(limits_.max_delay, [this, queue, check = std::move(check)] {
    timers_.erase(queue);
    check();
  });
  if (!timer) return false;  // no timer: never hold a notification we cannot send later
  timers_.emplace(queue, *timer);
  ++held_;
  return true;
}

void InterruptCoalescer::cancel(std::uint16_t queue) {
  const auto it = timers_.find(queue);
  if (it == timers_.end()) return;
  if (loop_ != nullptr) loop_->cancel_timer(it->second);
  timers_.erase(it);
}

void InterruptCoalescer::cancel_all() {
  if (loop_ != nullptr) {
    for (const auto& [queue, timer] : timers_) loop_->cancel_timer(timer);
  }
  timers_.clear();
}

}  // namespace vpci::virtio
