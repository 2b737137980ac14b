// `vpci domain check` run as a user runs it: the real binary (VPCI_CLI_PATH) on the files
// in tests/domain/data/, checking exit status, JSON and the human-readable report.
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/cli/cli_test_util.h"

namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using vpci::testing::CommandResult;

// Runs `vpci ARGS`; ARGS is passed through the shell, so file names go through data().
CommandResult run_vpci(const std::string& args) {
  return vpci::testing::run_command(vpci::testing::shell_quote(vpci::testing::vpci_cli()) + " " +
                                    args);
}

// A file of tests/domain/data/, quoted for the shell.
std::string data(std::string_view name) {
  return vpci::testing::shell_quote(
      (std::filesystem::path(VPCI_SOURCE_DIR) / "tests/domain/data" / name).string());
}

nlohmann::json run_json(std::string_view file, std::string_view profile, int expected_exit) {
  const CommandResult run =
      run_vpci(fmt::format("domain check {} --profile {} --json", data(file), profile));
  EXPECT_EQ(run.exit_code, expected_exit) << run.out << run.err;
  EXPECT_TRUE(run.err.empty()) << run.err;
  auto json = nlohmann::json::parse(run.out, nullptr, /*allow_exceptions=*/false);
  EXPECT_FALSE(json.is_discarded()) << run.out;
  return json;
}

std::vector<std::string> rules_of(const nlohmann::json& json, std::string_view severity) {
  std::vector<std::string> rules;
  for (const auto& d : json["diagnostics"]) {
    if (d["severity"] == severity) rules.push_back(d["rule"].get<std::string>());
  }
  return rules;
}

// The shape the issue asks for, on every output.
void expect_documented_shape(const nlohmann::json& json) {
  ASSERT_TRUE(json.is_object());
  ASSERT_TRUE(json.contains("ok") && json["ok"].is_boolean());
  ASSERT_TRUE(json.contains("profile") && json["profile"].is_string());
  ASSERT_TRUE(json.contains("diagnostics") && json["diagnostics"].is_array());
  for (const auto& d : json["diagnostics"]) {
    for (const char* key : {"rule", "field", "message", "severity"}) {
      ASSERT_TRUE(d.contains(key) && d[key].is_string()) << key << " in " << d.dump();
      EXPECT_FALSE(d[key].get<std::string>().empty()) << key << " in " << d.dump();
    }
    ASSERT_TRUE(d.contains("errno"));
    EXPECT_TRUE(d["errno"].is_null() || d["errno"] == "EINVAL" || d["errno"] == "EOPNOTSUPP");
  }
}

struct Verdict {
  std::string_view file;
  std::string_view profile;
  bool ok;
  std::vector<std::string> errors;  // error rules, in order
  std::vector<std::string> advice;  // warning and note rules, in order
  std::optional<std::string> xen_errno;
  std::optional<std::uint32_t> cdf;  // for accepted files
  std::optional<std::uint32_t> emulation;
};

// Expected verdicts, from ../shared/reference/xen-domain.md (see the comment in each file).
const std::vector<Verdict> kVerdicts = {
    {"issue_example.toml", "xen-current", true, {}, {}, std::nullopt, 0x23, 0x411},
    {"issue_example.toml", "cdf-vpci", false, {"x86-emulation-known-bits"}, {}, "EINVAL", {}, {}},
    {"x86_pvh_dom0_derived.toml", "xen-current", true, {}, {}, std::nullopt, 0x23, 0x411},
    {"x86_pvh_dom0_derived.toml",
     "cdf-vpci",
     true,
     {},
     {"cdf-vpci-provisional-bit"},
     std::nullopt,
     0x223,
     0x011},
    {"x86_pvh_dom0_no_vpci.toml",
     "xen-current",
     false,
     {"x86-emulation-vpci"},
     {},
     "EOPNOTSUPP",
     {},
     {}},
    {"x86_pvh_dom0_no_vpci.toml", "cdf-vpci", false, {"x86-cdf-vpci"}, {}, "EOPNOTSUPP", {}, {}},
    {"x86_pvh_domu_vpci.toml",
     "xen-current",
     false,
     {"x86-emulation-vpci"},
     {},
     "EOPNOTSUPP",
     {},
     {}},
    {"x86_pvh_domu_vpci.toml", "cdf-vpci", false, {"x86-cdf-vpci"}, {}, "EOPNOTSUPP", {}, {}},
    {"x86_hvm_domu.toml", "xen-current", true, {}, {}, std::nullopt, 0x23, 0x3ff},
    {"x86_hvm_domu.toml", "cdf-vpci", true, {}, {}, std::nullopt, 0x23, 0x3ff},
    {"x86_pv_dom0_vpci.toml",
     "xen-current",
     false,
     {"x86-emulation-vpci"},
     {},
     "EOPNOTSUPP",
     {},
     {}},
    {"x86_pv_dom0_vpci.toml", "cdf-vpci", false, {"cdf-vpci-needs-hvm"}, {}, "EINVAL", {}, {}},
    {"x86_unknown_emulation_bit.toml",
     "xen-current",
     false,
     {"x86-emulation-known-bits"},
     {},
     "EINVAL",
     {},
     {}},
    {"x86_unknown_emulation_bit.toml",
     "cdf-vpci",
     false,
     {"x86-emulation-known-bits"},
     {},
     "EINVAL",
     {},
     {}},
    {"x86_vpci_contradicts_flags.toml",
     "xen-current",
     false,
     {"x86-vpci-is-emulation-flag"},
     {},
     std::nullopt,
     {},
     {}},
    {"x86_vpci_contradicts_flags.toml",
     "cdf-vpci",
     false,
     {"x86-cdf-vpci"},
     {},
     "EOPNOTSUPP",
     {},
     {}},
    {"arm_guest.toml", "xen-current", true, {}, {}, std::nullopt, 0x3, {}},
    {"arm_guest.toml", "cdf-vpci", true, {}, {}, std::nullopt, 0x3, {}},
    {"arm_guest_passthrough.toml",
     "xen-current",
     true,
     {},
     {"arm-pci-no-trapped-config-space"},
     std::nullopt,
     0x23,
     {}},
    {"arm_guest_passthrough.toml",
     "cdf-vpci",
     true,
     {},
     {"arm-pci-no-trapped-config-space"},
     std::nullopt,
     0x23,
     {}},
    {"arm_guest_passthrough_vpci.toml",
     "xen-current",
     false,
     {"arm-no-vpci"},
     {"arm-pci-no-trapped-config-space"},
     "EINVAL",
     {},
     {}},
    {"arm_guest_passthrough_vpci.toml",
     "cdf-vpci",
     true,
     {},
     {"arm-vpci-build-config", "cdf-vpci-provisional-bit"},
     std::nullopt,
     0x223,
     {}},
};

TEST(DomainCli, VerdictsAsJson) {
  for (const auto& v : kVerdicts) {
    SCOPED_TRACE(fmt::format("{} --profile {}", v.file, v.profile));
    const auto json = run_json(v.file, v.profile, v.ok ? 0 : 1);
    expect_documented_shape(json);
    EXPECT_EQ(json["ok"], v.ok);
    EXPECT_EQ(json["profile"], v.profile);
    EXPECT_EQ(rules_of(json, "error"), v.errors);
    std::vector<std::string> advice = rules_of(json, "warning");
    for (auto& r : rules_of(json, "note")) advice.push_back(r);
    EXPECT_EQ(advice, v.advice);
    if (v.xen_errno) {
      EXPECT_EQ(json["xen_errno"], *v.xen_errno);
    } else {
      EXPECT_TRUE(json["xen_errno"].is_null());
    }
    if (!v.ok) {
      EXPECT_FALSE(json.contains("flags"));
      continue;
    }
    ASSERT_TRUE(json.contains("flags"));
    EXPECT_EQ(json["flags"]["cdf"], *v.cdf);
    if (v.emulation) {
      EXPECT_EQ(json["flags"]["x86_emulation"], *v.emulation);
    } else {
      EXPECT_FALSE(json["flags"].contains("x86_emulation"));
    }
  }
}

TEST(DomainCli, JsonKeysInDocumentedOrder) {
  const auto json = run_json("x86_pvh_domu_vpci.toml", "xen-current", 1);
  // nlohmann::json sorts keys when parsing into a plain json, so check the raw text.
  const CommandResult run =
      run_vpci(fmt::format("domain check {} --json", data("x86_pvh_domu_vpci.toml")));
  const auto ok = run.out.find("\"ok\"");
  const auto profile = run.out.find("\"profile\"");
  const auto diagnostics = run.out.find("\"diagnostics\"");
  const auto rule = run.out.find("\"rule\"");
  const auto field = run.out.find("\"field\"");
  const auto message = run.out.find("\"message\"");
  EXPECT_LT(ok, profile);
  EXPECT_LT(profile, diagnostics);
  EXPECT_LT(diagnostics, rule);
  EXPECT_LT(rule, field);
  EXPECT_LT(field, message);
  // The diagnostic points at the line of the field in the file.
  EXPECT_EQ(json["diagnostics"][0]["field"], "vpci");
  EXPECT_EQ(json["diagnostics"][0]["line"], 4);
}

TEST(DomainCli, DefaultProfileIsXenCurrentAndAliasWorks) {
  const CommandResult run =
      run_vpci(fmt::format("domain check {} --json", data("issue_example.toml")));
  EXPECT_EQ(run.exit_code, 0);
  EXPECT_EQ(nlohmann::json::parse(run.out)["profile"], "xen-current");
  const auto alias = run_json("arm_guest_passthrough_vpci.toml", "xen-proposed", 0);
  EXPECT_EQ(alias["profile"], "cdf-vpci");
  EXPECT_EQ(alias["flags"]["cdf_vpci_bit_provisional"], true);
}

TEST(DomainCli, MalformedFilesAsJson) {
  struct Malformed {
    std::string_view file;
    std::string_view rule;
    std::string_view field;
    int line;
    std::string_view says;
  };
  const std::vector<Malformed> files = {
      {"malformed_unknown_key.toml", "file-format", "vcpi", 3, "did you mean \"vpci\""},
      {"malformed_wrong_type.toml", "file-format", "control_domain", 3, "expected a boolean"},
      {"malformed_arm_pvh.toml", "arch-kind", "kind", 2, "use kind = \"guest\""},
      {"malformed_bad_bdf.toml", "file-format", "passthrough[1]", 3, "0000:03:20.0"},
      {"malformed_syntax.toml", "file-format", "", 2, "not valid TOML"},
      {"malformed_passthrough_without_iommu.toml", "passthrough-needs-iommu", "iommu", 3,
       "set iommu = true"},
  };
  for (const auto& m : files) {
    for (std::string_view profile : {"xen-current", "cdf-vpci"}) {
      SCOPED_TRACE(fmt::format("{} --profile {}", m.file, profile));
      const auto json = run_json(m.file, profile, 1);
      EXPECT_EQ(json["ok"], false);
      EXPECT_EQ(json["profile"], profile);
      ASSERT_EQ(json["diagnostics"].size(), 1u) << json.dump(2);
      const auto& d = json["diagnostics"][0];
      EXPECT_EQ(d["rule"], m.rule);
      EXPECT_EQ(d["field"], m.field);
      EXPECT_EQ(d["severity"], "error");
      EXPECT_EQ(d["line"], m.line);
      EXPECT_THAT(d["message"].get<std::string>(), HasSubstr(std::string(m.says)));
      EXPECT_FALSE(json.contains("flags"));
    }
  }
}

TEST(DomainCli, HumanReportAccepted) {
  const CommandResult run =
      run_vpci(fmt::format("domain check {}", data("x86_pvh_dom0_derived.toml")));
  EXPECT_EQ(run.exit_code, 0);
  EXPECT_THAT(run.out, HasSubstr("accepted by profile xen-current"));
  EXPECT_THAT(run.out, HasSubstr("vPCI: yes"));
  EXPECT_THAT(run.out, HasSubstr("0x00000023 (hvm|hap|iommu)"));
  EXPECT_THAT(run.out, HasSubstr("0x00000411 (lapic|ioapic|vpci), derived"));
  EXPECT_TRUE(run.err.empty());
}

TEST(DomainCli, HumanReportRejectedNamesRuleFieldLineAndErrno) {
  const CommandResult run =
      run_vpci(fmt::format("domain check {}", data("x86_pvh_domu_vpci.toml")));
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_THAT(run.out, HasSubstr("x86_pvh_domu_vpci.toml:4:1: error [x86-emulation-vpci] vpci: "));
  EXPECT_THAT(run.out, HasSubstr("(Xen: EOPNOTSUPP)"));
  EXPECT_THAT(run.out, HasSubstr("rejected by profile xen-current"));
  EXPECT_THAT(run.out, Not(HasSubstr("accepted")));
}

TEST(DomainCli, HumanReportWarningStillAccepts) {
  const CommandResult run =
      run_vpci(fmt::format("domain check {}", data("arm_guest_passthrough.toml")));
  EXPECT_EQ(run.exit_code, 0);
  EXPECT_THAT(run.out, HasSubstr("warning [arm-pci-no-trapped-config-space] passthrough:"));
  EXPECT_THAT(run.out, HasSubstr("accepted by profile xen-current"));
}

TEST(DomainCli, MalformedFileOnStderr) {
  const CommandResult run =
      run_vpci(fmt::format("domain check {}", data("malformed_unknown_key.toml")));
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_TRUE(run.out.empty());
  EXPECT_THAT(run.err, HasSubstr("vpci domain check: "));
  EXPECT_THAT(run.err, HasSubstr("malformed_unknown_key.toml:3:1: key vcpi: unknown key"));
}

TEST(DomainCli, MissingFileIsRejectedInput) {
  const CommandResult run = run_vpci("domain check /nonexistent/domain.toml");
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_THAT(run.err, HasSubstr("/nonexistent/domain.toml: cannot open"));
}

TEST(DomainCli, UsageErrorsExitTwo) {
  EXPECT_EQ(run_vpci(fmt::format("domain check {} --profile xen-future", data("arm_guest.toml")))
                .exit_code,
            2);
  EXPECT_EQ(run_vpci("domain check").exit_code, 2);
  EXPECT_EQ(run_vpci("domain").exit_code, 2);
}

}  // namespace
