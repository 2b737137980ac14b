// virtio-blk: configuration, every request type and status, read-only mode, error
// mapping, multi-queue, and random workloads checked against a shadow copy.
#include <numeric>
#include <random>

#include <gtest/gtest.h>

#include "devices/virtio_blk.h"
#include "tests/devices/blk_harness.h"

namespace vpci::devices {
namespace {

using testing::BlkHarness;
using testing::BlkResult;
using testing::MemoryBackend;
using testing::Ring;
using testing::TempFile;

constexpr std::uint64_t kDiskBytes = 1 << 20;  // 2048 sectors
constexpr std::uint64_t kSectors = kDiskBytes / 512;

std::unique_ptr<BlockDevice> file_device(const TempFile& file, BlockDeviceOptions options = {}) {
  auto backend = FileBlockBackend::open(file.path(), options.read_only);
  if (!backend) throw std::runtime_error(backend.error().message);
  auto device = BlockDevice::create(std::move(*backend), std::move(options));
  if (!device) throw std::runtime_error(device.error().message);
  return std::move(*device);
}

std::unique_ptr<BlockDevice> memory_device(MemoryBackend** out, BlockDeviceOptions options = {}) {
  auto backend = std::make_unique<MemoryBackend>(kDiskBytes);
  *out = backend.get();
  auto device = BlockDevice::create(std::move(backend), std::move(options));
  if (!device) throw std::runtime_error(device.error().message);
  return std::move(*device);
}

std::vector<std::uint8_t> pattern(std::size_t bytes, std::uint8_t seed) {
  std::vector<std::uint8_t> data(bytes);
  for (std::size_t i = 0; i < bytes; ++i)
    data[i] = static_cast<std::uint8_t>(seed + i * 7 + (i >> 9));
  return data;
}

template <typename T>
T config_field(virtio::DeviceCore& core, std::uint32_t offset) {
  T value{};
  std::array<std::uint8_t, sizeof(T)> bytes{};
  EXPECT_TRUE(core.read_config(offset, bytes));
  std::memcpy(&value, bytes.data(), sizeof(T));
  return virtio::from_le(value);
}

// ---- configuration
// ------------------------------------------------------------------------------------

TEST(BlockDevice, ConfigurationSpaceReflectsTheOptions) {
  TempFile file(kDiskBytes + 100);  // a partial trailing sector is not addressable
  BlockDeviceOptions options;
  options.num_queues = 3;
  options.queue_size = 128;
  options.logical_block_size = 4096;
  options.physical_block_exp = 1;
  options.alignment_offset = 2;
  options.min_io_size = 4;
  options.opt_io_size = 64;
  options.max_discard_sectors = 1000;
  options.max_discard_seg = 3;
  options.max_write_zeroes_sectors = 2000;
  options.max_write_zeroes_seg = 5;
  BlkHarness blk(file_device(file, options), Ring::kSplit);
  auto& core = blk.core();
  EXPECT_EQ(core.device_id(), 2u);
  EXPECT_EQ(core.config_size(), 60u);
  EXPECT_EQ(config_field<std::uint64_t>(core, blk::config::kCapacity), kSectors);
  EXPECT_EQ(config_field<std::uint32_t>(core, blk::config::kSegMax), 126u);  // queue size - 2
  EXPECT_EQ(config_field<std::uint32_t>(core, blk::config::kBlkSize), 4096u);
  EXPECT_EQ(config_field<std::uint8_t>(core, blk::config::kPhysicalBlockExp), 1u);
  EXPECT_EQ(config_field<std::uint8_t>(core, blk::config::kAlignmentOffset), 2u);
  EXPECT_EQ(config_field<std::uint16_t>(core, blk::config::kMinIoSize), 4u);
  EXPECT_EQ(config_field<std::uint32_t>(core, blk::config::kOptIoSize), 64u);
  EXPECT_EQ(config_field<std::uint16_t>(core, blk::config::kNumQueues), 3u);
  EXPECT_EQ(config_field<std::uint32_t>(core, blk::config::kMaxDiscardSectors), 1000u);
  EXPECT_EQ(config_field<std::uint32_t>(core, blk::config::kMaxDiscardSeg), 3u);
  EXPECT_EQ(config_field<std::uint32_t>(core, blk::config::kDiscardSectorAlignment), 8u);
  EXPECT_EQ(config_field<std::uint32_t>(core, blk::config::kMaxWriteZeroesSectors), 2000u);
  EXPECT_EQ(config_field<std::uint32_t>(core, blk::config::kMaxWriteZeroesSeg), 5u);
  EXPECT_EQ(config_field<std::uint8_t>(core, blk::config::kWriteZeroesMayUnmap), 1u);
  const std::uint64_t features = core.device_features();
  for (unsigned bit :
       {blk::kFeatureSegMax, blk::kFeatureBlkSize, blk::kFeatureFlush, blk::kFeatureTopology,
        blk::kFeatureMultiQueue, blk::kFeatureDiscard, blk::kFeatureWriteZeroes}) {
    EXPECT_TRUE(virtio::has_feature(features, bit)) << bit;
  }
  EXPECT_FALSE(virtio::has_feature(features, blk::kFeatureReadOnly));
  EXPECT_FALSE(virtio::has_feature(features, blk::kFeatureConfigWce));
  EXPECT_FALSE(virtio::has_feature(features, blk::kFeatureSizeMax));
  std::array<std::uint8_t, 4> past_end{};
  EXPECT_FALSE(core.read_config(58, past_end));
}

TEST(BlockDevice, BadOptionsAreRefused) {
  auto make = [](BlockDeviceOptions options) {
    return BlockDevice::create(std::make_unique<MemoryBackend>(4096), std::move(options));
  };
  EXPECT_FALSE(make(BlockDeviceOptions{.num_queues = 0}));
  EXPECT_FALSE(make(BlockDeviceOptions{.queue_size = 100}));
  EXPECT_FALSE(make(BlockDeviceOptions{.logical_block_size = 1000}));
  BlockDeviceOptions long_serial;
  long_serial.serial = std::string(21, 'x');
  EXPECT_FALSE(make(long_serial));
  EXPECT_FALSE(BlockDevice::create(nullptr, {}));
}

TEST(BlockDevice, OpeningSomethingThatIsNotADiskFails) {
  EXPECT_FALSE(FileBlockBackend::open("/dev/null", true));  // character device
  EXPECT_FALSE(FileBlockBackend::open("/nonexistent/vpci", false));
}

// ---- data path
// ------------------------------------------------------------------------------------------

TEST(BlockDevice, WriteThenReadBackThroughTheFile) {
  TempFile file(kDiskBytes);
  BlkHarness blk(file_device(file), Ring::kSplit);
  const auto data = pattern(8 * 512, 3);
  BlkResult written = blk.submit(0, blk::kTypeOut, 100, data, 0, /*pieces=*/3);
  EXPECT_EQ(written.status, blk::kStatusOk);
  EXPECT_EQ(written.used_length, 1u);  // only the status byte was written
  BlkResult read = blk.submit(0, blk::kTypeIn, 100, {}, 8 * 512, /*pieces=*/4, /*indirect=*/true);
  EXPECT_EQ(read.status, blk::kStatusOk);
  EXPECT_EQ(read.used_length, 8 * 512 + 1u);
  EXPECT_EQ(read.data, data);
  auto disk = file.contents();
  EXPECT_TRUE(std::equal(data.begin(), data.end(), disk.begin() + 100 * 512));
  EXPECT_EQ(blk.flush().status, blk::kStatusOk);
}

// Guest RAM the server cannot map (vfio-user DMA_MAP without an fd): rings and data go
// through the message path, data through a bounded bounce buffer — a request larger
// than one bounce piece (128 KiB) must arrive whole, in order, on both ring layouts.
TEST(BlockDevice, WriteThenReadBackThroughMessageBackedMemory) {
  for (const Ring ring : {Ring::kSplit, Ring::kPacked}) {
    TempFile file(kDiskBytes);
    BlkHarness blk(file_device(file), ring, 0, virtio::testing::RamBacking::kMessages);
    const auto data = pattern(300 * 1024, 5);
    BlkResult written = blk.submit(0, blk::kTypeOut, 8, data, 0, /*pieces=*/3);
    EXPECT_EQ(written.status, blk::kStatusOk);
    BlkResult read = blk.submit(0, blk::kTypeIn, 8, {}, 300 * 1024, /*pieces=*/5);
    EXPECT_EQ(read.status, blk::kStatusOk);
    EXPECT_EQ(read.used_length, 300 * 1024 + 1u);
    EXPECT_EQ(read.data, data);
    auto disk = file.contents();
    EXPECT_TRUE(std::equal(data.begin(), data.end(), disk.begin() + 8 * 512));
    EXPECT_GT(blk.ram().message_accesses(), 8u);  // the path really was the message one
  }
}

TEST(BlockDevice, RequestsOutsideTheDiskFailWithIoErr) {
  MemoryBackend* backend = nullptr;
  BlkHarness blk(memory_device(&backend), Ring::kSplit);
  const auto data = pattern(1024, 1);
  EXPECT_EQ(blk.write(kSectors - 1, data).status, blk::kStatusIoErr);  // straddles the end
  EXPECT_EQ(blk.write(kSectors, data).status, blk::kStatusIoErr);
  EXPECT_EQ(blk.read(kSectors - 2, 1024).status, blk::kStatusOk);         // exactly the last two
  EXPECT_EQ(blk.read(~std::uint64_t{0}, 512).status, blk::kStatusIoErr);  // sector * 512 overflows
  EXPECT_EQ(blk.read(std::uint64_t{1} << 55, 512).status, blk::kStatusIoErr);
  EXPECT_EQ(blk.read(0, 100).status, blk::kStatusIoErr);  // not a multiple of 512
  const auto odd = pattern(700, 1);
  EXPECT_EQ(blk.write(0, odd).status, blk::kStatusIoErr);
  EXPECT_EQ(std::count(backend->bytes.begin(), backend->bytes.end(), 0),
            static_cast<long>(kDiskBytes));
  EXPECT_EQ(blk.device().stats().io_errors, 6u);
}

TEST(BlockDevice, ZeroLengthReadsAndWritesSucceed) {
  MemoryBackend* backend = nullptr;
  BlkHarness blk(memory_device(&backend), Ring::kSplit);
  EXPECT_EQ(blk.read(5, 0).status, blk::kStatusOk);
  EXPECT_EQ(blk.write(5, {}).status, blk::kStatusOk);
}

TEST(BlockDevice, BackendErrorsBecomeIoErr) {
  MemoryBackend* backend = nullptr;
  BlkHarness blk(memory_device(&backend), Ring::kSplit);
  backend->fail_reads = backend->fail_writes = backend->fail_flush = true;
  EXPECT_EQ(blk.read(0, 512).status, blk::kStatusIoErr);
  EXPECT_EQ(blk.write(0, pattern(512, 0)).status, blk::kStatusIoErr);
  EXPECT_EQ(blk.flush().status, blk::kStatusIoErr);
  EXPECT_EQ(blk.segments(blk::kTypeWriteZeroes, {{0, 8, 0}}).status, blk::kStatusIoErr);
  // The device keeps working: these are I/O errors, not protocol violations.
  EXPECT_EQ(blk.core().status() & virtio::status::kDeviceNeedsReset, 0);
  backend->fail_flush = false;
  EXPECT_EQ(blk.flush().status, blk::kStatusOk);
  EXPECT_EQ(backend->flushes, 1);
}

TEST(BlockDevice, GetIdReturnsTheSerialNulPadded) {
  MemoryBackend* backend = nullptr;
  BlockDeviceOptions options;
  options.serial = "vpci-disk-0";
  BlkHarness blk(memory_device(&backend, options), Ring::kSplit);
  BlkResult id = blk.submit(0, blk::kTypeGetId, 0, {}, 20);
  EXPECT_EQ(id.status, blk::kStatusOk);
  EXPECT_EQ(id.used_length, 21u);
  std::vector<std::uint8_t> expected(20, 0);
  std::memcpy(expected.data(), "vpci-disk-0", 11);
  EXPECT_EQ(id.data, expected);
  // A short buffer gets a prefix; a long one gets 20 bytes and the rest untouched.
  EXPECT_EQ(blk.submit(0, blk::kTypeGetId, 0, {}, 4).data,
            (std::vector<std::uint8_t>{'v', 'p', 'c', 'i'}));
  BlkResult wide = blk.submit(0, blk::kTypeGetId, 0, {}, 64);
  EXPECT_EQ(wide.status, blk::kStatusOk);
  EXPECT_EQ(wide.used_length, 20u);  // bytes 20..63 were skipped, so the status is not counted
}

TEST(BlockDevice, TwentyByteSerialHasNoTerminator) {
  MemoryBackend* backend = nullptr;
  BlockDeviceOptions options;
  options.serial = "ABCDEFGHIJKLMNOPQRST";
  BlkHarness blk(memory_device(&backend, options), Ring::kPacked);
  BlkResult id = blk.submit(0, blk::kTypeGetId, 0, {}, 20);
  EXPECT_EQ(std::string(id.data.begin(), id.data.end()), options.serial);
}

TEST(BlockDevice, UnknownAndUnofferedRequestsAreUnsupported) {
  MemoryBackend* backend = nullptr;
  BlkHarness blk(memory_device(&backend), Ring::kSplit);
  for (std::uint32_t type :
       {blk::kTypeGetLifetime, blk::kTypeSecureErase, 2u, 3u, 16u, 0xFFFFFFFFu}) {
    BlkResult result = blk.submit(0, type, 0, {}, 8);
    EXPECT_EQ(result.status, blk::kStatusUnsupported) << type;
  }
  EXPECT_EQ(blk.device().stats().unsupported, 6u);
}

// §5.2.6.2: writes on a read-only device fail with IOERR and write nothing.
TEST(BlockDevice, ReadOnlyDeviceRefusesEveryWrite) {
  TempFile file(kDiskBytes, 0x33);
  BlockDeviceOptions options;
  options.read_only = true;
  BlkHarness blk(file_device(file, options), Ring::kSplit);
  const std::uint64_t features = blk.core().negotiated_features();
  EXPECT_TRUE(virtio::has_feature(features, blk::kFeatureReadOnly));
  EXPECT_FALSE(virtio::has_feature(features, blk::kFeatureDiscard));
  EXPECT_FALSE(virtio::has_feature(features, blk::kFeatureWriteZeroes));
  EXPECT_EQ(blk.write(0, pattern(512, 9)).status, blk::kStatusIoErr);
  EXPECT_EQ(blk.segments(blk::kTypeDiscard, {{0, 8, 0}}).status, blk::kStatusIoErr);
  EXPECT_EQ(blk.segments(blk::kTypeWriteZeroes, {{0, 8, 0}}).status, blk::kStatusIoErr);
  EXPECT_EQ(blk.flush().status, blk::kStatusOk);
  BlkResult read = blk.read(0, 512);
  EXPECT_EQ(read.status, blk::kStatusOk);
  EXPECT_EQ(read.data, std::vector<std::uint8_t>(512, 0x33));
  auto disk = file.contents();
  EXPECT_EQ(std::count(disk.begin(), disk.end(), 0x33), static_cast<long>(kDiskBytes));
}

// ---- discard and write zeroes
// ----------------------------------------------------------------------------

TEST(BlockDevice, DiscardAndWriteZeroesZeroTheFileRanges) {
  TempFile file(kDiskBytes, 0xAB);
  BlkHarness blk(file_device(file), Ring::kSplit);
  EXPECT_EQ(blk.segments(blk::kTypeDiscard, {{8, 16, 0}, {100, 8, 0}}).status, blk::kStatusOk);
  EXPECT_EQ(
      blk.segments(blk::kTypeWriteZeroes, {{200, 8, 0}, {300, 16, blk::kSegmentFlagUnmap}}).status,
      blk::kStatusOk);
  auto disk = file.contents();
  auto zero = [&](std::uint64_t sector, std::uint64_t count) {
    return std::all_of(disk.begin() + sector * 512, disk.begin() + (sector + count) * 512,
                       [](std::uint8_t b) { return b == 0; });
  };
  EXPECT_TRUE(zero(8, 16));
  EXPECT_TRUE(zero(100, 8));
  EXPECT_TRUE(zero(200, 8));
  EXPECT_TRUE(zero(300, 16));
  EXPECT_EQ(disk[7 * 512], 0xAB);
  EXPECT_EQ(disk[24 * 512], 0xAB);
  EXPECT_EQ(disk[316 * 512], 0xAB);
  EXPECT_EQ(disk.size(), kDiskBytes);  // punching holes keeps the size
  EXPECT_EQ(blk.read(8, 512).data, std::vector<std::uint8_t>(512, 0));
}

TEST(BlockDevice, SegmentRulesAndLimits) {
  MemoryBackend* backend = nullptr;
  BlockDeviceOptions options;
  options.max_discard_sectors = 64;
  options.max_discard_seg = 2;
  options.max_write_zeroes_sectors = 32;
  options.max_write_zeroes_seg = 1;
  BlkHarness blk(memory_device(&backend, options), Ring::kSplit);
  std::fill(backend->bytes.begin(), backend->bytes.end(), 0x11);
  // §5.2.6.2: UNSUPP for unmap on a discard and for unknown flags.
  EXPECT_EQ(blk.segments(blk::kTypeDiscard, {{0, 8, blk::kSegmentFlagUnmap}}).status,
            blk::kStatusUnsupported);
  EXPECT_EQ(blk.segments(blk::kTypeDiscard, {{0, 8, 0x80}}).status, blk::kStatusUnsupported);
  EXPECT_EQ(blk.segments(blk::kTypeWriteZeroes, {{0, 8, 0x2}}).status, blk::kStatusUnsupported);
  // More segments than advertised.
  EXPECT_EQ(blk.segments(blk::kTypeDiscard, {{0, 1, 0}, {2, 1, 0}, {4, 1, 0}}).status,
            blk::kStatusUnsupported);
  EXPECT_EQ(blk.segments(blk::kTypeWriteZeroes, {{0, 1, 0}, {2, 1, 0}}).status,
            blk::kStatusUnsupported);
  // Beyond the sector limits or the disk.
  EXPECT_EQ(blk.segments(blk::kTypeDiscard, {{0, 65, 0}}).status, blk::kStatusIoErr);
  EXPECT_EQ(blk.segments(blk::kTypeWriteZeroes, {{0, 33, 0}}).status, blk::kStatusIoErr);
  EXPECT_EQ(blk.segments(blk::kTypeDiscard, {{kSectors - 4, 8, 0}}).status, blk::kStatusIoErr);
  EXPECT_EQ(blk.segments(blk::kTypeDiscard, {{~std::uint64_t{0} - 2, 8, 0}}).status,
            blk::kStatusIoErr);
  // A bad second segment stops the whole request before anything is discarded.
  EXPECT_EQ(blk.segments(blk::kTypeDiscard, {{0, 8, 0}, {0, 8, 0x4}}).status,
            blk::kStatusUnsupported);
  EXPECT_EQ(std::count(backend->bytes.begin(), backend->bytes.end(), 0x11),
            static_cast<long>(kDiskBytes));
  // Malformed segment data.
  EXPECT_EQ(blk.submit(0, blk::kTypeDiscard, 0, pattern(20, 0), 0).status, blk::kStatusIoErr);
  EXPECT_EQ(blk.submit(0, blk::kTypeDiscard, 0, {}, 0).status, blk::kStatusIoErr);
  // A backend that cannot discard.
  backend->discard_unsupported = true;
  EXPECT_EQ(blk.segments(blk::kTypeDiscard, {{0, 8, 0}}).status, blk::kStatusUnsupported);
}

TEST(BlockDevice, DisabledDiscardIsUnsupported) {
  MemoryBackend* backend = nullptr;
  BlockDeviceOptions options;
  options.discard = false;
  options.write_zeroes = false;
  BlkHarness blk(memory_device(&backend, options), Ring::kSplit);
  EXPECT_FALSE(virtio::has_feature(blk.core().device_features(), blk::kFeatureDiscard));
  EXPECT_EQ(blk.segments(blk::kTypeDiscard, {{0, 8, 0}}).status, blk::kStatusUnsupported);
  EXPECT_EQ(blk.segments(blk::kTypeWriteZeroes, {{0, 8, 0}}).status, blk::kStatusUnsupported);
}

// ---- malformed framing
// ----------------------------------------------------------------------------------

TEST(BlockDevice, RequestWithoutStatusByteFailsTheQueue) {
  MemoryBackend* backend = nullptr;
  BlkHarness blk(memory_device(&backend), Ring::kSplit);
  blk::RequestHeader header{blk::kTypeFlush, 0, 0};
  blk.add_raw(0, virtio::testing::ChainBuilder(blk.ram()).readable(std::span<const std::uint8_t>(
                     reinterpret_cast<const std::uint8_t*>(&header), 16)));
  ASSERT_TRUE(blk.core().notify(0));
  EXPECT_NE(blk.core().status() & virtio::status::kDeviceNeedsReset, 0);
  EXPECT_NE(blk.core().failure()->message.find("status byte"), std::string::npos);
  EXPECT_EQ(blk.interrupts().config_interrupts, 1);
}

TEST(BlockDevice, RequestWithShortHeaderFailsTheQueue) {
  MemoryBackend* backend = nullptr;
  BlkHarness blk(memory_device(&backend), Ring::kPacked);
  blk.add_raw(
      0, virtio::testing::ChainBuilder(blk.ram()).readable({1, 2, 3, 4, 5, 6, 7, 8}).writable(1));
  ASSERT_TRUE(blk.core().notify(0));
  EXPECT_NE(blk.core().status() & virtio::status::kDeviceNeedsReset, 0);
  EXPECT_NE(blk.core().failure()->message.find("less than a header"), std::string::npos);
}

TEST(BlockDevice, HeaderSplitAcrossDescriptorsIsFine) {
  MemoryBackend* backend = nullptr;
  BlkHarness blk(memory_device(&backend), Ring::kSplit);
  std::fill(backend->bytes.begin(), backend->bytes.begin() + 512, 0x77);
  blk::RequestHeader header{blk::kTypeIn, 0, 0};
  const auto* bytes = reinterpret_cast<const std::uint8_t*>(&header);
  virtio::testing::ChainBuilder chain(blk.ram());
  chain.readable(std::span<const std::uint8_t>(bytes, 5))
      .readable(std::span<const std::uint8_t>(bytes + 5, 11));
  chain.writable(300).writable(212).writable(1);
  blk.add_raw(0, chain);
  ASSERT_TRUE(blk.core().notify(0));
  auto written = chain.written_bytes();
  EXPECT_EQ(written.back(), blk::kStatusOk);
  EXPECT_EQ(written[0], 0x77);
  EXPECT_EQ(written[511], 0x77);
}

// ---- queues
// -------------------------------------------------------------------------------------------------

TEST(BlockDevice, EveryQueueOfAMultiQueueDeviceServesRequests) {
  MemoryBackend* backend = nullptr;
  BlockDeviceOptions options;
  options.num_queues = 4;
  BlkHarness blk(memory_device(&backend, options), Ring::kPacked);
  for (std::uint16_t q = 0; q < 4; ++q) {
    const auto data = pattern(512, static_cast<std::uint8_t>(q));
    EXPECT_EQ(blk.write(q * 10, data, q).status, blk::kStatusOk);
    EXPECT_EQ(blk.read(q * 10, 512, (q + 1) % 4).data, data);
  }
  EXPECT_EQ(blk.interrupts().queue_interrupts.size(), 8u);
}

// ---- random workloads
// --------------------------------------------------------------------------------------

struct WorkloadParams {
  Ring ring;
  std::uint16_t queues;
  std::uint32_t seed;
};

class BlockWorkload : public ::testing::TestWithParam<WorkloadParams> {};

// Random reads, writes, flushes, discards and write-zeroes over all queues, with data
// cut into random descriptor counts, direct or indirect; every read and, at the end,
// the whole file must equal a shadow copy.
TEST_P(BlockWorkload, MatchesAShadowCopy) {
  const WorkloadParams params = GetParam();
  TempFile file(kDiskBytes);
  BlockDeviceOptions options;
  options.num_queues = params.queues;
  BlkHarness blk(file_device(file, options), params.ring);
  std::vector<std::uint8_t> shadow(kDiskBytes, 0);
  std::mt19937 rng(params.seed);
  auto random = [&](std::uint64_t lo, std::uint64_t hi) {
    return std::uniform_int_distribution<std::uint64_t>(lo, hi)(rng);
  };
  int reads = 0;
  for (int op = 0; op < 600; ++op) {
    const auto queue = static_cast<std::uint16_t>(random(0, params.queues - 1));
    const int pieces = static_cast<int>(random(1, 6));
    const bool indirect = random(0, 3) == 0;
    const std::uint64_t sectors = random(1, 32);
    const std::uint64_t sector = random(0, kSectors - sectors);
    const std::uint64_t kind = random(0, 99);
    if (kind < 40) {
      std::vector<std::uint8_t> data(sectors * 512);
      for (auto& b : data) b = static_cast<std::uint8_t>(rng());
      ASSERT_EQ(blk.submit(queue, blk::kTypeOut, sector, data, 0, pieces, indirect).status,
                blk::kStatusOk);
      std::copy(data.begin(), data.end(), shadow.begin() + static_cast<long>(sector * 512));
    } else if (kind < 80) {
      BlkResult result = blk.submit(queue, blk::kTypeIn, sector, {},
                                    static_cast<std::uint32_t>(sectors * 512), pieces, indirect);
      ASSERT_EQ(result.status, blk::kStatusOk);
      ASSERT_TRUE(std::equal(result.data.begin(), result.data.end(),
                             shadow.begin() + static_cast<long>(sector * 512)))
          << "op " << op << " sector " << sector;
      ++reads;
    } else if (kind < 88) {
      ASSERT_EQ(blk.flush(queue).status, blk::kStatusOk);
    } else {
      const std::uint32_t type = kind < 94 ? blk::kTypeDiscard : blk::kTypeWriteZeroes;
      const std::uint32_t flags =
          type == blk::kTypeWriteZeroes && (kind & 1) ? blk::kSegmentFlagUnmap : 0;
      ASSERT_EQ(blk.segments(type, {{sector, static_cast<std::uint32_t>(sectors), flags}}).status,
                blk::kStatusOk);
      std::fill_n(shadow.begin() + static_cast<long>(sector * 512), sectors * 512, 0);
    }
  }
  EXPECT_GT(reads, 100);
  EXPECT_EQ(blk.core().status() & virtio::status::kDeviceNeedsReset, 0);
  EXPECT_EQ(file.contents(), shadow);
  for (std::uint16_t q = 0; q < params.queues; ++q)
    EXPECT_EQ(blk.core().queue(q)->stats().abandoned, 0u);
}

INSTANTIATE_TEST_SUITE_P(
    Rings, BlockWorkload,
    ::testing::Values(WorkloadParams{Ring::kSplit, 1, 1}, WorkloadParams{Ring::kSplit, 3, 2},
                      WorkloadParams{Ring::kPacked, 1, 3}, WorkloadParams{Ring::kPacked, 2, 4}),
    [](const auto& param_info) {
      return std::string(param_info.param.ring == Ring::kSplit ? "Split" : "Packed") +
             std::to_string(param_info.param.queues) + "Queues";
    });

}  // namespace
}  // namespace vpci::devices
