// Fuzzes `vpci domain check`: TOML text -> parse_domain_config -> check_domain_config
// under both profiles. Beyond "never crash", it checks the invariants the rest of vpci
// relies on (docs/domain-check.md):
//   * a file either parses or yields problems that each say what was wrong;
//   * a parsed configuration is self-consistent (check_consistency finds nothing);
//   * accepted <=> no error diagnostic <=> flags present, and an accepted report names
//     no Xen error code;
//   * the flags of an accepted configuration agree with the configuration and with the
//     reference rule tables (re-derived here from ../shared/reference/xen-domain.md);
//   * format_domain_config() reads back to the same settings and the same verdicts.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "domain/config_file.h"
#include "domain/rules.h"
#include "domain/xen_abi.h"
#include "fuzz/fuzz_support.h"

namespace {

using namespace vpci::domain;

// Reference §2/§6: (emflags & ~optional) == required for the domain's row.
bool emulation_row_accepts(const DomainConfig& config, Profile profile, std::uint32_t emulation) {
  const bool proposal = profile == Profile::kCdfVpci;
  switch (config.kind) {
    case Kind::kPv: return (emulation & ~0x100u) == 0;
    case Kind::kPvh:
      if (config.control_domain) return emulation == (proposal ? 0x011u : 0x411u);
      return emulation == 0x001u;
    case Kind::kHvm: return !config.control_domain && (emulation & ~0x200u) == 0x1ffu;
    case Kind::kGuest: return false;
  }
  return false;
}

void check_report(const DomainConfig& config, Profile profile, const CheckReport& report) {
  bool any_error = false;
  for (const auto& d : report.diagnostics) {
    FUZZ_CHECK(!d.rule.empty() && !d.field.empty() && !d.message.empty());
    if (d.severity == Severity::kError) any_error = true;
    if (d.severity != Severity::kError) FUZZ_CHECK(d.xen_errno == XenErrno::kNone);
  }
  FUZZ_CHECK(report.accepted() == !any_error);
  FUZZ_CHECK(report.flags.has_value() == report.accepted());
  if (!report.accepted()) return;
  FUZZ_CHECK(report.xen_errno() == XenErrno::kNone);

  const DomainFlags& flags = *report.flags;
  const bool proposal = profile == Profile::kCdfVpci;
  const std::uint32_t allowed_cdf = xen::kCdfAllCurrent | (proposal ? xen::kProvisionalCdfVpci : 0);
  FUZZ_CHECK((flags.cdf & ~allowed_cdf) == 0);
  FUZZ_CHECK(((flags.cdf & xen::kCdfIommu) != 0) == config.iommu);
  FUZZ_CHECK(((flags.cdf & xen::kCdfHvm) != 0) == (config.kind != Kind::kPv));
  FUZZ_CHECK(((flags.cdf & xen::kCdfHap) != 0) == (config.kind != Kind::kPv));
  if (proposal) FUZZ_CHECK(((flags.cdf & xen::kProvisionalCdfVpci) != 0) == flags.vpci);
  if (config.vpci.has_value()) FUZZ_CHECK(*config.vpci == flags.vpci);

  if (config.arch == Arch::kArm) {
    FUZZ_CHECK(!flags.x86_emulation.has_value());
    if (!proposal) FUZZ_CHECK(!flags.vpci);  // reference §3: no Arm domain gets vPCI
    return;
  }
  FUZZ_CHECK(flags.x86_emulation.has_value());
  FUZZ_CHECK(flags.emulation_derived == !config.emulation_flags.has_value());
  const std::uint32_t emulation = *flags.x86_emulation;
  FUZZ_CHECK(emulation_row_accepts(config, profile, emulation));
  if (proposal) {
    FUZZ_CHECK((emulation & xen::kEmuVpci) == 0);  // bit 10 reserved in the proposal
  } else {
    FUZZ_CHECK(((emulation & xen::kEmuVpci) != 0) == flags.vpci);
  }
  // Reference §2: vPCI on x86 exists only for (and always for) a PVH hardware domain.
  FUZZ_CHECK(flags.vpci == (config.kind == Kind::kPvh && config.control_domain));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto parsed = parse_domain_config(text, "fuzz.toml");
  if (!parsed) {
    FUZZ_CHECK(!parsed.error().empty());
    for (const auto& problem : parsed.error()) {
      FUZZ_CHECK(problem.file == "fuzz.toml");
      FUZZ_CHECK(!problem.rule.empty() && !problem.message.empty());
    }
    return 0;
  }
  const DomainConfig& config = *parsed;
  FUZZ_CHECK(check_consistency(config).empty());

  auto reread = parse_domain_config(format_domain_config(config), "fuzz-roundtrip.toml");
  FUZZ_CHECK(reread.has_value());
  FUZZ_CHECK(reread->same_settings(config));

  for (Profile profile : {Profile::kXenCurrent, Profile::kCdfVpci}) {
    const CheckReport report = check_domain_config(config, profile);
    check_report(config, profile, report);
    const CheckReport again = check_domain_config(*reread, profile);
    FUZZ_CHECK(again.accepted() == report.accepted());
    FUZZ_CHECK(again.diagnostics.size() == report.diagnostics.size());
  }
  return 0;
}
