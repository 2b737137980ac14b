// The poll window (virtio/queue_poller.h, CoreOptions::poll_window): after a doorbell the
// device suppresses the driver's notifications (split: NO_NOTIFY, or with EVENT_IDX an
// avail_event one behind; packed: DISABLE), serves buffers added without a doorbell from
// its event loop, extends the window while it finds work, and when the window passes
// asks for notifications again — after which a buffer without a doorbell waits for one.
#include <chrono>
#include <thread>

#include <gtest/gtest.h>

#include "base/event_loop.h"
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
using testing::SplitRing;

// Completes every chain with nothing written (a transmit queue).
class SinkDevice final : public Device {
 public:
  std::uint32_t device_id() const override { return 0x7E; }
  std::uint64_t device_features() const override { return 0; }
  std::uint16_t num_queues() const override { return 1; }
  std::uint16_t max_queue_size(std::uint16_t) const override { return 16; }
  std::uint32_t config_size() const override { return 0; }
  void read_config(std::uint32_t, std::span<std::uint8_t>) const override {}
  void process_queue(Virtqueue& queue) override {
    while (auto chain = queue.pop()) chain->complete(0);
  }
};

constexpr auto kWindow = 30ms;

class QueuePollerTest : public ::testing::Test {
 protected:
  void bring_up(std::uint64_t features, bool packed) {
    CoreOptions options;
    options.poll_window = kWindow;
    core =
        std::make_unique<DeviceCore>(std::make_unique<SinkDevice>(), memory, &interrupts, options);
    core->set_event_loop(loop.get());
    ASSERT_TRUE(ModernSetup::initialise(*core, features));
    if (packed) {
      packed_ring = std::make_unique<PackedRing>(ram, 8);
      ASSERT_TRUE(ModernSetup::enable_packed(*core, 0, *packed_ring));
    } else {
      split = std::make_unique<SplitRing>(ram, 8);
      ASSERT_TRUE(ModernSetup::enable_split(*core, 0, *split));
    }
    ASSERT_TRUE(ModernSetup::driver_ok(*core));
  }
  void add(bool kick) {
    ChainBuilder chain(ram);
    chain.readable({1, 2, 3});
    if (split) {
      split->add(chain);
    } else {
      packed_ring->add(chain);
    }
    if (kick) {
      ASSERT_TRUE(core->notify(0));
    }
  }
  std::size_t used() {
    std::size_t n = 0;
    while (split ? split->pop_used() : packed_ring->pop_used()) ++n;
    return n;
  }
  // Runs the loop for `time` (bounded; the poller's zero-delay timer keeps it busy).
  void run_for(std::chrono::milliseconds time) {
    const auto end = std::chrono::steady_clock::now() + time;
    while (std::chrono::steady_clock::now() < end) {
      ASSERT_TRUE(loop->run_once(1ms));
    }
  }
  // Runs the loop until every window closed (at most a second).
  void run_until_asleep() {
    for (int i = 0; i < 1000 && core->poller().open_windows() != 0; ++i) {
      ASSERT_TRUE(loop->run_once(1ms));
    }
    ASSERT_EQ(core->poller().open_windows(), 0u);
  }

  std::unique_ptr<EventLoop> loop = std::move(EventLoop::create().value());
  std::shared_ptr<GuestMemory> memory = std::make_shared<GuestMemory>();
  FakeGuestRam ram{memory, 0x40000, 1 << 20};
  RecordingInterrupts interrupts;
  std::unique_ptr<DeviceCore> core;
  std::unique_ptr<SplitRing> split;
  std::unique_ptr<PackedRing> packed_ring;
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

}  // namespace
}  // namespace vpci::virtio
