// The test driver runs rng and blk requests end to end through every transport and
// driver path: modern (split, packed), transitional via modern and via legacy I/O,
// legacy-only, transitional MMR via modern and via its legacy window; MSI-X and INTx.
#include <gtest/gtest.h>

#include "tests/virtio_pci/test_devices.h"

namespace vpci::virtio::testing {
namespace {

using pci::TransportKind;

struct Case {
  const char* name;
  TransportKind kind;
  DriverPath path;
  DeviceType device;
  bool packed;
  bool msix;
  std::uint32_t multiplier = 4;
  bool mapper = false;
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << c.name;
}

class EndToEnd : public ::testing::TestWithParam<Case> {};

TEST_P(EndToEnd, RequestsComplete) {
  const Case& c = GetParam();
  pci::VirtioPciOptions options;
  options.kind = c.kind;
  options.notify_off_multiplier = c.multiplier;
  Rig rig(c.device, options, c.mapper);
  ASSERT_TRUE(rig.function);
  auto probe = rig.driver->probe();
  ASSERT_TRUE(probe.has_value()) << probe.error().message;
  EXPECT_EQ(probe->virtio_id, c.device == DeviceType::kRng ? 4u : 2u);
  DriverOptions driver_options;
  driver_options.path = c.path;
  driver_options.packed = c.packed;
  driver_options.use_msix = c.msix;
  auto init = rig.driver->initialise(driver_options);
  ASSERT_TRUE(init.has_value()) << init.error().message;
  EXPECT_NE(rig.driver->status() & status::kDriverOk, 0);
  if (c.path != DriverPath::kModern) {
    EXPECT_EQ(rig.function->core().driver_interface(), DriverInterface::kLegacy);
    EXPECT_FALSE(has_feature(rig.driver->negotiated_features(), feature::kVersion1));
  } else {
    EXPECT_TRUE(has_feature(rig.driver->negotiated_features(), feature::kVersion1));
    EXPECT_EQ(has_feature(rig.driver->negotiated_features(), feature::kRingPacked), c.packed);
  }
  for (int round = 0; round < 3; ++round) {
    if (c.device == DeviceType::kRng) {
      run_rng_request(*rig.driver);
    } else {
      run_blk_requests(*rig.driver);
    }
  }
  if (c.mapper) {
    // Every legacy notify took the fast path straight to the MMR doorbell.
    EXPECT_EQ(rig.mapper->fast_path_notifies() >= 3u, c.path == DriverPath::kLegacyIo);
    EXPECT_EQ(probe->device_id, c.device == DeviceType::kRng ? 0x1005 : 0x1001);
    EXPECT_EQ(probe->revision, 0);
  }
  if (c.msix) {
    EXPECT_FALSE(rig.driver->interrupts().intx);
    EXPECT_EQ(rig.driver->interrupts().intx_changes, 0);
  } else {
    EXPECT_TRUE(rig.driver->interrupts().msix.empty());
    EXPECT_GT(rig.driver->interrupts().intx_changes, 0);
  }
}

const Case kCases[] = {
    {"modern_rng_split_msix", TransportKind::kModern, DriverPath::kModern, DeviceType::kRng, false,
     true},
    {"modern_rng_packed_msix", TransportKind::kModern, DriverPath::kModern, DeviceType::kRng, true,
     true},
    {"modern_rng_split_intx", TransportKind::kModern, DriverPath::kModern, DeviceType::kRng, false,
     false},
    {"modern_blk_split_msix", TransportKind::kModern, DriverPath::kModern, DeviceType::kBlk, false,
     true},
    {"modern_blk_packed_intx", TransportKind::kModern, DriverPath::kModern, DeviceType::kBlk, true,
     false},
    {"modern_rng_shared_doorbell", TransportKind::kModern, DriverPath::kModern, DeviceType::kRng,
     false, true, 0},
    {"modern_blk_page_per_queue", TransportKind::kModern, DriverPath::kModern, DeviceType::kBlk,
     true, true, 0x1000},
    {"transitional_rng_modern", TransportKind::kTransitional, DriverPath::kModern, DeviceType::kRng,
     false, true},
    {"transitional_blk_modern_packed", TransportKind::kTransitional, DriverPath::kModern,
     DeviceType::kBlk, true, false},
    {"transitional_rng_legacy_msix", TransportKind::kTransitional, DriverPath::kLegacyIo,
     DeviceType::kRng, false, true},
    {"transitional_rng_legacy_intx", TransportKind::kTransitional, DriverPath::kLegacyIo,
     DeviceType::kRng, false, false},
    {"transitional_blk_legacy_msix", TransportKind::kTransitional, DriverPath::kLegacyIo,
     DeviceType::kBlk, false, true},
    {"transitional_blk_legacy_intx", TransportKind::kTransitional, DriverPath::kLegacyIo,
     DeviceType::kBlk, false, false},
    {"legacy_blk_msix", TransportKind::kLegacy, DriverPath::kLegacyIo, DeviceType::kBlk, false,
     true},
    {"legacy_rng_intx", TransportKind::kLegacy, DriverPath::kLegacyIo, DeviceType::kRng, false,
     false},
    {"mmr_rng_modern", TransportKind::kTransitionalMmr, DriverPath::kModern, DeviceType::kRng,
     false, true},
    {"mmr_blk_modern_packed", TransportKind::kTransitionalMmr, DriverPath::kModern,
     DeviceType::kBlk, true, true},
    {"mmr_rng_legacy_msix", TransportKind::kTransitionalMmr, DriverPath::kLegacyMmr,
     DeviceType::kRng, false, true},
    {"mmr_blk_legacy_intx", TransportKind::kTransitionalMmr, DriverPath::kLegacyMmr,
     DeviceType::kBlk, false, false},
    {"mmr_blk_legacy_msix", TransportKind::kTransitionalMmr, DriverPath::kLegacyMmr,
     DeviceType::kBlk, false, true},
    {"mapper_rng_legacy_msix", TransportKind::kTransitionalMmr, DriverPath::kLegacyIo,
     DeviceType::kRng, false, true, 4, true},
    {"mapper_rng_legacy_intx", TransportKind::kTransitionalMmr, DriverPath::kLegacyIo,
     DeviceType::kRng, false, false, 4, true},
    {"mapper_blk_legacy_msix", TransportKind::kTransitionalMmr, DriverPath::kLegacyIo,
     DeviceType::kBlk, false, true, 0x1000, true},
    {"mapper_blk_legacy_intx", TransportKind::kTransitionalMmr, DriverPath::kLegacyIo,
     DeviceType::kBlk, false, false, 0, true},
    {"mapper_blk_modern_packed", TransportKind::kTransitionalMmr, DriverPath::kModern,
     DeviceType::kBlk, true, true, 4, true},
};

INSTANTIATE_TEST_SUITE_P(Transports, EndToEnd, ::testing::ValuesIn(kCases),
                         [](const auto& param_info) { return std::string(param_info.param.name); });

}  // namespace
}  // namespace vpci::virtio::testing
