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
// With an idle look (`idle_look` > 0) the device cannot count on notifications at all: a
// vfio-user client that maps the notification area (VirtioPciOptions::notify_mappable)
// turns the driver's doorbell writes into plain memory writes nobody is told of. Then
// every queue handed to watch() stays watched until a reset: notifications stay
// suppressed, a closed window becomes an idle look every `idle_look`, and a look that
// finds buffers opens the window again. A buffer then waits at most `idle_look`; an idle
// device costs one timer wake-up per `idle_look`, and once a queue has been idle for
// `backoff_after` it is looked at every kIdleBackoffFactor x `idle_look` instead: a
// long-idle device costs a quarter (measured: ~3% of a core at one look per millisecond,
// docs/PERFORMANCE.md), and only the first request after such a pause waits longer.
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

  static constexpr int kIdleBackoffFactor = 4;
  static constexpr std::chrono::milliseconds kDefaultBackoffAfter{1000};

  QueuePoller(std::chrono::microseconds window, std::chrono::microseconds idle_look, Serve serve,
              std::chrono::milliseconds backoff_after = kDefaultBackoffAfter)
      : window_(window),
        idle_look_(idle_look),
        backoff_after_(backoff_after),
        serve_(std::move(serve)) {}
  ~QueuePoller() { stop(); }
  QueuePoller(const QueuePoller&) = delete;
  QueuePoller& operator=(const QueuePoller&) = delete;

  [[nodiscard]] bool enabled() const {
    return (window_.count() > 0 || watching()) && loop_ != nullptr;
  }
  // Notifications may never arrive: queues are watched, not woken (see above).
  [[nodiscard]] bool watching() const { return idle_look_.count() > 0; }
  void set_event_loop(EventLoop* loop) {
    stop();
    loop_ = loop;
  }
  // `queue` was just served: opens its window (suppressing notifications) or, if it found
  // buffers since the last look, extends it.
  void served(Virtqueue& queue);
  // With an idle look: `queue` (enabled while the driver is running) is looked at from now
  // on without any notification. Does nothing otherwise. Called inside a register access
  // (DRIVER_OK, queue_enable), so it touches no guest memory: with message-based DMA a
  // guest memory access there would wait for a client that waits for this access's
  // reply; the first look, from the loop, asks for the suppression.
  void watch(Virtqueue& queue);
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
    // Watched with nothing found for a whole window: looked at again at next_look.
    bool idle = false;
    EventLoop::Clock::time_point idle_since;
    EventLoop::Clock::time_point next_look;
    // The driver was asked not to notify (a write to guest memory: see watch()).
    bool suppressed = false;
  };
  // Opens `queue`'s window if it has none and returns it; with `suppress`, asks the
  // driver not to notify at once.
  Window& open(Virtqueue& queue, EventLoop::Clock::time_point now, bool suppress);
  // Arms the timer for the next look: at once while a window is open, else at the
  // earliest idle look (re-arming earlier when a window opens meanwhile).
  void arm();
  void tick();
  // When an idle window looks next: every idle_look_, slower after backoff_after_.
  [[nodiscard]] EventLoop::Clock::time_point next_idle_look(const Window& window,
                                                            EventLoop::Clock::time_point now) const;

  std::chrono::microseconds window_;
  std::chrono::microseconds idle_look_;
  std::chrono::milliseconds backoff_after_;
  Serve serve_;
  EventLoop* loop_ = nullptr;
  std::map<std::uint16_t, Window> windows_;
  std::map<std::uint16_t, std::uint64_t> popped_seen_;  // per queue, at the last served()
  std::optional<EventLoop::SourceId> timer_;
  EventLoop::Clock::time_point timer_due_;
  std::uint64_t polls_ = 0;
};

}  // namespace vpci::virtio
