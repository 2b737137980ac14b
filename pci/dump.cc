#include "pci/dump.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <fstream>
#include <iterator>
#include <map>
#include <system_error>

#include "base/input_file.h"
#include "pci/registers.h"
#include "pci/sysfs_source.h"

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

// The device line's address must be one a bus can hold: device 0-0x1f, function 0-7
// (PCI Local Bus 3.0 §3.2.2.3.1: 5 device bits, 3 function bits). The columns point
// at the field, whose position depends on whether the line has a domain.
Status check_device_line(std::string_view line, const DeviceAddress& address,
                         std::size_t line_number) {
  const std::size_t dot = line.find('.');
  if (address.device > 0x1F) {
    return make_error(ErrorCode::kMalformedInput,
                      "{}:{}: impossible address: device {:#04x} exceeds 0x1f", line_number,
                      dot - 1, address.device);
  }
  if (address.function > 7) {
    return make_error(ErrorCode::kMalformedInput,
                      "{}:{}: impossible address: function {:x} exceeds 7", line_number, dot + 2,
                      address.function);
  }
  return {};
}

// Rows of a device follow each other without a gap or an overlap: lspci writes 16
// bytes per row from offset 0 (64 bytes for -x, 256 for -xxx, 4096 for -xxxx), so a
// jump is a lost row and an offset already covered a repeated one.
Status check_row_offset(std::uint32_t offset, const DeviceDump& device, std::size_t line_number,
                        std::size_t previous_row_line) {
  const auto next = static_cast<std::uint32_t>(device.config.size());
  if (offset > next) {
    return make_error(ErrorCode::kMalformedInput,
                      "{}:1: row {:#x} of {} leaves a gap: bytes {:#x}-{:#x} are missing (a row "
                      "was lost; rows follow each other from offset 0)",
                      line_number, offset, device.address.to_string(), next, offset - 1);
  }
  if (offset < next) {
    return make_error(ErrorCode::kMalformedInput,
                      "{}:1: row {:#x} of {} repeats bytes up to {:#x} already given (line {})",
                      line_number, offset, device.address.to_string(), next - 1, previous_row_line);
  }
  return {};
}

}  // namespace

Result<std::vector<DeviceDump>> parse_lspci_text(std::string_view text) {
  std::vector<DeviceDump> devices;
  std::map<DeviceAddress, std::size_t> device_lines;  // address -> line of its device line
  bool in_device = false;
  std::size_t previous_row_line = 0;
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
      VPCI_TRY(check_device_line(line, address, line_number));
      const auto [first, inserted] = device_lines.emplace(address, line_number);
      if (!inserted) {
        return make_error(ErrorCode::kMalformedInput,
                          "{}:1: device {} appears twice (first at line {})", line_number,
                          address.to_string(), first->second);
      }
      DeviceDump device;
      device.address = address;
      device.line = line_number;
      devices.push_back(std::move(device));
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
    VPCI_TRY(check_row_offset(offset, devices.back(), line_number, previous_row_line));
    previous_row_line = line_number;
    auto& config = devices.back().config;
    while (bytes.size() >= 2 && is_hex(bytes[0]) && is_hex(bytes[1]) &&
           (bytes.size() == 2 || bytes[2] == ' ')) {
      if (offset >= kExtendedConfigSize) {
        return make_error(ErrorCode::kMalformedInput,
                          "{}:{}: offset {:#x} beyond 4096 bytes of config space", line_number,
                          column(line, bytes), offset);
      }
      config.push_back(static_cast<std::uint8_t>(parse_hex(bytes.substr(0, 2))));
      ++offset;
      bytes.remove_prefix(std::min<std::size_t>(3, bytes.size()));
    }
    if (!bytes.empty()) {
      return make_error(ErrorCode::kMalformedInput,
                        "{}:{}: malformed data '{}' (expected two-digit hex bytes separated by "
                        "single spaces)",
                        line_number, column(line, bytes), bytes);
    }
  }
  for (auto& device : devices) classify_dump_size(device);
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
  DeviceDump dump;
  dump.address = address;
  dump.config.assign(bytes.begin(), bytes.end());
  dump.origin = DumpOrigin::kRawFile;
  classify_dump_size(dump);
  return dump;
}

std::string_view truncation_name(Truncation truncation) {
  switch (truncation) {
    case Truncation::kNone: return "none";
    case Truncation::kShortDump: return "short-dump";
    case Truncation::kPermissions: return "permissions";
  }
  return "none";
}

void classify_dump_size(DeviceDump& dump) {
  const std::size_t size = dump.config.size();
  dump.space_size = size > kConventionalConfigSize ? kExtendedConfigSize : kConventionalConfigSize;
  dump.truncation = size < dump.space_size ? Truncation::kShortDump : Truncation::kNone;
}

Result<std::vector<DeviceDump>> load_dump_source(const std::filesystem::path& source) {
  std::error_code ec;
  if (std::filesystem::is_directory(source, ec)) {
    if (is_sysfs_device_directory(source)) {
      VPCI_ASSIGN_OR_RETURN(auto dump, load_sysfs_device(source));
      return std::vector<DeviceDump>{std::move(dump)};
    }
    VPCI_ASSIGN_OR_RETURN(auto devices, load_sysfs_devices(source));
    // Any other directory is a mistake about the path; say so rather than report a
    // "config" file the user never named.
    if (devices.empty()) {
      return make_error(ErrorCode::kInvalidArgument,
                        "{}: is a directory, expected a config-space source (lspci -x text, a "
                        "raw config file, a sysfs PCI device directory holding 'config', or a "
                        "directory of those such as /sys/bus/pci/devices)",
                        source.string());
    }
    return devices;
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
    dump.file = source;
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
  for (auto& device : devices) device.file = source;
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
