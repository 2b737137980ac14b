#include "server/vfio_regions.h"

#include "server/protocol.h"

namespace vpci::server {
namespace {

template <typename Access>
Status split_bar_access(std::uint64_t offset, std::size_t length, Access&& access) {
  std::size_t done = 0;
  while (done < length) {
    const std::uint64_t at = offset + done;
    std::size_t piece = 8;
    while (piece > 1 && (at % piece != 0 || piece > length - done)) piece /= 2;
    VPCI_TRY(access(at, done, piece));
    done += piece;
  }
  return {};
}

// A 1/2/4/8-byte naturally aligned access: what QEMU forwards for guest register
// accesses, and exactly the single piece split_bar_access would produce.
bool single_piece(std::uint64_t offset, std::size_t length) {
  return (length == 1 || length == 2 || length == 4 || length == 8) && offset % length == 0;
}

Status check_bar(unsigned bar) {
  if (bar >= pci::kBarCount)
    return make_error(ErrorCode::kInvalidArgument, "region {} is not a BAR", bar);
  return {};
}

}  // namespace

RegionInfo region_info(const pci::Function& function, unsigned index) {
  if (index < pci::kBarCount) {
    const pci::BarInfo bar = function.bar_info(index);
    if (bar.kind == pci::BarKind::kAbsent || bar.size == 0) return {};
    RegionInfo info{bar.size, true, true};
    // Whole pages (the page size this server advertises) inside the BAR, or nothing: a
    // client maps pages.
    constexpr std::uint64_t kPage = vfio_user::kPageSize;
    if (bar.mappable_size != 0 && bar.mappable_offset % kPage == 0 &&
        bar.mappable_size % kPage == 0 && bar.mappable_offset <= bar.size &&
        bar.mappable_size <= bar.size - bar.mappable_offset) {
      info.mappable_offset = bar.mappable_offset;
      info.mappable_size = bar.mappable_size;
    }
    return info;
  }
  if (index == kRegionConfig) return RegionInfo{function.config_size(), true, true};
  return {};  // no expansion ROM, no VGA
}

std::uint32_t irq_count(const pci::Function& function, unsigned irq_index) {
  switch (irq_index) {
    case kIrqIntx: return 1;
    case kIrqMsix: return function.msix_vector_count();
    case kIrqErr: return kErrIrqCount;
    default: return 0;  // MSI, REQ
  }
}

Status bar_read(pci::Function& function, unsigned bar, std::uint64_t offset,
                std::span<std::uint8_t> data) {
  VPCI_TRY(check_bar(bar));
  if (single_piece(offset, data.size())) return function.bar_read(bar, offset, data);
  return split_bar_access(offset, data.size(),
                          [&](std::uint64_t at, std::size_t from, std::size_t n) {
                            return function.bar_read(bar, at, data.subspan(from, n));
                          });
}

Status bar_write(pci::Function& function, unsigned bar, std::uint64_t offset,
                 std::span<const std::uint8_t> data) {
  VPCI_TRY(check_bar(bar));
  if (single_piece(offset, data.size())) return function.bar_write(bar, offset, data);
  return split_bar_access(offset, data.size(),
                          [&](std::uint64_t at, std::size_t from, std::size_t n) {
                            return function.bar_write(bar, at, data.subspan(from, n));
                          });
}

}  // namespace vpci::server
