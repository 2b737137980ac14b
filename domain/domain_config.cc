#include "domain/domain_config.h"

namespace vpci::domain {

std::string_view arch_name(Arch arch) {
  switch (arch) {
    case Arch::kX86: return "x86";
    case Arch::kArm: return "arm";
  }
  return "unknown-arch";
}

std::string_view kind_name(Kind kind) {
  switch (kind) {
    case Kind::kPv: return "pv";
    case Kind::kPvh: return "pvh";
    case Kind::kHvm: return "hvm";
    case Kind::kGuest: return "guest";
  }
  return "unknown-kind";
}

std::optional<Arch> arch_from_name(std::string_view name) {
  for (Arch arch : {Arch::kX86, Arch::kArm}) {
    if (arch_name(arch) == name) return arch;
  }
  return std::nullopt;
}

std::optional<Kind> kind_from_name(std::string_view name) {
  for (Kind kind : {Kind::kPv, Kind::kPvh, Kind::kHvm, Kind::kGuest}) {
    if (kind_name(kind) == name) return kind;
  }
  return std::nullopt;
}

bool kind_exists_on(Arch arch, Kind kind) {
  return arch == Arch::kArm ? kind == Kind::kGuest : kind != Kind::kGuest;
}

SourcePosition DomainConfig::position_of(std::string_view key) const {
  const auto it = key_positions.find(key);
  return it == key_positions.end() ? SourcePosition{} : it->second;
}

bool DomainConfig::same_settings(const DomainConfig& other) const {
  return arch == other.arch && kind == other.kind && control_domain == other.control_domain &&
         vpci == other.vpci && emulation_flags == other.emulation_flags && iommu == other.iommu &&
         passthrough == other.passthrough;
}

bool arm_guest_gets_virtual_host_bridge(const DomainConfig& config) {
  return config.arch == Arch::kArm && !config.control_domain && !config.passthrough.empty();
}

}  // namespace vpci::domain
