// Would Xen create this domain? Rule profiles for domain configurations that involve
// virtual PCI, and the flag words the toolstack would pass for accepted ones.
//
// Ground truth: ../shared/reference/xen-domain.md. Two profiles:
//   * xen-current — Xen master today. On x86 vPCI is emulation flag bit 10
//     (XEN_X86_EMU_VPCI), and emulation_flags_ok() allows it only for a PVH hardware
//     domain, where it is mandatory. On Arm no domain gets vPCI: there is no CDF_vpci
//     and has_vpci() is hard-wired false.
//   * cdf-vpci (alias xen-proposed) — Stewart Hildebrand's unmerged series: a common
//     XEN_DOMCTL_CDF_vpci flag (at a provisional bit, see xen::kProvisionalCdfVpciBit),
//     emulation bit 10 reserved, PVH dom0 with CDF_vpci + exactly LAPIC|IOAPIC, vPCI
//     allowed for Arm guests, and `vpci && !hvm` rejected with EINVAL.
//
// Each violated rule becomes a Diagnostic naming the rule, the configuration field,
// the Xen error code domain creation would fail with, and what would be accepted
// instead. docs/domain-check.md lists every rule.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "domain/domain_config.h"

namespace vpci::domain {

enum class Profile : std::uint8_t { kXenCurrent, kCdfVpci };

std::string_view profile_name(Profile profile);  // "xen-current", "cdf-vpci"
// Accepts the canonical names and "xen-proposed" (the reference's name for cdf-vpci).
std::optional<Profile> profile_from_name(std::string_view name);
inline constexpr std::array<std::string_view, 3> kProfileNames = {"xen-current", "cdf-vpci",
                                                                  "xen-proposed"};

enum class Severity : std::uint8_t {
  kError,    // the configuration is rejected
  kWarning,  // accepted, but will not do what the user probably wants
  kNote,     // accepted; an assumption the verdict depends on
};
std::string_view severity_name(Severity severity);  // "error", "warning", "note"

// The error Xen's domain creation returns when the rule is violated. Rules enforced
// by the toolstack or by the file format, and all warnings, carry kNone.
enum class XenErrno : std::uint8_t { kNone, kEinval, kEopnotsupp };
std::string_view xen_errno_name(XenErrno code);  // "EINVAL", "EOPNOTSUPP", "" for kNone

// Rule names, as reported in diagnostics and listed in docs/domain-check.md.
namespace rule {
// The file itself: TOML syntax, unknown keys, wrong types, bad values (config_file.h).
inline constexpr std::string_view kFileFormat = "file-format";
inline constexpr std::string_view kFileRead = "file-read";  // the file cannot be read
// Profile-independent consistency of the configuration itself.
inline constexpr std::string_view kArchKind = "arch-kind";
inline constexpr std::string_view kEmulationFlagsX86Only = "emulation-flags-x86-only";
inline constexpr std::string_view kPassthroughNeedsIommu = "passthrough-needs-iommu";
inline constexpr std::string_view kPassthroughUnique = "passthrough-unique";
inline constexpr std::string_view kPassthroughSegment = "passthrough-segment";
// xen-current, x86.
inline constexpr std::string_view kX86VpciIsEmulationFlag = "x86-vpci-is-emulation-flag";
inline constexpr std::string_view kX86EmulationVpci = "x86-emulation-vpci";
// Both profiles, x86.
inline constexpr std::string_view kX86EmulationKnownBits = "x86-emulation-known-bits";
inline constexpr std::string_view kX86HvmControlDomain = "x86-hvm-control-domain";
inline constexpr std::string_view kX86EmulationTable = "x86-emulation-table";
// cdf-vpci.
inline constexpr std::string_view kCdfVpciNeedsHvm = "cdf-vpci-needs-hvm";
inline constexpr std::string_view kX86CdfVpci = "x86-cdf-vpci";
inline constexpr std::string_view kCdfVpciProvisionalBit = "cdf-vpci-provisional-bit";
inline constexpr std::string_view kArmVpciBuildConfig = "arm-vpci-build-config";
// Arm.
inline constexpr std::string_view kArmNoVpci = "arm-no-vpci";
inline constexpr std::string_view kArmPciNoTrappedConfigSpace = "arm-pci-no-trapped-config-space";
}  // namespace rule

struct Diagnostic {
  std::string rule;   // one of the rule:: names
  std::string field;  // the configuration key at fault: "vpci", "emulation_flags", ...
  Severity severity = Severity::kError;
  XenErrno xen_errno = XenErrno::kNone;
  std::string message;  // what is wrong, why (citing Xen), and what would be accepted
};

// What the toolstack would pass to XEN_DOMCTL_createdomain for an accepted domain.
struct DomainFlags {
  std::uint32_t cdf = 0;  // xen_domctl_createdomain.flags
  // x86 xen_arch_domainconfig.emulation_flags as Xen ends up using it (for a PV
  // hardware domain that includes the PIT Xen adds itself); absent on Arm.
  std::optional<std::uint32_t> x86_emulation;
  bool emulation_derived = false;  // x86_emulation was derived, not given by the file
  bool vpci = false;               // the domain gets virtual PCI
};

struct CheckReport {
  Profile profile = Profile::kXenCurrent;
  // Errors in the order the toolstack and Xen evaluate them (toolstack, common
  // sanitise_domain_config, arch sanitise, arch_domain_create), then warnings and notes.
  std::vector<Diagnostic> diagnostics;
  std::optional<DomainFlags> flags;  // present exactly when accepted()

  [[nodiscard]] bool accepted() const;  // no diagnostic of severity error
  // The code XEN_DOMCTL_createdomain would fail with: that of the first error that
  // Xen itself enforces. kNone when accepted or only toolstack rules fail.
  [[nodiscard]] XenErrno xen_errno() const;
};

// Profile-independent checks of the configuration itself (kind exists on the arch,
// emulation flags only on x86, passthrough needs the IOMMU, each device once, 16-bit
// segments). The file loader reports these as malformed-file errors.
std::vector<Diagnostic> check_consistency(const DomainConfig& config);

// Applies `profile` to `config`. Never fails: every problem is a diagnostic.
CheckReport check_domain_config(const DomainConfig& config, Profile profile);

// What libxl (domU) or Xen's own dom0 builder would pass as x86 emulation flags when
// the configuration gives none, before Xen adds PIT for a PV hardware domain; absent
// for an x86 HVM control domain, which Xen cannot create. Reference §2.
std::optional<std::uint32_t> default_x86_emulation_flags(Kind kind, bool control_domain,
                                                         Profile profile);

// Whether a domain whose configuration says nothing about vPCI (no `vpci`, and on x86
// under xen-current no `emulation_flags` either) gets it: only an x86 PVH hardware
// domain, which Xen's setup.c always builds with vPCI, in both profiles.
bool default_vpci(Arch arch, Kind kind, bool control_domain);

}  // namespace vpci::domain
