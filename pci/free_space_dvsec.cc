#include "pci/free_space_dvsec.h"

#include <algorithm>

#include "base/little_endian.h"
#include "pci/config_bytes.h"
#include "pci/registers.h"

namespace vpci::pci {
namespace {

// DVSEC header 1 and 2 plus the control word: the first 8 body bytes of both formats.
void put_dvsec_headers(std::vector<std::uint8_t>& body, std::uint32_t length,
                       FreeSpaceFormat format, unsigned entry_count) {
  append_le<std::uint32_t>(
      body, free_space_dvsec::kProvisionalVendorId |
                (static_cast<std::uint32_t>(free_space_dvsec::kRevision) << 16) | (length << 20));
  append_le<std::uint16_t>(body, free_space_dvsec::kProvisionalDvsecId);
  append_le<std::uint16_t>(
      body, static_cast<std::uint16_t>(static_cast<unsigned>(format) | (entry_count << 8)));
}

// The capability (other than `self`) whose structure starts inside [begin, end) or
// whose occupied range covers `begin`; nullptr if none.
const Capability* capability_inside(const CapabilityScan& scan, CapabilitySpace space,
                                    std::uint32_t begin, std::uint32_t end,
                                    const Capability* self) {
  const std::uint32_t space_size = kExtendedConfigSize;
  for (const auto& cap : scan.capabilities) {
    if (&cap == self || cap.space != space) continue;
    const std::uint32_t cap_end = cap.offset + occupied_length(scan, cap, space_size);
    if (cap.offset < end && begin < cap_end) return &cap;
  }
  return nullptr;
}

std::string range_text(const ConfigRange& range) {
  return fmt::format("[{:#x}, {:#x})", range.begin, range.end);
}

Result<ConfigRange> checked_range(std::uint32_t start, std::uint32_t length) {
  if (length == 0 || start % 4 != 0 || length % 4 != 0) {
    return make_error(ErrorCode::kInvalidArgument,
                      "range at {:#x} of {:#x} bytes is not DWORD aligned with a non-zero DWORD "
                      "multiple length",
                      start, length);
  }
  const std::uint32_t end = start + length;
  if (start >= kStandardCapabilityStart && end <= kConventionalConfigSize) {
    return ConfigRange{CapabilitySpace::kStandard, start, end};
  }
  if (start >= kExtendedCapabilityStart && end <= kExtendedConfigSize) {
    return ConfigRange{CapabilitySpace::kExtended, start, end};
  }
  return make_error(ErrorCode::kOutOfRange,
                    "range [{:#x}, {:#x}) is not inside capability space [0x40, 0x100) or "
                    "extended space [0x100, 0x1000)",
                    start, end);
}

void decode_gap(const CapabilityScan& scan, const Capability& cap, FreeSpaceDvsec& dvsec,
                unsigned entry_count) {
  if (entry_count != 0) {
    dvsec.problem = fmt::format("gap format with entry count {} (must be 0)", entry_count);
    return;
  }
  if (dvsec.length < free_space_dvsec::kMinimumLength || dvsec.length % 4 != 0) {
    dvsec.problem =
        fmt::format("DVSEC Length {:#x} is below 0xc or not a DWORD multiple", dvsec.length);
    return;
  }
  const ConfigRange range{CapabilitySpace::kExtended, cap.offset, cap.offset + dvsec.length};
  if (range.end > kExtendedConfigSize) {
    dvsec.problem = fmt::format("gap {} runs past the end of extended space", range_text(range));
    return;
  }
  if (const Capability* other =
          capability_inside(scan, CapabilitySpace::kExtended, range.begin, range.end, &cap)) {
    dvsec.problem = fmt::format("gap {} claims bytes of {} at {:#x}", range_text(range),
                                capability_name(other->space, other->id), other->offset);
    return;
  }
  dvsec.ranges.push_back(range);
}

void decode_table(std::span<const std::uint8_t> config, const CapabilityScan& scan,
                  const Capability& cap, FreeSpaceDvsec& dvsec, unsigned entry_count) {
  const std::uint32_t needed = free_space_dvsec::kEntries + 4 * entry_count;
  // Revision 0 fixes the length; later revisions may append fields after the entries.
  if (dvsec.revision == 0 ? dvsec.length != needed : dvsec.length < needed) {
    dvsec.problem = fmt::format("DVSEC Length {:#x} does not match {} range entries ({:#x} bytes)",
                                dvsec.length, entry_count, needed);
    return;
  }
  for (unsigned i = 0; i < entry_count; ++i) {
    const std::uint32_t entry =
        config_dword(config, cap.offset + free_space_dvsec::kEntries + 4 * i);
    auto range = checked_range(entry & 0xFFFF, entry >> 16);
    if (!range) {
      dvsec.problem = fmt::format("entry {}: {}", i, range.error().message);
      return;
    }
    if (const Capability* other =
            capability_inside(scan, range->space, range->begin, range->end, nullptr)) {
      dvsec.problem =
          fmt::format("entry {}: free range {} overlaps {} at {:#x}", i, range_text(*range),
                      capability_name(other->space, other->id), other->offset);
      return;
    }
    for (const auto& earlier : dvsec.ranges) {
      if (earlier.begin < range->end && range->begin < earlier.end) {
        dvsec.problem = fmt::format("entry {}: free range {} overlaps the earlier entry {}", i,
                                    range_text(*range), range_text(earlier));
        return;
      }
    }
    dvsec.ranges.push_back(*range);
  }
}

}  // namespace

std::string_view free_space_format_name(FreeSpaceFormat format) {
  return format == FreeSpaceFormat::kGap ? "gap" : "table";
}

std::vector<FreeSpaceDvsec> find_free_space_dvsecs(std::span<const std::uint8_t> config,
                                                   const CapabilityScan& scan) {
  std::vector<FreeSpaceDvsec> found;
  for (const auto& cap : scan.capabilities) {
    if (cap.space != CapabilitySpace::kExtended ||
        cap.id != ext_cap_id::kDesignatedVendorSpecific) {
      continue;
    }
    const std::uint32_t header1 =
        config_dword(config, cap.offset + free_space_dvsec::kDvsecHeader1);
    const std::uint32_t dvsec_id =
        config_word(config, cap.offset + free_space_dvsec::kDvsecHeader2);
    if ((header1 & 0xFFFF) != free_space_dvsec::kProvisionalVendorId ||
        dvsec_id != free_space_dvsec::kProvisionalDvsecId) {
      continue;
    }
    FreeSpaceDvsec dvsec;
    dvsec.offset = cap.offset;
    dvsec.revision = static_cast<std::uint8_t>((header1 >> 16) & 0xF);
    dvsec.length = header1 >> 20;
    const std::uint32_t control = config_word(config, cap.offset + free_space_dvsec::kControl);
    const unsigned format = control & 0xF;
    const unsigned entry_count = control >> 8;
    if (format == static_cast<unsigned>(FreeSpaceFormat::kGap)) {
      dvsec.format = FreeSpaceFormat::kGap;
      decode_gap(scan, cap, dvsec, entry_count);
    } else if (format == static_cast<unsigned>(FreeSpaceFormat::kRangeTable)) {
      dvsec.format = FreeSpaceFormat::kRangeTable;
      decode_table(config, scan, cap, dvsec, entry_count);
    } else {
      dvsec.problem = fmt::format("unknown format {}", format);
    }
    if (!dvsec.problem.empty()) dvsec.ranges.clear();
    found.push_back(std::move(dvsec));
  }
  return found;
}

Result<std::vector<std::uint8_t>> free_space_gap_dvsec_body(std::uint32_t gap_length) {
  if (gap_length < free_space_dvsec::kMinimumLength || gap_length % 4 != 0 ||
      gap_length > free_space_dvsec::kMaximumLength) {
    return make_error(
        ErrorCode::kInvalidArgument,
        "a free-space gap DVSEC covers 0xc to 0xffc bytes in DWORD multiples, not {:#x}",
        gap_length);
  }
  std::vector<std::uint8_t> body;
  put_dvsec_headers(body, gap_length, FreeSpaceFormat::kGap, 0);
  body.resize(gap_length - 4, 0);  // RsvdZ to the end of the gap
  return body;
}

Result<std::vector<std::uint8_t>> free_space_table_dvsec_body(std::span<const ConfigRange> ranges) {
  if (ranges.size() > free_space_dvsec::kMaxEntries) {
    return make_error(ErrorCode::kInvalidArgument, "{} ranges exceed the 255-entry table",
                      ranges.size());
  }
  const auto length = static_cast<std::uint32_t>(free_space_dvsec::kEntries + 4 * ranges.size());
  if (length > free_space_dvsec::kMaximumLength) {
    return make_error(ErrorCode::kInvalidArgument, "a {}-entry table does not fit a DVSEC",
                      ranges.size());
  }
  std::vector<std::uint8_t> body;
  put_dvsec_headers(body, length, FreeSpaceFormat::kRangeTable,
                    static_cast<unsigned>(ranges.size()));
  for (const auto& range : ranges) {
    if (range.end <= range.begin) {
      return make_error(ErrorCode::kInvalidArgument, "empty range {}", range_text(range));
    }
    VPCI_TRY(checked_range(range.begin, range.end - range.begin));
    append_le<std::uint32_t>(body, range.begin | ((range.end - range.begin) << 16));
  }
  return body;
}

}  // namespace vpci::pci
