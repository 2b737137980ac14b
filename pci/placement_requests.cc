// Building placement requests: the PASID, VSEC and DVSEC requests, and the parsers for
// the `--add` and `--hide` arguments (syntax in pci/placement.h).
#include <algorithm>
#include <cctype>
#include <map>

#include "base/little_endian.h"
#include "base/split.h"
#include "pci/placement_detail.h"
#include "pci/registers.h"

namespace vpci::pci {
namespace {

using placement_detail::kExt;
using placement_detail::kStd;
using placement_detail::round_up4;

Result<std::vector<std::uint8_t>> parse_hex_bytes(std::string_view text) {
  std::string digits;
  for (char c : text) {
    if (c == ':' || c == '_' || c == ' ') continue;
    if (!std::isxdigit(static_cast<unsigned char>(c))) {
      return make_error(ErrorCode::kInvalidArgument, "'{}' is not hex bytes", text);
    }
    digits += c;
  }
  if (digits.size() % 2 != 0) {
    return make_error(ErrorCode::kInvalidArgument, "'{}' has an odd number of hex digits", text);
  }
  std::vector<std::uint8_t> bytes;
  for (std::size_t i = 0; i < digits.size(); i += 2) {
    bytes.push_back(static_cast<std::uint8_t>(std::stoul(digits.substr(i, 2), nullptr, 16)));
  }
  return bytes;
}

}  // namespace

ExtendedCapabilityRequest make_pasid_request(const PasidFields& fields,
                                             std::optional<std::uint16_t> offset) {
  ExtendedCapabilityRequest request;
  request.id = ext_cap_id::kPasid;
  request.version = pasid::kVersion;
  const auto body = pasid_body(fields);
  const auto mask = pasid_body_write_mask();
  request.body.assign(body.begin(), body.end());
  request.body_write_mask.assign(mask.begin(), mask.end());
  request.offset = offset;
  request.label = "PASID";
  return request;
}

Result<ExtendedCapabilityRequest> make_vsec_request(std::uint16_t vsec_id, std::uint8_t revision,
                                                    std::span<const std::uint8_t> data,
                                                    std::optional<std::uint32_t> length) {
  const auto natural = static_cast<std::uint32_t>(8 + data.size());
  const std::uint32_t total = length.value_or(natural);
  if (revision > 0xF || total < natural || total > 0xFFF ||
      kExtendedCapabilityStart + round_up4(total) > kExtendedConfigSize) {
    return make_error(ErrorCode::kInvalidArgument,
                      "VSEC: revision {} (max 15) or length {:#x} (at least 8 + data, at most "
                      "0xf00) out of range",
                      revision, total);
  }
  ExtendedCapabilityRequest request;
  request.id = ext_cap_id::kVendorSpecific;
  request.version = 1;
  const std::uint32_t header =
      vsec_id | (static_cast<std::uint32_t>(revision) << 16) | (total << 20);
  request.body.assign(total - 4, 0);
  store_le(std::span(request.body), header);
  std::copy(data.begin(), data.end(), request.body.begin() + 4);
  request.label = fmt::format("VSEC {:#x}", vsec_id);
  return request;
}

Result<ExtendedCapabilityRequest> make_dvsec_request(std::uint16_t vendor, std::uint16_t dvsec_id,
                                                     std::uint8_t revision,
                                                     std::span<const std::uint8_t> data,
                                                     std::optional<std::uint32_t> length) {
  const auto natural = static_cast<std::uint32_t>(10 + data.size());
  const std::uint32_t total = length.value_or(natural);
  if (revision > 0xF || total < natural || total > 0xFFF ||
      kExtendedCapabilityStart + round_up4(total) > kExtendedConfigSize) {
    return make_error(ErrorCode::kInvalidArgument,
                      "DVSEC: revision {} (max 15) or length {:#x} (at least 10 + data, at most "
                      "0xf00) out of range",
                      revision, total);
  }
  ExtendedCapabilityRequest request;
  request.id = ext_cap_id::kDesignatedVendorSpecific;
  request.version = 1;
  const std::uint32_t header =
      vendor | (static_cast<std::uint32_t>(revision) << 16) | (total << 20);
  request.body.assign(total - 4, 0);
  store_le(std::span(request.body), header);
  store_le(std::span(request.body).subspan(4), dvsec_id);
  std::copy(data.begin(), data.end(), request.body.begin() + 6);
  request.label = fmt::format("DVSEC {:04x}:{:#x}", vendor, dvsec_id);
  return request;
}

Result<ExtendedCapabilityRequest> parse_capability_spec(std::string_view text) {
  const auto parts = split(text, ',');
  const std::string_view kind = parts[0];
  std::map<std::string_view, std::string_view> keys;
  for (std::size_t i = 1; i < parts.size(); ++i) {
    const std::size_t eq = parts[i].find('=');
    if (eq == std::string_view::npos || eq == 0) {
      return make_error(ErrorCode::kInvalidArgument, "--add {}: '{}' is not key=value", text,
                        parts[i]);
    }
    if (!keys.emplace(parts[i].substr(0, eq), parts[i].substr(eq + 1)).second) {
      return make_error(ErrorCode::kInvalidArgument, "--add {}: '{}' given twice", text,
                        parts[i].substr(0, eq));
    }
  }
  auto context = [&](Error e) { return std::move(e).with_context(fmt::format("--add {}", text)); };
  auto allow = [&](std::initializer_list<std::string_view> allowed) -> Status {
    for (const auto& [key, value] : keys) {
      if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
        return make_error(ErrorCode::kInvalidArgument, "--add {}: unknown key '{}' for {}", text,
                          key, kind);
      }
    }
    return {};
  };
  auto number = [&](std::string_view key,
                    std::uint64_t max) -> Result<std::optional<std::uint64_t>> {
    const auto it = keys.find(key);
    if (it == keys.end()) return std::optional<std::uint64_t>();
    VPCI_ASSIGN_OR_RETURN(const auto value, parse_number(it->second, max).map_error([&](Error e) {
      return std::move(e).with_context(fmt::format("--add {}: {}", text, key));
    }));
    return std::optional<std::uint64_t>(value);
  };
  auto hex = [&](std::string_view key) -> Result<std::vector<std::uint8_t>> {
    const auto it = keys.find(key);
    if (it == keys.end()) return std::vector<std::uint8_t>();
    return parse_hex_bytes(it->second).map_error([&](Error e) {
      return std::move(e).with_context(fmt::format("--add {}: {}", text, key));
    });
  };
  auto require = [&](std::string_view key) -> Status {
    if (keys.count(key) == 0) {
      return make_error(ErrorCode::kInvalidArgument, "--add {}: {} needs {}=", text, kind, key);
    }
    return {};
  };
  ExtendedCapabilityRequest request;
  if (kind == "vsec") {
    VPCI_TRY(allow({"id", "rev", "data", "length", "at"}));
    VPCI_TRY(require("id"));
    VPCI_ASSIGN_OR_RETURN(const auto id, number("id", 0xFFFF));
    VPCI_ASSIGN_OR_RETURN(const auto rev, number("rev", 0xF));
    VPCI_ASSIGN_OR_RETURN(const auto data, hex("data"));
    VPCI_ASSIGN_OR_RETURN(const auto length, number("length", 0xFFF));
    VPCI_ASSIGN_OR_RETURN(
        request,
        make_vsec_request(static_cast<std::uint16_t>(*id),
                          static_cast<std::uint8_t>(rev.value_or(0)), data,
                          length ? std::optional<std::uint32_t>(static_cast<std::uint32_t>(*length))
                                 : std::nullopt)
            .map_error(context));
  } else if (kind == "dvsec") {
    VPCI_TRY(allow({"vendor", "id", "rev", "data", "length", "at"}));
    VPCI_TRY(require("vendor"));
    VPCI_TRY(require("id"));
    VPCI_ASSIGN_OR_RETURN(const auto vendor, number("vendor", 0xFFFF));
    VPCI_ASSIGN_OR_RETURN(const auto id, number("id", 0xFFFF));
    VPCI_ASSIGN_OR_RETURN(const auto rev, number("rev", 0xF));
    VPCI_ASSIGN_OR_RETURN(const auto data, hex("data"));
    VPCI_ASSIGN_OR_RETURN(const auto length, number("length", 0xFFF));
    VPCI_ASSIGN_OR_RETURN(
        request, make_dvsec_request(
                     static_cast<std::uint16_t>(*vendor), static_cast<std::uint16_t>(*id),
                     static_cast<std::uint8_t>(rev.value_or(0)), data,
                     length ? std::optional<std::uint32_t>(static_cast<std::uint32_t>(*length))
                            : std::nullopt)
                     .map_error(context));
  } else if (kind == "raw") {
    VPCI_TRY(allow({"id", "version", "data", "wmask", "at"}));
    VPCI_TRY(require("id"));
    VPCI_ASSIGN_OR_RETURN(const auto id, number("id", 0xFFFF));
    VPCI_ASSIGN_OR_RETURN(const auto version, number("version", 0xF));
    VPCI_ASSIGN_OR_RETURN(request.body, hex("data"));
    VPCI_ASSIGN_OR_RETURN(request.body_write_mask, hex("wmask"));
    if (request.body_write_mask.size() > request.body.size()) {
      return make_error(ErrorCode::kInvalidArgument, "--add {}: wmask is longer than data", text);
    }
    if (*id == 0) {
      return make_error(ErrorCode::kInvalidArgument, "--add {}: ID 0 is the Null capability", text);
    }
    request.id = static_cast<std::uint16_t>(*id);
    request.version = static_cast<std::uint8_t>(version.value_or(1));
    request.label = fmt::format("capability {:#x}", request.id);
  } else if (kind == "free-space-gap") {
    VPCI_TRY(allow({"length", "at"}));
    VPCI_TRY(require("length"));
    VPCI_ASSIGN_OR_RETURN(const auto length, number("length", 0xFFF));
    VPCI_ASSIGN_OR_RETURN(
        request.body,
        free_space_gap_dvsec_body(static_cast<std::uint32_t>(*length)).map_error(context));
    request.id = ext_cap_id::kDesignatedVendorSpecific;
    request.version = free_space_dvsec::kCapabilityVersion;
    request.label = "free-space DVSEC (gap)";
  } else if (kind == "free-space-table") {
    VPCI_TRY(allow({"ranges", "at"}));
    VPCI_TRY(require("ranges"));
    std::vector<ConfigRange> ranges;
    for (const std::string_view item : split(keys["ranges"], '/')) {
      const std::size_t plus = item.find('+');
      if (plus == std::string_view::npos) {
        return make_error(ErrorCode::kInvalidArgument, "--add {}: range '{}' is not OFF+LEN", text,
                          item);
      }
      VPCI_ASSIGN_OR_RETURN(const auto begin,
                            parse_number(item.substr(0, plus), 0xFFF).map_error(context));
      VPCI_ASSIGN_OR_RETURN(const auto size,
                            parse_number(item.substr(plus + 1), 0x1000).map_error(context));
      const auto space = begin >= kExtendedCapabilityStart ? kExt : kStd;
      ranges.push_back(
          {space, static_cast<std::uint32_t>(begin), static_cast<std::uint32_t>(begin + size)});
    }
    VPCI_ASSIGN_OR_RETURN(request.body, free_space_table_dvsec_body(ranges).map_error(context));
    request.id = ext_cap_id::kDesignatedVendorSpecific;
    request.version = free_space_dvsec::kCapabilityVersion;
    request.label = "free-space DVSEC (table)";
  } else {
    return make_error(
        ErrorCode::kInvalidArgument,
        "--add {}: unknown kind '{}' (vsec, dvsec, raw, free-space-gap, free-space-table)", text,
        kind);
  }
  VPCI_ASSIGN_OR_RETURN(const auto at, number("at", 0xFFFF));
  if (at) request.offset = static_cast<std::uint16_t>(*at);
  return request;
}

Result<HideRequest> parse_hide_spec(std::string_view text) {
  HideRequest request;
  std::string_view value = text;
  if (!value.empty() && value[0] == '@') {
    request.kind = HideRequest::Kind::kOffset;
    value.remove_prefix(1);
  } else if (value.substr(0, 4) == "std:") {
    request.kind = HideRequest::Kind::kStandardId;
    value.remove_prefix(4);
  } else if (value.substr(0, 4) == "ext:") {
    value.remove_prefix(4);
  }
  const std::uint64_t max = request.kind == HideRequest::Kind::kStandardId ? 0xFF
                            : request.kind == HideRequest::Kind::kOffset   ? 0xFFF
                                                                           : 0xFFFF;
  VPCI_ASSIGN_OR_RETURN(const auto number, parse_number(value, max).map_error([&](Error e) {
    return std::move(e).with_context(fmt::format("--hide {} (ID, std:ID or @OFFSET)", text));
  }));
  request.value = static_cast<std::uint16_t>(number);
  if (request.kind != HideRequest::Kind::kOffset && request.value == 0) {
    return make_error(ErrorCode::kInvalidArgument, "--hide {}: ID 0 is the Null capability", text);
  }
  if (request.kind == HideRequest::Kind::kOffset &&
      (request.value % 4 != 0 || request.value < kStandardCapabilityStart)) {
    return make_error(ErrorCode::kInvalidArgument,
                      "--hide {}: a capability offset is DWORD aligned and at least 0x40", text);
  }
  return request;
}

}  // namespace vpci::pci
