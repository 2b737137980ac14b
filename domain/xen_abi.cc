#include "domain/xen_abi.h"

#include <array>

#include <fmt/format.h>

namespace vpci::domain::xen {
namespace {

constexpr std::array kEmulationFlagNames = {
    FlagName{kEmuLapic, "lapic"},      FlagName{kEmuHpet, "hpet"},     FlagName{kEmuPm, "pm"},
    FlagName{kEmuRtc, "rtc"},          FlagName{kEmuIoapic, "ioapic"}, FlagName{kEmuPic, "pic"},
    FlagName{kEmuVga, "vga"},          FlagName{kEmuIommu, "iommu"},   FlagName{kEmuPit, "pit"},
    FlagName{kEmuUsePirq, "use_pirq"}, FlagName{kEmuVpci, "vpci"},
};

constexpr std::array kCdfFlagNames = {
    FlagName{kCdfHvm, "hvm"},
    FlagName{kCdfHap, "hap"},
    FlagName{kCdfS3Integrity, "s3_integrity"},
    FlagName{kCdfOosOff, "oos_off"},
    FlagName{kCdfXsDomain, "xs_domain"},
    FlagName{kCdfIommu, "iommu"},
    FlagName{kCdfNestedVirt, "nested_virt"},
    FlagName{kCdfVpmu, "vpmu"},
    FlagName{kCdfTrapUnmappedAccesses, "trap_unmapped_accesses"},
    FlagName{kProvisionalCdfVpci, "vpci"},
};

std::string format_flags(std::uint32_t flags, std::span<const FlagName> names) {
  if (flags == 0) return "none";
  std::string out;
  for (unsigned bit = 0; bit < 32; ++bit) {
    const std::uint32_t mask = 1u << bit;
    if ((flags & mask) == 0) continue;
    if (!out.empty()) out += '|';
    std::string_view name;
    for (const auto& n : names) {
      if (n.bit == mask) name = n.name;
    }
    out += name.empty() ? fmt::format("bit{}", bit) : std::string(name);
  }
  return out;
}

}  // namespace

std::span<const FlagName> emulation_flag_names() {
  return kEmulationFlagNames;
}
std::span<const FlagName> cdf_flag_names() {
  return kCdfFlagNames;
}

std::optional<std::uint32_t> emulation_flag_from_name(std::string_view name) {
  for (const auto& n : kEmulationFlagNames) {
    if (n.name == name) return n.bit;
  }
  return std::nullopt;
}

std::string format_emulation_flags(std::uint32_t flags) {
  return format_flags(flags, kEmulationFlagNames);
}

std::string format_cdf_flags(std::uint32_t flags) {
  return format_flags(flags, kCdfFlagNames);
}

}  // namespace vpci::domain::xen
