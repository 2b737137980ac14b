// The ScratchFunction's device (server/scratch_function.h: BAR0 scratch bytes, INTx
// doorbell at 0xFFC, a DMA engine at 0xFE0..0xFEC) written as a pci::Function instead,
// so the real-guest test can serve it through server::FunctionAdapter — the path the
// virtio devices take — and prove that path (BAR forwarding, INTx level → automasked
// trigger, DMA through a virtio::GuestMemory mirrored from QEMU's DMA_MAPs) against a
// real QEMU. Subsystem ID 0x1101 (0x1100 for the direct ScratchFunction) tells them apart
// in the guest. Test-only.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "pci/config_space.h"
#include "pci/function.h"
#include "pci/registers.h"
#include "server/pci_function.h"
#include "server/scratch_function.h"
#include "virtio/guest_memory.h"

namespace vpci::guest_test {

class ScratchPciFunction final : public pci::Function {
 public:
  using Scratch = server::ScratchFunction;
  static constexpr std::uint16_t kSubsystemId = 0x1101;

  explicit ScratchPciFunction(std::shared_ptr<virtio::GuestMemory> memory)
      : memory_(std::move(memory)), config_(make_config()), bar_(Scratch::kBarSize, 0) {}

  [[nodiscard]] std::uint32_t config_size() const override { return config_.size(); }
  [[nodiscard]] pci::BarInfo bar_info(unsigned bar) const override {
    if (bar == 0) return {pci::BarKind::kMemory64, Scratch::kBarSize, false};
    return {};
  }
  [[nodiscard]] std::uint16_t msix_vector_count() const override { return 0; }
  Status config_read(std::uint32_t offset, std::span<std::uint8_t> data) override {
    return server::read_config_bytes(config_, offset, data);
  }
  Status config_write(std::uint32_t offset, std::span<const std::uint8_t> data) override {
    return server::write_config_bytes(config_, offset, data);
  }
  Status bar_read(unsigned bar, std::uint64_t offset, std::span<std::uint8_t> data) override {
    if (bar != 0 || offset > bar_.size() || data.size() > bar_.size() - offset) {
      return make_error(ErrorCode::kOutOfRange, "BAR{} access at {:#x}", bar, offset);
    }
    std::memcpy(data.data(), bar_.data() + offset, data.size());
    return {};
  }
  Status bar_write(unsigned bar, std::uint64_t offset,
                   std::span<const std::uint8_t> data) override {
    if (bar != 0 || offset > bar_.size() || data.size() > bar_.size() - offset) {
      return make_error(ErrorCode::kOutOfRange, "BAR{} access at {:#x}", bar, offset);
    }
    std::memcpy(bar_.data() + offset, data.data(), data.size());
    if (offset <= Scratch::kDoorbell + 3 && offset + data.size() > Scratch::kDoorbell) {
      std::uint32_t doorbell = 0;
      std::memcpy(&doorbell, bar_.data() + Scratch::kDoorbell, sizeof(doorbell));
      // INTx only when Interrupt Disable is clear (PCI Local Bus 3.0 §6.2.2).
      const bool enabled =
          (config_.raw16(pci::reg::kCommand) & pci::command::kInterruptDisable) == 0;
      set_level(doorbell != 0 && enabled);
    }
    if (offset <= Scratch::kDmaLength && offset + data.size() >= Scratch::kDmaLength + 4) run_dma();
    return {};
  }
  void set_interrupt_output(pci::InterruptOutput* output) override { output_ = output; }
  void reset() override {
    config_.reset();
    std::fill(bar_.begin(), bar_.end(), 0);
    set_level(false);
    resets_.fetch_add(1);
  }

  [[nodiscard]] unsigned resets() const { return resets_.load(); }
  [[nodiscard]] unsigned intx_asserts() const { return intx_asserts_.load(); }
  [[nodiscard]] unsigned dma_copies() const { return dma_copies_.load(); }

 private:
  static pci::ConfigSpace make_config() {
    pci::HeaderIdentity ids;
    ids.vendor_id = Scratch::kVendorId;
    ids.device_id = Scratch::kDeviceId;
    ids.revision = 1;
    ids.class_code = 0xFF0000;
    ids.subsystem_vendor_id = Scratch::kVendorId;
    ids.subsystem_id = kSubsystemId;
    ids.interrupt_pin = 1;
    auto space = pci::ConfigSpace::make_endpoint(pci::kExtendedConfigSize, ids);
    [[maybe_unused]] const auto defined =
        space.define_bar(0, {pci::BarType::kMemory64, Scratch::kBarSize, false});
    space.capture_reset_state();
    return space;
  }

  void set_level(bool level) {
    if (level == level_) return;  // pci::InterruptOutput: called on changes only
    level_ = level;
    if (level) intx_asserts_.fetch_add(1);
    if (output_ != nullptr) output_->set_intx_level(level);
  }

  void run_dma() {
    std::uint64_t address = 0;
    std::uint32_t length = 0;
    std::memcpy(&address, bar_.data() + Scratch::kDmaAddress, sizeof(address));
    std::memcpy(&length, bar_.data() + Scratch::kDmaLength, sizeof(length));
    std::uint32_t status = 2;
    const bool bus_master = (config_.raw16(pci::reg::kCommand) & pci::command::kBusMaster) != 0;
    if (bus_master && length <= Scratch::kDmaAddress &&
        memory_->snapshot()->read(address, std::span(bar_.data(), length))) {
      status = 1;
      dma_copies_.fetch_add(1);
    }
    std::memcpy(bar_.data() + Scratch::kDmaStatus, &status, sizeof(status));
  }

  std::shared_ptr<virtio::GuestMemory> memory_;
  pci::ConfigSpace config_;
  std::vector<std::uint8_t> bar_;
  pci::InterruptOutput* output_ = nullptr;
  bool level_ = false;
  std::atomic<unsigned> resets_{0};
  std::atomic<unsigned> intx_asserts_{0};
  std::atomic<unsigned> dma_copies_{0};
};

}  // namespace vpci::guest_test
