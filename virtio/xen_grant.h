// Xen grant DMA addresses (see ../shared/reference/virtio-pci.md §8): a virtio driver in
// a Xen guest using grant-dma-ops puts `1 << 63 | grant_ref << 12 | page_offset` into
// descriptors instead of guest-physical addresses. A buffer spanning pages uses
// consecutive grant references, so the address space stays linear and a multi-page
// access simply continues at the next "page" address.
//
// `XenGrantTranslator` plugs into `GuestMemory::set_translator`; the actual mapping
// (xengnttab_map_grant_ref or a test double) is a `GrantMapper` supplied by the domain
// layer. Devices behind it must offer VIRTIO_F_VERSION_1 and VIRTIO_F_ACCESS_PLATFORM
// (Linux refuses otherwise); `CoreOptions::require_access_platform` enforces the latter.
#pragma once

#include <cstdint>
#include <memory>
#include <span>

#include "base/error.h"
#include "virtio/guest_memory.h"

namespace vpci::virtio {

inline constexpr std::uint64_t kXenGrantAddressFlag = std::uint64_t{1} << 63;
inline constexpr std::uint64_t kXenPageSize = 4096;

[[nodiscard]] constexpr bool is_xen_grant_address(GuestAddress address) {
  return (address & kXenGrantAddressFlag) != 0;
}

struct XenGrantAddress {
  std::uint64_t grant_ref;  // bits 62..12 of the address; Xen grant refs are 32-bit
  std::uint32_t offset;     // byte offset inside the granted page
};

[[nodiscard]] constexpr XenGrantAddress decode_xen_grant_address(GuestAddress address) {
  return XenGrantAddress{(address & ~kXenGrantAddressFlag) >> 12,
                         static_cast<std::uint32_t>(address & (kXenPageSize - 1))};
}

[[nodiscard]] constexpr GuestAddress encode_xen_grant_address(std::uint32_t grant_ref, std::uint32_t offset) {
  return kXenGrantAddressFlag | (std::uint64_t{grant_ref} << 12) | (offset & (kXenPageSize - 1));
}

struct MappedGrantPage {
  std::span<std::uint8_t> page;        // exactly kXenPageSize bytes
  std::shared_ptr<const void> unmap;   // unmaps the grant when the last user drops it
};

class GrantMapper {
 public:
  virtual ~GrantMapper() = default;
  // Maps one granted page of the frontend domain; writable only if `access` is kWrite
  // (to-device buffers are granted read-only, so mapping them writable must fail).
  [[nodiscard]] virtual Result<MappedGrantPage> map_page(std::uint32_t grant_ref, Access access) = 0;
};

class XenGrantTranslator final : public AddressTranslator {
 public:
  explicit XenGrantTranslator(std::shared_ptr<GrantMapper> mapper) : mapper_(std::move(mapper)) {}

  [[nodiscard]] bool handles(GuestAddress address) const override { return is_xen_grant_address(address); }
  [[nodiscard]] Result<TranslatedRange> translate(GuestAddress address, std::uint64_t length,
                                                  Access access) override;

 private:
  std::shared_ptr<GrantMapper> mapper_;
};

}  // namespace vpci::virtio
