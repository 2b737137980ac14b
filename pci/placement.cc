// place_capabilities: checks the source, applies the hides, then places each requested
// capability by the first rule that applies (the rules are in placement_rules.cc) and
// reports what each free-space source said.
#include "pci/placement.h"

#include <algorithm>
#include <array>

#include "pci/placement_detail.h"
#include "pci/registers.h"

namespace vpci::pci {
namespace {

using namespace placement_detail;

// What one rule did over the whole request, for its FreeSpaceSourceReport.
struct RuleUse {
  bool used = false;
  std::vector<std::string> details;
};

struct RuleUses {
  std::array<RuleUse, 5> by_rule;
  RuleUse& operator[](PlacementRule rule) { return by_rule[static_cast<std::size_t>(rule)]; }
  const RuleUse& operator[](PlacementRule rule) const {
    return by_rule[static_cast<std::size_t>(rule)];
  }
};

// Checks made once, before anything is placed, and the free-space sources found: the
// PASID refusal comes first (it is the documented answer for a device that has PASID),
// then a warning for each duplicate ID, then the table entry and the DVSECs.
Result<FreeSpaceSources> find_sources(const ConfigSpace& guest, const PlacementRequest& request,
                                      const DeviceIdentity& identity,
                                      std::vector<std::string>& warnings) {
  const CapabilityScan scan = scan_guest(guest);
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
        warnings.push_back(fmt::format("{}: the device already has {} at {:#x}", cap.label,
                                       capability_name(kExt, cap.id), existing.offset));
      }
    }
  }
  FreeSpaceSources sources;
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
  return sources;
}

// The first rule that applies decides; a source that applies is authoritative, so its
// "no room" is the answer. Only rule 4 falls through, to rule 5 when allowed.
Result<Slot> choose_slot(const ExtendedCapabilityRequest& cap, std::uint32_t need,
                         const PlacementRequest& request, const ConfigSpace& guest,
                         const CapabilityScan& scan, const FreeSpaceSources& sources,
                         const std::vector<Occupant>& occupants,
                         const std::vector<Occupant>& occupants_without_gap_dvsecs,
                         const std::vector<HiddenCapability>& hidden, RuleUses& uses) {
  if (cap.offset) return place_explicit(cap, *cap.offset, occupants);
  if (sources.table_entry != nullptr) {
    return place_by_table(cap, need, *request.table, *sources.table_entry, occupants);
  }
  if (!sources.dvsecs.empty()) {
    return place_by_dvsec(cap, need, sources, occupants_without_gap_dvsecs);
  }
  auto by_default = place_by_default(cap, need, scan, sources.default_tail, occupants);
  if (by_default) return std::move(*by_default);
  const std::string& taken = by_default.error();
  uses[PlacementRule::kDefault].details.push_back(fmt::format("{}: {}", cap.label, taken));
  if (!request.search_gaps) {
    return make_error(ErrorCode::kNoSpace,
                      "no room for {} at the default offset: {}; give an offset (--at), a "
                      "free-space table (--table) or allow --search-gaps",
                      cap.label, taken);
  }
  return place_by_gap_search(cap, need, guest, occupants, hidden, taken);
}

Status place_one(const ExtendedCapabilityRequest& cap, const PlacementRequest& request,
                 const CapabilityScan& source_scan, FreeSpaceSources& sources, RuleUses& uses,
                 PlacementResult& result) {
  ConfigSpace& guest = result.guest;
  const CapabilityScan scan = scan_guest(guest);
  // What this request added occupies its full length, even where the walker would size
  // its ID shorter.
  auto occupants_now = [&](const std::set<std::uint16_t>& excluded) {
    std::vector<Occupant> now = extended_occupants(guest.bytes(), scan, excluded);
    for (const auto& p : result.placed) {
      now.push_back({p.offset, p.offset + round_up4(p.length),
                     fmt::format("{} (added) [{:#x}]", p.label, p.offset)});
    }
    return now;
  };
  const std::uint32_t need = round_up4(cap.length());
  if (need > kExtendedConfigSize - kExtendedCapabilityStart) {
    return make_error(ErrorCode::kNoSpace, "{} is {} bytes; extended space holds {:#x}", cap.label,
                      cap.length(), kExtendedConfigSize - kExtendedCapabilityStart);
  }
  if (cap.id == ext_cap_id::kPasid) VPCI_TRY(check_no_pasid(guest, scan, result.placed));
  VPCI_ASSIGN_OR_RETURN(Slot slot,
                        choose_slot(cap, need, request, guest, scan, sources, occupants_now({}),
                                    occupants_now(sources.gap_owners), result.hidden, uses));
  RuleUse& use = uses[slot.rule];
  use.used = true;
  use.details.push_back(fmt::format("{} at {:#x}", cap.label, slot.offset));
  if (slot.rule == PlacementRule::kDefault) sources.default_tail = slot.offset;
  if (slot.warning) result.warnings.push_back(std::move(*slot.warning));
  if (slot.consume_dvsec) {
    VPCI_TRY(hide_one(guest, source_scan, kExt, *slot.consume_dvsec,
                      "free-space DVSEC (gap) consumed by the dvsec rule", true, result.hidden));
    sources.gap_owners.erase(*slot.consume_dvsec);
  }
  VPCI_ASSIGN_OR_RETURN(
      const std::uint16_t at,
      add_extended_capability(guest, cap.id, cap.version, cap.body, slot.offset)
          .map_error([&](Error e) { return std::move(e).with_context(cap.label); }));
  // add_extended_capability refuses a body shorter than the structure its ID and
  // contents define (PCIe Base 6.0 §7.6.3), so no register goes unemulated.
  for (std::size_t i = 0; i < cap.body_write_mask.size(); ++i) {
    if (cap.body_write_mask[i] != 0) {
      guest.set_bit_kind(at + 4u + static_cast<std::uint32_t>(i), 1, cap.body_write_mask[i],
                         BitKind::kReadWrite);
    }
  }
  result.placed.push_back(
      {cap.id, cap.version, at, cap.length(), slot.rule, cap.label, std::move(slot.detail)});
  return {};
}

// A free-space DVSEC that still describes bytes now holding an added capability would
// mislead a nested VMM; unlink it.
Status unlink_stale_dvsecs(const CapabilityScan& source_scan, const FreeSpaceSources& sources,
                           PlacementResult& result) {
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
        VPCI_TRY(hide_one(result.guest, source_scan, kExt, d.offset,
                          fmt::format("free-space DVSEC ({}) describes bytes now used by {}",
                                      free_space_format_name(d.format), p.label),
                          true, result.hidden));
        break;
      }
    }
  }
  return {};
}

// One report per rule, in rule order. Warns about invalid DVSECs the dvsec rule did not
// already refuse.
std::vector<FreeSpaceSourceReport> report_sources(const PlacementRequest& request,
                                                  const DeviceIdentity& identity,
                                                  const FreeSpaceSources& sources,
                                                  const RuleUses& uses,
                                                  std::vector<std::string>& warnings) {
  std::vector<FreeSpaceSourceReport> reports;
  auto report = [&](PlacementRule rule, FreeSpaceStatus status, std::string detail,
                    std::vector<ConfigRange> ranges = {}) {
    const RuleUse& use = uses[rule];
    if (use.used) status = FreeSpaceStatus::kUsed;
    for (const auto& d : use.details) detail += (detail.empty() ? "" : "; ") + d;
    reports.push_back({rule, status, std::move(detail), std::move(ranges)});
  };
  report(PlacementRule::kExplicit, FreeSpaceStatus::kNotGiven, "");
  if (!request.table) {
    report(PlacementRule::kTable, FreeSpaceStatus::kNotGiven, "");
  } else if (sources.table_entry == nullptr) {
    report(PlacementRule::kTable, FreeSpaceStatus::kNoEntry,
           fmt::format("{} has no entry for {}", request.table->source, identity_text(identity)));
  } else {
    const FreeSpaceTableEntry& entry = *sources.table_entry;
    report(PlacementRule::kTable, FreeSpaceStatus::kUnused,
           fmt::format("{} entry {} (line {}){}", request.table->source, entry.key.to_string(),
                       entry.line, entry.note.empty() ? "" : ": " + entry.note),
           entry.free);
  }
  if (sources.dvsecs.empty()) {
    report(PlacementRule::kDvsec, FreeSpaceStatus::kNoneFound, "no free-space DVSEC in the device");
  } else {
    std::string detail;
    for (const auto& d : sources.dvsecs) {
      detail += fmt::format("{}{} at {:#x}{}", detail.empty() ? "" : "; ",
                            free_space_format_name(d.format), d.offset,
                            d.problem.empty() ? "" : " (invalid: " + d.problem + ")");
      if (!d.problem.empty() && !uses[PlacementRule::kDvsec].used) {
        warnings.push_back(
            fmt::format("free-space DVSEC at {:#x} is invalid: {}", d.offset, d.problem));
      }
    }
    report(PlacementRule::kDvsec, FreeSpaceStatus::kUnused, detail, sources.dvsec_ranges);
  }
  const bool default_tried = !uses[PlacementRule::kDefault].details.empty();
  report(PlacementRule::kDefault,
         default_tried ? FreeSpaceStatus::kTaken : FreeSpaceStatus::kUnused, "");
  report(PlacementRule::kGapSearch,
         request.search_gaps ? FreeSpaceStatus::kNotNeeded : FreeSpaceStatus::kNotEnabled, "");
  return reports;
}

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

std::string_view free_space_status_name(FreeSpaceStatus status) {
  switch (status) {
    case FreeSpaceStatus::kUsed: return "used";
    case FreeSpaceStatus::kUnused: return "unused";
    case FreeSpaceStatus::kNotGiven: return "not-given";
    case FreeSpaceStatus::kNoEntry: return "no-entry";
    case FreeSpaceStatus::kNoneFound: return "none-found";
    case FreeSpaceStatus::kTaken: return "taken";
    case FreeSpaceStatus::kNotEnabled: return "not-enabled";
    case FreeSpaceStatus::kNotNeeded: return "not-needed";
  }
  return "unused";
}

Result<PlacementResult> place_capabilities(std::span<const std::uint8_t> readable,
                                           const PlacementRequest& request) {
  if (readable.size() < kHeaderSize) {
    return make_error(ErrorCode::kMalformedInput,
                      "only {} bytes of config space; the header is incomplete", readable.size());
  }
  VPCI_ASSIGN_OR_RETURN(const ConfigSpace source, ConfigSpace::from_image(readable));
  const CapabilityScan source_scan = scan_capabilities(source.bytes());
  PlacementResult result{source, {}, {}, {}, {}, {}};

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
  VPCI_TRY(apply_hides(result.guest, source_scan, request, result.hidden));

  if (!request.add.empty()) {
    const DeviceIdentity identity = identify(source, source_scan);
    VPCI_ASSIGN_OR_RETURN(FreeSpaceSources sources,
                          find_sources(result.guest, request, identity, result.warnings));
    RuleUses uses;
    for (const auto& cap : request.add) {
      VPCI_TRY(place_one(cap, request, source_scan, sources, uses, result));
    }
    VPCI_TRY(unlink_stale_dvsecs(source_scan, sources, result));
    result.free_space = report_sources(request, identity, sources, uses, result.warnings);
  }
  result.overlay = build_overlay(source, result.guest, result.placed);
  return result;
}

}  // namespace vpci::pci
