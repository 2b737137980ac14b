#include "virtio/pci/msix.h"

#include <algorithm>
#include <cstring>

namespace vpci::virtio::pci {
namespace {

namespace msix_reg = vpci::pci::msix;

// Where a vector's pending bit lives in the PBA.
std::size_t pba_index(std::uint16_t vector) {
  return vector / msix_reg::kPbaVectorsPerQword;
}
std::uint64_t pba_bit(std::uint16_t vector) {
  return std::uint64_t{1} << (vector % msix_reg::kPbaVectorsPerQword);
}

bool access_ok(std::uint64_t offset, std::size_t size, std::uint64_t region) {
  return (size == 4 || size == 8) && offset % size == 0 && offset <= region &&
         size <= region - offset;
}

}  // namespace

MsixController::MsixController(std::uint16_t vectors, vpci::pci::MsixTableOwner owner)
    : vectors_(vectors),
      owner_(owner),
      table_(std::size_t{vectors} * kEntryWords),
      pba_(pba_words(vectors)) {
  reset();
}

void MsixController::reset() {
  std::fill(table_.begin(), table_.end(), 0u);
  // §7.7.2.4: Mask bit set after reset.
  for (std::uint16_t v = 0; v < vectors_; ++v) {
    entry_field(v, msix_reg::kEntryVectorControl) = msix_reg::kVectorControlMask;
  }
  std::fill(pba_.begin(), pba_.end(), 0u);
  enabled_ = false;
  function_masked_ = false;
}

bool MsixController::vector_masked(std::uint16_t vector) const {
  return vector < vectors_ &&
         (entry_field(vector, msix_reg::kEntryVectorControl) & msix_reg::kVectorControlMask) != 0;
}

bool MsixController::pending(std::uint16_t vector) const {
  return vector < vectors_ && (pba_[pba_index(vector)] & pba_bit(vector)) != 0;
}

void MsixController::set_control(bool enable, bool function_mask) {
  enabled_ = enable;
  function_masked_ = function_mask;
  deliver_pending();
}

Status MsixController::table_read(std::uint64_t offset, std::span<std::uint8_t> data) const {
  if (!access_ok(offset, data.size(), table_bytes())) {
    std::fill(data.begin(), data.end(), 0xFF);
    return make_error(ErrorCode::kInvalidArgument,
                      "MSI-X table access of {} bytes at {:#x} is not an aligned DWORD/QWORD",
                      data.size(), offset);
  }
  std::memcpy(data.data(), reinterpret_cast<const std::uint8_t*>(table_.data()) + offset,
              data.size());
  return {};
}

Status MsixController::table_write(std::uint64_t offset, std::span<const std::uint8_t> data) {
  if (!access_ok(offset, data.size(), table_bytes())) {
    return make_error(ErrorCode::kInvalidArgument,
                      "MSI-X table access of {} bytes at {:#x} is not an aligned DWORD/QWORD",
                      data.size(), offset);
  }
  std::memcpy(reinterpret_cast<std::uint8_t*>(table_.data()) + offset, data.data(), data.size());
  // Keep reserved Vector Control bits at 0 and deliver what an unmask released.
  for (std::uint16_t v = 0; v < vectors_; ++v) {
    entry_field(v, msix_reg::kEntryVectorControl) &= msix_reg::kVectorControlMask;
  }
  deliver_pending();
  return {};
}

Status MsixController::pba_read(std::uint64_t offset, std::span<std::uint8_t> data) const {
  if (!access_ok(offset, data.size(), pba_bytes())) {
    std::fill(data.begin(), data.end(), 0xFF);
    return make_error(ErrorCode::kInvalidArgument,
                      "MSI-X PBA access of {} bytes at {:#x} is not an aligned DWORD/QWORD",
                      data.size(), offset);
  }
  std::memcpy(data.data(), reinterpret_cast<const std::uint8_t*>(pba_.data()) + offset,
              data.size());
  return {};
}

void MsixController::signal(std::uint16_t vector) {
  if (!enabled_ || vector >= vectors_) return;
  if (owner_ == vpci::pci::MsixTableOwner::kFunction &&
      (function_masked_ || vector_masked(vector))) {
    pba_[pba_index(vector)] |= pba_bit(vector);
    return;
  }
  deliver(vector);
}

void MsixController::deliver(std::uint16_t vector) {
  if (output_ == nullptr) return;
  const std::uint64_t address =
      entry_field(vector, msix_reg::kEntryAddressLow) |
      (static_cast<std::uint64_t>(entry_field(vector, msix_reg::kEntryAddressHigh)) << 32);
  output_->signal_msix(vector, address, entry_field(vector, msix_reg::kEntryData));
}

void MsixController::deliver_pending() {
  if (!enabled_ || function_masked_ || owner_ != vpci::pci::MsixTableOwner::kFunction) return;
  for (std::uint16_t v = 0; v < vectors_; ++v) {
    if (pending(v) && !vector_masked(v)) {
      pba_[pba_index(v)] &= ~pba_bit(v);
      deliver(v);
    }
  }
}

}  // namespace vpci::virtio::pci
