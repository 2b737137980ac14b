// The configuration of one Xen domain, as far as virtual PCI is concerned.
//
// A plain value type shared by `vpci domain check` (domain/rules.h), the device-tree
// generator (an Arm guest with passthrough PCI devices needs a virtual host bridge)
// and `vpci serve`. Files in the TOML format of docs/domain-check.md are read and
// written by domain/config_file.h.
//
// What the fields mean in Xen terms (../shared/reference/xen-domain.md):
//   * `arch` + `kind` + `control_domain` encode the domain kind the way Xen's rule
//     tables do: (arch, PV/PVH/HVM, hardware domain?). Xen's tables speak of the
//     *hardware* domain; in the usual setup dom0 is both hardware and control domain,
//     and `control_domain = true` means that dom0.
//   * `vpci` is the request for virtual PCI. Which ABI field carries it depends on the
//     rule profile: x86 emulation flag bit 10 today, XEN_DOMCTL_CDF_vpci in the proposal.
//   * `emulation_flags` is the x86 `xen_arch_domainconfig.emulation_flags` word when
//     the file gives it; absent means "whatever libxl/Xen would pass" (derived by
//     domain/rules.h).
//   * `iommu` is XEN_DOMCTL_CDF_iommu (the domain uses the host IOMMU), not the x86
//     emulated vIOMMU (emulation flag "iommu").
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "pci/dump.h"

namespace vpci::domain {

enum class Arch : std::uint8_t { kX86, kArm };

// PV, PVH and HVM exist only on x86. Every Arm domain is created with CDF_hvm |
// CDF_hap (arch_sanitise_domain_config requires both); libxl calls that type "pvh",
// our files call it "guest" so that x86 PVH rules are never applied to it by mistake.
enum class Kind : std::uint8_t { kPv, kPvh, kHvm, kGuest };

std::string_view arch_name(Arch arch);  // "x86", "arm"
std::string_view kind_name(Kind kind);  // "pv", "pvh", "hvm", "guest"
std::optional<Arch> arch_from_name(std::string_view name);
std::optional<Kind> kind_from_name(std::string_view name);

// Whether `kind` exists on `arch` (pv/pvh/hvm on x86, guest on Arm).
bool kind_exists_on(Arch arch, Kind kind);

// A 1-based line and column in a configuration file; line 0 means "not from a file".
struct SourcePosition {
  std::uint32_t line = 0;
  std::uint32_t column = 0;
  friend bool operator==(const SourcePosition&, const SourcePosition&) = default;
};

struct DomainConfig {
  Arch arch = Arch::kX86;
  Kind kind = Kind::kPvh;
  bool control_domain = false;
  std::optional<bool> vpci;                      // absent: the default of the rule profile
  std::optional<std::uint32_t> emulation_flags;  // x86 only; absent: derived
  bool iommu = false;                            // XEN_DOMCTL_CDF_iommu
  std::vector<pci::DeviceAddress> passthrough;   // host PCI devices assigned to the domain

  // Where the configuration came from, for diagnostics: the file name and the position
  // of each top-level key ("vpci", "passthrough", ...). Empty for configs built in code.
  std::string source_file;
  std::map<std::string, SourcePosition, std::less<>> key_positions;

  // The position of `key`, or line 0 if the key was not written in a file.
  [[nodiscard]] SourcePosition position_of(std::string_view key) const;

  // Equality of the configuration itself; where it came from does not count.
  [[nodiscard]] bool same_settings(const DomainConfig& other) const;
};

// The PCI segment of `xen_domctl_assign_device.machine_sbdf` is 16 bits wide, so a
// passthrough device on a segment above 0xffff cannot be assigned.
inline constexpr std::uint32_t kMaxXenPciSegment = 0xffff;

// True when libxl would write a virtual PCI host bridge (the `pcie@10000000` ECAM node)
// into the guest device tree: an Arm domU with PCI devices configured
// (reference §3). The control domain sees the host's own bridge instead.
bool arm_guest_gets_virtual_host_bridge(const DomainConfig& config);

}  // namespace vpci::domain
