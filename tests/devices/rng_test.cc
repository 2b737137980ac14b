#include <algorithm>

#include <gtest/gtest.h>

#include "devices/virtio_rng.h"
#include "tests/virtio/fake_driver.h"
#include "virtio/device_core.h"

namespace vpci::devices {
namespace {

using virtio::testing::ChainBuilder;
using virtio::testing::FakeGuestRam;
using virtio::testing::ModernSetup;
using virtio::testing::RecordingInterrupts;
using virtio::testing::SplitRing;

class CountingSource final : public EntropySource {
 public:
  Result<std::size_t> fill(std::span<std::uint8_t> out) override {
    if (fail) return make_error(ErrorCode::kIoError, "no entropy");
    // Hand out at most 7 bytes per call to exercise partial fills.
    const std::size_t n = std::min<std::size_t>(out.size(), 7);
    for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<std::uint8_t>(next++ | 0x80);
    return n;
  }
  std::uint8_t next = 0;
  bool fail = false;
};

class RngTest : public ::testing::Test {
 protected:
  void start(std::unique_ptr<EntropySource> source, RngDeviceOptions options = {}) {
    auto device = std::make_unique<RngDevice>(options, std::move(source));
    rng = device.get();
    core = std::make_unique<virtio::DeviceCore>(std::move(device), memory, &interrupts);
    ASSERT_TRUE(ModernSetup::initialise(*core, 0));
    driver = std::make_unique<SplitRing>(ram, 8);
    ASSERT_TRUE(ModernSetup::enable_split(*core, 0, *driver));
    ASSERT_TRUE(ModernSetup::driver_ok(*core));
  }

  std::shared_ptr<virtio::GuestMemory> memory = std::make_shared<virtio::GuestMemory>();
  FakeGuestRam ram{memory, 0x10000, 1 << 20};
  RecordingInterrupts interrupts;
  RngDevice* rng = nullptr;
  std::unique_ptr<virtio::DeviceCore> core;
  std::unique_ptr<SplitRing> driver;
};

TEST_F(RngTest, IdentifiesAsEntropyDeviceWithoutFeaturesOrConfig) {
  RngDevice device;
  EXPECT_EQ(device.device_id(), 4u);
  EXPECT_EQ(device.device_features(), 0u);
  EXPECT_EQ(device.config_size(), 0u);
  EXPECT_EQ(device.num_queues(), 1u);
}

TEST_F(RngTest, FillsWritableBuffersFromTheKernel) {
  start(std::make_unique<KernelEntropySource>());
  ChainBuilder request = ChainBuilder(ram).writable(300).writable(212);
  driver->add(request);
  ASSERT_TRUE(core->notify(0));
  auto used = driver->pop_used();
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(used->length, 512u);
  auto bytes = request.written_bytes();
  // 512 random bytes are all zero with probability 2^-4096.
  EXPECT_TRUE(std::any_of(bytes.begin(), bytes.end(), [](std::uint8_t b) { return b != 0; }));
  EXPECT_EQ(rng->bytes_produced(), 512u);
  EXPECT_EQ(interrupts.queue_interrupts.size(), 1u);
}

TEST_F(RngTest, PartialFillsFromTheSourceAreStitchedTogether) {
  start(std::make_unique<CountingSource>());
  ChainBuilder request = ChainBuilder(ram).writable(10).writable(10);
  driver->add(request);
  ASSERT_TRUE(core->notify(0));
  EXPECT_EQ(driver->pop_used()->length, 20u);
  auto bytes = request.written_bytes();
  for (std::size_t i = 0; i < bytes.size(); ++i)
    EXPECT_EQ(bytes[i], static_cast<std::uint8_t>(i | 0x80));
}

// Guest RAM reached through messages (vfio-user maps without an fd): the same bytes
// arrive, through the bounce buffer and the message path.
TEST(RngMessageMemory, FillsBuffersInMessageBackedMemory) {
  auto memory = std::make_shared<virtio::GuestMemory>();
  FakeGuestRam ram{memory, 0x10000, 1 << 20, virtio::testing::RamBacking::kMessages};
  RecordingInterrupts interrupts;
  auto core = std::make_unique<virtio::DeviceCore>(
      std::make_unique<RngDevice>(RngDeviceOptions{}, std::make_unique<CountingSource>()), memory,
      &interrupts);
  ASSERT_TRUE(ModernSetup::initialise(*core, 0));
  SplitRing driver(ram, 8);
  ASSERT_TRUE(ModernSetup::enable_split(*core, 0, driver));
  ASSERT_TRUE(ModernSetup::driver_ok(*core));
  ChainBuilder request = ChainBuilder(ram).writable(10).writable(10);
  driver.add(request);
  ASSERT_TRUE(core->notify(0));
  EXPECT_EQ(driver.pop_used()->length, 20u);
  auto bytes = request.written_bytes();
  for (std::size_t i = 0; i < bytes.size(); ++i)
    EXPECT_EQ(bytes[i], static_cast<std::uint8_t>(i | 0x80));
  EXPECT_GT(ram.message_accesses(), 4u);
  EXPECT_EQ(interrupts.queue_interrupts.size(), 1u);
}

TEST_F(RngTest, OutputPerRequestIsCapped) {
  start(std::make_unique<KernelEntropySource>(),
        RngDeviceOptions{.queue_size = 8, .max_bytes_per_request = 100});
  driver->add(ChainBuilder(ram).writable(4096));
  ASSERT_TRUE(core->notify(0));
  EXPECT_EQ(driver->pop_used()->length, 100u);  // §5.4.6.2: MAY use less than the buffer
}

TEST_F(RngTest, SourceFailureReturnsTheBufferWithWhatWasFilled) {
  auto source = std::make_unique<CountingSource>();
  CountingSource* counting = source.get();
  start(std::move(source));
  counting->fail = true;
  driver->add(ChainBuilder(ram).writable(16));
  ASSERT_TRUE(core->notify(0));
  auto used = driver->pop_used();
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(used->length, 0u);
  EXPECT_EQ(core->status() & virtio::status::kDeviceNeedsReset, 0);
}

// §5.4.6.1: "The driver MUST NOT place device-readable buffers into the queue."
TEST_F(RngTest, DeviceReadableBufferIsAProtocolViolation) {
  start(std::make_unique<CountingSource>());
  driver->add(ChainBuilder(ram).readable({1, 2}).writable(8));
  ASSERT_TRUE(core->notify(0));
  EXPECT_FALSE(driver->pop_used().has_value());
  EXPECT_NE(core->status() & virtio::status::kDeviceNeedsReset, 0);
  EXPECT_EQ(interrupts.config_interrupts, 1);
}

}  // namespace
}  // namespace vpci::devices
