// Packed virtqueue, device side: wrap counters, chaining, indirect tables, event
// suppression, and every hostile-ring rule of virtio/packed_ring.h.
#include <random>
#include <string>

#include <gtest/gtest.h>

#include "tests/virtio/fake_driver.h"
#include "virtio/virtqueue.h"

namespace vpci::virtio {
namespace {

using testing::BufferElement;
using testing::ChainBuilder;
using testing::FakeGuestRam;
using testing::PackedRing;
using testing::RecordingQueueSink;

constexpr GuestAddress kRamBase = 0x200000;

class PackedQueueTest : public ::testing::Test {
 protected:
  Status start(std::uint16_t size = 8,
               RingOptions options = {.event_idx = false, .indirect = true}) {
    driver = std::make_unique<PackedRing>(ram, size);
    queue = std::make_unique<Virtqueue>(0, 1024);
    VPCI_TRY(queue->set_layout(driver->layout()));
    return queue->enable(memory, RingFormat::kPacked, options, &sink);
  }
  ChainBuilder chain() { return ChainBuilder(ram); }
  void expect_violation(const std::string& what) {
    EXPECT_FALSE(queue->pop().has_value());
    ASSERT_TRUE(queue->failed());
    EXPECT_EQ(queue->error()->code, ErrorCode::kProtocolViolation);
    EXPECT_NE(queue->error()->message.find(what), std::string::npos) << queue->error()->message;
    EXPECT_EQ(sink.failures.size(), 1u);
  }
  // Writes one available descriptor at `index` under the driver's current wrap counter.
  void put_available(std::uint16_t index, GuestAddress addr, std::uint32_t len, std::uint16_t flags,
                     std::uint16_t id = 0, bool wrap = true) {
    driver->write_desc(
        index, PackedDescriptor{addr, len, id,
                                static_cast<std::uint16_t>(flags | driver->avail_flags(wrap))});
  }

  std::shared_ptr<GuestMemory> memory = std::make_shared<GuestMemory>();
  FakeGuestRam ram{memory, kRamBase, 1 << 20};
  RecordingQueueSink sink;
  std::unique_ptr<PackedRing> driver;
  std::unique_ptr<Virtqueue> queue;
};

TEST_F(PackedQueueTest, ChainRoundTripUsesTheBufferIdOfTheLastDescriptor) {
  ASSERT_TRUE(start());
  ChainBuilder request = chain().readable({1, 2, 3}).readable({4}).writable(6);
  const std::uint16_t id = driver->add(request, 5);
  auto popped = queue->pop();
  ASSERT_TRUE(popped.has_value());
  EXPECT_EQ(popped->id(), id);
  std::array<std::uint8_t, 4> in{};
  ASSERT_TRUE(popped->reader().read(in));
  EXPECT_EQ(in, (std::array<std::uint8_t, 4>{1, 2, 3, 4}));
  ASSERT_TRUE(popped->writer().write_obj<std::uint32_t>(0x01020304));
  popped->complete();
  auto used = driver->pop_used();
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(used->id, 5u);
  EXPECT_EQ(used->length, 4u);
  // §2.8.1 / §2.8.3: AVAIL = USED = wrap counter (1), WRITE because data was written.
  EXPECT_EQ(*driver->last_used_flags(),
            desc_flags::kPackedAvail | desc_flags::kPackedUsed | desc_flags::kWrite);
  EXPECT_EQ(queue->packed_ring()->next_used(), 3u);  // skipped the three ring slots
}

TEST_F(PackedQueueTest, UsedDescriptorWithoutDataHasNoWriteFlag) {
  ASSERT_TRUE(start());
  driver->add(chain().readable({1}));
  queue->pop()->complete();
  ASSERT_TRUE(driver->pop_used().has_value());
  EXPECT_EQ(*driver->last_used_flags(), desc_flags::kPackedAvail | desc_flags::kPackedUsed);
}

TEST_F(PackedQueueTest, IndirectTableIsUsedInOrderAndOccupiesOneSlot) {
  ASSERT_TRUE(start());
  ChainBuilder request = chain().readable({7, 7}).writable(2).writable(2).indirect();
  driver->add(request, 3);
  auto popped = queue->pop();
  ASSERT_TRUE(popped.has_value());
  EXPECT_EQ(popped->id(), 3u);
  EXPECT_EQ(popped->readable_bytes(), 2u);
  EXPECT_EQ(popped->writable_bytes(), 4u);
  ASSERT_TRUE(popped->writer().write_obj<std::uint32_t>(0xFFFFFFFF));
  popped->complete();
  EXPECT_EQ(queue->packed_ring()->next_used(), 1u);
  EXPECT_EQ(driver->pop_used()->length, 4u);
  EXPECT_EQ(request.written_bytes(), (std::vector<std::uint8_t>{0xFF, 0xFF, 0xFF, 0xFF}));
}

TEST_F(PackedQueueTest, OutOfOrderCompletionWritesUsedDescriptorsInCompletionOrder) {
  ASSERT_TRUE(start());
  driver->add(chain().writable(1), 0);
  driver->add(chain().writable(1).writable(1), 1);
  auto first = queue->pop();
  auto second = queue->pop();
  ASSERT_TRUE(first && second);
  second->complete(2);
  first->complete(1);
  auto used1 = driver->pop_used();
  auto used2 = driver->pop_used();
  ASSERT_TRUE(used1 && used2);
  EXPECT_EQ(used1->id, 1u);
  EXPECT_EQ(used1->length, 2u);
  EXPECT_EQ(used2->id, 0u);
  EXPECT_EQ(queue->packed_ring()->next_used(), 3u);
}

// Odd ring sizes and chains of 1-3 descriptors force the wrap counters through many
// turns, with chains straddling the end of the ring.
TEST_F(PackedQueueTest, WrapCountersSurviveManyTurnsOfAnOddSizedRing) {
  ASSERT_TRUE(start(7));
  std::mt19937 rng(1234);
  for (int i = 0; i < 500; ++i) {
    const int parts = 1 + static_cast<int>(rng() % 3);
    ChainBuilder request = chain();
    for (int p = 0; p < parts; ++p) request.writable(4);
    driver->add(request);
    auto popped = queue->pop();
    ASSERT_TRUE(popped.has_value()) << i;
    ASSERT_TRUE(popped->writer().write_obj<std::uint32_t>(static_cast<std::uint32_t>(i)));
    popped->complete();
    auto used = driver->pop_used();
    ASSERT_TRUE(used.has_value()) << i;
    EXPECT_EQ(used->length, 4u);
    std::uint32_t value = 0;
    auto bytes = request.written_bytes();
    std::memcpy(&value, bytes.data(), 4);
    ASSERT_EQ(value, static_cast<std::uint32_t>(i));
    if (i % 100 == 99) ram.reset_allocator(4096);
  }
  EXPECT_FALSE(queue->failed());
  EXPECT_FALSE(queue->pop().has_value());
}

// ---- enable-time validation
// -----------------------------------------------------------------------

TEST_F(PackedQueueTest, SizeNeedNotBeAPowerOfTwoButMustBeInRange) {
  EXPECT_TRUE(start(5));
  Virtqueue q(0, 1024);
  QueueLayout layout = driver->layout();
  layout.size = 0;
  EXPECT_FALSE(q.set_layout(layout));
}

TEST_F(PackedQueueTest, MisalignedOrUnmappedAreasAreRefused) {
  driver = std::make_unique<PackedRing>(ram, 8);
  for (int part = 0; part < 5; ++part) {
    QueueLayout layout = driver->layout();
    if (part == 0) layout.desc += 8;
    if (part == 1) layout.driver += 2;
    if (part == 2) layout.device += 1;
    if (part == 3) layout.desc = kRamBase + ram.size() - 64;  // 128 bytes needed
    if (part == 4) layout.device = 0x40;
    Virtqueue q(0, 8);
    ASSERT_TRUE(q.set_layout(layout));
    EXPECT_FALSE(q.enable(memory, RingFormat::kPacked, {}, nullptr)) << part;
  }
}

// ---- hostile rings
// ------------------------------------------------------------------------------------

TEST_F(PackedQueueTest, ListContinuingIntoAnUnavailableDescriptorIsRefused) {
  ASSERT_TRUE(start(8));
  const GuestAddress buffer = ram.alloc(8);
  put_available(0, buffer, 8, desc_flags::kNext);
  // Slot 1 was never made available (all zero).
  expect_violation("not available");
}

TEST_F(PackedQueueTest, ListLongerThanTheQueueIsRefused) {
  ASSERT_TRUE(start(4));
  const GuestAddress buffer = ram.alloc(8);
  // Every slot available with NEXT: the list never ends. Slots after the wrap carry the
  // flipped wrap counter so they look available too.
  for (std::uint16_t i = 0; i < 4; ++i) put_available(i, buffer, 8, desc_flags::kNext);
  expect_violation("longer than the queue size");
}

TEST_F(PackedQueueTest, IndirectWithoutTheFeatureIsRefused) {
  ASSERT_TRUE(start(8, RingOptions{.event_idx = false, .indirect = false}));
  driver->add(chain().readable({1}).indirect());
  expect_violation("INDIRECT_DESC was not negotiated");
}

TEST_F(PackedQueueTest, IndirectInsideANextListIsRefused) {
  ASSERT_TRUE(start(8));
  const GuestAddress buffer = ram.alloc(8);
  const GuestAddress table = ram.alloc(16, 16);
  ram.put(table, PackedDescriptor{buffer, 8, 0, 0});
  put_available(1, table, 16, desc_flags::kIndirect);
  put_available(0, buffer, 8, desc_flags::kNext);
  expect_violation("NEXT-linked list");
}

TEST_F(PackedQueueTest, IndirectWithNextIsRefused) {
  ASSERT_TRUE(start(8));
  const GuestAddress buffer = ram.alloc(8);
  const GuestAddress table = ram.alloc(16, 16);
  ram.put(table, PackedDescriptor{buffer, 8, 0, 0});
  put_available(1, buffer, 8, 0);
  put_available(0, table, 16, desc_flags::kIndirect | desc_flags::kNext);
  expect_violation("NEXT-linked list");
}

TEST_F(PackedQueueTest, NestedIndirectIsRefused) {
  ASSERT_TRUE(start(8));
  const GuestAddress inner = ram.alloc(16, 16);
  driver->add(chain().element(BufferElement{inner, 16, false, desc_flags::kIndirect}).indirect());
  expect_violation("nested indirect");
}

TEST_F(PackedQueueTest, IndirectTableLengthMustBeANonZeroMultipleOf16) {
  for (std::uint32_t length : {0u, 8u, 24u}) {
    sink = RecordingQueueSink{};
    ASSERT_TRUE(start(8));
    const GuestAddress table = ram.alloc(32, 16);
    put_available(0, table, length, desc_flags::kIndirect);
    expect_violation("multiple of 16");
  }
}

TEST_F(PackedQueueTest, IndirectTableLargerThanTheQueueIsRefused) {
  ASSERT_TRUE(start(4));
  ChainBuilder request = chain();
  for (int i = 0; i < 5; ++i) request.readable({1});
  driver->add(request.indirect());
  expect_violation("exceeds the queue size");
}

TEST_F(PackedQueueTest, IndirectTableOutsideMemoryIsRefused) {
  ASSERT_TRUE(start(8));
  put_available(0, 0x1000, 32, desc_flags::kIndirect);
  expect_violation("indirect table");
}

TEST_F(PackedQueueTest, ReadableAfterWritableIsRefused) {
  ASSERT_TRUE(start(8));
  driver->add(chain().writable(2).readable({1}));
  expect_violation("after a writable one");
}

TEST_F(PackedQueueTest, ReadableAfterWritableInAnIndirectTableIsRefused) {
  ASSERT_TRUE(start(8));
  driver->add(chain().writable(2).readable({1}).indirect());
  expect_violation("after a writable one");
}

TEST_F(PackedQueueTest, BufferOutsideMemoryIsRefused) {
  ASSERT_TRUE(start(8));
  driver->add(chain().element(BufferElement{kRamBase - 4, 8, true, 0}));
  expect_violation("not mapped");
}

TEST_F(PackedQueueTest, ByteCapIsEnforced) {
  ASSERT_TRUE(start(8, RingOptions{.event_idx = false, .indirect = true, .max_chain_bytes = 10}));
  driver->add(chain().writable(8).writable(8).indirect());
  expect_violation("more than 10 bytes");
}

// ---- event suppression
// ----------------------------------------------------------------------------------

TEST_F(PackedQueueTest, DriverEventSuppressionModes) {
  ASSERT_TRUE(start(8, RingOptions{.event_idx = true, .indirect = false}));
  auto use_one = [&] {
    driver->add(chain().writable(1));
    queue->pop()->complete(1);
    queue->notify_driver_if_needed();
    ASSERT_TRUE(driver->pop_used().has_value());
  };
  driver->set_driver_event(ring_event::kEnable);
  use_one();
  EXPECT_EQ(sink.notifications.size(), 1u);
  driver->set_driver_event(ring_event::kDisable);
  use_one();
  EXPECT_EQ(sink.notifications.size(), 1u);
  // Used so far: slots 0 and 1. Ask for the used descriptor at slot 3 (wrap 1).
  driver->set_driver_event(ring_event::kDesc, 3, true);
  use_one();  // slot 2
  EXPECT_EQ(sink.notifications.size(), 1u);
  use_one();  // slot 3
  EXPECT_EQ(sink.notifications.size(), 2u);
  // An event in the next turn of the ring (slot 1, wrap 0) is reached after the wrap.
  driver->set_driver_event(ring_event::kDesc, 1, false);
  for (int i = 0; i < 5; ++i) use_one();  // slots 4..7, then 0 (wrap 0)
  EXPECT_EQ(sink.notifications.size(), 2u);
  use_one();  // slot 1, wrap 0
  EXPECT_EQ(sink.notifications.size(), 3u);
}

TEST_F(PackedQueueTest, DescModeWithoutEventIdxFallsBackToNotifying) {
  ASSERT_TRUE(start(8, RingOptions{.event_idx = false, .indirect = false}));
  driver->set_driver_event(ring_event::kDesc, 6, true);
  driver->add(chain().writable(1));
  queue->pop()->complete(1);
  queue->notify_driver_if_needed();
  EXPECT_EQ(sink.notifications.size(), 1u);
}

TEST_F(PackedQueueTest, DeviceEventIsPublishedWhenTheRingRunsEmpty) {
  ASSERT_TRUE(start(4, RingOptions{.event_idx = true, .indirect = false}));
  for (int i = 0; i < 5; ++i) {
    driver->add(chain().writable(1));
    queue->pop()->complete(1);
    ASSERT_TRUE(driver->pop_used().has_value());
  }
  EXPECT_FALSE(queue->pop().has_value());
  // Next expected descriptor: slot 1 in the second turn (wrap 0).
  const PackedEventSuppress event = driver->device_event();
  EXPECT_EQ(event.flags, ring_event::kDesc);
  EXPECT_EQ(event.desc, 1u);
}

TEST_F(PackedQueueTest, DeviceEventEnablesAllWithoutEventIdx) {
  ASSERT_TRUE(start(4, RingOptions{.event_idx = false, .indirect = false}));
  EXPECT_FALSE(queue->pop().has_value());
  EXPECT_EQ(driver->device_event().flags, ring_event::kEnable);
}

TEST_F(PackedQueueTest, UsedBatchWritesTheFirstFlagsLast) {
  ASSERT_TRUE(start());
  for (int i = 0; i < 2; ++i) driver->add(ChainBuilder(ram).writable(16));
  auto first = queue->pop();
  auto second = queue->pop();
  ASSERT_TRUE(first && second);
  queue->begin_used_batch();
  first->complete(16);
  second->complete(8);
  // The second descriptor is marked used, but the driver stops at the first.
  EXPECT_FALSE(driver->pop_used().has_value());
  queue->end_used_batch();
  EXPECT_EQ(driver->pop_used()->length, 16u);
  EXPECT_EQ(driver->pop_used()->length, 8u);
}

TEST_F(PackedQueueTest, ReturnedBuffersArePoppedAgainAcrossTheWrap) {
  ASSERT_TRUE(start(4));
  // Use three slots so the next buffers straddle the end of the ring.
  for (int i = 0; i < 3; ++i) driver->add(ChainBuilder(ram).writable(8));
  for (int i = 0; i < 3; ++i) {
    auto c = queue->pop();
    ASSERT_TRUE(c.has_value());
    c->complete(8);
    ASSERT_TRUE(driver->pop_used().has_value());
  }
  const std::uint16_t a = driver->add(ChainBuilder(ram).writable(16));
  const std::uint16_t b = driver->add(ChainBuilder(ram).writable(32));
  auto first = queue->pop();
  auto second = queue->pop();
  ASSERT_TRUE(first && second);
  second->return_to_ring();
  first->return_to_ring();
  auto again = queue->pop();
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->id(), a);
  auto again2 = queue->pop();
  ASSERT_TRUE(again2.has_value());
  EXPECT_EQ(again2->id(), b);
  again->complete(16);
  again2->complete(32);
  EXPECT_EQ(driver->pop_used()->id, a);
  EXPECT_EQ(driver->pop_used()->id, b);
}

}  // namespace
}  // namespace vpci::virtio
