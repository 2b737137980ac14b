#include "base/event_loop.h"

#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <limits>

#include <sys/eventfd.h>
#include <sys/timerfd.h>

namespace vpci {
namespace {

// epoll_event.data.u64 of the loop's own descriptors; fd sources use their SourceId
// (from 1 up, never these).
constexpr std::uint64_t kWakeTag = 0;
constexpr std::uint64_t kTimerTag = std::numeric_limits<std::uint64_t>::max();

Error errno_error(const char* what) {
  return Error{ErrorCode::kIoError, fmt::format("{}: {}", what, errno_text(errno))};
}

}  // namespace

Result<std::unique_ptr<EventLoop>> EventLoop::create() {
  const int epoll_fd = ::epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd < 0) return tl::unexpected(errno_error("epoll_create1"));
  const int wake_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  auto fail = [&](const char* what) {
    const Error error = errno_error(what);
    ::close(epoll_fd);
    if (wake_fd >= 0) ::close(wake_fd);
    return tl::unexpected(error);
  };
  if (wake_fd < 0) return fail("eventfd");
  epoll_event wake{};
  wake.events = EPOLLIN;
  wake.data.u64 = kWakeTag;
  if (::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, wake_fd, &wake) != 0) return fail("epoll_ctl");
  return std::unique_ptr<EventLoop>(new EventLoop(epoll_fd, wake_fd));
}

EventLoop::EventLoop(int epoll_fd, int wake_fd) : epoll_fd_(epoll_fd), wake_fd_(wake_fd) {}

EventLoop::~EventLoop() {
  if (timer_fd_ >= 0) ::close(timer_fd_);
  ::close(wake_fd_);
  ::close(epoll_fd_);
}

Result<EventLoop::SourceId> EventLoop::add_fd(int fd, std::uint32_t events, FdHandler handler) {
  const SourceId id = next_id_++;
  epoll_event event{};
  event.events = events;
  event.data.u64 = id;
  if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &event) != 0) {
    return tl::unexpected(errno_error("epoll_ctl(ADD)"));
  }
  fds_.emplace(id, std::make_shared<FdSource>(FdSource{fd, std::move(handler)}));
  return id;
}

Status EventLoop::modify_fd(SourceId id, std::uint32_t events) {
  const auto it = fds_.find(id);
  if (it == fds_.end()) return make_error(ErrorCode::kNotFound, "no event source {}", id);
  epoll_event event{};
  event.events = events;
  event.data.u64 = id;
  if (::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, it->second->fd, &event) != 0) {
    return tl::unexpected(errno_error("epoll_ctl(MOD)"));
  }
  return {};
}

void EventLoop::remove_fd(SourceId id) {
  const auto it = fds_.find(id);
  if (it == fds_.end()) return;
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, it->second->fd, nullptr);
  fds_.erase(it);  // a handler running right now keeps its own reference
}

Result<EventLoop::SourceId> EventLoop::add_timer(Clock::duration delay, Task task) {
  if (timer_fd_ < 0) {
    // Created with the first timer: a device without timers (most) costs two fds, which
    // matters at thousands of devices per process.
    const int fd = ::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    if (fd < 0) return tl::unexpected(errno_error("timerfd_create"));
    epoll_event timer{};
    timer.events = EPOLLIN;
    timer.data.u64 = kTimerTag;
    if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &timer) != 0) {
      const Error error = errno_error("epoll_ctl(ADD)");
      ::close(fd);
      return tl::unexpected(error);
    }
    timer_fd_ = fd;
  }
  const SourceId id = next_id_++;
  timers_.emplace(Clock::now() + delay, std::make_pair(id, std::move(task)));
  arm_timerfd();
  return id;
}

void EventLoop::cancel_timer(SourceId id) {
  for (auto it = timers_.begin(); it != timers_.end(); ++it) {
    if (it->second.first == id) {
      timers_.erase(it);
      arm_timerfd();
      return;
    }
  }
}

void EventLoop::arm_timerfd() {
  if (timer_fd_ < 0) return;
  itimerspec spec{};
  if (!timers_.empty()) {
    const auto wait = std::max(timers_.begin()->first - Clock::now(), Clock::duration(1));
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(wait).count();
    spec.it_value.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
    spec.it_value.tv_nsec = static_cast<long>(ns % 1'000'000'000);
  }
  ::timerfd_settime(timer_fd_, 0, &spec, nullptr);  // all zero disarms
}

void EventLoop::defer(Task task) {
  deferred_.push_back(std::move(task));
}

void EventLoop::post(Task task) {
  {
    MutexLock lock(posted_mutex_);
    posted_.push_back(std::move(task));
  }
  const std::uint64_t one = 1;
  // Fails only when the counter would overflow: the loop is awake anyway.
  [[maybe_unused]] const ssize_t n = ::write(wake_fd_, &one, sizeof(one));
}

void EventLoop::stop() {
  if (in_loop_thread()) {
    stopping_ = true;
    return;
  }
  post([this] { stopping_ = true; });
}

void EventLoop::run() {
  thread_.store(std::this_thread::get_id(), std::memory_order_release);
  stopping_ = false;
  while (!stopping_) {
    // An error here is EINTR or a broken epoll set; neither is helped by stopping.
    (void)run_once(std::chrono::milliseconds(-1));
  }
}

Status EventLoop::run_once(std::chrono::milliseconds timeout) {
  thread_.store(std::this_thread::get_id(), std::memory_order_release);
  std::array<epoll_event, 64> events{};
  const int ready = ::epoll_wait(epoll_fd_, events.data(), static_cast<int>(events.size()),
                                 static_cast<int>(timeout.count()));
  if (ready < 0) {
    if (errno == EINTR) return {};
    return tl::unexpected(errno_error("epoll_wait"));
  }
  for (int i = 0; i < ready && !stopping_; ++i) {
    const std::uint64_t tag = events[static_cast<std::size_t>(i)].data.u64;
    if (tag == kWakeTag) {
      std::uint64_t count = 0;
      [[maybe_unused]] const ssize_t n = ::read(wake_fd_, &count, sizeof(count));
      run_posted();
    } else if (tag == kTimerTag) {
      std::uint64_t expirations = 0;
      [[maybe_unused]] const ssize_t n = ::read(timer_fd_, &expirations, sizeof(expirations));
      run_timers();
    } else {
      const auto it = fds_.find(tag);
      if (it == fds_.end()) continue;  // removed by an earlier callback of this iteration
      const std::shared_ptr<FdSource> source = it->second;
      source->handler(events[static_cast<std::size_t>(i)].events);
    }
    run_deferred();
  }
  run_deferred();
  return {};
}

void EventLoop::run_timers() {
  const auto now = Clock::now();
  while (!timers_.empty() && timers_.begin()->first <= now && !stopping_) {
    Task task = std::move(timers_.begin()->second.second);
    timers_.erase(timers_.begin());
    task();
  }
  arm_timerfd();
}

void EventLoop::run_posted() {
  std::vector<Task> tasks;
  {
    MutexLock lock(posted_mutex_);
    tasks.swap(posted_);
  }
  for (Task& task : tasks) task();
}

void EventLoop::run_deferred() {
  while (!deferred_.empty()) {
    std::vector<Task> tasks;
    tasks.swap(deferred_);
    for (Task& task : tasks) task();
  }
}

}  // namespace vpci
