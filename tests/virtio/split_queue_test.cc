// Split virtqueue, device side: normal operation and every hostile-ring rule of
// virtio/split_ring.h.
#include <cstring>
#include <string>

#include <gtest/gtest.h>
#include <sys/mman.h>

#include "tests/virtio/fake_driver.h"
#include "virtio/virtqueue.h"

namespace vpci::virtio {
namespace {

using testing::BufferElement;
using testing::ChainBuilder;
using testing::FakeGuestRam;
using testing::RecordingQueueSink;
using testing::SplitRing;

constexpr GuestAddress kRamBase = 0x100000;

class SplitQueueTest : public ::testing::Test {
 protected:
  Status start(std::uint16_t size = 8,
               RingOptions options = {.event_idx = false, .indirect = true}) {
    driver = std::make_unique<SplitRing>(ram, size);
    queue = std::make_unique<Virtqueue>(0, 256);
    VPCI_TRY(queue->set_layout(driver->layout()));
    return queue->enable(memory, RingFormat::kSplit, options, &sink);
  }
  ChainBuilder chain() { return ChainBuilder(ram); }
  // Pops and expects a violation whose message contains `what`.
  void expect_violation(const std::string& what) {
    auto popped = queue->pop();
    EXPECT_FALSE(popped.has_value());
    ASSERT_TRUE(queue->failed());
    EXPECT_EQ(queue->error()->code, ErrorCode::kProtocolViolation);
    EXPECT_NE(queue->error()->message.find(what), std::string::npos) << queue->error()->message;
    ASSERT_EQ(sink.failures.size(), 1u);
    // A failed queue stays stopped even when a valid chain shows up.
    driver->add(chain().writable(4));
    EXPECT_FALSE(queue->pop().has_value());
  }

  std::shared_ptr<GuestMemory> memory = std::make_shared<GuestMemory>();
  FakeGuestRam ram{memory, kRamBase, 1 << 20};
  RecordingQueueSink sink;
  std::unique_ptr<SplitRing> driver;
  std::unique_ptr<Virtqueue> queue;
};

TEST_F(SplitQueueTest, ChainRoundTripThroughReaderAndWriter) {
  ASSERT_TRUE(start());
  ChainBuilder request = chain().readable({'h', 'e', 'l', 'l', 'o'}).writable(3).writable(5);
  const std::uint16_t head = driver->add(request);
  auto popped = queue->pop();
  ASSERT_TRUE(popped.has_value());
  EXPECT_EQ(popped->id(), head);
  EXPECT_EQ(popped->readable_bytes(), 5u);
  EXPECT_EQ(popped->writable_bytes(), 8u);
  std::array<std::uint8_t, 5> text{};
  ASSERT_TRUE(popped->reader().read(text));
  EXPECT_EQ(std::string(text.begin(), text.end()), "hello");
  EXPECT_FALSE(popped->reader().read_obj<std::uint8_t>());  // nothing left
  // A 6-byte write crosses from the first writable buffer into the second.
  const std::array<std::uint8_t, 6> reply{'w', 'o', 'r', 'l', 'd', '!'};
  ASSERT_TRUE(popped->writer().write(reply));
  popped->complete();
  auto used = driver->pop_used();
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(used->id, head);
  EXPECT_EQ(used->length, 6u);
  auto written = request.written_bytes();
  EXPECT_EQ(std::string(written.begin(), written.begin() + 6), "world!");
  EXPECT_EQ(queue->stats().completed, 1u);
  EXPECT_FALSE(queue->pop().has_value());
}

// Chains of up to ChainBufferList::kInline buffers per direction keep them inline, longer
// ones on the heap; either kind must survive being moved between DescriptorChain objects
// with the reader and writer part-way through (their cursors are re-pointed).
TEST_F(SplitQueueTest, ShortAndLongChainsSurviveMovesMidway) {
  ASSERT_TRUE(start(16));
  for (const std::size_t buffers :
       {std::size_t{2}, ChainBufferList::kInline, ChainBufferList::kInline + 3}) {
    ChainBuilder request = chain();
    std::vector<std::uint8_t> expected;
    for (std::size_t i = 0; i < buffers; ++i) {
      const std::uint8_t a = static_cast<std::uint8_t>(10 * i);
      const std::uint8_t b = static_cast<std::uint8_t>(10 * i + 1);
      request.readable({a, b});
      expected.insert(expected.end(), {a, b});
    }
    for (std::size_t i = 0; i < buffers; ++i) request.writable(2);
    const std::uint16_t head = driver->add(request);
    auto popped = queue->pop();
    ASSERT_TRUE(popped.has_value());
    EXPECT_EQ(popped->readable_buffers().size(), buffers);
    EXPECT_EQ(popped->writable_buffers().size(), buffers);
    std::vector<std::uint8_t> got(expected.size());
    // Read and write one byte, move the chain, then the rest.
    ASSERT_TRUE(popped->reader().read(std::span(got).first(1)));
    ASSERT_TRUE(popped->writer().write_obj<std::uint8_t>(0xA0));
    DescriptorChain moved(std::move(*popped));
    ASSERT_TRUE(moved.reader().read(std::span(got).subspan(1)));
    EXPECT_EQ(got, expected) << buffers << " buffers";
    std::optional<DescriptorChain> assigned;
    assigned.emplace(std::move(moved));
    std::vector<std::uint8_t> rest(2 * buffers - 1, 0xA1);
    ASSERT_TRUE(assigned->writer().write(rest));
    EXPECT_EQ(assigned->writer().remaining(), 0u);
    assigned->complete();
    auto used = driver->pop_used();
    ASSERT_TRUE(used.has_value());
    EXPECT_EQ(used->id, head);
    EXPECT_EQ(used->length, 2 * buffers);
    const auto written = request.written_bytes();
    ASSERT_EQ(written.size(), 2 * buffers);
    EXPECT_EQ(written[0], 0xA0);
    EXPECT_EQ(written.back(), 0xA1);
  }
}

TEST_F(SplitQueueTest, IndirectChainIsWalkedLikeADirectOne) {
  ASSERT_TRUE(start());
  ChainBuilder request = chain().readable({1, 2, 3, 4}).readable({5, 6}).writable(4).indirect();
  const std::uint16_t head = driver->add(request);
  auto popped = queue->pop();
  ASSERT_TRUE(popped.has_value());
  EXPECT_EQ(popped->id(), head);
  EXPECT_EQ(popped->readable_buffers().size(), 2u);
  auto value = popped->reader().read_obj<std::uint32_t>();
  ASSERT_TRUE(value);
  EXPECT_EQ(*value, 0x04030201u);
  ASSERT_TRUE(popped->writer().write_obj<std::uint32_t>(0xAABBCCDD));
  popped->complete();
  EXPECT_EQ(driver->pop_used()->length, 4u);
}

// §2.7.5.3.2: "The device MUST handle the case of zero or more normal chained
// descriptors followed by a single descriptor with flags&VIRTQ_DESC_F_INDIRECT."
TEST_F(SplitQueueTest, DirectDescriptorsFollowedByAnIndirectTable) {
  ASSERT_TRUE(start());
  const GuestAddress header = ram.alloc(4);
  ram.put<std::uint32_t>(header, 7);
  const GuestAddress data = ram.alloc(8);
  const GuestAddress table = ram.alloc(16, 16);
  ram.put(table, SplitDescriptor{data, 8, desc_flags::kWrite, 0});
  driver->write_desc(0, SplitDescriptor{header, 4, desc_flags::kNext, 1});
  // WRITE on the descriptor naming the table is ignored (§2.7.5.3.2).
  driver->write_desc(1, SplitDescriptor{table, 16, desc_flags::kIndirect | desc_flags::kWrite, 0});
  driver->set_avail_entry(0, 0);
  driver->set_avail_idx(1);
  auto popped = queue->pop();
  ASSERT_TRUE(popped.has_value());
  EXPECT_EQ(popped->readable_bytes(), 4u);
  EXPECT_EQ(popped->writable_bytes(), 8u);
}

TEST_F(SplitQueueTest, ZeroLengthBuffersAreDropped) {
  ASSERT_TRUE(start());
  driver->add(chain().readable({}).writable(0).writable(2));
  auto popped = queue->pop();
  ASSERT_TRUE(popped.has_value());
  EXPECT_EQ(popped->readable_buffers().size(), 0u);
  EXPECT_EQ(popped->writable_buffers().size(), 1u);
}

TEST_F(SplitQueueTest, ZeroCopyBuffersPointIntoGuestRam) {
  ASSERT_TRUE(start());
  ChainBuilder request = chain().readable({9, 9}).writable(100).writable(28);
  driver->add(request);
  auto popped = queue->pop();
  ASSERT_TRUE(popped.has_value());
  auto spans = popped->writer().take_buffers(120);
  ASSERT_TRUE(spans);
  ASSERT_EQ(spans->spans.size(), 2u);
  EXPECT_EQ(spans->spans[0].data(), ram.host(request.elements()[1].address));
  EXPECT_EQ(spans->spans[1].size(), 20u);
  EXPECT_TRUE(ram.owns(spans->spans[1].data(), spans->spans[1].size()));
  EXPECT_FALSE(popped->writer().take_buffers(9));  // only 8 left
  EXPECT_EQ(popped->writer().bytes_written(), 120u);
}

TEST_F(SplitQueueTest, UsedLengthStopsAtTheFirstSkippedByte) {
  ASSERT_TRUE(start());
  driver->add(chain().writable(10));
  auto popped = queue->pop();
  ASSERT_TRUE(popped.has_value());
  ASSERT_TRUE(popped->writer().write_obj<std::uint16_t>(1));
  ASSERT_TRUE(popped->writer().skip(7));
  ASSERT_TRUE(popped->writer().write_obj<std::uint8_t>(1));
  EXPECT_EQ(popped->writer().bytes_written(), 2u);
  popped->complete();
  EXPECT_EQ(driver->pop_used()->length, 2u);
}

TEST_F(SplitQueueTest, AbandonedChainIsReturnedWithZeroLength) {
  ASSERT_TRUE(start());
  const std::uint16_t head = driver->add(chain().writable(4));
  {
    auto popped = queue->pop();
    ASSERT_TRUE(popped.has_value());
    ASSERT_TRUE(popped->writer().write_obj<std::uint32_t>(5));
  }
  auto used = driver->pop_used();
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(used->id, head);
  EXPECT_EQ(used->length, 0u);
  EXPECT_EQ(queue->stats().abandoned, 1u);
}

TEST_F(SplitQueueTest, MovedChainCompletesOnce) {
  ASSERT_TRUE(start());
  driver->add(chain().writable(4));
  auto popped = queue->pop();
  ASSERT_TRUE(popped.has_value());
  DescriptorChain moved = std::move(*popped);
  popped.reset();  // the moved-from chain must not complete anything
  moved.complete(4);
  moved.complete(4);  // second completion is a no-op
  EXPECT_EQ(queue->stats().completed, 1u);
  EXPECT_EQ(queue->stats().abandoned, 0u);
  EXPECT_EQ(driver->used_idx(), 1u);
}

TEST_F(SplitQueueTest, CompletionAfterResetIsDropped) {
  ASSERT_TRUE(start());
  driver->add(chain().writable(4));
  auto popped = queue->pop();
  ASSERT_TRUE(popped.has_value());
  queue->reset();
  popped->complete(4);
  EXPECT_EQ(queue->stats().stale, 1u);
  EXPECT_EQ(driver->used_idx(), 0u);
  EXPECT_EQ(queue->size(), 256u);  // back to the maximum
}

TEST_F(SplitQueueTest, ChainKeepsItsMemoryMappedAfterUnmap) {
  ASSERT_TRUE(start());
  // Data buffer in a separate region that the "client" unmaps while the request runs.
  std::vector<std::uint8_t> dma(64, 0x5A);
  bool released = false;
  MemoryRegionSpec spec;
  spec.guest_address = 0x900000;
  spec.size = dma.size();
  spec.host = dma.data();
  spec.on_release = [&] { released = true; };
  ASSERT_TRUE(memory->add_region(std::move(spec)));
  driver->add(chain().element(BufferElement{0x900000, 64, false, 0}).writable(1));
  auto popped = queue->pop();
  ASSERT_TRUE(popped.has_value());
  ASSERT_TRUE(memory->remove_range(0x900000, 64));
  EXPECT_FALSE(released);
  std::array<std::uint8_t, 64> out{};
  ASSERT_TRUE(popped->reader().read(out));
  EXPECT_EQ(out[63], 0x5A);
  popped->complete(0);
  popped.reset();
  EXPECT_TRUE(released);
}

// ---- enable-time validation -------------------------------------------------------------------

TEST_F(SplitQueueTest, QueueSizeMustBeAPowerOfTwo) {
  driver = std::make_unique<SplitRing>(ram, 8);
  queue = std::make_unique<Virtqueue>(0, 256);
  QueueLayout layout = driver->layout();
  layout.size = 6;
  ASSERT_TRUE(queue->set_layout(layout));
  EXPECT_FALSE(queue->enable(memory, RingFormat::kSplit, {}, &sink));
  EXPECT_FALSE(queue->enabled());
  EXPECT_TRUE(queue->failed());
  EXPECT_EQ(sink.failures.size(), 1u);
  EXPECT_FALSE(queue->set_size(0));
  EXPECT_FALSE(queue->set_size(512));  // above the maximum
}

TEST_F(SplitQueueTest, MisalignedRingsAreRefused) {
  driver = std::make_unique<SplitRing>(ram, 8);
  for (int part = 0; part < 3; ++part) {
    QueueLayout layout = driver->layout();
    if (part == 0) layout.desc += 8;    // needs 16
    if (part == 1) layout.driver += 1;  // needs 2
    if (part == 2) layout.device += 2;  // needs 4
    Virtqueue q(0, 8);
    ASSERT_TRUE(q.set_layout(layout));
    auto result = q.enable(memory, RingFormat::kSplit, {}, nullptr);
    ASSERT_FALSE(result) << part;
    EXPECT_NE(result.error().message.find("aligned"), std::string::npos) << result.error().message;
  }
}

TEST_F(SplitQueueTest, RingsOutsideGuestMemoryAreRefused) {
  driver = std::make_unique<SplitRing>(ram, 8);
  const GuestAddress ram_end = kRamBase + ram.size();
  for (int part = 0; part < 3; ++part) {
    QueueLayout layout = driver->layout();
    if (part == 0) layout.desc = ram_end - 64;             // 128-byte table runs past the end
    if (part == 1) layout.driver = 0x10;                   // nothing mapped there
    if (part == 2) layout.device = ~std::uint64_t{0} - 3;  // would wrap
    Virtqueue q(0, 8);
    ASSERT_TRUE(q.set_layout(layout));
    EXPECT_FALSE(q.enable(memory, RingFormat::kSplit, {}, nullptr)) << part;
  }
}

TEST_F(SplitQueueTest, UsedRingInReadOnlyMemoryIsRefused) {
  std::vector<std::uint8_t> rom(4096);
  MemoryRegionSpec spec;
  spec.guest_address = 0x800000;
  spec.size = rom.size();
  spec.host = rom.data();
  spec.writable = false;
  ASSERT_TRUE(memory->add_region(std::move(spec)));
  driver = std::make_unique<SplitRing>(ram, 8);
  QueueLayout layout = driver->layout();
  layout.device = 0x800000;
  Virtqueue q(0, 8);
  ASSERT_TRUE(q.set_layout(layout));
  EXPECT_FALSE(q.enable(memory, RingFormat::kSplit, {}, nullptr));
}

// ---- hostile rings ------------------------------------------------------------------------------

TEST_F(SplitQueueTest, AvailIndexMoreThanAQueueAheadIsRefused) {
  ASSERT_TRUE(start(8));
  driver->set_avail_idx(9);
  expect_violation("ahead");
}

TEST_F(SplitQueueTest, AvailIndexExactlyAQueueAheadIsFine) {
  ASSERT_TRUE(start(4));
  for (int i = 0; i < 4; ++i) driver->add(chain().writable(1));
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(queue->pop().has_value());
  EXPECT_FALSE(queue->failed());
}

TEST_F(SplitQueueTest, HeadOutsideTheTableIsRefused) {
  ASSERT_TRUE(start(8));
  driver->set_avail_entry(0, 8);
  driver->set_avail_idx(1);
  expect_violation("head descriptor 8");
}

TEST_F(SplitQueueTest, NextOutsideTheTableIsRefused) {
  ASSERT_TRUE(start(8));
  const GuestAddress buffer = ram.alloc(16);
  driver->write_desc(0, SplitDescriptor{buffer, 16, desc_flags::kNext, 200});
  driver->set_avail_entry(0, 0);
  driver->set_avail_idx(1);
  expect_violation("links to 200");
}

TEST_F(SplitQueueTest, DescriptorLoopIsRefused) {
  ASSERT_TRUE(start(8));
  const GuestAddress buffer = ram.alloc(16);
  driver->write_desc(0, SplitDescriptor{buffer, 16, desc_flags::kNext, 1});
  driver->write_desc(1, SplitDescriptor{buffer, 16, desc_flags::kNext, 2});
  driver->write_desc(2, SplitDescriptor{buffer, 16, desc_flags::kNext, 0});
  driver->set_avail_entry(0, 0);
  driver->set_avail_idx(1);
  expect_violation("loop");
}

TEST_F(SplitQueueTest, SelfLoopIsRefused) {
  ASSERT_TRUE(start(8));
  const GuestAddress buffer = ram.alloc(16);
  driver->write_desc(3, SplitDescriptor{buffer, 16, desc_flags::kNext, 3});
  driver->set_avail_entry(0, 3);
  driver->set_avail_idx(1);
  expect_violation("loop");
}

TEST_F(SplitQueueTest, IndirectWithoutTheFeatureIsRefused) {
  ASSERT_TRUE(start(8, RingOptions{.event_idx = false, .indirect = false}));
  driver->add(chain().readable({1}).indirect());
  expect_violation("INDIRECT_DESC was not negotiated");
}

TEST_F(SplitQueueTest, NestedIndirectIsRefused) {
  ASSERT_TRUE(start(8));
  const GuestAddress inner = ram.alloc(16, 16);
  driver->add(chain().element(BufferElement{inner, 16, false, desc_flags::kIndirect}).indirect());
  expect_violation("nested indirect");
}

TEST_F(SplitQueueTest, IndirectTogetherWithNextIsRefused) {
  ASSERT_TRUE(start(8));
  const GuestAddress table = ram.alloc(16, 16);
  const GuestAddress buffer = ram.alloc(8);
  ram.put(table, SplitDescriptor{buffer, 8, 0, 0});
  driver->write_desc(0, SplitDescriptor{table, 16, desc_flags::kIndirect | desc_flags::kNext, 1});
  driver->write_desc(1, SplitDescriptor{buffer, 8, 0, 0});
  driver->set_avail_entry(0, 0);
  driver->set_avail_idx(1);
  expect_violation("both INDIRECT and NEXT");
}

TEST_F(SplitQueueTest, IndirectTableLengthMustBeANonZeroMultipleOf16) {
  for (std::uint32_t length : {0u, 15u, 17u, 40u}) {
    sink = RecordingQueueSink{};
    ASSERT_TRUE(start(8));
    const GuestAddress table = ram.alloc(64, 16);
    driver->write_desc(0, SplitDescriptor{table, length, desc_flags::kIndirect, 0});
    driver->set_avail_entry(0, 0);
    driver->set_avail_idx(1);
    expect_violation("multiple of 16");
  }
}

TEST_F(SplitQueueTest, IndirectTableOutsideMemoryIsRefused) {
  ASSERT_TRUE(start(8));
  driver->write_desc(0, SplitDescriptor{kRamBase + ram.size() - 16, 32, desc_flags::kIndirect, 0});
  driver->set_avail_entry(0, 0);
  driver->set_avail_idx(1);
  expect_violation("indirect table");
}

TEST_F(SplitQueueTest, LoopInsideAnIndirectTableIsRefused) {
  ASSERT_TRUE(start(8));
  const GuestAddress table = ram.alloc(32, 16);
  const GuestAddress buffer = ram.alloc(8);
  ram.put(table, SplitDescriptor{buffer, 8, desc_flags::kNext, 1});
  ram.put(table + 16, SplitDescriptor{buffer, 8, desc_flags::kNext, 0});
  driver->write_desc(0, SplitDescriptor{table, 32, desc_flags::kIndirect, 0});
  driver->set_avail_entry(0, 0);
  driver->set_avail_idx(1);
  expect_violation("loop in the indirect table");
}

TEST_F(SplitQueueTest, NextOutsideAnIndirectTableIsRefused) {
  ASSERT_TRUE(start(8));
  const GuestAddress table = ram.alloc(32, 16);
  const GuestAddress buffer = ram.alloc(8);
  ram.put(table, SplitDescriptor{buffer, 8, desc_flags::kNext, 2});  // table has 2 entries
  driver->write_desc(0, SplitDescriptor{table, 32, desc_flags::kIndirect, 0});
  driver->set_avail_entry(0, 0);
  driver->set_avail_idx(1);
  expect_violation("outside a table of 2");
}

TEST_F(SplitQueueTest, IndirectChainLongerThanTheQueueIsRefused) {
  ASSERT_TRUE(start(4));
  ChainBuilder request = chain();
  for (int i = 0; i < 5; ++i) request.readable({1});
  driver->add(request.indirect());
  expect_violation("longer than the queue size");
}

TEST_F(SplitQueueTest, ChainOfExactlyQueueSizeIsFine) {
  ASSERT_TRUE(start(4));
  ChainBuilder request = chain();
  for (int i = 0; i < 4; ++i) request.readable({1});
  driver->add(request.indirect());
  EXPECT_TRUE(queue->pop().has_value());
}

TEST_F(SplitQueueTest, ReadableAfterWritableIsRefused) {
  ASSERT_TRUE(start(8));
  driver->add(chain().writable(4).readable({1, 2}));
  expect_violation("after a writable one");
}

TEST_F(SplitQueueTest, ReadableAfterWritableInsideAnIndirectTableIsRefused) {
  ASSERT_TRUE(start(8));
  driver->add(chain().readable({1}).writable(4).readable({1, 2}).indirect());
  expect_violation("after a writable one");
}

TEST_F(SplitQueueTest, BufferOutsideGuestMemoryIsRefused) {
  ASSERT_TRUE(start(8));
  driver->add(chain().element(BufferElement{0x10, 16, false, 0}));
  expect_violation("not mapped");
}

TEST_F(SplitQueueTest, BufferWrappingTheAddressSpaceIsRefused) {
  ASSERT_TRUE(start(8));
  driver->add(chain().element(BufferElement{~std::uint64_t{0} - 7, 16, true, 0}));
  expect_violation("wraps");
}

TEST_F(SplitQueueTest, BufferRunningOffTheEndOfRamIsRefused) {
  ASSERT_TRUE(start(8));
  driver->add(chain().element(BufferElement{kRamBase + ram.size() - 8, 16, false, 0}));
  expect_violation("not mapped");
}

TEST_F(SplitQueueTest, ChainAboveTheByteCapIsRefused) {
  ASSERT_TRUE(start(8, RingOptions{.event_idx = false, .indirect = true, .max_chain_bytes = 100}));
  driver->add(chain().writable(60).writable(41));
  expect_violation("more than 100 bytes");
}

// Two 2 GiB descriptors add up to 2^32 bytes, one more than a used length can report
// (§2.7.5.2). The memory is PROT_NONE: any access by the device would crash the test.
TEST_F(SplitQueueTest, ChainTotalOverflowing32BitsIsRefusedWithoutTouchingIt) {
  constexpr std::size_t kHalf = std::size_t{1} << 31;
  void* big =
      ::mmap(nullptr, 2 * kHalf, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  ASSERT_NE(big, MAP_FAILED);
  MemoryRegionSpec spec;
  spec.guest_address = 0x100000000;
  spec.size = 2 * kHalf;
  spec.host = static_cast<std::uint8_t*>(big);
  ASSERT_TRUE(memory->add_region(std::move(spec)));
  ASSERT_TRUE(start(8));
  driver->add(chain()
                  .element(BufferElement{0x100000000, 0x80000000u, false, 0})
                  .element(BufferElement{0x180000000, 0x80000000u, false, 0}));
  expect_violation("more than 4294967295 bytes");
  ASSERT_TRUE(memory->remove_range(0x100000000, 2 * kHalf));
  ::munmap(big, 2 * kHalf);
}

// ---- notifications
// --------------------------------------------------------------------------------

TEST_F(SplitQueueTest, NoInterruptFlagSuppressesNotificationsWithoutEventIdx) {
  ASSERT_TRUE(start(8));
  driver->add(chain().writable(1));
  queue->pop()->complete(1);
  queue->notify_driver_if_needed();
  EXPECT_EQ(sink.notifications.size(), 1u);
  queue->notify_driver_if_needed();  // nothing new used: nothing sent
  EXPECT_EQ(sink.notifications.size(), 1u);
  driver->set_avail_flags(kAvailFlagNoInterrupt);
  driver->add(chain().writable(1));
  queue->pop()->complete(1);
  queue->notify_driver_if_needed();
  EXPECT_EQ(sink.notifications.size(), 1u);
}

TEST_F(SplitQueueTest, EventIdxNotifiesExactlyWhenUsedEventIsCrossed) {
  ASSERT_TRUE(start(8, RingOptions{.event_idx = true, .indirect = false}));
  driver->set_used_event(2);  // "tell me when the entry at used index 2 is written"
  for (int i = 0; i < 4; ++i) driver->add(chain().writable(1));
  std::vector<std::size_t> counts;
  for (int i = 0; i < 4; ++i) {
    queue->pop()->complete(1);
    queue->notify_driver_if_needed();
    counts.push_back(sink.notifications.size());
  }
  EXPECT_EQ(counts, (std::vector<std::size_t>{0, 0, 1, 1}));
  // Batched: two entries used in one go that jump over used_event still notify.
  driver->set_used_event(5);
  driver->add(chain().writable(1));
  driver->add(chain().writable(1));
  queue->pop()->complete(1);
  queue->pop()->complete(1);
  queue->notify_driver_if_needed();
  EXPECT_EQ(sink.notifications.size(), 2u);
}

TEST_F(SplitQueueTest, EventIdxPublishesAvailEventWhenTheRingRunsEmpty) {
  ASSERT_TRUE(start(8, RingOptions{.event_idx = true, .indirect = false}));
  for (int i = 0; i < 3; ++i) driver->add(chain().writable(1));
  for (int i = 0; i < 3; ++i) queue->pop()->complete(1);
  EXPECT_FALSE(queue->pop().has_value());
  // §2.7.10.2: notify me when you fill entry 3.
  EXPECT_EQ(driver->avail_event(), 3u);
}

TEST_F(SplitQueueTest, IndicesWrapAround16Bits) {
  ASSERT_TRUE(start(4, RingOptions{.event_idx = true, .indirect = false}));
  for (int i = 0; i < 70000; ++i) {
    driver->add(chain().writable(1));
    auto popped = queue->pop();
    ASSERT_TRUE(popped.has_value()) << i;
    popped->complete(1);
    queue->notify_driver_if_needed();
    ASSERT_TRUE(driver->pop_used().has_value());
    if (i % 1000 == 999) ram.reset_allocator(4096);  // buffers are recycled
  }
  EXPECT_FALSE(queue->failed());
  EXPECT_EQ(driver->used_idx(), static_cast<std::uint16_t>(70000));
}

TEST(LegacySplitLayout, PlacesTheUsedRingOnTheNextAlignmentBoundary) {
  auto layout = legacy_split_layout(0x10000, 256, 4096);
  ASSERT_TRUE(layout);
  EXPECT_EQ(layout->desc, 0x10000u);
  EXPECT_EQ(layout->driver, 0x11000u);  // 16 * 256 bytes of descriptors
  EXPECT_EQ(layout->device, 0x12000u);  // 0x11000 + 6 + 512 rounded up
  auto small = legacy_split_layout(0x20000, 8, 4096);
  ASSERT_TRUE(small);
  EXPECT_EQ(small->driver, 0x20080u);
  EXPECT_EQ(small->device, 0x21000u);
  EXPECT_FALSE(legacy_split_layout(0x10000, 100, 4096));                   // not a power of two
  EXPECT_FALSE(legacy_split_layout(~std::uint64_t{0} - 4095, 256, 4096));  // wraps
}

TEST_F(SplitQueueTest, UsedBatchPublishesEveryEntryWithOneIdxStore) {
  ASSERT_TRUE(start());
  for (int i = 0; i < 3; ++i) driver->add(chain().writable(16));
  auto first = queue->pop();
  auto second = queue->pop();
  ASSERT_TRUE(first && second);
  queue->begin_used_batch();
  first->complete(16);
  second->complete(8);
  // Written, but the driver sees neither until the batch ends.
  EXPECT_EQ(driver->used_idx(), 0u);
  EXPECT_FALSE(driver->pop_used().has_value());
  queue->end_used_batch();
  EXPECT_EQ(driver->used_idx(), 2u);
  EXPECT_EQ(driver->pop_used()->length, 16u);
  EXPECT_EQ(driver->pop_used()->length, 8u);
  // Outside a batch every completion is visible at once again.
  auto third = queue->pop();
  ASSERT_TRUE(third.has_value());
  third->complete(4);
  EXPECT_EQ(driver->used_idx(), 3u);
}

TEST_F(SplitQueueTest, ReturnedChainsArePoppedAgainInOrder) {
  ASSERT_TRUE(start());
  const std::uint16_t a = driver->add(chain().writable(16));
  const std::uint16_t b = driver->add(chain().writable(32));
  auto first = queue->pop();
  auto second = queue->pop();
  ASSERT_TRUE(first && second);
  // Newest first, as the contract says.
  second->return_to_ring();
  first->return_to_ring();
  EXPECT_EQ(queue->stats().popped, 0u);
  auto again = queue->pop();
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->id(), a);
  auto again2 = queue->pop();
  ASSERT_TRUE(again2.has_value());
  EXPECT_EQ(again2->id(), b);
  EXPECT_EQ(again2->writable_bytes(), 32u);
  // A returned chain is finished: destroying it is not an abandonment.
  EXPECT_EQ(queue->stats().abandoned, 0u);
}

}  // namespace
}  // namespace vpci::virtio
