// The Xen grant capability (docs/xen-grant-capability.md): the device side adds it and
// requires ACCESS_PLATFORM; the driver-side parser finds the backend domain or reports
// exactly what is malformed.
#include <gtest/gtest.h>

#include "domain/xen_abi.h"
#include "tests/virtio_pci/test_devices.h"
#include "virtio/pci/xen_grant_capability.h"

namespace vpci::virtio::testing {
namespace {

using pci::TransportKind;

std::vector<std::uint8_t> config_of(vpci::pci::Function& f) {
  std::vector<std::uint8_t> config(f.config_size());
  EXPECT_TRUE(f.config_read(0, config).has_value());
  return config;
}

std::unique_ptr<pci::VirtioPciFunction> xen_device(std::uint16_t domid,
                                                   TransportKind kind = TransportKind::kModern) {
  pci::VirtioPciOptions options;
  options.kind = kind;
  options.xen_backend_domid = domid;
  auto f = pci::VirtioPciFunction::create(make_device(DeviceType::kRng),
                                          std::make_shared<GuestMemory>(), options);
  if (!f) {
    ADD_FAILURE() << f.error().message;
    return nullptr;
  }
  return std::move(*f);
}

TEST(XenGrantCapability, ParserFindsBackendDomain) {
  for (auto kind :
       {TransportKind::kModern, TransportKind::kTransitional, TransportKind::kTransitionalMmr}) {
    auto f = xen_device(0x7EF, kind);
    ASSERT_TRUE(f);
    auto parsed = pci::parse_xen_grant_capability(config_of(*f));
    ASSERT_TRUE(parsed.has_value()) << parsed.error().message;
    ASSERT_TRUE(parsed->has_value());
    EXPECT_EQ((*parsed)->backend_domid, 0x7EF);
    const auto config = config_of(*f);
    const std::uint16_t at = (*parsed)->config_offset;
    EXPECT_EQ(config[at], 0x09);      // vendor-specific capability
    EXPECT_EQ(config[at + 2], 12);    // cap_len
    EXPECT_EQ(config[at + 3], 9);     // VIRTIO_PCI_CAP_VENDOR_CFG
    EXPECT_EQ(config[at + 4], 0x53);  // vendor 0x5853
    EXPECT_EQ(config[at + 5], 0x58);
    EXPECT_EQ(config[at + 6], 1);  // version
  }
}

TEST(XenGrantCapability, AbsentWithoutOption) {
  Rig rig(DeviceType::kRng, {});
  auto parsed = pci::parse_xen_grant_capability(config_of(*rig.function));
  ASSERT_TRUE(parsed.has_value());
  EXPECT_FALSE(parsed->has_value());
}

TEST(XenGrantCapability, DeviceOffersAndRequiresAccessPlatform) {
  pci::VirtioPciOptions options;
  options.xen_backend_domid = 1;
  Rig rig(DeviceType::kRng, options);
  auto& core = rig.function->core();
  EXPECT_TRUE(has_feature(core.device_features(), feature::kAccessPlatform));
  // A driver that does not accept ACCESS_PLATFORM does not get FEATURES_OK.
  ASSERT_TRUE(rig.driver->probe().has_value());
  namespace c = pci::common;
  ASSERT_TRUE(rig.driver->common_write(c::kDeviceStatus, 1, status::kAcknowledge | status::kDriver)
                  .has_value());
  ASSERT_TRUE(rig.driver->common_write(c::kDriverFeatureSelect, 4, 1).has_value());
  ASSERT_TRUE(rig.driver->common_write(c::kDriverFeature, 4, 1).has_value());  // VERSION_1 only
  (void)rig.driver->common_write(c::kDeviceStatus, 1,
                                 status::kAcknowledge | status::kDriver | status::kFeaturesOk);
  EXPECT_EQ(rig.driver->common_read(c::kDeviceStatus, 1).value_or(0xFF) & status::kFeaturesOk, 0u);
  // The test driver accepts it and gets through.
  ASSERT_TRUE(rig.driver->initialise({}).has_value());
  EXPECT_TRUE(has_feature(rig.driver->negotiated_features(), feature::kAccessPlatform));
}

TEST(XenGrantCapability, DeviceRefusesBadConfigurations) {
  pci::VirtioPciOptions options;
  options.kind = TransportKind::kLegacy;  // no ACCESS_PLATFORM in the legacy interface
  options.xen_backend_domid = 1;
  EXPECT_FALSE(pci::VirtioPciFunction::create(make_device(DeviceType::kRng),
                                              std::make_shared<GuestMemory>(), options)
                   .has_value());
  options.kind = TransportKind::kModern;
  options.xen_backend_domid = domain::xen::kDomidFirstReserved;  // DOMID_FIRST_RESERVED
  EXPECT_FALSE(pci::VirtioPciFunction::create(make_device(DeviceType::kRng),
                                              std::make_shared<GuestMemory>(), options)
                   .has_value());
}

TEST(XenGrantCapability, ParserRejectsMalformedCapabilities) {
  auto f = xen_device(5);
  ASSERT_TRUE(f);
  const auto good = config_of(*f);
  const std::uint16_t at = (*pci::parse_xen_grant_capability(good))->config_offset;
  struct Mutation {
    const char* what;
    std::uint32_t offset;
    std::uint8_t value;
    ErrorCode code;
  };
  for (const Mutation& m : {Mutation{"short cap_len", 2u, 8, ErrorCode::kMalformedInput},
                            Mutation{"version 2", 6u, 2, ErrorCode::kUnsupported},
                            Mutation{"flags", 7u, 1, ErrorCode::kMalformedInput},
                            Mutation{"reserved", 10u, 1, ErrorCode::kMalformedInput},
                            Mutation{"reserved domid", 9u, 0x7F, ErrorCode::kMalformedInput}}) {
    auto bad = good;
    bad[at + m.offset] = m.value;
    if (m.offset == 9u) bad[at + 8] = 0xF5;  // 0x7FF5 = DOMID_IO range
    auto parsed = pci::parse_xen_grant_capability(bad);
    ASSERT_FALSE(parsed.has_value()) << m.what;
    EXPECT_EQ(parsed.error().code, m.code) << m.what << ": " << parsed.error().message;
  }
  // Too short to hold a header.
  EXPECT_FALSE(pci::parse_xen_grant_capability(std::span(good).first(16)).has_value());
  // A non-virtio function is not looked at.
  auto foreign = good;
  foreign[0] = 0x86;
  foreign[1] = 0x80;
  auto parsed = pci::parse_xen_grant_capability(foreign);
  ASSERT_TRUE(parsed.has_value());
  EXPECT_FALSE(parsed->has_value());
}

TEST(XenGrantCapability, TwoCapabilitiesMustAgree) {
  pci::VirtioPciOptions options;
  options.xen_backend_domid = 3;
  options.vendor_capabilities = {{pci::kXenPciVendorId, pci::xen_grant_capability_data(3)}};
  auto same = pci::VirtioPciFunction::create(make_device(DeviceType::kRng),
                                             std::make_shared<GuestMemory>(), options);
  ASSERT_TRUE(same.has_value());
  auto parsed = pci::parse_xen_grant_capability(config_of(**same));
  ASSERT_TRUE(parsed.has_value());
  EXPECT_EQ((*parsed)->backend_domid, 3);
  options.vendor_capabilities = {{pci::kXenPciVendorId, pci::xen_grant_capability_data(4)}};
  auto differ = pci::VirtioPciFunction::create(make_device(DeviceType::kRng),
                                               std::make_shared<GuestMemory>(), options);
  ASSERT_TRUE(differ.has_value());
  auto conflict = pci::parse_xen_grant_capability(config_of(**differ));
  ASSERT_FALSE(conflict.has_value());
  EXPECT_EQ(conflict.error().code, ErrorCode::kConflict);
}

}  // namespace
}  // namespace vpci::virtio::testing
