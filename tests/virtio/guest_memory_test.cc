#include "virtio/guest_memory.h"

#include <atomic>
#include <cstring>
#include <map>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "virtio/xen_grant.h"

namespace vpci::virtio {
namespace {

MemoryRegionSpec region(GuestAddress base, std::vector<std::uint8_t>& bytes, bool writable = true) {
  MemoryRegionSpec spec;
  spec.guest_address = base;
  spec.size = bytes.size();
  spec.host = bytes.data();
  spec.writable = writable;
  return spec;
}

std::span<std::uint8_t> as_span(std::vector<std::uint8_t>& v) {
  return v;
}

TEST(GuestMemory, ReadsAndWritesInsideARegion) {
  GuestMemory memory;
  std::vector<std::uint8_t> ram(4096, 0);
  ASSERT_TRUE(memory.add_region(region(0x1000, ram)));
  auto map = memory.snapshot();
  ASSERT_TRUE(map->write_obj<std::uint32_t>(0x1010, 0xdeadbeef));
  EXPECT_EQ(ram[0x10], 0xef);
  auto value = map->read_obj<std::uint32_t>(0x1010);
  ASSERT_TRUE(value);
  EXPECT_EQ(*value, 0xdeadbeefu);
  // Last byte of the region is reachable, one past it is not.
  EXPECT_TRUE(map->read_obj<std::uint8_t>(0x1FFF));
  EXPECT_FALSE(map->read_obj<std::uint16_t>(0x1FFF));
  EXPECT_FALSE(map->read_obj<std::uint8_t>(0x0FFF));
}

TEST(GuestMemory, AccessSpanningAdjacentRegionsWorks) {
  GuestMemory memory;
  std::vector<std::uint8_t> a(16, 0xAA), b(16, 0xBB);
  ASSERT_TRUE(memory.add_region(region(0x100, a)));
  ASSERT_TRUE(memory.add_region(region(0x110, b)));
  std::vector<std::uint8_t> out(8);
  ASSERT_TRUE(memory.snapshot()->read(0x10C, as_span(out)));
  EXPECT_EQ(out, (std::vector<std::uint8_t>{0xAA, 0xAA, 0xAA, 0xAA, 0xBB, 0xBB, 0xBB, 0xBB}));
  auto buffers = memory.snapshot()->host_buffers(0x10C, 8, Access::kWrite);
  ASSERT_TRUE(buffers);
  ASSERT_EQ(buffers->spans.size(), 2u);
  EXPECT_EQ(buffers->spans[0].data(), a.data() + 12);
  EXPECT_EQ(buffers->spans[1].data(), b.data());
  EXPECT_EQ(buffers->total_bytes(), 8u);
}

TEST(GuestMemory, PartlyUnmappedWriteChangesNothing) {
  GuestMemory memory;
  std::vector<std::uint8_t> ram(16, 0);
  ASSERT_TRUE(memory.add_region(region(0x100, ram)));
  std::vector<std::uint8_t> data(8, 0x55);
  auto result = memory.snapshot()->write(0x10C, data);
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().code, ErrorCode::kOutOfRange);
  EXPECT_EQ(ram, std::vector<std::uint8_t>(16, 0));
}

TEST(GuestMemory, RangesWrappingPastTheAddressSpaceAreRefused) {
  GuestMemory memory;
  std::vector<std::uint8_t> ram(4096, 0);
  // A region ending exactly at 2^64 - 1 is fine.
  ASSERT_TRUE(memory.add_region(region(~std::uint64_t{0} - 4095, ram)));
  auto map = memory.snapshot();
  EXPECT_TRUE(map->read_obj<std::uint8_t>(~std::uint64_t{0}));
  EXPECT_FALSE(map->read_obj<std::uint16_t>(~std::uint64_t{0}));
  EXPECT_FALSE(map->check_range(~std::uint64_t{0} - 10, 100, Access::kRead));
  EXPECT_TRUE(map->check_range(~std::uint64_t{0} - 10, 11, Access::kRead));
  std::vector<std::uint8_t> more(16);
  MemoryRegionSpec wrapping = region(~std::uint64_t{0} - 7, more);
  EXPECT_FALSE(memory.add_region(std::move(wrapping)));
}

TEST(GuestMemory, ReadOnlyRegionsRefuseDeviceWrites) {
  GuestMemory memory;
  std::vector<std::uint8_t> ram(64, 7);
  ASSERT_TRUE(memory.add_region(region(0x2000, ram, /*writable=*/false)));
  auto map = memory.snapshot();
  EXPECT_TRUE(map->read_obj<std::uint8_t>(0x2000));
  EXPECT_FALSE(map->write_obj<std::uint8_t>(0x2000, 1));
  EXPECT_FALSE(map->host_buffers(0x2000, 4, Access::kWrite));
  EXPECT_FALSE(map->check_range(0x2000, 4, Access::kWrite));
  EXPECT_TRUE(map->check_range(0x2000, 64, Access::kRead));
  EXPECT_EQ(ram[0], 7);
}

TEST(GuestMemory, BadRegionsAreRefused) {
  GuestMemory memory;
  std::vector<std::uint8_t> ram(64), other(64);
  ASSERT_TRUE(memory.add_region(region(0x1000, ram)));
  EXPECT_EQ(memory.add_region(region(0x1020, other)).error().code, ErrorCode::kConflict);
  EXPECT_EQ(memory.add_region(region(0x0FC1, other)).error().code, ErrorCode::kConflict);
  EXPECT_TRUE(memory.add_region(region(0x0FC0, other)));  // ends right before 0x1000
  MemoryRegionSpec empty;
  empty.guest_address = 0x9000;
  empty.host = ram.data();
  EXPECT_FALSE(memory.add_region(std::move(empty)));
  MemoryRegionSpec null_host;
  null_host.guest_address = 0x9000;
  null_host.size = 16;
  EXPECT_FALSE(memory.add_region(std::move(null_host)));
}

// A MessageMemory that serves a vector, counting calls, optionally failing.
class VectorMessages final : public MessageMemory {
 public:
  VectorMessages(GuestAddress base, std::size_t size) : base_(base), bytes_(size, 0) {}
  Status read(GuestAddress address, std::span<std::uint8_t> out) override {
    ++calls;
    if (fail) return make_error(ErrorCode::kIoError, "peer gone");
    std::memcpy(out.data(), bytes_.data() + (address - base_), out.size());
    return {};
  }
  Status write(GuestAddress address, std::span<const std::uint8_t> data) override {
    ++calls;
    if (fail) return make_error(ErrorCode::kIoError, "peer gone");
    std::memcpy(bytes_.data() + (address - base_), data.data(), data.size());
    return {};
  }
  std::vector<std::uint8_t>& bytes() { return bytes_; }
  int calls = 0;
  bool fail = false;

 private:
  GuestAddress base_;
  std::vector<std::uint8_t> bytes_;
};

TEST(GuestMemory, RegionsNeedExactlyOneOfHostAndMessages) {
  GuestMemory memory;
  std::vector<std::uint8_t> ram(64);
  MemoryRegionSpec both = region(0x1000, ram);
  both.messages = std::make_shared<VectorMessages>(0x1000, 64);
  EXPECT_EQ(memory.add_region(std::move(both)).error().code, ErrorCode::kInvalidArgument);
  MemoryRegionSpec messages;
  messages.guest_address = 0x1000;
  messages.size = 64;
  messages.messages = std::make_shared<VectorMessages>(0x1000, 64);
  EXPECT_TRUE(memory.add_region(std::move(messages)));
}

// Reads and writes reach message-backed regions through their MessageMemory, also when
// a range spans a mapped and a message-backed region; zero-copy views are refused there,
// and a failing peer fails the access.
TEST(GuestMemory, MessageBackedRegionsAreReachedThroughTheirMessages) {
  GuestMemory memory;
  std::vector<std::uint8_t> ram(0x1000, 0xAA);
  ASSERT_TRUE(memory.add_region(region(0x1000, ram)));
  auto messages = std::make_shared<VectorMessages>(0x2000, 0x1000);
  MemoryRegionSpec spec;
  spec.guest_address = 0x2000;
  spec.size = 0x1000;
  spec.messages = messages;
  ASSERT_TRUE(memory.add_region(std::move(spec)));
  const auto map = memory.snapshot();
  EXPECT_FALSE(map->all_host_mapped());

  const std::vector<std::uint8_t> data{1, 2, 3, 4, 5, 6, 7, 8};
  ASSERT_TRUE(map->write(0x1FFC, data));  // 4 bytes mapped, 4 through messages
  EXPECT_EQ(ram[0xFFC], 1);
  EXPECT_EQ(ram[0xFFF], 4);
  EXPECT_EQ(messages->bytes()[0], 5);
  EXPECT_EQ(messages->bytes()[3], 8);
  std::vector<std::uint8_t> back(8);
  ASSERT_TRUE(map->read(0x1FFC, back));
  EXPECT_EQ(back, data);
  EXPECT_EQ(messages->calls, 2);
  EXPECT_EQ(map->host_buffers(0x2000, 16, Access::kRead).error().code, ErrorCode::kUnsupported);
  EXPECT_TRUE(map->host_buffers(0x1000, 16, Access::kRead));

  messages->fail = true;
  EXPECT_EQ(map->read(0x2000, back).error().code, ErrorCode::kIoError);
}

TEST(GuestMemory, RemoveRangeNeverSplitsRegions) {
  GuestMemory memory;
  std::vector<std::uint8_t> a(0x1000), b(0x1000);
  ASSERT_TRUE(memory.add_region(region(0x10000, a)));
  ASSERT_TRUE(memory.add_region(region(0x11000, b)));
  EXPECT_EQ(memory.remove_range(0x10800, 0x1000).error().code, ErrorCode::kConflict);
  EXPECT_EQ(memory.snapshot()->regions().size(), 2u);  // nothing removed
  EXPECT_EQ(memory.remove_range(0x20000, 0x1000).error().code, ErrorCode::kNotFound);
  auto removed = memory.remove_range(0x10000, 0x2000);
  ASSERT_TRUE(removed);
  EXPECT_EQ(*removed, 2u);
  EXPECT_TRUE(memory.snapshot()->regions().empty());
}

// The vfio-user DMA_UNMAP case: a request in flight holds a snapshot; the mapping must
// stay valid until it is done, and only then be released.
TEST(GuestMemory, RemovedRegionStaysMappedUntilTheLastSnapshotIsDropped) {
  GuestMemory memory;
  std::vector<std::uint8_t> ram(4096, 0x42);
  int released = 0;
  MemoryRegionSpec spec = region(0x8000, ram);
  spec.on_release = [&] { ++released; };
  ASSERT_TRUE(memory.add_region(std::move(spec)));

  auto in_flight = memory.snapshot();
  ASSERT_TRUE(memory.remove_range(0x8000, 4096));
  EXPECT_EQ(released, 0);
  EXPECT_FALSE(memory.snapshot()->read_obj<std::uint8_t>(0x8000));  // new users see it gone
  auto value = in_flight->read_obj<std::uint8_t>(0x8000);           // old ones still work
  ASSERT_TRUE(value);
  EXPECT_EQ(*value, 0x42);
  in_flight.reset();
  EXPECT_EQ(released, 1);
}

TEST(GuestMemory, ReleaseHookMayCallBackIntoGuestMemory) {
  auto memory = std::make_shared<GuestMemory>();
  std::vector<std::uint8_t> ram(64);
  bool called = false;
  MemoryRegionSpec spec = region(0x1000, ram);
  spec.on_release = [&] {
    // Would deadlock if the hook ran under GuestMemory's lock.
    called = memory->snapshot()->regions().empty();
  };
  ASSERT_TRUE(memory->add_region(std::move(spec)));
  ASSERT_TRUE(memory->remove_range(0x1000, 64));
  EXPECT_TRUE(called);
}

TEST(GuestMemory, ObserverSeesEveryHostRangeTouched) {
  GuestMemory memory;
  std::vector<std::uint8_t> a(16), b(16);
  ASSERT_TRUE(memory.add_region(region(0x100, a)));
  ASSERT_TRUE(memory.add_region(region(0x110, b)));
  std::vector<AccessRecord> records;
  memory.set_access_observer([&](const AccessRecord& r) { records.push_back(r); });
  std::vector<std::uint8_t> out(8);
  ASSERT_TRUE(memory.snapshot()->read(0x10C, as_span(out)));
  ASSERT_TRUE(memory.snapshot()->write_obj<std::uint8_t>(0x100, 1));
  ASSERT_EQ(records.size(), 3u);
  EXPECT_EQ(records[0].host, a.data() + 12);
  EXPECT_EQ(records[0].length, 4u);
  EXPECT_EQ(records[1].host, b.data());
  EXPECT_EQ(records[1].length, 4u);
  EXPECT_EQ(records[2].access, Access::kWrite);
  // check_range touches nothing and reports nothing.
  ASSERT_TRUE(memory.snapshot()->check_range(0x100, 32, Access::kRead));
  EXPECT_EQ(records.size(), 3u);
}

// A grant mapper over a fake frontend: grant refs 10..13 name four pages; ref 12 is
// granted read-only.
class FakeGrantTable final : public GrantMapper {
 public:
  FakeGrantTable() {
    for (std::uint32_t ref = 10; ref < 14; ++ref)
      pages_[ref].assign(kXenPageSize, static_cast<std::uint8_t>(ref));
  }
  Result<MappedGrantPage> map_page(std::uint32_t ref, Access access) override {
    auto it = pages_.find(ref);
    if (it == pages_.end()) return make_error(ErrorCode::kNotFound, "no grant {}", ref);
    if (ref == 12 && access == Access::kWrite)
      return make_error(ErrorCode::kOutOfRange, "grant {} is read-only", ref);
    ++maps;
    auto unmap = std::shared_ptr<const void>(nullptr, [this](const void*) { ++unmaps; });
    return MappedGrantPage{it->second, unmap};
  }
  std::map<std::uint32_t, std::vector<std::uint8_t>> pages_;
  int maps = 0;
  int unmaps = 0;
};

TEST(GuestMemory, XenGrantAddressesAreResolvedByTheTranslator) {
  GuestMemory memory;
  auto grants = std::make_shared<FakeGrantTable>();
  memory.set_translator(std::make_shared<XenGrantTranslator>(grants));
  auto map = memory.snapshot();

  const GuestAddress address = encode_xen_grant_address(10, 4090);
  EXPECT_TRUE(is_xen_grant_address(address));
  EXPECT_EQ(decode_xen_grant_address(address).grant_ref, 10u);
  EXPECT_EQ(decode_xen_grant_address(address).offset, 4090u);
  // 12 bytes from the end of page 10 into page 11: consecutive refs, one linear range.
  std::vector<std::uint8_t> out(12);
  ASSERT_TRUE(map->read(address, as_span(out)));
  EXPECT_EQ(out, (std::vector<std::uint8_t>{10, 10, 10, 10, 10, 10, 11, 11, 11, 11, 11, 11}));
  EXPECT_EQ(grants->maps, 2);
  EXPECT_EQ(grants->unmaps, 2);  // pins dropped after the copy

  auto buffers = map->host_buffers(encode_xen_grant_address(11, 0), 4096 + 10, Access::kRead);
  ASSERT_TRUE(buffers);
  EXPECT_EQ(buffers->spans.size(), 2u);
  EXPECT_EQ(grants->unmaps, 2);  // the list pins both pages
  buffers = tl::unexpected(Error{});
  EXPECT_EQ(grants->unmaps, 4);

  EXPECT_FALSE(
      map->write_obj<std::uint8_t>(encode_xen_grant_address(12, 0), 1));       // read-only grant
  EXPECT_FALSE(map->read_obj<std::uint8_t>(encode_xen_grant_address(99, 0)));  // no such grant
  // Grant references are 32 bits; larger ones cannot come from a real frontend.
  EXPECT_FALSE(map->read_obj<std::uint8_t>(kXenGrantAddressFlag | (std::uint64_t{1} << 45)));
}

class BrokenTranslator final : public AddressTranslator {
 public:
  bool handles(GuestAddress) const override { return true; }
  Result<TranslatedRange> translate(GuestAddress, std::uint64_t length, Access) override {
    return TranslatedRange{std::span<std::uint8_t>(
                               storage_.data(), std::min<std::size_t>(storage_.size(), length + 1)),
                           nullptr};
  }
  std::vector<std::uint8_t> storage_ = std::vector<std::uint8_t>(64);
};

TEST(GuestMemory, TranslatorReturningTooMuchIsAnError) {
  GuestMemory memory;
  memory.set_translator(std::make_shared<BrokenTranslator>());
  EXPECT_FALSE(memory.snapshot()->read_obj<std::uint32_t>(0x1000));
}

// Map and unmap from one thread while another reads through snapshots: the reader
// either finds the region or gets an error, never touches released memory. Run under
// the tsan and asan presets this also checks the locking.
TEST(GuestMemory, ConcurrentMapUnmapAndReads) {
  auto memory = std::make_shared<GuestMemory>();
  std::atomic<bool> stop{false};
  std::atomic<int> released{0};
  std::thread mapper([&] {
    for (int i = 0; i < 2000; ++i) {
      auto* bytes = new std::vector<std::uint8_t>(256, static_cast<std::uint8_t>(i));
      MemoryRegionSpec spec;
      spec.guest_address = 0x4000;
      spec.size = bytes->size();
      spec.host = bytes->data();
      spec.on_release = [bytes, &released] {
        delete bytes;
        ++released;
      };
      if (!memory->add_region(std::move(spec))) std::abort();
      if (!memory->remove_range(0x4000, 256)) std::abort();
    }
    stop = true;
  });
  int hits = 0;
  while (!stop) {
    auto map = memory->snapshot();
    std::vector<std::uint8_t> out(256);
    if (map->read(0x4000, as_span(out))) {
      ++hits;
      for (auto byte : out) ASSERT_EQ(byte, out[0]);  // one region's bytes, never torn
    }
  }
  mapper.join();
  EXPECT_EQ(released.load(), 2000);
  (void)hits;
}

}  // namespace
}  // namespace vpci::virtio
