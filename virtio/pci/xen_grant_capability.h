// The Xen grant capability: tells a guest's virtio-pci driver that the device is served
// by a Xen backend domain through grant mappings, and which domain to grant to, without
// xenstore, ACPI or a device tree. Byte format: docs/xen-grant-capability.md.
//
// Container: the virtio vendor-data capability (virtio 1.3 §4.1.4.10, cfg_type 9) with
// the Xen PCI vendor ID 0x5853, so drivers that do not know it ignore it (§4.1.4.10:
// "the driver MUST ignore any vendor-specific capability structure with an unknown
// vendor ID"). A device carrying it offers and requires VIRTIO_F_ACCESS_PLATFORM: the
// addresses the driver writes are grant references (Linux grant-dma-ops, bit 63 set),
// not guest-physical addresses.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "base/error.h"

namespace vpci::virtio::pci {

inline constexpr std::uint16_t kXenPciVendorId = 0x5853;
inline constexpr std::uint8_t kXenGrantCapabilityVersion = 1;
inline constexpr std::uint8_t kXenGrantCapabilityLength = 12;  // cap_len

namespace xen_grant_cap {
inline constexpr std::uint32_t kVendorId = 4;   // le16, 0x5853
inline constexpr std::uint32_t kVersion = 6;    // u8, 1
inline constexpr std::uint32_t kFlags = 7;      // u8, 0 (no flags defined; nonzero refused)
inline constexpr std::uint32_t kDomid = 8;      // le16 backend domain ID
inline constexpr std::uint32_t kReserved = 10;  // le16, 0
}  // namespace xen_grant_cap

struct XenGrantInfo {
  std::uint16_t backend_domid = 0;
  std::uint16_t config_offset = 0;  // where the capability was found
};

// The vendor data after the vendor ID (bytes 6..11 of the capability).
std::vector<std::uint8_t> xen_grant_capability_data(std::uint16_t backend_domid);

// Driver side: walks the standard capability list of `config` (a virtio function's
// configuration space, at least 64 bytes) and returns the backend domain ID of its Xen
// grant capability; nullopt when there is none. Errors for a malformed capability (short
// cap_len, unknown version, nonzero flags or reserved bytes, reserved domain ID), or two
// capabilities that disagree.
Result<std::optional<XenGrantInfo>> parse_xen_grant_capability(
    std::span<const std::uint8_t> config);

}  // namespace vpci::virtio::pci
