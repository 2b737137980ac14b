// `vpci inspect` against the real pciutils: on every dump of the shared corpus, the
// capabilities we report are exactly the ones `lspci -F FILE -vvv` decodes.
#include <map>
#include <regex>
#include <set>
#include <tuple>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/cli/cli_test_util.h"
#include "tests/support/lspci.h"

namespace vpci::testing {
namespace {

using CapKey = std::tuple<std::string, int, int>;  // space, offset, id (-1: unknown)

struct LspciDevice {
  std::set<std::pair<std::string, int>> caps;  // (space, offset)
  std::map<std::pair<std::string, int>, int> ids_from_names;
};

// IDs lspci names unambiguously (pciutils ls-caps.c / ls-ecaps.c); used to check
// that we and lspci agree on what sits at each offset, not only where.
int id_from_lspci_name(const std::string& space, const std::string& text) {
  static const std::vector<std::pair<std::string, int>> kStandard = {
      {"Power Management", 0x01},
      {"AGP version", 0x02},
      {"Vital Product Data", 0x03},
      {"MSI: ", 0x05},
      {"PCI-X ", 0x07},
      {"HyperTransport", 0x08},
      {"Vendor Specific", 0x09},
      {"Debug port", 0x0A},
      {"Subsystem: ", 0x0D},
      {"Express ", 0x10},
      {"MSI-X: ", 0x11},
      {"SATA HBA", 0x12},
      {"PCI Advanced Features", 0x13},
      {"Enhanced Allocation", 0x14}};
  static const std::vector<std::pair<std::string, int>> kExtended = {
      {"Null", 0x00},
      {"Advanced Error Reporting", 0x01},
      {"Device Serial Number", 0x03},
      {"Power Budgeting", 0x04},
      {"Access Control Services", 0x0D},
      {"Alternative Routing-ID Interpretation", 0x0E},
      {"Address Translation Service", 0x0F},
      {"Single Root I/O Virtualization", 0x10},
      {"Multicast", 0x12},
      {"Page Request Interface", 0x13},
      {"Latency Tolerance Reporting", 0x18},
      {"Secondary PCI Express", 0x19},
      {"Process Address Space ID", 0x1B},
      {"Downstream Port Containment", 0x1D},
      {"L1 PM Substates", 0x1E},
      {"Precision Time Measurement", 0x1F},
      {"Data Link Feature", 0x25},
      {"Physical Layer 16.0 GT/s", 0x26},
      {"Lane Margining at the Receiver", 0x27},
      {"Physical Layer 32.0 GT/s", 0x2A},
      {"Data Object Exchange", 0x2E}};
  for (const auto& [prefix, id] : space == "std" ? kStandard : kExtended) {
    if (text.rfind(prefix, 0) == 0) return id;
  }
  std::smatch m;
  static const std::regex kUnknownStd(R"(^#([0-9a-f]{2}) )");
  static const std::regex kUnknownExt(R"(^Extended Capability ID (0x[0-9a-f]+))");
  if (space == "std" && std::regex_search(text, m, kUnknownStd))
    return std::stoi(m[1], nullptr, 16);
  if (space == "ext" && std::regex_search(text, m, kUnknownExt))
    return std::stoi(m[1], nullptr, 16);
  return -1;
}

std::string fmt_bdf(const std::string& domain, const std::string& bus, const std::string& dev,
                    const std::string& fn) {
  std::string padded = std::string(4 - std::min<std::size_t>(4, domain.size()), '0') + domain;
  return padded + ":" + bus + ":" + dev + "." + fn;
}

std::map<std::string, LspciDevice> run_lspci(const std::filesystem::path& dump) {
  const auto result =
      run_command(std::string(testing::kLspci) + " -F " + shell_quote(dump.string()) + " -vvv");
  EXPECT_EQ(result.exit_code, 0) << result.err;
  std::map<std::string, LspciDevice> devices;
  static const std::regex kDevice(R"(^(([0-9a-f]{4,5}):)?([0-9a-f]{2}):([0-9a-f]{2})\.([0-7]) )");
  static const std::regex kCap(R"(^\tCapabilities: \[([0-9a-f]+)(?: v\d+)?\] (.*)$)");
  std::istringstream lines(result.out);
  std::string line;
  LspciDevice* current = nullptr;
  while (std::getline(lines, line)) {
    std::smatch m;
    if (std::regex_search(line, m, kDevice)) {
      const std::string domain = m[2].matched ? m[2].str() : "0000";
      current = &devices[fmt_bdf(domain, m[3], m[4], m[5])];
      continue;
    }
    if (current == nullptr || !std::regex_match(line, m, kCap)) continue;
    const std::string text = m[2];
    if (text.rfind("<chain looped>", 0) == 0 || text.rfind("<chain broken>", 0) == 0 ||
        text.rfind("<access denied>", 0) == 0) {
      continue;
    }
    const std::string space = m[1].length() == 2 ? "std" : "ext";
    const int offset = std::stoi(m[1], nullptr, 16);
    current->caps.insert({space, offset});
    current->ids_from_names[{space, offset}] = id_from_lspci_name(space, text);
  }
  return devices;
}

// The file lspci reads: raw config files are first written as lspci text by
// `vpci dump` (lspci -F only reads text).
std::filesystem::path lspci_input(const std::filesystem::path& source, const TempDir& tmp) {
  const std::string name = source.filename().string();
  if (!name.ends_with(".bin")) return source;
  const auto out = tmp.path() / (name + ".lspci");
  const auto result = run_command(vpci_cli() + " dump " + shell_quote(source.string()) + " -o " +
                                  shell_quote(out.string()));
  EXPECT_EQ(result.exit_code, 0) << result.err;
  return out;
}

class InspectCorpusTest : public ::testing::TestWithParam<std::filesystem::path> {};

TEST_P(InspectCorpusTest, CapabilitiesEqualWhatLspciDecodes) {
  const auto& source = GetParam();
  TempDir tmp;
  const auto lspci = run_lspci(lspci_input(source, tmp));
  // --partial: the handmade corpus holds truncated dumps on purpose.
  const auto ours =
      run_command(vpci_cli() + " inspect " + shell_quote(source.string()) + " --json --partial");
  ASSERT_EQ(ours.exit_code, 0) << ours.err;
  const auto json = nlohmann::json::parse(ours.out);
  std::size_t compared_devices = 0;
  for (const auto& device : json.at("devices")) {
    const std::string bdf = device.at("bdf");
    std::set<std::pair<std::string, int>> our_caps;
    std::map<std::pair<std::string, int>, int> our_ids;
    for (const auto& cap : device.at("capabilities")) {
      const std::pair<std::string, int> key{cap.at("space"), cap.at("offset")};
      our_caps.insert(key);
      our_ids[key] = cap.at("id");
    }
    const auto found = lspci.find(bdf);
    if (found == lspci.end()) {
      // lspci drops devices whose 64-byte header is incomplete; we must report no
      // capabilities for them either.
      EXPECT_TRUE(our_caps.empty()) << bdf;
      EXPECT_LT(device.at("readable_bytes").get<int>(), 64) << bdf << " missing from lspci output";
      continue;
    }
    ++compared_devices;
    EXPECT_EQ(our_caps, found->second.caps) << source << " device " << bdf;
    for (const auto& [key, id] : found->second.ids_from_names) {
      if (id < 0 || !our_ids.count(key)) continue;
      EXPECT_EQ(our_ids[key], id) << source << " " << bdf << " " << key.first << " " << key.second;
    }
  }
  EXPECT_EQ(compared_devices, lspci.size()) << "devices lspci shows but we do not";
  EXPECT_GT(compared_devices, 0u);
}

TEST_P(InspectCorpusTest, RoundTripThroughOurWriterDecodesIdentically) {
  const auto& source = GetParam();
  TempDir tmp;
  const auto original = lspci_input(source, tmp);
  const auto rewritten = tmp.path() / "rewritten.lspci";
  const auto dumped = run_command(vpci_cli() + " dump " + shell_quote(original.string()) + " -o " +
                                  shell_quote(rewritten.string()));
  ASSERT_EQ(dumped.exit_code, 0) << dumped.err;
  const auto before =
      run_command(std::string(testing::kLspci) + " -F " + shell_quote(original.string()) + " -vvv");
  const auto after = run_command(std::string(testing::kLspci) + " -F " +
                                 shell_quote(rewritten.string()) + " -vvv");
  ASSERT_EQ(before.exit_code, 0);
  ASSERT_EQ(after.exit_code, 0) << after.err;
  EXPECT_FALSE(after.out.empty());
  EXPECT_EQ(before.out, after.out) << source;
}

std::string corpus_test_name(const ::testing::TestParamInfo<std::filesystem::path>& info) {
  std::string name =
      info.param.parent_path().filename().string() + "_" + info.param.filename().string();
  for (char& c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return name;
}

INSTANTIATE_TEST_SUITE_P(Corpus, InspectCorpusTest, ::testing::ValuesIn(pci_corpus_files()),
                         corpus_test_name);

TEST(InspectCliTest, JsonHasTheDocumentedShape) {
  const auto corpus = std::filesystem::path(VPCI_CORPUS_DIR) / "pci" / "intel-adl-igpu.lspci";
  const auto result =
      run_command(vpci_cli() + " inspect " + shell_quote(corpus.string()) + " --json");
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const auto json = nlohmann::json::parse(result.out);
  ASSERT_EQ(json.at("devices").size(), 1u);
  const auto& device = json["devices"][0];
  EXPECT_EQ(device.at("bdf"), "0000:00:02.0");
  EXPECT_EQ(device.at("vendor_id"), 0x8086);
  EXPECT_TRUE(device.at("device_id").is_number());
  EXPECT_EQ(device.at("header_type"), 0);
  bool pasid = false;
  for (const auto& cap : device.at("capabilities")) {
    EXPECT_TRUE(cap.at("space") == "std" || cap.at("space") == "ext");
    EXPECT_TRUE(cap.at("offset").is_number());
    EXPECT_TRUE(cap.at("size").is_number());
    EXPECT_TRUE(cap.at("name").is_string());
    if (cap["space"] == "ext" && cap["id"] == 0x1B) pasid = true;
  }
  EXPECT_TRUE(pasid);
  for (const auto& range : device.at("free")) {
    EXPECT_LT(range.at("start").get<int>(), range.at("end").get<int>());
  }
  EXPECT_TRUE(device.at("diagnostics").is_array());
}

TEST(InspectCliTest, VirtioFieldsAreDecoded) {
  const auto corpus = std::filesystem::path(VPCI_CORPUS_DIR) / "pci" / "microvm-virtio.lspci";
  const auto result = run_command(vpci_cli() + " inspect " + shell_quote(corpus.string()) +
                                  " --device 00:02.0 --json");
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const auto json = nlohmann::json::parse(result.out);
  ASSERT_EQ(json["devices"].size(), 1u);
  std::set<int> cfg_types;
  for (const auto& cap : json["devices"][0]["capabilities"]) {
    if (!cap.contains("virtio")) continue;
    cfg_types.insert(cap["virtio"]["cfg_type"].get<int>());
    if (cap["virtio"]["cfg_type"] == 2) {
      EXPECT_EQ(cap["virtio"]["notify_off_multiplier"], 4);
    }
  }
  EXPECT_EQ(cfg_types, (std::set<int>{1, 2, 3, 4, 5}));
  const auto text =
      run_command(vpci_cli() + " inspect " + shell_quote(corpus.string()) + " --device 00:02.0");
  EXPECT_NE(
      text.out.find("virtio notify (cfg_type 2) bar 0 offset 0x6000 length 0x1000 multiplier 4"),
      std::string::npos)
      << text.out;
}

TEST(InspectCliTest, BrokenChainsAreDiagnosed) {
  const auto corpus =
      std::filesystem::path(VPCI_CORPUS_DIR) / "pci" / "pciutils-tests" / "broken-ecaps";
  const auto result =
      run_command(vpci_cli() + " inspect " + shell_quote(corpus.string()) + " --json");
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const auto json = nlohmann::json::parse(result.out);
  ASSERT_FALSE(json["devices"][0]["diagnostics"].empty());
}

TEST(InspectCliTest, MapIsAnSvgWithOneShapePerCapability) {
  const auto corpus = std::filesystem::path(VPCI_CORPUS_DIR) / "pci" / "intel-adl-igpu.lspci";
  const auto result =
      run_command(vpci_cli() + " inspect " + shell_quote(corpus.string()) + " --map");
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out.rfind("<svg ", 0), 0u);
  EXPECT_NE(result.out.find("</svg>"), std::string::npos);
  EXPECT_NE(result.out.find("Process Address Space ID (0x1b)"), std::string::npos);
  EXPECT_NE(result.out.find("MSI (0x5)"), std::string::npos);
}

TEST(InspectCliTest, SysfsDirectoryOfThisMachine) {
  // Every Linux machine with PCI has at least one device; a sandbox without PCI has
  // none, and then there is nothing to read.
  const std::filesystem::path sysfs = "/sys/bus/pci/devices";
  std::error_code ec;
  auto it = std::filesystem::directory_iterator(sysfs, ec);
  if (ec || it == std::filesystem::directory_iterator()) GTEST_SKIP() << "no PCI devices in sysfs";
  // --partial: without root the kernel shows only 64 bytes (inspect_rules_cli_test.cc).
  const auto result = run_command(vpci_cli() + " inspect " + shell_quote(it->path().string()) +
                                  " --json --partial");
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const auto json = nlohmann::json::parse(result.out);
  EXPECT_EQ(json["devices"][0]["bdf"], it->path().filename().string());
}

TEST(InspectCliTest, BadInputGivesClearErrors) {
  auto missing = run_command(vpci_cli() + " inspect /nonexistent/dump");
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.err.find("/nonexistent/dump"), std::string::npos) << missing.err;
  const auto corpus = std::filesystem::path(VPCI_CORPUS_DIR) / "pci" / "microvm-virtio.lspci";
  auto bad_bdf =
      run_command(vpci_cli() + " inspect " + shell_quote(corpus.string()) + " --device 99");
  EXPECT_EQ(bad_bdf.exit_code, 2);  // not of the option's form: a usage error
  EXPECT_NE(bad_bdf.err.find("not a PCI address"), std::string::npos) << bad_bdf.err;
  EXPECT_EQ(bad_bdf.err.rfind("vpci inspect: ", 0), 0u) << bad_bdf.err;
  auto absent =
      run_command(vpci_cli() + " inspect " + shell_quote(corpus.string()) + " --device 00:1f.0");
  EXPECT_EQ(absent.exit_code, 1);
  EXPECT_NE(absent.err.find("no device 0000:00:1f.0"), std::string::npos) << absent.err;
  auto both =
      run_command(vpci_cli() + " inspect " + shell_quote(corpus.string()) + " --json --map");
  EXPECT_EQ(both.exit_code, 2);
  TempDir tmp;
  std::ofstream(tmp.path() / "bad.lspci") << "00:02.0 x\n00: zz\n";
  std::ofstream(tmp.path() / "bad2.lspci") << "00:02.0 x\n00: 86 8\n";
  auto malformed =
      run_command(vpci_cli() + " inspect " + shell_quote((tmp.path() / "bad2.lspci").string()));
  EXPECT_EQ(malformed.exit_code, 1);
  EXPECT_NE(malformed.err.find("bad2.lspci:2:8: malformed data '8'"), std::string::npos)
      << malformed.err;
}

}  // namespace
}  // namespace vpci::testing
