// PciAccess over an in-process pci::Function (a vpci transport, the legacy mapper, a
// test's function): accesses are direct calls, interrupts are recorded as the function
// raises them, and DMA memory is registered in the device's GuestMemory (host-mapped,
// as with shared guest RAM).
#pragma once

#include <memory>

#include "driver/pci_access.h"
#include "pci/function.h"
#include "virtio/guest_memory.h"

namespace vpci::driver {

class FunctionAccess final : public PciAccess, private vpci::pci::InterruptOutput {
 public:
  // `memory`: the device's view of guest memory, where map_dma registers driver memory
  // (may be null when the caller registers it itself). `function` must outlive this.
  explicit FunctionAccess(vpci::pci::Function& function,
                          std::shared_ptr<virtio::GuestMemory> memory = nullptr);
  ~FunctionAccess() override;
  FunctionAccess(const FunctionAccess&) = delete;
  FunctionAccess& operator=(const FunctionAccess&) = delete;

  [[nodiscard]] std::string describe() const override { return "in-process function"; }
  [[nodiscard]] std::uint32_t config_size() const override { return function_->config_size(); }
  [[nodiscard]] vpci::pci::BarInfo bar_info(unsigned bar) const override {
    return function_->bar_info(bar);
  }
  [[nodiscard]] std::uint16_t msix_vector_count() const override {
    return function_->msix_vector_count();
  }
  Status config_read(std::uint32_t offset, std::span<std::uint8_t> data) override {
    return function_->config_read(offset, data);
  }
  Status config_write(std::uint32_t offset, std::span<const std::uint8_t> data) override {
    return function_->config_write(offset, data);
  }
  Status bar_read(unsigned bar, std::uint64_t offset, std::span<std::uint8_t> data) override {
    return function_->bar_read(bar, offset, data);
  }
  Status bar_write(unsigned bar, std::uint64_t offset,
                   std::span<const std::uint8_t> data) override {
    return function_->bar_write(bar, offset, data);
  }
  Status map_dma(DmaMemory& memory) override;
  Status route_interrupts(InterruptLog* log, std::uint16_t vectors) override;
  Status poll(std::chrono::milliseconds wait) override;
  Status reset() override {
    function_->reset();
    return {};
  }

 private:
  // pci::InterruptOutput: called from inside the function's calls (or its device thread).
  void set_intx_level(bool asserted) override;
  void signal_msix(std::uint16_t vector, std::uint64_t address, std::uint32_t data) override;

  vpci::pci::Function* function_;
  std::shared_ptr<virtio::GuestMemory> memory_;
  std::vector<std::pair<GuestAddress, std::size_t>> mapped_;
  InterruptLog* log_ = nullptr;
};

}  // namespace vpci::driver
