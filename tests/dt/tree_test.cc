// Loading, editing and serializing trees; the reference-keeping DTS writer.
#include "dt/tree.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "dt/dts.h"
#include "tests/dt/dt_test_util.h"

namespace vpci::dt {
namespace {

using ::testing::HasSubstr;

std::vector<std::filesystem::path> corpus_trees() {
  std::vector<std::filesystem::path> out;
  for (const auto& e : std::filesystem::directory_iterator(testing::corpus_dir())) {
    if (e.path().extension() == ".dtb") out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

// What dtc sees in a blob, sorted: the reference for "same tree".
std::string dtc_sorted(const std::vector<std::uint8_t>& blob) {
  const auto run = testing::run_dtc({"-q", "-s", "-I", "dtb", "-O", "dts", "-"}, blob);
  EXPECT_EQ(run.exit_status, 0) << run.err;
  return run.out;
}

TEST(DtTree, CorpusRoundTripsThroughLibfdt) {
  const auto trees = corpus_trees();
  ASSERT_GE(trees.size(), 15u);
  for (const auto& path : trees) {
    SCOPED_TRACE(path.filename().string());
    const auto original = testing::read_bytes(path);
    auto tree = parse_dtb(original);
    ASSERT_TRUE(tree) << tree.error().message;
    auto blob = serialize_dtb(*tree);
    ASSERT_TRUE(blob) << blob.error().message;
    EXPECT_EQ(dtc_sorted(*blob), dtc_sorted(original));
    // Serializing a loaded copy gives the same bytes again.
    auto again = parse_dtb(*blob);
    ASSERT_TRUE(again);
    EXPECT_EQ(*serialize_dtb(*again), *blob);
    EXPECT_EQ(*serialize_dtb(tree->clone()), *blob);
  }
}

// libfdt wants 8-byte aligned blobs; callers' buffers need not be.
TEST(DtTree, LoadsMisalignedBlobs) {
  const auto original = testing::read_bytes(testing::corpus_dir() / "juno.dtb");
  std::vector<std::uint8_t> shifted(3, 0);
  shifted.insert(shifted.end(), original.begin(), original.end());
  auto tree = parse_dtb(std::span(shifted).subspan(3, original.size()));
  ASSERT_TRUE(tree) << tree.error().message;
  EXPECT_EQ(dtc_sorted(*serialize_dtb(*tree)), dtc_sorted(original));
}

TEST(DtTree, DtsWriterKeepsEveryCorpusTree) {
  for (const auto& path : corpus_trees()) {
    SCOPED_TRACE(path.filename().string());
    const Tree tree = testing::load_or_die(path);
    const std::string dts = to_dts(tree);
    // Upstream trees have warnings of their own (unique_unit_address...); what
    // matters here is that the source compiles back to the same tree.
    const auto run = testing::run_dtc({"-q", "-I", "dts", "-O", "dtb", "-"},
                                      std::vector<std::uint8_t>(dts.begin(), dts.end()));
    ASSERT_EQ(run.exit_status, 0) << run.err;
    auto reparsed = parse_dtb(std::vector<std::uint8_t>(run.out.begin(), run.out.end()));
    ASSERT_TRUE(reparsed) << reparsed.error().message;
    EXPECT_EQ(*serialize_dtb(*reparsed), *serialize_dtb(tree));
  }
}

TEST(DtTree, DtsWriterWritesReferencesWhereDtcWantsThem) {
  const Tree tree = testing::dts_or_die(R"(/dts-v1/;
/ {
  #address-cells = <1>; #size-cells = <1>;
  smmu: iommu@1000 { compatible = "arm,smmu-v3"; reg = <0x1000 0x100>; #iommu-cells = <1>; };
  its: msi@2000 { reg = <0x2000 0x100>; msi-controller; #msi-cells = <1>; };
  dev@3000 { reg = <0x3000 0x10>; iommus = <&smmu 5>; name-list = "a", "b"; bytes = [01 02 03]; empty; };
  pcie@4000 { reg = <0x4000 0x100>; iommu-map = <0 &smmu 0 0x100>; msi-map = <0 &its 0 0x100>; };
};)");
  const std::string dts = to_dts(tree);
  EXPECT_THAT(dts, HasSubstr("iommus = <&iommu_1000 0x5>;"));
  EXPECT_THAT(dts, HasSubstr("iommu_1000: iommu@1000 {"));
  EXPECT_THAT(dts, HasSubstr("iommu-map = <0x0 &iommu_1000 0x0 0x100>;"));
  EXPECT_THAT(dts, HasSubstr("msi-map = <0x0 &msi_2000 0x0 0x100>;"));
  EXPECT_THAT(dts, HasSubstr("name-list = \"a\", \"b\";"));
  EXPECT_THAT(dts, HasSubstr("bytes = [01 02 03];"));
  EXPECT_THAT(dts, HasSubstr("\tempty;"));
  EXPECT_EQ(testing::to_dts_compile_warnings(tree), "");
}

TEST(DtTree, LoadsDtsAndDtbFilesByContent) {
  auto from_dts = load_tree_file(testing::data_dir() / "soc-host.dts");
  ASSERT_TRUE(from_dts) << from_dts.error().message;
  auto blob = serialize_dtb(*from_dts);
  ASSERT_TRUE(blob);
  EXPECT_NE(from_dts->find("/soc/iommu@fd800000"), nullptr);
  EXPECT_EQ(from_dts->find("/soc/iommu@fd800000")->property("#iommu-cells")->u32(), 1u);
  auto missing = load_tree_file(testing::data_dir() / "no-such-file.dtb");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, ErrorCode::kNotFound);
}

TEST(DtTree, MemoryReservationsAndBootCpuSurvive) {
  Tree t;
  t.reservations.push_back({0x80000000, 0x1000});
  t.boot_cpuid = 3;
  t.root().set_string("model", "x");
  auto blob = serialize_dtb(t);
  ASSERT_TRUE(blob);
  auto back = parse_dtb(*blob);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->reservations, t.reservations);
  EXPECT_EQ(back->boot_cpuid, 3u);
  EXPECT_THAT(to_dts(*back), HasSubstr("/memreserve/ 0x0000000080000000 0x0000000000001000;"));
}

TEST(DtTree, RefusesNestingBeyondLimit) {
  Tree t;
  Node* n = &t.root();
  for (int i = 0; i < kMaxDepth + 1; ++i) n = *n->add_child("n");
  auto r = parse_dtb(*serialize_dtb(t));
  ASSERT_FALSE(r);
  EXPECT_THAT(r.error().message, HasSubstr("deeper than"));
}

// dtc refuses these names (checks.c node_name_chars, property_name_chars,
// node_name_format); so does the loader, so every loaded path prints as text.
TEST(DtTree, RefusesNamesDtcRefuses) {
  for (const char* bad : {"a b", "caf\xc3\xa9", "x@1@2", "tab\t"}) {
    Tree t;
    t.root().add_child_unchecked(bad);
    auto r = parse_dtb(*serialize_dtb(t));
    ASSERT_FALSE(r) << bad;
    EXPECT_THAT(r.error().message, HasSubstr("invalid name"));
  }
  Tree p;
  p.root().set_u32("bad name", 1);
  EXPECT_FALSE(parse_dtb(*serialize_dtb(p)));
  Tree ok;
  ok.root().add_child_unchecked("cpu-map,1.x+y_z#?*@ff");
  ok.root().set_u32("#a,b.c_d+e?f*-", 1);
  EXPECT_TRUE(parse_dtb(*serialize_dtb(ok)));
}

TEST(DtTree, PropertyAccessors) {
  Property p{"x", encode_strings(std::vector<std::string>{"arm,mmu-500", "arm,smmu-v2"})};
  EXPECT_EQ(p.strings(), (std::vector<std::string>{"arm,mmu-500", "arm,smmu-v2"}));
  EXPECT_FALSE(p.string());  // two strings
  Property c{"c", encode_cells(std::vector<std::uint32_t>{1, 0xdeadbeef})};
  EXPECT_EQ(c.cells(), (std::vector<std::uint32_t>{1, 0xdeadbeef}));
  EXPECT_FALSE(c.u32());
  Property odd{"o", {1, 2, 3}};
  EXPECT_FALSE(odd.cells());
  Tree t;
  Node& a = **t.root().add_child("a@1");
  EXPECT_EQ(a.path(), "/a@1");
  EXPECT_EQ(a.unit_address(), "1");
  EXPECT_FALSE(t.root().add_child("a@1"));
  EXPECT_EQ(t.find("/a@1"), &a);
  EXPECT_EQ(t.find("/a@2"), nullptr);
  EXPECT_EQ(t.find("a@1"), nullptr);
  a.set_string("status", "disabled");
  EXPECT_FALSE(a.enabled());
  a.set_string("status", "okay");
  EXPECT_TRUE(a.enabled());
}

}  // namespace
}  // namespace vpci::dt
