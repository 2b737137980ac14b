#include "base/event_loop.h"

#include <unistd.h>

#include <atomic>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <sys/eventfd.h>

namespace vpci {
namespace {

using namespace std::chrono_literals;

std::unique_ptr<EventLoop> make_loop() {
  auto loop = EventLoop::create();
  EXPECT_TRUE(loop.has_value());
  return std::move(*loop);
}

void signal(int fd) {
  const std::uint64_t one = 1;
  ASSERT_EQ(::write(fd, &one, sizeof(one)), static_cast<ssize_t>(sizeof(one)));
}

TEST(EventLoop, ReadyFdRunsItsHandlerWithTheEvents) {
  auto loop = make_loop();
  const int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  std::uint32_t seen = 0;
  auto id = loop->add_fd(fd, EPOLLIN, [&](std::uint32_t events) {
    seen = events;
    std::uint64_t value = 0;
    ASSERT_EQ(::read(fd, &value, sizeof(value)), static_cast<ssize_t>(sizeof(value)));
  });
  ASSERT_TRUE(id);
  ASSERT_TRUE(loop->run_once(0ms));
  EXPECT_EQ(seen, 0u);  // nothing ready yet
  signal(fd);
  ASSERT_TRUE(loop->run_once(1000ms));
  EXPECT_EQ(seen & EPOLLIN, static_cast<std::uint32_t>(EPOLLIN));
  loop->remove_fd(*id);
  EXPECT_EQ(loop->source_count(), 0u);
  ::close(fd);
}

// A handler that removes another ready source: that source's callback must not run in
// the same iteration (its owner may already be gone).
TEST(EventLoop, SourceRemovedByAnEarlierCallbackDoesNotRun) {
  auto loop = make_loop();
  const int a = ::eventfd(1, EFD_CLOEXEC | EFD_NONBLOCK);
  const int b = ::eventfd(1, EFD_CLOEXEC | EFD_NONBLOCK);
  EventLoop::SourceId id_a = 0, id_b = 0;
  int calls = 0;
  id_a = *loop->add_fd(a, EPOLLIN, [&](std::uint32_t) {
    ++calls;
    loop->remove_fd(id_a);
    loop->remove_fd(id_b);
  });
  id_b = *loop->add_fd(b, EPOLLIN, [&](std::uint32_t) {
    ++calls;
    loop->remove_fd(id_a);
    loop->remove_fd(id_b);
  });
  ASSERT_TRUE(loop->run_once(1000ms));
  EXPECT_EQ(calls, 1);
  ::close(a);
  ::close(b);
}

TEST(EventLoop, TimersFireInDeadlineOrderAndCancelledOnesNever) {
  auto loop = make_loop();
  std::vector<int> order;
  loop->add_timer(30ms, [&] { order.push_back(3); });
  loop->add_timer(10ms, [&] { order.push_back(1); });
  const auto cancelled = *loop->add_timer(20ms, [&] { order.push_back(2); });
  loop->add_timer(40ms, [&] { loop->stop(); });
  loop->cancel_timer(cancelled);
  loop->run();
  EXPECT_EQ(order, (std::vector<int>{1, 3}));
  EXPECT_EQ(loop->source_count(), 0u);
}

TEST(EventLoop, PostFromAnotherThreadWakesTheLoopAndStopEndsIt) {
  auto loop = make_loop();
  std::atomic<bool> ran_on_loop{false};
  std::thread runner([&] { loop->run(); });
  std::thread poster([&] {
    loop->post([&] { ran_on_loop = loop->in_loop_thread(); });
    loop->stop();
  });
  poster.join();
  runner.join();  // would hang if post or stop did not wake the loop
  EXPECT_TRUE(ran_on_loop);
}

TEST(EventLoop, DeferredWorkRunsAfterTheCurrentCallbackInOrder) {
  auto loop = make_loop();
  std::vector<int> order;
  loop->post([&] {
    loop->defer([&] {
      order.push_back(2);
      loop->defer([&] { order.push_back(3); });
    });
    order.push_back(1);
  });
  ASSERT_TRUE(loop->run_once(1000ms));
  EXPECT_EQ(order, (std::vector<int>{1, 2, 3}));
}

TEST(EventLoop, ModifyingAnUnknownSourceIsAnError) {
  auto loop = make_loop();
  EXPECT_EQ(loop->modify_fd(42, EPOLLIN).error().code, ErrorCode::kNotFound);
  EXPECT_FALSE(loop->add_fd(-1, EPOLLIN, [](std::uint32_t) {}));
}

}  // namespace
}  // namespace vpci
