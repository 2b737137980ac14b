// Xen's domain-creation ABI as far as virtual PCI is concerned: the
// `xen_domctl_createdomain.flags` bits (XEN_DOMCTL_CDF_*) and the x86
// `xen_arch_domainconfig.emulation_flags` bits (XEN_X86_EMU_*).
//
// Source: xen-project/xen master, XEN_DOMCTL_INTERFACE_VERSION 0x00000018,
// xen/include/public/domctl.h and xen/include/public/arch-x86/xen.h, as summarised in
// ../shared/reference/xen-domain.md §1. Only the numbers live here; the rules that use
// them are in domain/rules.h.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "base/xen_domid.h"

namespace vpci::domain::xen {

// --- domain IDs (xen/include/public/xen.h): defined in base/xen_domid.h, which the
// layers below this one use.
using ::vpci::xen::kDomidFirstReserved;

// --- xen_domctl_createdomain.flags (domctl.h) ---------------------------------------
inline constexpr std::uint32_t kCdfHvm = 1u << 0;
inline constexpr std::uint32_t kCdfHap = 1u << 1;
inline constexpr std::uint32_t kCdfS3Integrity = 1u << 2;
inline constexpr std::uint32_t kCdfOosOff = 1u << 3;
inline constexpr std::uint32_t kCdfXsDomain = 1u << 4;
inline constexpr std::uint32_t kCdfIommu = 1u << 5;
inline constexpr std::uint32_t kCdfNestedVirt = 1u << 6;
inline constexpr std::uint32_t kCdfVpmu = 1u << 7;
inline constexpr std::uint32_t kCdfTrapUnmappedAccesses = 1u << 8;  // == XEN_DOMCTL_CDF_MAX
// Every bit current Xen defines; common sanitise_domain_config() rejects others (EINVAL).
inline constexpr std::uint32_t kCdfAllCurrent = (kCdfTrapUnmappedAccesses << 1) - 1;

// PROVISIONAL — NOT PART OF ANY XEN ABI. Bit number of XEN_DOMCTL_CDF_vpci as used by
// the `cdf-vpci` profile (the proposal of reference §4/§6).
//
// History: the 2021 commit 2075b410ee added CDF_vpci and was reverted (9516d01ac3);
// Stewart Hildebrand's unmerged 2023 series put it at bit 8. Bit 8 has since become
// XEN_DOMCTL_CDF_trap_unmapped_accesses, so a revived flag needs a new number. We
// assume the next free bit after XEN_DOMCTL_CDF_MAX; if Xen ever merges the flag with
// a different number, change it here — nothing else hard-codes it.
inline constexpr unsigned kProvisionalCdfVpciBit = 9;
inline constexpr std::uint32_t kProvisionalCdfVpci = 1u << kProvisionalCdfVpciBit;
static_assert(kProvisionalCdfVpci > kCdfTrapUnmappedAccesses,
              "the provisional CDF_vpci bit must not collide with a bit Xen already uses");

// --- x86 xen_arch_domainconfig.emulation_flags (arch-x86/xen.h, _XEN_X86_EMU_*) -----
inline constexpr std::uint32_t kEmuLapic = 1u << 0;
inline constexpr std::uint32_t kEmuHpet = 1u << 1;
inline constexpr std::uint32_t kEmuPm = 1u << 2;
inline constexpr std::uint32_t kEmuRtc = 1u << 3;
inline constexpr std::uint32_t kEmuIoapic = 1u << 4;
inline constexpr std::uint32_t kEmuPic = 1u << 5;
inline constexpr std::uint32_t kEmuVga = 1u << 6;
inline constexpr std::uint32_t kEmuIommu = 1u << 7;  // an emulated vIOMMU, not CDF_iommu
inline constexpr std::uint32_t kEmuPit = 1u << 8;
inline constexpr std::uint32_t kEmuUsePirq = 1u << 9;
inline constexpr std::uint32_t kEmuVpci = 1u << 10;
// XEN_X86_EMU_ALL today. The cdf-vpci proposal drops VPCI from it and keeps bit 10
// reserved ("do not reuse"), so there ALL is kEmuAllCurrent & ~kEmuVpci.
inline constexpr std::uint32_t kEmuAllCurrent = (kEmuVpci << 1) - 1;

// A named bit of a flag word.
struct FlagName {
  std::uint32_t bit;  // the mask, e.g. kEmuVpci
  std::string_view name;
};

// Lower-case names as used in domain configuration files ("lapic", "use_pirq", ...),
// in bit order. The CDF table includes the provisional vpci bit, named "vpci".
std::span<const FlagName> emulation_flag_names();
std::span<const FlagName> cdf_flag_names();

// The mask of the emulation flag called `name`, if there is one.
std::optional<std::uint32_t> emulation_flag_from_name(std::string_view name);

// "lapic|ioapic|vpci"; bits without a name are written "bit11"; 0 is "none".
std::string format_emulation_flags(std::uint32_t flags);
std::string format_cdf_flags(std::uint32_t flags);

}  // namespace vpci::domain::xen
