// Reading and writing domain configuration files (TOML; format in docs/domain-check.md):
//
//   arch = "x86"                                   # required: x86 | arm
//   kind = "pvh"                                   # required: pv | pvh | hvm on x86; guest on arm
//   control_domain = true                          # default false
//   vpci = true                                    # default: see domain/rules.h
//   emulation_flags = ["lapic", "ioapic", "vpci"]  # x86 only; or an integer word; default derived
//   iommu = true                                   # default: true iff passthrough is not empty
//   passthrough = ["0000:03:00.0"]                 # default []
//
// Every key is checked: unknown keys, wrong types, unknown names, bad PCI addresses and
// self-contradictory settings (domain/rules.h check_consistency) are reported with the
// file, line, column and key, all of them at once rather than only the first.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include <tl/expected.hpp>

#include "base/error.h"
#include "domain/domain_config.h"

namespace vpci::domain {

// One thing wrong with a configuration file.
struct ConfigFileProblem {
  std::string file;
  // rule::kFileFormat for syntax, unknown keys, types and values; the consistency rule
  // (rule::kArchKind, ...) for settings that contradict each other.
  std::string rule;
  std::string key;          // "vpci", "passthrough[1]"; empty for TOML syntax errors
  SourcePosition position;  // line 0 when the problem has no place (a missing key)
  std::string message;      // what was wrong and what would be accepted

  // "FILE:LINE:COLUMN: key KEY: MESSAGE [RULE]" (parts without a value left out; the
  // rule only when it is not file-format).
  [[nodiscard]] std::string to_string() const;
};

// The loader returns every problem, each with its key and position, rather than one
// vpci::Error: `vpci domain check --json` reports them as structured diagnostics.
// to_error() gives the project-wide error for callers that use Result<T>.
using ConfigFileResult = tl::expected<DomainConfig, std::vector<ConfigFileProblem>>;

// Parses TOML text; `file_name` is used in problems and stored in the config.
ConfigFileResult parse_domain_config(std::string_view text, std::string_view file_name);

// Reads and parses a file; an unreadable file is one problem without a key.
ConfigFileResult load_domain_config(const std::filesystem::path& path);

// All problems, one per line, as ErrorCode::kMalformedInput.
Error to_error(const std::vector<ConfigFileProblem>& problems);

// TOML text that parse_domain_config() reads back to the same settings. Emulation flags
// are written as names when every bit has one, otherwise as a hex integer word.
std::string format_domain_config(const DomainConfig& config);

}  // namespace vpci::domain
