// The two free-space sources: the TOML table (pci/free_space_table.h) and the
// free-space DVSEC (pci/free_space_dvsec.h, docs/free-space-dvsec.md).
#include <string>

#include <gtest/gtest.h>

#include "pci/free_space_dvsec.h"
#include "pci/free_space_table.h"
#include "tests/pci/placement_test_util.h"

namespace vpci::pci {
namespace {

using testing::add_vsec8;
using testing::make_device_with_aer_ats;

Error table_error(const std::string& text) {
  const auto table = parse_free_space_table(text, "t.toml");
  EXPECT_FALSE(table);
  return table ? Error{} : table.error();
}

TEST(FreeSpaceTable, ParsesEntriesNotesAndSortsRanges) {
  const auto table = parse_free_space_table(R"(format = 1
[devices."8086:46A6"]
free = [ { offset = 0xe00, length = 0x100 }, { offset = 0x400, length = 64 } ]
note = "datasheet"
[devices."8086:46a6:1028:0b1c"]
free = []
)",
                                            "t.toml");
  ASSERT_TRUE(table) << table.error().message;
  ASSERT_EQ(table->entries.size(), 2u);
  const auto& first = table->entries[0];
  EXPECT_EQ(first.key.to_string(), "8086:46a6");
  EXPECT_EQ(first.note, "datasheet");
  EXPECT_EQ(first.line, 2u);
  ASSERT_EQ(first.free.size(), 2u);
  EXPECT_EQ(first.free[0].begin, 0x400u);
  EXPECT_EQ(first.free[0].end, 0x440u);
  EXPECT_EQ(first.free[1].begin, 0xE00u);
  EXPECT_TRUE(table->entries[1].free.empty());
  EXPECT_EQ(table->lookup(0x8086, 0x46a6, 0x1028, 0x0b1c), &table->entries[1]);
  EXPECT_EQ(table->lookup(0x8086, 0x46a6, 0x1028, 0x0001), &table->entries[0]);
  EXPECT_EQ(table->lookup(0x8086, 0x46a6, std::nullopt, std::nullopt), &table->entries[0]);
  EXPECT_EQ(table->lookup(0x8086, 0x46a7, std::nullopt, std::nullopt), nullptr);
}

TEST(FreeSpaceTable, EmptyDocumentMatchesNothing) {
  const auto table = parse_free_space_table("", "t.toml");
  ASSERT_TRUE(table);
  EXPECT_EQ(table->lookup(1, 2, std::nullopt, std::nullopt), nullptr);
}

TEST(FreeSpaceTable, SpellingVariantsOfOneDeviceConflict) {
  const Error e = table_error(R"(
[devices."8086:46A6"]
free = []
[devices."8086:46a6"]
free = []
)");
  EXPECT_EQ(e.code, ErrorCode::kConflict);
  EXPECT_NE(e.message.find("conflicting entries for 8086:46a6 at lines 2 and 4"), std::string::npos)
      << e.message;
}

TEST(FreeSpaceTable, OverlappingRangesInOneEntryConflict) {
  const Error e = table_error(R"([devices."8086:46a6"]
free = [ { offset = 0x400, length = 0x40 }, { offset = 0x420, length = 0x40 } ]
)");
  EXPECT_EQ(e.code, ErrorCode::kConflict);
  EXPECT_NE(e.message.find("[0x420, 0x460) overlaps [0x400, 0x440)"), std::string::npos)
      << e.message;
}

TEST(FreeSpaceTable, RangesOutsideExtendedSpaceOrUnalignedAreRefused) {
  Error e = table_error("[devices.\"8086:46a6\"]\nfree = [ { offset = 0x80, length = 0x10 } ]\n");
  EXPECT_EQ(e.code, ErrorCode::kOutOfRange);
  EXPECT_NE(e.message.find("[0x80, 0x90) is outside extended configuration space"),
            std::string::npos);
  e = table_error("[devices.\"8086:46a6\"]\nfree = [ { offset = 0xff8, length = 0x10 } ]\n");
  EXPECT_EQ(e.code, ErrorCode::kOutOfRange);
  e = table_error("[devices.\"8086:46a6\"]\nfree = [ { offset = 0x402, length = 0x10 } ]\n");
  EXPECT_EQ(e.code, ErrorCode::kInvalidArgument);
  e = table_error("[devices.\"8086:46a6\"]\nfree = [ { offset = 0x400, length = 0 } ]\n");
  EXPECT_EQ(e.code, ErrorCode::kInvalidArgument);
}

TEST(FreeSpaceTable, TyposAndWrongTypesAreErrorsWithLines) {
  Error e = table_error("[devices.\"8086:46a6\"]\nfre = []\n");
  EXPECT_NE(e.message.find("t.toml:2: unknown key 'fre'"), std::string::npos) << e.message;
  e = table_error("[devices.\"8086:46a6\"]\nfree = [ { offset = 0x400, size = 4 } ]\n");
  EXPECT_NE(e.message.find("unknown range key 'size'"), std::string::npos) << e.message;
  e = table_error("[devices.\"8086:46a6\"]\nfree = [ { offset = \"0x400\", length = 4 } ]\n");
  EXPECT_NE(e.message.find("'offset' must be an integer"), std::string::npos) << e.message;
  e = table_error("[devices.\"8086\"]\nfree = []\n");
  EXPECT_NE(e.message.find("not a device key"), std::string::npos) << e.message;
  e = table_error("[devices.\"8086:46a6:1028\"]\nfree = []\n");
  EXPECT_NE(e.message.find("subsystem-vendor:subsystem-device"), std::string::npos) << e.message;
  e = table_error("[device.\"8086:46a6\"]\nfree = []\n");
  EXPECT_NE(e.message.find("unknown top-level key 'device'"), std::string::npos) << e.message;
  e = table_error("format = 2\n");
  EXPECT_EQ(e.code, ErrorCode::kUnsupported);
}

TEST(FreeSpaceTable, TomlSyntaxErrorsAreCaughtAtTheBoundary) {
  const Error e = table_error("[devices.\"8086:46a6\"\nfree = [\n");
  EXPECT_EQ(e.code, ErrorCode::kMalformedInput);
  EXPECT_NE(e.message.find("t.toml:1:"), std::string::npos) << e.message;
}

TEST(FreeSpaceTable, MissingFileIsNotFound) {
  const auto table = load_free_space_table("/nonexistent/free.toml");
  ASSERT_FALSE(table);
  EXPECT_EQ(table.error().code, ErrorCode::kNotFound);
}

TEST(FreeSpaceDvsec, GapBodyMatchesTheDocumentedBytes) {
  const auto body = free_space_gap_dvsec_body(0x40);
  ASSERT_TRUE(body);
  ASSERT_EQ(body->size(), 0x3Cu);
  // docs/free-space-dvsec.md example: 70 76 00 04 | 01 00 00 00 | zeros.
  EXPECT_EQ(std::vector<std::uint8_t>(body->begin(), body->begin() + 8),
            (std::vector<std::uint8_t>{0x70, 0x76, 0x00, 0x04, 0x01, 0x00, 0x00, 0x00}));
  EXPECT_TRUE(std::all_of(body->begin() + 8, body->end(), [](std::uint8_t b) { return b == 0; }));
  EXPECT_FALSE(free_space_gap_dvsec_body(8));     // a DVSEC is at least 12 bytes
  EXPECT_FALSE(free_space_gap_dvsec_body(0x42));  // DWORD multiple
  EXPECT_FALSE(free_space_gap_dvsec_body(0x1000));
}

TEST(FreeSpaceDvsec, TableBodyMatchesTheDocumentedBytes) {
  const std::vector<ConfigRange> ranges{{CapabilitySpace::kExtended, 0x400, 0x440},
                                        {CapabilitySpace::kExtended, 0xF00, 0x1000}};
  const auto body = free_space_table_dvsec_body(ranges);
  ASSERT_TRUE(body);
  // docs/free-space-dvsec.md example: 70 76 40 01 | 01 00 01 02 | 00 04 40 00 | 00 0f 00 01
  EXPECT_EQ(*body, (std::vector<std::uint8_t>{0x70, 0x76, 0x40, 0x01, 0x01, 0x00, 0x01, 0x02, 0x00,
                                              0x04, 0x40, 0x00, 0x00, 0x0F, 0x00, 0x01}));
  const std::vector<ConfigRange> straddling{{CapabilitySpace::kExtended, 0xF0, 0x110}};
  EXPECT_FALSE(free_space_table_dvsec_body(straddling));
}

TEST(FreeSpaceDvsec, FindsAndDecodesBothFormats) {
  ConfigSpace device = make_device_with_aer_ats();
  auto gap = free_space_gap_dvsec_body(0x20);
  ASSERT_TRUE(gap);
  ASSERT_TRUE(
      add_extended_capability(device, ext_cap_id::kDesignatedVendorSpecific, 1, *gap, 0x400));
  const std::vector<ConfigRange> ranges{{CapabilitySpace::kExtended, 0x800, 0x810},
                                        {CapabilitySpace::kStandard, 0xC0, 0xC8}};
  auto table = free_space_table_dvsec_body(ranges);
  ASSERT_TRUE(table);
  ASSERT_TRUE(
      add_extended_capability(device, ext_cap_id::kDesignatedVendorSpecific, 1, *table, 0x600));
  // An unrelated DVSEC (CXL) is not ours.
  const std::vector<std::uint8_t> cxl{0x98, 0x1e, 0xC0, 0x00, 0x00, 0x00, 0, 0};
  ASSERT_TRUE(
      add_extended_capability(device, ext_cap_id::kDesignatedVendorSpecific, 1, cxl, 0x700));
  const auto found = find_free_space_dvsecs(device.bytes(), scan_capabilities(device.bytes()));
  ASSERT_EQ(found.size(), 2u);
  EXPECT_EQ(found[0].offset, 0x400);
  EXPECT_EQ(found[0].format, FreeSpaceFormat::kGap);
  EXPECT_TRUE(found[0].problem.empty()) << found[0].problem;
  ASSERT_EQ(found[0].ranges.size(), 1u);
  EXPECT_EQ(found[0].ranges[0].end, 0x420u);
  EXPECT_EQ(found[1].offset, 0x600);
  EXPECT_EQ(found[1].format, FreeSpaceFormat::kRangeTable);
  EXPECT_TRUE(found[1].problem.empty()) << found[1].problem;
  ASSERT_EQ(found[1].ranges.size(), 2u);
  EXPECT_EQ(found[1].ranges[1].space, CapabilitySpace::kStandard);
}

TEST(FreeSpaceDvsec, MalformedStructuresCarryAProblem) {
  ConfigSpace device = make_device_with_aer_ats();
  auto gap = free_space_gap_dvsec_body(0x10);
  ASSERT_TRUE(gap);
  ASSERT_TRUE(
      add_extended_capability(device, ext_cap_id::kDesignatedVendorSpecific, 1, *gap, 0x400));
  device.set_raw8(0x40A, 0x7);  // unknown format
  auto found = find_free_space_dvsecs(device.bytes(), scan_capabilities(device.bytes()));
  ASSERT_EQ(found.size(), 1u);
  EXPECT_NE(found[0].problem.find("unknown format 7"), std::string::npos);
  device.set_raw8(0x40A, 0x1);  // table format but length is not 0xc + 4n for n = 0
  found = find_free_space_dvsecs(device.bytes(), scan_capabilities(device.bytes()));
  EXPECT_NE(found[0].problem.find("does not match 0 range entries"), std::string::npos)
      << found[0].problem;
  device.set_raw8(0x40A, 0x0);
  device.set_raw8(0x40B, 0x2);  // gap format with entries
  found = find_free_space_dvsecs(device.bytes(), scan_capabilities(device.bytes()));
  EXPECT_NE(found[0].problem.find("entry count 2"), std::string::npos) << found[0].problem;
}

TEST(FreeSpaceDvsec, TableEntryOverlappingEachOtherIsAProblem) {
  ConfigSpace device = make_device_with_aer_ats();
  const std::vector<ConfigRange> ranges{{CapabilitySpace::kExtended, 0x800, 0x820},
                                        {CapabilitySpace::kExtended, 0x810, 0x830}};
  auto table = free_space_table_dvsec_body(ranges);
  ASSERT_TRUE(table);
  ASSERT_TRUE(
      add_extended_capability(device, ext_cap_id::kDesignatedVendorSpecific, 1, *table, 0x600));
  const auto found = find_free_space_dvsecs(device.bytes(), scan_capabilities(device.bytes()));
  ASSERT_EQ(found.size(), 1u);
  EXPECT_NE(found[0].problem.find("overlaps the earlier entry [0x800, 0x820)"), std::string::npos)
      << found[0].problem;
  EXPECT_TRUE(found[0].ranges.empty());
}

}  // namespace
}  // namespace vpci::pci
