#include "pci/dump.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <fstream>
#include <iterator>
#include <system_error>

#include "base/input_file.h"
#include "pci/registers.h"

namespace vpci::pci {
namespace {

bool is_hex(char c) {
  return std::isxdigit(static_cast<unsigned char>(c)) != 0;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  return (std::tolower(static_cast<unsigned char>(c)) - 'a') + 10;
}

// Matches `pattern` where '#' stands for a hex digit (pciutils dump_validate).
bool matches(std::string_view s, std::string_view pattern) {
  if (s.size() < pattern.size()) return false;
  for (std::size_t i = 0; i < pattern.size(); ++i) {
    if (pattern[i] == '#' ? !is_hex(s[i]) : pattern[i] != s[i]) return false;
  }
  return true;
}

std::uint32_t parse_hex(std::string_view s) {
  std::uint32_t v = 0;
  for (char c : s) v = v * 16 + static_cast<std::uint32_t>(hex_value(c));
  return v;
}

// Recognises a device line; on success fills `address`.
bool parse_device_line(std::string_view line, DeviceAddress& address) {
  std::size_t domain_digits = 0;
  if (matches(line, "##:##.# ")) {
    domain_digits = 0;
  } else if (matches(line, "####:##:##.# ")) {
    domain_digits = 4;
  } else if (matches(line, "#####:##:##.# ")) {
    domain_digits = 5;
  } else {
    return false;
  }
  std::string_view rest = line;
  address.domain = 0;
  if (domain_digits != 0) {
    address.domain = parse_hex(rest.substr(0, domain_digits));
    rest.remove_prefix(domain_digits + 1);
  }
  address.bus = static_cast<std::uint8_t>(parse_hex(rest.substr(0, 2)));
  address.device = static_cast<std::uint8_t>(parse_hex(rest.substr(3, 2)));
  address.function = static_cast<std::uint8_t>(hex_value(rest[6]));
  return true;
}

// Length of the hex offset prefix of a data line ("1f0: "), or 0 if not a data line.
std::size_t data_prefix_digits(std::string_view line) {
  for (std::size_t digits = 2; digits <= 8; ++digits) {
    if (line.size() < digits + 2) return 0;
    bool all_hex = true;
    for (std::size_t i = 0; i < digits; ++i) all_hex = all_hex && is_hex(line[i]);
    if (!all_hex) return 0;
    if (line[digits] == ':' && line[digits + 1] == ' ') return digits;
  }
  return 0;
}

bool printable_text(std::span<const std::uint8_t> bytes) {
  return std::all_of(bytes.begin(), bytes.end(), [](std::uint8_t b) {
    return b == '\n' || b == '\r' || b == '\t' || (b >= 0x20 && b < 0x7F);
  });
}

Result<std::vector<std::uint8_t>> read_file(const std::filesystem::path& path) {
  VPCI_ASSIGN_OR_RETURN(const std::string text, read_input_file(path, kConfigSpaceInput));
  return std::vector<std::uint8_t>(text.begin(), text.end());
}

}  // namespace

std::string DeviceAddress::to_string() const {
  return fmt::format("{:04x}:{:02x}:{:02x}.{:x}", domain, bus, device, function);
}

Result<DeviceAddress> parse_device_address(std::string_view text) {
  DeviceAddress address;
  // The device-line grammar needs its trailing space; the address itself has none.
  const bool has_space = text.find_first_of(" \t") != std::string_view::npos;
  if (has_space || !parse_device_line(std::string(text) + " ", address) ||
      (text.size() != 7 && text.size() != 12 && text.size() != 13)) {
    return make_error(ErrorCode::kInvalidArgument,
                      "'{}' is not a PCI address (expected BB:DD.F or DDDD:BB:DD.F)", text);
  }
  if (address.device > 31 || address.function > 7) {
    return make_error(ErrorCode::kInvalidArgument, "'{}': device must be 00-1f and function 0-7",
                      text);
  }
  return address;
}

namespace {
// The 1-based column of `rest`, a suffix of `line`.
std::size_t column(std::string_view line, std::string_view rest) {
  return static_cast<std::size_t>(rest.data() - line.data()) + 1;
}
}  // namespace

Result<std::vector<DeviceDump>> parse_lspci_text(std::string_view text) {
  std::vector<DeviceDump> devices;
  bool in_device = false;
  std::size_t line_number = 0;
  while (!text.empty()) {
    ++line_number;
    const std::size_t newline = text.find('\n');
    std::string_view line = text.substr(0, newline);
    text.remove_prefix(newline == std::string_view::npos ? text.size() : newline + 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.size() > 254) {
      return make_error(ErrorCode::kMalformedInput, "{}:255: longer than 254 characters",
                        line_number);
    }
    DeviceAddress address;
    if (parse_device_line(line, address)) {
      devices.push_back({address, {}});
      in_device = true;
      continue;
    }
    if (line.empty()) {
      in_device = false;
      continue;
    }
    const std::size_t digits = data_prefix_digits(line);
    if (!in_device || digits == 0) continue;  // -v text and anything else is ignored
    std::uint32_t offset = parse_hex(line.substr(0, digits));
    std::string_view bytes = line.substr(digits + 2);
    auto& config = devices.back().config;
    while (bytes.size() >= 2 && is_hex(bytes[0]) && is_hex(bytes[1]) &&
           (bytes.size() == 2 || bytes[2] == ' ')) {
      if (offset >= kExtendedConfigSize) {
        return make_error(ErrorCode::kMalformedInput,
                          "{}:{}: offset {:#x} beyond 4096 bytes of config space", line_number,
                          column(line, bytes), offset);
      }
      if (offset >= config.size()) config.resize(offset + 1, 0xFF);
      config[offset++] = static_cast<std::uint8_t>(parse_hex(bytes.substr(0, 2)));
      bytes.remove_prefix(std::min<std::size_t>(3, bytes.size()));
    }
    if (!bytes.empty()) {
      return make_error(ErrorCode::kMalformedInput,
                        "{}:{}: malformed data '{}' (expected two-digit hex bytes separated by "
                        "single spaces)",
                        line_number, column(line, bytes), bytes);
    }
  }
  return devices;
}

Result<DeviceDump> parse_raw_config(std::span<const std::uint8_t> bytes, DeviceAddress address) {
  if (bytes.empty()) {
    return make_error(ErrorCode::kMalformedInput, "raw config is empty");
  }
  if (bytes.size() > kExtendedConfigSize) {
    return make_error(ErrorCode::kMalformedInput, "raw config of {} bytes exceeds 4096 bytes",
                      bytes.size());
  }
  return DeviceDump{address, std::vector<std::uint8_t>(bytes.begin(), bytes.end())};
}

Result<std::vector<DeviceDump>> load_dump_source(const std::filesystem::path& source) {
  std::error_code ec;
  if (std::filesystem::is_directory(source, ec)) {
    const auto config_path = source / "config";
    // Any directory other than a sysfs device's is a mistake about the path; say so
    // rather than report a "config" file the user never named.
    if (!std::filesystem::exists(config_path, ec)) {
      return make_error(ErrorCode::kInvalidArgument,
                        "{}: is a directory, expected a config-space source (lspci -x text, a "
                        "raw config file, or a sysfs PCI device directory holding 'config')",
                        source.string());
    }
    VPCI_ASSIGN_OR_RETURN(auto bytes, read_file(config_path));
    auto name = std::filesystem::canonical(source, ec).filename().string();
    if (ec) name = source.filename().string();
    VPCI_ASSIGN_OR_RETURN(auto address, parse_device_address(name).map_error([&](Error e) {
      return std::move(e).with_context(
          fmt::format("{} is not a sysfs PCI device directory", source.string()));
    }));
    VPCI_ASSIGN_OR_RETURN(auto dump, parse_raw_config(bytes, address).map_error([&](Error e) {
      return std::move(e).with_context(config_path.string());
    }));
    return std::vector<DeviceDump>{std::move(dump)};
  }
  VPCI_ASSIGN_OR_RETURN(auto bytes, read_file(source));
  if (!printable_text(bytes)) {
    // Raw dumps saved as "0000_00_02.0.config.bin" or "0000:00:02.0" keep their address.
    DeviceAddress address;
    std::string stem = source.filename().string().substr(0, 12);
    std::replace(stem.begin(), stem.end(), '_', ':');
    if (auto parsed = parse_device_address(stem)) address = *parsed;
    VPCI_ASSIGN_OR_RETURN(auto dump, parse_raw_config(bytes, address).map_error([&](Error e) {
      return std::move(e).with_context(source.string());
    }));
    return std::vector<DeviceDump>{std::move(dump)};
  }
  const std::string_view text(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  // Errors of the text start with "line:col: ", so the file joins them as
  // "file:line:col: " (README, "Exit status and messages").
  VPCI_ASSIGN_OR_RETURN(auto devices, parse_lspci_text(text).map_error([&](Error e) {
    e.message = fmt::format("{}:{}", source.string(), e.message);
    return e;
  }));
  if (devices.empty()) {
    return make_error(ErrorCode::kMalformedInput,
                      "{}: no device found (expected lspci -x text or a raw config file)",
                      source.string());
  }
  return devices;
}

std::string format_lspci_dump(const DeviceAddress& address, std::span<const std::uint8_t> config,
                              std::string_view comment) {
  std::string out = address.to_string() + " ";
  out += comment;
  out += '\n';
  for (std::size_t line = 0; line < config.size(); line += 16) {
    out += fmt::format("{:02x}:", line);
    for (std::size_t i = line; i < std::min(config.size(), line + 16); ++i) {
      out += fmt::format(" {:02x}", config[i]);
    }
    out += '\n';
  }
  out += '\n';
  return out;
}

}  // namespace vpci::pci
