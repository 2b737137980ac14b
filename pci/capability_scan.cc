// The capability walker: both chains, with every deviation from the rules lspci and
// Linux apply reported as a diagnostic (the rules are listed in pci/capabilities.h).
#include <algorithm>
#include <bitset>

#include "pci/capabilities.h"
#include "pci/capability_detail.h"
#include "pci/config_bytes.h"

namespace vpci::pci {
namespace {

void add_diag(CapabilityScan& scan, Severity severity, std::string code, CapabilitySpace space,
              std::optional<std::uint16_t> offset, std::string message) {
  scan.diagnostics.push_back({severity, std::move(code), space, offset, std::move(message)});
}

void check_overlaps(CapabilityScan& scan, CapabilitySpace space, std::uint32_t space_end) {
  std::vector<const Capability*> caps;
  for (const auto& cap : scan.capabilities) {
    if (cap.space == space) caps.push_back(&cap);
  }
  std::sort(caps.begin(), caps.end(),
            [](const Capability* a, const Capability* b) { return a->offset < b->offset; });
  for (std::size_t i = 0; i < caps.size(); ++i) {
    const Capability& cap = *caps[i];
    if (!cap.size) continue;
    const std::uint32_t end = cap.offset + *cap.size;
    if (end > space_end) {
      add_diag(scan, Severity::kError, "capability-out-of-range", space, cap.offset,
               fmt::format("{} at {:#x} is {} bytes long and ends past {:#x}",
                           capability_name(space, cap.id), cap.offset, *cap.size, space_end));
    }
    if (i + 1 < caps.size() && end > caps[i + 1]->offset && caps[i + 1]->offset != cap.offset) {
      add_diag(scan, Severity::kWarning, "capability-overlap", space, cap.offset,
               fmt::format("{} at {:#x} ({} bytes) overlaps {} at {:#x}",
                           capability_name(space, cap.id), cap.offset, *cap.size,
                           capability_name(space, caps[i + 1]->id), caps[i + 1]->offset));
    }
  }
}

void scan_standard(std::span<const std::uint8_t> c, CapabilityScan& scan, bool& can_have_extended) {
  constexpr auto kStd = CapabilitySpace::kStandard;
  const std::uint8_t layout = c[reg::kHeaderType] & header_type::kLayoutMask;
  if (layout > header_type::kCardbus) {
    add_diag(scan, Severity::kError, "unknown-header-type", kStd, reg::kHeaderType,
             fmt::format("header type {:#04x} is not 0, 1 or 2; capabilities not walked", layout));
    return;
  }
  const std::uint32_t pointer_offset =
      layout == header_type::kCardbus ? reg::kCardbusCapabilityPointer : reg::kCapabilityPointer;
  const std::uint8_t raw_pointer = c[pointer_offset];
  if (!(config_word(c, reg::kStatus) & status::kCapabilityList)) {
    if (raw_pointer != 0 && raw_pointer != 0xFF) {
      add_diag(
          scan, Severity::kInfo, "pointer-without-cap-list", kStd, pointer_offset,
          fmt::format("capability pointer {:#04x} ignored: Status.CapList is clear", raw_pointer));
    }
    return;
  }
  if (raw_pointer & 3) {
    add_diag(scan, Severity::kWarning, "misaligned-pointer", kStd, pointer_offset,
             fmt::format("capability pointer {:#04x} is not DWORD aligned (low bits ignored)",
                         raw_pointer));
  }
  std::bitset<256> visited;
  std::uint32_t where = raw_pointer & ~3u;
  while (where != 0) {
    if (where + 4 > c.size()) {
      add_diag(
          scan, Severity::kError, "truncated", kStd, static_cast<std::uint16_t>(where),
          fmt::format("capability at {:#04x} lies beyond the {} readable bytes", where, c.size()));
      break;
    }
    if (visited[where]) {
      add_diag(scan, Severity::kError, "chain-loop", kStd, static_cast<std::uint16_t>(where),
               fmt::format("capability chain loops back to {:#04x}", where));
      break;
    }
    visited[where] = true;
    const std::uint8_t id = c[where];
    if (id == 0xFF) {
      add_diag(scan, Severity::kError, "chain-broken", kStd, static_cast<std::uint16_t>(where),
               fmt::format("capability at {:#04x} has ID 0xff (chain broken)", where));
      break;
    }
    if (where < kStandardCapabilityStart) {
      add_diag(scan, Severity::kError, "pointer-into-header", kStd,
               static_cast<std::uint16_t>(where),
               fmt::format("capability pointer {:#04x} points into the header (< 0x40); Linux "
                           "stops here, lspci does not",
                           where));
    }
    const std::uint8_t raw_next = c[where + 1];
    if (raw_next & 3) {
      add_diag(scan, Severity::kWarning, "misaligned-pointer", kStd,
               static_cast<std::uint16_t>(where + 1),
               fmt::format("next pointer {:#04x} of capability at {:#04x} is not DWORD aligned",
                           raw_next, where));
    }
    const std::uint16_t next = raw_next & ~3u;
    scan.capabilities.push_back({kStd, static_cast<std::uint16_t>(where), id, 0, next,
                                 capability_size(kStd, id, c, where)});
    if (capability_name(kStd, id) == "Unknown") {
      add_diag(scan, Severity::kInfo, "unknown-id", kStd, static_cast<std::uint16_t>(where),
               fmt::format("capability ID {:#04x} at {:#04x} is not in the catalog", id, where));
    }
    if (id == cap_id::kPciExpress || id == cap_id::kPciX) can_have_extended = true;
    where = next;
  }
  check_overlaps(scan, kStd, kConventionalConfigSize);
}

}  // namespace

namespace capability_detail {

void scan_extended(std::span<const std::uint8_t> c, CapabilityScan& scan) {
  constexpr auto kExt = CapabilitySpace::kExtended;
  scan.extended_walked = true;
  std::bitset<kExtendedConfigSize> visited;
  std::uint32_t where = kExtendedCapabilityStart;
  do {
    if (where + 4 > c.size()) {
      if (where != kExtendedCapabilityStart) {
        add_diag(scan, Severity::kError, "truncated", kExt, static_cast<std::uint16_t>(where),
                 fmt::format("extended capability at {:#05x} lies beyond the {} readable bytes",
                             where, c.size()));
      }
      break;
    }
    const std::uint32_t header = config_dword(c, where);
    if (header == 0) {
      if (where != kExtendedCapabilityStart) {
        add_diag(scan, Severity::kWarning, "empty-header", kExt, static_cast<std::uint16_t>(where),
                 fmt::format("next pointer leads to an all-zero header at {:#05x}", where));
      }
      break;
    }
    if (header == 0xFFFFFFFF) {
      add_diag(scan, where == kExtendedCapabilityStart ? Severity::kInfo : Severity::kError,
               "all-ones-header", kExt, static_cast<std::uint16_t>(where),
               fmt::format("extended capability header at {:#05x} reads all ones", where));
      break;
    }
    if (visited[where]) {
      add_diag(scan, Severity::kError, "chain-loop", kExt, static_cast<std::uint16_t>(where),
               fmt::format("extended capability chain loops back to {:#05x}", where));
      break;
    }
    visited[where] = true;
    const auto id = static_cast<std::uint16_t>(header & 0xFFFF);
    const auto version = static_cast<std::uint8_t>((header >> 16) & 0xF);
    const std::uint32_t raw_next = header >> 20;
    if (raw_next & 3) {
      add_diag(scan, Severity::kWarning, "misaligned-pointer", kExt,
               static_cast<std::uint16_t>(where),
               fmt::format("next pointer {:#05x} of extended capability at {:#05x} is not DWORD "
                           "aligned",
                           raw_next, where));
    }
    const auto next = static_cast<std::uint16_t>(raw_next & ~3u);
    if (next != 0 && next < kExtendedCapabilityStart) {
      add_diag(scan, Severity::kError, "pointer-below-extended", kExt,
               static_cast<std::uint16_t>(where),
               fmt::format("next pointer {:#05x} of extended capability at {:#05x} is below 0x100; "
                           "Linux stops there, lspci does not",
                           next, where));
    }
    scan.capabilities.push_back({kExt, static_cast<std::uint16_t>(where), id, version, next,
                                 capability_size(kExt, id, c, where)});
    if (capability_name(kExt, id) == "Unknown") {
      add_diag(scan, Severity::kInfo, "unknown-id", kExt, static_cast<std::uint16_t>(where),
               fmt::format("extended capability ID {:#06x} at {:#05x} is not in the catalog", id,
                           where));
    }
    where = next;
  } while (where != 0);
  check_overlaps(scan, kExt, kExtendedConfigSize);
}

}  // namespace capability_detail

CapabilityScan scan_capabilities(std::span<const std::uint8_t> config) {
  CapabilityScan scan;
  if (config.size() < kHeaderSize) {
    add_diag(
        scan, Severity::kError, "truncated-header", CapabilitySpace::kStandard, std::nullopt,
        fmt::format("only {} bytes readable; the 64-byte header is incomplete", config.size()));
    return scan;
  }
  bool can_have_extended = false;
  scan_standard(config, scan, can_have_extended);
  if (can_have_extended) {
    capability_detail::scan_extended(config, scan);
  } else if (config.size() >= kExtendedCapabilityStart + 4) {
    const std::uint32_t header = config_dword(config, kExtendedCapabilityStart);
    if (header != 0 && header != 0xFFFFFFFF) {
      add_diag(scan, Severity::kWarning, "extended-without-express", CapabilitySpace::kExtended,
               static_cast<std::uint16_t>(kExtendedCapabilityStart),
               "extended capabilities present but no PCI Express or PCI-X capability; they are "
               "not walked (as lspci and Linux do)");
    }
  }
  return scan;
}

std::uint32_t occupied_length(const CapabilityScan& scan, const Capability& cap,
                              std::uint32_t space_size) {
  if (cap.size) return *cap.size;
  std::uint32_t end = cap.space == CapabilitySpace::kStandard
                          ? kConventionalConfigSize
                          : std::max(space_size, kConventionalConfigSize);
  for (const auto& other : scan.capabilities) {
    if (other.space == cap.space && other.offset > cap.offset) {
      end = std::min<std::uint32_t>(end, other.offset);
    }
  }
  return end > cap.offset ? end - cap.offset : 4;
}

std::vector<ConfigRange> free_ranges(const CapabilityScan& scan, std::uint32_t space_size) {
  std::vector<ConfigRange> result;
  auto collect = [&](CapabilitySpace space, std::uint32_t begin, std::uint32_t end) {
    std::vector<bool> used(end - begin, false);
    for (const auto& cap : scan.capabilities) {
      if (cap.space != space || cap.offset < begin) continue;
      const std::uint32_t stop = std::min(end, cap.offset + occupied_length(scan, cap, space_size));
      for (std::uint32_t b = cap.offset; b < stop; ++b) used[b - begin] = true;
    }
    std::uint32_t b = begin;
    while (b < end) {
      if (used[b - begin]) {
        ++b;
        continue;
      }
      const std::uint32_t start = b;
      while (b < end && !used[b - begin]) ++b;
      result.push_back({space, start, b});
    }
  };
  collect(CapabilitySpace::kStandard, kStandardCapabilityStart, kConventionalConfigSize);
  if (space_size == kExtendedConfigSize) {
    collect(CapabilitySpace::kExtended, kExtendedCapabilityStart, kExtendedConfigSize);
  }
  return result;
}

}  // namespace vpci::pci
