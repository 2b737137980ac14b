#include "server/serve_config.h"

#include <array>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>
#include <system_error>

#include <fmt/format.h>
// toml++ reports syntax errors by throwing toml::parse_error (the Debian build has
// exceptions on); parse_serve_config() catches it, so nothing escapes this file.
#include <toml++/toml.h>

#include "base/input_file.h"
#include "base/suggestion.h"
#include "base/toml_text.h"

namespace vpci::server {
namespace {

constexpr std::array<std::string_view, 2> kTopKeys = {"socket_dir", "device"};
constexpr std::array<std::string_view, 8> kDeviceKeys = {
    "name", "kind", "transport", "path", "read_only", "queues", "io", "xen_backend_domid"};
constexpr std::array<std::string_view, 2> kKindNames = {"virtio-rng", "virtio-blk"};
constexpr const auto& kTransportNames = virtio::pci::kTransportKindNames;

bool valid_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '-' || c == '.';
}

class Reader {
 public:
  Reader(std::string source, std::filesystem::path base_dir, bool check_files)
      : base_dir_(std::move(base_dir)), check_files_(check_files) {
    config_.source = std::move(source);
  }

  Result<ServeConfig> read(const toml::table& document) {
    for (auto&& [key, node] : document) {
      const std::string_view name = key.str();
      if (name == "socket_dir") {
        if (const std::string* dir = expect_string(node, "socket_dir")) {
          if (dir->empty()) {
            problem(node, "socket_dir", "must not be empty");
          } else if (dir->find('\0') != std::string::npos) {
            // The OS would stop at the NUL and use a different directory.
            problem(node, "socket_dir", "must not contain a NUL character");
          } else {
            config_.socket_dir = resolve(*dir);
          }
        }
      } else if (name == "device") {
        read_devices(node);
      } else {
        problem_at(key.source(), std::string(name),
                   fmt::format("unknown key{}; the keys are {}", suggestion(name, kTopKeys),
                               quoted_list(kTopKeys)));
      }
    }
    if (problems_.empty() && config_.devices.empty()) {
      problems_.push_back(
          fmt::format("{}: no devices: add at least one [[device]] table (name, kind, transport)",
                      config_.source));
    }
    if (!problems_.empty()) {
      std::string message = problems_.front();
      for (std::size_t i = 1; i < problems_.size(); ++i) message += "\n" + problems_[i];
      return make_error(ErrorCode::kMalformedInput, "{}", message);
    }
    return std::move(config_);
  }

 private:
  void problem_at(const toml::source_region& where, const std::string& key, std::string message) {
    problems_.push_back(fmt::format("{}:{}:{}: {}: {}", config_.source, where.begin.line,
                                    where.begin.column, key, message));
  }
  void problem(const toml::node& node, const std::string& key, std::string message) {
    problem_at(node.source(), key, std::move(message));
  }

  const std::string* expect_string(const toml::node& node, const std::string& key) {
    if (const auto* value = node.as_string()) return &value->get();
    problem(node, key, fmt::format("expected a string, found {}", toml_type_phrase(node.type())));
    return nullptr;
  }

  std::filesystem::path resolve(const std::string& path) const {
    const std::filesystem::path p(path);
    return p.is_absolute() ? p : base_dir_ / p;
  }

  template <std::size_t N>
  std::optional<std::size_t> expect_choice(const toml::node& node, const std::string& key,
                                           const std::array<std::string_view, N>& choices,
                                           std::string_view what) {
    const std::string* text = expect_string(node, key);
    if (text == nullptr) return std::nullopt;
    for (std::size_t i = 0; i < N; ++i) {
      if (choices[i] == *text) return i;
    }
    problem(node, key,
            fmt::format("unknown {} \"{}\"{}; expected one of {}", what, *text,
                        suggestion(*text, choices), quoted_list(choices)));
    return std::nullopt;
  }

  void read_devices(const toml::node& node) {
    const toml::array* devices = node.as_array();
    if (devices == nullptr || !devices->is_array_of_tables()) {
      problem(node, "device",
              fmt::format("expected an array of tables ([[device]]), found {}",
                          toml_type_phrase(node.type())));
      return;
    }
    if (devices->size() > kMaxServedDevices) {
      problem(node, "device",
              fmt::format("{} devices; one process serves at most {}", devices->size(),
                          kMaxServedDevices));
      return;
    }
    std::size_t index = 0;
    for (const toml::node& item : *devices) {
      ++index;
      read_device(*item.as_table(), fmt::format("device[{}]", index));
    }
  }

  void read_device(const toml::table& table, const std::string& prefix) {
    ServedDeviceSpec spec;
    spec.line = table.source().begin.line;
    bool ok = true;
    bool have_kind = false;
    const toml::node* path_node = nullptr;
    const toml::node* read_only_node = nullptr;
    std::vector<std::pair<const toml::node*, std::string>> blk_only;  // keys only blk has
    for (auto&& [key, value] : table) {
      const std::string name(key.str());
      std::string full = prefix;
      full.append(".").append(name);
      if (name == "name") {
        const std::string* text = expect_string(value, full);
        if (text == nullptr || !check_name(value, full, *text)) {
          ok = false;
        } else {
          spec.name = *text;
        }
      } else if (name == "kind") {
        if (auto choice = expect_choice(value, full, kKindNames, "kind")) {
          spec.kind = static_cast<DeviceKind>(*choice);
          have_kind = true;
        } else {
          ok = false;
        }
      } else if (name == "transport") {
        if (auto choice = expect_choice(value, full, kTransportNames, "transport")) {
          spec.transport = static_cast<TransportKind>(*choice);
        } else {
          ok = false;
        }
      } else if (name == "path") {
        path_node = &value;
        if (const std::string* text = expect_string(value, full)) {
          if (text->empty()) {
            problem(value, full, "must not be empty");
            ok = false;
          } else if (text->find('\0') != std::string::npos) {
            // open() would stop at the NUL and serve a different file (found by
            // serve_config_fuzzer).
            problem(value, full, "must not contain a NUL character");
            ok = false;
          } else {
            spec.path = resolve(*text);
          }
        } else {
          ok = false;
        }
      } else if (name == "queues") {
        blk_only.emplace_back(&value, full);
        const auto* number = value.as_integer();
        if (number == nullptr) {
          problem(value, full,
                  fmt::format("expected an integer, found {}", toml_type_phrase(value.type())));
          ok = false;
        } else if (number->get() < 1 || number->get() > kMaxBlkQueues) {
          problem(value, full,
                  fmt::format("{} queues; a virtio-blk device has 1 to {}", number->get(),
                              kMaxBlkQueues));
          ok = false;
        } else {
          spec.queues = static_cast<std::uint16_t>(number->get());
        }
      } else if (name == "io") {
        blk_only.emplace_back(&value, full);
        if (auto choice = expect_choice(value, full, devices::kBlockIoModeNames, "I/O engine")) {
          spec.io = static_cast<devices::BlockIoMode>(*choice);
        } else {
          ok = false;
        }
      } else if (name == "read_only") {
        read_only_node = &value;
        if (const auto* flag = value.as_boolean()) {
          spec.read_only = flag->get();
        } else {
          problem(value, full,
                  fmt::format("expected a boolean, found {}", toml_type_phrase(value.type())));
          ok = false;
        }
      } else if (name == "xen_backend_domid") {
        const auto* number = value.as_integer();
        if (number == nullptr) {
          problem(value, full,
                  fmt::format("expected an integer, found {}", toml_type_phrase(value.type())));
          ok = false;
        } else if (number->get() < 0 || number->get() > kMaxBackendDomid) {
          problem(value, full,
                  fmt::format("{} is not a backend domain ID (0..{:#x}; {:#x} and above are "
                              "reserved by Xen)",
                              number->get(), kMaxBackendDomid, kMaxBackendDomid + 1));
          ok = false;
        } else {
          spec.xen_backend_domid = static_cast<std::uint16_t>(number->get());
        }
      } else {
        problem_at(key.source(), full,
                   fmt::format("unknown key{}; the keys are {}", suggestion(name, kDeviceKeys),
                               quoted_list(kDeviceKeys)));
        ok = false;
      }
    }
    const auto missing = [&](std::string_view key) {
      problems_.push_back(fmt::format("{}:{}:{}: {}: missing required key \"{}\"", config_.source,
                                      table.source().begin.line, table.source().begin.column,
                                      prefix, key));
      ok = false;
    };
    if (!table.contains("name")) missing("name");
    if (!table.contains("kind")) missing("kind");
    if (!table.contains("transport")) missing("transport");
    if (have_kind && spec.kind == DeviceKind::kVirtioBlk) {
      if (path_node == nullptr) {
        missing("path");
      } else if (!spec.path.empty() && check_files_) {
        std::error_code ec;
        const auto status = std::filesystem::status(spec.path, ec);
        if (ec || !std::filesystem::exists(status)) {
          problem(*path_node, prefix + ".path",
                  fmt::format("backing file {} does not exist", spec.path.string()));
          ok = false;
        } else if (!std::filesystem::is_regular_file(status) &&
                   !std::filesystem::is_block_file(status)) {
          problem(
              *path_node, prefix + ".path",
              fmt::format("{} is neither a regular file nor a block device", spec.path.string()));
          ok = false;
        }
      }
    } else if (have_kind) {
      if (path_node != nullptr) {
        problem(*path_node, prefix + ".path", "only virtio-blk devices have a backing file");
        ok = false;
      }
      if (read_only_node != nullptr) {
        problem(*read_only_node, prefix + ".read_only", "only virtio-blk devices are read-only");
        ok = false;
      }
      for (const auto& [node, key] : blk_only) {
        problem(*node, key, "only virtio-blk devices have this key");
        ok = false;
      }
    }
    if (!ok) return;
    if (!names_.insert(spec.name).second) {
      problem(*table.get("name"), prefix + ".name",
              fmt::format("duplicate device name \"{}\" (names pick the socket file)", spec.name));
      return;
    }
    config_.devices.push_back(std::move(spec));
  }

  bool check_name(const toml::node& node, const std::string& key, const std::string& name) {
    if (name.empty() || name.size() > kMaxDeviceNameLength) {
      problem(node, key,
              fmt::format("a device name is 1 to {} characters, not {}", kMaxDeviceNameLength,
                          name.size()));
      return false;
    }
    if (name.front() == '.') {
      problem(node, key, fmt::format("device name \"{}\" must not start with '.'", name));
      return false;
    }
    for (char c : name) {
      if (!valid_name_char(c)) {
        problem(node, key,
                fmt::format("device name \"{}\" has '{}'; names use letters, digits, '_', '-' "
                            "and '.' (the name becomes <socket_dir>/<name>.sock)",
                            name, c));
        return false;
      }
    }
    return true;
  }

  ServeConfig config_;
  std::filesystem::path base_dir_;
  bool check_files_;
  std::vector<std::string> problems_;
  std::set<std::string> names_;
};

}  // namespace

std::string_view device_kind_name(DeviceKind kind) {
  return kKindNames[static_cast<std::size_t>(kind)];
}

Result<ServeConfig> parse_serve_config(std::string_view text, std::string source,
                                       const std::filesystem::path& base_dir, bool check_files) {
  try {
    const toml::table document = toml::parse(text, source);
    return Reader(std::move(source), base_dir, check_files).read(document);
  } catch (const toml::parse_error& e) {
    return make_error(ErrorCode::kMalformedInput, "{}:{}:{}: not valid TOML: {}", source,
                      e.source().begin.line, e.source().begin.column, e.description());
  } catch (const std::exception& e) {
    return make_error(ErrorCode::kMalformedInput, "{}: {}", source, e.what());
  }
}

Result<ServeConfig> load_serve_config(const std::filesystem::path& file) {
  VPCI_ASSIGN_OR_RETURN(const std::string text, read_input_file(file, kConfigurationInput));
  // Relative paths inside resolve against the file's absolute directory, so a socket
  // path printed for QEMU (which may run elsewhere) is absolute too.
  std::error_code ec;
  std::filesystem::path base = std::filesystem::absolute(file, ec).parent_path();
  if (ec) base = file.parent_path();
  return parse_serve_config(text, file.string(), base);
}

std::string default_serve_config_text(const std::filesystem::path& blk_image) {
  // toml::value<std::string> formats the path as a TOML basic string with escapes.
  std::ostringstream quoted;
  quoted << toml::value<std::string>(blk_image.string());
  return fmt::format(R"(# vpci serve default devices
[[device]]
name = "rng0"
kind = "virtio-rng"
transport = "modern"

[[device]]
name = "blk0"
kind = "virtio-blk"
transport = "modern"
path = {}
)",
                     quoted.str());
}

}  // namespace vpci::server
