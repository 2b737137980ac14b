// Interrupt coalescing (virtio/interrupt_coalescer.h, CoreOptions::coalescing): a queue's
// used buffer notification check is held back until `max_batch` buffers were used or
// `max_delay` passed, and then covers every buffer used meanwhile — so completions share
// an interrupt and none the driver asked for is lost.
#include <chrono>

#include <gtest/gtest.h>

#include "tests/virtio/core_on_loop.h"

namespace vpci::virtio {
namespace {

using namespace std::chrono_literals;

class InterruptCoalescerTest : public testing::CoreOnLoopTest {
 protected:
  void bring_up(std::uint64_t features, CoalescingLimits limits) {
    CoreOptions options;
    options.coalescing = limits;
    start(options, features, /*packed=*/false);
  }
  void add_and_kick() { add(true); }
  // Runs the loop until an interrupt was raised or a second passed (time, not loop
  // turns, bounds it).
  void run_until_interrupt() {
    const auto end = std::chrono::steady_clock::now() + 1s;
    while (interrupts.queue_interrupts.empty() && std::chrono::steady_clock::now() < end) {
      ASSERT_TRUE(loop->run_once(1ms));
    }
  }
};

TEST_F(InterruptCoalescerTest, OffByDefaultEveryCompletionInterrupts) {
  bring_up(0, {});
  add_and_kick();
  add_and_kick();
  EXPECT_EQ(used(), 2u);
  EXPECT_EQ(interrupts.queue_interrupts.size(), 2u);
}

// Without EVENT_IDX the driver wants an interrupt per used buffer; within the delay the
// three completions share one, sent from the loop.
TEST_F(InterruptCoalescerTest, CompletionsWithinTheDelayShareOneInterrupt) {
  bring_up(0, {20ms, 0});
  add_and_kick();
  add_and_kick();
  add_and_kick();
  EXPECT_EQ(used(), 3u) << "the buffers are used at once; only the interrupt waits";
  EXPECT_TRUE(interrupts.queue_interrupts.empty());
  run_until_interrupt();
  EXPECT_EQ(interrupts.queue_interrupts, std::vector<std::uint16_t>{0});
  EXPECT_EQ(core->coalescer().held(), 1u);
}

// The batch limit sends the interrupt as soon as that many buffers wait, and drops the
// timer: nothing is sent twice.
TEST_F(InterruptCoalescerTest, AFullBatchInterruptsAtOnce) {
  bring_up(0, {10s, 2});
  add_and_kick();
  EXPECT_TRUE(interrupts.queue_interrupts.empty());
  add_and_kick();
  EXPECT_EQ(interrupts.queue_interrupts, std::vector<std::uint16_t>{0});
  EXPECT_EQ(core->coalescer().batch_flushes(), 1u);
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(loop->run_once(1ms));
  EXPECT_EQ(interrupts.queue_interrupts.size(), 1u);
}

// With EVENT_IDX the driver's used_event (0: "tell me when entry 0 is used") is passed by
// the first completion; the held check still compares it with every entry used since
// the last check, so the interrupt the driver asked for comes, once.
TEST_F(InterruptCoalescerTest, EventIdxRequestInsideTheBatchIsNotLost) {
  bring_up(feature_bit(feature::kEventIdx), {20ms, 0});
  add_and_kick();
  add_and_kick();
  EXPECT_TRUE(interrupts.queue_interrupts.empty());
  run_until_interrupt();
  EXPECT_EQ(interrupts.queue_interrupts, std::vector<std::uint16_t>{0});
  EXPECT_EQ(used(), 2u);
}

// A held check runs at a moment nobody chose: QEMU unmaps guest RAM for a moment while
// SeaBIOS (itself a virtio-blk driver) reprograms PAM. The check then cannot read the
// driver's request; it must not fail the queue (the guest would hang waiting for its
// device) but notify — a spurious notification is harmless (§2.7.10), a missing one hangs.
TEST_F(InterruptCoalescerTest, AHeldCheckWhileTheRingsAreUnmappedNotifiesInsteadOfFailing) {
  bring_up(feature_bit(feature::kEventIdx), {20ms, 0});
  add_and_kick();
  ASSERT_TRUE(interrupts.queue_interrupts.empty());
  const MemoryRegionSpec spec = unmap_ram();
  run_until_interrupt();
  EXPECT_EQ(core->status() & status::kDeviceNeedsReset, 0) << "the device failed itself";
  EXPECT_EQ(interrupts.queue_interrupts, std::vector<std::uint16_t>{0});
  ASSERT_TRUE(memory->add_region(spec));
  add_and_kick();  // the queue still works
  run_until_interrupt();
  EXPECT_EQ(used(), 2u);
}

// A reset drops the held check: the timer must not fire into the next driver's queue.
TEST_F(InterruptCoalescerTest, ResetDropsTheHeldCheck) {
  bring_up(0, {20ms, 0});
  add_and_kick();
  ASSERT_EQ(core->coalescer().held(), 1u);
  core->reset();
  EXPECT_EQ(core->coalescer().pending(), 0u);
  for (int i = 0; i < 40; ++i) ASSERT_TRUE(loop->run_once(1ms));
  EXPECT_TRUE(interrupts.queue_interrupts.empty());
}

}  // namespace
}  // namespace vpci::virtio
