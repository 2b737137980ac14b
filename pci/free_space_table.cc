#include "pci/free_space_table.h"

#include <algorithm>
#include <exception>
#include <fstream>
#include <iterator>
#include <sstream>

#include <toml++/toml.h>

#include "base/input_file.h"
#include "pci/registers.h"

namespace vpci::pci {
namespace {

Result<std::uint16_t> parse_hex16(std::string_view text, std::string_view whole) {
  if (text.empty() || text.size() > 4 || !std::all_of(text.begin(), text.end(), [](char c) {
        return std::isxdigit(static_cast<unsigned char>(c)) != 0;
      })) {
    return make_error(ErrorCode::kInvalidArgument,
                      "'{}' is not a device key (expected hex VVVV:DDDD or VVVV:DDDD:SVVV:SDDD)",
                      whole);
  }
  return static_cast<std::uint16_t>(std::stoul(std::string(text), nullptr, 16));
}

std::uint32_t line_of(const toml::node& node) {
  return node.source().begin.line;
}

// Reads a non-negative integer member of an inline range table.
Result<std::uint32_t> range_field(const toml::table& range, std::string_view name,
                                  const std::string& where) {
  const toml::node* node = range.get(name);
  if (node == nullptr) {
    return make_error(ErrorCode::kMalformedInput, "{}: range without '{}'", where, name);
  }
  const auto value = node->value<std::int64_t>();
  if (!node->is_integer() || !value || *value < 0 || *value > 0xFFFF) {
    return make_error(ErrorCode::kMalformedInput, "{}: '{}' must be an integer in 0..0xffff", where,
                      name);
  }
  return static_cast<std::uint32_t>(*value);
}

Result<FreeSpaceTableEntry> parse_entry(const std::string& source, std::string_view key_text,
                                        const toml::node& node) {
  const std::string where = fmt::format("{}:{}: devices.\"{}\"", source, line_of(node), key_text);
  FreeSpaceTableEntry entry;
  entry.line = line_of(node);
  VPCI_ASSIGN_OR_RETURN(entry.key, parse_device_key(key_text).map_error(
                                       [&](Error e) { return std::move(e).with_context(where); }));
  const toml::table* table = node.as_table();
  if (table == nullptr) {
    return make_error(ErrorCode::kMalformedInput, "{}: must be a table with a 'free' array", where);
  }
  for (auto&& [member, value] : *table) {
    if (member.str() != "free" && member.str() != "note") {
      return make_error(ErrorCode::kMalformedInput,
                        "{}:{}: unknown key '{}' (an entry has 'free' and optionally 'note')",
                        source, line_of(value), member.str());
    }
  }
  if (const toml::node* note = table->get("note")) {
    const auto text = note->value<std::string>();
    if (!note->is_string() || !text) {
      return make_error(ErrorCode::kMalformedInput, "{}: 'note' must be a string", where);
    }
    entry.note = *text;
  }
  const toml::node* free = table->get("free");
  if (free == nullptr || !free->is_array()) {
    return make_error(ErrorCode::kMalformedInput,
                      "{}: needs 'free = [ {{ offset = ..., length = ... }}, ... ]' (use [] for "
                      "a device known to have no free space)",
                      where);
  }
  for (const toml::node& item : *free->as_array()) {
    const std::string item_where =
        fmt::format("{}:{}: devices.\"{}\"", source, line_of(item), key_text);
    const toml::table* range = item.as_table();
    if (range == nullptr) {
      return make_error(ErrorCode::kMalformedInput,
                        "{}: each free range is {{ offset = N, length = N }}", item_where);
    }
    for (auto&& [member, value] : *range) {
      if (member.str() != "offset" && member.str() != "length") {
        return make_error(ErrorCode::kMalformedInput, "{}: unknown range key '{}'", item_where,
                          member.str());
      }
    }
    VPCI_ASSIGN_OR_RETURN(const std::uint32_t offset, range_field(*range, "offset", item_where));
    VPCI_ASSIGN_OR_RETURN(const std::uint32_t length, range_field(*range, "length", item_where));
    const std::uint32_t end = offset + length;
    if (length == 0 || offset % 4 != 0 || length % 4 != 0) {
      return make_error(ErrorCode::kInvalidArgument,
                        "{}: range [{:#x}, {:#x}) must be DWORD aligned with a non-zero DWORD "
                        "multiple length",
                        item_where, offset, end);
    }
    if (offset < kExtendedCapabilityStart || end > kExtendedConfigSize) {
      return make_error(ErrorCode::kOutOfRange,
                        "{}: range [{:#x}, {:#x}) is outside extended configuration space "
                        "[0x100, 0x1000)",
                        item_where, offset, end);
    }
    for (const auto& earlier : entry.free) {
      if (earlier.begin < end && offset < earlier.end) {
        return make_error(ErrorCode::kConflict, "{}: range [{:#x}, {:#x}) overlaps [{:#x}, {:#x})",
                          item_where, offset, end, earlier.begin, earlier.end);
      }
    }
    entry.free.push_back({CapabilitySpace::kExtended, offset, end});
  }
  std::sort(entry.free.begin(), entry.free.end(),
            [](const ConfigRange& a, const ConfigRange& b) { return a.begin < b.begin; });
  return entry;
}

Result<FreeSpaceTable> parse_document(const toml::table& document, std::string source) {
  FreeSpaceTable table;
  table.source = std::move(source);
  for (auto&& [key, value] : document) {
    if (key.str() == "format") {
      if (value.value<std::int64_t>() != std::optional<std::int64_t>(1) || !value.is_integer()) {
        return make_error(ErrorCode::kUnsupported, "{}:{}: only 'format = 1' is defined",
                          table.source, line_of(value));
      }
    } else if (key.str() != "devices") {
      return make_error(
          ErrorCode::kMalformedInput,
          "{}:{}: unknown top-level key '{}' (expected 'format' and [devices.\"VVVV:DDDD\"])",
          table.source, line_of(value), key.str());
    }
  }
  const toml::node* devices = document.get("devices");
  if (devices == nullptr) return table;  // an empty table is valid: it matches nothing
  if (!devices->is_table()) {
    return make_error(ErrorCode::kMalformedInput, "{}:{}: 'devices' must be a table", table.source,
                      line_of(*devices));
  }
  for (auto&& [key, value] : *devices->as_table()) {
    VPCI_ASSIGN_OR_RETURN(auto entry, parse_entry(table.source, key.str(), value));
    for (const auto& earlier : table.entries) {
      if (earlier.key == entry.key) {
        return make_error(ErrorCode::kConflict,
                          "{}: conflicting entries for {} at lines {} and {} (keys differ only in "
                          "spelling)",
                          table.source, entry.key.to_string(), earlier.line, entry.line);
      }
    }
    table.entries.push_back(std::move(entry));
  }
  return table;
}

}  // namespace

std::string DeviceKey::to_string() const {
  if (subsystem_vendor && subsystem_device) {
    return fmt::format("{:04x}:{:04x}:{:04x}:{:04x}", vendor, device, *subsystem_vendor,
                       *subsystem_device);
  }
  return fmt::format("{:04x}:{:04x}", vendor, device);
}

Result<DeviceKey> parse_device_key(std::string_view text) {
  std::vector<std::string_view> fields;
  std::string_view rest = text;
  while (true) {
    const std::size_t colon = rest.find(':');
    fields.push_back(rest.substr(0, colon));
    if (colon == std::string_view::npos) break;
    rest.remove_prefix(colon + 1);
  }
  if (fields.size() == 3) {
    return make_error(ErrorCode::kInvalidArgument,
                      "'{}': a subsystem is written as subsystem-vendor:subsystem-device "
                      "(VVVV:DDDD:SVVV:SDDD)",
                      text);
  }
  if (fields.size() != 2 && fields.size() != 4) {
    return make_error(ErrorCode::kInvalidArgument,
                      "'{}' is not a device key (expected VVVV:DDDD or VVVV:DDDD:SVVV:SDDD)", text);
  }
  DeviceKey key;
  VPCI_ASSIGN_OR_RETURN(key.vendor, parse_hex16(fields[0], text));
  VPCI_ASSIGN_OR_RETURN(key.device, parse_hex16(fields[1], text));
  if (fields.size() == 4) {
    VPCI_ASSIGN_OR_RETURN(key.subsystem_vendor, parse_hex16(fields[2], text));
    VPCI_ASSIGN_OR_RETURN(key.subsystem_device, parse_hex16(fields[3], text));
  }
  return key;
}

const FreeSpaceTableEntry* FreeSpaceTable::lookup(
    std::uint16_t vendor, std::uint16_t device, std::optional<std::uint16_t> subsystem_vendor,
    std::optional<std::uint16_t> subsystem_device) const {
  const FreeSpaceTableEntry* generic = nullptr;
  for (const auto& entry : entries) {
    if (entry.key.vendor != vendor || entry.key.device != device) continue;
    if (!entry.key.subsystem_vendor) {
      generic = &entry;
    } else if (subsystem_vendor && subsystem_device &&
               *entry.key.subsystem_vendor == *subsystem_vendor &&
               *entry.key.subsystem_device == *subsystem_device) {
      return &entry;
    }
  }
  return generic;
}

Result<FreeSpaceTable> parse_free_space_table(std::string_view text, std::string source) {
  // toml++ reports errors by exception; they stop here (DEVELOPERS.md: no exceptions
  // across our APIs).
  try {
    const toml::table document = toml::parse(text, source);
    return parse_document(document, std::move(source));
  } catch (const toml::parse_error& e) {
    return make_error(ErrorCode::kMalformedInput, "{}:{}:{}: not valid TOML: {}", source,
                      e.source().begin.line, e.source().begin.column, e.description());
  } catch (const std::exception& e) {
    return make_error(ErrorCode::kMalformedInput, "{}: {}", source, e.what());
  }
}

Result<FreeSpaceTable> load_free_space_table(const std::filesystem::path& path) {
  VPCI_ASSIGN_OR_RETURN(const std::string text, read_input_file(path, kConfigurationInput));
  // An empty file is a valid empty TOML table, but never what a user meant to name.
  if (text.empty()) {
    return make_error(ErrorCode::kMalformedInput,
                      "{}: the file is empty (expected a free-space table)", path.string());
  }
  return parse_free_space_table(text, path.string());
}

}  // namespace vpci::pci
