#include "tests/dt/golden_cases.h"

#include <cstdlib>
#include <fstream>
#include <vector>

#include <gtest/gtest.h>

#include "tests/dt/dt_test_util.h"

namespace vpci::dt::testing {
namespace {

std::vector<GoldenCase> make_cases() {
  std::vector<GoldenCase> cases;
  // Stream 0x10 on two SMMUs, a 2-cell SMR-mask specifier shared by two masters, a
  // stream-match-mask, an IPMMU + SMMUv3 master, a nested master, iommus taken from
  // the host, a chosen vSID, PCI passthrough through a masked iommu-map and
  // virtio-pci functions on grants.
  cases.push_back({"soc", "soc-host.dts", "soc-partial.dts", {}});

  // The same inputs with automatic IDs from 0x100 and chosen IDs for the SATA
  // controller (one per specifier) and the nested USB controller (named by host path).
  BindOptions base;
  base.vsid_base = 0x100;
  base.vsid_requests.push_back({"/passthrough/sata@fd0c0000", {0x200, 0x201, 0x202, 0x203}});
  base.vsid_requests.push_back({"/soc/usb@fe300000", {0x30}});
  cases.push_back({"soc-base", "soc-host.dts", "soc-partial.dts", base});

  // Xen's fixed phandles already in the partial tree (65000 GIC placeholder, 65001
  // grant node), __symbols__ with a label of the consumed /pci-passthrough, vIOMMU
  // interrupts and a vIOMMU moved to another address.
  BindOptions grant;
  grant.viommu.base = 0x5000000;
  grant.viommu.size = 0x20000;
  grant.viommu.interrupts = {0, 70, 1};
  grant.viommu.interrupt_names = {"combined"};
  cases.push_back({"grant", "soc-host.dts", "grant-partial.dts", grant});
  return cases;
}

}  // namespace

const GoldenCase* golden_case(std::string_view name) {
  static const std::vector<GoldenCase> cases = make_cases();
  for (const auto& c : cases) {
    if (c.name == name) return &c;
  }
  ADD_FAILURE() << "no golden case " << name;
  return nullptr;
}

Result<BindResult> bind_golden_case(const GoldenCase& c) {
  const Tree host = load_or_die(data_dir() / c.host);
  const Tree partial = load_or_die(data_dir() / c.partial);
  return bind_partial_tree(host, partial, c.options);
}

void compare_or_update(const std::filesystem::path& golden, const std::string& actual) {
  if (std::getenv("VPCI_UPDATE_GOLDEN") != nullptr) {
    std::ofstream(golden, std::ios::binary) << actual;
    return;
  }
  ASSERT_TRUE(std::filesystem::exists(golden))
      << golden << " is missing; run with VPCI_UPDATE_GOLDEN=1";
  EXPECT_EQ(actual, read_text(golden)) << "differs from " << golden;
}

}  // namespace vpci::dt::testing
