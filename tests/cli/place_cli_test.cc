// `vpci place` end to end: the real binary on every device of the corpus, every rule,
// and the result decoded by the installed lspci (`lspci -F OUT -vvv`, pciutils 3.9).
//
// For each device with extended configuration space, PASID is placed by each rule
// (default, explicit, table, free-space DVSEC in both formats, gap search behind a
// capability at 0xff8) and lspci must show the PASID capability at the reported offset
// with the requested width/exec/priv, every original capability that was not hidden at
// its original offset with the same decoded heading, and no broken or looping chain.
// Devices that already have PASID, a capability at 0xff8, no extended space, and
// pciutils' broken-ecaps give the results docs/placement.md documents.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sys/wait.h>

#include "pci/capabilities.h"
#include "pci/dump.h"
#include "pci/placement.h"
#include "tests/support/lspci.h"

namespace vpci {
namespace {

namespace fs = std::filesystem;

// ---- running programs ----------------------------------------------------------------

struct RunResult {
  int status = -1;
  std::string out;
  std::string err;
};

std::string quote(const std::string& arg) {
  std::string quoted = "'";
  for (char c : arg) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

std::string slurp(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

fs::path scratch_dir() {
  static const fs::path dir = [] {
    fs::path d = fs::temp_directory_path() / fmt::format("vpci_place_cli_{}", ::getpid());
    fs::create_directories(d);
    return d;
  }();
  return dir;
}

// Removes the scratch directory when the test program ends.
class ScratchCleanup : public ::testing::Environment {
 public:
  void TearDown() override {
    std::error_code ignored;
    fs::remove_all(scratch_dir(), ignored);
  }
};
[[maybe_unused]] ::testing::Environment* const kScratchCleanup =
    ::testing::AddGlobalTestEnvironment(new ScratchCleanup);

RunResult run(const std::vector<std::string>& args) {
  static int counter = 0;
  const fs::path out = scratch_dir() / fmt::format("run{}.out", counter);
  const fs::path err = scratch_dir() / fmt::format("run{}.err", counter++);
  std::string command;
  for (const auto& a : args) command += quote(a) + " ";
  command += "> " + quote(out) + " 2> " + quote(err);
  const int raw = std::system(command.c_str());
  RunResult result;
  result.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  result.out = slurp(out);
  result.err = slurp(err);
  fs::remove(out);
  fs::remove(err);
  return result;
}

std::vector<std::string> vpci_place(const std::string& source, const pci::DeviceAddress& address) {
  return {VPCI_CLI_PATH, "place", source, "--device", address.to_string()};
}

// ---- lspci -------------------------------------------------------------------------

struct LspciCapability {
  unsigned offset = 0;
  std::string heading;  // everything after "[off] " or "[off vN] "
  std::vector<std::string> details;
};

struct LspciView {
  std::vector<LspciCapability> capabilities;
  bool broken_chain = false;  // "<chain looped>", "<chain broken>" and the like
  std::string text;
};

LspciView lspci(const fs::path& dump) {
  std::vector<std::string> args(std::begin(testing::kLspciArgv), std::end(testing::kLspciArgv));
  args.insert(args.end(), {"-F", dump.string(), "-vvv"});
  const RunResult r = run(args);
  EXPECT_EQ(r.status, 0) << r.err;
  LspciView view;
  view.text = r.out;
  std::istringstream lines(r.out);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.find("<chain") != std::string::npos) view.broken_chain = true;
    const std::string prefix = "\tCapabilities: [";
    if (line.rfind(prefix, 0) == 0) {
      // "[100 v1] Name" keeps "v1] Name" as its heading, "[40] Name" keeps "Name".
      LspciCapability cap;
      std::string rest = line.substr(prefix.size());
      std::size_t digits = 0;
      while (digits < rest.size() && std::isxdigit(static_cast<unsigned char>(rest[digits])))
        ++digits;
      cap.offset = static_cast<unsigned>(std::stoul(rest.substr(0, digits), nullptr, 16));
      rest = rest.substr(digits);
      cap.heading = rest.rfind("] ", 0) == 0 ? rest.substr(2) : rest.substr(1);
      view.capabilities.push_back(std::move(cap));
    } else if (line.rfind("\t\t", 0) == 0 && !view.capabilities.empty()) {
      view.capabilities.back().details.push_back(line.substr(2));
    }
  }
  return view;
}

const LspciCapability* at_offset(const LspciView& view, unsigned offset) {
  for (const auto& cap : view.capabilities) {
    if (cap.offset == offset) return &cap;
  }
  return nullptr;
}

// ---- the corpus --------------------------------------------------------------------

struct CorpusDevice {
  fs::path file;
  pci::DeviceAddress address;
  std::vector<std::uint8_t> config;
  std::string name;  // test name
};

std::vector<CorpusDevice> load_corpus() {
  std::vector<CorpusDevice> devices;
  const fs::path root = fs::path(VPCI_CORPUS_DIR) / "pci";
  std::vector<fs::path> files;
  std::error_code ec;  // a missing corpus must not throw during test discovery
  for (const auto& entry : fs::recursive_directory_iterator(root, ec)) {
    if (entry.is_regular_file()) files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  for (const auto& file : files) {
    auto loaded = pci::load_dump_source(file);
    if (!loaded) continue;  // e.g. lspci -vvv text without hex
    for (auto& d : *loaded) {
      std::string name = fmt::format("{}_{}", file.filename().string(), d.address.to_string());
      std::replace_if(
          name.begin(), name.end(),
          [](char c) { return !std::isalnum(static_cast<unsigned char>(c)); }, '_');
      devices.push_back({file, d.address, std::move(d.config), std::move(name)});
    }
  }
  return devices;
}

const std::vector<CorpusDevice>& corpus() {
  static const std::vector<CorpusDevice> devices = load_corpus();
  return devices;
}

bool has_extended_space(const CorpusDevice& d) {
  if (d.config.size() < 0x40) return false;
  return !pci::extended_space_problem(d.config, pci::scan_capabilities(d.config)).has_value();
}

std::vector<std::size_t> select(bool extended) {
  std::vector<std::size_t> indexes;
  for (std::size_t i = 0; i < corpus().size(); ++i) {
    if (corpus()[i].config.size() >= 0x40 && has_extended_space(corpus()[i]) == extended)
      indexes.push_back(i);
  }
  return indexes;
}

// A raw file SOURCE has no address; place it with the corpus address so --device works.
std::string source_argument(const CorpusDevice& d) {
  return d.file.string();
}

// DWORD-aligned slots of `need` bytes in the source's free extended ranges, avoiding
// `avoid` ranges; used to pick offsets for the explicit, table and DVSEC cases.
std::vector<std::uint32_t> free_slots(
    const CorpusDevice& d, std::uint32_t need,
    const std::vector<std::pair<std::uint32_t, std::uint32_t>>& avoid = {},
    bool keep_clear_of_aer_prefix_log = true) {
  std::vector<std::uint8_t> full(d.config);
  full.resize(pci::kExtendedConfigSize, 0xFF);
  const auto scan = pci::scan_capabilities(full);
  // AER's TLP Prefix Log runs to +0x48 (PCIe Base 6.0 §7.8.4) although the walker sizes
  // AER at 0x2c/0x38; vpci place keeps it clear when the function implements it, so
  // offsets the test proposes stay clear of it always.
  auto avoided = avoid;
  for (const auto& cap : scan.capabilities) {
    if (!keep_clear_of_aer_prefix_log) break;
    if (cap.space != pci::CapabilitySpace::kExtended || cap.id != pci::ext_cap_id::kAer) continue;
    std::uint32_t end = cap.offset + 0x48u;
    for (const auto& other : scan.capabilities) {
      if (other.space == cap.space && other.offset > cap.offset)
        end = std::min<std::uint32_t>(end, other.offset);
    }
    avoided.emplace_back(cap.offset, end);
  }
  std::vector<std::uint32_t> slots;
  for (const auto& range : pci::free_ranges(scan, pci::kExtendedConfigSize)) {
    if (range.space != pci::CapabilitySpace::kExtended) continue;
    for (std::uint32_t at = (range.begin + 3) & ~3u; at + need <= range.end; at += 4) {
      bool clash = false;
      for (const auto& [b, e] : avoided) clash = clash || (at < e && b < at + need);
      if (!clash) slots.push_back(at);
    }
  }
  return slots;
}

bool has_ext_caps(const CorpusDevice& d) {
  const auto scan = pci::scan_capabilities(d.config);
  return std::any_of(
      scan.capabilities.begin(), scan.capabilities.end(),
      [](const pci::Capability& c) { return c.space == pci::CapabilitySpace::kExtended; });
}

std::optional<std::uint16_t> existing_pasid(const CorpusDevice& d) {
  for (const auto& c : pci::scan_capabilities(d.config).capabilities) {
    if (c.space == pci::CapabilitySpace::kExtended && c.id == pci::ext_cap_id::kPasid)
      return c.offset;
  }
  return std::nullopt;
}

// ---- the checks ----------------------------------------------------------------------

struct Expectation {
  std::string rule;
  std::optional<unsigned> offset;         // exact offset, when the test can know it
  std::vector<unsigned> hidden_offsets;   // original capabilities expected to disappear
  std::optional<unsigned> nulled_offset;  // 0x100 hidden: shows as Null
};

// Runs `args` (a vpci place command with -o and --json added here), then checks the
// JSON and what lspci decodes against the original device's lspci view.
void place_and_check(const CorpusDevice& device, const LspciView& original,
                     std::vector<std::string> args, const pci::PasidFields& pasid,
                     const Expectation& expect) {
  const fs::path out = scratch_dir() / (device.name + "_" + expect.rule + ".lspci");
  fs::remove(out);
  args.insert(args.end(), {"--json", "-o", out.string()});
  const RunResult r = run(args);
  ASSERT_EQ(r.status, 0) << r.err;
  const auto json = nlohmann::json::parse(r.out);
  ASSERT_EQ(json["placed"].size(), 1u);
  const auto& placed = json["placed"][0];
  EXPECT_EQ(placed["id"], 27);
  EXPECT_EQ(placed["rule"], expect.rule) << placed.dump();
  const unsigned offset = placed["offset"];
  if (expect.offset) {
    EXPECT_EQ(offset, *expect.offset) << placed.dump();
  }

  const LspciView view = lspci(out);
  EXPECT_FALSE(view.broken_chain && !original.broken_chain) << view.text;
  const LspciCapability* cap = at_offset(view, offset);
  ASSERT_NE(cap, nullptr) << "lspci shows nothing at " << offset << "\n" << view.text;
  EXPECT_EQ(cap->heading, "v1] Process Address Space ID (PASID)");
  ASSERT_GE(cap->details.size(), 2u);
  EXPECT_EQ(cap->details[0],
            fmt::format("PASIDCap: Exec{} Priv{}, Max PASID Width: {:02x}",
                        pasid.execute ? '+' : '-', pasid.privileged ? '+' : '-', pasid.max_width));
  EXPECT_EQ(cap->details[1], "PASIDCtl: Enable- Exec- Priv-");
  const auto pasid_count =
      std::count_if(view.capabilities.begin(), view.capabilities.end(),
                    [](const auto& c) { return c.heading.find("(PASID)") != std::string::npos; });
  EXPECT_EQ(pasid_count, 1);

  for (const auto& before : original.capabilities) {
    const bool hidden = std::find(expect.hidden_offsets.begin(), expect.hidden_offsets.end(),
                                  before.offset) != expect.hidden_offsets.end();
    const LspciCapability* now = at_offset(view, before.offset);
    if (expect.nulled_offset && before.offset == *expect.nulled_offset) {
      ASSERT_NE(now, nullptr);
      EXPECT_NE(now->heading.find("Null"), std::string::npos) << now->heading;
    } else if (hidden) {
      if (before.offset != offset) {
        EXPECT_EQ(now, nullptr) << "hidden capability still decoded at " << before.offset;
      }
    } else {
      ASSERT_NE(now, nullptr) << "capability at " << std::hex << before.offset << " lost\n"
                              << view.text;
      EXPECT_EQ(now->heading, before.heading) << "at " << std::hex << before.offset;
    }
  }
  // Our own reader agrees with lspci about the new capability.
  const RunResult inspect = run({VPCI_CLI_PATH, "inspect", out.string(), "--json"});
  ASSERT_EQ(inspect.status, 0) << inspect.err;
  bool found = false;
  const auto inspected = nlohmann::json::parse(inspect.out);
  for (const auto& c : inspected["devices"][0]["capabilities"]) {
    found = found || (c["space"] == "ext" && c["offset"] == offset && c["id"] == 27);
  }
  EXPECT_TRUE(found);
}

// Writes the unmodified device as a dump so lspci decodes the same bytes the tool read.
fs::path original_dump(const CorpusDevice& d) {
  const fs::path path = scratch_dir() / (d.name + "_original.lspci");
  std::ofstream(path) << pci::format_lspci_dump(d.address, d.config);
  return path;
}

class PlaceEveryRule : public ::testing::TestWithParam<std::size_t> {};

TEST_P(PlaceEveryRule, LspciShowsPasidAndKeepsTheOriginalCapabilities) {
  const CorpusDevice& d = corpus()[GetParam()];
  const auto index = static_cast<unsigned>(GetParam());
  const pci::PasidFields pasid{1 + index % 20, index % 2 == 0, index % 3 == 0};
  std::string spec = fmt::format("width={}", pasid.max_width);
  if (pasid.execute) spec += ",exec";
  if (pasid.privileged) spec += ",priv";
  const LspciView original = lspci(original_dump(d));
  const std::string source = source_argument(d);

  // A device that already has PASID: the documented error, then the same requests with
  // the physical PASID hidden.
  std::vector<std::string> hide;
  Expectation base;
  if (const auto physical = existing_pasid(d)) {
    auto args = vpci_place(source, d.address);
    args.insert(args.end(), {"--pasid", spec, "-o", (scratch_dir() / "never.lspci").string()});
    const RunResult refused = run(args);
    EXPECT_EQ(refused.status, 1);
    EXPECT_NE(refused.err.find(fmt::format("already has a PASID capability at [{:#x}, {:#x})",
                                           *physical, *physical + 8)),
              std::string::npos)
        << refused.err;
    EXPECT_FALSE(fs::exists(scratch_dir() / "never.lspci"));
    hide = {"--hide", "0x1b"};
    base.hidden_offsets.push_back(*physical);
    if (*physical == 0x100) base.nulled_offset = 0x100;
  }
  auto command = [&](const std::string& src, std::vector<std::string> extra) {
    auto args = vpci_place(src, d.address);
    args.insert(args.end(), {"--pasid", spec});
    args.insert(args.end(), hide.begin(), hide.end());
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  };

  {
    SCOPED_TRACE("default");
    Expectation e = base;
    e.rule = "default";
    e.offset = has_ext_caps(d) ? 0xFF8u : 0x100u;
    place_and_check(d, original, command(source, {}), pasid, e);
  }
  {
    SCOPED_TRACE("explicit");
    auto slots = free_slots(d, 8);
    ASSERT_FALSE(slots.empty());
    // On an empty list prefer an offset other than 0x100, which needs the Null anchor.
    const unsigned at = (!has_ext_caps(d) && slots.size() > 64) ? 0x200 : slots.front();
    Expectation e = base;
    e.rule = "explicit";
    e.offset = at;
    place_and_check(d, original, command(source, {"--at", fmt::format("{:#x}", at)}), pasid, e);
  }
  {
    SCOPED_TRACE("table");
    auto slots = free_slots(d, 8);
    ASSERT_FALSE(slots.empty());
    const unsigned at = slots[slots.size() / 2];
    const std::uint16_t vendor = static_cast<std::uint16_t>(d.config[0] | (d.config[1] << 8));
    const std::uint16_t device_id = static_cast<std::uint16_t>(d.config[2] | (d.config[3] << 8));
    const fs::path table = scratch_dir() / (d.name + ".toml");
    std::ofstream(table) << fmt::format(
        "# decoy first\n[devices.\"{:04x}:{:04x}\"]\nfree = [ {{ offset = 0x100, length = 4 }} ]\n"
        "[devices.\"{:04x}:{:04x}\"]\nfree = [ {{ offset = {:#x}, length = 8 }} ]\nnote = \"corpus "
        "test\"\n",
        vendor ^ 0xFFFF, device_id, vendor, device_id, at);
    Expectation e = base;
    e.rule = "table";
    e.offset = at;
    place_and_check(d, original, command(source, {"--table", table.string()}), pasid, e);
  }
  {
    SCOPED_TRACE("dvsec, gap format");
    auto slots = free_slots(d, 16, {{0x100, 0x104}});
    ASSERT_FALSE(slots.empty());
    const unsigned at = slots.front();
    const fs::path with_dvsec = scratch_dir() / (d.name + "_gapdvsec.lspci");
    auto setup = vpci_place(source, d.address);
    setup.insert(setup.end(), {"--add", fmt::format("free-space-gap,length=16,at={:#x}", at), "-o",
                               with_dvsec.string()});
    const RunResult made = run(setup);
    ASSERT_EQ(made.status, 0) << made.err;
    Expectation e = base;
    e.rule = "dvsec";
    e.offset = at;
    place_and_check(d, original, command(with_dvsec.string(), {}), pasid, e);
  }
  {
    SCOPED_TRACE("dvsec, table format");
    auto table_slots = free_slots(d, 16, {{0x100, 0x104}});
    ASSERT_FALSE(table_slots.empty());
    const unsigned table_at = table_slots.front();
    auto range_slots = free_slots(d, 8, {{0x100, 0x104}, {table_at, table_at + 16}});
    ASSERT_FALSE(range_slots.empty());
    const unsigned range_at = range_slots.back();
    const fs::path with_dvsec = scratch_dir() / (d.name + "_tabledvsec.lspci");
    auto setup = vpci_place(source, d.address);
    setup.insert(
        setup.end(),
        {"--add", fmt::format("free-space-table,ranges={:#x}+8,at={:#x}", range_at, table_at), "-o",
         with_dvsec.string()});
    const RunResult made = run(setup);
    ASSERT_EQ(made.status, 0) << made.err;
    Expectation e = base;
    e.rule = "dvsec";
    e.offset = range_at;
    place_and_check(d, original, command(with_dvsec.string(), {}), pasid, e);
  }
  {
    SCOPED_TRACE("a capability at 0xff8: default refused, gap search");
    auto tail = free_slots(d, 8, {}, false);
    ASSERT_TRUE(std::find(tail.begin(), tail.end(), 0xFF8u) != tail.end())
        << "0xff8 not free in the corpus device";
    const fs::path blocked = scratch_dir() / (d.name + "_blocked.lspci");
    auto setup = vpci_place(source, d.address);
    setup.insert(setup.end(), {"--add", "vsec,id=0x1234,at=0xff8", "-o", blocked.string()});
    const RunResult made = run(setup);
    ASSERT_EQ(made.status, 0) << made.err;

    const fs::path never = scratch_dir() / "never.lspci";
    auto refused_args = command(blocked.string(), {"-o", never.string()});
    const RunResult refused = run(refused_args);
    EXPECT_EQ(refused.status, 1);
    EXPECT_NE(
        refused.err.find(
            "no room for PASID at the default offset: [0xff8, 0x1000) overlaps Vendor-Specific "
            "Extended"),
        std::string::npos)
        << refused.err;
    EXPECT_FALSE(fs::exists(never));

    Expectation e = base;
    e.rule = "gap-search";
    const auto args = command(blocked.string(), {"--search-gaps"});
    place_and_check(d, original, args, pasid, e);
    auto json_args = args;
    json_args.push_back("--json");
    const RunResult again = run(json_args);
    ASSERT_EQ(again.status, 0);
    EXPECT_NE(again.err.find("holes between capabilities can hold undocumented registers"),
              std::string::npos);
    const unsigned at = nlohmann::json::parse(again.out)["placed"][0]["offset"];
    EXPECT_NE(at, 0xFF8u);
    const auto slots = free_slots(d, 8, {}, false);
    EXPECT_TRUE(std::find(slots.begin(), slots.end(), at) != slots.end()) << at;
    for (unsigned i = 0; i < 8; ++i)
      EXPECT_EQ(d.config.at(at + i), 0) << "gap search chose non-zero bytes";
  }
}

std::string device_name(const ::testing::TestParamInfo<std::size_t>& info) {
  return corpus()[info.param].name;
}

INSTANTIATE_TEST_SUITE_P(Corpus, PlaceEveryRule, ::testing::ValuesIn(select(true)), device_name);

class PlaceWithoutExtendedSpace : public ::testing::TestWithParam<std::size_t> {};

TEST_P(PlaceWithoutExtendedSpace, IsRefusedAndNothingIsWritten) {
  const CorpusDevice& d = corpus()[GetParam()];
  const fs::path out = scratch_dir() / (d.name + "_none.lspci");
  auto args = vpci_place(source_argument(d), d.address);
  args.insert(args.end(), {"--pasid", "width=20", "-o", out.string()});
  const RunResult r = run(args);
  EXPECT_EQ(r.status, 1);
  EXPECT_TRUE(r.err.find("no extended configuration space") != std::string::npos ||
              r.err.find("no accessible extended configuration space") != std::string::npos)
      << r.err;
  EXPECT_FALSE(fs::exists(out));
}

INSTANTIATE_TEST_SUITE_P(Corpus, PlaceWithoutExtendedSpace, ::testing::ValuesIn(select(false)),
                         device_name);

const fs::path kCorpus = fs::path(VPCI_CORPUS_DIR) / "pci";

TEST(PlaceCli, CorpusHasTheCasesTheIssueNames) {
  // Guard against the sweeps silently covering less than intended.
  EXPECT_GE(select(true).size(), 60u);
  EXPECT_GE(select(false).size(), 10u);
  const auto pasid_devices = std::count_if(
      corpus().begin(), corpus().end(),
      [](const CorpusDevice& d) { return has_extended_space(d) && existing_pasid(d).has_value(); });
  EXPECT_GE(pasid_devices, 5);
}

TEST(PlaceCli, BrokenEcapsIsRefusedAsHavingNoExtendedSpace) {
  const RunResult r =
      run({VPCI_CLI_PATH, "place", (kCorpus / "pciutils-tests" / "broken-ecaps").string(),
           "--pasid", "width=20"});
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("no PCI Express or PCI-X capability"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("aliases the 256-byte space"), std::string::npos) << r.err;
  EXPECT_TRUE(r.out.empty());
}

TEST(PlaceCli, ExistingOutputIsUntouchedOnError) {
  const fs::path out = scratch_dir() / "keep.lspci";
  std::ofstream(out) << "keep me\n";
  const RunResult r = run({VPCI_CLI_PATH, "place", (kCorpus / "intel-adl-igpu.lspci").string(),
                           "--pasid", "width=20", "-o", out.string()});
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(slurp(out), "keep me\n");
  for (const auto& entry : fs::directory_iterator(scratch_dir())) {
    EXPECT_EQ(entry.path().filename().string().find("keep.lspci.vpci-"), std::string::npos)
        << "temp file left";
  }
}

TEST(PlaceCli, ExistingOutputIsReplacedOnSuccess) {
  const fs::path out = scratch_dir() / "replace.lspci";
  std::ofstream(out) << "old\n";
  const RunResult r = run({VPCI_CLI_PATH, "place", (kCorpus / "intel-adl-igpu.lspci").string(),
                           "--pasid", "width=20", "--hide", "0x1b", "-o", out.string()});
  ASSERT_EQ(r.status, 0) << r.err;
  const std::string text = slurp(out);
  EXPECT_EQ(text.rfind("0000:00:02.0 ", 0), 0u);
  EXPECT_NE(
      text.find(
          "\tvpci overlay: 0xff8+8 emulated ff ff ff ff ff ff ff ff wmask 00 00 00 00 00 00 07 00"),
      std::string::npos);
  EXPECT_NE(r.out.find("rule default"), std::string::npos);
}

TEST(PlaceCli, JsonNamesOffsetRuleOverlayAndSources) {
  const RunResult r =
      run({VPCI_CLI_PATH, "place", (kCorpus / "qemu72-q35.lspci").string(), "--device", "00:02.0",
           "--pasid", "iommufd,max_pasid_log2=20,capabilities=0x2", "--json"});
  ASSERT_EQ(r.status, 0) << r.err;
  const auto json = nlohmann::json::parse(r.out);
  EXPECT_EQ(json["placed"][0]["id"], 27);
  EXPECT_EQ(json["placed"][0]["offset"], 4088);
  EXPECT_EQ(json["placed"][0]["rule"], "default");
  EXPECT_EQ(json["pasid"]["source"], "iommufd");
  EXPECT_EQ(json["pasid"]["capability_register"], 0x1402);
  ASSERT_EQ(json["free_space"].size(), 5u);
  EXPECT_EQ(json["free_space"][3]["rule"], "default");
  EXPECT_EQ(json["free_space"][3]["status"], "used");
  bool pasid_overlay = false;
  for (const auto& field : json["overlay"]) {
    if (field["offset"] == 4088) {
      pasid_overlay = true;
      EXPECT_EQ(field["write_mask"], "00 00 00 00 00 00 07 00");
      EXPECT_EQ(field["value"], "1b 00 01 00 02 14 00 00");
    }
  }
  EXPECT_TRUE(pasid_overlay);
  EXPECT_TRUE(json["output"].is_null());
}

TEST(PlaceCli, VfioFeatureBitsReachTheRegisterShiftedByOne) {
  const fs::path out = scratch_dir() / "vfio.lspci";
  const RunResult r =
      run({VPCI_CLI_PATH, "place", (kCorpus / "qemu72-q35.lspci").string(), "--device", "00:02.0",
           "--pasid", "vfio,width=8,capabilities=0x2", "-o", out.string()});
  ASSERT_EQ(r.status, 0) << r.err;
  const LspciView view = lspci(out);
  const LspciCapability* cap = at_offset(view, 0xFF8);
  ASSERT_NE(cap, nullptr);
  ASSERT_FALSE(cap->details.empty());
  EXPECT_EQ(cap->details[0], "PASIDCap: Exec- Priv+, Max PASID Width: 08");
}

TEST(PlaceCli, MapMarksAddedAndHiddenRegions) {
  const RunResult r = run({VPCI_CLI_PATH, "place", (kCorpus / "intel-adl-igpu.lspci").string(),
                           "--pasid", "width=20", "--hide", "0x1b", "--map"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out.rfind("<svg", 0), 0u);
  EXPECT_NE(r.out.find("PASID added (default)"), std::string::npos);
  EXPECT_NE(r.out.find("hidden: Process Address Space ID"), std::string::npos);
  EXPECT_NE(r.out.find("(guest view)"), std::string::npos);
}

TEST(PlaceCli, DumpToStdoutRoundTripsThroughLspciWithOverlayComments) {
  const RunResult r = run({VPCI_CLI_PATH, "place", (kCorpus / "0000_00_00.0.config.bin").string(),
                           "--hide", "std:0x09"});
  // The raw host bridge has no vendor capability: a clean error, exit 1.
  EXPECT_EQ(r.status, 1) << r.out;
  const RunResult ok = run({VPCI_CLI_PATH, "place", (kCorpus / "qemu72-q35.lspci").string(),
                            "--device", "00:02.0", "--pasid", "width=4"});
  ASSERT_EQ(ok.status, 0) << ok.err;
  const fs::path out = scratch_dir() / "stdout.lspci";
  std::ofstream(out) << ok.out;
  const LspciView view = lspci(out);
  EXPECT_NE(at_offset(view, 0xFF8), nullptr);
  EXPECT_NE(ok.out.find("\tvpci place: PASID [ext 0x1b v1] at 0xff8"), std::string::npos);
}

TEST(PlaceCli, RawConfigFileTakesItsAddressFromDevice) {
  const fs::path raw = scratch_dir() / "raw.config";
  const auto& adl = corpus();
  const auto it = std::find_if(adl.begin(), adl.end(), [](const CorpusDevice& d) {
    return d.file.filename() == "cap-pasid-pri";
  });
  ASSERT_NE(it, adl.end());
  std::ofstream(raw, std::ios::binary)
      .write(reinterpret_cast<const char*>(it->config.data()),
             static_cast<std::streamsize>(it->config.size()));
  const RunResult r = run({VPCI_CLI_PATH, "place", raw.string(), "--device", "0000:03:00.1",
                           "--hide", "@0x100", "--pasid", "width=20,exec", "--at", "0x104"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out.rfind("0000:03:00.1 ", 0), 0u);
}

TEST(PlaceCli, RepeatableOptionsDoNotSwallowTheSource) {
  const RunResult r =
      run({VPCI_CLI_PATH, "place", "--hide", "0x1b", "--add", "vsec,id=7",
           (kCorpus / "intel-adl-igpu.lspci").string(), "--pasid", "width=5", "--json"});
  ASSERT_EQ(r.status, 0) << r.err;
  const auto json = nlohmann::json::parse(r.out);
  EXPECT_EQ(json["placed"].size(), 2u);
  EXPECT_EQ(json["hidden"].size(), 1u);
}

TEST(PlaceCli, UsageErrorsExitTwo) {
  const std::string src = (kCorpus / "qemu72-q35.lspci").string();
  EXPECT_EQ(run({VPCI_CLI_PATH, "place", src, "--device", "00:02.0"}).status, 2);  // nothing to do
  EXPECT_EQ(run({VPCI_CLI_PATH, "place", src, "--device", "00:02.0", "--pasid", "width=21"}).status,
            2);
  EXPECT_EQ(run({VPCI_CLI_PATH, "place", src, "--device", "00:02.0", "--at", "0x400"}).status, 2);
  EXPECT_EQ(run({VPCI_CLI_PATH, "place", src, "--device", "00:02.0", "--pasid", "width=4", "--at",
                 "0x400", "--search-gaps"})
                .status,
            2);
  EXPECT_EQ(run({VPCI_CLI_PATH, "place", src, "--device", "00:02.0", "--hide", "nonsense"}).status,
            2);
}

TEST(PlaceCli, RejectedRequestsExitOneWithTheRange) {
  const std::string src = (kCorpus / "qemu72-q35.lspci").string();
  // Without --device, a source of several devices is refused for what it holds: the
  // same command line is fine for a one-device source.
  const RunResult several = run({VPCI_CLI_PATH, "place", src, "--pasid", "width=4"});
  EXPECT_EQ(several.status, 1);
  EXPECT_NE(several.err.find("holds 19 devices"), std::string::npos) << several.err;
  EXPECT_NE(several.err.find("choose one with --device"), std::string::npos) << several.err;
  const RunResult overlap = run(
      {VPCI_CLI_PATH, "place", src, "--device", "00:02.0", "--pasid", "width=4", "--at", "0x104"});
  EXPECT_EQ(overlap.status, 1);
  EXPECT_NE(overlap.err.find(
                "[0x104, 0x10c) overlaps Advanced Error Reporting [0x100] at [0x100, 0x148)"),
            std::string::npos)
      << overlap.err;
  const fs::path bad_table = scratch_dir() / "bad.toml";
  std::ofstream(bad_table)
      << "[devices.\"1b36:000c\"]\nfree = [ { offset = 0x140, length = 0x10 } ]\n";
  const RunResult conflict = run({VPCI_CLI_PATH, "place", src, "--device", "00:02.0", "--pasid",
                                  "width=4", "--table", bad_table.string()});
  EXPECT_EQ(conflict.status, 1);
  EXPECT_NE(conflict.err.find("conflicting table entry 1b36:000c"), std::string::npos)
      << conflict.err;
  EXPECT_NE(conflict.err.find("[0x140, 0x150)"), std::string::npos) << conflict.err;
}

}  // namespace
}  // namespace vpci
