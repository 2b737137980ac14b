// PASID capability fields and their two host sources (pci/pasid.h). The point of most
// of these tests is the bit mapping: iommufd and the proposed VFIO struct number the
// EXEC/PRIV bits differently from each other, and the VFIO one differently from the
// register.
#include <array>
#include <cstdint>
#include <vector>

#include <gtest/gtest.h>

#include "pci/pasid.h"

namespace vpci::pci {
namespace {

TEST(PasidRegister, EncodesWidthExecPrivAtTheirRegisterBits) {
  EXPECT_EQ(pasid_capability_register({20, false, false}), 0x1400);
  EXPECT_EQ(pasid_capability_register({20, true, false}), 0x1402);  // exec: bit 1
  EXPECT_EQ(pasid_capability_register({20, false, true}), 0x1404);  // priv: bit 2
  EXPECT_EQ(pasid_capability_register({5, true, true}), 0x0506);
  EXPECT_EQ(pasid_capability_register({0, false, false}), 0x0000);
}

TEST(PasidRegister, DecodeRoundTripsEveryValidValue) {
  for (unsigned width = 0; width <= 20; ++width) {
    for (int flags = 0; flags < 4; ++flags) {
      const PasidFields fields{width, (flags & 1) != 0, (flags & 2) != 0};
      EXPECT_EQ(decode_pasid_capability_register(pasid_capability_register(fields)), fields);
    }
  }
}

TEST(PasidRegister, WidthAbove20IsRefused) {
  EXPECT_TRUE(validate_pasid_fields({20, true, true}));
  const auto bad = validate_pasid_fields({21, false, false});
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(bad.error().message.find("exceeds 20"), std::string::npos);
}

TEST(PasidRegister, BodyIsCapabilityThenZeroControlAndOnlyControlBits0To2AreWritable) {
  EXPECT_EQ(pasid_body({20, true, false}), (std::array<std::uint8_t, 4>{0x02, 0x14, 0x00, 0x00}));
  EXPECT_EQ(pasid_body_write_mask(), (std::array<std::uint8_t, 4>{0x00, 0x00, 0x07, 0x00}));
}

TEST(PasidIommufd, ExecAndPrivComeFromBits1And2) {
  auto exec = pasid_from_iommufd({20, iommufd::kCapPciPasidExec});
  ASSERT_TRUE(exec);
  EXPECT_EQ(*exec, (PasidFields{20, true, false}));
  auto priv = pasid_from_iommufd({16, iommufd::kCapPciPasidPriv});
  ASSERT_TRUE(priv);
  EXPECT_EQ(*priv, (PasidFields{16, false, true}));
  EXPECT_EQ(iommufd::kCapPciPasidExec, 1u << 1);
  EXPECT_EQ(iommufd::kCapPciPasidPriv, 1u << 2);
}

TEST(PasidIommufd, UnrelatedCapabilityBitsAreIgnored) {
  auto fields = pasid_from_iommufd(
      {8, iommufd::kCapDirtyTracking | iommufd::kCapPciAtsNotSupported | (1ull << 40)});
  ASSERT_TRUE(fields);
  EXPECT_EQ(*fields, (PasidFields{8, false, false}));
}

TEST(PasidIommufd, WidthZeroMeansNoPasidAndWidthAbove20IsRefused) {
  const auto none = pasid_from_iommufd({0, iommufd::kCapPciPasidExec});
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code, ErrorCode::kUnsupported);
  const auto wide = pasid_from_iommufd({21, 0});
  ASSERT_FALSE(wide);
  EXPECT_EQ(wide.error().code, ErrorCode::kInvalidArgument);
}

std::vector<std::uint8_t> hw_info(std::uint32_t size, std::uint8_t log2, std::uint64_t caps) {
  std::vector<std::uint8_t> bytes(40, 0);
  for (int i = 0; i < 4; ++i) bytes[i] = static_cast<std::uint8_t>(size >> (8 * i));
  bytes[8] = 7;   // dev_id, irrelevant
  bytes[24] = 1;  // out_data_type, irrelevant
  bytes[28] = log2;
  for (int i = 0; i < 8; ++i) bytes[32 + i] = static_cast<std::uint8_t>(caps >> (8 * i));
  return bytes;
}

TEST(PasidIommufd, DecodesTheStructLayout) {
  const auto info = decode_iommu_hw_info(hw_info(40, 20, 0x6));
  ASSERT_TRUE(info) << info.error().message;
  EXPECT_EQ(info->out_max_pasid_log2, 20);
  EXPECT_EQ(info->out_capabilities, 0x6u);
  auto fields = pasid_from_iommufd(*info);
  ASSERT_TRUE(fields);
  EXPECT_EQ(pasid_capability_register(*fields), 0x1406);
}

TEST(PasidIommufd, RefusesShortStructsAndReservedBytes) {
  EXPECT_FALSE(decode_iommu_hw_info(std::vector<std::uint8_t>(32, 0)));
  EXPECT_FALSE(decode_iommu_hw_info(hw_info(32, 20, 0)));  // size field predates out_capabilities
  auto reserved = hw_info(40, 20, 0);
  reserved[30] = 1;
  const auto bad = decode_iommu_hw_info(reserved);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, ErrorCode::kMalformedInput);
}

TEST(PasidVfioFeature, ExecIsBit0AndPrivIsBit1NotTheRegisterBits) {
  auto exec = pasid_from_vfio_feature({vfio_feature::kCapExec, 20, 0});
  ASSERT_TRUE(exec);
  EXPECT_EQ(*exec, (PasidFields{20, true, false}));
  EXPECT_EQ(pasid_capability_register(*exec), 0x1402);  // moved from bit 0 to bit 1
  auto priv = pasid_from_vfio_feature({vfio_feature::kCapPriv, 20, 0});
  ASSERT_TRUE(priv);
  EXPECT_EQ(*priv, (PasidFields{20, false, true}));
  EXPECT_EQ(pasid_capability_register(*priv), 0x1404);  // moved from bit 1 to bit 2
  // A VFIO value of 0x2 is PRIV; read as register bits it would wrongly be EXEC.
  EXPECT_FALSE(priv->execute);
}

TEST(PasidVfioFeature, RefusesUndefinedBitsReservedByteAndWidthZero) {
  EXPECT_EQ(pasid_from_vfio_feature({0x4, 20, 0}).error().code, ErrorCode::kMalformedInput);
  EXPECT_EQ(pasid_from_vfio_feature({0x1, 20, 1}).error().code, ErrorCode::kMalformedInput);
  EXPECT_EQ(pasid_from_vfio_feature({0x1, 0, 0}).error().code, ErrorCode::kUnsupported);
  EXPECT_EQ(pasid_from_vfio_feature({0x0, 21, 0}).error().code, ErrorCode::kInvalidArgument);
}

TEST(PasidVfioFeature, DecodesTheFourByteStruct) {
  const std::vector<std::uint8_t> bytes{0x03, 0x00, 0x10, 0x00};
  const auto feature = decode_vfio_device_feature_pasid(bytes);
  ASSERT_TRUE(feature);
  EXPECT_EQ(feature->capabilities, 3);
  EXPECT_EQ(feature->width, 16);
  EXPECT_FALSE(decode_vfio_device_feature_pasid(std::vector<std::uint8_t>(5, 0)));
}

TEST(PasidSpec, RegisterForm) {
  const auto spec = parse_pasid_spec("width=16,exec,priv");
  ASSERT_TRUE(spec) << spec.error().message;
  EXPECT_EQ(spec->source, PasidSource::kRegister);
  EXPECT_EQ(spec->fields, (PasidFields{16, true, true}));
  const auto plain = parse_pasid_spec("width=0x14");
  ASSERT_TRUE(plain);
  EXPECT_EQ(plain->fields, (PasidFields{20, false, false}));
  EXPECT_TRUE(parse_pasid_spec("width=0"));  // a valid register: one PASID
}

TEST(PasidSpec, IommufdAndVfioFormsMapTheirOwnBits) {
  const auto iommu = parse_pasid_spec("iommufd,max_pasid_log2=20,capabilities=0x2");
  ASSERT_TRUE(iommu) << iommu.error().message;
  EXPECT_EQ(iommu->source, PasidSource::kIommufd);
  EXPECT_EQ(iommu->fields, (PasidFields{20, true, false}));
  const auto vfio = parse_pasid_spec("vfio,width=20,capabilities=0x2");
  ASSERT_TRUE(vfio) << vfio.error().message;
  EXPECT_EQ(vfio->source, PasidSource::kVfioFeature);
  EXPECT_EQ(vfio->fields, (PasidFields{20, false, true}));
}

TEST(PasidSpec, Errors) {
  EXPECT_FALSE(parse_pasid_spec("exec"));      // no width
  EXPECT_FALSE(parse_pasid_spec("width=21"));  // reserved width
  EXPECT_FALSE(parse_pasid_spec("width=abc"));
  EXPECT_FALSE(parse_pasid_spec("width=8,execute"));           // unknown item
  EXPECT_FALSE(parse_pasid_spec("iommufd,max_pasid_log2=0"));  // no PASID support
  EXPECT_FALSE(parse_pasid_spec("iommufd,width=8"));           // wrong key for the source
  EXPECT_FALSE(parse_pasid_spec("vfio,width=8,capabilities=0x8"));
  EXPECT_FALSE(parse_pasid_spec("vfio,width=8,exec"));
}

}  // namespace
}  // namespace vpci::pci
