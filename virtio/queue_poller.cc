#include "virtio/queue_poller.h"

#include <vector>

namespace vpci::virtio {

void QueuePoller::served(Virtqueue& queue) {
  if (!enabled() || !queue.enabled() || queue.failed()) return;
  const auto now = EventLoop::Clock::now();
  // Only a look that found buffers opens a window: a spurious doorbell, or the last look
  // after a window closed, leaves the queue asleep.
  std::uint64_t& seen = popped_seen_[queue.index()];
  const bool found = queue.stats().popped != seen;
  seen = queue.stats().popped;
  if (!found && !windows_.contains(queue.index())) return;
  auto [it, opened] = windows_.try_emplace(queue.index());
  Window& window = it->second;
  if (opened) {
    window.queue = &queue;
    window.popped = queue.stats().popped;
    window.deadline = now + window_;
    queue.set_notifications_suppressed(true);
  } else if (queue.stats().popped != window.popped) {
    window.popped = queue.stats().popped;
    window.deadline = now + window_;  // adaptive: activity keeps the window open
  }
  arm();
}

void QueuePoller::stop() {
  if (timer_ && loop_ != nullptr) loop_->cancel_timer(*timer_);
  timer_.reset();
  windows_.clear();
  popped_seen_.clear();
}

void QueuePoller::arm() {
  if (timer_ || windows_.empty() || loop_ == nullptr) return;
  // A zero-delay timer: the loop still waits on its fds (a doorbell, a DMA reply, a tap)
  // between looks, so polling never starves the rest of the device.
  auto added = loop_->add_timer(EventLoop::Clock::duration::zero(), [this] { tick(); });
  if (added) timer_ = *added;
}

void QueuePoller::tick() {
  timer_.reset();
  std::vector<std::uint16_t> indices;
  for (const auto& [index, window] : windows_) indices.push_back(index);
  for (const std::uint16_t index : indices) {
    auto it = windows_.find(index);
    if (it == windows_.end()) continue;  // closed by a reset inside an earlier serve
    Virtqueue& queue = *it->second.queue;
    if (!queue.enabled() || queue.failed()) {
      windows_.erase(it);
      continue;
    }
    ++polls_;
    serve_(queue);  // may extend the window through served()
    it = windows_.find(index);
    if (it == windows_.end() || EventLoop::Clock::now() < it->second.deadline) continue;
    // The window is over: ask for notifications, then look once more — the driver may
    // have added a buffer while it still saw the suppression.
    queue.set_notifications_suppressed(false);
    windows_.erase(it);
    serve_(queue);  // reopens the window through served() if it found something
  }
  arm();
}

}  // namespace vpci::virtio
