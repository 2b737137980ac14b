#include "server/serve_config.h"

#include <algorithm>
#include <array>
#include <cctype>
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
#include "devices/net_spec.h"
#include "devices/tap_backend.h"

namespace vpci::server {
namespace {

constexpr std::array<std::string_view, 2> kTopKeys = {"socket_dir", "device"};
constexpr std::array<std::string_view, 17> kDeviceKeys = {"name",
                                                          "kind",
                                                          "transport",
                                                          "path",
                                                          "read_only",
                                                          "queues",
                                                          "io",
                                                          "tap",
                                                          "mac",
                                                          "mtu",
                                                          "mergeable_rx_buffers",
                                                          "xen_backend_domid",
                                                          "vfs",
                                                          "poll_us",
                                                          "notify",
                                                          "interrupt_delay_us",
                                                          "interrupt_batch"};
constexpr std::array<std::string_view, 3> kKindNames = {"virtio-rng", "virtio-blk", "virtio-net"};

constexpr std::uint8_t kind_bit(DeviceKind kind) {
  return static_cast<std::uint8_t>(1u << static_cast<unsigned>(kind));
}
constexpr std::uint8_t kAllKinds = 0x7;
constexpr std::uint8_t kRng = kind_bit(DeviceKind::kVirtioRng);
constexpr std::uint8_t kBlk = kind_bit(DeviceKind::kVirtioBlk);
constexpr std::uint8_t kNet = kind_bit(DeviceKind::kVirtioNet);

// Which kinds of device have `key`.
std::uint8_t kinds_with_key(std::string_view key) {
  if (key == "path" || key == "read_only" || key == "io") return kBlk;
  if (key == "queues") return kBlk | kNet;
  // A VF needs a back end of its own: entropy, or a tap derived from the PF's; an image
  // per VF has no key to name it.
  if (key == "vfs") return kRng | kNet;
  if (key == "tap" || key == "mac" || key == "mtu" || key == "mergeable_rx_buffers") return kNet;
  return kAllKinds;
}

std::string kind_list(std::uint8_t kinds) {
  std::string out;
  for (std::size_t i = 0; i < kKindNames.size(); ++i) {
    if ((kinds & (1u << i)) == 0) continue;
    if (!out.empty()) out += " and ";
    out += kKindNames[i];
  }
  return out + " devices have it";
}

// "02:xx:xx:xx:xx:xx": locally administered (bit 1 of the first byte), unicast, the rest
// from an FNV-1a hash of the device name — stable across restarts, distinct per name.
// "52:54:00:12:34:56" (colons or dashes): a unicast address that is not all zeroes.
Result<std::array<std::uint8_t, 6>> parse_mac(std::string_view text) {
  std::array<std::uint8_t, 6> mac{};
  const auto bad = [&] {
    return make_error(ErrorCode::kMalformedInput,
                      "\"{}\" is not a MAC address (six hex bytes: \"52:54:00:12:34:56\")", text);
  };
  if (text.size() != 17) return bad();
  for (std::size_t i = 0; i < mac.size(); ++i) {
    const std::string_view part = text.substr(3 * i, 2);
    if (i > 0 && text[3 * i - 1] != ':' && text[3 * i - 1] != '-') return bad();
    unsigned value = 0;
    for (const char c : part) {
      const int digit = std::isxdigit(static_cast<unsigned char>(c)) == 0 ? -1
                        : std::isdigit(static_cast<unsigned char>(c)) != 0
                            ? c - '0'
                            : (std::tolower(static_cast<unsigned char>(c)) - 'a' + 10);
      if (digit < 0) return bad();
      value = value * 16 + static_cast<unsigned>(digit);
    }
    mac[i] = static_cast<std::uint8_t>(value);
  }
  if ((mac[0] & 1) != 0) {
    return make_error(ErrorCode::kMalformedInput,
                      "{} is a multicast address; a device needs a unicast one", text);
  }
  if (std::all_of(mac.begin(), mac.end(), [](std::uint8_t b) { return b == 0; }))
    return make_error(ErrorCode::kMalformedInput, "00:00:00:00:00:00 is not a station address");
  return mac;
}

std::array<std::uint8_t, 6> default_mac(std::string_view name) {
  std::uint64_t hash = 0xcbf29ce484222325ull;
  for (const char c : name) {
    hash ^= static_cast<std::uint8_t>(c);
    hash *= 0x100000001b3ull;
  }
  std::array<std::uint8_t, 6> mac{0x02};
  for (std::size_t i = 1; i < mac.size(); ++i) mac[i] = static_cast<std::uint8_t>(hash >> (8 * i));
  return mac;
}
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

  // Reads an integer key into `out` if it lies in [low, high].
  template <typename T>
  bool read_integer(const toml::node& value, const std::string& key, std::int64_t low,
                    std::int64_t high, std::string_view what, T& out) {
    const auto* number = value.as_integer();
    if (number == nullptr) {
      problem(value, key,
              fmt::format("expected an integer, found {}", toml_type_phrase(value.type())));
      return false;
    }
    if (number->get() < low || number->get() > high) {
      problem(value, key, fmt::format("{} {}; expected {} to {}", number->get(), what, low, high));
      return false;
    }
    out = static_cast<T>(number->get());
    return true;
  }

  bool read_device_key(const std::string& name, const toml::node& value, const std::string& full,
                       ServedDeviceSpec& spec) {
    if (name == "name") {
      const std::string* text = expect_string(value, full);
      if (text == nullptr || !check_name(value, full, *text)) return false;
      spec.name = *text;
    } else if (name == "kind") {
      auto choice = expect_choice(value, full, kKindNames, "kind");
      if (!choice) return false;
      spec.kind = static_cast<DeviceKind>(*choice);
      kind_read_ = true;
    } else if (name == "transport") {
      auto choice = expect_choice(value, full, kTransportNames, "transport");
      if (!choice) return false;
      spec.transport = static_cast<TransportKind>(*choice);
    } else if (name == "path") {
      const std::string* text = expect_string(value, full);
      if (text == nullptr) return false;
      if (text->empty()) {
        problem(value, full, "must not be empty");
        return false;
      }
      if (text->find('\0') != std::string::npos) {
        // open() would stop at the NUL and serve a different file (found by
        // serve_config_fuzzer).
        problem(value, full, "must not contain a NUL character");
        return false;
      }
      spec.path = resolve(*text);
    } else if (name == "read_only" || name == "mergeable_rx_buffers") {
      const auto* flag = value.as_boolean();
      if (flag == nullptr) {
        problem(value, full,
                fmt::format("expected a boolean, found {}", toml_type_phrase(value.type())));
        return false;
      }
      (name == "read_only" ? spec.read_only : spec.mergeable_rx_buffers) = flag->get();
    } else if (name == "queues") {
      return read_integer(value, full, 1, kMaxBlkQueues, "queues", spec.queues);
    } else if (name == "vfs") {
      return read_integer(value, full, 1, kMaxVfs, "VFs", spec.vfs);
    } else if (name == "poll_us") {
      return read_integer(value, full, 0, kMaxPollMicroseconds, "microseconds", spec.poll_us);
    } else if (name == "interrupt_delay_us") {
      return read_integer(value, full, 0, kMaxInterruptDelayMicroseconds, "microseconds",
                          spec.interrupt_delay_us);
    } else if (name == "interrupt_batch") {
      return read_integer(value, full, 1, kMaxInterruptBatch, "buffers", spec.interrupt_batch);
    } else if (name == "notify") {
      auto choice = expect_choice(value, full, kNotifyModeNames, "notification mode");
      if (!choice) return false;
      spec.notify = static_cast<NotifyMode>(*choice);
    } else if (name == "io") {
      auto choice = expect_choice(value, full, devices::kBlockIoModeNames, "I/O engine");
      if (!choice) return false;
      spec.io = static_cast<devices::BlockIoMode>(*choice);
    } else if (name == "tap") {
      const std::string* text = expect_string(value, full);
      if (text == nullptr) return false;
      if (text->empty() || text->size() > devices::TapBackend::kMaxNameLength ||
          text->find_first_of("/: \t\n\0") != std::string::npos) {
        problem(value, full,
                fmt::format("\"{}\" is not an interface name (1 to {} characters, no '/', ':' "
                            "or spaces)",
                            *text, devices::TapBackend::kMaxNameLength));
        return false;
      }
      spec.tap = *text;
    } else if (name == "mac") {
      const std::string* text = expect_string(value, full);
      if (text == nullptr) return false;
      auto mac = parse_mac(*text);
      if (!mac) {
        problem(value, full, mac.error().message);
        return false;
      }
      spec.mac = *mac;
    } else if (name == "mtu") {
      return read_integer(value, full, devices::net::kMinMtu, 65535, "MTU", spec.mtu);
    } else if (name == "xen_backend_domid") {
      const auto* number = value.as_integer();
      if (number == nullptr) {
        problem(value, full,
                fmt::format("expected an integer, found {}", toml_type_phrase(value.type())));
        return false;
      }
      if (number->get() < 0 || number->get() > kMaxBackendDomid) {
        problem(value, full,
                fmt::format("{} is not a backend domain ID (0..{:#x}; {:#x} and above are "
                            "reserved by Xen)",
                            number->get(), kMaxBackendDomid, kMaxBackendDomid + 1));
        return false;
      }
      spec.xen_backend_domid = static_cast<std::uint16_t>(number->get());
    } else {
      return false;  // the caller reports unknown keys
    }
    return true;
  }

  void read_device(const toml::table& table, const std::string& prefix) {
    ServedDeviceSpec spec;
    spec.line = table.source().begin.line;
    bool ok = true;
    kind_read_ = false;
    std::vector<std::pair<const toml::node*, std::string>> present;  // value, key
    for (auto&& [key, value] : table) {
      const std::string name(key.str());
      std::string full = prefix;
      full.append(".").append(name);
      if (std::find(kDeviceKeys.begin(), kDeviceKeys.end(), name) == kDeviceKeys.end()) {
        problem_at(key.source(), full,
                   fmt::format("unknown key{}; the keys are {}", suggestion(name, kDeviceKeys),
                               quoted_list(kDeviceKeys)));
        ok = false;
        continue;
      }
      present.emplace_back(&value, name);
      if (!read_device_key(name, value, full, spec)) ok = false;
    }
    const auto missing = [&](std::string_view key) {
      problems_.push_back(fmt::format("{}:{}:{}: {}: missing required key \"{}\"", config_.source,
                                      table.source().begin.line, table.source().begin.column,
                                      prefix, key));
      ok = false;
    };
    for (const std::string_view key : {"name", "kind", "transport"})
      if (!table.contains(key)) missing(key);
    // Kind rules are checked whenever the kind is known, so every problem is reported.
    if (kind_read_ && !check_kind_keys(table, prefix, spec, present)) ok = false;
    if (!ok) return;
    if (!names_.insert(spec.name).second) {
      problem(*table.get("name"), prefix + ".name",
              fmt::format("duplicate device name \"{}\" (names pick the socket file)", spec.name));
      return;
    }
    config_.devices.push_back(std::move(spec));
  }

  // Keys that belong to other kinds, keys this kind requires, and kind-specific ranges.
  bool check_kind_keys(const toml::table& table, const std::string& prefix, ServedDeviceSpec& spec,
                       const std::vector<std::pair<const toml::node*, std::string>>& present) {
    bool ok = true;
    const std::string_view kind = device_kind_name(spec.kind);
    for (const auto& [node, key] : present) {
      const std::uint8_t kinds = kinds_with_key(key);
      if ((kinds & kind_bit(spec.kind)) == 0) {
        problem(*node, prefix + "." + key,
                fmt::format("a {} device has no such key (only {})", kind, kind_list(kinds)));
        ok = false;
      }
    }
    const auto require = [&](std::string_view key) {
      if (table.contains(key)) return;
      problems_.push_back(
          fmt::format("{}:{}:{}: {}: missing required key \"{}\" (a {} device "
                      "needs it)",
                      config_.source, table.source().begin.line, table.source().begin.column,
                      prefix, key, kind));
      ok = false;
    };
    if (spec.kind == DeviceKind::kVirtioBlk) {
      require("path");
      if (!spec.path.empty() && check_files_) {
        std::error_code ec;
        const auto status = std::filesystem::status(spec.path, ec);
        const toml::node& path_node = *table.get("path");
        if (ec || !std::filesystem::exists(status)) {
          problem(path_node, prefix + ".path",
                  fmt::format("backing file {} does not exist", spec.path.string()));
          ok = false;
        } else if (!std::filesystem::is_regular_file(status) &&
                   !std::filesystem::is_block_file(status)) {
          problem(
              path_node, prefix + ".path",
              fmt::format("{} is neither a regular file nor a block device", spec.path.string()));
          ok = false;
        }
      }
    }
    if (!check_vfs(table, prefix, spec)) ok = false;
    if (spec.notify == NotifyMode::kMapped && spec.transport != TransportKind::kModern &&
        spec.transport != TransportKind::kTransitional) {
      // The mapped doorbells are the modern notification area in BAR4; the other
      // transports' guests ring elsewhere (legacy I/O BAR0, a mapper, an admin queue).
      problem(*table.get("notify"), prefix + ".notify",
              fmt::format("\"mapped\" needs the modern notification area: transport \"modern\" "
                          "or \"transitional\", not \"{}\"",
                          transport_kind_name(spec.transport)));
      ok = false;
    }
    if (spec.interrupt_batch != 0 && spec.interrupt_delay_us == 0) {
      // A batch limit alone would hold a lone completion for ever.
      problem(*table.get("interrupt_batch"), prefix + ".interrupt_batch",
              "needs interrupt_delay_us (the most a held interrupt may wait)");
      ok = false;
    }
    if (spec.kind == DeviceKind::kVirtioNet) {
      require("tap");
      if (spec.queues > devices::net::kMaxQueuePairs) {
        problem(*table.get("queues"), prefix + ".queues",
                fmt::format("{} queue pairs; a virtio-net device has 1 to {}", spec.queues,
                            devices::net::kMaxQueuePairs));
        ok = false;
      }
      if (!spec.mac) spec.mac = default_mac(spec.name);
    }
    return ok;
  }

  // `vfs` goes with transport "sriov-pf" and nothing else; a net VF's tap name (the PF's
  // tap + "v" + the VF's number) must still be an interface name.
  bool check_vfs(const toml::table& table, const std::string& prefix,
                 const ServedDeviceSpec& spec) {
    const toml::node* vfs = table.get("vfs");
    const bool sriov = spec.transport == TransportKind::kSriovPf;
    if (sriov && (kinds_with_key("vfs") & kind_bit(spec.kind)) == 0) {
      problem(*table.get("transport"), prefix + ".transport",
              fmt::format("a {} device cannot be sriov-pf: each VF needs a back end of its own "
                          "(only {})",
                          device_kind_name(spec.kind), kind_list(kinds_with_key("vfs"))));
      return false;
    }
    if (sriov && vfs == nullptr) {
      problems_.push_back(fmt::format(
          "{}:{}:{}: {}: missing required key \"vfs\" (a sriov-pf "
          "device needs it: its number of VFs)",
          config_.source, table.source().begin.line, table.source().begin.column, prefix));
      return false;
    }
    if (!sriov && vfs != nullptr) {
      problem(*vfs, prefix + ".vfs",
              fmt::format("only a sriov-pf device has VFs (this one is {})",
                          transport_kind_name(spec.transport)));
      return false;
    }
    if (sriov && spec.kind == DeviceKind::kVirtioNet && !spec.tap.empty() &&
        spec.tap.size() + 1 + std::to_string(spec.vfs).size() >
            devices::TapBackend::kMaxNameLength) {
      problem(*table.get("tap"), prefix + ".tap",
              fmt::format("\"{}\" leaves no room for the VFs' taps (\"{}\" is longer than {} "
                          "characters)",
                          spec.tap, vf_tap_name(spec.tap, spec.vfs),
                          devices::TapBackend::kMaxNameLength));
      return false;
    }
    return true;
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
  bool kind_read_ = false;  // the current device's kind parsed
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

std::string vf_tap_name(std::string_view pf_tap, unsigned vf) {
  return fmt::format("{}v{}", pf_tap, vf);
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
