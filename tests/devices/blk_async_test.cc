// virtio-blk on an event loop: requests go to the I/O engine (io_uring or the thread
// pool, devices/block_io.h), many are in flight at once, and they complete from the
// loop. Each test runs on both engines.
#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include <gtest/gtest.h>

#include "tests/devices/blk_harness.h"

namespace vpci::devices {
namespace {

using testing::BlkHarness;
using testing::BlkRequest;
using testing::MemoryBackend;
using testing::Ring;
using testing::TempFile;

constexpr std::uint64_t kDiskBytes = 1 << 20;

std::vector<std::uint8_t> pattern(std::uint64_t sector, std::size_t bytes) {
  std::vector<std::uint8_t> data(bytes);
  for (std::size_t i = 0; i < bytes; ++i)
    data[i] = static_cast<std::uint8_t>(sector * 7 + i * 13 + 1);
  return data;
}

class BlockAsync : public ::testing::TestWithParam<BlockIoMode> {
 protected:
  void SetUp() override {
    auto loop = EventLoop::create();
    ASSERT_TRUE(loop);
    loop_ = std::move(*loop);
  }
  std::unique_ptr<BlkHarness> start(bool file_read_only = false, bool device_read_only = false) {
    auto backend = FileBlockBackend::open(file_.path(), file_read_only);
    EXPECT_TRUE(backend);
    BlockDeviceOptions options;
    options.io = GetParam();
    options.read_only = device_read_only;
    options.num_queues = 2;
    auto device = BlockDevice::create(std::move(*backend), options);
    EXPECT_TRUE(device);
    return std::make_unique<BlkHarness>(std::move(*device), Ring::kSplit, 0,
                                        virtio::testing::RamBacking::kMapped, loop_.get());
  }
  // Adds one write to queue 0 and notifies, without running the loop: the write is in
  // flight when this returns.
  static virtio::testing::ChainBuilder queue_write(BlkHarness& blk, std::uint64_t sector,
                                                   std::span<const std::uint8_t> data) {
    const blk::RequestHeader header{virtio::to_le(blk::kTypeOut), 0, virtio::to_le(sector)};
    virtio::testing::ChainBuilder chain(blk.ram());
    chain
        .readable(std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(&header),
                                                sizeof(header)))
        .readable(data)
        .writable(1);
    blk.add_raw(0, chain);
    EXPECT_TRUE(blk.core().notify(0));
    return chain;
  }
  [[nodiscard]] std::string_view engine() const {
    return GetParam() == BlockIoMode::kThreads ? "thread pool" : "io_uring";
  }

  TempFile file_{kDiskBytes};
  std::unique_ptr<EventLoop> loop_;
};

TEST_P(BlockAsync, ManyRequestsInFlightCompleteFromTheLoop) {
  auto blk = start();
  std::vector<BlkRequest> writes;
  for (std::uint64_t i = 0; i < 32; ++i)
    writes.push_back(BlkRequest{blk::kTypeOut, i * 8, pattern(i * 8, 4096), 0});
  const auto written = blk->submit_all(1, writes);
  for (const auto& result : written) EXPECT_EQ(result.status, blk::kStatusOk);
  EXPECT_EQ(blk->device().io_engine(), engine());
  EXPECT_EQ(blk->device().stats().asynchronous, 32u);
  // Nothing completed inside the notification: the used entries came from the loop.
  EXPECT_EQ(blk->core().queue(1)->stats().completed, 32u);

  const auto disk = file_.contents();
  for (std::uint64_t i = 0; i < 32; ++i) {
    const auto expected = pattern(i * 8, 4096);
    EXPECT_EQ(std::memcmp(disk.data() + i * 8 * 512, expected.data(), expected.size()), 0) << i;
  }
  std::vector<BlkRequest> reads;
  for (std::uint64_t i = 0; i < 32; ++i) reads.push_back(BlkRequest{blk::kTypeIn, i * 8, {}, 4096});
  reads.push_back(BlkRequest{blk::kTypeFlush, 0, {}, 0});
  const auto read = blk->submit_all(0, reads);
  for (std::uint64_t i = 0; i < 32; ++i) {
    EXPECT_EQ(read[i].status, blk::kStatusOk);
    EXPECT_EQ(read[i].data, pattern(i * 8, 4096)) << i;
    EXPECT_EQ(read[i].used_length, 4097u);  // data and status (§2.7.8.2)
  }
  EXPECT_EQ(read.back().status, blk::kStatusOk);
  EXPECT_EQ(blk->device().stats().asynchronous, 32u + 33u);
}

TEST_P(BlockAsync, AnIoErrorFailsThatRequestOnly) {
  // The file is open read-only underneath a device that offers writes: the kernel
  // refuses the write (EBADF) and only that request gets IOERR.
  auto blk = start(/*file_read_only=*/true);
  const auto results = blk->submit_all(
      0, {BlkRequest{blk::kTypeOut, 0, pattern(0, 512), 0}, BlkRequest{blk::kTypeIn, 8, {}, 512}});
  EXPECT_EQ(results[0].status, blk::kStatusIoErr);
  EXPECT_EQ(results[1].status, blk::kStatusOk);
  EXPECT_EQ(blk->device().stats().io_errors, 1u);
  EXPECT_FALSE(blk->core().queue(0)->failed());
}

TEST_P(BlockAsync, RequestsRefusedUpFrontCompleteInsideTheNotification) {
  auto blk = start(false, /*device_read_only=*/true);
  const auto results =
      blk->submit_all(0, {BlkRequest{blk::kTypeOut, 0, pattern(0, 512), 0},     // read-only
                          BlkRequest{blk::kTypeIn, kDiskBytes / 512, {}, 512},  // beyond the end
                          BlkRequest{blk::kTypeIn, 0, {}, 100},                 // not whole sectors
                          BlkRequest{blk::kTypeGetId, 0, {}, 20}});
  EXPECT_EQ(results[0].status, blk::kStatusIoErr);
  EXPECT_EQ(results[1].status, blk::kStatusIoErr);
  EXPECT_EQ(results[2].status, blk::kStatusIoErr);
  EXPECT_EQ(results[3].status, blk::kStatusOk);
  EXPECT_EQ(blk->device().stats().asynchronous, 0u);
}

TEST_P(BlockAsync, DrainDeliversEveryCompletionBeforeReturning) {
  auto blk = start();
  const auto data = pattern(3, 4096);
  const auto chain = queue_write(*blk, 24, data);
  EXPECT_EQ(blk->core().queue(0)->stats().completed, 0u);  // in flight
  blk->core().drain();
  EXPECT_EQ(blk->core().queue(0)->stats().completed, 1u);
  EXPECT_EQ(chain.written_bytes().back(), blk::kStatusOk);
  const auto disk = file_.contents();
  EXPECT_EQ(std::memcmp(disk.data() + 24 * 512, data.data(), data.size()), 0);
}

TEST_P(BlockAsync, DeviceResetDrainsAndTheNextDriverOkStartsAFreshEngine) {
  auto blk = start();
  const auto data = pattern(5, 2048);
  queue_write(*blk, 40, data);
  ASSERT_TRUE(blk->core().write_status(0));  // reset with the write in flight
  // The write finished before the reset returned (nothing touches guest memory later),
  // and the engine is gone until the next DRIVER_OK.
  const auto disk = file_.contents();
  EXPECT_EQ(std::memcmp(disk.data() + 40 * 512, data.data(), data.size()), 0);
  EXPECT_EQ(blk->device().io_engine(), "");
}

INSTANTIATE_TEST_SUITE_P(Engines, BlockAsync,
                         ::testing::Values(BlockIoMode::kIoUring, BlockIoMode::kThreads),
                         [](const auto& test) {
                           return test.param == BlockIoMode::kThreads ? std::string("Threads")
                                                                      : std::string("IoUring");
                         });

TEST(BlockIoEngine, AutoFallsBackToThreadsForABackendWithoutADescriptor) {
  auto loop = EventLoop::create();
  ASSERT_TRUE(loop);
  MemoryBackend backend(4096);
  struct Sink final : BlockIoCompletions {
    void io_completed(std::uint64_t, Status) override {}
    void io_batch_done() override {}
  } sink;
  auto io = open_block_io(BlockIoMode::kAuto, backend, 8, **loop, sink);
  ASSERT_TRUE(io);
  EXPECT_EQ((*io)->name(), "thread pool");
  auto refused = open_block_io(BlockIoMode::kIoUring, backend, 8, **loop, sink);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::kUnsupported);
  EXPECT_NE(refused.error().message.find("io_uring needs a file descriptor"), std::string::npos);
}

}  // namespace
}  // namespace vpci::devices
