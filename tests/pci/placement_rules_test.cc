// Each placement rule (pci/placement.h), hiding, and the overlay, on synthetic devices.
#include <ostream>
#include <set>
#include <string>

#include <gtest/gtest.h>

#include "pci/placement.h"
#include "tests/pci/placement_test_util.h"

namespace vpci::pci {

// Found by argument-dependent lookup: failures print the status word, not a byte.
void PrintTo(FreeSpaceStatus status, std::ostream* os) {
  *os << free_space_status_name(status);
}

namespace {

using testing::add_ext;
using testing::add_vsec8;
using testing::expect_invariants;
using testing::find_cap;
using testing::image;
using testing::make_device_with_aer_ats;
using testing::make_express_endpoint;

const PasidFields kPasid{16, true, false};

PlacementRequest pasid_request(std::optional<std::uint16_t> at = {}) {
  PlacementRequest request;
  request.add.push_back(make_pasid_request(kPasid, at));
  return request;
}

Result<PlacementResult> place(const ConfigSpace& space, const PlacementRequest& request) {
  const auto bytes = image(space);
  auto result = place_capabilities(bytes, request);
  if (result) expect_invariants(bytes, request, *result);
  return result;
}

const FreeSpaceSourceReport& report_for(const PlacementResult& result, PlacementRule rule) {
  for (const auto& r : result.free_space) {
    if (r.rule == rule) return r;
  }
  static const FreeSpaceSourceReport kMissing{};
  ADD_FAILURE() << "no report for " << placement_rule_name(rule);
  return kMissing;
}

const OverlayField* overlay_at(const PlacementResult& result, std::uint16_t offset) {
  for (const auto& f : result.overlay) {
    if (f.offset == offset) return &f;
  }
  return nullptr;
}

TEST(PlacementDefault, PasidGoesToTheLastEightBytesLikeQemu) {
  const auto result = place(make_device_with_aer_ats(), pasid_request());
  ASSERT_TRUE(result) << result.error().message;
  ASSERT_EQ(result->placed.size(), 1u);
  EXPECT_EQ(result->placed[0].offset, 0xFF8);
  EXPECT_EQ(result->placed[0].rule, PlacementRule::kDefault);
  EXPECT_EQ(result->guest.raw32(0xFF8) & 0xFFFFF, 0x1001Bu);  // ID 0x1b, version 1
  EXPECT_EQ(result->guest.raw16(0xFFC), 0x1002);              // width 16, exec
  EXPECT_EQ(result->guest.raw16(0xFFE), 0x0000);
  // Linked in address order after ATS (the highest capability below 0xff8).
  EXPECT_EQ(result->guest.raw32(0x200) >> 20, 0xFF8u);
  EXPECT_EQ(report_for(*result, PlacementRule::kDefault).status, FreeSpaceStatus::kUsed);
  EXPECT_EQ(report_for(*result, PlacementRule::kGapSearch).status, FreeSpaceStatus::kNotEnabled);
}

TEST(PlacementDefault, OverlayEmulatesThePasidAndThePredecessorHeaderOnly) {
  const auto result = place(make_device_with_aer_ats(), pasid_request());
  ASSERT_TRUE(result);
  ASSERT_EQ(result->overlay.size(), 2u);
  const OverlayField* ats = overlay_at(*result, 0x200);
  ASSERT_NE(ats, nullptr);
  EXPECT_EQ(ats->emulated_mask, (std::vector<std::uint8_t>{0xFF, 0xFF, 0xFF, 0xFF}));
  EXPECT_EQ(ats->write_mask, (std::vector<std::uint8_t>{0, 0, 0, 0}));
  const OverlayField* pasid = overlay_at(*result, 0xFF8);
  ASSERT_NE(pasid, nullptr);
  EXPECT_EQ(pasid->emulated_mask, std::vector<std::uint8_t>(8, 0xFF));
  EXPECT_EQ(pasid->write_mask, (std::vector<std::uint8_t>{0, 0, 0, 0, 0, 0, 0x07, 0}));
  // The guest ConfigSpace enforces the same mask: only control bits 0-2 stick.
  ConfigSpace guest = result->guest;
  ASSERT_TRUE(guest.write(0xFFC, 4, 0xFFFFFFFF));
  EXPECT_EQ(*guest.read(0xFFC, 4), 0x00071002u);
}

TEST(PlacementDefault, NoExtendedCapabilitiesMeansOffset0x100) {
  const auto result = place(make_express_endpoint(), pasid_request());
  ASSERT_TRUE(result) << result.error().message;
  EXPECT_EQ(result->placed[0].offset, 0x100);
  EXPECT_EQ(result->placed[0].rule, PlacementRule::kDefault);
  EXPECT_EQ(result->guest.raw32(0x100) >> 20, 0u);  // the only capability
}

TEST(PlacementDefault, FurtherCapabilitiesStackDownwards) {
  PlacementRequest request = pasid_request();
  auto vsec = make_vsec_request(0x42, 1, std::vector<std::uint8_t>{1, 2, 3, 4});
  ASSERT_TRUE(vsec);
  request.add.push_back(*vsec);
  const auto result = place(make_device_with_aer_ats(), request);
  ASSERT_TRUE(result) << result.error().message;
  EXPECT_EQ(result->placed[0].offset, 0xFF8);
  EXPECT_EQ(result->placed[1].offset, 0xFF8 - 12);
  EXPECT_EQ(result->placed[1].rule, PlacementRule::kDefault);
}

TEST(PlacementExplicit, UsesTheOffsetAndLinksInAddressOrder) {
  const auto result = place(make_device_with_aer_ats(), pasid_request(0x180));
  ASSERT_TRUE(result) << result.error().message;
  EXPECT_EQ(result->placed[0].offset, 0x180);
  EXPECT_EQ(result->placed[0].rule, PlacementRule::kExplicit);
  EXPECT_EQ(result->guest.raw32(0x100) >> 20, 0x180u);  // AER -> PASID
  EXPECT_EQ(result->guest.raw32(0x180) >> 20, 0x200u);  // PASID -> ATS
  EXPECT_EQ(report_for(*result, PlacementRule::kExplicit).status, FreeSpaceStatus::kUsed);
  EXPECT_EQ(report_for(*result, PlacementRule::kDefault).status, FreeSpaceStatus::kUnused);
}

TEST(PlacementExplicit, OnAnEmptyListWritesANullAnchorAt0x100) {
  const auto result = place(make_express_endpoint(), pasid_request(0x400));
  ASSERT_TRUE(result) << result.error().message;
  EXPECT_EQ(result->placed[0].offset, 0x400);
  EXPECT_EQ(result->guest.raw32(0x100), 0x400u << 20);  // ID 0, version 0, next 0x400
  const OverlayField* anchor = overlay_at(*result, 0x100);
  ASSERT_NE(anchor, nullptr);
  EXPECT_NE(anchor->what.find("anchor"), std::string::npos);
}

TEST(PlacementExplicit, TheHighestLegalOffsetIs0xff8) {
  const auto result = place(make_device_with_aer_ats(), pasid_request(0xFF8));
  ASSERT_TRUE(result) << result.error().message;
  EXPECT_EQ(result->placed[0].rule, PlacementRule::kExplicit);
}

FreeSpaceTable table_from(const std::string& text) {
  auto table = parse_free_space_table(text, "test.toml");
  EXPECT_TRUE(table) << table.error().message;
  return table ? *table : FreeSpaceTable{};
}

TEST(PlacementTable, UsesTheDevicesEntry) {
  PlacementRequest request = pasid_request();
  request.table = table_from(R"(
[devices."1af4:1234"]
free = [ { offset = 0x800, length = 0x40 }, { offset = 0x400, length = 0x10 } ]
note = "unit test"
[devices."8086:0001"]
free = [ { offset = 0x300, length = 0x10 } ]
)");
  const auto result = place(make_device_with_aer_ats(), request);
  ASSERT_TRUE(result) << result.error().message;
  EXPECT_EQ(result->placed[0].offset, 0x400);  // lowest listed range that fits
  EXPECT_EQ(result->placed[0].rule, PlacementRule::kTable);
  EXPECT_NE(result->placed[0].detail.find("test.toml"), std::string::npos);
  const auto& report = report_for(*result, PlacementRule::kTable);
  EXPECT_EQ(report.status, FreeSpaceStatus::kUsed);
  EXPECT_NE(report.detail.find("unit test"), std::string::npos);
  EXPECT_EQ(report.ranges.size(), 2u);
}

TEST(PlacementTable, SubsystemEntryWinsOverVendorDevice) {
  PlacementRequest request = pasid_request();
  request.table = table_from(R"(
[devices."1af4:1234"]
free = [ { offset = 0x400, length = 0x10 } ]
[devices."1af4:1234:1028:0b1c"]
free = [ { offset = 0x600, length = 0x10 } ]
[devices."1af4:1234:1028:ffff"]
free = [ { offset = 0x700, length = 0x10 } ]
)");
  const auto result = place(make_device_with_aer_ats(), request);
  ASSERT_TRUE(result) << result.error().message;
  EXPECT_EQ(result->placed[0].offset, 0x600);
}

TEST(PlacementTable, NoEntryFallsThroughToTheDefaultAndSaysSo) {
  PlacementRequest request = pasid_request();
  request.table = table_from(R"(
[devices."8086:0001"]
free = [ { offset = 0x300, length = 0x10 } ]
)");
  const auto result = place(make_device_with_aer_ats(), request);
  ASSERT_TRUE(result) << result.error().message;
  EXPECT_EQ(result->placed[0].rule, PlacementRule::kDefault);
  const auto& report = report_for(*result, PlacementRule::kTable);
  EXPECT_EQ(report.status, FreeSpaceStatus::kNoEntry);
  EXPECT_NE(report.detail.find("1af4:1234"), std::string::npos);
}

TEST(PlacementTable, SecondCapabilityTakesTheNextSlotInTheRanges) {
  PlacementRequest request = pasid_request();
  request.add.push_back(make_pasid_request(kPasid));
  request.add[1].id = 0x18;  // LTR: another 8-byte capability
  request.add[1].label = "second";
  request.table = table_from(R"(
[devices."1af4:1234"]
free = [ { offset = 0x400, length = 0x10 } ]
)");
  const auto result = place(make_device_with_aer_ats(), request);
  ASSERT_TRUE(result) << result.error().message;
  EXPECT_EQ(result->placed[0].offset, 0x400);
  EXPECT_EQ(result->placed[1].offset, 0x408);
}

ConfigSpace with_gap_dvsec(ConfigSpace space, std::uint16_t at, std::uint32_t length) {
  auto body = free_space_gap_dvsec_body(length);
  EXPECT_TRUE(body);
  EXPECT_TRUE(add_extended_capability(space, ext_cap_id::kDesignatedVendorSpecific, 1, *body, at));
  return space;
}

TEST(PlacementDvsec, GapDvsecIsReplacedByThePasid) {
  const ConfigSpace device = with_gap_dvsec(make_device_with_aer_ats(), 0x400, 0x40);
  const auto result = place(device, pasid_request());
  ASSERT_TRUE(result) << result.error().message;
  EXPECT_EQ(result->placed[0].offset, 0x400);
  EXPECT_EQ(result->placed[0].rule, PlacementRule::kDvsec);
  ASSERT_EQ(result->hidden.size(), 1u);
  EXPECT_EQ(result->hidden[0].offset, 0x400);
  EXPECT_EQ(result->hidden[0].id, ext_cap_id::kDesignatedVendorSpecific);
  const auto scan = scan_capabilities(result->guest.bytes());
  ASSERT_NE(find_cap(scan, CapabilitySpace::kExtended, 0x400), nullptr);
  EXPECT_EQ(find_cap(scan, CapabilitySpace::kExtended, 0x400)->id, ext_cap_id::kPasid);
  EXPECT_EQ(report_for(*result, PlacementRule::kDvsec).status, FreeSpaceStatus::kUsed);
}

TEST(PlacementDvsec, RestOfAConsumedGapServesTheNextCapability) {
  const ConfigSpace device = with_gap_dvsec(make_device_with_aer_ats(), 0x400, 0x10);
  PlacementRequest request = pasid_request();
  auto vsec = make_vsec_request(0x42, 0, {});
  ASSERT_TRUE(vsec);
  request.add.push_back(*vsec);
  const auto result = place(device, request);
  ASSERT_TRUE(result) << result.error().message;
  EXPECT_EQ(result->placed[0].offset, 0x400);
  EXPECT_EQ(result->placed[1].offset, 0x408);
  EXPECT_EQ(result->placed[1].rule, PlacementRule::kDvsec);
}

TEST(PlacementDvsec, GapDvsecAt0x100KeepsANullHeaderAndStartsAt0x104) {
  ConfigSpace device = make_express_endpoint();
  device = with_gap_dvsec(device, 0x100, 0x20);
  add_ext(device, ext_cap_id::kAts, 0x200, 8);
  const auto result = place(device, pasid_request());
  ASSERT_TRUE(result) << result.error().message;
  EXPECT_EQ(result->placed[0].offset, 0x104);
  EXPECT_EQ(result->guest.raw16(0x100), 0);  // Null: ID zeroed, chain continues
  EXPECT_EQ(result->guest.raw32(0x100) >> 20, 0x104u);
  ASSERT_EQ(result->hidden.size(), 1u);
  EXPECT_TRUE(result->hidden[0].id_zeroed);
}

TEST(PlacementDvsec, TableDvsecRangesAreUsedAndTheStaleTableIsUnlinked) {
  ConfigSpace device = make_device_with_aer_ats();
  const std::vector<ConfigRange> ranges{{CapabilitySpace::kExtended, 0x800, 0x810},
                                        {CapabilitySpace::kStandard, 0xC0, 0xD0}};
  auto body = free_space_table_dvsec_body(ranges);
  ASSERT_TRUE(body) << body.error().message;
  ASSERT_TRUE(
      add_extended_capability(device, ext_cap_id::kDesignatedVendorSpecific, 1, *body, 0x300));
  const auto result = place(device, pasid_request());
  ASSERT_TRUE(result) << result.error().message;
  EXPECT_EQ(result->placed[0].offset, 0x800);
  EXPECT_EQ(result->placed[0].rule, PlacementRule::kDvsec);
  ASSERT_EQ(result->hidden.size(), 1u);
  EXPECT_EQ(result->hidden[0].offset, 0x300);
}

TEST(PlacementDvsec, UnusedGapDvsecsStayLinked) {
  ConfigSpace device = with_gap_dvsec(make_device_with_aer_ats(), 0x400, 0x10);
  device = with_gap_dvsec(device, 0x800, 0x10);
  const auto result = place(device, pasid_request());
  ASSERT_TRUE(result) << result.error().message;
  EXPECT_EQ(result->placed[0].offset, 0x400);
  const auto scan = scan_capabilities(result->guest.bytes());
  ASSERT_NE(find_cap(scan, CapabilitySpace::kExtended, 0x800), nullptr);
}

TEST(PlacementDvsec, ExplicitOffsetInsideATableRangeUnlinksTheStaleTable) {
  ConfigSpace device = make_device_with_aer_ats();
  const std::vector<ConfigRange> ranges{{CapabilitySpace::kExtended, 0x800, 0x810}};
  auto body = free_space_table_dvsec_body(ranges);
  ASSERT_TRUE(body);
  ASSERT_TRUE(
      add_extended_capability(device, ext_cap_id::kDesignatedVendorSpecific, 1, *body, 0x300));
  const auto result = place(device, pasid_request(0x808));
  ASSERT_TRUE(result) << result.error().message;
  EXPECT_EQ(result->placed[0].rule, PlacementRule::kExplicit);
  ASSERT_EQ(result->hidden.size(), 1u);
  EXPECT_EQ(result->hidden[0].offset, 0x300);
  EXPECT_EQ(report_for(*result, PlacementRule::kDvsec).status, FreeSpaceStatus::kUnused);
}

TEST(PlacementGapSearch, OnlyWhenAskedAndOnlyWhenTheDefaultIsTaken) {
  ConfigSpace device = make_device_with_aer_ats();
  add_vsec8(device, 0xFF8);
  const auto refused = place(device, pasid_request());
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::kNoSpace);

  PlacementRequest request = pasid_request();
  request.search_gaps = true;
  const auto result = place(device, request);
  ASSERT_TRUE(result) << result.error().message;
  EXPECT_EQ(result->placed[0].rule, PlacementRule::kGapSearch);
  EXPECT_EQ(result->placed[0].offset, 0xFF0);  // highest free all-zero slot
  ASSERT_EQ(result->warnings.size(), 1u);
  EXPECT_NE(result->warnings[0].find("undocumented registers"), std::string::npos);
  EXPECT_EQ(report_for(*result, PlacementRule::kDefault).status, FreeSpaceStatus::kTaken);
  EXPECT_EQ(report_for(*result, PlacementRule::kGapSearch).status, FreeSpaceStatus::kUsed);
}

TEST(PlacementGapSearch, NotUsedWhenTheDefaultFits) {
  PlacementRequest request = pasid_request();
  request.search_gaps = true;
  const auto result = place(make_device_with_aer_ats(), request);
  ASSERT_TRUE(result);
  EXPECT_EQ(result->placed[0].rule, PlacementRule::kDefault);
  EXPECT_TRUE(result->warnings.empty());
  EXPECT_EQ(report_for(*result, PlacementRule::kGapSearch).status, FreeSpaceStatus::kNotNeeded);
}

TEST(PlacementGapSearch, SkipsBytesThatDoNotReadZero) {
  ConfigSpace device = make_device_with_aer_ats();
  add_vsec8(device, 0xFF8);
  device.set_raw8(0xFF2, 0x5A);  // an undocumented register, say
  PlacementRequest request = pasid_request();
  request.search_gaps = true;
  const auto result = place(device, request);
  ASSERT_TRUE(result) << result.error().message;
  EXPECT_EQ(result->placed[0].offset, 0xFE8);
}

TEST(PlacementHide, ReplacingThePhysicalPasidAt0x100) {
  ConfigSpace device = make_express_endpoint();
  add_ext(device, ext_cap_id::kPasid, 0x100, 8);
  add_ext(device, ext_cap_id::kAts, 0x200, 8);
  PlacementRequest request = pasid_request();
  request.hide.push_back({HideRequest::Kind::kExtendedId, ext_cap_id::kPasid});
  const auto result = place(device, request);
  ASSERT_TRUE(result) << result.error().message;
  EXPECT_EQ(result->placed[0].offset, 0xFF8);
  ASSERT_EQ(result->hidden.size(), 1u);
  EXPECT_TRUE(result->hidden[0].id_zeroed);
  EXPECT_EQ(result->guest.raw16(0x100), 0);
  EXPECT_EQ(result->guest.raw32(0x100) >> 20, 0x200u);
}

TEST(PlacementHide, ReplacingAPasidInTheMiddleAtItsOwnOffset) {
  ConfigSpace device = make_device_with_aer_ats();
  add_ext(device, ext_cap_id::kPasid, 0x300, 8);
  PlacementRequest request = pasid_request(0x300);
  request.hide.push_back({HideRequest::Kind::kOffset, 0x300});
  const auto result = place(device, request);
  ASSERT_TRUE(result) << result.error().message;
  EXPECT_EQ(result->placed[0].offset, 0x300);
  EXPECT_EQ(result->guest.raw16(0x304), 0x1002);
}

TEST(PlacementHide, StandardCapabilityUpdatesPointerAndOverlay) {
  ConfigSpace device = make_device_with_aer_ats();
  PlacementRequest request;
  request.hide.push_back({HideRequest::Kind::kStandardId, cap_id::kPowerManagement});
  const auto result = place(device, request);
  ASSERT_TRUE(result) << result.error().message;
  EXPECT_EQ(result->guest.raw8(0x41), 0);  // PCIe was followed by PM, now ends the chain
  const OverlayField* next = overlay_at(*result, 0x41);
  ASSERT_NE(next, nullptr);
  EXPECT_NE(next->what.find("next pointer"), std::string::npos);
}

TEST(PlacementHide, HidingTheOnlyStandardCapabilityEmulatesOnlyTheCapListBit) {
  ConfigSpace device =
      ConfigSpace::make_endpoint(256, HeaderIdentity{0x1af4, 1, 0, 0, 0, 0, 0, false});
  std::vector<std::uint8_t> pm(6, 0);
  ASSERT_TRUE(add_standard_capability(device, cap_id::kPowerManagement, pm, 0x50));
  PlacementRequest request;
  request.hide.push_back({HideRequest::Kind::kOffset, 0x50});
  const auto result = place(device, request);
  ASSERT_TRUE(result) << result.error().message;
  const OverlayField* status_field = overlay_at(*result, 0x06);
  ASSERT_NE(status_field, nullptr);
  EXPECT_EQ(status_field->emulated_mask, (std::vector<std::uint8_t>{0x10}));
  ASSERT_NE(overlay_at(*result, 0x34), nullptr);
}

TEST(PlacementAdd, VsecAndDvsecHeadersFollowTheSpec) {
  auto vsec = make_vsec_request(0x1234, 2, std::vector<std::uint8_t>{0xAA, 0xBB});
  ASSERT_TRUE(vsec);
  EXPECT_EQ(vsec->id, ext_cap_id::kVendorSpecific);
  // +4: VSEC ID 0x1234, rev 2, length 10.
  EXPECT_EQ(vsec->body, (std::vector<std::uint8_t>{0x34, 0x12, 0xA2, 0x00, 0xAA, 0xBB}));
  auto dvsec = make_dvsec_request(0x1e98, 0x0007, 1, std::vector<std::uint8_t>{0x11, 0x22}, 16);
  ASSERT_TRUE(dvsec);
  EXPECT_EQ(dvsec->body, (std::vector<std::uint8_t>{0x98, 0x1e, 0x01, 0x01, 0x07, 0x00, 0x11, 0x22,
                                                    0, 0, 0, 0}));
  const auto placed =
      place(make_device_with_aer_ats(), PlacementRequest{{}, {*vsec, *dvsec}, {}, false});
  ASSERT_TRUE(placed) << placed.error().message;
  const auto scan = scan_capabilities(placed->guest.bytes());
  EXPECT_EQ(find_cap(scan, CapabilitySpace::kExtended, placed->placed[0].offset)->size, 10u);
  EXPECT_EQ(find_cap(scan, CapabilitySpace::kExtended, placed->placed[1].offset)->size, 16u);
}

TEST(PlacementAdd, RawBodyShorterThanItsStructureIsRefused) {
  PlacementRequest request;
  auto raw =
      parse_capability_spec("raw,id=0x2a,data=0000000000000000");  // Physical Layer 32.0 GT/s
  ASSERT_TRUE(raw);
  request.add.push_back(*raw);
  const auto result = place_capabilities(image(make_device_with_aer_ats()), request);
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(result.error().message.find("only 12 bytes were given"), std::string::npos)
      << result.error().message;
}

TEST(PlacementAdd, RawBodyLongerThanTheWalkerSizeStillBlocksLaterPlacements) {
  PlacementRequest request;
  auto ltr = parse_capability_spec("raw,id=0x18,data=" +
                                   std::string(56, '0'));  // 32 bytes; LTR is sized 8
  ASSERT_TRUE(ltr);
  request.add.push_back(*ltr);
  request.add.push_back(make_pasid_request({4, false, false}));
  request.table = *parse_free_space_table(
      "[devices.\"1af4:1234\"]\nfree = [ { offset = 0x400, length = 0x40 } ]\n", "t");
  const auto result = place(make_device_with_aer_ats(), request);
  ASSERT_TRUE(result) << result.error().message;
  EXPECT_EQ(result->placed[0].offset, 0x400);
  EXPECT_EQ(result->placed[1].offset, 0x420);
}

TEST(PlacementAdd, ParseCapabilitySpecForms) {
  const auto vsec = parse_capability_spec("vsec,id=0x1234,rev=1,data=aabb,at=0x400");
  ASSERT_TRUE(vsec) << vsec.error().message;
  EXPECT_EQ(vsec->offset, 0x400);
  EXPECT_EQ(vsec->length(), 10u);
  const auto dvsec = parse_capability_spec("dvsec,vendor=0x1e98,id=3,length=16");
  ASSERT_TRUE(dvsec) << dvsec.error().message;
  EXPECT_EQ(dvsec->length(), 16u);
  const auto raw = parse_capability_spec("raw,id=0x2a,version=2,data=01020304,wmask=00ff");
  ASSERT_TRUE(raw) << raw.error().message;
  EXPECT_EQ(raw->id, 0x2A);
  EXPECT_EQ(raw->version, 2);
  EXPECT_EQ(raw->body_write_mask, (std::vector<std::uint8_t>{0x00, 0xFF}));
  const auto gap = parse_capability_spec("free-space-gap,length=0x40,at=0x400");
  ASSERT_TRUE(gap) << gap.error().message;
  EXPECT_EQ(gap->length(), 0x40u);
  const auto table = parse_capability_spec("free-space-table,ranges=0x400+0x40/0xf00+0x100");
  ASSERT_TRUE(table) << table.error().message;
  EXPECT_EQ(table->length(), 0x14u);
}

TEST(PlacementAdd, ParseCapabilitySpecErrors) {
  EXPECT_FALSE(parse_capability_spec("vsec"));                  // no id
  EXPECT_FALSE(parse_capability_spec("vsec,id=1,colour=red"));  // unknown key
  EXPECT_FALSE(parse_capability_spec("vsec,id=1,id=2"));        // twice
  EXPECT_FALSE(parse_capability_spec("raw,id=0"));              // Null
  EXPECT_FALSE(parse_capability_spec("raw,id=5,data=abc"));     // odd hex
  EXPECT_FALSE(parse_capability_spec("raw,id=5,data=ab,wmask=abcd"));
  EXPECT_FALSE(parse_capability_spec("free-space-gap,length=8"));  // below 12
  EXPECT_FALSE(parse_capability_spec("free-space-table,ranges=0x402+4"));
  EXPECT_FALSE(parse_capability_spec("widget,id=1"));
}

TEST(PlacementHideSpec, Forms) {
  auto id = parse_hide_spec("0x1b");
  ASSERT_TRUE(id);
  EXPECT_EQ(id->kind, HideRequest::Kind::kExtendedId);
  EXPECT_EQ(id->value, 0x1B);
  auto decimal = parse_hide_spec("27");
  ASSERT_TRUE(decimal);
  EXPECT_EQ(decimal->value, 27);
  auto standard = parse_hide_spec("std:0x09");
  ASSERT_TRUE(standard);
  EXPECT_EQ(standard->kind, HideRequest::Kind::kStandardId);
  auto offset = parse_hide_spec("@0x100");
  ASSERT_TRUE(offset);
  EXPECT_EQ(offset->kind, HideRequest::Kind::kOffset);
  EXPECT_EQ(offset->value, 0x100);
  EXPECT_FALSE(parse_hide_spec("@0x102"));
  EXPECT_FALSE(parse_hide_spec("@0x10"));
  EXPECT_FALSE(parse_hide_spec("0"));
  EXPECT_FALSE(parse_hide_spec("std:0x100"));
  EXPECT_FALSE(parse_hide_spec("pasid"));
}

// The words are the report's interface (`vpci place` text and JSON, docs/placement.md).
TEST(PlacementReport, StatusNamesAreTheDocumentedWords) {
  const std::set<std::string_view> names{free_space_status_name(FreeSpaceStatus::kUsed),
                                         free_space_status_name(FreeSpaceStatus::kUnused),
                                         free_space_status_name(FreeSpaceStatus::kNotGiven),
                                         free_space_status_name(FreeSpaceStatus::kNoEntry),
                                         free_space_status_name(FreeSpaceStatus::kNoneFound),
                                         free_space_status_name(FreeSpaceStatus::kTaken),
                                         free_space_status_name(FreeSpaceStatus::kNotEnabled),
                                         free_space_status_name(FreeSpaceStatus::kNotNeeded)};
  EXPECT_EQ(names,
            (std::set<std::string_view>{"used", "unused", "not-given", "no-entry", "none-found",
                                        "taken", "not-enabled", "not-needed"}));
}

}  // namespace
}  // namespace vpci::pci
