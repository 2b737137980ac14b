// Golden files for small handmade trees (tests/dt/data): the guest tree as sorted
// DTS (`dtc -s -I dtb -O dts`, so the comparison does not depend on where vpci
// inserts nodes) and the JSON map. Regenerate after an intended change with
//   VPCI_UPDATE_GOLDEN=1 build/release/bin/dt_golden_test
// and review the diff.
#include <cstdlib>
#include <fstream>

#include <gtest/gtest.h>

#include "dt/bind.h"
#include "tests/dt/dt_test_util.h"

namespace vpci::dt {
namespace {

using testing::data_dir;

struct GoldenCase {
  const char* name;
  const char* host;
  const char* partial;
  BindOptions options;
};

void compare_or_update(const std::filesystem::path& golden, const std::string& actual) {
  if (std::getenv("VPCI_UPDATE_GOLDEN") != nullptr) {
    std::ofstream(golden, std::ios::binary) << actual;
    return;
  }
  ASSERT_TRUE(std::filesystem::exists(golden))
      << golden << " is missing; run with VPCI_UPDATE_GOLDEN=1";
  EXPECT_EQ(actual, testing::read_text(golden)) << "differs from " << golden;
}

void run_golden(const GoldenCase& c) {
  const Tree host = testing::load_or_die(data_dir() / c.host);
  const Tree partial = testing::load_or_die(data_dir() / c.partial);
  auto bound = bind_partial_tree(host, partial, c.options);
  ASSERT_TRUE(bound) << bound.error().message;
  auto blob = serialize_dtb(bound->guest);
  ASSERT_TRUE(blob);
  EXPECT_EQ(testing::dtc_roundtrip_warnings(*blob), "");
  EXPECT_EQ(testing::to_dts_compile_warnings(bound->guest), "");
  const testing::DtcRun sorted = testing::run_dtc({"-s", "-I", "dtb", "-O", "dts", "-"}, *blob);
  ASSERT_EQ(sorted.exit_status, 0) << sorted.err;
  compare_or_update(data_dir() / (std::string(c.name) + "-guest.golden.dts"), sorted.out);
  compare_or_update(data_dir() / (std::string(c.name) + "-map.golden.json"), bind_map_json(*bound));
}

// Stream 0x10 on two SMMUs, a 2-cell SMR-mask specifier shared by two masters, a
// stream-match-mask, an IPMMU + SMMUv3 master, a nested master, iommus taken from
// the host, a chosen vSID, PCI passthrough through a masked iommu-map and virtio-pci
// functions on grants.
TEST(DtGolden, SocPartial) {
  run_golden({"soc", "soc-host.dts", "soc-partial.dts", {}});
}

// The same inputs with automatic IDs from 0x100 and chosen IDs for the SATA
// controller (one per specifier) and the nested USB controller (named by host path).
TEST(DtGolden, SocPartialWithBaseAndChosenIds) {
  BindOptions options;
  options.vsid_base = 0x100;
  options.vsid_requests.push_back({"/passthrough/sata@fd0c0000", {0x200, 0x201, 0x202, 0x203}});
  options.vsid_requests.push_back({"/soc/usb@fe300000", {0x30}});
  run_golden({"soc-base", "soc-host.dts", "soc-partial.dts", options});
}

// Xen's fixed phandles already in the partial tree (65000 GIC placeholder, 65001
// grant node), __symbols__ with a label of the consumed /pci-passthrough, vIOMMU
// interrupts and a vIOMMU moved to another address.
TEST(DtGolden, GrantPartialKeepsXenPhandlesAndSymbols) {
  BindOptions options;
  options.viommu.base = 0x5000000;
  options.viommu.size = 0x20000;
  options.viommu.interrupts = {0, 70, 1};
  options.viommu.interrupt_names = {"combined"};
  run_golden({"grant", "soc-host.dts", "grant-partial.dts", options});
}

}  // namespace
}  // namespace vpci::dt
