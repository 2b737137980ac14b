// Xen domain IDs (xen/include/public/xen.h), needed below the domain layer: the Xen grant
// capability (virtio/pci), the device-tree binder (dt/) and the serve configuration
// (server/) all refuse backend IDs in the reserved range, so the number lives here, once,
// and domain/xen_abi.h re-exports it with the rest of Xen's ABI.
#pragma once

#include <cstdint>

namespace vpci::xen {

// DOMID_FIRST_RESERVED: IDs from here on are special (DOMID_SELF, DOMID_IO, ...) and
// never name a real domain such as a device backend.
inline constexpr std::uint16_t kDomidFirstReserved = 0x7FF0;

}  // namespace vpci::xen
