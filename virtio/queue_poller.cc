#include "virtio/queue_poller.h"

#include <algorithm>
#include <vector>

namespace vpci::virtio {

QueuePoller::Window& QueuePoller::open(Virtqueue& queue, EventLoop::Clock::time_point now,
                                       bool suppress) {
  auto [it, opened] = windows_.try_emplace(queue.index());
  Window& window = it->second;
  if (opened) {
    window.queue = &queue;
    window.popped = queue.stats().popped;
    window.deadline = now + window_;
  }
  if (suppress && !window.suppressed) {
    queue.set_notifications_suppressed(true);
    window.suppressed = true;
  }
  return window;
}

void QueuePoller::served(Virtqueue& queue) {
  if (!enabled() || !queue.enabled() || queue.failed()) return;
  const auto now = EventLoop::Clock::now();
  // Only a look that found buffers opens a window: a spurious doorbell, or the last look
  // after a window closed, leaves the queue asleep.
  std::uint64_t& seen = popped_seen_[queue.index()];
  const bool found = queue.stats().popped != seen;
  seen = queue.stats().popped;
  if (!found && !windows_.contains(queue.index())) return;
  Window& window = open(queue, now, true);
  if (queue.stats().popped != window.popped) {
    window.popped = queue.stats().popped;
    window.deadline = now + window_;  // adaptive: activity keeps the window open
    window.idle = false;              // a watched queue found work: poll it again
  }
  arm();
}

void QueuePoller::watch(Virtqueue& queue) {
  if (!watching() || loop_ == nullptr || !queue.enabled() || queue.failed()) return;
  // A new window polls at once and through its length (buffers may be waiting already),
  // then idles; a queue already watched keeps its state.
  open(queue, EventLoop::Clock::now(), false);
  arm();
}

void QueuePoller::stop() {
  if (timer_ && loop_ != nullptr) loop_->cancel_timer(*timer_);
  timer_.reset();
  windows_.clear();
  popped_seen_.clear();
}

void QueuePoller::arm() {
  if (windows_.empty() || loop_ == nullptr) return;
  const auto now = EventLoop::Clock::now();
  auto due = EventLoop::Clock::time_point::max();
  for (const auto& [index, window] : windows_)
    due = std::min(due, window.idle ? window.next_look : now);
  if (timer_) {
    if (timer_due_ <= due) return;
    loop_->cancel_timer(*timer_);  // a window opened before the idle look was due
    timer_.reset();
  }
  // While a window is open, a zero-delay timer: the loop still waits on its fds (a
  // doorbell, a DMA reply, a tap) between looks, so polling never starves the rest of
  // the device.
  auto added =
      loop_->add_timer(std::max(due - now, EventLoop::Clock::duration::zero()), [this] { tick(); });
  if (added) {
    timer_ = *added;
    timer_due_ = due;
  }
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
    if (it->second.idle && EventLoop::Clock::now() < it->second.next_look) continue;
    if (!it->second.suppressed && queue.rings_mapped()) {  // a watched queue's first look
      queue.set_notifications_suppressed(true);
      it->second.suppressed = true;
    }
    ++polls_;
    serve_(queue);  // may extend the window through served()
    it = windows_.find(index);
    if (it == windows_.end()) continue;
    Window& window = it->second;
    const auto now = EventLoop::Clock::now();
    if (window.idle) {
      window.next_look = next_idle_look(window, now);  // nothing found (served() wakes it)
      continue;
    }
    if (now < window.deadline) continue;
    if (watching()) {
      // Nothing would deliver a notification: keep them suppressed and look now and then.
      window.idle = true;
      window.idle_since = now;
      window.next_look = now + idle_look_;
      continue;
    }
    // The window is over: ask for notifications, then look once more — the driver may
    // have added a buffer while it still saw the suppression.
    queue.set_notifications_suppressed(false);
    windows_.erase(it);
    serve_(queue);  // reopens the window through served() if it found something
  }
  arm();
}

EventLoop::Clock::time_point QueuePoller::next_idle_look(const Window& window,
                                                         EventLoop::Clock::time_point now) const {
  if (now - window.idle_since < backoff_after_) return now + idle_look_;
  return now + idle_look_ * kIdleBackoffFactor;
}

}  // namespace vpci::virtio
