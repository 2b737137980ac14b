// Every placement error: the code, and that the message names the conflicting range.
#include <string>

#include <gtest/gtest.h>

#include "pci/placement.h"
#include "tests/pci/placement_test_util.h"

namespace vpci::pci {
namespace {

using testing::add_ext;
using testing::add_vsec8;
using testing::image;
using testing::make_device_with_aer_ats;
using testing::make_express_endpoint;

PlacementRequest pasid_request(std::optional<std::uint16_t> at = {}) {
  PlacementRequest request;
  request.add.push_back(make_pasid_request({20, false, false}, at));
  return request;
}

// Runs the request and checks the error code and that every `needles` is in the message.
void expect_error(const ConfigSpace& device, const PlacementRequest& request, ErrorCode code,
                  std::initializer_list<std::string_view> needles) {
  const auto bytes = image(device);
  const auto before = bytes;
  const auto result = place_capabilities(bytes, request);
  ASSERT_FALSE(result) << "placed at " << result->placed.at(0).offset;
  EXPECT_EQ(result.error().code, code) << result.error().message;
  for (const auto needle : needles) {
    EXPECT_NE(result.error().message.find(needle), std::string::npos)
        << "'" << needle << "' missing from: " << result.error().message;
  }
  EXPECT_EQ(bytes, before);  // the source is never written
}

TEST(PlacementErrors, ConventionalOnlySource) {
  const ConfigSpace device = make_express_endpoint(256);
  expect_error(device, pasid_request(), ErrorCode::kUnsupported, {"only 256 bytes", "no extended"});
}

TEST(PlacementErrors, NoExpressCapability) {
  ConfigSpace device =
      ConfigSpace::make_endpoint(4096, HeaderIdentity{0x1af4, 1, 0, 0, 0, 0, 0, false});
  expect_error(device, pasid_request(), ErrorCode::kUnsupported,
               {"no PCI Express or PCI-X capability"});
}

TEST(PlacementErrors, AliasedConventionalSpaceIsNamed) {
  ConfigSpace device =
      ConfigSpace::make_endpoint(4096, HeaderIdentity{0x1002, 0x7911, 0, 0x060000, 0, 0, 0, false});
  const auto bytes = image(device);
  for (std::uint32_t i = 0x100; i < 0x1000; ++i) device.set_raw8(i, bytes[i % 0x100]);
  expect_error(device, pasid_request(), ErrorCode::kUnsupported, {"no PCI Express", "aliases"});
}

TEST(PlacementErrors, ExtendedSpaceReadingAllOnes) {
  ConfigSpace device = make_express_endpoint();
  for (std::uint32_t i = 0x100; i < 0x1000; ++i) device.set_raw8(i, 0xFF);
  expect_error(device, pasid_request(), ErrorCode::kUnsupported, {"0x100 reads all ones"});
}

TEST(PlacementErrors, DeviceAlreadyHasPasid) {
  ConfigSpace device = make_device_with_aer_ats();
  add_ext(device, ext_cap_id::kPasid, 0x300, 8);
  device.set_raw16(0x304, 0x1406);
  expect_error(device, pasid_request(), ErrorCode::kAlreadyExists,
               {"already has a PASID capability at [0x300, 0x308)", "Max PASID Width 20", "Exec+",
                "Priv+", "--hide 0x1b", "--hide @0x300"});
  // Every rule gives the same answer.
  expect_error(device, pasid_request(0x400), ErrorCode::kAlreadyExists, {"[0x300, 0x308)"});
}

TEST(PlacementErrors, TwoPasidsInOneRequest) {
  PlacementRequest request = pasid_request();
  request.add.push_back(make_pasid_request({8, false, false}));
  expect_error(make_device_with_aer_ats(), request, ErrorCode::kAlreadyExists,
               {"two PASID", "[0xff8, 0x1000)"});
}

TEST(PlacementErrors, UnalignedOffset) {
  expect_error(make_device_with_aer_ats(), pasid_request(0x402), ErrorCode::kInvalidArgument,
               {"0x402", "not DWORD aligned"});
}

TEST(PlacementErrors, OffsetBelowExtendedSpace) {
  expect_error(make_device_with_aer_ats(), pasid_request(0xF8), ErrorCode::kOutOfRange,
               {"[0xf8, 0x100)", "outside extended configuration space"});
}

TEST(PlacementErrors, OffsetRunningPastTheEnd) {
  expect_error(make_device_with_aer_ats(), pasid_request(0xFFC), ErrorCode::kOutOfRange,
               {"[0xffc, 0x1004)", "outside extended configuration space"});
}

TEST(PlacementErrors, OverlapWithACapabilityBody) {
  // QEMU would accept this (it only refuses to overwrite a header); we do not.
  expect_error(make_device_with_aer_ats(), pasid_request(0x110), ErrorCode::kConflict,
               {"[0x110, 0x118)", "Advanced Error Reporting", "[0x100, 0x12c)"});
}

TEST(PlacementErrors, OverlapWithAnUnknownSizeCapabilityExtendsToTheNextOne) {
  ConfigSpace device = make_device_with_aer_ats();
  add_ext(device, 0x7F, 0x400, 8);  // unknown ID: occupies up to the end of space
  expect_error(device, pasid_request(), ErrorCode::kNoSpace,
               {"[0xff8, 0x1000)", "[0x400, 0x1000)"});
}

// With End-End TLP Prefixes AER has its TLP Prefix Log at +0x38..+0x47, past the 0x2c
// bytes the walker gives a non-root AER; nothing may be placed there.
TEST(PlacementErrors, AerTlpPrefixLogIsOccupiedWhenTheFunctionHasPrefixes) {
  ConfigSpace device = make_device_with_aer_ats();
  device.set_raw32(0x40 + 0x24, 1u << 21);  // Device Capabilities 2: End-End TLP Prefix Supported
  expect_error(device, pasid_request(0x138), ErrorCode::kConflict,
               {"[0x138, 0x140)", "[0x100, 0x148)"});
  // Without prefix support the short form is all there is.
  const auto short_form =
      place_capabilities(image(make_device_with_aer_ats()), pasid_request(0x138));
  EXPECT_TRUE(short_form) << short_form.error().message;
}

TEST(PlacementErrors, AerAtTheEndMakesTheDefaultTakenWithPrefixes) {
  ConfigSpace device = make_express_endpoint();
  device.set_raw32(0x40 + 0x24, 1u << 21);
  add_ext(device, ext_cap_id::kAer, 0x100, 0x2C);
  add_ext(device, ext_cap_id::kAer, 0xFB4,
          0x2C);  // as in pciutils' cap-multicast, but with prefixes
  expect_error(device, pasid_request(), ErrorCode::kNoSpace,
               {"[0xff8, 0x1000) overlaps Advanced Error Reporting [0xfb4] at [0xfb4, 0xffc)"});
}

TEST(PlacementErrors, DefaultOffsetTakenByACapabilityAt0xff8) {
  ConfigSpace device = make_device_with_aer_ats();
  add_vsec8(device, 0xFF8);
  expect_error(
      device, pasid_request(), ErrorCode::kNoSpace,
      {"default offset", "[0xff8, 0x1000) overlaps Vendor-Specific Extended", "--search-gaps"});
}

TEST(PlacementErrors, GapSearchWithNoZeroGapLeft) {
  ConfigSpace device = make_express_endpoint();
  add_ext(device, ext_cap_id::kAer, 0x100, 0x2C);
  add_vsec8(device, 0xFF8);
  for (std::uint32_t i = 0x12C; i < 0xFF8; ++i) device.set_raw8(i, 0xEE);  // registers everywhere
  PlacementRequest request = pasid_request();
  request.search_gaps = true;
  expect_error(device, request, ErrorCode::kNoSpace,
               {"[0xff8, 0x1000)", "no 8-byte all-zero range"});
}

FreeSpaceTable table(const std::string& text) {
  auto parsed = parse_free_space_table(text, "free.toml");
  EXPECT_TRUE(parsed) << parsed.error().message;
  return *parsed;
}

TEST(PlacementErrors, ConflictingTableEntry) {
  PlacementRequest request = pasid_request();
  request.table = table("[devices.\"1af4:1234\"]\nfree = [ { offset = 0x100, length = 0x40 } ]\n");
  expect_error(make_device_with_aer_ats(), request, ErrorCode::kConflict,
               {"conflicting table entry 1af4:1234", "free.toml:1", "[0x100, 0x140)",
                "Advanced Error Reporting", "[0x100, 0x12c)"});
}

TEST(PlacementErrors, TableEntryWithoutRoomIsAuthoritative) {
  PlacementRequest request = pasid_request();
  request.table = table("[devices.\"1af4:1234\"]\nfree = [ { offset = 0x400, length = 0x4 } ]\n");
  expect_error(make_device_with_aer_ats(), request, ErrorCode::kNoSpace,
               {"1af4:1234", "[0x400, 0x404)"});
  request.table = table("[devices.\"1af4:1234\"]\nfree = []\n");
  expect_error(make_device_with_aer_ats(), request, ErrorCode::kNoSpace, {"lists no ranges"});
}

TEST(PlacementErrors, ConflictingGapDvsec) {
  ConfigSpace device = make_device_with_aer_ats();
  auto body = free_space_gap_dvsec_body(0x10);
  ASSERT_TRUE(body);
  ASSERT_TRUE(
      add_extended_capability(device, ext_cap_id::kDesignatedVendorSpecific, 1, *body, 0x400));
  add_vsec8(device, 0x420);
  // Now let the DVSEC claim 0x40 bytes, which covers the VSEC: a device contradicting itself.
  device.set_raw32(0x404, (device.raw32(0x404) & 0x000FFFFF) | (0x40u << 20));
  expect_error(device, pasid_request(), ErrorCode::kConflict,
               {"conflicting free-space DVSEC at 0x400", "[0x400, 0x440)",
                "Vendor-Specific Extended", "0x420"});
}

TEST(PlacementErrors, ConflictingTableDvsec) {
  ConfigSpace device = make_device_with_aer_ats();
  const std::vector<ConfigRange> ranges{{CapabilitySpace::kExtended, 0x1F0, 0x210}};
  auto body = free_space_table_dvsec_body(ranges);
  ASSERT_TRUE(body);
  ASSERT_TRUE(
      add_extended_capability(device, ext_cap_id::kDesignatedVendorSpecific, 1, *body, 0x300));
  expect_error(device, pasid_request(), ErrorCode::kConflict,
               {"free-space DVSEC at 0x300", "[0x1f0, 0x210)", "Address Translation Services"});
}

TEST(PlacementErrors, DvsecWithoutRoom) {
  ConfigSpace device = make_device_with_aer_ats();
  const std::vector<ConfigRange> ranges{{CapabilitySpace::kExtended, 0x800, 0x804}};
  auto body = free_space_table_dvsec_body(ranges);
  ASSERT_TRUE(body);
  ASSERT_TRUE(
      add_extended_capability(device, ext_cap_id::kDesignatedVendorSpecific, 1, *body, 0x300));
  expect_error(device, pasid_request(), ErrorCode::kNoSpace,
               {"free-space DVSECs describe [0x800, 0x804)"});
}

TEST(PlacementErrors, HidingSomethingAbsent) {
  PlacementRequest request;
  request.hide.push_back({HideRequest::Kind::kExtendedId, ext_cap_id::kPasid});
  expect_error(make_device_with_aer_ats(), request, ErrorCode::kNotFound, {"ID 0x1b"});
  request.hide = {{HideRequest::Kind::kOffset, 0x180}};
  expect_error(make_device_with_aer_ats(), request, ErrorCode::kNotFound, {"0x180"});
}

TEST(PlacementErrors, HidingTheExpressCapabilityWouldLoseExtendedSpace) {
  PlacementRequest request = pasid_request();
  request.hide.push_back({HideRequest::Kind::kStandardId, cap_id::kPciExpress});
  expect_error(make_device_with_aer_ats(), request, ErrorCode::kConflict, {"unreachable"});
}

TEST(PlacementErrors, MalformedExtendedChain) {
  ConfigSpace device = make_device_with_aer_ats();
  device.set_raw32(0x200, device.raw32(0x200) | (0x100u << 20));  // ATS -> AER: a loop
  expect_error(device, pasid_request(), ErrorCode::kConflict,
               {"malformed ext capability chain", "loops"});
}

// Found by the fuzzer: a last next pointer that leads to an all-zero header must not
// link the chain into a capability placed there (a loop) or over it (entered mid-body).
TEST(PlacementErrors, OffsetAChainPointerDanglesToIsTaken) {
  ConfigSpace device = make_express_endpoint();
  device.set_raw32(0x100, 0x200u << 20);  // Null at 0x100 -> 0x200, which reads 0
  expect_error(device, pasid_request(0x200), ErrorCode::kConflict,
               {"[0x200, 0x208) overlaps the all-zero header at 0x200"});
  expect_error(device, pasid_request(0x1FC), ErrorCode::kConflict, {"[0x1fc, 0x204)"});
  // Elsewhere is fine, and the stale pointer is left alone.
  const auto bytes = image(device);
  const auto placed = place_capabilities(bytes, pasid_request(0x400));
  ASSERT_TRUE(placed) << placed.error().message;
  testing::expect_invariants(bytes, pasid_request(0x400), *placed);
}

TEST(PlacementErrors, CapabilityLargerThanExtendedSpace) {
  PlacementRequest request;
  ExtendedCapabilityRequest huge;
  huge.id = 0x2A;
  huge.body.assign(0x1000, 0);
  huge.label = "huge";
  request.add.push_back(huge);
  expect_error(make_device_with_aer_ats(), request, ErrorCode::kNoSpace, {"huge", "0xf00"});
}

}  // namespace
}  // namespace vpci::pci
