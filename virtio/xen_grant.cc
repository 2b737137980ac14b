#include "virtio/xen_grant.h"

#include <algorithm>
#include <limits>

namespace vpci::virtio {

Result<TranslatedRange> XenGrantTranslator::translate(GuestAddress address, std::uint64_t length,
                                                      Access access) {
  const XenGrantAddress grant = decode_xen_grant_address(address);
  if (grant.grant_ref > std::numeric_limits<std::uint32_t>::max()) {
    return make_error(ErrorCode::kOutOfRange, "grant address {:#x} names grant ref {:#x}, beyond 32 bits",
                      address, grant.grant_ref);
  }
  auto page = mapper_->map_page(static_cast<std::uint32_t>(grant.grant_ref), access);
  if (!page) {
    return tl::unexpected(std::move(page).error().with_context(
        fmt::format("mapping grant ref {}", grant.grant_ref)));
  }
  if (page->page.size() != kXenPageSize || page->page.data() == nullptr) {
    return make_error(ErrorCode::kIoError, "grant mapper returned {} bytes for grant ref {}",
                      page->page.size(), grant.grant_ref);
  }
  const std::uint64_t in_page = std::min<std::uint64_t>(kXenPageSize - grant.offset, length);
  return TranslatedRange{page->page.subspan(grant.offset, static_cast<std::size_t>(in_page)),
                         std::move(page->unmap)};
}

}  // namespace vpci::virtio
