// DeviceCore: feature negotiation, the status state machine, configuration space and
// generation, queue setup (modern, legacy, RING_RESET) and notifications, driven the
// way a transport would.
#include "virtio/device_core.h"

#include <algorithm>
#include <cstring>
#include <functional>

#include <gtest/gtest.h>

#include "base/event_loop.h"
#include "tests/virtio/fake_admin_owner.h"
#include "tests/virtio/fake_driver.h"

namespace vpci::virtio {
namespace {

using testing::ChainBuilder;
using testing::FakeGuestRam;
using testing::ModernSetup;
using testing::OneMemberOwner;
using testing::PackedRing;
using testing::RamBacking;
using testing::RecordingInterrupts;
using testing::SplitRing;

constexpr std::uint64_t kEchoFeature = feature_bit(3);

// A device that echoes each chain's readable bytes into its writable part, with an
// 8-byte config space {le32 value, le32 counter}.
class EchoDevice final : public Device {
 public:
  std::uint32_t device_id() const override { return 0x7F; }
  std::uint64_t device_features() const override { return kEchoFeature | feature_bit(5); }
  std::uint16_t num_queues() const override { return 2; }
  std::uint16_t max_queue_size(std::uint16_t) const override { return 16; }
  std::uint32_t config_size() const override { return 8; }
  void read_config(std::uint32_t offset, std::span<std::uint8_t> out) const override {
    std::memcpy(out.data(), config.data() + offset, out.size());
  }
  void write_config(std::uint32_t offset, std::span<const std::uint8_t> data) override {
    if (offset == 0 && data.size() == 4) std::memcpy(config.data(), data.data(), 4);
  }
  Status accept_features(std::uint64_t features) override {
    if (refuse_feature5 && has_feature(features, 5)) {
      return make_error(ErrorCode::kUnsupported, "feature 5 refused");
    }
    accepted = features;
    return {};
  }
  Status activate(EventLoop* /*loop*/) override {
    ++activations;
    return {};
  }
  void process_queue(Virtqueue& queue) override {
    ++process_calls;
    processed_queues.push_back(queue.index());
    ++depth;
    max_depth = std::max(max_depth, depth);
    if (on_process) {
      // Once: what a transport does when it serves a register access (here: a
      // doorbell) while the device waits inside its work.
      auto hook = std::move(on_process);
      on_process = nullptr;
      hook();
    }
    while (auto chain = queue.pop()) {
      std::vector<std::uint8_t> data(chain->readable_bytes());
      if (!chain->reader().read(data)) continue;
      const std::size_t n = std::min<std::size_t>(data.size(), chain->writable_bytes());
      (void)chain->writer().write(std::span<const std::uint8_t>(data.data(), n));
      chain->complete();
    }
    --depth;
  }
  void reset() override { ++resets; }
  void reset_queue(std::uint16_t) override { ++queue_resets; }
  void change_config() {
    config[4]++;
    host()->config_changed();
  }

  std::array<std::uint8_t, 8> config{1, 2, 3, 4, 0, 0, 0, 0};
  bool refuse_feature5 = false;
  std::uint64_t accepted = 0;
  int activations = 0;
  int process_calls = 0;
  std::vector<std::uint16_t> processed_queues;
  std::function<void()> on_process;
  int depth = 0;
  int max_depth = 0;
  int resets = 0;
  int queue_resets = 0;
};

class DeviceCoreTest : public ::testing::Test {
 protected:
  DeviceCoreTest() { reset_core(CoreOptions{}); }
  void reset_core(CoreOptions options) {
    auto device = std::make_unique<EchoDevice>();
    echo = device.get();
    core = std::make_unique<DeviceCore>(std::move(device), memory, &interrupts, options);
  }
  // Modern init + split queue 0 + DRIVER_OK.
  void bring_up_split(std::uint64_t features = 0) {
    ASSERT_TRUE(ModernSetup::initialise(*core, features));
    split = std::make_unique<SplitRing>(ram, 8);
    ASSERT_TRUE(ModernSetup::enable_split(*core, 0, *split));
    ASSERT_TRUE(ModernSetup::driver_ok(*core));
  }
  ChainBuilder chain() { return ChainBuilder(ram); }

  std::shared_ptr<GuestMemory> memory = std::make_shared<GuestMemory>();
  FakeGuestRam ram{memory, 0x40000, 1 << 20};
  RecordingInterrupts interrupts;
  EchoDevice* echo = nullptr;
  std::unique_ptr<DeviceCore> core;
  std::unique_ptr<SplitRing> split;
};

// ---- features
// ---------------------------------------------------------------------------------------

TEST_F(DeviceCoreTest, OffersDeviceBitsPlusTheRingAndTransportBits) {
  const std::uint64_t offered = core->device_features();
  EXPECT_TRUE(has_feature(offered, 3));
  EXPECT_TRUE(has_feature(offered, feature::kVersion1));
  EXPECT_TRUE(has_feature(offered, feature::kRingPacked));
  EXPECT_TRUE(has_feature(offered, feature::kEventIdx));
  EXPECT_TRUE(has_feature(offered, feature::kIndirectDesc));
  EXPECT_TRUE(has_feature(offered, feature::kRingReset));
  EXPECT_FALSE(has_feature(offered, feature::kAccessPlatform));
  EXPECT_FALSE(has_feature(offered, feature::kAnyLayout));  // legacy-only
  EXPECT_EQ(core->device_features_word(0), static_cast<std::uint32_t>(offered));
  EXPECT_EQ(core->device_features_word(1), static_cast<std::uint32_t>(offered >> 32));
  EXPECT_EQ(core->device_features_word(2), 0u);

  reset_core(CoreOptions{.offer_ring_packed = false,
                         .offer_event_idx = false,
                         .offer_indirect_desc = false,
                         .offer_ring_reset = false,
                         .offer_access_platform = true});
  const std::uint64_t lean = core->device_features();
  EXPECT_FALSE(has_feature(lean, feature::kRingPacked));
  EXPECT_FALSE(has_feature(lean, feature::kEventIdx));
  EXPECT_TRUE(has_feature(lean, feature::kAccessPlatform));
}

TEST_F(DeviceCoreTest, FeatureNegotiationHappyPath) {
  ASSERT_TRUE(ModernSetup::initialise(*core, kEchoFeature));
  EXPECT_EQ(core->status(), status::kAcknowledge | status::kDriver | status::kFeaturesOk);
  EXPECT_EQ(core->negotiated_features(), kEchoFeature | feature_bit(feature::kVersion1));
  EXPECT_EQ(echo->accepted, core->negotiated_features());
  EXPECT_EQ(core->driver_features_word(1), 1u);  // VERSION_1 is bit 32
}

// §2.2.2 and §3.1.1 step 6: the device refuses by leaving FEATURES_OK clear; the driver
// finds out by re-reading status.
TEST_F(DeviceCoreTest, UnacceptableFeaturesLeaveFeaturesOkClear) {
  struct Case {
    const char* name;
    std::uint64_t features;
  };
  const Case cases[] = {
      {"not offered", feature_bit(feature::kVersion1) | feature_bit(7)},
      {"no VERSION_1", kEchoFeature},
      {"device refuses", feature_bit(feature::kVersion1) | feature_bit(5)},
  };
  for (const Case& c : cases) {
    reset_core(CoreOptions{});
    echo->refuse_feature5 = true;
    ASSERT_TRUE(core->write_status(status::kAcknowledge | status::kDriver));
    ASSERT_TRUE(core->set_driver_features(c.features));
    auto result = core->write_status(status::kAcknowledge | status::kDriver | status::kFeaturesOk);
    EXPECT_FALSE(result) << c.name;
    EXPECT_EQ(core->status() & status::kFeaturesOk, 0) << c.name;
    EXPECT_EQ(core->negotiated_features(), 0u) << c.name;
    // The driver gives up (§3.1.1): FAILED is accepted.
    EXPECT_TRUE(core->write_status(status::kAcknowledge | status::kDriver | status::kFailed))
        << c.name;
  }
}

TEST_F(DeviceCoreTest, AccessPlatformCanBeRequired) {
  reset_core(CoreOptions{.require_access_platform = true});
  EXPECT_TRUE(has_feature(core->device_features(), feature::kAccessPlatform));
  EXPECT_FALSE(ModernSetup::initialise(*core, 0));
  EXPECT_TRUE(ModernSetup::initialise(*core, feature_bit(feature::kAccessPlatform)));
}

TEST_F(DeviceCoreTest, FeaturesAreFrozenAfterFeaturesOk) {
  ASSERT_TRUE(ModernSetup::initialise(*core, kEchoFeature));
  EXPECT_FALSE(core->write_driver_features_word(0, 0));
  EXPECT_EQ(core->negotiated_features(), kEchoFeature | feature_bit(feature::kVersion1));
  EXPECT_FALSE(core->write_driver_features_word(2, 1));
}

// ---- status
// ---------------------------------------------------------------------------------------------

TEST_F(DeviceCoreTest, DriverCannotClearStatusBits) {
  ASSERT_TRUE(core->write_status(status::kAcknowledge | status::kDriver));
  EXPECT_FALSE(core->write_status(status::kAcknowledge));
  EXPECT_EQ(core->status(), status::kAcknowledge | status::kDriver);
}

TEST_F(DeviceCoreTest, DriverOkNeedsFeaturesOk) {
  ASSERT_TRUE(core->write_status(status::kAcknowledge | status::kDriver));
  EXPECT_FALSE(core->write_status(status::kAcknowledge | status::kDriver | status::kDriverOk));
  EXPECT_EQ(core->status() & status::kDriverOk, 0);
  EXPECT_EQ(echo->activations, 0);
}

TEST_F(DeviceCoreTest, UnsupportedStatusBitsAreDropped) {
  EXPECT_FALSE(core->write_status(status::kAcknowledge | status::kSuspend));
  EXPECT_EQ(core->status(), status::kAcknowledge);
  // Writing DEVICE_NEEDS_RESET is neither an error nor effective: it is the device's bit.
  EXPECT_TRUE(core->write_status(status::kAcknowledge | status::kDeviceNeedsReset));
  EXPECT_EQ(core->status(), status::kAcknowledge);
}

TEST_F(DeviceCoreTest, ResetClearsStatusFeaturesAndQueues) {
  bring_up_split(kEchoFeature);
  EXPECT_EQ(echo->activations, 1);
  ASSERT_TRUE(core->set_queue_size(1, 8));
  const int resets_before = echo->resets;
  ASSERT_TRUE(core->write_status(0));
  EXPECT_EQ(core->status(), 0);
  EXPECT_EQ(core->negotiated_features(), 0u);
  EXPECT_EQ(core->driver_features(), 0u);
  EXPECT_EQ(echo->resets, resets_before + 1);
  for (std::uint16_t q = 0; q < 2; ++q) {
    auto regs = core->queue_registers(q);
    ASSERT_TRUE(regs);
    EXPECT_FALSE(regs->enabled);
    EXPECT_EQ(regs->size, 16u);  // §4.1.4.3: queue_size reads the maximum after reset
    EXPECT_EQ(regs->desc, 0u);
  }
}

// ---- notifications and processing
// ------------------------------------------------------------------------

TEST_F(DeviceCoreTest, NotifyProcessesTheQueueAndRaisesItsInterrupt) {
  bring_up_split();
  ChainBuilder request = chain().readable({1, 2, 3}).writable(3);
  split->add(request);
  ASSERT_TRUE(core->notify(0));
  EXPECT_EQ(request.written_bytes(), (std::vector<std::uint8_t>{1, 2, 3}));
  EXPECT_EQ(interrupts.queue_interrupts, std::vector<std::uint16_t>{0});
  EXPECT_FALSE(core->notify(2));  // no such queue
}

TEST_F(DeviceCoreTest, NothingIsConsumedBeforeDriverOk) {
  ASSERT_TRUE(ModernSetup::initialise(*core, 0));
  split = std::make_unique<SplitRing>(ram, 8);
  ASSERT_TRUE(ModernSetup::enable_split(*core, 0, *split));
  split->add(chain().readable({9}).writable(1));
  ASSERT_TRUE(core->notify(0));
  EXPECT_EQ(echo->process_calls, 0);
  EXPECT_EQ(split->used_idx(), 0u);
  // Buffers made available before DRIVER_OK are served when it is set.
  ASSERT_TRUE(ModernSetup::driver_ok(*core));
  EXPECT_EQ(split->used_idx(), 1u);
  EXPECT_EQ(interrupts.queue_interrupts.size(), 1u);
}

TEST_F(DeviceCoreTest, FailedDriverStopsProcessing) {
  bring_up_split();
  ASSERT_TRUE(core->write_status(core->status() | status::kFailed));
  split->add(chain().writable(1));
  ASSERT_TRUE(core->notify(0));
  EXPECT_EQ(split->used_idx(), 0u);
}

TEST_F(DeviceCoreTest, QueueViolationSetsNeedsResetAndStopsOnlyThatQueue) {
  bring_up_split();
  SplitRing second(ram, 8);
  // Queue 1 was not enabled before DRIVER_OK; drivers may still enable it later.
  ASSERT_TRUE(ModernSetup::enable_split(*core, 1, second));

  split->set_avail_entry(0, 77);  // head outside the table
  split->set_avail_idx(1);
  ASSERT_TRUE(core->notify(0));
  EXPECT_NE(core->status() & status::kDeviceNeedsReset, 0);
  EXPECT_EQ(interrupts.config_interrupts, 1);  // §2.1.2
  ASSERT_TRUE(core->failure().has_value());
  EXPECT_NE(core->failure()->message.find("head descriptor 77"), std::string::npos);
  EXPECT_TRUE(core->queue_registers(0)->failed);

  ChainBuilder request = chain().readable({4}).writable(1);
  second.add(request);
  ASSERT_TRUE(core->notify(1));
  EXPECT_EQ(request.written_bytes(), std::vector<std::uint8_t>{4});

  // A second violation does not raise another configuration interrupt.
  SplitRing* q1 = &second;
  q1->set_avail_idx(200);
  ASSERT_TRUE(core->notify(1));
  EXPECT_EQ(interrupts.config_interrupts, 1);
  // Reset recovers.
  ASSERT_TRUE(core->write_status(0));
  EXPECT_EQ(core->status(), 0);
  EXPECT_FALSE(core->failure().has_value());
  EXPECT_FALSE(core->queue_registers(0)->failed);
}

TEST_F(DeviceCoreTest, InvalidLayoutAtEnableSetsNeedsReset) {
  ASSERT_TRUE(ModernSetup::initialise(*core, 0));
  ASSERT_TRUE(core->set_queue_size(0, 8));
  ASSERT_TRUE(core->set_queue_desc(0, 0x40008));  // not 16-aligned
  ASSERT_TRUE(core->set_queue_driver(0, 0x41000));
  ASSERT_TRUE(core->set_queue_device(0, 0x42000));
  EXPECT_FALSE(core->enable_queue(0));
  EXPECT_NE(core->status() & status::kDeviceNeedsReset, 0);
  EXPECT_EQ(interrupts.config_interrupts, 0);  // no DRIVER_OK yet: nobody to tell
}

TEST_F(DeviceCoreTest, QueuesCannotBeEnabledBeforeFeaturesOk) {
  ASSERT_TRUE(core->write_status(status::kAcknowledge | status::kDriver));
  split = std::make_unique<SplitRing>(ram, 8);
  EXPECT_FALSE(ModernSetup::enable_split(*core, 0, *split));
  EXPECT_FALSE(core->queue_registers(0)->enabled);
}

TEST_F(DeviceCoreTest, QueueRegistersAreFrozenWhileEnabled) {
  bring_up_split();
  EXPECT_FALSE(core->set_queue_size(0, 4));
  EXPECT_FALSE(core->set_queue_desc(0, 0x1000));
  EXPECT_FALSE(core->set_queue_size(0, 32));  // above max even when disabled
  EXPECT_FALSE(core->set_queue_size(5, 8));   // no such queue
}

TEST_F(DeviceCoreTest, PackedRingIsUsedWhenNegotiated) {
  ASSERT_TRUE(ModernSetup::initialise(*core, feature_bit(feature::kRingPacked)));
  PackedRing packed(ram, 5);
  ASSERT_TRUE(ModernSetup::enable_packed(*core, 0, packed));
  ASSERT_TRUE(ModernSetup::driver_ok(*core));
  EXPECT_EQ(core->queue(0)->format(), RingFormat::kPacked);
  ChainBuilder request = chain().readable({5, 6}).writable(2);
  packed.add(request);
  ASSERT_TRUE(core->notify(0));
  EXPECT_EQ(request.written_bytes(), (std::vector<std::uint8_t>{5, 6}));
  EXPECT_EQ(interrupts.queue_interrupts.size(), 1u);
}

// ---- RING_RESET (§2.6.1)
// ------------------------------------------------------------------------------------

TEST_F(DeviceCoreTest, RingResetNeedsTheFeature) {
  bring_up_split();
  EXPECT_FALSE(core->reset_queue(0));
  EXPECT_TRUE(core->queue_registers(0)->enabled);
}

TEST_F(DeviceCoreTest, RingResetStopsOneQueueAndAllowsReEnabling) {
  bring_up_split(feature_bit(feature::kRingReset));
  split->add(chain().writable(1));
  ASSERT_TRUE(core->reset_queue(0));
  EXPECT_EQ(echo->queue_resets, 1);
  EXPECT_FALSE(core->queue_registers(0)->enabled);
  ASSERT_TRUE(core->notify(0));
  EXPECT_EQ(split->used_idx(), 0u);  // §2.6.1.1.1: no requests from a reset queue
  // Re-enable with a new ring (§2.6.1.2).
  SplitRing fresh(ram, 4);
  ASSERT_TRUE(ModernSetup::enable_split(*core, 0, fresh));
  ChainBuilder request = chain().readable({3}).writable(1);
  fresh.add(request);
  ASSERT_TRUE(core->notify(0));
  EXPECT_EQ(request.written_bytes(), std::vector<std::uint8_t>{3});
  EXPECT_EQ(core->status() & status::kDeviceNeedsReset, 0);
}

// A notification that arrives while the device is inside process_queue (the transport
// served a doorbell while the device waited for message-based DMA) is not run
// reentrantly: it is remembered and served right after, and its buffers complete.
TEST_F(DeviceCoreTest, NotificationsDuringProcessingAreDeferredNotReentered) {
  ASSERT_TRUE(ModernSetup::initialise(*core, 0));
  split = std::make_unique<SplitRing>(ram, 8);
  SplitRing second(ram, 8);
  ASSERT_TRUE(ModernSetup::enable_split(*core, 0, *split));
  ASSERT_TRUE(ModernSetup::enable_split(*core, 1, second));
  ASSERT_TRUE(ModernSetup::driver_ok(*core));
  echo->processed_queues.clear();
  ChainBuilder first = chain().readable({1}).writable(1);
  split->add(first);
  ChainBuilder other = chain().readable({2}).writable(1);
  echo->on_process = [&] {
    second.add(other);
    ASSERT_TRUE(core->notify(1));
  };
  ASSERT_TRUE(core->notify(0));
  EXPECT_EQ(echo->max_depth, 1);
  EXPECT_EQ(echo->processed_queues, (std::vector<std::uint16_t>{0, 1}));
  EXPECT_EQ(first.written_bytes(), std::vector<std::uint8_t>{1});
  EXPECT_EQ(other.written_bytes(), std::vector<std::uint8_t>{2});
}

// Buffers already available when a queue is enabled after DRIVER_OK are served at once:
// the doorbell for them may have arrived while the ring was still being set up.
TEST_F(DeviceCoreTest, BuffersWaitingWhenAQueueIsEnabledAreServed) {
  bring_up_split(feature_bit(feature::kRingReset));
  ASSERT_TRUE(core->reset_queue(0));
  SplitRing fresh(ram, 4);
  ChainBuilder request = chain().readable({7}).writable(1);
  fresh.add(request);
  ASSERT_TRUE(ModernSetup::enable_split(*core, 0, fresh));  // no notify
  EXPECT_EQ(request.written_bytes(), std::vector<std::uint8_t>{7});
}

// Guest memory reached through messages whose peer stops answering (vfio-user DMA_READ
// timing out): the request fails visibly — the device reports DEVICE_NEEDS_RESET and
// raises a configuration interrupt, so the guest's driver sees an error instead of
// waiting forever — and after a reset the same device works again.
TEST(DeviceCoreMessageMemory, UnreachableRingFailsTheDeviceVisiblyAndResetRecovers) {
  auto memory = std::make_shared<GuestMemory>();
  FakeGuestRam ram{memory, 0x40000, 1 << 20, RamBacking::kMessages};
  RecordingInterrupts interrupts;
  DeviceCore core(std::make_unique<EchoDevice>(), memory, &interrupts);
  auto bring_up = [&](SplitRing& driver) {
    ASSERT_TRUE(ModernSetup::initialise(core, 0));
    ASSERT_TRUE(ModernSetup::enable_split(core, 0, driver));
    ASSERT_TRUE(ModernSetup::driver_ok(core));
  };
  SplitRing driver(ram, 8);
  bring_up(driver);
  driver.add(ChainBuilder(ram).readable({1}).writable(1));
  ram.fail_messages(true);
  ASSERT_TRUE(core.notify(0));
  EXPECT_NE(core.status() & status::kDeviceNeedsReset, 0);
  EXPECT_GE(interrupts.config_interrupts, 1);
  EXPECT_EQ(driver.used_idx(), 0u);

  ram.fail_messages(false);
  ASSERT_TRUE(core.write_status(0));  // driver reset
  ram.reset_allocator();
  SplitRing fresh(ram, 8);
  bring_up(fresh);
  ChainBuilder request = ChainBuilder(ram).readable({5}).writable(1);
  fresh.add(request);
  ASSERT_TRUE(core.notify(0));
  EXPECT_EQ(request.written_bytes(), std::vector<std::uint8_t>{5});
  EXPECT_EQ(core.status() & status::kDeviceNeedsReset, 0);
}

// With guest memory reached through messages and an event loop, the work a doorbell asks
// for runs after the doorbell's access returns (deferred on the loop), so a client
// waiting for the access's reply is never asked for DMA meanwhile.
TEST(DeviceCoreMessageMemory, WorkForAnAccessRunsAfterItOnTheLoop) {
  auto memory = std::make_shared<GuestMemory>();
  FakeGuestRam ram{memory, 0x40000, 1 << 20, RamBacking::kMessages};
  RecordingInterrupts interrupts;
  auto device = std::make_unique<EchoDevice>();
  EchoDevice* echo = device.get();
  DeviceCore core(std::move(device), memory, &interrupts);
  auto loop = EventLoop::create();
  ASSERT_TRUE(loop);
  core.set_event_loop(loop->get());
  ASSERT_TRUE(ModernSetup::initialise(core, 0));
  SplitRing driver(ram, 8);
  ASSERT_TRUE(ModernSetup::enable_split(core, 0, driver));
  ASSERT_TRUE(ModernSetup::driver_ok(core));
  ASSERT_TRUE((*loop)->run_once(std::chrono::milliseconds(0)));
  const int before = echo->process_calls;
  ChainBuilder request = ChainBuilder(ram).readable({9}).writable(1);
  driver.add(request);
  ASSERT_TRUE(core.notify(0));
  ASSERT_TRUE(core.notify(0));             // kicks coalesce
  EXPECT_EQ(echo->process_calls, before);  // nothing inside the access
  ASSERT_TRUE((*loop)->run_once(std::chrono::milliseconds(0)));
  EXPECT_EQ(echo->process_calls, before + 1);
  EXPECT_EQ(request.written_bytes(), std::vector<std::uint8_t>{9});
  EXPECT_EQ(interrupts.queue_interrupts.size(), 1u);
}

// ---- configuration space
// ---------------------------------------------------------------------------------------

TEST_F(DeviceCoreTest, ConfigAccessesAreBoundsChecked) {
  std::array<std::uint8_t, 4> out{};
  ASSERT_TRUE(core->read_config(0, out));
  EXPECT_EQ(out, (std::array<std::uint8_t, 4>{1, 2, 3, 4}));
  EXPECT_FALSE(core->read_config(6, out));
  EXPECT_FALSE(core->read_config(0xFFFFFFFE, out));  // offset + size overflows 32 bits
  const std::array<std::uint8_t, 4> value{9, 9, 9, 9};
  ASSERT_TRUE(core->write_config(0, value));
  EXPECT_EQ(echo->config[0], 9);
  EXPECT_FALSE(core->write_config(8, value));
}

TEST_F(DeviceCoreTest, ConfigGenerationChangesOncePerChange) {
  bring_up_split();
  const std::uint8_t before = core->config_generation();
  EXPECT_EQ(core->config_generation(), before);
  echo->change_config();
  echo->change_config();
  EXPECT_EQ(interrupts.config_interrupts, 2);
  const std::uint8_t after = core->config_generation();
  EXPECT_NE(after, before);
  EXPECT_EQ(core->config_generation(), after);  // stable until the next change
}

// ---- legacy interface
// ----------------------------------------------------------------------------------------------

TEST_F(DeviceCoreTest, LegacyDriverSeesOnlyLowFeaturesAndUsesPfnRings) {
  ASSERT_TRUE(core->set_driver_interface(DriverInterface::kLegacy));
  EXPECT_EQ(core->device_features() >> 32, 0u);
  EXPECT_FALSE(has_feature(core->device_features(), feature::kVersion1));
  // §6.3: ANY_LAYOUT on the legacy interface only (chains are parsed as byte streams).
  EXPECT_TRUE(has_feature(core->device_features(), feature::kAnyLayout));
  ASSERT_TRUE(core->write_status(status::kAcknowledge | status::kDriver));
  EXPECT_FALSE(core->write_driver_features_word(1, 1));  // bits 32+ do not exist
  ASSERT_TRUE(core->write_driver_features_word(
      0, static_cast<std::uint32_t>(kEchoFeature | feature_bit(30))));
  EXPECT_EQ(core->driver_features(), kEchoFeature);  // unoffered bit 30 dropped

  // A legacy ring: one 4096-aligned block at PFN; queue size is the maximum (16).
  const GuestAddress base = ram.alloc(3 * 4096, 4096);
  ASSERT_TRUE(core->set_legacy_queue_pfn(0, static_cast<std::uint32_t>(base >> 12)));
  auto pfn = core->legacy_queue_pfn(0);
  ASSERT_TRUE(pfn);
  EXPECT_EQ(*pfn, base >> 12);
  auto regs = core->queue_registers(0);
  EXPECT_EQ(regs->driver, base + 16 * 16);
  EXPECT_EQ(regs->device, base + 4096);

  // FEATURES_OK does not exist for legacy drivers; DRIVER_OK latches the features.
  EXPECT_FALSE(core->write_status(status::kAcknowledge | status::kDriver | status::kFeaturesOk));
  ASSERT_TRUE(core->write_status(status::kAcknowledge | status::kDriver | status::kDriverOk));
  EXPECT_EQ(core->negotiated_features(), kEchoFeature);
  EXPECT_EQ(echo->activations, 1);

  // Drive the ring by hand, as a legacy driver would at these addresses.
  const GuestAddress buffer = ram.alloc(4);
  ram.put<std::uint32_t>(buffer, 0x11223344);
  const GuestAddress out = ram.alloc(4);
  ram.put(base, SplitDescriptor{buffer, 4, desc_flags::kNext, 1});
  ram.put(base + 16, SplitDescriptor{out, 4, desc_flags::kWrite, 0});
  ram.put<std::uint16_t>(regs->driver + 4, 0);  // avail ring[0] = head 0
  ram.put<std::uint16_t>(regs->driver + 2, 1);  // avail idx = 1
  ASSERT_TRUE(core->notify(0));
  EXPECT_EQ(ram.get<std::uint32_t>(out), 0x11223344u);
  EXPECT_EQ(ram.get<std::uint16_t>(regs->device + 2), 1u);  // used idx

  // PFN 0 tears the queue down.
  ASSERT_TRUE(core->set_legacy_queue_pfn(0, 0));
  EXPECT_FALSE(core->queue_registers(0)->enabled);
  EXPECT_EQ(*core->legacy_queue_pfn(0), 0u);
}

TEST_F(DeviceCoreTest, DriverInterfaceIsFixedOnceInitialisationStarts) {
  ASSERT_TRUE(core->write_status(status::kAcknowledge));
  EXPECT_FALSE(core->set_driver_interface(DriverInterface::kLegacy));
  EXPECT_FALSE(core->set_legacy_queue_pfn(0, 0x40));  // modern driver: no PFN register
  ASSERT_TRUE(core->write_status(0));
  EXPECT_TRUE(core->set_driver_interface(DriverInterface::kLegacy));
}

TEST_F(DeviceCoreTest, LegacyPfnOutsideMemoryFailsTheQueue) {
  ASSERT_TRUE(core->set_driver_interface(DriverInterface::kLegacy));
  ASSERT_TRUE(core->write_status(status::kAcknowledge | status::kDriver));
  EXPECT_FALSE(core->set_legacy_queue_pfn(0, 0xFFFFF));
  EXPECT_NE(core->status() & status::kDeviceNeedsReset, 0);
}

// ---- admin virtqueue (virtio 1.3 §2.12) ------------------------------------------------------

TEST_F(DeviceCoreTest, AnAdminOwnerGetsAnAdminQueueAfterTheDeviceQueues) {
  OneMemberOwner owner;
  CoreOptions options;
  options.admin_owner = &owner;
  reset_core(options);
  EXPECT_TRUE(has_feature(core->device_features(), admin::kFeatureAdminVq));
  EXPECT_TRUE(has_feature(core->device_features(), admin::kFeatureSrIov));
  EXPECT_EQ(core->num_queues(), 2);  // num_queues excludes admin queues (§4.1.4.3)
  EXPECT_EQ(core->queue_count(), 3);
  EXPECT_EQ(core->admin_queue_index(), 2);
  EXPECT_EQ(core->admin_queue_count(), 1);

  // Without ADMIN_VQ negotiated the admin queue cannot be set up.
  ASSERT_TRUE(ModernSetup::initialise(*core, 0));
  SplitRing admin_driver(ram, 16);
  EXPECT_FALSE(ModernSetup::enable_split(*core, 2, admin_driver));

  core->reset();
  ASSERT_TRUE(ModernSetup::initialise(*core, feature_bit(admin::kFeatureAdminVq)));
  ASSERT_TRUE(ModernSetup::enable_split(*core, 2, admin_driver));
  ASSERT_TRUE(ModernSetup::driver_ok(*core));
  // LIST_USE of the legacy commands, then a 1-byte legacy read of member 1: both run in
  // the core, never in the device, and the admin queue's interrupt is raised.
  std::array<std::uint8_t, 32> use{};
  use[0] = admin::kListUse;
  use[2] = admin::kGroupSrIov;
  use[24] = 0x7c;
  ChainBuilder list_use = chain().readable(use).writable(8);
  admin_driver.add(list_use);
  std::array<std::uint8_t, 25> read{};
  read[0] = admin::kLegacyCommonCfgRead;
  read[2] = admin::kGroupSrIov;
  read[16] = 1;   // member 1
  read[24] = 18;  // device status
  ChainBuilder legacy_read = chain().readable(read).writable(9);
  admin_driver.add(legacy_read);
  ASSERT_TRUE(core->notify(2));
  EXPECT_EQ(echo->process_calls, 0);
  EXPECT_EQ(core->admin_engine()->in_use(), 0x7cu);
  EXPECT_EQ(legacy_read.written_bytes(), (std::vector<std::uint8_t>{0, 0, 0, 0, 0, 0, 0, 0, 0x5a}));
  EXPECT_EQ(interrupts.queue_interrupts, std::vector<std::uint16_t>{2});
  // A device reset puts the in-use list back.
  core->reset();
  EXPECT_EQ(core->admin_engine()->in_use(), 0x3u);
}

TEST_F(DeviceCoreTest, WithoutAnOwnerThereIsNoAdminQueue) {
  EXPECT_FALSE(has_feature(core->device_features(), admin::kFeatureAdminVq));
  EXPECT_FALSE(has_feature(core->device_features(), admin::kFeatureSrIov));
  EXPECT_EQ(core->queue_count(), core->num_queues());
  EXPECT_EQ(core->admin_queue_count(), 0);
  EXPECT_EQ(core->admin_engine(), nullptr);
}

}  // namespace
}  // namespace vpci::virtio
