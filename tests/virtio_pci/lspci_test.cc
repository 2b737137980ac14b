// Every transport's configuration space, written as an lspci dump, decodes with
// `lspci -F FILE -vvv` to the expected IDs and virtio capabilities. The dumps are also
// committed under tests/data/virtio_pci/ (regenerate with VPCI_UPDATE_DUMPS=1) so a
// layout change shows up as a diff.
#include "tests/support/lspci.h"

#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "pci/capabilities.h"
#include "pci/dump.h"
#include "tests/virtio_pci/test_devices.h"

namespace vpci::virtio::testing {
namespace {

using pci::TransportKind;

std::string run(const std::string& command) {
  std::string output;
  FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) return output;
  std::array<char, 4096> buffer{};
  while (std::size_t n = fread(buffer.data(), 1, buffer.size(), pipe))
    output.append(buffer.data(), n);
  pclose(pipe);
  return output;
}

struct DumpCase {
  const char* name;
  TransportKind kind;
  DeviceType device;
  const char* id_line;                  // lspci's "[vendor:device]" part
  std::vector<const char*> expected;    // lines lspci must print
  std::vector<const char*> unexpected;  // lines it must not
  std::optional<std::uint16_t> xen_domid = std::nullopt;
  bool mapper = false;
};

void PrintTo(const DumpCase& c, std::ostream* os) {
  *os << c.name;
}

class LspciDecode : public ::testing::TestWithParam<DumpCase> {};

TEST_P(LspciDecode, ShowsIdsAndVirtioCapabilities) {
  const DumpCase& c = GetParam();
  pci::VirtioPciOptions options;
  options.kind = c.kind;
  options.xen_backend_domid = c.xen_domid;
  Rig rig(c.device, options, c.mapper);
  ASSERT_TRUE(rig.function);
  std::vector<std::uint8_t> config(rig.bus_view->config_size());
  ASSERT_TRUE(rig.bus_view->config_read(0, config).has_value());
  EXPECT_EQ(config.size(), 4096u);
  const auto scan = vpci::pci::scan_capabilities(config);
  for (const auto& d : scan.diagnostics) {
    EXPECT_NE(d.severity, vpci::pci::Severity::kError) << d.code << ": " << d.message;
  }
  const std::string text =
      vpci::pci::format_lspci_dump({0, 0, 4, 0}, config, std::string("vpci virtio-pci ") + c.name);

  const std::filesystem::path committed = std::filesystem::path(VPCI_SOURCE_DIR) /
                                          "tests/data/virtio_pci" /
                                          (std::string(c.name) + ".lspci");
  if (std::getenv("VPCI_UPDATE_DUMPS")) {
    std::filesystem::create_directories(committed.parent_path());
    std::ofstream(committed) << text;
  }
  std::ifstream in(committed);
  std::stringstream stored;
  stored << in.rdbuf();
  EXPECT_EQ(stored.str(), text) << committed << " differs; VPCI_UPDATE_DUMPS=1 rewrites it";

  const auto tmp = std::filesystem::temp_directory_path() /
                   ("vpci-lspci-" + std::to_string(getpid()) + "-" + c.name + ".lspci");
  std::ofstream(tmp) << text;
  const std::string output =
      run(std::string(vpci::testing::kLspci) + " -F " + tmp.string() + " -vvnn 2>&1");
  std::filesystem::remove(tmp);
  EXPECT_NE(output.find(c.id_line), std::string::npos) << output;
  for (const char* line : c.expected)
    EXPECT_NE(output.find(line), std::string::npos) << line << "\n" << output;
  for (const char* line : c.unexpected)
    EXPECT_EQ(output.find(line), std::string::npos) << line << "\n" << output;
}

const std::vector<const char*> kModernCaps = {
    "Express (v2) Endpoint",
    "MSI-X: Enable- Count=2 Masked-",
    "Vendor Specific Information: VirtIO: CommonCfg",
    "BAR=4 offset=00000000 size=00000040",
    "Vendor Specific Information: VirtIO: Notify",
    "BAR=4 offset=00003000 size=00000004",
    "multiplier=00000004",
    "Vendor Specific Information: VirtIO: ISR",
    "BAR=4 offset=00001000 size=00000001",
    "Vendor Specific Information: VirtIO: <unknown>",  // PCI_CFG: lspci 3.9 has no name
    "Region 4: Memory at <unassigned> (64-bit, non-prefetchable)",
    "Interrupt: pin A routed to IRQ",
};

const DumpCase kCases[] = {
    {"modern-rng",
     TransportKind::kModern,
     DeviceType::kRng,
     "[1af4:1044] (rev 01)",
     kModernCaps,
     {"VirtIO: DeviceCfg", "Region 0"}},
    {"modern-blk",
     TransportKind::kModern,
     DeviceType::kBlk,
     "[1af4:1042] (rev 01)",
     {"Vendor Specific Information: VirtIO: DeviceCfg", "BAR=4 offset=00002000 size=0000003c",
      "VirtIO: CommonCfg", "VirtIO: Notify", "VirtIO: ISR",
      "Subsystem: Red Hat, Inc. Device [1af4:1100]"},
     {"Region 0"}},
    {"transitional-rng",
     TransportKind::kTransitional,
     DeviceType::kRng,
     "[1af4:1005]",
     {"Region 0: I/O ports at <unassigned>", "VirtIO: CommonCfg", "VirtIO: Notify", "VirtIO: ISR",
      "Subsystem: Red Hat, Inc. Device [1af4:0004]"},
     {"(rev 01)"}},
    {"transitional-blk",
     TransportKind::kTransitional,
     DeviceType::kBlk,
     "[1af4:1001]",
     {"Region 0: I/O ports at <unassigned>", "VirtIO: DeviceCfg",
      "Subsystem: Red Hat, Inc. Device [1af4:0002]"},
     {"(rev 01)"}},
    {"legacy-blk",
     TransportKind::kLegacy,
     DeviceType::kBlk,
     "[1af4:1001]",
     {"Region 0: I/O ports at <unassigned>", "MSI-X: Enable- Count=2"},
     {"VirtIO"}},
    {"mmr-rng",
     TransportKind::kTransitionalMmr,
     DeviceType::kRng,
     "[1af4:10fc]",
     // lspci 3.9 names virtio capabilities only for device IDs 0x1000-0x107F
     // (ls-caps-vendor.c), so the MMR range shows them undecoded, with their lengths.
     {"Vendor Specific Information: ID=000a Rev=1 Len=018",
      "[88] Vendor Specific Information: Len=10 <?>",
      "[98] Vendor Specific Information: Len=14 <?>",
      "Subsystem: Red Hat, Inc. Device [1af4:0004]"},
     {"Region 0", "VirtIO"}},
    {"mmr-blk",
     TransportKind::kTransitionalMmr,
     DeviceType::kBlk,
     "[1af4:10fa]",
     {"Vendor Specific Information: ID=000a Rev=1 Len=018",
      "[bc] Vendor Specific Information: Len=10 <?>",
      "[cc] Vendor Specific Information: Len=14 <?>"},
     {"Region 0", "VirtIO"}},
    // The mapper presents the MMR device as transitional: lspci decodes its virtio caps again.
    {"mapper-rng",
     TransportKind::kTransitionalMmr,
     DeviceType::kRng,
     "[1af4:1005]",
     {"Subsystem: Red Hat, Inc. Device [1af4:0004]", "Region 0: I/O ports at <unassigned>",
      "VirtIO: CommonCfg", "VirtIO: Notify", "VirtIO: ISR", "ID=000a Rev=1 Len=018"},
     {"(rev 01)"},
     std::nullopt,
     true},
    {"mapper-blk",
     TransportKind::kTransitionalMmr,
     DeviceType::kBlk,
     "[1af4:1001]",
     {"Subsystem: Red Hat, Inc. Device [1af4:0002]", "Region 0: I/O ports at <unassigned>",
      "VirtIO: DeviceCfg"},
     {"(rev 01)"},
     std::nullopt,
     true},
    {"modern-rng-xen-grant",
     TransportKind::kModern,
     DeviceType::kRng,
     "[1af4:1044]",
     // The 12-byte Xen vendor-data capability: too short for lspci's virtio decoder.
     {"VirtIO: CommonCfg", "VirtIO: <unknown>", "[d0] Vendor Specific Information: Len=0c <?>"},
     {},
     std::uint16_t{7}},
};

INSTANTIATE_TEST_SUITE_P(Transports, LspciDecode, ::testing::ValuesIn(kCases),
                         [](const auto& param_info) {
                           std::string name = param_info.param.name;
                           for (auto& ch : name)
                             if (ch == '-') ch = '_';
                           return name;
                         });

}  // namespace
}  // namespace vpci::virtio::testing
