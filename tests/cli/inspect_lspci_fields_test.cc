// The proof of issue 20 item 9: on every device of the corpus, each field `lspci -vvv`
// prints for the subsystem, the BARs, a bridge's bus numbers and windows, MSI, MSI-X
// and DVSEC appears in `vpci inspect --json` with the same value. lspci runs with -n so
// that the subsystem is given by number (names depend on the machine's databases).
#include <array>
#include <cstdio>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/cli/cli_test_util.h"
#include "tests/support/lspci.h"

namespace vpci::testing {
namespace {

using nlohmann::json;

struct Window {
  bool unknown = false;  // "!!! Unknown ... range types"
  std::uint64_t base = 0;
  std::uint64_t limit = 0;
  unsigned bits = 0;
  bool disabled = false;
};

struct Region {
  bool io = false;
  std::optional<std::uint64_t> address;  // nullopt: "<unassigned>" and the like
  std::string type;                      // memory: "32-bit", "64-bit", "low-1M", "type 3"
  bool prefetchable = false;
};

// What lspci -vvv -n says about one device, in its own words.
struct LspciDevice {
  std::optional<std::pair<int, int>> subsystem;
  std::map<int, Region> regions;
  std::optional<std::array<int, 4>> bus;  // primary, secondary, subordinate, sec-latency
  std::map<std::string, Window> windows;  // "io_window", "memory_window", "prefetchable_window"
  // Capability offset -> the groups of its line's match.
  std::map<int, std::vector<std::string>> msi;
  std::map<int, std::vector<std::string>> msix;
  std::map<int, std::pair<int, std::uint32_t>> msix_table, msix_pba;  // offset -> BAR, offset
  std::map<int, std::vector<std::string>> dvsec;
};

std::uint64_t hex(const std::string& s) {
  return std::stoull(s, nullptr, 16);
}

std::vector<std::string> groups(const std::smatch& m) {
  std::vector<std::string> out;
  for (const auto& group : m) out.push_back(group.str());
  return out;
}

std::string bdf_of(const std::smatch& m) {
  const std::string domain = m[2].matched ? m[2].str() : "0000";
  return std::string(4 - std::min<std::size_t>(4, domain.size()), '0') + domain + ":" + m[3].str() +
         ":" + m[4].str() + "." + m[5].str();
}

std::map<std::string, LspciDevice> parse_lspci(const std::string& out) {
  static const std::regex kDevice(R"(^(([0-9a-f]{4,5}):)?([0-9a-f]{2}):([0-9a-f]{2})\.([0-7]) )");
  static const std::regex kSubsystem(R"(^\tSubsystem: ([0-9a-f]{4}):([0-9a-f]{4})$)");
  static const std::regex kRegion(
      R"(^\tRegion (\d): (Memory at|I/O ports at) (<[a-z0-9-]+>|[0-9a-f]+)(?: \(([^,]+), (non-)?prefetchable\))?)");
  static const std::regex kBus(
      R"(^\tBus: primary=([0-9a-f]{2}), secondary=([0-9a-f]{2}), subordinate=([0-9a-f]{2}), sec-latency=(\d+)$)");
  static const std::regex kWindow(
      R"(^\t(I/O|Memory|Prefetchable memory) behind bridge: ([0-9a-f]+)-([0-9a-f]+)( \[disabled\]| \[size=[^\]]+\])? \[(\d+)-bit\]$)");
  static const std::regex kUnknownWindow(
      R"(^\t!!! Unknown (I/O|memory|prefetchable memory) range types)");
  static const std::regex kCap(R"(^\tCapabilities: \[([0-9a-f]+)(?: v\d+)?\] (.*)$)");
  static const std::regex kMsi(
      R"(^MSI: Enable([+-]) Count=(\d+)/(\d+) Maskable([+-]) 64bit([+-])$)");
  static const std::regex kMsix(R"(^MSI-X: Enable([+-]) Count=(\d+) Masked([+-])$)");
  static const std::regex kMsixPlace(R"(^\t\t(Vector table|PBA): BAR=(\d+) offset=([0-9a-f]+)$)");
  static const std::regex kDvsec(
      R"(^Designated Vendor-Specific: Vendor=([0-9a-f]{4}) ID=([0-9a-f]{4}) Rev=(\d+) Len=(\d+))");
  static const std::map<std::string, std::string> kWindowKeys = {
      {"I/O", "io_window"},
      {"Memory", "memory_window"},
      {"Prefetchable memory", "prefetchable_window"},
      {"memory", "memory_window"},
      {"prefetchable memory", "prefetchable_window"}};
  std::map<std::string, LspciDevice> devices;
  LspciDevice* current = nullptr;
  int cap_offset = -1;
  std::istringstream lines(out);
  std::string line;
  while (std::getline(lines, line)) {
    std::smatch m;
    if (std::regex_search(line, m, kDevice)) {
      current = &devices[bdf_of(m)];
      cap_offset = -1;
      continue;
    }
    if (current == nullptr) continue;
    if (std::regex_match(line, m, kSubsystem)) {
      current->subsystem = {static_cast<int>(hex(m[1])), static_cast<int>(hex(m[2]))};
    } else if (std::regex_search(line, m, kRegion)) {
      Region r;
      r.io = m[2] == "I/O ports at";
      if (m[3].str()[0] != '<') r.address = hex(m[3]);
      r.type = m[4];
      r.prefetchable = m[4].matched && !m[5].matched;
      current->regions[std::stoi(m[1])] = r;
    } else if (std::regex_match(line, m, kBus)) {
      current->bus = std::array<int, 4>{static_cast<int>(hex(m[1])), static_cast<int>(hex(m[2])),
                                        static_cast<int>(hex(m[3])), std::stoi(m[4])};
    } else if (std::regex_match(line, m, kWindow)) {
      current->windows[kWindowKeys.at(m[1])] = {false, hex(m[2]), hex(m[3]),
                                                static_cast<unsigned>(std::stoi(m[5])),
                                                m[4] == " [disabled]"};
    } else if (std::regex_search(line, m, kUnknownWindow)) {
      current->windows[kWindowKeys.at(m[1])] = {true};
    } else if (std::regex_match(line, m, kCap)) {
      cap_offset = static_cast<int>(hex(m[1]));
      const std::string text = m[2];
      std::smatch f;
      if (std::regex_match(text, f, kMsi)) current->msi[cap_offset] = groups(f);
      if (std::regex_match(text, f, kMsix)) current->msix[cap_offset] = groups(f);
      if (std::regex_search(text, f, kDvsec)) current->dvsec[cap_offset] = groups(f);
    } else if (cap_offset >= 0 && std::regex_match(line, m, kMsixPlace)) {
      auto& where = m[1] == "PBA" ? current->msix_pba : current->msix_table;
      where[cap_offset] = {std::stoi(m[2]), static_cast<std::uint32_t>(hex(m[3]))};
    }
  }
  return devices;
}

// Counts every comparison by field, so the test can say what it proved.
class Comparer {
 public:
  template <typename A, typename B>
  void equal(const std::string& field, const A& lspci, const B& ours, const std::string& where) {
    ++counts_[field];
    EXPECT_EQ(json(lspci), json(ours))
        << where << ": " << field << " (lspci vs vpci inspect --json)";
  }
  [[nodiscard]] const std::map<std::string, int>& counts() const { return counts_; }
  [[nodiscard]] int total() const {
    int n = 0;
    for (const auto& [field, count] : counts_) n += count;
    return n;
  }

 private:
  std::map<std::string, int> counts_;
};

const json* capability(const json& device, int offset) {
  for (const auto& cap : device["capabilities"]) {
    if (cap["offset"] == offset) return &cap;
  }
  return nullptr;
}

std::string memory_type(const std::string& kind) {
  if (kind == "mem32") return "32-bit";
  if (kind == "mem64") return "64-bit";
  if (kind == "mem1m") return "low-1M";
  return "type 3";
}

void compare_bars(Comparer& c, const LspciDevice& l, const json& device, const std::string& where) {
  std::map<int, const json*> ours;
  std::set<int> upper_halves;
  for (const auto& bar : device["bars"]) {
    ours[bar["index"]] = &bar;
    if (bar.contains("raw_upper")) upper_halves.insert(bar["index"].get<int>() + 1);
  }
  for (const auto& [index, region] : l.regions) {
    // lspci shows the upper half of a 64-bit BAR as a region of its own; we fold it.
    if (upper_halves.count(index)) continue;
    const std::string at = fmt::format("{} BAR{}", where, index);
    ASSERT_TRUE(ours.count(index)) << at << ": lspci shows it, vpci inspect does not";
    const json& bar = *ours[index];
    c.equal("bar.kind", region.io ? "io" : region.type,
            bar["kind"] == "io" ? "io" : memory_type(bar["kind"]), at);
    c.equal("bar.address", region.address.value_or(0), bar["address"], at);
    if (!region.io) c.equal("bar.prefetchable", region.prefetchable, bar["prefetchable"], at);
  }
  for (const auto& [index, bar] : ours) {
    EXPECT_TRUE(l.regions.count(index))
        << where << " BAR" << index << ": vpci inspect shows it, lspci does not";
  }
}

void compare_device(Comparer& c, const LspciDevice& l, const json& device,
                    const std::string& where) {
  if (l.subsystem) {
    ASSERT_TRUE(device.contains("subsystem")) << where << ": lspci shows a subsystem";
    c.equal("subsystem.vendor_id", l.subsystem->first, device["subsystem"]["vendor_id"], where);
    c.equal("subsystem.device_id", l.subsystem->second, device["subsystem"]["device_id"], where);
  } else if (device.contains("subsystem")) {
    // lspci prints none for a vendor ID of 0 or 0xffff; we report the registers.
    const int vendor = device["subsystem"]["vendor_id"];
    EXPECT_TRUE(vendor == 0 || vendor == 0xFFFF) << where << ": subsystem lspci does not show";
  }
  compare_bars(c, l, device, where);
  if (l.bus) {
    ASSERT_TRUE(device.contains("bridge")) << where << ": lspci shows bus numbers";
    const json& b = device["bridge"];
    c.equal("bridge.primary_bus", (*l.bus)[0], b["primary_bus"], where);
    c.equal("bridge.secondary_bus", (*l.bus)[1], b["secondary_bus"], where);
    c.equal("bridge.subordinate_bus", (*l.bus)[2], b["subordinate_bus"], where);
    c.equal("bridge.secondary_latency", (*l.bus)[3], b["secondary_latency"], where);
  }
  for (const auto& [key, w] : l.windows) {
    ASSERT_TRUE(device.contains("bridge") && device["bridge"].contains(key))
        << where << ": lspci shows " << key;
    const json& ours = device["bridge"][key];
    c.equal(key + ".type_known", !w.unknown, ours["type_known"], where);
    if (w.unknown) continue;
    c.equal(key + ".base", w.base, ours["base"], where);
    c.equal(key + ".limit", w.limit, ours["limit"], where);
    c.equal(key + ".bits", w.bits, ours["bits"], where);
    c.equal(key + ".open", !w.disabled, ours["open"], where);
  }
  for (const auto& [offset, m] : l.msi) {
    const json* cap = capability(device, offset);
    const std::string at = fmt::format("{} MSI at {:#x}", where, offset);
    ASSERT_TRUE(cap != nullptr && cap->contains("msi")) << at;
    const json& msi = (*cap)["msi"];
    c.equal("msi.enabled", m[1] == "+", msi["enabled"], at);
    c.equal("msi.vectors_enabled", std::stoi(m[2]), msi["vectors_enabled"], at);
    c.equal("msi.vectors_capable", std::stoi(m[3]), msi["vectors_capable"], at);
    c.equal("msi.per_vector_masking", m[4] == "+", msi["per_vector_masking"], at);
    c.equal("msi.address_64bit", m[5] == "+", msi["address_64bit"], at);
  }
  for (const auto& [offset, m] : l.msix) {
    const json* cap = capability(device, offset);
    const std::string at = fmt::format("{} MSI-X at {:#x}", where, offset);
    ASSERT_TRUE(cap != nullptr && cap->contains("msix")) << at;
    const json& msix = (*cap)["msix"];
    c.equal("msix.enabled", m[1] == "+", msix["enabled"], at);
    c.equal("msix.table_size", std::stoi(m[2]), msix["table_size"], at);
    c.equal("msix.function_mask", m[3] == "+", msix["function_mask"], at);
    if (l.msix_table.count(offset)) {
      c.equal("msix.table.bar", l.msix_table.at(offset).first, msix["table"]["bar"], at);
      c.equal("msix.table.offset", l.msix_table.at(offset).second, msix["table"]["offset"], at);
    }
    if (l.msix_pba.count(offset)) {
      c.equal("msix.pba.bar", l.msix_pba.at(offset).first, msix["pba"]["bar"], at);
      c.equal("msix.pba.offset", l.msix_pba.at(offset).second, msix["pba"]["offset"], at);
    }
  }
  for (const auto& [offset, m] : l.dvsec) {
    const json* cap = capability(device, offset);
    const std::string at = fmt::format("{} DVSEC at {:#x}", where, offset);
    ASSERT_TRUE(cap != nullptr && cap->contains("dvsec")) << at;
    const json& dvsec = (*cap)["dvsec"];
    c.equal("dvsec.vendor_id", static_cast<int>(hex(m[1])), dvsec["vendor_id"], at);
    c.equal("dvsec.id", static_cast<int>(hex(m[2])), dvsec["id"], at);
    c.equal("dvsec.revision", std::stoi(m[3]), dvsec["revision"], at);
    c.equal("dvsec.length", std::stoi(m[4]), dvsec["length"], at);
  }
}

// lspci -F reads only text: raw config files are first written as lspci text by
// `vpci dump`.
std::filesystem::path lspci_input(const std::filesystem::path& source, const TempDir& tmp) {
  if (!source.filename().string().ends_with(".bin")) return source;
  const auto out = tmp.path() / (source.filename().string() + ".lspci");
  const auto r = run_command(vpci_cli() + " dump " + shell_quote(source.string()) + " -o " +
                             shell_quote(out.string()));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return out;
}

TEST(InspectLspciFieldsTest, EveryFieldLspciPrintsIsInOurJsonWithTheSameValue) {
  const auto files = pci_corpus_files();
  if (files.empty()) GTEST_SKIP() << "no corpus under " << VPCI_CORPUS_DIR;
  Comparer compare;
  int devices_covered = 0;
  for (const auto& source : files) {
    TempDir tmp;
    const auto lspci = run_command(std::string(kLspci) + " -n -vvv -F " +
                                   shell_quote(lspci_input(source, tmp).string()));
    ASSERT_EQ(lspci.exit_code, 0) << source << ": " << lspci.err;
    // --partial: the handmade corpus holds truncated dumps on purpose.
    const auto ours =
        run_command(vpci_cli() + " inspect " + shell_quote(source.string()) + " --json --partial");
    ASSERT_EQ(ours.exit_code, 0) << source << ": " << ours.err;
    const auto listed = parse_lspci(lspci.out);
    const json report = json::parse(ours.out);
    std::map<std::string, json> by_bdf;
    for (const auto& device : report["devices"]) by_bdf[device["bdf"].get<std::string>()] = device;
    for (const auto& [bdf, device] : listed) {
      const std::string where = fmt::format("{} {}", source.filename().string(), bdf);
      ASSERT_TRUE(by_bdf.count(bdf)) << where << ": lspci lists it, vpci inspect does not";
      compare_device(compare, device, by_bdf[bdf], where);
      ++devices_covered;
    }
  }
  std::string breakdown;
  for (const auto& [field, count] : compare.counts())
    breakdown += fmt::format(" {}={}", field, count);
  std::printf("inspect vs lspci -vvv: %d fields compared over %d devices in %zu corpus files;%s\n",
              compare.total(), devices_covered, files.size(), breakdown.c_str());
  RecordProperty("fields_compared", compare.total());
  RecordProperty("devices_covered", devices_covered);
  // The corpus exercises every kind of field; a parser that stopped matching lspci's
  // lines would compare nothing and prove nothing.
  for (const char* field :
       {"subsystem.vendor_id", "bar.address", "bridge.secondary_bus", "io_window.base",
        "memory_window.limit", "prefetchable_window.bits", "msi.vectors_capable", "msix.table_size",
        "msix.table.offset", "msix.pba.offset", "dvsec.vendor_id"}) {
    EXPECT_GT(compare.counts().count(field) ? compare.counts().at(field) : 0, 0)
        << field << " never compared";
  }
}

}  // namespace
}  // namespace vpci::testing
