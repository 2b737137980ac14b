// Golden files for small handmade trees (tests/dt/golden_cases.h): the guest tree as
// sorted DTS (`dtc -s -I dtb -O dts`, so the comparison does not depend on where
// vpci inserts nodes). The JSON map of the same binds is the CLI's and is pinned by
// tests/tools/dt_bind_map_test.cc.
#include <gtest/gtest.h>

#include "dt/bind.h"
#include "tests/dt/dt_test_util.h"
#include "tests/dt/golden_cases.h"

namespace vpci::dt {
namespace {

using testing::data_dir;

void run_golden(std::string_view name) {
  const testing::GoldenCase* c = testing::golden_case(name);
  ASSERT_NE(c, nullptr);
  auto bound = testing::bind_golden_case(*c);
  ASSERT_TRUE(bound) << bound.error().message;
  auto blob = serialize_dtb(bound->guest);
  ASSERT_TRUE(blob);
  EXPECT_EQ(testing::dtc_roundtrip_warnings(*blob), "");
  EXPECT_EQ(testing::to_dts_compile_warnings(bound->guest), "");
  // The nodes vpci added pass dt-validate's core schemas (dt_test_util.h).
  const auto findings = testing::dt_validate_added_nodes(*bound);
  ASSERT_TRUE(findings.has_value())
      << "dt-validate (Debian's dt-schema) is not installed: scripts/install-deps.sh";
  EXPECT_EQ(*findings, "");
  const testing::DtcRun sorted = testing::run_dtc({"-s", "-I", "dtb", "-O", "dts", "-"}, *blob);
  ASSERT_EQ(sorted.exit_status, 0) << sorted.err;
  testing::compare_or_update(data_dir() / (std::string(c->name) + "-guest.golden.dts"), sorted.out);
}

TEST(DtGolden, SocPartial) {
  run_golden("soc");
}

TEST(DtGolden, SocPartialWithBaseAndChosenIds) {
  run_golden("soc-base");
}

TEST(DtGolden, GrantPartialKeepsXenPhandlesAndSymbols) {
  run_golden("grant");
}

}  // namespace
}  // namespace vpci::dt
