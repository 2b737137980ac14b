// `vpci domain check FILE.toml [--profile NAME] [--json]`: would Xen create this domain
// with the virtual PCI it asks for? Rules in domain/rules.h, format in
// docs/domain-check.md. Exit 0 when accepted, 1 when rejected or the file is malformed,
// 2 on usage errors.
#include <cstdio>
#include <memory>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "domain/config_file.h"
#include "domain/rules.h"
#include "domain/xen_abi.h"
#include "tools/cli_error.h"
#include "tools/commands.h"

namespace vpci::tools {
namespace {

using domain::CheckReport;
using domain::ConfigFileProblem;
using domain::Diagnostic;
using domain::DomainConfig;
using domain::DomainFlags;

// Keys stay in the documented order: ok, profile, diagnostics, then the extras.
using Json = nlohmann::ordered_json;

struct DomainCheckOptions {
  std::string file;
  std::string profile = "xen-current";
  bool json = false;
};

Json errno_json(domain::XenErrno code) {
  if (code == domain::XenErrno::kNone) return nullptr;
  return std::string(domain::xen_errno_name(code));
}

Json names_json(std::uint32_t flags, std::span<const domain::xen::FlagName> names) {
  Json out = Json::array();
  for (unsigned bit = 0; bit < 32; ++bit) {
    const std::uint32_t mask = 1u << bit;
    if ((flags & mask) == 0) continue;
    std::string name = fmt::format("bit{}", bit);
    for (const auto& n : names) {
      if (n.bit == mask) name = std::string(n.name);
    }
    out.push_back(name);
  }
  return out;
}

Json flags_json(const DomainFlags& flags, domain::Profile profile) {
  Json out = {
      {"cdf", flags.cdf},
      {"cdf_hex", fmt::format("{:#010x}", flags.cdf)},
      {"cdf_names", names_json(flags.cdf, domain::xen::cdf_flag_names())},
      {"vpci", flags.vpci},
  };
  if (flags.x86_emulation) {
    out["x86_emulation"] = *flags.x86_emulation;
    out["x86_emulation_hex"] = fmt::format("{:#010x}", *flags.x86_emulation);
    out["x86_emulation_names"] =
        names_json(*flags.x86_emulation, domain::xen::emulation_flag_names());
    out["x86_emulation_derived"] = flags.emulation_derived;
  }
  if (profile == domain::Profile::kCdfVpci) {
    // The proposal's flag has no bit number in Xen yet (xen_abi.h).
    out["cdf_vpci_bit"] = domain::xen::kProvisionalCdfVpciBit;
    out["cdf_vpci_bit_provisional"] = true;
  }
  return out;
}

void add_position(Json& out, domain::SourcePosition position) {
  if (position.line == 0) return;
  out["line"] = position.line;
  out["column"] = position.column;
}

Json diagnostic_json(const Diagnostic& d, const DomainConfig& config) {
  Json out = {
      {"rule", d.rule},
      {"field", d.field},
      {"message", d.message},
      {"severity", domain::severity_name(d.severity)},
      {"errno", errno_json(d.xen_errno)},
  };
  add_position(out, config.position_of(d.field));
  return out;
}

Json problem_json(const ConfigFileProblem& p) {
  Json out = {
      {"rule", p.rule},      {"field", p.key},   {"message", p.message},
      {"severity", "error"}, {"errno", nullptr},
  };
  add_position(out, p.position);
  return out;
}

// "FILE:LINE:COLUMN" or "FILE" when the field was not written in the file.
std::string location(const DomainConfig& config, std::string_view field) {
  const auto position = config.position_of(field);
  if (position.line == 0) return config.source_file;
  return fmt::format("{}:{}:{}", config.source_file, position.line, position.column);
}

void print_report_text(const DomainConfig& config, const CheckReport& report) {
  for (const auto& d : report.diagnostics) {
    const std::string code = d.xen_errno == domain::XenErrno::kNone
                                 ? std::string()
                                 : fmt::format(" (Xen: {})", domain::xen_errno_name(d.xen_errno));
    fmt::print("{}: {} [{}] {}: {}{}\n", location(config, d.field),
               domain::severity_name(d.severity), d.rule, d.field, d.message, code);
  }
  const std::string_view profile = domain::profile_name(report.profile);
  if (!report.accepted()) {
    const auto code = report.xen_errno();
    fmt::print("{}: rejected by profile {}{}\n", config.source_file, profile,
               code == domain::XenErrno::kNone
                   ? std::string(" (by the toolstack, before any hypercall)")
                   : fmt::format(" (XEN_DOMCTL_createdomain would fail with {})",
                                 domain::xen_errno_name(code)));
    return;
  }
  const DomainFlags& flags = *report.flags;
  fmt::print("{}: accepted by profile {}\n", config.source_file, profile);
  fmt::print("  vPCI: {}\n", flags.vpci ? "yes" : "no");
  fmt::print("  createdomain flags (CDF): {:#010x} ({})\n", flags.cdf,
             domain::xen::format_cdf_flags(flags.cdf));
  if (report.profile == domain::Profile::kCdfVpci && flags.vpci) {
    fmt::print("    CDF_vpci is provisional bit {}: not in Xen's ABI\n",
               domain::xen::kProvisionalCdfVpciBit);
  }
  if (flags.x86_emulation) {
    fmt::print("  x86 emulation flags: {:#010x} ({}){}\n", *flags.x86_emulation,
               domain::xen::format_emulation_flags(*flags.x86_emulation),
               flags.emulation_derived ? ", derived as libxl/Xen would" : "");
  }
}

int run_domain_check(const DomainCheckOptions& options) {
  // CLI11 has already limited --profile to the known names.
  const domain::Profile profile = *domain::profile_from_name(options.profile);
  auto config = domain::load_domain_config(options.file);
  if (!config) {
    if (options.json) {
      Json out = {{"ok", false},
                  {"profile", domain::profile_name(profile)},
                  {"diagnostics", Json::array()},
                  {"file", options.file},
                  {"xen_errno", nullptr}};
      for (const auto& p : config.error()) out["diagnostics"].push_back(problem_json(p));
      fmt::print("{}\n", out.dump(2));
    } else {
      for (const auto& p : config.error()) print_error("domain check", p.to_string());
    }
    return kExitRejected;
  }
  const CheckReport report = domain::check_domain_config(*config, profile);
  if (options.json) {
    Json out = {{"ok", report.accepted()},
                {"profile", domain::profile_name(profile)},
                {"diagnostics", Json::array()},
                {"file", options.file},
                {"xen_errno", errno_json(report.xen_errno())}};
    for (const auto& d : report.diagnostics)
      out["diagnostics"].push_back(diagnostic_json(d, *config));
    if (report.flags) out["flags"] = flags_json(*report.flags, profile);
    fmt::print("{}\n", out.dump(2));
  } else {
    print_report_text(*config, report);
  }
  return report.accepted() ? kExitSuccess : kExitRejected;
}

void register_domain_command(CLI::App& app, int& exit_code) {
  CLI::App* domain_cmd =
      app.add_subcommand("domain", "Xen domain configurations that involve virtual PCI");
  domain_cmd->require_subcommand(1);
  auto options = std::make_shared<DomainCheckOptions>();
  CLI::App* check = domain_cmd->add_subcommand(
      "check",
      "Would Xen create this domain (TOML file, see docs/domain-check.md)? Names each violated "
      "rule with its field and Xen error code, and the CDF and x86 emulation flag words for "
      "accepted domains");
  check->add_option("FILE", options->file, "domain configuration (TOML)")->required();
  check
      ->add_option("--profile", options->profile,
                   "rules to apply: xen-current (Xen today, default) or cdf-vpci (the "
                   "XEN_DOMCTL_CDF_vpci proposal; alias xen-proposed)")
      ->check(CLI::IsMember(
          std::vector<std::string>(domain::kProfileNames.begin(), domain::kProfileNames.end())));
  check->add_flag("--json", options->json,
                  "machine-readable output: {\"ok\",\"profile\",\"diagnostics\":[{\"rule\","
                  "\"field\",\"message\",...}],\"flags\"}");
  check->callback([options, &exit_code] { exit_code = run_domain_check(*options); });
}

VPCI_REGISTER_COMMAND(register_domain_command);

}  // namespace
}  // namespace vpci::tools
