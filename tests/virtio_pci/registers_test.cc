// Register-level behaviour of the transports, including the hostile sequences a guest
// can produce: every one has a defined result that these tests pin down.
#include "pci/registers.h"

#include <gtest/gtest.h>

#include "pci/capabilities.h"
#include "tests/virtio/fake_admin_owner.h"
#include "tests/virtio_pci/test_devices.h"

namespace vpci::virtio::testing {
namespace {

namespace c = pci::common;
namespace l = pci::legacy;
using pci::TransportKind;
using pci::VirtioPciLayout;
constexpr unsigned kBar = VirtioPciLayout::kMemoryBar;

std::vector<std::uint8_t> le(std::uint64_t value, unsigned width) {
  std::vector<std::uint8_t> out(width);
  for (auto& b : out) {
    b = static_cast<std::uint8_t>(value);
    value >>= 8;
  }
  return out;
}
std::uint64_t value_of(std::span<const std::uint8_t> bytes) {
  std::uint64_t v = 0;
  for (std::size_t i = bytes.size(); i-- > 0;) v = (v << 8) | bytes[i];
  return v;
}

class Registers : public ::testing::Test {
 protected:
  void make(TransportKind kind, DeviceType type = DeviceType::kRng,
            pci::VirtioPciOptions options = {}) {
    options.kind = kind;
    rig_ = std::make_unique<Rig>(type, options);
    ASSERT_TRUE(rig_->function);
    fn_ = rig_->function;
    fn_->set_interrupt_output(&out_);
  }
  Result<std::uint64_t> rd(unsigned bar, std::uint64_t offset, unsigned width) {
    std::vector<std::uint8_t> bytes(width);
    auto status = fn_->bar_read(bar, offset, bytes);
    last_read_ = bytes;
    if (!status) return tl::unexpected(status.error());
    return value_of(bytes);
  }
  Status wr(unsigned bar, std::uint64_t offset, unsigned width, std::uint64_t value) {
    return fn_->bar_write(bar, offset, le(value, width));
  }
  std::uint64_t common(std::uint32_t offset, unsigned width) {
    auto v = rd(kBar, VirtioPciLayout::kCommonOffset + offset, width);
    EXPECT_TRUE(v.has_value()) << v.error().message;
    return v.value_or(~0ull);
  }
  Status set_common(std::uint32_t offset, unsigned width, std::uint64_t value) {
    return wr(kBar, VirtioPciLayout::kCommonOffset + offset, width, value);
  }
  std::uint32_t cfg(std::uint32_t offset, unsigned width) {
    std::vector<std::uint8_t> bytes(width);
    EXPECT_TRUE(fn_->config_read(offset, bytes).has_value());
    return static_cast<std::uint32_t>(value_of(bytes));
  }
  void set_cfg(std::uint32_t offset, unsigned width, std::uint32_t value) {
    EXPECT_TRUE(fn_->config_write(offset, le(value, width)).has_value());
  }
  // Modern bring-up to FEATURES_OK with the given features.
  void features_ok(std::uint64_t features) {
    ASSERT_TRUE(
        set_common(c::kDeviceStatus, 1, status::kAcknowledge | status::kDriver).has_value());
    for (std::uint32_t sel = 0; sel < 2; ++sel) {
      ASSERT_TRUE(set_common(c::kDriverFeatureSelect, 4, sel).has_value());
      ASSERT_TRUE(
          set_common(c::kDriverFeature, 4, (features >> (32 * sel)) & 0xFFFFFFFF).has_value());
    }
    ASSERT_TRUE(set_common(c::kDeviceStatus, 1,
                           status::kAcknowledge | status::kDriver | status::kFeaturesOk)
                    .has_value());
    ASSERT_EQ(common(c::kDeviceStatus, 1) & status::kFeaturesOk, status::kFeaturesOk);
  }

  std::unique_ptr<Rig> rig_;
  pci::VirtioPciFunction* fn_ = nullptr;
  RecordingInterruptOutput out_;
  std::vector<std::uint8_t> last_read_;
};

TEST_F(Registers, IdsPerKind) {
  make(TransportKind::kModern);
  EXPECT_EQ(cfg(0, 4), 0x10441AF4u);
  EXPECT_EQ(cfg(8, 1), 1u);        // revision
  EXPECT_GE(cfg(0x2E, 2), 0x40u);  // subsystem ID
  EXPECT_EQ(fn_->config_size(), 4096u);
  make(TransportKind::kTransitional, DeviceType::kBlk);
  EXPECT_EQ(cfg(0, 4), 0x10011AF4u);
  EXPECT_EQ(cfg(8, 1), 0u);
  EXPECT_EQ(cfg(0x2E, 2), 2u);
  EXPECT_EQ(fn_->bar_info(0).kind, vpci::pci::BarKind::kIo);
  make(TransportKind::kTransitionalMmr, DeviceType::kRng);
  EXPECT_EQ(cfg(0, 4), 0x10FC1AF4u);
  EXPECT_EQ(fn_->bar_info(0).kind, vpci::pci::BarKind::kAbsent);
}

TEST_F(Registers, CommonConfigFullLayoutAfterReset) {
  make(TransportKind::kModern, DeviceType::kBlk);
  EXPECT_EQ(common(c::kNumQueues, 2), 1u);
  EXPECT_EQ(common(c::kQueueSize, 2), 64u);
  EXPECT_EQ(common(c::kQueueMsixVector, 2), pci::kNoVector);
  EXPECT_EQ(common(c::kConfigMsixVector, 2), pci::kNoVector);
  EXPECT_EQ(common(c::kQueueEnable, 2), 0u);
  EXPECT_EQ(common(c::kQueueNotifyOff, 2), 0u);
  EXPECT_EQ(common(c::kQueueNotifConfigData, 2), 0u);
  EXPECT_EQ(common(c::kQueueReset, 2), 0u);
  EXPECT_EQ(common(c::kAdminQueueIndex, 2), 0u);
  EXPECT_EQ(common(c::kAdminQueueNum, 2), 0u);
  // Feature window 1 carries VERSION_1 (bit 32); windows beyond read 0.
  ASSERT_TRUE(set_common(c::kDeviceFeatureSelect, 4, 1).has_value());
  EXPECT_EQ(common(c::kDeviceFeature, 4) & 1, 1u);
  ASSERT_TRUE(set_common(c::kDeviceFeatureSelect, 4, 7).has_value());
  EXPECT_EQ(common(c::kDeviceFeature, 4), 0u);
  // 64-bit queue fields: two halves, and a whole QWORD.
  ASSERT_TRUE(set_common(c::kQueueDesc, 4, 0x12345000).has_value());
  ASSERT_TRUE(set_common(c::kQueueDesc + 4, 4, 0x1).has_value());
  EXPECT_EQ(common(c::kQueueDesc, 8), 0x112345000u);
  ASSERT_TRUE(set_common(c::kQueueDriver, 8, 0x2000000040ull).has_value());
  EXPECT_EQ(common(c::kQueueDriver + 4, 4), 0x20u);
}

// §4.1.4.3: admin_queue_index/admin_queue_num describe the admin queue, which the driver
// selects, sizes, vectors, places and enables like any queue, and whose doorbell runs
// its commands; the device's own num_queues leaves it out.
TEST_F(Registers, AdminQueueThroughTheCommonConfiguration) {
  OneMemberOwner owner;
  pci::VirtioPciOptions options;
  options.core.admin_owner = &owner;
  make(TransportKind::kModern, DeviceType::kBlk, options);
  EXPECT_EQ(common(c::kNumQueues, 2), 1u);
  EXPECT_EQ(common(c::kAdminQueueIndex, 2), 1u);
  EXPECT_EQ(common(c::kAdminQueueNum, 2), 1u);
  ASSERT_TRUE(set_common(c::kDeviceFeatureSelect, 4, 1).has_value());
  const std::uint64_t high = common(c::kDeviceFeature, 4);
  EXPECT_NE(high & (1u << (admin::kFeatureAdminVq - 32)), 0u);
  EXPECT_NE(high & (1u << (admin::kFeatureSrIov - 32)), 0u);
  // Before ADMIN_VQ is negotiated its index reads like a queue that does not exist.
  ASSERT_TRUE(set_common(c::kQueueSelect, 2, 1).has_value());
  EXPECT_EQ(common(c::kQueueSize, 2), 0u);
  features_ok(feature_bit(feature::kVersion1) | feature_bit(admin::kFeatureAdminVq));

  ASSERT_TRUE(set_common(c::kQueueSelect, 2, 1).has_value());
  EXPECT_EQ(common(c::kQueueSize, 2), std::uint64_t{kAdminQueueSize});
  EXPECT_EQ(common(c::kQueueNotifyOff, 2), 1u);
  ASSERT_TRUE(set_common(c::kQueueMsixVector, 2, 1).has_value());
  EXPECT_EQ(common(c::kQueueMsixVector, 2), 1u);
  SplitRing admin_ring(rig_->guest.ram, 16);
  ASSERT_TRUE(set_common(c::kQueueSize, 2, 16).has_value());
  ASSERT_TRUE(set_common(c::kQueueDesc, 8, admin_ring.layout().desc).has_value());
  ASSERT_TRUE(set_common(c::kQueueDriver, 8, admin_ring.layout().driver).has_value());
  ASSERT_TRUE(set_common(c::kQueueDevice, 8, admin_ring.layout().device).has_value());
  ASSERT_TRUE(set_common(c::kQueueEnable, 2, 1).has_value());
  ASSERT_TRUE(
      set_common(c::kDeviceStatus, 1,
                 status::kAcknowledge | status::kDriver | status::kFeaturesOk | status::kDriverOk)
          .has_value());
  // LIST_QUERY through the admin queue's doorbell.
  std::array<std::uint8_t, 24> query{};
  query[2] = admin::kGroupSrIov;
  ChainBuilder command(rig_->guest.ram);
  command.readable(query).writable(16);
  admin_ring.add(command);
  const std::uint32_t mult = pci::VirtioPciOptions{}.notify_off_multiplier;
  ASSERT_TRUE(wr(kBar, VirtioPciLayout::kNotifyOffset + mult, 2, 1).has_value());
  auto used = admin_ring.pop_used();
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(used->length, 16u);
  EXPECT_EQ(command.written_bytes().at(8), 0x7f);  // LIST_QUERY, LIST_USE, legacy 2..6
}

TEST_F(Registers, OddAndMisalignedCommonAccessesAreRefused) {
  make(TransportKind::kModern);
  // Partial field, straddling fields, 3-byte, misaligned: error, reads 0xFF, no effect.
  for (auto [offset, width] :
       {std::pair{c::kQueueSelect, 1u}, std::pair{0x13u, 2u}, std::pair{c::kDeviceStatus, 2u},
        std::pair{c::kNumQueues, 4u}, std::pair{c::kQueueDesc + 2, 4u},
        std::pair{c::kDeviceFeature, 8u}}) {
    EXPECT_FALSE(rd(kBar, offset, width).has_value()) << offset << "/" << width;
    for (auto b : last_read_) EXPECT_EQ(b, 0xFF);
    EXPECT_FALSE(wr(kBar, offset, width, 0).has_value()) << offset << "/" << width;
  }
  std::vector<std::uint8_t> three(3);
  EXPECT_FALSE(fn_->bar_read(kBar, 0, three).has_value());
  EXPECT_FALSE(rd(kBar, fn_->bar_info(kBar).size - 2, 4).has_value());  // past the BAR
  EXPECT_FALSE(rd(1, 0, 4).has_value());                                // no BAR1
  EXPECT_EQ(common(c::kDeviceStatus, 1), 0u);
  EXPECT_EQ(common(c::kQueueSelect, 2), 0u);
  // Read-only fields ignore writes.
  EXPECT_FALSE(set_common(c::kNumQueues, 2, 9).has_value());
  EXPECT_EQ(common(c::kNumQueues, 2), 1u);
}

TEST_F(Registers, OutOfRangeQueueSelect) {
  make(TransportKind::kModern);
  ASSERT_TRUE(set_common(c::kQueueSelect, 2, 0xFFFF).has_value());
  EXPECT_EQ(common(c::kQueueSelect, 2), 0xFFFFu);
  EXPECT_EQ(common(c::kQueueSize, 2), 0u);  // §4.1.4.3: 0 = queue unavailable
  EXPECT_EQ(common(c::kQueueMsixVector, 2), pci::kNoVector);
  EXPECT_EQ(common(c::kQueueEnable, 2), 0u);
  EXPECT_EQ(common(c::kQueueDesc, 8), 0u);
  EXPECT_FALSE(set_common(c::kQueueSize, 2, 16).has_value());
  EXPECT_FALSE(set_common(c::kQueueDesc, 4, 0x1000).has_value());
  EXPECT_FALSE(set_common(c::kQueueMsixVector, 2, 1).has_value());
  EXPECT_FALSE(set_common(c::kQueueEnable, 2, 1).has_value());
  // Queue 0 untouched.
  ASSERT_TRUE(set_common(c::kQueueSelect, 2, 0).has_value());
  EXPECT_EQ(common(c::kQueueSize, 2), 64u);
  EXPECT_EQ(common(c::kQueueDesc, 8), 0u);
}

TEST_F(Registers, QueueEnableWithBadRingsNeedsReset) {
  make(TransportKind::kModern);
  features_ok(feature_bit(feature::kVersion1));
  // Descriptor table outside guest RAM.
  ASSERT_TRUE(set_common(c::kQueueDesc, 8, 0xDEAD0000000ull).has_value());
  ASSERT_TRUE(set_common(c::kQueueDriver, 8, 0x100000).has_value());
  ASSERT_TRUE(set_common(c::kQueueDevice, 8, 0x101000).has_value());
  (void)set_common(c::kQueueEnable, 2, 1);
  EXPECT_NE(common(c::kDeviceStatus, 1) & status::kDeviceNeedsReset, 0u);
  EXPECT_EQ(common(c::kQueueEnable, 2), 0u);
  // queue_enable = 0 is refused (§4.1.4.3.2).
  EXPECT_FALSE(set_common(c::kQueueEnable, 2, 0).has_value());
  // Reset clears everything.
  ASSERT_TRUE(set_common(c::kDeviceStatus, 1, 0).has_value());
  EXPECT_EQ(common(c::kDeviceStatus, 1), 0u);
  EXPECT_EQ(common(c::kQueueDesc, 8), 0u);
}

TEST_F(Registers, QueueEnableBeforeFeaturesOkIsRefused) {
  make(TransportKind::kModern);
  ASSERT_TRUE(set_common(c::kQueueDesc, 8, 0x100000).has_value());
  EXPECT_FALSE(set_common(c::kQueueEnable, 2, 1).has_value());
  EXPECT_EQ(common(c::kQueueEnable, 2), 0u);
}

TEST_F(Registers, StatusOnlyGrowsAndResetClearsTransportState) {
  make(TransportKind::kModern);
  features_ok(feature_bit(feature::kVersion1));
  ASSERT_TRUE(set_common(c::kConfigMsixVector, 2, 0).has_value());
  ASSERT_TRUE(set_common(c::kQueueMsixVector, 2, 1).has_value());
  ASSERT_TRUE(set_common(c::kQueueSelect, 2, 0).has_value());
  // Clearing a bit is refused (§2.1.1) and leaves the status as it was.
  EXPECT_FALSE(set_common(c::kDeviceStatus, 1, status::kAcknowledge).has_value());
  EXPECT_EQ(common(c::kDeviceStatus, 1),
            status::kAcknowledge | status::kDriver | status::kFeaturesOk);
  // Feature writes after FEATURES_OK are refused.
  EXPECT_FALSE(set_common(c::kDriverFeature, 4, 0).has_value());
  // Writes during/after reset: reset, then queue registers read their reset values.
  ASSERT_TRUE(set_common(c::kDeviceStatus, 1, 0).has_value());
  EXPECT_EQ(common(c::kDeviceStatus, 1), 0u);
  EXPECT_EQ(common(c::kConfigMsixVector, 2), pci::kNoVector);
  EXPECT_EQ(common(c::kQueueMsixVector, 2), pci::kNoVector);
  EXPECT_EQ(common(c::kQueueSize, 2), 64u);
  // A second reset while already reset is harmless.
  ASSERT_TRUE(set_common(c::kDeviceStatus, 1, 0).has_value());
  EXPECT_EQ(common(c::kDeviceStatus, 1), 0u);
}

TEST_F(Registers, MsixVectorMappingRules) {
  pci::VirtioPciOptions options;
  options.msix_vectors = 2;
  make(TransportKind::kModern, DeviceType::kRng, options);
  ASSERT_TRUE(set_common(c::kQueueMsixVector, 2, 1).has_value());
  EXPECT_EQ(common(c::kQueueMsixVector, 2), 1u);
  ASSERT_TRUE(set_common(c::kQueueMsixVector, 2, 2).has_value());  // beyond the table
  EXPECT_EQ(common(c::kQueueMsixVector, 2), pci::kNoVector);
  ASSERT_TRUE(set_common(c::kConfigMsixVector, 2, 0x7FF).has_value());
  EXPECT_EQ(common(c::kConfigMsixVector, 2), pci::kNoVector);
}

TEST_F(Registers, IsrReadClearsAndDeassertsIntx) {
  make(TransportKind::kModern, DeviceType::kBlk);
  VirtioPciDriver driver(*fn_, rig_->guest.ram);
  ASSERT_TRUE(driver.probe().has_value());
  DriverOptions options;
  options.use_msix = false;
  ASSERT_TRUE(driver.initialise(options).has_value());
  run_blk_requests(driver);  // takes INTx interrupts through the ISR
  // A configuration change: ISR bit 1, Status.Interrupt, INTx.
  auto& device = static_cast<devices::BlockDevice&>(fn_->core().device());
  auto& backend = static_cast<devices::testing::MemoryBackend&>(device.backend());
  backend.bytes.resize(2 << 20);
  device.refresh_capacity();
  EXPECT_TRUE(driver.interrupts().intx);
  EXPECT_NE(cfg(vpci::pci::reg::kStatus, 2) & vpci::pci::status::kInterruptStatus, 0u);
  // Command.InterruptDisable drops the line but keeps the status bit (PCIe §7.5.1.1.3).
  set_cfg(vpci::pci::reg::kCommand, 2, vpci::pci::command::kInterruptDisable | 7);
  EXPECT_FALSE(driver.interrupts().intx);
  EXPECT_NE(cfg(vpci::pci::reg::kStatus, 2) & vpci::pci::status::kInterruptStatus, 0u);
  set_cfg(vpci::pci::reg::kCommand, 2, 7);
  EXPECT_TRUE(driver.interrupts().intx);
  EXPECT_EQ(rd(kBar, VirtioPciLayout::kIsrOffset, 1).value_or(0), pci::kIsrConfig);
  EXPECT_FALSE(driver.interrupts().intx);
  EXPECT_EQ(cfg(vpci::pci::reg::kStatus, 2) & vpci::pci::status::kInterruptStatus, 0u);
  EXPECT_EQ(rd(kBar, VirtioPciLayout::kIsrOffset, 1).value_or(0xFF), 0u);  // cleared
  // Writes to the ISR are ignored.
  EXPECT_TRUE(wr(kBar, VirtioPciLayout::kIsrOffset, 1, 3).has_value());
  EXPECT_EQ(fn_->isr(), 0u);
}

TEST_F(Registers, MsixPerVectorMaskPendingAndFunctionMask) {
  make(TransportKind::kModern);
  VirtioPciDriver driver(*fn_, rig_->guest.ram);
  ASSERT_TRUE(driver.probe().has_value());
  ASSERT_TRUE(driver.initialise({}).has_value());
  const auto& layout = fn_->layout();
  const std::uint16_t msix_cap = fn_->layout().msix_cap;
  // Mask vector 1 (queue 0): the request completes, no message, PBA bit 1 set.
  ASSERT_TRUE(wr(kBar, layout.msix_table_offset + 16 + 12, 4, 1).has_value());
  const std::size_t before = driver.interrupts().msix.size();
  ChainBuilder chain(rig_->guest.ram);
  chain.writable(16);
  driver.submit(0, chain);
  ASSERT_TRUE(driver.pop_used(0).has_value());
  EXPECT_EQ(driver.interrupts().msix.size(), before);
  EXPECT_EQ(rd(kBar, layout.msix_pba_offset, 8).value_or(0), 2u);
  EXPECT_FALSE(wr(kBar, layout.msix_pba_offset, 8, 0).has_value());  // PBA is read-only
  // Unmask: delivered once, pending cleared.
  ASSERT_TRUE(wr(kBar, layout.msix_table_offset + 16 + 12, 4, 0).has_value());
  ASSERT_EQ(driver.interrupts().msix.size(), before + 1);
  EXPECT_EQ(driver.interrupts().msix.back().vector, 1u);
  EXPECT_EQ(rd(kBar, layout.msix_pba_offset, 8).value_or(1), 0u);
  // Function mask: same through Message Control bit 14.
  set_cfg(msix_cap + 2u, 2, 0xC000);
  driver.submit(0, chain);
  ASSERT_TRUE(driver.pop_used(0).has_value());
  EXPECT_EQ(driver.interrupts().msix.size(), before + 1);
  EXPECT_EQ(rd(kBar, layout.msix_pba_offset, 8).value_or(0), 2u);
  set_cfg(msix_cap + 2u, 2, 0x8000);
  EXPECT_EQ(driver.interrupts().msix.size(), before + 2);
  // Table: byte and misaligned accesses refused; reserved vector-control bits read 0.
  EXPECT_FALSE(rd(kBar, layout.msix_table_offset + 1, 1).has_value());
  EXPECT_FALSE(rd(kBar, layout.msix_table_offset + 4, 8).has_value());
  ASSERT_TRUE(wr(kBar, layout.msix_table_offset + 12, 4, 0xFFFFFFFF).has_value());
  EXPECT_EQ(rd(kBar, layout.msix_table_offset + 12, 4).value_or(0), 1u);
}

TEST_F(Registers, MsixOwnedByBusSendsUnmasked) {
  pci::VirtioPciOptions options;
  options.msix_owner = vpci::pci::MsixTableOwner::kBus;
  make(TransportKind::kModern, DeviceType::kRng, options);
  VirtioPciDriver driver(*fn_, rig_->guest.ram);
  ASSERT_TRUE(driver.probe().has_value());
  ASSERT_TRUE(driver.initialise({}).has_value());
  // Even with every vector masked in our copy of the table, messages go out.
  for (int v = 0; v < 2; ++v)
    ASSERT_TRUE(wr(kBar, fn_->layout().msix_table_offset + 16 * v + 12, 4, 1).has_value());
  const std::size_t before = driver.interrupts().msix.size();
  ChainBuilder chain(rig_->guest.ram);
  chain.writable(16);
  driver.submit(0, chain);
  EXPECT_EQ(driver.interrupts().msix.size(), before + 1);
  EXPECT_EQ(rd(kBar, fn_->layout().msix_pba_offset, 8).value_or(1), 0u);
}

TEST_F(Registers, PciCfgWindowSemantics) {
  make(TransportKind::kModern);
  const std::uint16_t cap = fn_->layout().pci_cfg_cap;
  ASSERT_NE(cap, 0);
  EXPECT_EQ(cfg(cap + 2u, 1), 20u);  // cap_len MUST be 20
  // Read num_queues (2 bytes at common + 0x12) through the window.
  set_cfg(cap + 4u, 1, kBar);
  set_cfg(cap + 8u, 4, VirtioPciLayout::kCommonOffset + c::kNumQueues);
  set_cfg(cap + 12u, 4, 2);
  EXPECT_EQ(cfg(cap + 16u, 4), 1u);
  // Write queue_select through the window.
  set_cfg(cap + 8u, 4, c::kQueueSelect);
  set_cfg(cap + 16u, 4, 0x0005);
  EXPECT_EQ(common(c::kQueueSelect, 2), 5u);
  // Garbage windows do nothing: bad BAR, bad length, misaligned, past the BAR.
  struct Bad {
    std::uint8_t bar;
    std::uint32_t offset;
    std::uint32_t length;
  };
  for (const Bad& bad : {Bad{7, c::kQueueSelect, 2}, Bad{1, 0, 4}, Bad{kBar, c::kQueueSelect, 3},
                         Bad{kBar, c::kQueueSelect + 1, 2}, Bad{kBar, 0xFFFFFFFC, 4},
                         Bad{kBar, c::kQueueSelect, 0}, Bad{kBar, c::kQueueSelect, 8}}) {
    set_cfg(cap + 4u, 1, bad.bar);
    set_cfg(cap + 8u, 4, bad.offset);
    set_cfg(cap + 12u, 4, bad.length);
    EXPECT_EQ(cfg(cap + 16u, 4), 0u);
    set_cfg(cap + 16u, 4, 0x0009);
    EXPECT_EQ(common(c::kQueueSelect, 2), 5u);
  }
}

TEST_F(Registers, PciCfgWindowDoorbellKicksQueue) {
  make(TransportKind::kModern);
  VirtioPciDriver driver(*fn_, rig_->guest.ram);
  ASSERT_TRUE(driver.probe().has_value());
  ASSERT_TRUE(driver.initialise({}).has_value());
  ChainBuilder chain(rig_->guest.ram);
  chain.writable(32);
  driver.submit(0, chain, /*kick=*/false);
  EXPECT_FALSE(driver.pop_used(0).has_value());
  // §4.1.4.9: a 2-byte write of the queue index to the doorbell through pci_cfg_data.
  const std::uint16_t cap = fn_->layout().pci_cfg_cap;
  set_cfg(cap + 4u, 1, kBar);
  set_cfg(cap + 8u, 4, VirtioPciLayout::kNotifyOffset);
  set_cfg(cap + 12u, 4, 2);
  set_cfg(cap + 16u, 2, 0);
  auto used = driver.pop_used(0);
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(used->length, 32u);
  EXPECT_TRUE(driver.take_queue_interrupt(0));
}

TEST_F(Registers, NotifyMultiplierValidationAndDoorbellAddresses) {
  pci::VirtioPciOptions options;
  options.notify_off_multiplier = 3;
  EXPECT_FALSE(pci::VirtioPciFunction::create(make_device(DeviceType::kRng),
                                              std::make_shared<GuestMemory>(), options)
                   .has_value());
  options.notify_off_multiplier = 0x1000;
  make(TransportKind::kModern, DeviceType::kRng, options);
  EXPECT_EQ(fn_->layout().notify_length, 4u);
  // A write that is not at a doorbell, or of the wrong width, is refused.
  EXPECT_FALSE(wr(kBar, VirtioPciLayout::kNotifyOffset + 2, 2, 0).has_value());
  EXPECT_FALSE(wr(kBar, VirtioPciLayout::kNotifyOffset, 1, 0).has_value());
  EXPECT_TRUE(wr(kBar, VirtioPciLayout::kNotifyOffset, 2, 0).has_value());
  EXPECT_FALSE(wr(kBar, VirtioPciLayout::kNotifyOffset, 2, 5).has_value());  // no queue 5
  EXPECT_EQ(rd(kBar, VirtioPciLayout::kNotifyOffset, 2).value_or(1), 0u);
}

TEST_F(Registers, LegacyConfigShiftsWithMsixEnable) {
  make(TransportKind::kTransitional, DeviceType::kBlk);
  // capacity (2048 sectors = 0x800) at device config offset 0: BAR0+20 without MSI-X.
  EXPECT_EQ(rd(0, 20, 4).value_or(0), 0x800u);
  const std::uint16_t msix_cap = fn_->layout().msix_cap;
  set_cfg(msix_cap + 2u, 2, 0x8000);
  EXPECT_EQ(rd(0, 24, 4).value_or(0), 0x800u);
  EXPECT_EQ(rd(0, 20, 2).value_or(0), pci::kNoVector);  // config vector register
  EXPECT_EQ(rd(0, 22, 2).value_or(0), pci::kNoVector);  // queue vector register
  set_cfg(msix_cap + 2u, 2, 0);
  EXPECT_EQ(rd(0, 20, 4).value_or(0), 0x800u);
  // Header registers: fixed widths.
  EXPECT_FALSE(rd(0, l::kQueueNum, 4).has_value());
  EXPECT_FALSE(rd(0, l::kHostFeatures, 2).has_value());
  EXPECT_FALSE(rd(0, 0, 8).has_value());
  EXPECT_EQ(rd(0, l::kQueueNum, 2).value_or(0), 64u);
  // Legacy host features never include VERSION_1 (bit 32 is beyond the register).
  EXPECT_TRUE(rd(0, l::kHostFeatures, 4).has_value());
  // Out-of-range select: size 0, PFN 0, PFN write refused.
  ASSERT_TRUE(wr(0, l::kQueueSelect, 2, 9).has_value());
  EXPECT_EQ(rd(0, l::kQueueNum, 2).value_or(1), 0u);
  EXPECT_EQ(rd(0, l::kQueuePfn, 4).value_or(1), 0u);
  EXPECT_FALSE(wr(0, l::kQueuePfn, 4, 0x100).has_value());
  EXPECT_FALSE(wr(0, l::kQueueNotify, 2, 9).has_value());
}

TEST_F(Registers, LegacyPfnOutsideRamNeedsReset) {
  make(TransportKind::kTransitional, DeviceType::kRng);
  ASSERT_TRUE(wr(0, l::kStatus, 1, status::kAcknowledge | status::kDriver).has_value());
  (void)wr(0, l::kQueuePfn, 4, 0xFFFFFFFF);  // far outside guest RAM
  EXPECT_NE(rd(0, l::kStatus, 1).value_or(0) & status::kDeviceNeedsReset, 0u);
  ASSERT_TRUE(wr(0, l::kStatus, 1, 0).has_value());
  EXPECT_EQ(rd(0, l::kStatus, 1).value_or(1), 0u);
  EXPECT_EQ(rd(0, l::kQueuePfn, 4).value_or(1), 0u);
}

TEST_F(Registers, TransitionalFirstInterfaceDecidesUntilReset) {
  make(TransportKind::kTransitional, DeviceType::kRng);
  // Modern write first: legacy writes are refused.
  ASSERT_TRUE(set_common(c::kDeviceStatus, 1, status::kAcknowledge).has_value());
  EXPECT_EQ(fn_->chosen_interface(), DriverInterface::kModern);
  EXPECT_FALSE(wr(0, l::kStatus, 1, status::kAcknowledge | status::kDriver).has_value());
  EXPECT_FALSE(wr(0, l::kGuestFeatures, 4, 0).has_value());
  EXPECT_EQ(common(c::kDeviceStatus, 1), status::kAcknowledge);
  // Status 0 through the legacy block resets and frees the choice.
  ASSERT_TRUE(wr(0, l::kStatus, 1, 0).has_value());
  EXPECT_FALSE(fn_->chosen_interface().has_value());
  ASSERT_TRUE(wr(0, l::kStatus, 1, status::kAcknowledge).has_value());
  EXPECT_EQ(fn_->chosen_interface(), DriverInterface::kLegacy);
  EXPECT_EQ(fn_->core().driver_interface(), DriverInterface::kLegacy);
  EXPECT_FALSE(set_common(c::kDeviceStatus, 1, status::kAcknowledge | status::kDriver).has_value());
  EXPECT_FALSE(set_common(c::kQueueSelect, 2, 0).has_value());
  // Function-level reset also frees it.
  fn_->reset();
  EXPECT_FALSE(fn_->chosen_interface().has_value());
  EXPECT_EQ(fn_->core().driver_interface(), DriverInterface::kModern);
}

TEST_F(Registers, FunctionResetRestoresPowerOnState) {
  make(TransportKind::kModern);
  VirtioPciDriver driver(*fn_, rig_->guest.ram);
  ASSERT_TRUE(driver.probe().has_value());
  ASSERT_TRUE(driver.initialise({}).has_value());
  std::vector<std::uint8_t> before(4096);
  fn_->reset();
  EXPECT_EQ(common(c::kDeviceStatus, 1), 0u);
  EXPECT_EQ(cfg(vpci::pci::reg::kCommand, 2), 0u);
  EXPECT_EQ(cfg(fn_->layout().msix_cap + 2u, 2) & 0xC000, 0u);
  EXPECT_EQ(rd(kBar, fn_->layout().msix_table_offset + 12, 4).value_or(0), 1u);  // masked
}

TEST_F(Registers, CapabilityChainIsClean) {
  for (auto kind : {TransportKind::kModern, TransportKind::kTransitional, TransportKind::kLegacy,
                    TransportKind::kTransitionalMmr}) {
    make(kind, DeviceType::kBlk);
    std::vector<std::uint8_t> config(4096);
    ASSERT_TRUE(fn_->config_read(0, config).has_value());
    const auto scan = vpci::pci::scan_capabilities(config);
    EXPECT_TRUE(scan.extended_walked);
    for (const auto& d : scan.diagnostics) {
      EXPECT_NE(d.severity, vpci::pci::Severity::kError)
          << pci::transport_kind_name(kind) << ": " << d.message;
    }
  }
}

TEST_F(Registers, SharedMemoryAndVendorCapabilities) {
  pci::VirtioPciOptions options;
  options.shared_memory = {{3, 0x10000}};
  options.vendor_capabilities = {{0x1234, {1, 2, 3}}};
  make(TransportKind::kModern, DeviceType::kRng, options);
  EXPECT_EQ(fn_->bar_info(2).kind, vpci::pci::BarKind::kMemory64);
  EXPECT_EQ(fn_->bar_info(2).size, 0x10000u);
  ASSERT_TRUE(wr(2, 0x100, 8, 0x1122334455667788ull).has_value());
  EXPECT_EQ(fn_->shared_memory(3)[0x100], 0x88);
  EXPECT_EQ(rd(2, 0x104, 4).value_or(0), 0x11223344u);
  std::vector<std::uint8_t> config(256);
  ASSERT_TRUE(fn_->config_read(0, config).has_value());
  bool shm = false, vendor = false;
  for (const auto& cap : vpci::pci::scan_capabilities(config).capabilities) {
    if (cap.id != 9) continue;
    if (config[cap.offset + 3] == 8) {
      shm = config[cap.offset + 2] == 24 && config[cap.offset + 4] == 2 &&
            config[cap.offset + 5] == 3;
    }
    if (config[cap.offset + 3] == 9) {
      vendor = config[cap.offset + 2] == 12 && config[cap.offset + 4] == 0x34 &&
               config[cap.offset + 6] == 1;
    }
  }
  EXPECT_TRUE(shm);
  EXPECT_TRUE(vendor);
  options.vendor_capabilities = {{0x1AF4, {}}};  // must not be the virtio vendor
  EXPECT_FALSE(pci::VirtioPciFunction::create(make_device(DeviceType::kRng),
                                              std::make_shared<GuestMemory>(), options)
                   .has_value());
}

// notify = "mapped" (issue 19): BAR4 declares its doorbell pages — and nothing else —
// mappable; a device that would then never see a doorbell must poll, so create() refuses
// the option without an idle look, and a legacy device has no such area at all.
TEST_F(Registers, MappableNotificationAreaIsTheDoorbellPagesOnly) {
  pci::VirtioPciOptions options;
  options.notify_mappable = true;
  const auto create = [&](TransportKind kind) {
    options.kind = kind;
    return pci::VirtioPciFunction::create(make_device(DeviceType::kBlk),
                                          std::make_shared<GuestMemory>(), options);
  };
  auto refused = create(TransportKind::kModern);
  ASSERT_FALSE(refused.has_value());
  EXPECT_NE(refused.error().message.find("poll its queues"), std::string::npos);
  options.core.idle_poll = std::chrono::microseconds(1000);
  refused = create(TransportKind::kLegacy);
  ASSERT_FALSE(refused.has_value());
  EXPECT_NE(refused.error().message.find("no notification area"), std::string::npos);
  options.notify_off_multiplier = 0x1000;  // a page per queue: the area spans pages
  make(TransportKind::kTransitional, DeviceType::kBlk, options);
  const auto bar4 = fn_->bar_info(pci::VirtioPciLayout::kMemoryBar);
  EXPECT_EQ(bar4.mappable_offset, pci::VirtioPciLayout::kNotifyOffset);
  EXPECT_EQ(bar4.mappable_size, (fn_->layout().notify_length + 0xFFF) / 0x1000 * 0x1000);
  EXPECT_GE(bar4.mappable_size, 0x1000u);
  EXPECT_LE(bar4.mappable_offset + bar4.mappable_size, fn_->layout().msix_table_offset)
      << "the MSI-X table must stay outside";
  EXPECT_EQ(fn_->bar_info(0).mappable_size, 0u) << "the legacy I/O BAR is never mappable";
  options.notify_mappable = false;
  make(TransportKind::kModern, DeviceType::kBlk, options);
  EXPECT_EQ(fn_->bar_info(pci::VirtioPciLayout::kMemoryBar).mappable_size, 0u);
}

TEST_F(Registers, QueueResetWithRingReset) {
  make(TransportKind::kModern);
  VirtioPciDriver driver(*fn_, rig_->guest.ram);
  ASSERT_TRUE(driver.probe().has_value());
  DriverOptions options;
  options.extra_features = feature_bit(feature::kRingReset);
  ASSERT_TRUE(driver.initialise(options).has_value());
  ASSERT_TRUE(has_feature(driver.negotiated_features(), feature::kRingReset));
  EXPECT_EQ(common(c::kQueueEnable, 2), 1u);
  ASSERT_TRUE(set_common(c::kQueueReset, 2, 1).has_value());
  EXPECT_EQ(common(c::kQueueReset, 2), 0u);  // completes at once
  EXPECT_EQ(common(c::kQueueEnable, 2), 0u);
}

}  // namespace
}  // namespace vpci::virtio::testing

namespace vpci::virtio::testing {
namespace {

TEST(ConfigChange, MsixConfigVectorAndGeneration) {
  Rig rig(DeviceType::kBlk, {});
  ASSERT_TRUE(rig.function);
  ASSERT_TRUE(rig.driver->probe().has_value());
  ASSERT_TRUE(rig.driver->initialise({}).has_value());
  const auto generation = rig.driver->common_read(pci::common::kConfigGeneration, 1);
  ASSERT_TRUE(generation.has_value());
  const std::size_t before = rig.driver->interrupts().msix.size();
  auto& device = static_cast<devices::BlockDevice&>(rig.function->core().device());
  static_cast<devices::testing::MemoryBackend&>(device.backend()).bytes.resize(4 << 20);
  device.refresh_capacity();
  // §4.1.5.3 with MSI-X: the configuration vector (0, as the driver mapped it), no ISR/INTx.
  ASSERT_EQ(rig.driver->interrupts().msix.size(), before + 1);
  EXPECT_EQ(rig.driver->interrupts().msix.back().vector, 0u);
  EXPECT_FALSE(rig.driver->interrupts().intx);
  EXPECT_EQ(rig.function->isr(), 0u);
  EXPECT_NE(rig.driver->common_read(pci::common::kConfigGeneration, 1).value_or(*generation),
            *generation);
  auto capacity = rig.driver->read_device_config(devices::blk::config::kCapacity, 4);
  ASSERT_TRUE(capacity.has_value());
  EXPECT_EQ((*capacity)[1], 0x20);  // 8192 sectors = 0x2000
}

}  // namespace
}  // namespace vpci::virtio::testing
