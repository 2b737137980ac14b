#include "pci/sysfs_source.h"

#include <algorithm>
#include <charconv>
#include <system_error>

#include "base/input_file.h"
#include "pci/registers.h"

namespace vpci::pci {
namespace {

// `resource` has at most a few dozen short lines (PCI_NUM_RESOURCES); sysfs reports a
// nominal size of 4 KiB for it.
constexpr InputFileKind kResourceInput{"sysfs resource file", std::size_t{64} * 1024};

Result<std::uint64_t> parse_hex_field(std::string_view field, std::size_t line_number) {
  std::string_view digits = field;
  if (digits.starts_with("0x")) digits.remove_prefix(2);
  std::uint64_t value = 0;
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value, 16);
  if (digits.empty() || ec != std::errc() || end != digits.data() + digits.size()) {
    return make_error(ErrorCode::kMalformedInput,
                      "{}: '{}' is not a hex number (expected 'start end flags' per line)",
                      line_number, field);
  }
  return value;
}

// The `config` file's size is the device's config space size (pci-sysfs.c sizes the
// attribute by the device's cfg_size).
bool is_space_size(std::uintmax_t size) {
  return size == kConventionalConfigSize || size == kExtendedConfigSize;
}

}  // namespace

bool is_sysfs_device_directory(const std::filesystem::path& dir) {
  std::error_code ec;
  return std::filesystem::is_directory(dir, ec) && std::filesystem::exists(dir / "config", ec);
}

Result<std::array<std::optional<std::uint64_t>, 6>> parse_sysfs_resource(std::string_view text) {
  std::array<std::optional<std::uint64_t>, 6> sizes{};
  std::size_t line_number = 0;
  while (!text.empty() && line_number < sizes.size()) {
    const std::size_t newline = text.find('\n');
    std::string_view line = text.substr(0, newline);
    text.remove_prefix(newline == std::string_view::npos ? text.size() : newline + 1);
    std::array<std::uint64_t, 3> fields{};  // start, end, flags
    for (auto& field : fields) {
      const std::size_t begin = line.find_first_not_of(' ');
      if (begin == std::string_view::npos) {
        return make_error(ErrorCode::kMalformedInput, "{}: expected 'start end flags'",
                          line_number + 1);
      }
      line.remove_prefix(begin);
      const std::size_t end = std::min(line.find(' '), line.size());
      VPCI_ASSIGN_OR_RETURN(field, parse_hex_field(line.substr(0, end), line_number + 1));
      line.remove_prefix(end);
    }
    const auto [start, last, flags] = fields;
    // No flags: the kernel found no BAR there. An unassigned BAR keeps its size with
    // start 0 (the kernel's IORESOURCE_UNSET), so the size is end - start + 1.
    if (flags != 0 && last >= start && last != 0) sizes[line_number] = last - start + 1;
    ++line_number;
  }
  return sizes;
}

Result<DeviceDump> load_sysfs_device(const std::filesystem::path& dir) {
  const auto config_path = dir / "config";
  std::error_code ec;
  auto name = std::filesystem::canonical(dir, ec).filename().string();
  if (ec) name = dir.filename().string();
  VPCI_ASSIGN_OR_RETURN(auto address, parse_device_address(name).map_error([&](Error e) {
    return std::move(e).with_context(
        fmt::format("{} is not a sysfs PCI device directory", dir.string()));
  }));
  VPCI_ASSIGN_OR_RETURN(const std::string bytes, read_input_file(config_path, kConfigSpaceInput));
  const std::span<const std::uint8_t> raw(reinterpret_cast<const std::uint8_t*>(bytes.data()),
                                          bytes.size());
  VPCI_ASSIGN_OR_RETURN(auto dump, parse_raw_config(raw, address).map_error([&](Error e) {
    return std::move(e).with_context(config_path.string());
  }));
  dump.origin = DumpOrigin::kSysfs;
  dump.file = config_path;
  const std::uintmax_t file_size = std::filesystem::file_size(config_path, ec);
  if (!ec && is_space_size(file_size) && bytes.size() <= file_size) {
    // The kernel's file: it says how large the space is, and a shorter read is the
    // kernel hiding the rest from an unprivileged reader.
    dump.space_size = static_cast<std::uint32_t>(file_size);
    dump.truncation = bytes.size() < file_size ? Truncation::kPermissions : Truncation::kNone;
  }  // else a copy of a device directory: sized by its bytes, as parse_raw_config did
  const auto resource_path = dir / "resource";
  if (std::filesystem::exists(resource_path, ec)) {
    VPCI_ASSIGN_OR_RETURN(const std::string text, read_input_file(resource_path, kResourceInput));
    VPCI_ASSIGN_OR_RETURN(dump.bar_sizes, parse_sysfs_resource(text).map_error([&](Error e) {
      e.message = fmt::format("{}:{}", resource_path.string(), e.message);
      return e;
    }));
  }
  return dump;
}

Result<std::vector<DeviceDump>> load_sysfs_devices(const std::filesystem::path& dir) {
  std::error_code ec;
  std::vector<std::filesystem::path> entries;
  for (auto it = std::filesystem::directory_iterator(dir, ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    // /sys/bus/pci/devices holds symbolic links named by address; other directories
    // (/sys/devices/pci0000:00) mix device directories with attributes.
    if (parse_device_address(it->path().filename().string()) &&
        is_sysfs_device_directory(it->path())) {
      entries.push_back(it->path());
    }
  }
  if (ec) return make_error(ErrorCode::kIoError, "{}: cannot list: {}", dir.string(), ec.message());
  std::vector<DeviceDump> devices;
  for (const auto& entry : entries) {
    VPCI_ASSIGN_OR_RETURN(auto device, load_sysfs_device(entry));
    devices.push_back(std::move(device));
  }
  std::sort(devices.begin(), devices.end(),
            [](const DeviceDump& a, const DeviceDump& b) { return a.address < b.address; });
  return devices;
}

}  // namespace vpci::pci
