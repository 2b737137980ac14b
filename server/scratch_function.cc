#include "server/scratch_function.h"

#include <algorithm>
#include <cstring>

#include "pci/registers.h"

namespace vpci::server {
namespace {

pci::ConfigSpace make_config() {
  pci::HeaderIdentity ids;
  ids.vendor_id = ScratchFunction::kVendorId;
  ids.device_id = ScratchFunction::kDeviceId;
  ids.revision = 1;
  ids.class_code = 0xFF0000;  // unassigned class: no guest driver binds to it
  ids.subsystem_vendor_id = ScratchFunction::kVendorId;
  ids.subsystem_id = ScratchFunction::kSubsystemId;
  ids.interrupt_pin = 1;  // INTA#
  auto space = pci::ConfigSpace::make_endpoint(pci::kExtendedConfigSize, ids);
  [[maybe_unused]] const auto defined =
      space.define_bar(0, {pci::BarType::kMemory64, ScratchFunction::kBarSize, false});
  space.capture_reset_state();
  return space;
}

}  // namespace

ScratchFunction::ScratchFunction(std::shared_ptr<virtio::GuestMemory> memory)
    : memory_(std::move(memory)), config_(make_config()), bar_(kBarSize, 0) {}

pci::BarInfo ScratchFunction::bar_info(unsigned bar) const {
  if (bar == 0) return {pci::BarKind::kMemory64, kBarSize, false};
  return {};
}

Status ScratchFunction::config_read(std::uint32_t offset, std::span<std::uint8_t> data) {
  return config_.read_bytes(offset, data);
}

Status ScratchFunction::config_write(std::uint32_t offset, std::span<const std::uint8_t> data) {
  VPCI_TRY(config_.write_bytes(offset, data));
  update_intx();  // Command.InterruptDisable may have changed
  return {};
}

Status ScratchFunction::bar_read(unsigned bar, std::uint64_t offset, std::span<std::uint8_t> data) {
  if (bar != 0 || offset > bar_.size() || data.size() > bar_.size() - offset) {
    return make_error(ErrorCode::kOutOfRange, "BAR{} access of {} bytes at {:#x}", bar, data.size(),
                      offset);
  }
  std::memcpy(data.data(), bar_.data() + offset, data.size());
  return {};
}

Status ScratchFunction::bar_write(unsigned bar, std::uint64_t offset,
                                  std::span<const std::uint8_t> data) {
  if (bar != 0 || offset > bar_.size() || data.size() > bar_.size() - offset) {
    return make_error(ErrorCode::kOutOfRange, "BAR{} access of {} bytes at {:#x}", bar, data.size(),
                      offset);
  }
  std::memcpy(bar_.data() + offset, data.data(), data.size());
  if (offset <= kDoorbell + 3 && offset + data.size() > kDoorbell) {
    std::uint32_t doorbell = 0;
    std::memcpy(&doorbell, bar_.data() + kDoorbell, sizeof(doorbell));
    doorbell_set_ = doorbell != 0;
    update_intx();
  }
  if (offset <= kDmaLength && offset + data.size() >= kDmaLength + 4) {
    std::uint32_t length = 0;
    std::memcpy(&length, bar_.data() + kDmaLength, sizeof(length));
    std::uint32_t control = 0;
    std::memcpy(&control, bar_.data() + kDmaControl, sizeof(control));
    // In flight until run_dma ends. Even a synchronous transfer is observable: through
    // DMA_READ/DMA_WRITE messages it waits for the client, which serves the guest's next
    // register accesses meanwhile (a posted write lets the vCPU run on).
    const std::uint32_t in_flight = kDmaInFlight;
    std::memcpy(bar_.data() + kDmaStatus, &in_flight, sizeof(in_flight));
    if ((control & kDmaDeferred) != 0 && loop_ != nullptr) {
      loop_->defer([this, length] { run_dma(length); });
    } else {
      run_dma(length);
    }
  }
  return {};
}

void ScratchFunction::run_dma(std::uint32_t length) {
  std::uint64_t address = 0;
  std::memcpy(&address, bar_.data() + kDmaAddress, sizeof(address));
  std::uint32_t status = kDmaFailed;
  // Bus mastering must be on for a device to issue DMA (PCI Local Bus 3.0 §6.2.2).
  const bool bus_master = (config_.raw16(pci::reg::kCommand) & pci::command::kBusMaster) != 0;
  if (bus_master && length <= kDmaAddress) {
    std::uint32_t control = 0;
    std::memcpy(&control, bar_.data() + kDmaControl, sizeof(control));
    const std::span<std::uint8_t> buffer(bar_.data(), length);
    const auto map = memory_->snapshot();
    const Status done =
        (control & kDmaToGuest) != 0 ? map->write(address, buffer) : map->read(address, buffer);
    if (done) status = kDmaDone;
  }
  std::memcpy(bar_.data() + kDmaStatus, &status, sizeof(status));
}

void ScratchFunction::update_intx() {
  // Interrupt Disable in Command blocks INTx (PCI Local Bus 3.0 §6.2.2).
  const bool disabled = (config_.raw16(pci::reg::kCommand) & pci::command::kInterruptDisable) != 0;
  const bool level = doorbell_set_ && !disabled;
  if (level == intx_level_) return;
  intx_level_ = level;
  if (level) ++interrupts_raised_;
  if (output_ != nullptr) output_->set_intx_level(level);
}

void ScratchFunction::reset() {
  config_.reset();
  std::fill(bar_.begin(), bar_.end(), 0);
  doorbell_set_ = false;
  intx_level_ = false;  // no output call: the bus resets its view of the line itself
  ++reset_count_;
}

}  // namespace vpci::server
