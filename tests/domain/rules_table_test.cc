// Every arch × kind × control_domain × vpci × emulation flags × iommu × passthrough
// combination, for both profiles, against an expectation written from
// ../shared/reference/xen-domain.md alone.
//
// The oracle below deliberately does not use the library's constants or helpers: the
// flag numbers are copied from reference §1, and the x86 rules are written as the sets
// of flag words each row of reference §2/§6 accepts (the library computes masks), so a
// mistake in one is unlikely to be repeated in the other.
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "domain/config_file.h"
#include "domain/rules.h"
#include "domain/xen_abi.h"

namespace vpci::domain {
namespace {

// Reference §1, x86 emulation_flags bit numbers: LAPIC 0, IOAPIC 4, PIT 8, USE_PIRQ 9,
// VPCI 10; XEN_X86_EMU_ALL = bits 0-10.
constexpr std::uint32_t kLapic = 0x001;
constexpr std::uint32_t kIoapic = 0x010;
constexpr std::uint32_t kPit = 0x100;
constexpr std::uint32_t kUsePirq = 0x200;
constexpr std::uint32_t kVpci = 0x400;
constexpr std::uint32_t kAll = 0x7ff;
// HVM domU required set, reference §2: ALL & ~(VPCI | USE_PIRQ).
constexpr std::uint32_t kHvmSet = 0x1ff;
// Reference §1, createdomain flags: hvm bit 0, hap bit 1, iommu bit 5.
constexpr std::uint32_t kCdfHvmHap = 0x003;
constexpr std::uint32_t kCdfIommu = 0x020;

// The reference gives CDF_vpci no bit number (§4: "must not hard-code 8"); the
// library's provisional choice is checked for sanity in rules_test.cc and used here.
const std::uint32_t kCdfVpci = 1u << xen::kProvisionalCdfVpciBit;

struct EmulationVariant {
  std::string_view label;
  std::optional<std::uint32_t> word;  // absent: derived
};

// Absent, the exact required set of every row of both profiles, those sets with and
// without the optional PIT / USE_PIRQ, with VPCI added or removed, and unknown bits.
const std::vector<EmulationVariant> kEmulationVariants = {
    {"absent", std::nullopt},
    {"none", 0x000},
    {"pit", kPit},
    {"use_pirq", kUsePirq},
    {"vpci", kVpci},
    {"lapic", kLapic},
    {"lapic|pit", kLapic | kPit},
    {"lapic|vpci", kLapic | kVpci},
    {"lapic|ioapic", kLapic | kIoapic},
    {"lapic|ioapic|pit", kLapic | kIoapic | kPit},
    {"lapic|ioapic|vpci", kLapic | kIoapic | kVpci},
    {"lapic|ioapic|vpci|pit", kLapic | kIoapic | kVpci | kPit},
    {"hvm-set", kHvmSet},
    {"hvm-set|use_pirq", kHvmSet | kUsePirq},
    {"hvm-set|vpci", kHvmSet | kVpci},
    {"all", kAll},
    {"hvm-set-without-pit", kHvmSet & ~kPit},
    {"lapic|bit11", kLapic | 0x800},
    {"pit|bit31", kPit | 0x80000000},
    {"lapic|ioapic|bit11", kLapic | kIoapic | 0x800},
    {"lapic|ioapic|vpci|bit12", kLapic | kIoapic | kVpci | 0x1000},
    {"hvm-set|use_pirq|bit15", kHvmSet | kUsePirq | 0x8000},
};

struct Case {
  Arch arch;
  Kind kind;
  bool control_domain;
  std::optional<bool> vpci;
  EmulationVariant emulation;
  bool iommu;
  bool passthrough;
};

std::string describe(const Case& c, Profile profile) {
  return fmt::format(
      "profile={} arch={} kind={} control_domain={} vpci={} emulation_flags={} iommu={} "
      "passthrough={}",
      profile_name(profile), arch_name(c.arch), kind_name(c.kind), c.control_domain,
      c.vpci ? (*c.vpci ? "true" : "false") : "absent", c.emulation.label, c.iommu,
      c.passthrough ? "[0000:03:00.0]" : "[]");
}

DomainConfig to_config(const Case& c) {
  DomainConfig config;
  config.arch = c.arch;
  config.kind = c.kind;
  config.control_domain = c.control_domain;
  config.vpci = c.vpci;
  config.emulation_flags = c.emulation.word;
  config.iommu = c.iommu;
  if (c.passthrough) config.passthrough.push_back(pci::DeviceAddress{0, 3, 0, 0});
  return config;
}

struct Expectation {
  bool accepted = false;
  std::string xen_errno;  // "", "EINVAL" or "EOPNOTSUPP"
  bool no_trapped_config_space_warning = false;
  // For accepted configurations:
  std::uint32_t cdf = 0;
  std::optional<std::uint32_t> emulation;
  bool vpci = false;
};

// The oracle: reference §2 (x86), §3 (Arm), §4/§6 (the proposal).
Expectation expect(const Case& c, Profile profile) {
  const bool proposal = profile == Profile::kCdfVpci;
  Expectation e;
  // The configuration must make sense before any Xen rule applies: kinds per arch,
  // emulation flags are an x86 field, passthrough needs the IOMMU.
  const bool kind_ok = c.arch == Arch::kX86 ? c.kind != Kind::kGuest : c.kind == Kind::kGuest;
  if (!kind_ok || (c.arch == Arch::kArm && c.emulation.word) || (c.passthrough && !c.iommu)) {
    return e;  // rejected before Xen sees it
  }
  const std::uint32_t iommu = c.iommu ? kCdfIommu : 0;

  if (c.arch == Arch::kArm) {
    // §3: no domain gets vPCI on current Xen; the proposal makes CDF_vpci optional.
    const bool vpci = c.vpci.value_or(false);
    e.no_trapped_config_space_warning = !c.control_domain && c.passthrough && !(proposal && vpci);
    if (!proposal && vpci) {
      e.xen_errno = "EINVAL";
      return e;
    }
    e.accepted = true;
    e.cdf = kCdfHvmHap | iommu | (vpci ? kCdfVpci : 0);
    e.vpci = vpci;
    return e;
  }

  // §2 table, as the set of words each row accepts ((w & ~optional) == required).
  const bool pv = c.kind == Kind::kPv;
  const bool pvh = c.kind == Kind::kPvh;
  const bool hvm = c.kind == Kind::kHvm;
  std::set<std::uint32_t> accepted_words;
  if (pv) accepted_words = {0x000, kPit};
  if (pvh && c.control_domain)
    accepted_words = {proposal ? kLapic | kIoapic : kLapic | kIoapic | kVpci};
  if (pvh && !c.control_domain) accepted_words = {kLapic};
  if (hvm && !c.control_domain) accepted_words = {kHvmSet, kHvmSet | kUsePirq};
  // hvm && control_domain: no row, nothing accepted.

  // §2 "who sets what": libxl for domUs, setup.c for a PVH dom0; §6 moves VPCI to CDF.
  std::uint32_t default_word = 0;
  if (pvh)
    default_word =
        c.control_domain ? (proposal ? kLapic | kIoapic : kLapic | kIoapic | kVpci) : kLapic;
  if (hvm) default_word = kAll & ~kVpci;

  std::uint32_t word = c.emulation.word.value_or(default_word);
  bool vpci = false;
  bool toolstack_rejects = false;
  if (!proposal) {
    if (c.emulation.word) {
      vpci = (word & kVpci) != 0;  // bit 10 is the only carrier of vPCI today
      toolstack_rejects = c.vpci.has_value() && *c.vpci != vpci;
    } else {
      if (c.vpci) word = *c.vpci ? word | kVpci : word & ~kVpci;
      vpci = (word & kVpci) != 0;
    }
  } else {
    vpci = c.vpci.value_or(pvh && c.control_domain);  // Xen's dom0 builder sets CDF_vpci
  }
  if (pv && c.control_domain) word |= kPit;  // §2: Xen always adds PIT for a PV hwdom

  // Xen's order: common sanitise (proposal: vpci && !hvm -> EINVAL), unknown emulation
  // bits (EINVAL), then the table (EOPNOTSUPP).
  const std::uint32_t all = proposal ? kAll & ~kVpci : kAll;
  if (proposal && vpci && pv) {
    e.xen_errno = "EINVAL";
  } else if ((word & ~all) != 0) {
    e.xen_errno = "EINVAL";
  } else if (accepted_words.count(word) == 0) {
    e.xen_errno = "EOPNOTSUPP";
  } else if (proposal && vpci != (pvh && c.control_domain)) {
    e.xen_errno = "EOPNOTSUPP";  // §6: CDF_vpci exactly for the PVH hardware domain
  }
  e.accepted = e.xen_errno.empty() && !toolstack_rejects;
  if (!e.accepted) return e;
  e.cdf = (pv ? 0 : kCdfHvmHap) | iommu | (proposal && vpci ? kCdfVpci : 0);
  e.emulation = word;
  e.vpci = vpci;
  return e;
}

std::vector<Case> all_cases() {
  std::vector<Case> cases;
  const std::vector<std::pair<Arch, Kind>> arch_kinds = {
      {Arch::kX86, Kind::kPv},    {Arch::kX86, Kind::kPvh},  {Arch::kX86, Kind::kHvm},
      {Arch::kX86, Kind::kGuest}, {Arch::kArm, Kind::kPv},   {Arch::kArm, Kind::kPvh},
      {Arch::kArm, Kind::kHvm},   {Arch::kArm, Kind::kGuest}};
  const std::vector<std::optional<bool>> vpcis = {std::nullopt, false, true};
  for (const auto& [arch, kind] : arch_kinds) {
    for (bool control : {false, true}) {
      for (const auto& vpci : vpcis) {
        for (const auto& emulation : kEmulationVariants) {
          for (bool iommu : {false, true}) {
            for (bool passthrough : {false, true}) {
              cases.push_back(Case{arch, kind, control, vpci, emulation, iommu, passthrough});
            }
          }
        }
      }
    }
  }
  return cases;
}

bool has_rule(const CheckReport& report, std::string_view rule) {
  for (const auto& d : report.diagnostics) {
    if (d.rule == rule) return true;
  }
  return false;
}

void expect_report_matches(const Case& c, const CheckReport& report, const Expectation& want,
                           const std::string& where) {
  SCOPED_TRACE(where);
  ASSERT_EQ(report.accepted(), want.accepted);
  EXPECT_EQ(std::string(xen_errno_name(report.xen_errno())), want.xen_errno);
  EXPECT_EQ(has_rule(report, rule::kArmPciNoTrappedConfigSpace),
            want.no_trapped_config_space_warning);
  for (const auto& d : report.diagnostics) {
    EXPECT_FALSE(d.rule.empty());
    EXPECT_FALSE(d.field.empty());
    EXPECT_FALSE(d.message.empty());
  }
  if (!want.accepted) {
    EXPECT_FALSE(report.flags.has_value());
    return;
  }
  ASSERT_TRUE(report.flags.has_value());
  EXPECT_EQ(report.flags->cdf, want.cdf)
      << fmt::format("{:#x} vs {:#x}", report.flags->cdf, want.cdf);
  EXPECT_EQ(report.flags->x86_emulation, want.emulation);
  EXPECT_EQ(report.flags->vpci, want.vpci);
  EXPECT_EQ(report.flags->emulation_derived, c.arch == Arch::kX86 && !c.emulation.word);
}

void run_table(Profile profile) {
  int accepted = 0;
  int rejected = 0;
  int via_file = 0;
  for (const Case& c : all_cases()) {
    const Expectation want = expect(c, profile);
    const DomainConfig config = to_config(c);
    const std::string where = describe(c, profile);
    expect_report_matches(c, check_domain_config(config, profile), want, where);
    (want.accepted ? accepted : rejected) += 1;

    // Every configuration a file can express goes through the TOML format too, and must
    // read back to the same settings and the same verdict.
    if (check_consistency(config).empty()) {
      const std::string text = format_domain_config(config);
      auto parsed = parse_domain_config(text, "table.toml");
      ASSERT_TRUE(parsed.has_value()) << where << "\n" << text << to_error(parsed.error()).message;
      EXPECT_TRUE(parsed->same_settings(config)) << where << "\n" << text;
      expect_report_matches(c, check_domain_config(*parsed, profile), want, where + " (via TOML)");
      ++via_file;
    }
  }
  // The table must exercise both verdicts in bulk, or it proves little.
  EXPECT_GT(accepted, 50);
  EXPECT_GT(rejected, 1000);
  std::printf("[ %s ] %d combinations: %d accepted, %d rejected, %d also through TOML\n",
              std::string(profile_name(profile)).c_str(), accepted + rejected, accepted, rejected,
              via_file);
}

TEST(DomainRulesTable, XenCurrentEveryCombination) {
  run_table(Profile::kXenCurrent);
}

TEST(DomainRulesTable, CdfVpciEveryCombination) {
  run_table(Profile::kCdfVpci);
}

// A few rows of the oracle written out by hand, so the oracle itself is checked
// against the reference text rather than only against the library.
TEST(DomainRulesTable, OracleAgreesWithReferenceRows) {
  const EmulationVariant absent{"absent", std::nullopt};
  // §2 consequence: vPCI on x86 only for a PVH hardware domain, where it is mandatory.
  auto pvh_dom0 = expect(Case{Arch::kX86, Kind::kPvh, true, std::nullopt, absent, true, false},
                         Profile::kXenCurrent);
  EXPECT_TRUE(pvh_dom0.accepted);
  EXPECT_EQ(pvh_dom0.emulation, 0x411u);
  EXPECT_EQ(pvh_dom0.cdf, 0x23u);
  auto pvh_dom0_no_vpci =
      expect(Case{Arch::kX86, Kind::kPvh, true, false, absent, true, false}, Profile::kXenCurrent);
  EXPECT_FALSE(pvh_dom0_no_vpci.accepted);
  EXPECT_EQ(pvh_dom0_no_vpci.xen_errno, "EOPNOTSUPP");
  auto hvm_vpci =
      expect(Case{Arch::kX86, Kind::kHvm, false, true, absent, false, false}, Profile::kXenCurrent);
  EXPECT_EQ(hvm_vpci.xen_errno, "EOPNOTSUPP");
  // §2: unknown bits are EINVAL.
  auto unknown = expect(
      Case{Arch::kX86, Kind::kPvh, false, std::nullopt, {"lapic|bit11", 0x801}, false, false},
      Profile::kXenCurrent);
  EXPECT_EQ(unknown.xen_errno, "EINVAL");
  // §6: PV with CDF_vpci is EINVAL in the proposal; PVH dom0 has CDF_vpci + LAPIC|IOAPIC.
  auto pv_vpci =
      expect(Case{Arch::kX86, Kind::kPv, true, true, absent, false, false}, Profile::kCdfVpci);
  EXPECT_EQ(pv_vpci.xen_errno, "EINVAL");
  auto proposal_dom0 = expect(
      Case{Arch::kX86, Kind::kPvh, true, std::nullopt, absent, false, false}, Profile::kCdfVpci);
  EXPECT_TRUE(proposal_dom0.accepted);
  EXPECT_EQ(proposal_dom0.emulation, 0x011u);
  // §3/§6: Arm vPCI impossible today, optional in the proposal.
  auto arm_vpci =
      expect(Case{Arch::kArm, Kind::kGuest, false, true, absent, true, true}, Profile::kXenCurrent);
  EXPECT_EQ(arm_vpci.xen_errno, "EINVAL");
  EXPECT_TRUE(arm_vpci.no_trapped_config_space_warning);
  auto arm_vpci_proposal =
      expect(Case{Arch::kArm, Kind::kGuest, false, true, absent, true, true}, Profile::kCdfVpci);
  EXPECT_TRUE(arm_vpci_proposal.accepted);
  EXPECT_FALSE(arm_vpci_proposal.no_trapped_config_space_warning);
}

}  // namespace
}  // namespace vpci::domain
