// The event loop a served device runs on (ARCHITECTURE.md, "Threads and the event loop").
//
// One thread runs one loop; everything the device does happens inside one of the loop's
// callbacks, one at a time, so device state needs no locks: the vfio-user connection is
// one source, a back end registers its fds (a tap, an io_uring completion eventfd), its
// timers and deferred work; other threads hand work over with post(), which wakes the
// loop through an eventfd.
//
// Why our own: it is the field's convention for device servers (crosvm, cloud-hypervisor
// and SPDK each keep a small epoll loop of their own) and it is small — epoll for fds, one
// timerfd for every timer (created with the first), one eventfd for wake-ups; sd-event or libuv
// would add a dependency and a second callback style for the same three things.
//
// Threading: post() and stop() are thread-safe; everything else must be called on the
// loop's thread (from inside a callback) or before run() starts. Callbacks may add and
// remove sources, including their own.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <thread>
#include <unordered_map>
#include <vector>

#include <sys/epoll.h>

#include "base/error.h"
#include "base/thread_annotations.h"

namespace vpci {

class EventLoop {
 public:
  using Clock = std::chrono::steady_clock;
  using Task = std::function<void()>;
  // Called with the epoll events that fired (EPOLLIN, EPOLLOUT, EPOLLHUP, EPOLLERR...).
  using FdHandler = std::function<void(std::uint32_t events)>;
  using SourceId = std::uint64_t;

  static Result<std::unique_ptr<EventLoop>> create();
  ~EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  // Watches `fd` (not owned; remove it before closing it) for `events`.
  Result<SourceId> add_fd(int fd, std::uint32_t events, FdHandler handler);
  Status modify_fd(SourceId id, std::uint32_t events);
  // No callback for `id` runs after this returns, even one already reported ready in
  // the current iteration.
  void remove_fd(SourceId id);

  // Runs `task` once, `delay` from now; cancel_timer before it fires drops it.
  Result<SourceId> add_timer(Clock::duration delay, Task task);
  void cancel_timer(SourceId id);
  // Runs `task` after the current callback, before the loop waits again.
  void defer(Task task);

  // Thread-safe: runs `task` on the loop thread soon.
  void post(Task task) VPCI_EXCLUDES(posted_mutex_);
  // Thread-safe: run() returns once the current callback is done.
  void stop();

  // Runs callbacks on the calling thread until stop().
  void run();
  // One iteration: waits at most `timeout` (0: just polls) for sources, runs everything
  // ready, then deferred work. For tests and for loops embedded in another one.
  Status run_once(std::chrono::milliseconds timeout);

  // Thread-safe: stop() asks it from any thread while run() records its own.
  [[nodiscard]] bool in_loop_thread() const {
    return std::this_thread::get_id() == thread_.load(std::memory_order_acquire);
  }
  // Sources currently registered (fds and timers), for tests and stats.
  [[nodiscard]] std::size_t source_count() const { return fds_.size() + timers_.size(); }

 private:
  EventLoop(int epoll_fd, int wake_fd);
  void arm_timerfd();
  void run_timers();
  void run_posted() VPCI_EXCLUDES(posted_mutex_);
  void run_deferred();

  struct FdSource {
    int fd;
    FdHandler handler;
  };

  int epoll_fd_;
  int wake_fd_;
  int timer_fd_ = -1;  // created with the first timer
  std::atomic<std::thread::id> thread_{};
  bool stopping_ = false;  // loop thread; stop() from elsewhere goes through post()
  SourceId next_id_ = 1;
  std::unordered_map<SourceId, std::shared_ptr<FdSource>> fds_;
  std::multimap<Clock::time_point, std::pair<SourceId, Task>> timers_;
  std::vector<Task> deferred_;
  Mutex posted_mutex_;
  std::vector<Task> posted_ VPCI_GUARDED_BY(posted_mutex_);
};

}  // namespace vpci
