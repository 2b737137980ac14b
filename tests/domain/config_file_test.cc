// The domain configuration file format: what well-formed files mean, and that every kind
// of malformed file is reported with its file, line, column, key and what was wrong.
#include "domain/config_file.h"

#include <filesystem>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "domain/rules.h"

namespace vpci::domain {
namespace {

using ::testing::HasSubstr;

// The example of issue 8, verbatim.
constexpr std::string_view kIssueExample = R"(arch = "x86"                  # x86 | arm
kind = "pvh"                  # pv | pvh | hvm on x86; "guest" on arm
control_domain = true
vpci = true
emulation_flags = ["lapic", "ioapic", "vpci"]   # x86, optional (derived when absent)
iommu = true
passthrough = ["0000:03:00.0"]
)";

std::vector<ConfigFileProblem> problems_of(std::string_view text) {
  auto result = parse_domain_config(text, "test.toml");
  EXPECT_FALSE(result.has_value()) << "expected a malformed file:\n" << text;
  if (result.has_value()) return {};
  return result.error();
}

// The single problem of a malformed file.
ConfigFileProblem problem_of(std::string_view text) {
  auto problems = problems_of(text);
  EXPECT_EQ(problems.size(), 1u) << (problems.empty() ? "" : to_error(problems).message);
  return problems.empty() ? ConfigFileProblem{} : problems.front();
}

TEST(DomainConfigFile, IssueExample) {
  auto config = parse_domain_config(kIssueExample, "issue.toml");
  ASSERT_TRUE(config.has_value()) << to_error(config.error()).message;
  EXPECT_EQ(config->arch, Arch::kX86);
  EXPECT_EQ(config->kind, Kind::kPvh);
  EXPECT_TRUE(config->control_domain);
  EXPECT_EQ(config->vpci, true);
  EXPECT_EQ(config->emulation_flags, 0x411u);
  EXPECT_TRUE(config->iommu);
  ASSERT_EQ(config->passthrough.size(), 1u);
  EXPECT_EQ(config->passthrough[0].to_string(), "0000:03:00.0");
  EXPECT_EQ(config->source_file, "issue.toml");
  EXPECT_EQ(config->position_of("vpci"), (SourcePosition{4, 1}));
  EXPECT_EQ(config->position_of("passthrough"), (SourcePosition{7, 1}));
  EXPECT_EQ(config->position_of("nonsense"), SourcePosition{});
}

TEST(DomainConfigFile, Defaults) {
  auto config = parse_domain_config("arch = \"arm\"\nkind = \"guest\"\n", "min.toml");
  ASSERT_TRUE(config.has_value());
  EXPECT_FALSE(config->control_domain);
  EXPECT_EQ(config->vpci, std::nullopt);
  EXPECT_EQ(config->emulation_flags, std::nullopt);
  EXPECT_FALSE(config->iommu);
  EXPECT_TRUE(config->passthrough.empty());
}

TEST(DomainConfigFile, IommuFollowsPassthroughWhenAbsent) {
  auto config = parse_domain_config(
      "arch = \"x86\"\nkind = \"hvm\"\npassthrough = [\"03:00.0\", \"0000:04:1f.7\"]\n", "p.toml");
  ASSERT_TRUE(config.has_value()) << to_error(config.error()).message;
  EXPECT_TRUE(config->iommu);
  ASSERT_EQ(config->passthrough.size(), 2u);
  EXPECT_EQ(config->passthrough[0].to_string(), "0000:03:00.0");
  EXPECT_EQ(config->passthrough[1].to_string(), "0000:04:1f.7");
}

TEST(DomainConfigFile, EmulationFlagsAsIntegerWord) {
  auto config =
      parse_domain_config("arch = \"x86\"\nkind = \"pvh\"\nemulation_flags = 0x801\n", "w.toml");
  ASSERT_TRUE(config.has_value());
  EXPECT_EQ(config->emulation_flags, 0x801u);
  auto empty =
      parse_domain_config("arch = \"x86\"\nkind = \"pv\"\nemulation_flags = []\n", "e.toml");
  ASSERT_TRUE(empty.has_value());
  EXPECT_EQ(empty->emulation_flags, 0u);

  const auto negative = problem_of("arch = \"x86\"\nkind = \"pvh\"\nemulation_flags = -1\n");
  EXPECT_EQ(negative.key, "emulation_flags");
  EXPECT_THAT(negative.message, HasSubstr("32-bit"));
  const auto wide = problem_of("arch = \"x86\"\nkind = \"pvh\"\nemulation_flags = 0x100000000\n");
  EXPECT_THAT(wide.message, HasSubstr("32-bit"));
}

TEST(DomainConfigFile, UnknownKeyNamesKeyLineAndSuggestion) {
  const auto p = problem_of("arch = \"x86\"\nkind = \"pvh\"\n\nvcpi = true\n");
  EXPECT_EQ(p.file, "test.toml");
  EXPECT_EQ(p.rule, rule::kFileFormat);
  EXPECT_EQ(p.key, "vcpi");
  EXPECT_EQ(p.position, (SourcePosition{4, 1}));
  EXPECT_THAT(p.message, HasSubstr("unknown key"));
  EXPECT_THAT(p.message, HasSubstr("did you mean \"vpci\""));
  EXPECT_EQ(p.to_string().rfind("test.toml:4:1: key vcpi: unknown key", 0), 0u) << p.to_string();
}

TEST(DomainConfigFile, UnknownTableIsAnUnknownKey) {
  const auto p = problem_of("arch = \"x86\"\nkind = \"pvh\"\n[xen]\nvpci = true\n");
  EXPECT_EQ(p.key, "xen");
  EXPECT_EQ(p.position.line, 3u);
}

TEST(DomainConfigFile, WrongTypes) {
  struct Row {
    std::string_view line;
    std::string_view key;
    std::string_view expected;
    std::string_view found;
  };
  const std::vector<Row> rows = {
      {"arch = 86", "arch", "a string", "an integer"},
      {"kind = [\"pvh\"]", "kind", "a string", "an array"},
      {"control_domain = \"yes\"", "control_domain", "a boolean", "a string"},
      {"vpci = 1", "vpci", "a boolean", "an integer"},
      {"iommu = 1.0", "iommu", "a boolean", "a floating-point number"},
      {"emulation_flags = \"lapic\"", "emulation_flags", "an array of emulation flag names",
       "a string"},
      {"emulation_flags = [1]", "emulation_flags[0]", "a flag name", "an integer"},
      {"passthrough = \"0000:03:00.0\"", "passthrough", "an array of PCI addresses", "a string"},
      {"passthrough = [1979-05-27]", "passthrough[0]", "a PCI address string", "a date"},
      {"vpci = { on = true }", "vpci", "a boolean", "a table"},
  };
  for (const auto& row : rows) {
    // The replaced key is written last so its line is known: 3.
    std::string text = "arch = \"x86\"\nkind = \"pvh\"\n";
    if (row.key == "arch") text = "kind = \"pvh\"\n\n";
    if (row.key == "kind") text = "arch = \"x86\"\n\n";
    text += std::string(row.line) + "\n";
    SCOPED_TRACE(text);
    const auto p = problem_of(text);
    EXPECT_EQ(p.key, row.key);
    EXPECT_EQ(p.position.line, 3u);
    EXPECT_THAT(p.message, HasSubstr(std::string(row.expected)));
    EXPECT_THAT(p.message, HasSubstr("found " + std::string(row.found)));
  }
}

TEST(DomainConfigFile, BadValues) {
  const auto arch = problem_of("arch = \"riscv\"\nkind = \"guest\"\n");
  EXPECT_EQ(arch.key, "arch");
  EXPECT_THAT(arch.message, HasSubstr("\"riscv\""));

  const auto kind = problem_of("arch = \"x86\"\nkind = \"phv\"\n");
  EXPECT_EQ(kind.key, "kind");
  EXPECT_THAT(kind.message, HasSubstr("did you mean \"pvh\""));

  const auto flag =
      problem_of("arch = \"x86\"\nkind = \"pvh\"\nemulation_flags = [\"lapic\", \"vpic\"]\n");
  EXPECT_EQ(flag.key, "emulation_flags[1]");
  EXPECT_EQ(flag.position, (SourcePosition{3, 29}));
  EXPECT_THAT(flag.message, HasSubstr("unknown emulation flag \"vpic\""));

  const auto twice =
      problem_of("arch = \"x86\"\nkind = \"pvh\"\nemulation_flags = [\"lapic\", \"lapic\"]\n");
  EXPECT_EQ(twice.key, "emulation_flags[1]");
  EXPECT_THAT(twice.message, HasSubstr("more than once"));
}

TEST(DomainConfigFile, BadPciAddresses) {
  for (std::string_view bad :
       {"03:00", "0000:03:00.8", "0000:03:20.0", "zz:00.0", "0000:03:00.0 "}) {
    const std::string text = fmt::format(
        "arch = \"x86\"\nkind = \"hvm\"\npassthrough = [\"0000:01:00.0\", \"{}\"]\n", bad);
    SCOPED_TRACE(text);
    const auto p = problem_of(text);
    EXPECT_EQ(p.key, "passthrough[1]");
    EXPECT_EQ(p.position.line, 3u);
    EXPECT_THAT(p.message, HasSubstr(std::string(bad)));
  }
}

TEST(DomainConfigFile, ContradictoryFields) {
  struct Row {
    std::string_view text;
    std::string_view rule;
    std::string_view key;
    std::uint32_t line;
  };
  const std::vector<Row> rows = {
      {"arch = \"arm\"\nkind = \"pvh\"\n", rule::kArchKind, "kind", 2},
      {"arch = \"x86\"\nkind = \"guest\"\n", rule::kArchKind, "kind", 2},
      {"arch = \"arm\"\nkind = \"guest\"\nemulation_flags = []\n", rule::kEmulationFlagsX86Only,
       "emulation_flags", 3},
      {"arch = \"x86\"\nkind = \"hvm\"\niommu = false\npassthrough = [\"03:00.0\"]\n",
       rule::kPassthroughNeedsIommu, "iommu", 3},
      {"arch = \"x86\"\nkind = \"hvm\"\npassthrough = [\"03:00.0\", \"0000:03:00.0\"]\n",
       rule::kPassthroughUnique, "passthrough", 3},
      {"arch = \"x86\"\nkind = \"hvm\"\npassthrough = [\"10000:03:00.0\"]\n",
       rule::kPassthroughSegment, "passthrough", 3},
  };
  for (const auto& row : rows) {
    SCOPED_TRACE(row.text);
    const auto p = problem_of(row.text);
    EXPECT_EQ(p.rule, row.rule);
    EXPECT_EQ(p.key, row.key);
    EXPECT_EQ(p.position.line, row.line);
    EXPECT_THAT(p.to_string(), HasSubstr(fmt::format("[{}]", row.rule)));
  }
}

TEST(DomainConfigFile, MissingRequiredKeys) {
  const auto problems = problems_of("vpci = true\n");
  ASSERT_EQ(problems.size(), 2u);
  EXPECT_EQ(problems[0].key, "arch");
  EXPECT_EQ(problems[1].key, "kind");
  EXPECT_EQ(problems[0].position.line, 0u);
  EXPECT_THAT(problems[0].message, HasSubstr("missing required key"));
  EXPECT_EQ(problems[0].to_string().rfind("test.toml: key arch: missing", 0), 0u);
}

TEST(DomainConfigFile, AllProblemsInFileOrder) {
  const auto problems =
      problems_of("zeta = 1\narch = \"x86\"\nkind = \"pvh\"\nalpha = 2\nvpci = \"no\"\n");
  ASSERT_EQ(problems.size(), 3u);
  EXPECT_EQ(problems[0].key, "zeta");
  EXPECT_EQ(problems[1].key, "alpha");
  EXPECT_EQ(problems[2].key, "vpci");
  const Error error = to_error(problems);
  EXPECT_EQ(error.code, ErrorCode::kMalformedInput);
  EXPECT_EQ(std::count(error.message.begin(), error.message.end(), '\n'), 2);
}

TEST(DomainConfigFile, TomlSyntaxErrors) {
  for (std::string_view text : {std::string_view("arch = \"x86\"\nkind = \n"),
                                std::string_view("arch = \"x86\"\narch = \"arm\"\n"),
                                std::string_view("arch = \"x86\"\nkind = \"pvh\nvpci = true\n")}) {
    SCOPED_TRACE(text);
    const auto p = problem_of(text);
    EXPECT_EQ(p.rule, rule::kFileFormat);
    EXPECT_TRUE(p.key.empty());
    EXPECT_EQ(p.position.line, 2u);
    EXPECT_THAT(p.message, HasSubstr("not valid TOML"));
  }
}

TEST(DomainConfigFile, InvalidUtf8IsASyntaxError) {
  const auto p = problem_of("arch = \"x86\"\n\xff\xfe = 1\n");
  EXPECT_EQ(p.rule, rule::kFileFormat);
  EXPECT_GE(p.position.line, 1u);
  EXPECT_THAT(p.message, HasSubstr("not valid TOML"));
}

TEST(DomainConfigFile, UnreadableFile) {
  auto result = load_domain_config("/nonexistent/domain.toml");
  ASSERT_FALSE(result.has_value());
  ASSERT_EQ(result.error().size(), 1u);
  EXPECT_EQ(result.error()[0].rule, rule::kFileRead);
  EXPECT_THAT(result.error()[0].to_string(), HasSubstr("/nonexistent/domain.toml: cannot open"));
}

TEST(DomainConfigFile, LoadsDataFile) {
  auto config = load_domain_config(std::filesystem::path(VPCI_SOURCE_DIR) /
                                   "tests/domain/data/issue_example.toml");
  ASSERT_TRUE(config.has_value()) << to_error(config.error()).message;
  EXPECT_EQ(config->emulation_flags, 0x411u);
}

TEST(DomainConfigFile, FormatReadsBack) {
  DomainConfig config;
  config.arch = Arch::kX86;
  config.kind = Kind::kHvm;
  config.vpci = false;
  config.emulation_flags = 0x80000201;  // bits without names force the integer form
  config.iommu = true;
  config.passthrough = {pci::DeviceAddress{0, 3, 0, 0}, pci::DeviceAddress{1, 0x80, 0x1f, 7}};
  const std::string text = format_domain_config(config);
  EXPECT_THAT(text, HasSubstr("emulation_flags = 0x80000201"));
  auto parsed = parse_domain_config(text, "round.toml");
  ASSERT_TRUE(parsed.has_value()) << text;
  EXPECT_TRUE(parsed->same_settings(config)) << text;

  config.emulation_flags = 0x411;
  const std::string named = format_domain_config(config);
  EXPECT_THAT(named, HasSubstr("emulation_flags = [\"lapic\", \"ioapic\", \"vpci\"]"));
  auto reparsed = parse_domain_config(named, "round.toml");
  ASSERT_TRUE(reparsed.has_value()) << named;
  EXPECT_TRUE(reparsed->same_settings(config));
}

}  // namespace
}  // namespace vpci::domain
