// `vpci dt bind --map-out`'s JSON: pinned byte for byte by the golden maps of the
// handmade binds (tests/dt/golden_cases.h), and checked against the typed BindResult
// it renders for every corpus tree with IOMMU masters.
#include "tools/dt_bind_map.h"

#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "dt/bind.h"
#include "dt/iommu.h"
#include "tests/dt/dt_test_util.h"
#include "tests/dt/golden_cases.h"

namespace vpci::tools {
namespace {

using dt::testing::data_dir;

void run_golden(std::string_view name) {
  const dt::testing::GoldenCase* c = dt::testing::golden_case(name);
  ASSERT_NE(c, nullptr);
  auto bound = dt::testing::bind_golden_case(*c);
  ASSERT_TRUE(bound) << bound.error().message;
  dt::testing::compare_or_update(data_dir() / (std::string(c->name) + "-map.golden.json"),
                                 bind_map_json(*bound));
}

TEST(DtBindMapGolden, SocPartial) {
  run_golden("soc");
}

TEST(DtBindMapGolden, SocPartialWithBaseAndChosenIds) {
  run_golden("soc-base");
}

TEST(DtBindMapGolden, GrantPartialKeepsXenPhandlesAndSymbols) {
  run_golden("grant");
}

// Every row of the table appears once, in order, with the same values; the sections
// a platform-only bind does not produce are null.
TEST(DtBindMap, RendersEveryCorpusBind) {
  std::size_t trees = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dt::testing::corpus_dir())) {
    if (entry.path().extension() != ".dtb") continue;
    SCOPED_TRACE(entry.path().filename().string());
    const dt::Tree host = dt::testing::load_or_die(entry.path());
    if (dt::parse_topology(host).masters.empty()) continue;
    const dt::Tree partial = dt::testing::build_partial_from_host(host);
    auto bound = dt::bind_partial_tree(host, partial);
    ASSERT_TRUE(bound) << bound.error().message;
    ++trees;

    const auto map = nlohmann::json::parse(bind_map_json(*bound));
    EXPECT_EQ(map["viommu"]["path"], bound->viommu_path);
    EXPECT_EQ(map["viommu"]["phandle"], bound->viommu_phandle);
    ASSERT_EQ(map["masters"].size(), bound->streams.size());
    for (std::size_t i = 0; i < bound->streams.size(); ++i) {
      const dt::BoundStream& s = bound->streams[i];
      const auto& row = map["masters"][i];
      EXPECT_EQ(row["path"], s.path);
      EXPECT_EQ(row["piommu"], s.piommu);
      EXPECT_EQ(row["psid"], s.psid);
      EXPECT_EQ(row["vsid"], s.vsid);
      EXPECT_EQ(row["pmask"], s.pmask);
      EXPECT_EQ(row["host_path"], s.host_path);
      EXPECT_FALSE(row.contains("rid"));
      EXPECT_FALSE(row.contains("host_rid"));
    }
    EXPECT_TRUE(map["pci"].is_null());
    EXPECT_TRUE(map["grant_dma"].is_null());
  }
  EXPECT_GT(trees, 0u);
}

}  // namespace
}  // namespace vpci::tools
