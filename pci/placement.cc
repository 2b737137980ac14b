#include "pci/placement.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <map>
#include <set>

#include "pci/registers.h"

namespace vpci::pci {
namespace {

constexpr auto kExt = CapabilitySpace::kExtended;
constexpr auto kStd = CapabilitySpace::kStandard;

std::uint32_t round_up4(std::uint32_t v) {
  return (v + 3u) & ~3u;
}

std::string range_text(std::uint32_t begin, std::uint32_t end) {
  return fmt::format("[{:#x}, {:#x})", begin, end);
}

std::vector<std::string_view> split(std::string_view text, char separator) {
  std::vector<std::string_view> parts;
  while (true) {
    const std::size_t at = text.find(separator);
    parts.push_back(text.substr(0, at));
    if (at == std::string_view::npos) break;
    text.remove_prefix(at + 1);
  }
  return parts;
}

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

// ---- the current layout -------------------------------------------------------------

// Scans for placement: like the editor, extended space is walked whenever the space is
// 4 KiB, so the checks see exactly what add_extended_capability will see.
CapabilityScan scan_guest(const ConfigSpace& space) {
  return scan_capabilities(space.bytes());
}

struct Occupant {
  std::uint32_t begin;
  std::uint32_t end;
  std::string what;
};

std::string occupant_text(const Occupant& o) {
  return fmt::format("{} at {}", o.what, range_text(o.begin, o.end));
}

// AER is sized by the capability walker as vfio sizes it (0x2c, 0x38 for root ports),
// which stops before the TLP Prefix Log at +0x38..+0x47 (PCIe Base 6.0 §7.8.4.12). That
// register exists when the function supports End-End TLP Prefixes (Device Capabilities
// 2 bit 21) or Flit Mode (PCI Express Capabilities bit 15, which reuses it for the Flit
// header log); then nothing may be placed on it and AER extends to +0x48 (QEMU's
// PCI_ERR_SIZEOF), unless the next capability starts earlier.
std::uint32_t aer_extent(std::span<const std::uint8_t> config, const CapabilityScan& scan,
                         const Capability& aer) {
  constexpr std::uint32_t kFullAer = 0x48;
  bool prefix_log = false;
  for (const auto& cap : scan.capabilities) {
    if (cap.space != kStd || cap.id != cap_id::kPciExpress || cap.offset + 0x28u > config.size())
      continue;
    const std::uint16_t flags =
        static_cast<std::uint16_t>(config[cap.offset + 2] | (config[cap.offset + 3] << 8));
    const std::uint32_t devcap2 = static_cast<std::uint32_t>(config[cap.offset + 0x24]) |
                                  (static_cast<std::uint32_t>(config[cap.offset + 0x25]) << 8) |
                                  (static_cast<std::uint32_t>(config[cap.offset + 0x26]) << 16) |
                                  (static_cast<std::uint32_t>(config[cap.offset + 0x27]) << 24);
    const bool version2 = (flags & 0xF) >= 2;
    prefix_log = (flags & (1u << 15)) != 0 || (version2 && (devcap2 & (1u << 21)) != 0);
    break;
  }
  if (!prefix_log) return 0;
  std::uint32_t end = aer.offset + kFullAer;
  for (const auto& other : scan.capabilities) {
    if (other.space == kExt && other.offset > aer.offset)
      end = std::min<std::uint32_t>(end, other.offset);
  }
  return std::min(end, kExtendedConfigSize) - aer.offset;
}

// Occupied extended ranges, DWORD rounded as the engine rounds them. Capabilities at
// `excluded` offsets are left out (free-space gap DVSECs the dvsec rule may consume);
// an excluded capability at 0x100 still occupies its header, which must stay.
std::vector<Occupant> extended_occupants(std::span<const std::uint8_t> config,
                                         const CapabilityScan& scan,
                                         const std::set<std::uint16_t>& excluded = {}) {
  std::vector<Occupant> result;
  for (const auto& cap : scan.capabilities) {
    if (cap.space != kExt) continue;
    const std::string name(capability_name(kExt, cap.id));
    if (excluded.count(cap.offset) != 0) {
      if (cap.offset == kExtendedCapabilityStart) {
        result.push_back({cap.offset, cap.offset + 4u, "the extended list head"});
      }
      continue;
    }
    std::uint32_t length = occupied_length(scan, cap, kExtendedConfigSize);
    if (cap.id == ext_cap_id::kAer) length = std::max(length, aer_extent(config, scan, cap));
    result.push_back(
        {cap.offset, cap.offset + round_up4(length), fmt::format("{} [{:#x}]", name, cap.offset)});
  }
  // A chain whose last next pointer leads to an all-zero header ends there (Linux and
  // lspci stop on a zero header), but a capability added at that offset would be linked
  // into a loop through the stale pointer, and one added over it would be entered
  // mid-body. The header slot it names is therefore taken. Found by the fuzzer.
  for (const auto& d : scan.diagnostics) {
    if (d.space == kExt && d.code == "empty-header" && d.offset) {
      result.push_back(
          {*d.offset, *d.offset + 4u,
           fmt::format("the all-zero header at {:#x} that the chain's last next pointer leads to",
                       *d.offset)});
    }
  }
  return result;
}

const Occupant* first_conflict(const std::vector<Occupant>& occupants, std::uint32_t begin,
                               std::uint32_t end) {
  const Occupant* hit = nullptr;
  for (const auto& o : occupants) {
    if (begin < o.end && o.begin < end && (hit == nullptr || o.begin < hit->begin)) hit = &o;
  }
  return hit;
}

// Lowest DWORD-aligned slot of `need` bytes inside `ranges` that meets no occupant.
std::optional<std::pair<std::uint16_t, ConfigRange>> first_fit(
    const std::vector<ConfigRange>& ranges, const std::vector<Occupant>& occupants,
    std::uint32_t need) {
  for (const auto& range : ranges) {
    if (range.space != kExt) continue;
    for (std::uint32_t at = round_up4(range.begin); at + need <= range.end; at += 4) {
      if (first_conflict(occupants, at, at + need) == nullptr) {
        return std::make_pair(static_cast<std::uint16_t>(at), range);
      }
    }
  }
  return std::nullopt;
}

std::string ranges_text(const std::vector<ConfigRange>& ranges) {
  if (ranges.empty()) return "no ranges";
  std::string text;
  for (const auto& r : ranges) {
    if (!text.empty()) text += ", ";
    text += range_text(r.begin, r.end);
  }
  return text;
}

struct DeviceIdentity {
  std::uint16_t vendor = 0;
  std::uint16_t device = 0;
  std::optional<std::uint16_t> subsystem_vendor;
  std::optional<std::uint16_t> subsystem_device;
};

DeviceIdentity identify(const ConfigSpace& space, const CapabilityScan& scan) {
  DeviceIdentity id{space.raw16(reg::kVendorId), space.raw16(reg::kDeviceId), {}, {}};
  const std::uint8_t layout = space.header_layout();
  if (layout == header_type::kEndpoint) {
    id.subsystem_vendor = space.raw16(reg::kSubsystemVendorId);
    id.subsystem_device = space.raw16(reg::kSubsystemId);
  } else if (layout == header_type::kBridge) {
    // Bridges carry their subsystem IDs in the Bridge Subsystem Vendor ID capability
    // (PCI-to-PCI Bridge Architecture 1.2 §3.2.5.15 / capability 0x0D): +4 and +6.
    for (const auto& cap : scan.capabilities) {
      if (cap.space == kStd && cap.id == 0x0D && cap.offset + 8u <= kConventionalConfigSize) {
        id.subsystem_vendor = space.raw16(cap.offset + 4u);
        id.subsystem_device = space.raw16(cap.offset + 6u);
        break;
      }
    }
  }
  return id;
}

std::string identity_text(const DeviceIdentity& id) {
  std::string text = fmt::format("{:04x}:{:04x}", id.vendor, id.device);
  if (id.subsystem_vendor && id.subsystem_device) {
    text += fmt::format(" (subsystem {:04x}:{:04x})", *id.subsystem_vendor, *id.subsystem_device);
  }
  return text;
}

// ---- hiding -----------------------------------------------------------------------

bool reaches_extended_space(const CapabilityScan& scan,
                            std::optional<std::uint16_t> without_std_offset) {
  return std::any_of(
      scan.capabilities.begin(), scan.capabilities.end(), [&](const Capability& cap) {
        return cap.space == kStd && (cap.id == cap_id::kPciExpress || cap.id == cap_id::kPciX) &&
               cap.offset != without_std_offset;
      });
}

Status hide_one(ConfigSpace& guest, const CapabilityScan& source_scan, CapabilitySpace space,
                std::uint16_t offset, std::string reason, bool adding_extended,
                std::vector<HiddenCapability>& hidden) {
  for (const auto& h : hidden) {
    if (h.space == space && h.offset == offset) return {};  // named twice (by ID and offset)
  }
  const CapabilityScan scan = scan_guest(guest);
  const auto it =
      std::find_if(scan.capabilities.begin(), scan.capabilities.end(),
                   [&](const Capability& c) { return c.space == space && c.offset == offset; });
  if (it == scan.capabilities.end()) {
    return make_error(ErrorCode::kNotFound, "--hide: no {} capability at {:#x} in the chain",
                      space_name(space), offset);
  }
  if (space == kStd && (it->id == cap_id::kPciExpress || it->id == cap_id::kPciX)) {
    const bool has_extended = std::any_of(scan.capabilities.begin(), scan.capabilities.end(),
                                          [](const Capability& c) { return c.space == kExt; });
    if ((has_extended || adding_extended) && !reaches_extended_space(scan, offset)) {
      return make_error(ErrorCode::kConflict,
                        "--hide: hiding {} at {:#x} would make every extended capability "
                        "unreachable (Linux and lspci walk 0x100-0xfff only behind a PCI Express "
                        "or PCI-X capability)",
                        capability_name(kStd, it->id), offset);
    }
  }
  VPCI_TRY(hide_capability(guest, space, offset));
  std::uint32_t length = 4;
  for (const auto& cap : source_scan.capabilities) {
    if (cap.space == space && cap.offset == offset) {
      length = occupied_length(source_scan, cap,
                               space == kExt ? kExtendedConfigSize : kConventionalConfigSize);
    }
  }
  hidden.push_back({space, offset, it->id, length,
                    space == kExt && offset == kExtendedCapabilityStart, std::move(reason)});
  return {};
}

Status apply_hides(ConfigSpace& guest, const CapabilityScan& source_scan,
                   const PlacementRequest& request, std::vector<HiddenCapability>& hidden) {
  const bool adding = !request.add.empty();
  for (const auto& h : request.hide) {
    const CapabilityScan scan = scan_guest(guest);
    switch (h.kind) {
      case HideRequest::Kind::kOffset: {
        const CapabilitySpace space = h.value >= kExtendedCapabilityStart ? kExt : kStd;
        VPCI_TRY(hide_one(guest, source_scan, space, h.value, "requested", adding, hidden));
        break;
      }
      case HideRequest::Kind::kExtendedId:
      case HideRequest::Kind::kStandardId: {
        const CapabilitySpace space = h.kind == HideRequest::Kind::kExtendedId ? kExt : kStd;
        std::vector<std::uint16_t> offsets;
        for (const auto& cap : scan.capabilities) {
          if (cap.space == space && cap.id == h.value) offsets.push_back(cap.offset);
        }
        if (offsets.empty()) {
          return make_error(
              ErrorCode::kNotFound, "--hide: the device has no {} capability with ID {:#x} ({})",
              space == kExt ? "extended" : "standard", h.value, capability_name(space, h.value));
        }
        for (const std::uint16_t offset : offsets) {
          VPCI_TRY(hide_one(guest, source_scan, space, offset, "requested", adding, hidden));
        }
        break;
      }
    }
  }
  return {};
}

// ---- overlay ------------------------------------------------------------------------

struct OverlayBuilder {
  const ConfigSpace& source;
  const ConfigSpace& guest;
  std::map<std::uint16_t, OverlayField> fields;

  void add(std::uint16_t offset, std::uint32_t length, std::uint8_t mask_all, std::string what,
           const std::vector<std::uint8_t>* masks = nullptr) {
    if (fields.count(offset) != 0) return;
    OverlayField field;
    field.offset = offset;
    field.what = std::move(what);
    for (std::uint32_t i = 0; i < length; ++i) {
      const std::uint8_t mask = masks != nullptr ? (*masks)[i] : mask_all;
      field.value.push_back(guest.raw8(offset + i));
      field.emulated_mask.push_back(mask);
      field.write_mask.push_back(static_cast<std::uint8_t>(guest.writable_mask(offset + i) & mask));
    }
    fields.emplace(offset, std::move(field));
  }
};

std::vector<OverlayField> build_overlay(const ConfigSpace& source, const ConfigSpace& guest,
                                        const std::vector<PlacedCapability>& placed) {
  OverlayBuilder builder{source, guest, {}};
  std::vector<bool> covered(guest.size(), false);
  for (const auto& p : placed) {
    builder.add(p.offset, p.length, 0xFF,
                fmt::format("{} (added, rule {})", p.label, placement_rule_name(p.rule)));
    for (std::uint32_t i = 0; i < p.length; ++i) covered[p.offset + i] = true;
  }
  const CapabilityScan source_scan = scan_capabilities(source.bytes());
  const CapabilityScan guest_scan = scan_guest(guest);
  auto find_cap = [](const CapabilityScan& scan, CapabilitySpace space,
                     std::uint32_t offset) -> const Capability* {
    for (const auto& cap : scan.capabilities) {
      if (cap.space == space && cap.offset == offset) return &cap;
    }
    return nullptr;
  };
  const std::uint32_t pointer = source.header_layout() == header_type::kCardbus
                                    ? reg::kCardbusCapabilityPointer
                                    : reg::kCapabilityPointer;
  for (std::uint32_t b = 0; b < guest.size(); ++b) {
    if (covered[b] || guest.raw8(b) == source.raw8(b)) continue;
    const auto at = static_cast<std::uint16_t>(b);
    if (b >= kExtendedCapabilityStart) {
      const auto header = static_cast<std::uint16_t>(b & ~3u);
      const Capability* before = find_cap(source_scan, kExt, header);
      const Capability* after = find_cap(guest_scan, kExt, header);
      std::string what;
      if (before == nullptr && after != nullptr && header == kExtendedCapabilityStart) {
        what = "Null header at 0x100: anchors the extended list (it must start there)";
      } else if (before != nullptr && after != nullptr && after->id == 0 && before->id != 0) {
        what = fmt::format("header of {} at {:#x}: ID zeroed, next kept (hidden; the 0x100 rule)",
                           capability_name(kExt, before->id), header);
      } else if (before != nullptr) {
        what = fmt::format("header of {} at {:#x}: next pointer", capability_name(kExt, before->id),
                           header);
      } else {
        what = fmt::format("extended header at {:#x}", header);
      }
      builder.add(header, 4, 0xFF, std::move(what));
      for (std::uint32_t i = 0; i < 4; ++i) covered[header + i] = true;
      continue;
    }
    if (b == reg::kStatus) {
      const std::vector<std::uint8_t> mask{
          static_cast<std::uint8_t>(guest.raw8(b) ^ source.raw8(b))};
      builder.add(at, 1, 0, "Status: Capabilities List bit", &mask);
    } else if (b == pointer) {
      builder.add(at, 1, 0xFF, "Capabilities Pointer");
    } else if (const Capability* cap = find_cap(source_scan, kStd, b - 1);
               cap != nullptr && b >= 1) {
      builder.add(
          at, 1, 0xFF,
          fmt::format("next pointer of {} at {:#x}", capability_name(kStd, cap->id), cap->offset));
    } else {
      builder.add(at, 1, 0xFF, "changed byte");
    }
    covered[b] = true;
  }
  std::vector<OverlayField> overlay;
  for (auto& [offset, field] : builder.fields) overlay.push_back(std::move(field));
  return overlay;
}

// ---- placing ------------------------------------------------------------------------

struct Sources {
  const FreeSpaceTableEntry* table_entry = nullptr;
  std::vector<FreeSpaceDvsec> dvsecs;
  std::vector<ConfigRange> dvsec_ranges;               // sorted, from valid DVSECs
  std::map<std::uint32_t, std::uint16_t> range_owner;  // dvsec range begin -> DVSEC offset
  std::set<std::uint16_t> gap_owners;                  // gap DVSECs not yet consumed
  std::optional<std::uint16_t> default_tail;           // lowest offset placed by the default rule
};

Status validate_table_entry(const FreeSpaceTable& table, const FreeSpaceTableEntry& entry,
                            const std::vector<Occupant>& occupants) {
  for (const auto& range : entry.free) {
    if (const Occupant* hit = first_conflict(occupants, range.begin, range.end)) {
      return make_error(ErrorCode::kConflict,
                        "conflicting table entry {} ({}:{}): free range {} overlaps {}",
                        entry.key.to_string(), table.source, entry.line,
                        range_text(range.begin, range.end), occupant_text(*hit));
    }
  }
  return {};
}

Result<std::uint16_t> check_explicit(const ExtendedCapabilityRequest& cap, std::uint16_t offset,
                                     const std::vector<Occupant>& occupants) {
  const std::uint32_t need = round_up4(cap.length());
  // QEMU's x-vpasid-cap-offset checks, in its order: alignment, >= 0x100, fits.
  if (offset % 4 != 0) {
    return make_error(ErrorCode::kInvalidArgument, "{}: offset {:#x} is not DWORD aligned",
                      cap.label, offset);
  }
  if (offset < kExtendedCapabilityStart || offset + need > kExtendedConfigSize) {
    return make_error(ErrorCode::kOutOfRange,
                      "{}: {} is outside extended configuration space [0x100, 0x1000)", cap.label,
                      range_text(offset, offset + need));
  }
  if (const Occupant* hit = first_conflict(occupants, offset, offset + need)) {
    return make_error(ErrorCode::kConflict, "{}: {} overlaps {}", cap.label,
                      range_text(offset, offset + need), occupant_text(*hit));
  }
  return offset;
}

// Highest DWORD-aligned slot that no capability (and no hidden capability) occupies and
// whose bytes all read zero: a zero check is the usual heuristic for "no registers",
// and the tail end is QEMU's preference.
std::optional<std::uint16_t> search_gap(const ConfigSpace& guest,
                                        const std::vector<Occupant>& occupants,
                                        const std::vector<HiddenCapability>& hidden,
                                        std::uint32_t need) {
  for (std::uint32_t at = kExtendedConfigSize - need;; at -= 4) {
    if (at < kExtendedCapabilityStart) return std::nullopt;
    bool usable = first_conflict(occupants, at, at + need) == nullptr;
    for (const auto& h : hidden) {
      if (h.space == kExt && at < h.offset + h.length && h.offset < at + need) usable = false;
    }
    for (std::uint32_t i = 0; usable && i < need; ++i) usable = guest.raw8(at + i) == 0;
    if (usable) return static_cast<std::uint16_t>(at);
  }
}

// PASID is one per function (PCIe Base 6.0 §7.8.8); a second one would leave the guest
// driver to pick one of two registers sets. See docs/placement.md for why this is an
// error rather than a silent no-op.
Status check_no_pasid(const ConfigSpace& guest, const CapabilityScan& scan,
                      const std::vector<PlacedCapability>& placed) {
  for (const auto& existing : scan.capabilities) {
    if (existing.space != kExt || existing.id != ext_cap_id::kPasid) continue;
    const auto range = range_text(existing.offset, existing.offset + pasid::kCapabilitySize);
    for (const auto& p : placed) {
      if (p.offset == existing.offset) {
        return make_error(ErrorCode::kAlreadyExists,
                          "two PASID capabilities requested; the first is already at {}", range);
      }
    }
    const auto fields =
        decode_pasid_capability_register(guest.raw16(existing.offset + pasid::kCapabilityRegister));
    return make_error(
        ErrorCode::kAlreadyExists,
        "the device already has a PASID capability at {} (Max PASID Width {} ({:#x}), "
        "Exec{}, Priv{}); hide it (--hide 0x1b or --hide @{:#x}) to replace it with the "
        "emulated one",
        range, fields.max_width, fields.max_width, fields.execute ? '+' : '-',
        fields.privileged ? '+' : '-', existing.offset);
  }
  return {};
}

struct RuleUse {
  bool used = false;
  std::vector<std::string> details;
};

}  // namespace

std::string_view placement_rule_name(PlacementRule rule) {
  switch (rule) {
    case PlacementRule::kExplicit: return "explicit";
    case PlacementRule::kTable: return "table";
    case PlacementRule::kDvsec: return "dvsec";
    case PlacementRule::kDefault: return "default";
    case PlacementRule::kGapSearch: return "gap-search";
  }
  return "default";
}

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
  for (unsigned i = 0; i < 4; ++i) request.body[i] = static_cast<std::uint8_t>(header >> (8 * i));
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
  for (unsigned i = 0; i < 4; ++i) request.body[i] = static_cast<std::uint8_t>(header >> (8 * i));
  request.body[4] = static_cast<std::uint8_t>(dvsec_id);
  request.body[5] = static_cast<std::uint8_t>(dvsec_id >> 8);
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

std::optional<std::string> extended_space_problem(std::span<const std::uint8_t> readable,
                                                  const CapabilityScan& scan) {
  if (readable.size() <= kConventionalConfigSize) {
    return fmt::format(
        "the source has only {} bytes of config space: no extended configuration "
        "space (for a PCIe device take a 4096-byte dump: lspci -xxxx as root or the "
        "sysfs config file)",
        readable.size());
  }
  if (readable.size() < kExtendedCapabilityStart + 4) {
    return fmt::format("the source ends at {:#x}, before the first extended capability header",
                       readable.size());
  }
  const std::uint32_t head = static_cast<std::uint32_t>(readable[0x100]) | (readable[0x101] << 8) |
                             (readable[0x102] << 16) |
                             (static_cast<std::uint32_t>(readable[0x103]) << 24);
  if (!reaches_extended_space(scan, std::nullopt)) {
    std::string why =
        "the device has no extended configuration space: it has no PCI Express or PCI-X "
        "capability, so neither Linux nor lspci walks 0x100-0xfff";
    if (readable.size() >= 0x140 &&
        std::equal(readable.begin(), readable.begin() + 0x40, readable.begin() + 0x100)) {
      why += " (0x100-0x13f repeats the header: the platform aliases the 256-byte space)";
    }
    return why;
  }
  if (head == 0xFFFFFFFF) {
    return std::string(
        "the device has no accessible extended configuration space: 0x100 reads all "
        "ones (Linux then sizes its config space at 256 bytes)");
  }
  return std::nullopt;
}

Result<PlacementResult> place_capabilities(std::span<const std::uint8_t> readable,
                                           const PlacementRequest& request) {
  if (readable.size() < 0x40) {
    return make_error(ErrorCode::kMalformedInput,
                      "only {} bytes of config space; the header is incomplete", readable.size());
  }
  VPCI_ASSIGN_OR_RETURN(const ConfigSpace source, ConfigSpace::from_image(readable));
  const CapabilityScan source_scan = scan_capabilities(source.bytes());
  PlacementResult result{source, {}, {}, {}, {}, {}};
  ConfigSpace& guest = result.guest;

  if (!request.add.empty()) {
    if (auto problem = extended_space_problem(readable, source_scan)) {
      return make_error(ErrorCode::kUnsupported, "{}", *problem);
    }
    if (readable.size() < kExtendedConfigSize) {
      result.warnings.push_back(
          fmt::format("the source has {} readable bytes; the rest of extended space reads as 0xff",
                      readable.size()));
    }
  }
  for (const auto& diag : source_scan.diagnostics) {
    if (diag.severity == Severity::kError &&
        (diag.space == kExt ? !request.add.empty() : !request.hide.empty())) {
      return make_error(ErrorCode::kConflict,
                        "refusing to edit a malformed {} capability chain: {}",
                        space_name(diag.space), diag.message);
    }
  }
  VPCI_TRY(apply_hides(guest, source_scan, request, result.hidden));

  RuleUse explicit_use, table_use, dvsec_use, default_use, gap_use;
  Sources sources;
  const DeviceIdentity identity = identify(source, source_scan);
  if (!request.add.empty()) {
    const CapabilityScan scan = scan_guest(guest);
    // The documented answer for a device that has PASID comes before anything else.
    for (const auto& cap : request.add) {
      if (cap.id == ext_cap_id::kPasid) VPCI_TRY(check_no_pasid(guest, scan, {}));
    }
    for (const auto& cap : request.add) {
      if (cap.id == ext_cap_id::kPasid || cap.id == ext_cap_id::kVendorSpecific ||
          cap.id == ext_cap_id::kDesignatedVendorSpecific) {
        continue;
      }
      for (const auto& existing : scan.capabilities) {
        if (existing.space == kExt && existing.id == cap.id) {
          result.warnings.push_back(fmt::format("{}: the device already has {} at {:#x}", cap.label,
                                                capability_name(kExt, cap.id), existing.offset));
        }
      }
    }
    if (request.table) {
      sources.table_entry = request.table->lookup(
          identity.vendor, identity.device, identity.subsystem_vendor, identity.subsystem_device);
      if (sources.table_entry != nullptr) {
        VPCI_TRY(validate_table_entry(*request.table, *sources.table_entry,
                                      extended_occupants(guest.bytes(), scan)));
      }
    }
    sources.dvsecs = find_free_space_dvsecs(guest.bytes(), scan);
    for (const auto& d : sources.dvsecs) {
      if (!d.problem.empty()) continue;
      for (const auto& r : d.ranges) {
        if (r.space != kExt) continue;
        sources.dvsec_ranges.push_back(r);
        sources.range_owner[r.begin] = d.offset;
      }
      if (d.format == FreeSpaceFormat::kGap) sources.gap_owners.insert(d.offset);
    }
    std::sort(sources.dvsec_ranges.begin(), sources.dvsec_ranges.end(),
              [](const ConfigRange& a, const ConfigRange& b) { return a.begin < b.begin; });
  }

  for (const auto& cap : request.add) {
    const CapabilityScan scan = scan_guest(guest);
    // What this request added occupies its full length, even where the walker would
    // size its ID shorter.
    auto occupants_now = [&](const std::set<std::uint16_t>& excluded) {
      std::vector<Occupant> now = extended_occupants(guest.bytes(), scan, excluded);
      for (const auto& p : result.placed) {
        now.push_back({p.offset, p.offset + round_up4(p.length),
                       fmt::format("{} (added) [{:#x}]", p.label, p.offset)});
      }
      return now;
    };
    const std::vector<Occupant> occupants = occupants_now({});
    const std::uint32_t need = round_up4(cap.length());
    if (need > kExtendedConfigSize - kExtendedCapabilityStart) {
      return make_error(ErrorCode::kNoSpace, "{} is {} bytes; extended space holds {:#x}",
                        cap.label, cap.length(), kExtendedConfigSize - kExtendedCapabilityStart);
    }
    if (cap.id == ext_cap_id::kPasid) VPCI_TRY(check_no_pasid(guest, scan, result.placed));
    PlacedCapability placed{cap.id,    cap.version, 0, cap.length(), PlacementRule::kExplicit,
                            cap.label, {}};
    std::optional<std::uint16_t> consume_dvsec;  // a gap DVSEC to unlink before adding
    if (cap.offset) {
      VPCI_ASSIGN_OR_RETURN(placed.offset, check_explicit(cap, *cap.offset, occupants));
      placed.detail = fmt::format("requested offset {:#x}", *cap.offset);
      explicit_use.used = true;
      explicit_use.details.push_back(fmt::format("{} at {:#x}", cap.label, placed.offset));
    } else if (sources.table_entry != nullptr) {
      placed.rule = PlacementRule::kTable;
      const auto fit = first_fit(sources.table_entry->free, occupants, need);
      if (!fit) {
        return make_error(
            ErrorCode::kNoSpace,
            "no room for {} ({} bytes): table entry {} ({}:{}) lists {}, all taken or too small",
            cap.label, need, sources.table_entry->key.to_string(), request.table->source,
            sources.table_entry->line, ranges_text(sources.table_entry->free));
      }
      placed.offset = fit->first;
      placed.detail = fmt::format("table {} entry {}: free range {}", request.table->source,
                                  sources.table_entry->key.to_string(),
                                  range_text(fit->second.begin, fit->second.end));
      table_use.used = true;
      table_use.details.push_back(fmt::format("{} at {:#x}", cap.label, placed.offset));
    } else if (!sources.dvsecs.empty()) {
      placed.rule = PlacementRule::kDvsec;
      for (const auto& d : sources.dvsecs) {
        if (!d.problem.empty()) {
          return make_error(ErrorCode::kConflict,
                            "conflicting free-space DVSEC at {:#x} ({} format): {}; refusing to "
                            "place {} by a description the device contradicts",
                            d.offset, free_space_format_name(d.format), d.problem, cap.label);
        }
      }
      const auto fit = first_fit(sources.dvsec_ranges, occupants_now(sources.gap_owners), need);
      if (!fit) {
        return make_error(
            ErrorCode::kNoSpace,
            "no room for {} ({} bytes): the device's free-space DVSECs describe {}, all "
            "taken or too small",
            cap.label, need, ranges_text(sources.dvsec_ranges));
      }
      placed.offset = fit->first;
      const std::uint16_t owner = sources.range_owner[fit->second.begin];
      const bool gap = sources.gap_owners.count(owner) != 0;
      placed.detail =
          fmt::format("free-space DVSEC ({}) at {:#x}: free range {}", gap ? "gap" : "table", owner,
                      range_text(fit->second.begin, fit->second.end));
      if (gap) consume_dvsec = owner;
      dvsec_use.used = true;
      dvsec_use.details.push_back(fmt::format("{} at {:#x}", cap.label, placed.offset));
    } else {
      const bool empty_list = std::none_of(scan.capabilities.begin(), scan.capabilities.end(),
                                           [](const Capability& c) { return c.space == kExt; });
      std::uint32_t candidate = 0;
      if (empty_list) {
        candidate = kExtendedCapabilityStart;
        placed.detail =
            "0x100: the device has no extended capabilities and the list must start there";
      } else {
        const std::uint32_t tail = sources.default_tail.value_or(kExtendedConfigSize);
        candidate = tail >= kExtendedCapabilityStart + need ? tail - need : 0;
        placed.detail =
            sources.default_tail
                ? fmt::format("tail of extended space, below the capability placed at {:#x}", tail)
            : cap.id == ext_cap_id::kPasid
                ? fmt::format("QEMU's default: the last {} bytes of extended space", need)
                : fmt::format(
                      "the last {} bytes of extended space (the tail, where QEMU puts PASID)",
                      need);
      }
      const Occupant* hit = candidate >= kExtendedCapabilityStart
                                ? first_conflict(occupants, candidate, candidate + need)
                                : nullptr;
      if (candidate >= kExtendedCapabilityStart && hit == nullptr) {
        placed.rule = PlacementRule::kDefault;
        placed.offset = static_cast<std::uint16_t>(candidate);
        sources.default_tail = placed.offset;
        default_use.used = true;
        default_use.details.push_back(fmt::format("{} at {:#x}", cap.label, placed.offset));
      } else {
        const std::string taken =
            hit != nullptr ? fmt::format("{} overlaps {}", range_text(candidate, candidate + need),
                                         occupant_text(*hit))
                           : std::string("the tail of extended space is used up");
        default_use.details.push_back(fmt::format("{}: {}", cap.label, taken));
        if (!request.search_gaps) {
          return make_error(ErrorCode::kNoSpace,
                            "no room for {} at the default offset: {}; give an offset (--at), a "
                            "free-space table (--table) or allow --search-gaps",
                            cap.label, taken);
        }
        const auto gap = search_gap(guest, occupants, result.hidden, need);
        if (!gap) {
          return make_error(
              ErrorCode::kNoSpace,
              "no room for {}: {} and no {}-byte all-zero range is free in extended space",
              cap.label, taken, need);
        }
        placed.rule = PlacementRule::kGapSearch;
        placed.offset = *gap;
        placed.detail = fmt::format("highest free all-zero range {} (the default {})",
                                    range_text(*gap, *gap + need), taken);
        gap_use.used = true;
        gap_use.details.push_back(fmt::format("{} at {:#x}", cap.label, placed.offset));
        result.warnings.push_back(fmt::format(
            "{} placed at {:#x} by gap search: no capability claims {} and it reads zero, but "
            "holes "
            "between capabilities can hold undocumented registers; confirm with the vendor and "
            "record the range in a free-space table",
            cap.label, placed.offset, range_text(*gap, *gap + need)));
      }
    }
    if (consume_dvsec) {
      VPCI_TRY(hide_one(guest, source_scan, kExt, *consume_dvsec,
                        "free-space DVSEC (gap) consumed by the dvsec rule", true, result.hidden));
      sources.gap_owners.erase(*consume_dvsec);
    }
    VPCI_ASSIGN_OR_RETURN(
        const std::uint16_t at,
        add_extended_capability(guest, cap.id, cap.version, cap.body, placed.offset)
            .map_error([&](Error e) { return std::move(e).with_context(cap.label); }));
    placed.offset = at;
    // add_extended_capability refuses a body shorter than the structure its ID and
    // contents define (PCIe Base 6.0 §7.6.3), so no register goes unemulated.
    for (std::size_t i = 0; i < cap.body_write_mask.size(); ++i) {
      if (cap.body_write_mask[i] != 0) {
        guest.set_bit_kind(at + 4u + static_cast<std::uint32_t>(i), 1, cap.body_write_mask[i],
                           BitKind::kReadWrite);
      }
    }
    result.placed.push_back(std::move(placed));
  }

  // A free-space DVSEC that still describes bytes now holding an added capability would
  // mislead a nested VMM; unlink it.
  for (const auto& d : sources.dvsecs) {
    const bool already = std::any_of(
        result.hidden.begin(), result.hidden.end(),
        [&](const HiddenCapability& h) { return h.space == kExt && h.offset == d.offset; });
    if (already) continue;
    for (const auto& p : result.placed) {
      const bool stale = std::any_of(d.ranges.begin(), d.ranges.end(), [&](const ConfigRange& r) {
        return r.space == kExt && p.offset < r.end && r.begin < p.offset + p.length;
      });
      if (stale) {
        VPCI_TRY(hide_one(guest, source_scan, kExt, d.offset,
                          fmt::format("free-space DVSEC ({}) describes bytes now used by {}",
                                      free_space_format_name(d.format), p.label),
                          true, result.hidden));
        break;
      }
    }
  }

  if (!request.add.empty()) {
    auto report = [&](PlacementRule rule, const RuleUse& use, std::string status,
                      std::string detail, std::vector<ConfigRange> ranges = {}) {
      if (use.used) status = "used";
      for (const auto& d : use.details) detail += (detail.empty() ? "" : "; ") + d;
      result.free_space.push_back({rule, std::move(status), std::move(detail), std::move(ranges)});
    };
    report(PlacementRule::kExplicit, explicit_use, "not-given", "");
    if (!request.table) {
      report(PlacementRule::kTable, table_use, "not-given", "");
    } else if (sources.table_entry == nullptr) {
      report(PlacementRule::kTable, table_use, "no-entry",
             fmt::format("{} has no entry for {}", request.table->source, identity_text(identity)));
    } else {
      report(PlacementRule::kTable, table_use, "unused",
             fmt::format("{} entry {} (line {}){}", request.table->source,
                         sources.table_entry->key.to_string(), sources.table_entry->line,
                         sources.table_entry->note.empty() ? "" : ": " + sources.table_entry->note),
             sources.table_entry->free);
    }
    if (sources.dvsecs.empty()) {
      report(PlacementRule::kDvsec, dvsec_use, "none-found", "no free-space DVSEC in the device");
    } else {
      std::string detail;
      for (const auto& d : sources.dvsecs) {
        detail += fmt::format("{}{} at {:#x}{}", detail.empty() ? "" : "; ",
                              free_space_format_name(d.format), d.offset,
                              d.problem.empty() ? "" : " (invalid: " + d.problem + ")");
        if (!d.problem.empty() && !dvsec_use.used) {
          result.warnings.push_back(
              fmt::format("free-space DVSEC at {:#x} is invalid: {}", d.offset, d.problem));
        }
      }
      report(PlacementRule::kDvsec, dvsec_use, "unused", detail, sources.dvsec_ranges);
    }
    const bool default_tried = !default_use.details.empty();
    report(PlacementRule::kDefault, default_use, default_tried ? "taken" : "unused", "");
    report(PlacementRule::kGapSearch, gap_use, request.search_gaps ? "not-needed" : "not-enabled",
           "");
  }
  result.overlay = build_overlay(source, guest, result.placed);
  return result;
}

}  // namespace vpci::pci
