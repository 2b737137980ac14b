#include "domain/config_file.h"

#include <algorithm>
#include <array>
#include <fstream>
#include <iterator>
#include <system_error>

#include <fmt/format.h>
// toml++ reports syntax errors by throwing toml::parse_error (the Debian build has
// exceptions on); parse_domain_config() catches it, so nothing escapes this file.
#include <toml++/toml.h>

#include "base/input_file.h"
#include "base/suggestion.h"
#include "base/toml_text.h"
#include "domain/rules.h"
#include "domain/xen_abi.h"

namespace vpci::domain {
namespace {

constexpr std::array<std::string_view, 7> kKeys = {
    "arch", "kind", "control_domain", "vpci", "emulation_flags", "iommu", "passthrough"};

SourcePosition position_from(const toml::source_position& position) {
  return SourcePosition{position.line, position.column};
}

std::vector<std::string_view> emulation_names() {
  std::vector<std::string_view> names;
  for (const auto& f : xen::emulation_flag_names()) names.push_back(f.name);
  return names;
}

class Reader {
 public:
  explicit Reader(std::string_view file) : file_(file) { config_.source_file = file_; }

  void problem(std::string key, SourcePosition position, std::string message,
               std::string_view rule = rule::kFileFormat) {
    problems_.push_back(
        ConfigFileProblem{file_, std::string(rule), std::move(key), position, std::move(message)});
  }

  void wrong_type(std::string_view key, const toml::node& node, std::string_view expected) {
    problem(std::string(key), position_from(node.source().begin),
            fmt::format("expected {}, found {}", expected, toml_type_phrase(node.type())));
  }

  void read(const toml::table& table) {
    bool iommu_given = false;
    for (auto&& [key, node] : table) {
      const std::string_view name = key.str();
      const SourcePosition where = position_from(key.source().begin);
      if (std::find(kKeys.begin(), kKeys.end(), name) == kKeys.end()) {
        problem(std::string(name), where,
                fmt::format("unknown key{}; the keys are {}", suggestion(name, kKeys),
                            quoted_list(kKeys)));
        continue;
      }
      config_.key_positions[std::string(name)] = where;
      if (name == "arch") {
        read_arch(node);
      } else if (name == "kind") {
        read_kind(node);
      } else if (name == "control_domain") {
        read_bool(name, node, config_.control_domain);
      } else if (name == "vpci") {
        bool vpci = false;
        if (read_bool(name, node, vpci)) config_.vpci = vpci;
      } else if (name == "emulation_flags") {
        read_emulation_flags(node);
      } else if (name == "iommu") {
        iommu_given = read_bool(name, node, config_.iommu);
      } else if (name == "passthrough") {
        read_passthrough(node);
      }
    }
    for (std::string_view required : {std::string_view("arch"), std::string_view("kind")}) {
      if (!table.contains(required)) {
        problem(std::string(required), {},
                required == "arch"
                    ? "missing required key: arch = \"x86\" or \"arm\""
                    : "missing required key: kind = \"pv\", \"pvh\" or \"hvm\" (x86) or "
                      "\"guest\" (arm)");
      }
    }
    // libxl enables the IOMMU (passthrough = "enabled") whenever devices are assigned.
    if (!iommu_given) config_.iommu = !config_.passthrough.empty();
    // Contradictions only make sense between settings that were each read correctly.
    if (problems_.empty()) {
      for (const auto& d : check_consistency(config_)) {
        if (d.severity != Severity::kError) continue;
        problem(d.field, config_.position_of(d.field), d.message, d.rule);
      }
    }
  }

  ConfigFileResult finish() {
    if (problems_.empty()) return std::move(config_);
    // Report in file order; problems without a position (missing keys) come first.
    std::stable_sort(problems_.begin(), problems_.end(), [](const auto& a, const auto& b) {
      return std::pair(a.position.line, a.position.column) <
             std::pair(b.position.line, b.position.column);
    });
    return tl::unexpected(std::move(problems_));
  }

 private:
  bool read_bool(std::string_view key, const toml::node& node, bool& out) {
    const auto* value = node.as_boolean();
    if (value == nullptr) {
      wrong_type(key, node, "a boolean (true or false)");
      return false;
    }
    out = value->get();
    return true;
  }

  const std::string* read_string(std::string_view key, const toml::node& node,
                                 std::string_view expected) {
    const auto* value = node.as_string();
    if (value == nullptr) {
      wrong_type(key, node, expected);
      return nullptr;
    }
    return &value->get();
  }

  void read_arch(const toml::node& node) {
    const std::string* text = read_string("arch", node, "a string, \"x86\" or \"arm\"");
    if (text == nullptr) return;
    if (const auto arch = arch_from_name(*text)) {
      config_.arch = *arch;
    } else {
      problem("arch", position_from(node.source().begin),
              fmt::format("unknown architecture \"{}\"; expected \"x86\" or \"arm\"", *text));
    }
  }

  void read_kind(const toml::node& node) {
    const std::string* text =
        read_string("kind", node, "a string, \"pv\", \"pvh\", \"hvm\" or \"guest\"");
    if (text == nullptr) return;
    if (const auto kind = kind_from_name(*text)) {
      config_.kind = *kind;
    } else {
      constexpr std::array<std::string_view, 4> kKinds = {"pv", "pvh", "hvm", "guest"};
      problem("kind", position_from(node.source().begin),
              fmt::format("unknown domain kind \"{}\"{}; expected \"pv\", \"pvh\" or \"hvm\" "
                          "on x86, \"guest\" on arm",
                          *text, suggestion(*text, kKinds)));
    }
  }

  // An array of flag names, or the raw xen_arch_domainconfig.emulation_flags word.
  void read_emulation_flags(const toml::node& node) {
    constexpr std::string_view kExpected =
        "an array of emulation flag names or an integer flag word";
    if (const auto* word = node.as_integer()) {
      const std::int64_t value = word->get();
      if (value < 0 || value > 0xffffffffLL) {
        problem("emulation_flags", position_from(node.source().begin),
                fmt::format("flag word {} does not fit the 32-bit emulation_flags field", value));
        return;
      }
      config_.emulation_flags = static_cast<std::uint32_t>(value);
      return;
    }
    const auto* names = node.as_array();
    if (names == nullptr) {
      wrong_type("emulation_flags", node, kExpected);
      return;
    }
    std::uint32_t flags = 0;
    bool ok = true;
    for (std::size_t i = 0; i < names->size(); ++i) {
      const toml::node& element = *names->get(i);
      const std::string key = fmt::format("emulation_flags[{}]", i);
      const std::string* name = read_string(key, element, "a flag name (a string)");
      if (name == nullptr) {
        ok = false;
        continue;
      }
      const auto bit = xen::emulation_flag_from_name(*name);
      if (!bit) {
        const auto known = emulation_names();
        problem(key, position_from(element.source().begin),
                fmt::format("unknown emulation flag \"{}\"{}; the flags are {} (give an integer "
                            "word to set bits that have no name)",
                            *name, suggestion(*name, known), quoted_list(known)));
        ok = false;
        continue;
      }
      if ((flags & *bit) != 0) {
        problem(key, position_from(element.source().begin),
                fmt::format("emulation flag \"{}\" is listed more than once", *name));
        ok = false;
        continue;
      }
      flags |= *bit;
    }
    if (ok) config_.emulation_flags = flags;
  }

  void read_passthrough(const toml::node& node) {
    const auto* devices = node.as_array();
    if (devices == nullptr) {
      wrong_type("passthrough", node, "an array of PCI addresses (\"DDDD:BB:DD.F\")");
      return;
    }
    for (std::size_t i = 0; i < devices->size(); ++i) {
      const toml::node& element = *devices->get(i);
      const std::string key = fmt::format("passthrough[{}]", i);
      const std::string* text =
          read_string(key, element, "a PCI address string (\"DDDD:BB:DD.F\")");
      if (text == nullptr) continue;
      // pci::parse_device_address() tolerates one trailing space ("0000:03:00.0 "), which
      // a hand-written address in a file should not have.
      if (text->find_first_of(" \t") != std::string::npos) {
        problem(key, position_from(element.source().begin),
                fmt::format("'{}' is not a PCI address: it contains whitespace (expected "
                            "BB:DD.F or DDDD:BB:DD.F)",
                            *text));
        continue;
      }
      auto address = pci::parse_device_address(*text);
      if (!address) {
        problem(key, position_from(element.source().begin), address.error().message);
        continue;
      }
      config_.passthrough.push_back(*address);
    }
  }

  std::string file_;
  DomainConfig config_;
  std::vector<ConfigFileProblem> problems_;
};

}  // namespace

std::string ConfigFileProblem::to_string() const {
  std::string out = file;
  if (position.line != 0) out += fmt::format(":{}:{}", position.line, position.column);
  out += ": ";
  if (!key.empty()) out += fmt::format("key {}: ", key);
  out += message;
  if (!rule.empty() && rule != rule::kFileFormat && rule != rule::kFileRead)
    out += fmt::format(" [{}]", rule);
  return out;
}

ConfigFileResult parse_domain_config(std::string_view text, std::string_view file_name) {
  toml::table table;
  try {
    table = toml::parse(text, file_name);
  } catch (const toml::parse_error& e) {
    return tl::unexpected(std::vector<ConfigFileProblem>{ConfigFileProblem{
        std::string(file_name), std::string(rule::kFileFormat), "", position_from(e.source().begin),
        fmt::format("not valid TOML: {}", e.description())}});
  }
  Reader reader(file_name);
  reader.read(table);
  return reader.finish();
}

ConfigFileResult load_domain_config(const std::filesystem::path& path) {
  auto text = read_input_file(path, kConfigurationInput);
  if (!text) {
    // read_input_file's message starts with the path, which the problem carries.
    std::string message = std::move(text).error().message;
    const std::string prefix = path.string() + ": ";
    if (message.starts_with(prefix)) message.erase(0, prefix.size());
    return tl::unexpected(std::vector<ConfigFileProblem>{ConfigFileProblem{
        path.string(), std::string(rule::kFileRead), "", {}, std::move(message)}});
  }
  if (text->empty()) {
    // Would otherwise be one "missing required key" per key: say what is wrong once.
    return tl::unexpected(std::vector<ConfigFileProblem>{ConfigFileProblem{
        path.string(),
        std::string(rule::kFileFormat),
        "",
        {},
        "the file is empty (expected a TOML domain configuration, docs/domain-check.md)"}});
  }
  return parse_domain_config(*text, path.string());
}

Error to_error(const std::vector<ConfigFileProblem>& problems) {
  std::string message;
  for (const auto& p : problems) {
    if (!message.empty()) message += '\n';
    message += p.to_string();
  }
  return Error{ErrorCode::kMalformedInput, std::move(message)};
}

std::string format_domain_config(const DomainConfig& config) {
  std::string out;
  out += fmt::format("arch = \"{}\"\n", arch_name(config.arch));
  out += fmt::format("kind = \"{}\"\n", kind_name(config.kind));
  out += fmt::format("control_domain = {}\n", config.control_domain);
  if (config.vpci) out += fmt::format("vpci = {}\n", *config.vpci);
  if (config.emulation_flags) {
    const std::uint32_t flags = *config.emulation_flags;
    if ((flags & ~xen::kEmuAllCurrent) != 0) {
      out += fmt::format("emulation_flags = {:#x}\n", flags);
    } else {
      std::string names;
      for (const auto& f : xen::emulation_flag_names()) {
        if ((flags & f.bit) != 0)
          names += fmt::format("{}\"{}\"", names.empty() ? "" : ", ", f.name);
      }
      out += fmt::format("emulation_flags = [{}]\n", names);
    }
  }
  out += fmt::format("iommu = {}\n", config.iommu);
  std::string devices;
  for (const auto& d : config.passthrough) {
    devices += fmt::format("{}\"{}\"", devices.empty() ? "" : ", ", d.to_string());
  }
  out += fmt::format("passthrough = [{}]\n", devices);
  return out;
}

}  // namespace vpci::domain
