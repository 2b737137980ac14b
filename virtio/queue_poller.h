// The poll window of a device's queues (issue 19, "notification suppression with adaptive
// polling"): once a queue has been served, the device asks the driver not to notify
// (VIRTQ_USED_F_NO_NOTIFY, an avail_event behind, or packed DISABLE: §2.7.10, §2.8.10)
// and looks at the ring itself, from its event loop, for `window` after the last buffer
// it found — so a busy driver stops paying a doorbell message per request. When the window
// passes with nothing new, it asks for notifications again and then looks at the ring one
// last time before it sleeps: a buffer the driver added before it saw the request would
// otherwise wait for ever (the lost wake-up; tests/model/notify.pml checks this order).
// An idle device costs nothing: no timer runs once every window is closed.
//
// Threading: the device's event loop only (DeviceCore's callers).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>

#include "base/event_loop.h"
#include "virtio/virtqueue.h"

namespace vpci::virtio {

class QueuePoller {
 public:
  // Serves a queue the way a notification would (DeviceCore::process).
  using Serve = std::function<void(Virtqueue& queue)>;

  QueuePoller(std::chrono::microseconds window, Serve serve)
      : window_(window), serve_(std::move(serve)) {}
  ~QueuePoller() { stop(); }
  QueuePoller(const QueuePoller&) = delete;
  QueuePoller& operator=(const QueuePoller&) = delete;

  [[nodiscard]] bool enabled() const { return window_.count() > 0 && loop_ != nullptr; }
  void set_event_loop(EventLoop* loop) {
    stop();
    loop_ = loop;
  }
  // `queue` was just served: opens its window (suppressing notifications) or, if it found
  // buffers since the last look, extends it.
  void served(Virtqueue& queue);
  // Closes every window without touching the rings (a device reset rewrites them).
  void stop();
  // Windows open now (for tests and --stats).
  [[nodiscard]] std::size_t open_windows() const { return windows_.size(); }
  // Looks at the rings taken while polling, and windows closed.
  [[nodiscard]] std::uint64_t polls() const { return polls_; }

 private:
  struct Window {
    Virtqueue* queue = nullptr;
    EventLoop::Clock::time_point deadline;
    std::uint64_t popped = 0;  // the queue's popped count at the last look
  };
  void arm();
  void tick();

  std::chrono::microseconds window_;
  Serve serve_;
  EventLoop* loop_ = nullptr;
  std::map<std::uint16_t, Window> windows_;
  std::map<std::uint16_t, std::uint64_t> popped_seen_;  // per queue, at the last served()
  std::optional<EventLoop::SourceId> timer_;
  std::uint64_t polls_ = 0;
};

}  // namespace vpci::virtio
