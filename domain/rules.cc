#include "domain/rules.h"

#include <algorithm>
#include <bit>
#include <utility>

#include <fmt/format.h>

#include "domain/xen_abi.h"

namespace vpci::domain {
namespace {

using xen::format_emulation_flags;

// A row of x86 emulation_flags_ok() (xen/arch/x86/domain.c; reference §2 and §6): the
// domain passes iff (emflags & ~optional) == required. In the cdf-vpci proposal the
// function also takes the CDF word; `requires_cdf_vpci` is that column.
struct EmulationRow {
  std::uint32_t required;
  std::uint32_t optional;
  bool requires_cdf_vpci;
};

std::optional<EmulationRow> x86_emulation_row(Kind kind, bool control_domain, Profile profile) {
  const bool proposal = profile == Profile::kCdfVpci;
  switch (kind) {
    case Kind::kPv:  // dom0 or domU alike
      return EmulationRow{0, xen::kEmuPit, false};
    case Kind::kPvh:
      if (control_domain) {
        return proposal ? EmulationRow{xen::kEmuLapic | xen::kEmuIoapic, 0, true}
                        : EmulationRow{xen::kEmuLapic | xen::kEmuIoapic | xen::kEmuVpci, 0, false};
      }
      return EmulationRow{xen::kEmuLapic, 0, false};
    case Kind::kHvm:
      if (control_domain) return std::nullopt;  // Xen has no HVM hardware domain row
      return EmulationRow{xen::kEmuAllCurrent & ~(xen::kEmuVpci | xen::kEmuUsePirq),
                          xen::kEmuUsePirq, false};
    case Kind::kGuest: break;
  }
  return std::nullopt;
}

// XEN_X86_EMU_ALL of the profile: the proposal drops VPCI and reserves bit 10.
std::uint32_t x86_known_emulation_flags(Profile profile) {
  return profile == Profile::kCdfVpci ? xen::kEmuAllCurrent & ~xen::kEmuVpci : xen::kEmuAllCurrent;
}

std::string describe_domain(const DomainConfig& config) {
  if (config.arch == Arch::kArm) {
    return config.control_domain ? "Arm control domain" : "Arm domU";
  }
  std::string kind;
  switch (config.kind) {
    case Kind::kPv: kind = "PV"; break;
    case Kind::kPvh: kind = "PVH"; break;
    case Kind::kHvm: kind = "HVM"; break;
    case Kind::kGuest: kind = "guest"; break;
  }
  return fmt::format("x86 {} {}", kind, config.control_domain ? "control domain" : "domU");
}

std::string plural(std::size_t count, std::string_view singular) {
  return fmt::format("{} {}{}", count, singular, count == 1 ? "" : "s");
}

Diagnostic error(std::string_view rule, std::string_view field, XenErrno code,
                 std::string message) {
  return Diagnostic{std::string(rule), std::string(field), Severity::kError, code,
                    std::move(message)};
}

Diagnostic advice(Severity severity, std::string_view rule, std::string_view field,
                  std::string message) {
  return Diagnostic{std::string(rule), std::string(field), severity, XenErrno::kNone,
                    std::move(message)};
}

bool has_error(const std::vector<Diagnostic>& diagnostics) {
  return std::any_of(diagnostics.begin(), diagnostics.end(),
                     [](const Diagnostic& d) { return d.severity == Severity::kError; });
}

// Result of applying a profile: the flag words plus the diagnostics, split so that
// errors can be emitted in Xen's evaluation order and advice after them.
struct Evaluation {
  DomainFlags flags;
  std::vector<Diagnostic> errors;
  std::vector<Diagnostic> advice;
};

// x86. Order of evaluation in Xen: the toolstack builds the words; common
// sanitise_domain_config() checks CDF flags; arch_domain_create() adds PIT for a PV
// hardware domain, rejects unknown emulation bits (EINVAL), then calls
// emulation_flags_ok() (EOPNOTSUPP).
Evaluation evaluate_x86(const DomainConfig& config, Profile profile) {
  Evaluation out;
  const bool proposal = profile == Profile::kCdfVpci;
  const auto row = x86_emulation_row(config.kind, config.control_domain, profile);
  const bool explicit_flags = config.emulation_flags.has_value();
  std::uint32_t emulation =
      explicit_flags
          ? *config.emulation_flags
          : default_x86_emulation_flags(config.kind, config.control_domain, profile).value_or(0);

  // Which field carries the vPCI request depends on the profile.
  bool vpci = false;
  if (proposal) {
    // XEN_DOMCTL_CDF_vpci: the `vpci` key, or Xen's default for the domain kind.
    vpci = config.vpci.value_or(default_vpci(config.arch, config.kind, config.control_domain));
  } else if (explicit_flags) {
    // XEN_X86_EMU_VPCI is the only carrier, so the emulation word decides.
    vpci = (emulation & xen::kEmuVpci) != 0;
    if (config.vpci.has_value() && *config.vpci != vpci) {
      out.errors.push_back(error(
          rule::kX86VpciIsEmulationFlag, "vpci", XenErrno::kNone,
          fmt::format("vpci = {} but emulation_flags {} \"vpci\": on current Xen the only way to "
                      "ask for vPCI on x86 is emulation flag bit 10 (XEN_X86_EMU_VPCI), so the "
                      "file contradicts itself; make the two agree, or leave one of them out",
                      *config.vpci, vpci ? "contain" : "lack")));
    }
  } else {
    // Derived word: the `vpci` key, if given, sets or clears bit 10 of the default.
    if (config.vpci.has_value()) {
      emulation = *config.vpci ? emulation | xen::kEmuVpci : emulation & ~xen::kEmuVpci;
    }
    vpci = (emulation & xen::kEmuVpci) != 0;
  }
  // arch_domain_create(): "if ( is_hardware_domain(d) && is_pv_domain(d) ) emflags |=
  // XEN_X86_EMU_PIT" before any check.
  if (config.kind == Kind::kPv && config.control_domain) emulation |= xen::kEmuPit;

  out.flags.x86_emulation = emulation;
  out.flags.emulation_derived = !explicit_flags;
  out.flags.vpci = vpci;
  // libxl sets CDF_hvm for PVH and HVM, and CDF_hap by default (HAP-capable hardware
  // assumed); Xen's dom0 builder does the same for a PVH dom0.
  out.flags.cdf = config.kind == Kind::kPv ? 0 : xen::kCdfHvm | xen::kCdfHap;
  if (config.iommu) out.flags.cdf |= xen::kCdfIommu;
  if (proposal && vpci) out.flags.cdf |= xen::kProvisionalCdfVpci;

  // Common sanitise_domain_config() in the proposal: "vpci && !hvm" -> EINVAL.
  if (proposal && vpci && config.kind == Kind::kPv) {
    out.errors.push_back(error(
        rule::kCdfVpciNeedsHvm, "vpci", XenErrno::kEinval,
        fmt::format("XEN_DOMCTL_CDF_vpci needs XEN_DOMCTL_CDF_hvm: the proposal's "
                    "sanitise_domain_config() rejects vPCI for a PV domain (EINVAL); set vpci = "
                    "false{}",
                    config.control_domain
                        ? ", or use kind = \"pvh\", whose control domain gets vPCI"
                        : "")));
  }

  // arch_domain_create(): bits outside XEN_X86_EMU_ALL -> EINVAL.
  const std::uint32_t known_mask = x86_known_emulation_flags(profile);
  if (const std::uint32_t unknown = emulation & ~known_mask; unknown != 0) {
    std::string message;
    if (proposal && (unknown & xen::kEmuVpci) != 0) {
      message =
          "emulation flag bit 10 (\"vpci\") is reserved under the cdf-vpci proposal, which "
          "drops XEN_X86_EMU_VPCI: vPCI is requested with XEN_DOMCTL_CDF_vpci (vpci = true) "
          "instead; remove \"vpci\" from emulation_flags";
      if ((unknown & ~xen::kEmuVpci) != 0) {
        message += fmt::format("; {} are not emulation flags either",
                               format_emulation_flags(unknown & ~xen::kEmuVpci));
      }
    } else {
      message = fmt::format(
          "{} {} outside XEN_X86_EMU_ALL ({:#x}); arch_domain_create() rejects the domain with "
          "EINVAL; the flags that exist are {}",
          format_emulation_flags(unknown), std::popcount(unknown) == 1 ? "is" : "are", known_mask,
          format_emulation_flags(known_mask));
    }
    out.errors.push_back(
        error(rule::kX86EmulationKnownBits, "emulation_flags", XenErrno::kEinval, message));
  }

  if (!row) {
    out.errors.push_back(
        error(rule::kX86HvmControlDomain, "kind", XenErrno::kEopnotsupp,
              "x86 has no HVM control domain: Xen's emulation_flags_ok() has rows only for PV "
              "domains, the PVH hardware domain, PVH domUs and HVM domUs, so creation fails with "
              "EOPNOTSUPP; use kind = \"pvh\" or \"pv\" for a control domain, or control_domain = "
              "false for an HVM domU"));
    return out;
  }

  // emulation_flags_ok(), split into its vPCI facet and the remaining bits so the
  // diagnostic names the field at fault. Unknown bits were reported above.
  const std::uint32_t known = emulation & known_mask;
  const std::string domain = describe_domain(config);
  if (!proposal && (known & xen::kEmuVpci) != (row->required & xen::kEmuVpci)) {
    const std::string_view field = explicit_flags ? "emulation_flags" : "vpci";
    if ((row->required & xen::kEmuVpci) != 0) {
      out.errors.push_back(error(
          rule::kX86EmulationVpci, field, XenErrno::kEopnotsupp,
          fmt::format("a PVH control domain must have vPCI: Xen's emulation_flags_ok() accepts "
                      "exactly {} for it (EOPNOTSUPP otherwise); {}",
                      format_emulation_flags(row->required),
                      explicit_flags ? "add \"vpci\" to emulation_flags"
                                     : "set vpci = true or leave vpci out")));
    } else {
      out.errors.push_back(error(
          rule::kX86EmulationVpci, field, XenErrno::kEopnotsupp,
          fmt::format("vPCI exists on x86 only for a PVH control domain: Xen's "
                      "emulation_flags_ok() has no row with VPCI for an {}, so creation fails "
                      "with EOPNOTSUPP; {}",
                      domain,
                      explicit_flags ? "remove \"vpci\" from emulation_flags"
                                     : "set vpci = false or leave vpci out")));
    }
  }
  if (proposal && config.kind != Kind::kPv && vpci != row->requires_cdf_vpci) {
    out.errors.push_back(error(
        rule::kX86CdfVpci, "vpci", XenErrno::kEopnotsupp,
        row->requires_cdf_vpci
            ? fmt::format("a PVH control domain must have vPCI: the proposal's "
                          "emulation_flags_ok(d, emflags, cdf) requires XEN_DOMCTL_CDF_vpci "
                          "together with exactly {} (EOPNOTSUPP otherwise); set vpci = true or "
                          "leave vpci out",
                          format_emulation_flags(row->required))
            : fmt::format("the cdf-vpci proposal still gives vPCI on x86 only to a PVH control "
                          "domain: emulation_flags_ok(d, emflags, cdf) refuses "
                          "XEN_DOMCTL_CDF_vpci for an {} (EOPNOTSUPP); set vpci = false or leave "
                          "vpci out",
                          domain)));
  }
  const std::uint32_t got = known & ~xen::kEmuVpci & ~row->optional;
  const std::uint32_t want = row->required & ~xen::kEmuVpci;
  if (got != want) {
    const std::uint32_t missing = want & ~got;
    const std::uint32_t extra = got & ~want;
    std::string what;
    if (missing != 0) what += fmt::format("missing {}", format_emulation_flags(missing));
    if (extra != 0) {
      what +=
          fmt::format("{}not allowed {}", what.empty() ? "" : ", ", format_emulation_flags(extra));
    }
    out.errors.push_back(error(
        rule::kX86EmulationTable, "emulation_flags", XenErrno::kEopnotsupp,
        fmt::format("an {} needs emulation flags exactly {}{} (Xen's emulation_flags_ok(), "
                    "EOPNOTSUPP otherwise); got {}: {}",
                    domain, format_emulation_flags(row->required),
                    row->optional != 0
                        ? fmt::format(", optionally with {}", format_emulation_flags(row->optional))
                        : std::string(),
                    format_emulation_flags(known), what)));
  }
  return out;
}

// Arm. Every domain is CDF_hvm | CDF_hap; arch_sanitise_domain_config() allows only
// iommu, vpmu, xs_domain and trap_unmapped_accesses on top (EINVAL otherwise), the
// proposal adds CDF_vpci there. Reference §3 and §6.
Evaluation evaluate_arm(const DomainConfig& config, Profile profile) {
  Evaluation out;
  const bool proposal = profile == Profile::kCdfVpci;
  const bool vpci = config.vpci.value_or(false);
  out.flags.vpci = vpci;
  out.flags.cdf = xen::kCdfHvm | xen::kCdfHap;
  if (config.iommu) out.flags.cdf |= xen::kCdfIommu;
  if (proposal && vpci) out.flags.cdf |= xen::kProvisionalCdfVpci;

  if (!proposal && vpci) {
    out.errors.push_back(error(
        rule::kArmNoVpci, "vpci", XenErrno::kEinval,
        "Arm has no vPCI on current Xen: XEN_DOMCTL_CDF_vpci does not exist (added by "
        "2075b410ee, reverted by 9516d01ac3), arch_sanitise_domain_config() accepts only "
        "hvm|hap plus iommu, vpmu, xs_domain and trap_unmapped_accesses (EINVAL otherwise), and "
        "has_vpci() is hard-wired false; set vpci = false, or check against --profile cdf-vpci"));
  }
  if (proposal && vpci) {
    out.advice.push_back(advice(
        Severity::kNote, rule::kArmVpciBuildConfig, "vpci",
        "XEN_DOMCTL_CDF_vpci on Arm needs a Xen built with CONFIG_HAS_VPCI (selected by "
        "PCI_PASSTHROUGH, which needs EXPERT and arm64); without it sanitise_domain_config() "
        "returns EINVAL"));
  }
  const bool gets_trapped_config_space = proposal && vpci;
  if (arm_guest_gets_virtual_host_bridge(config) && !gets_trapped_config_space) {
    out.advice.push_back(advice(
        Severity::kWarning, rule::kArmPciNoTrappedConfigSpace, "passthrough",
        fmt::format("{} configured for an Arm domU: libxl writes a pcie@10000000 ECAM node into "
                    "the guest device tree, but without vPCI Xen does not trap that window, so "
                    "the guest finds no config space behind it{}",
                    plural(config.passthrough.size(), "PCI device"),
                    proposal ? "; set vpci = true to get one under the cdf-vpci proposal"
                             : " (current Xen has no vPCI for Arm domains)")));
  }
  return out;
}

}  // namespace

std::string_view profile_name(Profile profile) {
  switch (profile) {
    case Profile::kXenCurrent: return "xen-current";
    case Profile::kCdfVpci: return "cdf-vpci";
  }
  return "unknown-profile";
}

std::optional<Profile> profile_from_name(std::string_view name) {
  if (name == "xen-current") return Profile::kXenCurrent;
  if (name == "cdf-vpci" || name == "xen-proposed") return Profile::kCdfVpci;
  return std::nullopt;
}

std::string_view severity_name(Severity severity) {
  switch (severity) {
    case Severity::kError: return "error";
    case Severity::kWarning: return "warning";
    case Severity::kNote: return "note";
  }
  return "unknown-severity";
}

std::string_view xen_errno_name(XenErrno code) {
  switch (code) {
    case XenErrno::kNone: return "";
    case XenErrno::kEinval: return "EINVAL";
    case XenErrno::kEopnotsupp: return "EOPNOTSUPP";
  }
  return "";
}

bool CheckReport::accepted() const {
  return !has_error(diagnostics);
}

XenErrno CheckReport::xen_errno() const {
  for (const auto& d : diagnostics) {
    if (d.severity == Severity::kError && d.xen_errno != XenErrno::kNone) return d.xen_errno;
  }
  return XenErrno::kNone;
}

std::optional<std::uint32_t> default_x86_emulation_flags(Kind kind, bool control_domain,
                                                         Profile profile) {
  switch (kind) {
    case Kind::kPv: return 0u;  // libxl; Xen adds PIT for the hardware domain itself
    case Kind::kPvh:
      if (control_domain) {
        // xen/arch/x86/setup.c builds a PVH dom0 with LAPIC | IOAPIC | VPCI; the
        // proposal moves VPCI to the CDF word.
        return profile == Profile::kCdfVpci ? xen::kEmuLapic | xen::kEmuIoapic
                                            : xen::kEmuLapic | xen::kEmuIoapic | xen::kEmuVpci;
      }
      return xen::kEmuLapic;  // libxl
    case Kind::kHvm:
      if (control_domain) return std::nullopt;
      // libxl: ALL & ~VPCI (USE_PIRQ stays unless pirq=0, which the model leaves out).
      return xen::kEmuAllCurrent & ~xen::kEmuVpci;
    case Kind::kGuest: break;
  }
  return std::nullopt;
}

bool default_vpci(Arch arch, Kind kind, bool control_domain) {
  return arch == Arch::kX86 && kind == Kind::kPvh && control_domain;
}

std::vector<Diagnostic> check_consistency(const DomainConfig& config) {
  std::vector<Diagnostic> out;
  if (!kind_exists_on(config.arch, config.kind)) {
    out.push_back(error(
        rule::kArchKind, "kind", XenErrno::kNone,
        config.arch == Arch::kArm
            ? fmt::format("kind \"{}\" does not exist on arm: every Arm domain is created with "
                          "CDF_hvm|CDF_hap (libxl calls it type \"pvh\"); use kind = \"guest\"",
                          kind_name(config.kind))
            : std::string("kind \"guest\" is the Arm domain kind; on x86 use \"pv\", \"pvh\" or "
                          "\"hvm\"")));
  }
  if (config.arch == Arch::kArm && config.emulation_flags.has_value()) {
    out.push_back(error(rule::kEmulationFlagsX86Only, "emulation_flags", XenErrno::kNone,
                        "emulation_flags is the x86 xen_arch_domainconfig field; Arm domains "
                        "have no emulation flags: remove it (vPCI is requested with vpci)"));
  }
  if (!config.passthrough.empty() && !config.iommu) {
    out.push_back(
        error(rule::kPassthroughNeedsIommu, "iommu", XenErrno::kNone,
              fmt::format("{} listed in passthrough but iommu = false: assigning a host PCI device "
                          "needs the IOMMU (libxl sets XEN_DOMCTL_CDF_iommu whenever devices are "
                          "passed through); set iommu = true or empty passthrough",
                          plural(config.passthrough.size(), "device"))));
  }
  for (std::size_t i = 0; i < config.passthrough.size(); ++i) {
    const auto& device = config.passthrough[i];
    if (device.domain > kMaxXenPciSegment) {
      out.push_back(error(rule::kPassthroughSegment, "passthrough", XenErrno::kNone,
                          fmt::format("{}: PCI segment {:#x} does not fit the 16-bit segment of "
                                      "Xen's machine_sbdf (at most {:#x})",
                                      device.to_string(), device.domain, kMaxXenPciSegment)));
    }
    const auto first = std::find(config.passthrough.begin(), config.passthrough.end(), device);
    if (static_cast<std::size_t>(first - config.passthrough.begin()) < i) {
      out.push_back(error(rule::kPassthroughUnique, "passthrough", XenErrno::kNone,
                          fmt::format("{} is listed more than once; a device can be assigned "
                                      "only once",
                                      device.to_string())));
    }
  }
  return out;
}

CheckReport check_domain_config(const DomainConfig& config, Profile profile) {
  CheckReport report;
  report.profile = profile;
  report.diagnostics = check_consistency(config);
  // A configuration that contradicts itself has no meaning to apply rules to.
  if (has_error(report.diagnostics)) return report;

  Evaluation evaluation =
      config.arch == Arch::kX86 ? evaluate_x86(config, profile) : evaluate_arm(config, profile);
  const bool accepted = evaluation.errors.empty();
  if (accepted && profile == Profile::kCdfVpci && evaluation.flags.vpci) {
    evaluation.advice.push_back(
        advice(Severity::kNote, rule::kCdfVpciProvisionalBit, "vpci",
               fmt::format("XEN_DOMCTL_CDF_vpci is not part of Xen's ABI; the flags word uses "
                           "provisional bit {} (the next free bit after XEN_DOMCTL_CDF_MAX, "
                           "trap_unmapped_accesses at bit 8, which the 2023 series had used)",
                           xen::kProvisionalCdfVpciBit)));
  }
  for (auto& d : evaluation.errors) report.diagnostics.push_back(std::move(d));
  for (auto& d : evaluation.advice) report.diagnostics.push_back(std::move(d));
  if (accepted) report.flags = evaluation.flags;
  return report;
}

}  // namespace vpci::domain
