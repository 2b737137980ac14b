#include "server/function_adapter.h"

#include <array>
#include <cstdio>

#include <fmt/format.h>

namespace vpci::server {
namespace {

// pci::Function takes BAR accesses of 1, 2, 4 or 8 bytes; QEMU forwards the guest's
// access width, but the protocol allows any count (spec "VFIO_USER_REGION_READ"), so
// anything else is split into naturally aligned pieces in address order.
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

}  // namespace

FunctionAdapter::FunctionAdapter(std::shared_ptr<virtio::GuestMemory> memory)
    : memory_(std::move(memory)) {}

FunctionAdapter::~FunctionAdapter() {
  // Normally disconnected() has detached already (servers end their sessions before the
  // function goes away), and a non-owned function may be gone by now: touch it only if
  // a session is somehow still attached.
  if (function_ != nullptr && trigger_.load() != nullptr) function_->set_interrupt_output(nullptr);
}

void FunctionAdapter::attach(std::unique_ptr<pci::Function> function) {
  owned_function_ = std::move(function);
  function_ = owned_function_.get();
}

RegionInfo FunctionAdapter::region_info(unsigned index) const {
  if (index < pci::kBarCount) {
    const pci::BarInfo bar = function_->bar_info(index);
    if (bar.kind == pci::BarKind::kAbsent || bar.size == 0) return RegionInfo{0, false, false};
    return RegionInfo{bar.size, true, true};
  }
  if (index == kRegionConfig) return RegionInfo{function_->config_size(), true, true};
  return RegionInfo{0, false, false};  // no expansion ROM, no VGA
}

std::uint32_t FunctionAdapter::irq_count(unsigned irq_index) const {
  switch (irq_index) {
    case kIrqIntx: return 1;
    case kIrqMsix: return function_->msix_vector_count();
    case kIrqErr: return kErrIrqCount;
    default: return 0;  // MSI, REQ
  }
}

Status FunctionAdapter::config_read(std::uint32_t offset, std::span<std::uint8_t> data) {
  return function_->config_read(offset, data);
}

Status FunctionAdapter::config_write(std::uint32_t offset, std::span<const std::uint8_t> data) {
  return function_->config_write(offset, data);
}

Status FunctionAdapter::region_read(unsigned region, std::uint64_t offset,
                                    std::span<std::uint8_t> data) {
  if (region >= pci::kBarCount) {
    return make_error(ErrorCode::kInvalidArgument, "region {} is not a BAR", region);
  }
  if (single_piece(offset, data.size())) return function_->bar_read(region, offset, data);
  return split_bar_access(offset, data.size(),
                          [&](std::uint64_t at, std::size_t from, std::size_t n) {
                            return function_->bar_read(region, at, data.subspan(from, n));
                          });
}

Status FunctionAdapter::region_write(unsigned region, std::uint64_t offset,
                                     std::span<const std::uint8_t> data) {
  if (region >= pci::kBarCount) {
    return make_error(ErrorCode::kInvalidArgument, "region {} is not a BAR", region);
  }
  if (single_piece(offset, data.size())) return function_->bar_write(region, offset, data);
  return split_bar_access(offset, data.size(),
                          [&](std::uint64_t at, std::size_t from, std::size_t n) {
                            return function_->bar_write(region, at, data.subspan(from, n));
                          });
}

void FunctionAdapter::connected(InterruptTrigger& interrupts, const GuestMemory& /*memory*/) {
  trigger_.store(&interrupts);
  function_->set_interrupt_output(this);
}

void FunctionAdapter::disconnected() {
  function_->set_interrupt_output(nullptr);
  trigger_.store(nullptr);
  intx_asserted_.store(false);
}

void FunctionAdapter::reset() {
  function_->reset();
  intx_asserted_.store(false);
}

void FunctionAdapter::dma_region_added(const GuestMemoryRegion& region) {
  if (region.host == nullptr) {
    // No fd: virtio devices reach guest memory only through virtio::GuestMemory host
    // views (rings and buffers are used in place), which a DMA_READ/DMA_WRITE round
    // trip per access cannot provide. The range stays out of the device's map, so a
    // ring or buffer there fails translation with an error naming the address and the
    // queue goes to NEEDS_RESET. Said once per map so the cause is visible.
    fmt::print(stderr,
               "vpci: guest memory [{:#x}, +{:#x}) was mapped without a file descriptor; virtio "
               "devices cannot use it (give the guest memory-backend-memfd,share=on)\n",
               region.iova, region.size);
    return;
  }
  auto latch = std::make_shared<ReleaseLatch>();
  virtio::MemoryRegionSpec spec;
  spec.guest_address = region.iova;
  spec.size = region.size;
  spec.host = region.host;
  spec.writable = region.writable;
  spec.on_release = [latch] {
    {
      std::lock_guard lock(latch->mutex);
      latch->released = true;
    }
    latch->released_cv.notify_all();
  };
  // DmaMappings has already refused overlaps and wraps, so this cannot fail for a
  // region the server accepted; if it did, the device simply cannot reach the range.
  if (memory_->add_region(std::move(spec))) latches_[region.iova] = std::move(latch);
}

void FunctionAdapter::dma_region_removed(const GuestMemoryRegion& region) {
  const auto it = latches_.find(region.iova);
  if (it == latches_.end()) return;
  const std::shared_ptr<ReleaseLatch> latch = it->second;
  latches_.erase(it);
  [[maybe_unused]] const auto removed = memory_->remove_range(region.iova, region.size);
  // The server munmaps the range as soon as this returns: wait for the last snapshot
  // that lists the region (an in-flight request on a device thread) to be dropped.
  std::unique_lock lock(latch->mutex);
  latch->released_cv.wait(lock, [&] { return latch->released; });
}

void FunctionAdapter::irq_unmasked(unsigned irq_index, unsigned /*vector*/) {
  // vfio INTx is automasked: QEMU unmasks at the guest's EOI; a level still asserted
  // means the device still wants service, so it fires again.
  if (irq_index != kIrqIntx || !intx_asserted_.load()) return;
  if (InterruptTrigger* trigger = trigger_.load()) trigger->trigger(kIrqIntx, 0);
}

void FunctionAdapter::set_intx_level(bool asserted) {
  intx_asserted_.store(asserted);
  if (!asserted) return;  // vfio has no de-assert: QEMU lowers the line at EOI
  if (InterruptTrigger* trigger = trigger_.load()) trigger->trigger(kIrqIntx, 0);
}

void FunctionAdapter::signal_msix(std::uint16_t vector, std::uint64_t /*address*/,
                                  std::uint32_t /*data*/) {
  // QEMU owns the MSI-X table (address/data, masking): only the vector number travels.
  if (InterruptTrigger* trigger = trigger_.load()) trigger->trigger(kIrqMsix, vector);
}

}  // namespace vpci::server
