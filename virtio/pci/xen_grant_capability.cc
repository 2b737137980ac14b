#include "virtio/pci/xen_grant_capability.h"

#include "base/little_endian.h"
#include "base/xen_domid.h"
#include "pci/capabilities.h"
#include "pci/registers.h"
#include "virtio/pci/registers.h"

namespace vpci::virtio::pci {

std::vector<std::uint8_t> xen_grant_capability_data(std::uint16_t backend_domid) {
  // The capability's bytes from the version on; flags and reserved stay 0.
  constexpr std::uint32_t kStart = xen_grant_cap::kVersion;
  std::vector<std::uint8_t> data(kXenGrantCapabilityLength - kStart, 0);
  data[xen_grant_cap::kVersion - kStart] = kXenGrantCapabilityVersion;
  store_le(std::span(data).subspan(xen_grant_cap::kDomid - kStart), backend_domid);
  return data;
}

Result<std::optional<XenGrantInfo>> parse_xen_grant_capability(
    std::span<const std::uint8_t> config) {
  if (config.size() < vpci::pci::kHeaderSize) {
    return make_error(ErrorCode::kMalformedInput, "configuration space of {} bytes has no header",
                      config.size());
  }
  const auto le16 = [&](std::uint32_t at) { return load_le<std::uint16_t>(config.subspan(at)); };
  if (le16(0) != kVendorId) return std::optional<XenGrantInfo>{};
  std::optional<XenGrantInfo> found;
  const auto scan = vpci::pci::scan_capabilities(config);
  for (const auto& c : scan.capabilities) {
    if (c.space != vpci::pci::CapabilitySpace::kStandard ||
        c.id != vpci::pci::cap_id::kVendorSpecific) {
      continue;
    }
    const std::uint32_t at = c.offset;
    if (at + 6 > config.size() || config[at + cap::kCfgType] != cfg_type::kVendor ||
        le16(at + xen_grant_cap::kVendorId) != kXenPciVendorId) {
      continue;
    }
    const std::uint8_t length = config[at + cap::kLen];
    if (length < kXenGrantCapabilityLength || at + length > vpci::pci::kConventionalConfigSize ||
        at + length > config.size()) {
      return make_error(ErrorCode::kMalformedInput,
                        "Xen grant capability at {:#x}: cap_len {} (need >= {} inside 0x100)", at,
                        length, kXenGrantCapabilityLength);
    }
    const std::uint8_t version = config[at + xen_grant_cap::kVersion];
    if (version != kXenGrantCapabilityVersion) {
      return make_error(ErrorCode::kUnsupported, "Xen grant capability at {:#x}: version {}", at,
                        version);
    }
    if (config[at + xen_grant_cap::kFlags] != 0 || le16(at + xen_grant_cap::kReserved) != 0) {
      return make_error(ErrorCode::kMalformedInput,
                        "Xen grant capability at {:#x}: reserved flags or bytes are not zero", at);
    }
    const std::uint16_t domid = le16(at + xen_grant_cap::kDomid);
    if (domid >= vpci::xen::kDomidFirstReserved) {
      return make_error(ErrorCode::kMalformedInput,
                        "Xen grant capability at {:#x}: domain ID {:#x} is reserved", at, domid);
    }
    if (found && found->backend_domid != domid) {
      return make_error(ErrorCode::kConflict,
                        "Xen grant capabilities at {:#x} and {:#x} name domains {} and {}",
                        found->config_offset, at, found->backend_domid, domid);
    }
    if (!found) found = XenGrantInfo{domid, static_cast<std::uint16_t>(at)};
  }
  return found;
}

}  // namespace vpci::virtio::pci
