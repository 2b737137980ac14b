// The poll window (virtio/queue_poller.h, CoreOptions::poll_window): after a doorbell the
// device suppresses the driver's notifications (split: NO_NOTIFY, or with EVENT_IDX an
// avail_event one behind; packed: DISABLE), serves buffers added without a doorbell from
// its event loop, extends the window while it finds work, and when the window passes
// asks for notifications again — after which a buffer without a doorbell waits for one.
// With an idle look (CoreOptions::idle_poll, notify = "mapped") no doorbell is ever
// needed: every enabled queue is watched from DRIVER_OK until a reset.
#include <chrono>
#include <thread>

#include <gtest/gtest.h>

#include "base/event_loop.h"
#include "tests/virtio/core_on_loop.h"
#include "tests/virtio/fake_driver.h"
#include "virtio/device_core.h"

namespace vpci::virtio {
namespace {

using namespace std::chrono_literals;
using testing::ChainBuilder;
using testing::FakeGuestRam;
using testing::ModernSetup;
using testing::PackedRing;
using testing::RecordingInterrupts;
using testing::SinkDevice;
using testing::SplitRing;

constexpr auto kWindow = 30ms;

class QueuePollerTest : public testing::CoreOnLoopTest {
 protected:
  void bring_up(std::uint64_t features, bool packed,
                std::chrono::microseconds idle_poll = std::chrono::microseconds{0},
                std::chrono::milliseconds idle_backoff_after = QueuePoller::kDefaultBackoffAfter) {
    CoreOptions options;
    options.poll_window = kWindow;
    options.idle_poll = idle_poll;
    options.idle_backoff_after = idle_backoff_after;
    start(options, features, packed);
  }
  // Runs the loop until every window closed (at most a second: a look takes anything
  // from microseconds to a millisecond, so the bound is time, not looks).
  void run_until_asleep() {
    const auto end = std::chrono::steady_clock::now() + 1s;
    while (core->poller().open_windows() != 0 && std::chrono::steady_clock::now() < end) {
      ASSERT_TRUE(loop->run_once(1ms));
    }
    ASSERT_EQ(core->poller().open_windows(), 0u);
  }
};

TEST_F(QueuePollerTest, SplitRingWithoutEventIdxPollsUnderNoNotify) {
  bring_up(0, false);
  add(true);  // the doorbell serves it and opens the window
  EXPECT_EQ(used(), 1u);
  EXPECT_EQ(core->poller().open_windows(), 1u);
  EXPECT_EQ(from_le(ram.get<std::uint16_t>(split->layout().device)), kUsedFlagNoNotify);
  // Without a doorbell, the device finds the buffer itself inside the window.
  add(false);
  run_for(5ms);
  EXPECT_EQ(used(), 1u);
  // The window closes after kWindow without work: notifications wanted again.
  run_until_asleep();
  EXPECT_EQ(from_le(ram.get<std::uint16_t>(split->layout().device)), 0);
  // Asleep: a buffer without a doorbell waits; the doorbell serves it.
  add(false);
  run_for(5ms);
  EXPECT_EQ(used(), 0u);
  ASSERT_TRUE(core->notify(0));
  EXPECT_EQ(used(), 1u);
  EXPECT_GT(core->poller().polls(), 0u);
}

TEST_F(QueuePollerTest, EventIdxAvailEventStaysBehindWhilePolling) {
  bring_up(feature_bit(feature::kEventIdx), false);
  add(true);
  EXPECT_EQ(used(), 1u);
  const GuestAddress avail_event =
      split->layout().device + split_layout::avail_event_offset(split->size());
  // next_avail is 1: an avail_event of 0 means "notify after 65535 more buffers".
  EXPECT_EQ(from_le(ram.get<std::uint16_t>(avail_event)), 0);
  EXPECT_EQ(split->avail_event(), 0);
  run_until_asleep();
  EXPECT_EQ(from_le(ram.get<std::uint16_t>(avail_event)), 1) << "asks for entry 1 again";
}

TEST_F(QueuePollerTest, PackedRingDisablesAndReenables) {
  bring_up(feature_bit(feature::kRingPacked), true);
  add(true);
  EXPECT_EQ(used(), 1u);
  EXPECT_EQ(from_le(packed_ring->device_event().flags), ring_event::kDisable);
  add(false);
  run_for(5ms);
  EXPECT_EQ(used(), 1u);
  run_until_asleep();
  EXPECT_EQ(from_le(packed_ring->device_event().flags), ring_event::kEnable);
}

// Activity keeps the window open: buffers every 10 ms for 100 ms (more than three
// windows) are all served without a doorbell after the first.
TEST_F(QueuePollerTest, ActivityExtendsTheWindow) {
  bring_up(0, false);
  add(true);
  std::size_t served = used();
  for (int i = 0; i < 10; ++i) {
    add(false);
    run_for(10ms);
    served += used();
  }
  EXPECT_EQ(served, 11u);
  EXPECT_EQ(core->poller().open_windows(), 1u);
}

TEST_F(QueuePollerTest, ResetClosesEveryWindowAndOffIsOff) {
  bring_up(0, false);
  add(true);
  EXPECT_EQ(core->poller().open_windows(), 1u);
  core->reset();
  EXPECT_EQ(core->poller().open_windows(), 0u);
  // poll_window 0 (the default): no window, no suppression.
  CoreOptions options;
  core = std::make_unique<DeviceCore>(std::make_unique<SinkDevice>(), memory, &interrupts, options);
  core->set_event_loop(loop.get());
  ASSERT_TRUE(ModernSetup::initialise(*core, 0));
  split = std::make_unique<SplitRing>(ram, 8);
  ASSERT_TRUE(ModernSetup::enable_split(*core, 0, *split));
  ASSERT_TRUE(ModernSetup::driver_ok(*core));
  add(true);
  EXPECT_EQ(used(), 1u);
  EXPECT_EQ(core->poller().open_windows(), 0u);
  EXPECT_EQ(from_le(ram.get<std::uint16_t>(split->layout().device)), 0);
}

constexpr auto kIdleLook = 5ms;

// notify = "mapped": the driver's doorbells never reach the device, so from DRIVER_OK on
// it finds buffers by itself — inside the window and, after it, at its idle looks — and
// never asks for notifications.
TEST_F(QueuePollerTest, WatchedQueuesNeedNoDoorbell) {
  bring_up(0, false, kIdleLook);
  EXPECT_EQ(core->poller().open_windows(), 1u) << "watched from DRIVER_OK";
  run_for(kIdleLook);
  EXPECT_EQ(from_le(ram.get<std::uint16_t>(split->layout().device)), kUsedFlagNoNotify);
  add(false);
  run_for(kIdleLook * 4);
  EXPECT_EQ(used(), 1u) << "found without any doorbell";
  // Long after the window: still watched, still suppressed, and a new buffer is found
  // by an idle look.
  run_for(kWindow * 2);
  EXPECT_EQ(core->poller().open_windows(), 1u);
  EXPECT_EQ(from_le(ram.get<std::uint16_t>(split->layout().device)), kUsedFlagNoNotify);
  add(false);
  run_for(kIdleLook * 4);
  EXPECT_EQ(used(), 1u);
  // A reset stops the watch; the next driver brings it back at DRIVER_OK.
  core->reset();
  EXPECT_EQ(core->poller().open_windows(), 0u);
}

// Idle is not busy: with nothing to find, the device looks about once per idle look
// (a busy poll would look thousands of times in the same time).
TEST_F(QueuePollerTest, AnIdleWatchedQueueIsLookedAtOncePerIdleLook) {
  bring_up(feature_bit(feature::kRingPacked), true, kIdleLook);
  run_for(kWindow * 2);  // past the first window
  const std::uint64_t before = core->poller().polls();
  run_for(kIdleLook * 10);
  const std::uint64_t looks = core->poller().polls() - before;
  EXPECT_GE(looks, 1u);
  EXPECT_LE(looks, 20u);
  EXPECT_EQ(from_le(packed_ring->device_event().flags), ring_event::kDisable);
  add(false);
  run_for(kIdleLook * 4);
  EXPECT_EQ(used(), 1u);
}

// DRIVER_OK is a register access a vfio-user client may wait on: starting the watch
// there touches no guest memory; the first look, from the loop, asks for the suppression.
TEST_F(QueuePollerTest, StartingTheWatchWritesNothingInsideTheAccess) {
  bring_up(0, false, kIdleLook);
  EXPECT_EQ(core->poller().open_windows(), 1u);
  EXPECT_EQ(from_le(ram.get<std::uint16_t>(split->layout().device)), 0) << "written in DRIVER_OK";
  run_for(kIdleLook);
  EXPECT_EQ(from_le(ram.get<std::uint16_t>(split->layout().device)), kUsedFlagNoNotify);
}

// With guest memory reached only through messages (QEMU's default RAM) the device does
// not watch, poll or hold interrupt checks: every look would be a DMA_READ request at a
// moment of its own choosing, which QEMU cannot always answer (a poll window's look
// hung guest.serve's boot 3 in SeaBIOS; the vfio-user server then offers no mapped
// doorbells, so they arrive as messages and are served as notifications).
TEST_F(QueuePollerTest, WithGuestMemoryOnlyThroughMessagesTheDeviceDoesNotWatchOrPoll) {
  auto message_memory = std::make_shared<GuestMemory>();
  FakeGuestRam message_ram(message_memory, 0x40000, 1 << 20, testing::RamBacking::kMessages);
  CoreOptions options;
  options.idle_poll = kIdleLook;
  options.poll_window = kWindow;
  options.coalescing = {kWindow, 0};
  core = std::make_unique<DeviceCore>(std::make_unique<SinkDevice>(), message_memory, &interrupts,
                                      options);
  core->set_event_loop(loop.get());
  ASSERT_TRUE(ModernSetup::initialise(*core, 0));
  SplitRing ring(message_ram, 8);
  ASSERT_TRUE(ModernSetup::enable_split(*core, 0, ring));
  ASSERT_TRUE(ModernSetup::driver_ok(*core));
  run_for(kIdleLook * 2);  // DRIVER_OK's own look at the queue, deferred to the loop
  const std::uint64_t before = message_ram.message_accesses();
  run_for(kIdleLook * 4);
  EXPECT_EQ(core->poller().open_windows(), 0u);
  EXPECT_EQ(message_ram.message_accesses(), before) << "looked without being asked";
  ChainBuilder chain(message_ram);
  chain.readable({1});
  ring.add(chain);
  ASSERT_TRUE(core->notify(0));
  run_for(kIdleLook);  // served from the loop (message DMA), well inside kWindow
  EXPECT_TRUE(ring.pop_used().has_value());
  EXPECT_EQ(core->poller().open_windows(), 0u) << "opened a poll window";
  EXPECT_EQ(interrupts.queue_interrupts.size(), 1u) << "held the interrupt check";
  core.reset();
}

// QEMU unmaps and remaps guest RAM while its firmware reprograms memory; an idle look
// that lands in such a gap skips the queue instead of failing it (a look is not a
// notification: nothing asked the device to serve), and serves it once RAM is back.
TEST_F(QueuePollerTest, RingsUnmappedForAMomentAreSkippedNotFailed) {
  bring_up(0, false, kIdleLook);
  const MemoryRegionSpec spec = unmap_ram();
  run_for(kWindow + kIdleLook * 4);  // the window's looks and idle looks, all unmapped
  EXPECT_EQ(core->status() & status::kDeviceNeedsReset, 0) << "the device failed itself";
  ASSERT_TRUE(memory->add_region(spec));
  add(false);
  run_for(kIdleLook * 4);
  EXPECT_EQ(used(), 1u);
}

// A watched queue idle for longer than idle_backoff_after is looked at
// kIdleBackoffFactor times less often (an idle device's cost). Timers never fire early,
// so after the backoff no two looks are closer than 4 x kIdleLook; the bound checked is
// half of that, leaving room for the time between a look and the test seeing it.
TEST_F(QueuePollerTest, ALongIdleQueueIsLookedAtLessOften) {
  bring_up(0, false, kIdleLook, 50ms);
  run_for(kWindow + 100ms);  // the window, then idle looks past the backoff
  std::vector<std::chrono::steady_clock::time_point> looks;
  std::uint64_t polls = core->poller().polls();
  const auto end = std::chrono::steady_clock::now() + 200ms;
  while (std::chrono::steady_clock::now() < end) {
    ASSERT_TRUE(loop->run_once(1ms));
    if (core->poller().polls() != polls) {
      polls = core->poller().polls();
      looks.push_back(std::chrono::steady_clock::now());
    }
  }
  ASSERT_GE(looks.size(), 2u) << "the idle queue is still watched";
  for (std::size_t i = 1; i < looks.size(); ++i) {
    EXPECT_GE(looks[i] - looks[i - 1], kIdleLook * QueuePoller::kIdleBackoffFactor / 2);
  }
  add(false);  // work found by a (slow) look opens the window again: fast looks
  run_for(kIdleLook * QueuePoller::kIdleBackoffFactor * 2);
  EXPECT_EQ(used(), 1u);
}

// A queue enabled after DRIVER_OK (after a queue reset, VIRTIO_F_RING_RESET) is watched
// from its enable on.
TEST_F(QueuePollerTest, AQueueEnabledAfterDriverOkIsWatched) {
  bring_up(feature_bit(feature::kRingReset), false, kIdleLook);
  ASSERT_TRUE(core->reset_queue(0));
  run_for(kIdleLook * 4);
  EXPECT_EQ(core->poller().open_windows(), 0u) << "a disabled queue is dropped";
  split = std::make_unique<SplitRing>(ram, 8);
  ASSERT_TRUE(ModernSetup::enable_split(*core, 0, *split));
  EXPECT_EQ(core->poller().open_windows(), 1u);
  add(false);
  run_for(kIdleLook * 4);
  EXPECT_EQ(used(), 1u);
}

}  // namespace
}  // namespace vpci::virtio
