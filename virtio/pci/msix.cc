#include "virtio/pci/msix.h"

#include <algorithm>
#include <cstring>

namespace vpci::virtio::pci {
namespace {

constexpr std::uint32_t kVectorControlMask = 1;  // §7.7.2.4: bit 0, the rest RsvdP

bool access_ok(std::uint64_t offset, std::size_t size, std::uint64_t region) {
  return (size == 4 || size == 8) && offset % size == 0 && offset <= region &&
         size <= region - offset;
}

}  // namespace

MsixController::MsixController(std::uint16_t vectors, vpci::pci::MsixTableOwner owner)
    : vectors_(vectors), owner_(owner), table_(vectors * 4u), pba_((vectors + 63u) / 64u) {
  reset();
}

void MsixController::reset() {
  std::fill(table_.begin(), table_.end(), 0u);
  // §7.7.2.4: Mask bit set after reset.
  for (std::uint16_t v = 0; v < vectors_; ++v) table_[v * 4u + 3] = kVectorControlMask;
  std::fill(pba_.begin(), pba_.end(), 0u);
  enabled_ = false;
  function_masked_ = false;
}

bool MsixController::vector_masked(std::uint16_t vector) const {
  return vector < vectors_ && (entry_word(vector, 3) & kVectorControlMask) != 0;
}

bool MsixController::pending(std::uint16_t vector) const {
  return vector < vectors_ && ((pba_[vector / 64] >> (vector % 64)) & 1) != 0;
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
  for (std::uint16_t v = 0; v < vectors_; ++v) table_[v * 4u + 3] &= kVectorControlMask;
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
    pba_[vector / 64] |= std::uint64_t{1} << (vector % 64);
    return;
  }
  deliver(vector);
}

void MsixController::deliver(std::uint16_t vector) {
  if (output_ == nullptr) return;
  const std::uint64_t address =
      entry_word(vector, 0) | (static_cast<std::uint64_t>(entry_word(vector, 1)) << 32);
  output_->signal_msix(vector, address, entry_word(vector, 2));
}

void MsixController::deliver_pending() {
  if (!enabled_ || function_masked_ || owner_ != vpci::pci::MsixTableOwner::kFunction) return;
  for (std::uint16_t v = 0; v < vectors_; ++v) {
    if (pending(v) && !vector_masked(v)) {
      pba_[v / 64] &= ~(std::uint64_t{1} << (v % 64));
      deliver(v);
    }
  }
}

}  // namespace vpci::virtio::pci
