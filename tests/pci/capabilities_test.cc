#include "pci/capabilities.h"

#include <algorithm>
#include <array>

#include <gtest/gtest.h>

namespace vpci::pci {
namespace {

ConfigSpace express_endpoint() {
  HeaderIdentity ids;
  ids.vendor_id = 0x8086;
  ids.device_id = 0x1234;
  ConfigSpace space = ConfigSpace::make_endpoint(kExtendedConfigSize, ids);
  // PCIe capability v2, endpoint (type 0): 0x3C bytes minus the ID/next bytes.
  std::array<std::uint8_t, 0x3A> express{};
  express[0] = 0x02;
  EXPECT_TRUE(add_standard_capability(space, cap_id::kPciExpress, express, 0x40).has_value());
  return space;
}

std::vector<std::pair<std::uint16_t, std::uint16_t>> chain(const ConfigSpace& space,
                                                           CapabilitySpace which) {
  std::vector<std::pair<std::uint16_t, std::uint16_t>> result;
  for (const auto& cap : scan_capabilities(space.bytes()).capabilities) {
    if (cap.space == which) result.emplace_back(cap.offset, cap.id);
  }
  return result;
}

bool has_diagnostic(const CapabilityScan& scan, std::string_view code) {
  return std::any_of(scan.diagnostics.begin(), scan.diagnostics.end(),
                     [&](const Diagnostic& d) { return d.code == code; });
}

using Chain = std::vector<std::pair<std::uint16_t, std::uint16_t>>;
constexpr auto kStd = CapabilitySpace::kStandard;
constexpr auto kExt = CapabilitySpace::kExtended;

TEST(CapabilityBuildTest, StandardCapabilitiesFirstFitAndAppend) {
  ConfigSpace space = express_endpoint();
  const std::array<std::uint8_t, 10> msix{};
  auto msix_at = add_standard_capability(space, cap_id::kMsiX, msix);
  ASSERT_TRUE(msix_at.has_value());
  EXPECT_EQ(*msix_at, 0x7C);  // first DWORD after the 0x3C-byte PCIe capability
  const std::array<std::uint8_t, 6> pm{};
  auto pm_at = add_standard_capability(space, cap_id::kPowerManagement, pm);
  ASSERT_TRUE(pm_at.has_value());
  EXPECT_EQ(*pm_at, 0x88);
  EXPECT_EQ(chain(space, kStd), (Chain{{0x40, 0x10}, {0x7C, 0x11}, {0x88, 0x01}}));
  EXPECT_TRUE(space.raw16(reg::kStatus) & status::kCapabilityList);
}

TEST(CapabilityBuildTest, StandardCapabilityOverlapIsRefusedWithTheRange) {
  ConfigSpace space = express_endpoint();
  const std::array<std::uint8_t, 6> pm{};
  auto result = add_standard_capability(space, cap_id::kPowerManagement, pm, 0x78);
  ASSERT_FALSE(result.has_value());
  EXPECT_EQ(result.error().code, ErrorCode::kConflict);
  EXPECT_NE(result.error().message.find("PCI Express at [0x40, 0x7c)"), std::string::npos)
      << result.error().message;
  EXPECT_EQ(add_standard_capability(space, 1, pm, 0x42).error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(add_standard_capability(space, 1, pm, 0xFC).error().code, ErrorCode::kOutOfRange);
}

TEST(CapabilityBuildTest, FillingStandardSpaceReportsNoSpace) {
  ConfigSpace space = express_endpoint();
  const std::array<std::uint8_t, 2> small{};
  int added = 0;
  while (add_standard_capability(space, 0x0A, small).has_value()) ++added;
  EXPECT_EQ(added, (0x100 - 0x7C) / 4);
  EXPECT_EQ(add_standard_capability(space, 0x0A, small).error().code, ErrorCode::kNoSpace);
}

TEST(CapabilityBuildTest, ExtendedCapabilitiesLinkInAddressOrder) {
  ConfigSpace space = express_endpoint();
  const std::array<std::uint8_t, 4> ats{};
  ASSERT_EQ(add_extended_capability(space, ext_cap_id::kAts, 1, ats).value(), 0x100);
  ASSERT_EQ(add_extended_capability(space, ext_cap_id::kPasid, 1, ats, 0xFF8).value(), 0xFF8);
  ASSERT_EQ(
      add_extended_capability(space, ext_cap_id::kPri, 1, std::array<std::uint8_t, 12>{}, 0x200)
          .value(),
      0x200);
  EXPECT_EQ(chain(space, kExt), (Chain{{0x100, 0x0F}, {0x200, 0x13}, {0xFF8, 0x1B}}));
  const auto scan = scan_capabilities(space.bytes());
  EXPECT_TRUE(scan.diagnostics.empty());
}

TEST(CapabilityBuildTest, DanglingNextPointerToTheNewOffsetDoesNotLoop) {
  ConfigSpace space = express_endpoint();
  ASSERT_TRUE(add_extended_capability(space, ext_cap_id::kAts, 1, std::array<std::uint8_t, 4>{})
                  .has_value());
  space.set_raw32(0x100, space.raw32(0x100) | (0x200u << 20));  // points at an empty header
  ASSERT_EQ(
      add_extended_capability(space, ext_cap_id::kPasid, 1, std::array<std::uint8_t, 4>{}, 0x200)
          .value(),
      0x200);
  EXPECT_EQ(chain(space, kExt), (Chain{{0x100, 0x0F}, {0x200, 0x1B}}));
  EXPECT_TRUE(scan_capabilities(space.bytes()).diagnostics.empty());
}

TEST(CapabilityBuildTest, EmptyExtendedListGetsANullAnchorAt0x100) {
  ConfigSpace space = express_endpoint();
  const std::array<std::uint8_t, 4> pasid{};
  ASSERT_EQ(add_extended_capability(space, ext_cap_id::kPasid, 1, pasid, 0xFF8).value(), 0xFF8);
  EXPECT_EQ(chain(space, kExt), (Chain{{0x100, 0x00}, {0xFF8, 0x1B}}));
}

TEST(CapabilityBuildTest, ExtendedPlacementIsValidated) {
  ConfigSpace space = express_endpoint();
  const std::array<std::uint8_t, 4> body{};
  ASSERT_TRUE(add_extended_capability(space, ext_cap_id::kAts, 1, body).has_value());
  EXPECT_EQ(add_extended_capability(space, 0x1B, 1, body, 0x104).error().code,
            ErrorCode::kConflict);
  EXPECT_EQ(add_extended_capability(space, 0x1B, 1, body, 0x0FC).error().code,
            ErrorCode::kOutOfRange);
  EXPECT_EQ(add_extended_capability(space, 0x1B, 1, body, 0xFFC).error().code,
            ErrorCode::kOutOfRange);
  EXPECT_EQ(add_extended_capability(space, 0x1B, 1, body, 0x202).error().code,
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(add_extended_capability(space, 0x0000, 1, body, 0x200).error().code,
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(add_extended_capability(space, 0xFFFF, 1, body, 0x200).error().code,
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(add_standard_capability(space, 0xFF, std::array<std::uint8_t, 2>{}).error().code,
            ErrorCode::kInvalidArgument);
  // Multicast is 0x30 bytes by definition; an 8-byte body would leave its tail dangling.
  const auto short_body = add_extended_capability(space, 0x12, 1, body, 0x200);
  ASSERT_FALSE(short_body.has_value());
  EXPECT_NE(short_body.error().message.find("48 bytes"), std::string::npos)
      << short_body.error().message;
  ConfigSpace conventional(kConventionalConfigSize);
  EXPECT_EQ(add_extended_capability(conventional, 0x1B, 1, body).error().code,
            ErrorCode::kUnsupported);
}

TEST(CapabilityHideTest, HidingStandardCapabilitiesUnlinksThem) {
  ConfigSpace space = express_endpoint();
  ASSERT_TRUE(
      add_standard_capability(space, cap_id::kMsiX, std::array<std::uint8_t, 10>{}).has_value());
  ASSERT_TRUE(add_standard_capability(space, 0x01, std::array<std::uint8_t, 6>{}).has_value());
  ASSERT_TRUE(hide_capability(space, kStd, 0x7C).has_value());
  EXPECT_EQ(chain(space, kStd), (Chain{{0x40, 0x10}, {0x88, 0x01}}));
  ASSERT_TRUE(hide_capability(space, kStd, 0x40).has_value());
  EXPECT_EQ(chain(space, kStd), (Chain{{0x88, 0x01}}));
  ASSERT_TRUE(hide_capability(space, kStd, 0x88).has_value());
  EXPECT_TRUE(chain(space, kStd).empty());
  EXPECT_FALSE(space.raw16(reg::kStatus) & status::kCapabilityList);
  EXPECT_EQ(hide_capability(space, kStd, 0x88).error().code, ErrorCode::kNotFound);
}

TEST(CapabilityHideTest, The0x100CapabilityKeepsItsNextPointerWithIdZero) {
  ConfigSpace space = express_endpoint();
  const std::array<std::uint8_t, 4> body{};
  ASSERT_TRUE(add_extended_capability(space, ext_cap_id::kAts, 1, body, 0x100).has_value());
  ASSERT_TRUE(add_extended_capability(space, ext_cap_id::kAri, 1, body, 0x140).has_value());
  ASSERT_TRUE(hide_capability(space, kExt, 0x100).has_value());
  EXPECT_EQ(space.raw32(0x100), 0x14010000u);  // next 0x140, version 1, ID 0
  EXPECT_EQ(chain(space, kExt), (Chain{{0x100, 0x00}, {0x140, 0x0E}}));
  ASSERT_TRUE(hide_capability(space, kExt, 0x140).has_value());
  EXPECT_EQ(chain(space, kExt), (Chain{{0x100, 0x00}}));
}

TEST(CapabilityRelinkTest, RelinkVisitsTheGivenOrder) {
  ConfigSpace space = express_endpoint();
  ASSERT_TRUE(
      add_standard_capability(space, cap_id::kMsiX, std::array<std::uint8_t, 10>{}).has_value());
  ASSERT_TRUE(add_standard_capability(space, 0x01, std::array<std::uint8_t, 6>{}).has_value());
  const std::array<std::uint16_t, 3> order = {0x88, 0x40, 0x7C};
  ASSERT_TRUE(relink_capabilities(space, kStd, order).has_value());
  EXPECT_EQ(chain(space, kStd), (Chain{{0x88, 0x01}, {0x40, 0x10}, {0x7C, 0x11}}));
  const std::array<std::uint16_t, 2> dup = {0x40, 0x40};
  EXPECT_FALSE(relink_capabilities(space, kStd, dup).has_value());
  const std::array<std::uint16_t, 1> not_first = {0x200};
  EXPECT_FALSE(relink_capabilities(space, kExt, not_first).has_value());
}

TEST(CapabilityScanTest, LoopIsDiagnosedAndWalkTerminates) {
  ConfigSpace space = express_endpoint();
  ASSERT_TRUE(
      add_standard_capability(space, cap_id::kMsiX, std::array<std::uint8_t, 10>{}).has_value());
  space.set_raw8(0x7D, 0x40);  // MSI-X next -> PCIe: a loop
  const auto scan = scan_capabilities(space.bytes());
  EXPECT_TRUE(has_diagnostic(scan, "chain-loop"));
  EXPECT_EQ(scan.capabilities.size(), 2u);
  // Editing refuses a malformed chain rather than making it worse.
  EXPECT_EQ(add_standard_capability(space, 1, std::array<std::uint8_t, 6>{}).error().code,
            ErrorCode::kConflict);
}

TEST(CapabilityScanTest, ExtendedSelfLoopTerminates) {
  ConfigSpace space = express_endpoint();
  space.set_raw32(0x100, 0x1001000F);  // ATS whose next points at itself
  const auto scan = scan_capabilities(space.bytes());
  EXPECT_TRUE(has_diagnostic(scan, "chain-loop"));
  EXPECT_EQ(chain(space, kExt), (Chain{{0x100, 0x0F}}));
}

TEST(CapabilityScanTest, PointerIntoHeaderAndMisalignmentAreReported) {
  ConfigSpace space = express_endpoint();
  space.set_raw8(0x41, 0x0B);  // next = 0x0B: misaligned, and & ~3 = 0x08 is in the header
  const auto scan = scan_capabilities(space.bytes());
  EXPECT_TRUE(has_diagnostic(scan, "misaligned-pointer"));
  EXPECT_TRUE(has_diagnostic(scan, "pointer-into-header"));
}

TEST(CapabilityScanTest, BrokenIdEndsTheChain) {
  ConfigSpace space = express_endpoint();
  space.set_raw8(0x41, 0x80);
  space.set_raw8(0x80, 0xFF);
  const auto scan = scan_capabilities(space.bytes());
  EXPECT_TRUE(has_diagnostic(scan, "chain-broken"));
  EXPECT_EQ(chain(space, kStd), (Chain{{0x40, 0x10}}));
}

TEST(CapabilityScanTest, ExtendedPointerBelow0x100IsReported) {
  ConfigSpace space = express_endpoint();
  space.set_raw32(0x100, 0x0801000F);  // next = 0x080
  const auto scan = scan_capabilities(space.bytes());
  EXPECT_TRUE(has_diagnostic(scan, "pointer-below-extended"));
}

TEST(CapabilityScanTest, TruncatedDumpIsReportedNotRead) {
  ConfigSpace space = express_endpoint();
  ASSERT_TRUE(
      add_extended_capability(space, ext_cap_id::kAts, 1, std::array<std::uint8_t, 4>{}, 0x100)
          .has_value());
  space.set_raw32(0x100, space.raw32(0x100) | (0x800u << 20));
  const auto bytes = space.bytes().first(0x200);
  const auto scan = scan_capabilities(bytes);
  EXPECT_TRUE(has_diagnostic(scan, "truncated"));
  const auto header_only = space.bytes().first(0x20);
  EXPECT_TRUE(has_diagnostic(scan_capabilities(header_only), "truncated-header"));
}

TEST(CapabilityScanTest, OverlapsAreWarnings) {
  ConfigSpace space = express_endpoint();
  space.set_raw8(0x41, 0x60);  // next capability starts inside the 0x3C-byte PCIe cap
  space.set_raw8(0x60, cap_id::kMsiX);
  space.set_raw8(0x61, 0);
  EXPECT_TRUE(has_diagnostic(scan_capabilities(space.bytes()), "capability-overlap"));
}

TEST(CapabilityScanTest, ExtendedCapsWithoutExpressAreNotWalked) {
  HeaderIdentity ids;
  ConfigSpace space = ConfigSpace::make_endpoint(kExtendedConfigSize, ids);
  space.set_raw32(0x100, 0x0001000F);
  const auto scan = scan_capabilities(space.bytes());
  EXPECT_FALSE(scan.extended_walked);
  EXPECT_TRUE(has_diagnostic(scan, "extended-without-express"));
}

TEST(CapabilitySizeTest, VariableSizedStructures) {
  ConfigSpace space = express_endpoint();
  // MSI: 32-bit 10, 64-bit 14, 64-bit + per-vector masking 24.
  std::array<std::uint8_t, 22> msi{};
  auto at = add_standard_capability(space, cap_id::kMsi, msi).value();
  EXPECT_EQ(capability_size(kStd, cap_id::kMsi, space.bytes(), at), 10u);
  space.set_raw16(at + 2u, 1u << 7);
  EXPECT_EQ(capability_size(kStd, cap_id::kMsi, space.bytes(), at), 14u);
  space.set_raw16(at + 2u, (1u << 7) | (1u << 8));
  EXPECT_EQ(capability_size(kStd, cap_id::kMsi, space.bytes(), at), 24u);
  // Vendor capability: its length byte.
  space.set_raw8(0xE0, 0x09);
  space.set_raw8(0xE2, 20);
  EXPECT_EQ(capability_size(kStd, 0x09, space.bytes(), 0xE0), 20u);
  // VSEC and DVSEC: length in bits 31:20 of +4.
  space.set_raw32(0x204, 0x01801234);
  EXPECT_EQ(capability_size(kExt, 0x0B, space.bytes(), 0x200), 0x18u);
  EXPECT_EQ(capability_size(kExt, 0x23, space.bytes(), 0x200), 0x18u);
  space.set_raw32(0x204, 0x00401234);  // shorter than the header: unknown
  EXPECT_FALSE(capability_size(kExt, 0x0B, space.bytes(), 0x200).has_value());
  // Resizable BAR: number of BARs in bits 7:5 of the first control register.
  space.set_raw32(0x208, 3u << 5);
  EXPECT_EQ(capability_size(kExt, 0x15, space.bytes(), 0x200), 4u + 8u * 3u);
  // VC: 0x10 + 0xC per resource.
  space.set_raw32(0x204, 1);
  EXPECT_EQ(capability_size(kExt, 0x02, space.bytes(), 0x200), 0x10u + 0x18u);
  EXPECT_EQ(capability_size(kExt, ext_cap_id::kSriov, space.bytes(), 0x200), 0x40u);
  EXPECT_EQ(capability_size(kExt, ext_cap_id::kPasid, space.bytes(), 0x200), 8u);
}

TEST(CapabilityFreeRangeTest, FreeRangesExcludeEveryCapability) {
  ConfigSpace space = express_endpoint();
  ASSERT_TRUE(add_extended_capability(space, ext_cap_id::kAts, 1, std::array<std::uint8_t, 4>{})
                  .has_value());
  ASSERT_TRUE(
      add_extended_capability(space, ext_cap_id::kPasid, 1, std::array<std::uint8_t, 4>{}, 0xFF8)
          .has_value());
  const auto scan = scan_capabilities(space.bytes());
  const auto free = free_ranges(scan, kExtendedConfigSize);
  ASSERT_EQ(free.size(), 2u);
  EXPECT_EQ(free[0].space, kStd);
  EXPECT_EQ(free[0].begin, 0x7Cu);
  EXPECT_EQ(free[0].end, 0x100u);
  EXPECT_EQ(free[1].space, kExt);
  EXPECT_EQ(free[1].begin, 0x108u);
  EXPECT_EQ(free[1].end, 0xFF8u);
}

TEST(CapabilityCatalogTest, NamesCoverCommonIds) {
  EXPECT_EQ(capability_name(kStd, 0x11), "MSI-X");
  EXPECT_EQ(capability_name(kStd, 0x10), "PCI Express");
  EXPECT_EQ(capability_name(kExt, 0x1B), "Process Address Space ID");
  EXPECT_EQ(capability_name(kExt, 0x23), "Designated Vendor-Specific");
  EXPECT_EQ(capability_name(kStd, 0x80), "Unknown");
  EXPECT_EQ(capability_name(kExt, 0x7FFF), "Unknown");
}

}  // namespace
}  // namespace vpci::pci
