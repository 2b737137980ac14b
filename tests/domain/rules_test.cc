// Individual rules: which rule fires, on which field, with which Xen error code, and
// whether the message says what would be accepted instead. Expected values come from
// ../shared/reference/xen-domain.md and docs/domain-check.md.
#include "domain/rules.h"

#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "domain/xen_abi.h"

namespace vpci::domain {
namespace {

using ::testing::HasSubstr;

DomainConfig x86(Kind kind, bool control_domain) {
  DomainConfig config;
  config.arch = Arch::kX86;
  config.kind = kind;
  config.control_domain = control_domain;
  return config;
}

DomainConfig arm_guest(bool control_domain) {
  DomainConfig config;
  config.arch = Arch::kArm;
  config.kind = Kind::kGuest;
  config.control_domain = control_domain;
  return config;
}

std::vector<std::string> error_rules(const CheckReport& report) {
  std::vector<std::string> rules;
  for (const auto& d : report.diagnostics) {
    if (d.severity == Severity::kError) rules.push_back(d.rule);
  }
  return rules;
}

// A copy, so that it may be taken from a temporary report.
Diagnostic only_error(const CheckReport& report) {
  const Diagnostic* found = nullptr;
  int errors = 0;
  for (const auto& d : report.diagnostics) {
    if (d.severity == Severity::kError) {
      found = &d;
      ++errors;
    }
  }
  EXPECT_EQ(errors, 1);
  return found != nullptr ? *found : Diagnostic{};
}

TEST(DomainProfiles, NamesAndAlias) {
  EXPECT_EQ(profile_from_name("xen-current"), Profile::kXenCurrent);
  EXPECT_EQ(profile_from_name("cdf-vpci"), Profile::kCdfVpci);
  EXPECT_EQ(profile_from_name("xen-proposed"), Profile::kCdfVpci);
  EXPECT_EQ(profile_from_name("xen"), std::nullopt);
  EXPECT_EQ(profile_name(Profile::kCdfVpci), "cdf-vpci");
}

// Reference §4: bit 8 is trap_unmapped_accesses now, so CDF_vpci must not be 8 and
// must not collide with any flag current Xen defines.
TEST(DomainAbi, ProvisionalCdfVpciBitIsFree) {
  EXPECT_NE(xen::kProvisionalCdfVpciBit, 8u);
  EXPECT_EQ(xen::kProvisionalCdfVpci & xen::kCdfAllCurrent, 0u);
  EXPECT_EQ(xen::kCdfTrapUnmappedAccesses, 1u << 8);
  EXPECT_EQ(xen::kEmuVpci, 1u << 10);
  EXPECT_EQ(xen::kEmuAllCurrent, 0x7ffu);
}

TEST(DomainAbi, FlagNames) {
  EXPECT_EQ(xen::format_emulation_flags(0x411), "lapic|ioapic|vpci");
  EXPECT_EQ(xen::format_emulation_flags(0x801), "lapic|bit11");
  EXPECT_EQ(xen::format_emulation_flags(0), "none");
  EXPECT_EQ(xen::format_cdf_flags(0x23), "hvm|hap|iommu");
  EXPECT_EQ(xen::emulation_flag_from_name("use_pirq"), 1u << 9);
  EXPECT_EQ(xen::emulation_flag_from_name("LAPIC"), std::nullopt);
}

// Reference §2 "who sets what".
TEST(DomainDefaults, EmulationFlagsAsLibxlAndXenSetThem) {
  const auto current = Profile::kXenCurrent;
  EXPECT_EQ(default_x86_emulation_flags(Kind::kPv, false, current), 0u);
  EXPECT_EQ(default_x86_emulation_flags(Kind::kPvh, true, current), 0x411u);
  EXPECT_EQ(default_x86_emulation_flags(Kind::kPvh, false, current), 0x001u);
  EXPECT_EQ(default_x86_emulation_flags(Kind::kHvm, false, current), 0x3ffu);
  EXPECT_EQ(default_x86_emulation_flags(Kind::kHvm, true, current), std::nullopt);
  EXPECT_EQ(default_x86_emulation_flags(Kind::kPvh, true, Profile::kCdfVpci), 0x011u);
  EXPECT_TRUE(default_vpci(Arch::kX86, Kind::kPvh, true));
  EXPECT_FALSE(default_vpci(Arch::kX86, Kind::kPvh, false));
  EXPECT_FALSE(default_vpci(Arch::kArm, Kind::kGuest, true));
}

TEST(DomainRules, PvControlDomainGetsPitFromXen) {
  const auto report = check_domain_config(x86(Kind::kPv, true), Profile::kXenCurrent);
  ASSERT_TRUE(report.accepted());
  EXPECT_EQ(report.flags->x86_emulation, xen::kEmuPit);
  EXPECT_EQ(report.flags->cdf, 0u);
  EXPECT_FALSE(report.flags->vpci);
}

TEST(DomainRules, PvhControlDomainMustHaveVpci) {
  auto config = x86(Kind::kPvh, true);
  config.vpci = false;
  const auto report = check_domain_config(config, Profile::kXenCurrent);
  const Diagnostic d = only_error(report);
  EXPECT_EQ(d.rule, rule::kX86EmulationVpci);
  EXPECT_EQ(d.field, "vpci");
  EXPECT_EQ(d.xen_errno, XenErrno::kEopnotsupp);
  EXPECT_THAT(d.message, HasSubstr("must have vPCI"));
  EXPECT_THAT(d.message, HasSubstr("lapic|ioapic|vpci"));

  config.vpci.reset();
  config.emulation_flags = xen::kEmuLapic | xen::kEmuIoapic;
  const Diagnostic explicit_flags = only_error(check_domain_config(config, Profile::kXenCurrent));
  EXPECT_EQ(explicit_flags.rule, rule::kX86EmulationVpci);
  EXPECT_EQ(explicit_flags.field, "emulation_flags");
  EXPECT_THAT(explicit_flags.message, HasSubstr("add \"vpci\" to emulation_flags"));
}

TEST(DomainRules, VpciForbiddenForX86DomUs) {
  for (Kind kind : {Kind::kPv, Kind::kPvh, Kind::kHvm}) {
    auto config = x86(kind, false);
    config.vpci = true;
    const Diagnostic d = only_error(check_domain_config(config, Profile::kXenCurrent));
    EXPECT_EQ(d.rule, rule::kX86EmulationVpci) << kind_name(kind);
    EXPECT_EQ(d.xen_errno, XenErrno::kEopnotsupp);
    EXPECT_THAT(d.message, HasSubstr("only for a PVH control domain"));
    EXPECT_THAT(d.message, HasSubstr("set vpci = false"));
  }
}

TEST(DomainRules, TableMismatchNamesMissingAndExtraFlags) {
  auto config = x86(Kind::kHvm, false);
  config.emulation_flags =
      (0x1ffu & ~xen::kEmuPit) | xen::kEmuVga;  // VGA is already in; PIT missing
  const Diagnostic d = only_error(check_domain_config(config, Profile::kXenCurrent));
  EXPECT_EQ(d.rule, rule::kX86EmulationTable);
  EXPECT_EQ(d.field, "emulation_flags");
  EXPECT_EQ(d.xen_errno, XenErrno::kEopnotsupp);
  EXPECT_THAT(d.message, HasSubstr("missing pit"));
  EXPECT_THAT(d.message, HasSubstr("optionally with use_pirq"));

  auto pv = x86(Kind::kPv, false);
  pv.emulation_flags = xen::kEmuLapic | xen::kEmuPit;
  const Diagnostic extra = only_error(check_domain_config(pv, Profile::kXenCurrent));
  EXPECT_EQ(extra.rule, rule::kX86EmulationTable);
  EXPECT_THAT(extra.message, HasSubstr("not allowed lapic"));
}

TEST(DomainRules, UnknownEmulationBitsAreEinval) {
  auto config = x86(Kind::kPvh, false);
  config.emulation_flags = xen::kEmuLapic | (1u << 11);
  const auto report = check_domain_config(config, Profile::kXenCurrent);
  const Diagnostic d = only_error(report);
  EXPECT_EQ(d.rule, rule::kX86EmulationKnownBits);
  EXPECT_EQ(d.xen_errno, XenErrno::kEinval);
  EXPECT_THAT(d.message, HasSubstr("bit11"));
  EXPECT_EQ(report.xen_errno(), XenErrno::kEinval);
}

TEST(DomainRules, HvmControlDomainDoesNotExist) {
  for (Profile profile : {Profile::kXenCurrent, Profile::kCdfVpci}) {
    const auto report = check_domain_config(x86(Kind::kHvm, true), profile);
    EXPECT_EQ(error_rules(report),
              std::vector<std::string>{std::string(rule::kX86HvmControlDomain)});
    EXPECT_EQ(report.xen_errno(), XenErrno::kEopnotsupp);
  }
}

TEST(DomainRules, VpciKeyMustAgreeWithEmulationFlagToday) {
  auto config = x86(Kind::kPvh, false);
  config.vpci = true;
  config.emulation_flags = xen::kEmuLapic;  // Xen alone would accept this word
  const auto report = check_domain_config(config, Profile::kXenCurrent);
  EXPECT_EQ(error_rules(report),
            std::vector<std::string>{std::string(rule::kX86VpciIsEmulationFlag)});
  EXPECT_EQ(report.xen_errno(), XenErrno::kNone);
  EXPECT_THAT(report.diagnostics[0].message, HasSubstr("bit 10"));
  // The proposal carries vPCI in the CDF word, so the same file is about CDF_vpci there.
  const auto proposal = check_domain_config(config, Profile::kCdfVpci);
  EXPECT_EQ(error_rules(proposal), std::vector<std::string>{std::string(rule::kX86CdfVpci)});
}

TEST(DomainRules, ToolstackErrorsComeBeforeXenErrors) {
  auto config = x86(Kind::kPvh, true);
  config.vpci = true;
  config.emulation_flags = xen::kEmuLapic | xen::kEmuIoapic;
  const auto report = check_domain_config(config, Profile::kXenCurrent);
  EXPECT_EQ(error_rules(report),
            (std::vector<std::string>{std::string(rule::kX86VpciIsEmulationFlag),
                                      std::string(rule::kX86EmulationVpci)}));
  EXPECT_EQ(report.xen_errno(), XenErrno::kEopnotsupp);
}

TEST(DomainRules, ProposalPvWithVpciIsEinvalOnly) {
  auto config = x86(Kind::kPv, true);
  config.vpci = true;
  const auto report = check_domain_config(config, Profile::kCdfVpci);
  const Diagnostic d = only_error(report);
  EXPECT_EQ(d.rule, rule::kCdfVpciNeedsHvm);
  EXPECT_EQ(d.xen_errno, XenErrno::kEinval);
  EXPECT_THAT(d.message, HasSubstr("kind = \"pvh\""));
}

TEST(DomainRules, ProposalPvhDomUWithVpciIsEopnotsupp) {
  auto config = x86(Kind::kPvh, false);
  config.vpci = true;
  const Diagnostic d = only_error(check_domain_config(config, Profile::kCdfVpci));
  EXPECT_EQ(d.rule, rule::kX86CdfVpci);
  EXPECT_EQ(d.xen_errno, XenErrno::kEopnotsupp);
}

TEST(DomainRules, ProposalReservesEmulationBit10) {
  auto config = x86(Kind::kPvh, true);
  config.emulation_flags = xen::kEmuLapic | xen::kEmuIoapic | xen::kEmuVpci;
  const auto report = check_domain_config(config, Profile::kCdfVpci);
  const Diagnostic d = only_error(report);
  EXPECT_EQ(d.rule, rule::kX86EmulationKnownBits);
  EXPECT_EQ(d.xen_errno, XenErrno::kEinval);
  EXPECT_THAT(d.message, HasSubstr("reserved"));
  // The same file is exactly what Xen accepts today.
  EXPECT_TRUE(check_domain_config(config, Profile::kXenCurrent).accepted());
}

TEST(DomainRules, ProposalPvhControlDomainFlags) {
  const auto report = check_domain_config(x86(Kind::kPvh, true), Profile::kCdfVpci);
  ASSERT_TRUE(report.accepted());
  EXPECT_EQ(report.flags->x86_emulation, xen::kEmuLapic | xen::kEmuIoapic);
  EXPECT_EQ(report.flags->cdf, xen::kCdfHvm | xen::kCdfHap | xen::kProvisionalCdfVpci);
  EXPECT_TRUE(report.flags->vpci);
  ASSERT_EQ(report.diagnostics.size(), 1u);
  EXPECT_EQ(report.diagnostics[0].rule, rule::kCdfVpciProvisionalBit);
  EXPECT_EQ(report.diagnostics[0].severity, Severity::kNote);
}

TEST(DomainRules, ArmHasNoVpciToday) {
  auto config = arm_guest(false);
  config.vpci = true;
  const Diagnostic d = only_error(check_domain_config(config, Profile::kXenCurrent));
  EXPECT_EQ(d.rule, rule::kArmNoVpci);
  EXPECT_EQ(d.field, "vpci");
  EXPECT_EQ(d.xen_errno, XenErrno::kEinval);
  EXPECT_THAT(d.message, HasSubstr("cdf-vpci"));
}

TEST(DomainRules, ArmDomUPciWithoutVpciWarns) {
  auto config = arm_guest(false);
  config.iommu = true;
  config.passthrough.push_back(pci::DeviceAddress{0, 3, 0, 0});
  EXPECT_TRUE(arm_guest_gets_virtual_host_bridge(config));
  for (Profile profile : {Profile::kXenCurrent, Profile::kCdfVpci}) {
    const auto report = check_domain_config(config, profile);
    ASSERT_TRUE(report.accepted());
    ASSERT_EQ(report.diagnostics.size(), 1u);
    EXPECT_EQ(report.diagnostics[0].rule, rule::kArmPciNoTrappedConfigSpace);
    EXPECT_EQ(report.diagnostics[0].severity, Severity::kWarning);
    EXPECT_EQ(report.diagnostics[0].field, "passthrough");
    EXPECT_THAT(report.diagnostics[0].message, HasSubstr("pcie@10000000"));
    EXPECT_EQ(report.flags->cdf, xen::kCdfHvm | xen::kCdfHap | xen::kCdfIommu);
    EXPECT_EQ(report.flags->x86_emulation, std::nullopt);
  }
  // The control domain sees the host bridge itself: no virtual bridge, no warning.
  config.control_domain = true;
  EXPECT_FALSE(arm_guest_gets_virtual_host_bridge(config));
  EXPECT_TRUE(check_domain_config(config, Profile::kXenCurrent).diagnostics.empty());
}

TEST(DomainRules, ProposalArmGuestWithVpci) {
  auto config = arm_guest(false);
  config.vpci = true;
  config.iommu = true;
  config.passthrough.push_back(pci::DeviceAddress{0, 3, 0, 0});
  const auto report = check_domain_config(config, Profile::kCdfVpci);
  ASSERT_TRUE(report.accepted());
  EXPECT_EQ(report.flags->cdf,
            xen::kCdfHvm | xen::kCdfHap | xen::kCdfIommu | xen::kProvisionalCdfVpci);
  std::vector<std::string> rules;
  for (const auto& d : report.diagnostics) {
    EXPECT_EQ(d.severity, Severity::kNote);
    rules.push_back(d.rule);
  }
  EXPECT_EQ(rules, (std::vector<std::string>{std::string(rule::kArmVpciBuildConfig),
                                             std::string(rule::kCdfVpciProvisionalBit)}));
}

TEST(DomainConsistency, EachRule) {
  auto arm_pvh = arm_guest(false);
  arm_pvh.kind = Kind::kPvh;
  EXPECT_EQ(error_rules(check_domain_config(arm_pvh, Profile::kXenCurrent)),
            std::vector<std::string>{std::string(rule::kArchKind)});

  auto x86_guest = x86(Kind::kGuest, false);
  EXPECT_EQ(error_rules(check_domain_config(x86_guest, Profile::kCdfVpci)),
            std::vector<std::string>{std::string(rule::kArchKind)});

  auto arm_flags = arm_guest(false);
  arm_flags.emulation_flags = 0;
  EXPECT_EQ(error_rules(check_domain_config(arm_flags, Profile::kXenCurrent)),
            std::vector<std::string>{std::string(rule::kEmulationFlagsX86Only)});

  auto no_iommu = x86(Kind::kHvm, false);
  no_iommu.passthrough.push_back(pci::DeviceAddress{0, 3, 0, 0});
  const auto report = check_domain_config(no_iommu, Profile::kXenCurrent);
  EXPECT_EQ(error_rules(report),
            std::vector<std::string>{std::string(rule::kPassthroughNeedsIommu)});
  EXPECT_EQ(report.diagnostics[0].field, "iommu");

  auto twice = x86(Kind::kHvm, false);
  twice.iommu = true;
  twice.passthrough = {pci::DeviceAddress{0, 3, 0, 0}, pci::DeviceAddress{0, 3, 0, 1},
                       pci::DeviceAddress{0, 3, 0, 0}};
  const auto dup = check_domain_config(twice, Profile::kXenCurrent);
  EXPECT_EQ(error_rules(dup), std::vector<std::string>{std::string(rule::kPassthroughUnique)});
  EXPECT_THAT(dup.diagnostics[0].message, HasSubstr("0000:03:00.0"));

  auto segment = x86(Kind::kHvm, false);
  segment.iommu = true;
  segment.passthrough = {pci::DeviceAddress{0x10000, 0, 1, 0}};
  EXPECT_EQ(error_rules(check_domain_config(segment, Profile::kXenCurrent)),
            std::vector<std::string>{std::string(rule::kPassthroughSegment)});
}

}  // namespace
}  // namespace vpci::domain
