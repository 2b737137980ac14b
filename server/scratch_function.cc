#include "server/scratch_function.h"

#include <algorithm>
#include <cstring>

namespace vpci::server {
namespace {

pci::ConfigSpace make_config() {
  pci::HeaderIdentity ids;
  ids.vendor_id = ScratchFunction::kVendorId;
  ids.device_id = ScratchFunction::kDeviceId;
  ids.revision = 1;
  ids.class_code = 0xFF0000;  // unassigned class: no guest driver binds to it
  ids.subsystem_vendor_id = ScratchFunction::kVendorId;
  ids.subsystem_id = 0x1100;
  ids.interrupt_pin = 1;  // INTA#
  auto space = pci::ConfigSpace::make_endpoint(pci::kExtendedConfigSize, ids);
  [[maybe_unused]] const auto defined =
      space.define_bar(0, {pci::BarType::kMemory64, ScratchFunction::kBarSize, false});
  space.capture_reset_state();
  return space;
}

}  // namespace

ScratchFunction::ScratchFunction() : config_(make_config()), bar_(kBarSize, 0) {}

RegionInfo ScratchFunction::region_info(unsigned index) const {
  if (index == 0) return RegionInfo{kBarSize, true, true};
  if (index == kRegionConfig) return RegionInfo{config_.size(), true, true};
  return RegionInfo{0, false, false};
}

std::uint32_t ScratchFunction::irq_count(unsigned irq_index) const {
  return irq_index == kIrqIntx ? 1 : 0;
}

Status ScratchFunction::config_read(std::uint32_t offset, std::span<std::uint8_t> data) {
  return read_config_bytes(config_, offset, data);
}

Status ScratchFunction::config_write(std::uint32_t offset, std::span<const std::uint8_t> data) {
  return write_config_bytes(config_, offset, data);
}

Status ScratchFunction::region_read(unsigned region, std::uint64_t offset, std::span<std::uint8_t> data) {
  if (region != 0) return make_error(ErrorCode::kInvalidArgument, "no region {}", region);
  std::memcpy(data.data(), bar_.data() + offset, data.size());
  return {};
}

Status ScratchFunction::region_write(unsigned region, std::uint64_t offset,
                                     std::span<const std::uint8_t> data) {
  if (region != 0) return make_error(ErrorCode::kInvalidArgument, "no region {}", region);
  std::memcpy(bar_.data() + offset, data.data(), data.size());
  if (offset <= kDoorbell + 3 && offset + data.size() > kDoorbell) {
    std::uint32_t doorbell = 0;
    std::memcpy(&doorbell, bar_.data() + kDoorbell, sizeof(doorbell));
    intx_level_ = doorbell != 0;
    if (intx_level_) raise_intx();
  }
  if (offset <= kDmaLength && offset + data.size() >= kDmaLength + 4) {
    std::uint32_t length = 0;
    std::memcpy(&length, bar_.data() + kDmaLength, sizeof(length));
    run_dma(length);
  }
  return {};
}

void ScratchFunction::run_dma(std::uint32_t length) {
  std::uint64_t address = 0;
  std::memcpy(&address, bar_.data() + kDmaAddress, sizeof(address));
  std::uint32_t status = 2;
  // Bus mastering must be on for a device to issue DMA (PCI Local Bus 3.0 §6.2.2).
  const bool bus_master = (config_.raw16(pci::reg::kCommand) & pci::command::kBusMaster) != 0;
  if (memory_ != nullptr && bus_master && length <= kDmaAddress) {
    std::uint32_t control = 0;
    std::memcpy(&control, bar_.data() + kDmaControl, sizeof(control));
    const std::span<std::uint8_t> buffer(bar_.data(), length);
    const Status done = (control & kDmaToGuest) != 0 ? memory_->write(address, buffer)
                                                     : memory_->read(address, buffer);
    if (done) status = 1;
  }
  std::memcpy(bar_.data() + kDmaStatus, &status, sizeof(status));
}

void ScratchFunction::raise_intx() {
  // Interrupt Disable in Command blocks INTx (PCI Local Bus 3.0 §6.2.2).
  if ((config_.raw16(pci::reg::kCommand) & pci::command::kInterruptDisable) != 0) return;
  if (interrupts_ != nullptr && interrupts_->trigger(kIrqIntx, 0)) ++interrupts_delivered_;
}

void ScratchFunction::connected(InterruptTrigger& interrupts, const GuestMemory& memory) {
  interrupts_ = &interrupts;
  memory_ = &memory;
}

void ScratchFunction::disconnected() {
  interrupts_ = nullptr;
  memory_ = nullptr;
}

void ScratchFunction::reset() {
  config_.reset();
  std::fill(bar_.begin(), bar_.end(), 0);
  intx_level_ = false;
  ++reset_count_;
}

void ScratchFunction::dma_region_added(const GuestMemoryRegion& /*region*/) { ++dma_regions_added_; }
void ScratchFunction::dma_region_removed(const GuestMemoryRegion& /*region*/) { ++dma_regions_removed_; }

void ScratchFunction::irq_unmasked(unsigned irq_index, unsigned /*vector*/) {
  if (irq_index == kIrqIntx && intx_level_) raise_intx();
}

}  // namespace vpci::server
