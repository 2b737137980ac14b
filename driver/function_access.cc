#include "driver/function_access.h"

#include <thread>

namespace vpci::driver {

FunctionAccess::FunctionAccess(vpci::pci::Function& function,
                               std::shared_ptr<virtio::GuestMemory> memory)
    : function_(&function), memory_(std::move(memory)) {}

FunctionAccess::~FunctionAccess() {
  if (log_ != nullptr) function_->set_interrupt_output(nullptr);
  for (const auto& [base, size] : mapped_) (void)memory_->remove_range(base, size);
}

Status FunctionAccess::map_dma(DmaMemory& memory) {
  if (!memory_) {
    return make_error(ErrorCode::kInvalidArgument,
                      "this in-process function was given no guest memory to map into");
  }
  virtio::MemoryRegionSpec spec;
  spec.guest_address = memory.base();
  spec.size = memory.size();
  spec.host = memory.bytes().data();
  VPCI_TRY(memory_->add_region(std::move(spec)));
  mapped_.emplace_back(memory.base(), memory.size());
  return {};
}

Status FunctionAccess::route_interrupts(InterruptLog* log, std::uint16_t vectors) {
  (void)vectors;  // the function raises whichever it has
  log_ = log;
  function_->set_interrupt_output(log != nullptr ? this : nullptr);
  return {};
}

Status FunctionAccess::poll(std::chrono::milliseconds wait) {
  // Interrupts arrive through the callbacks; a device on its own thread needs time.
  std::this_thread::sleep_for(
      std::min<std::chrono::microseconds>(wait, std::chrono::microseconds(200)));
  return {};
}

void FunctionAccess::set_intx_level(bool asserted) {
  if (log_ == nullptr) return;
  log_->intx = asserted;
  ++log_->intx_changes;
}

void FunctionAccess::signal_msix(std::uint16_t vector, std::uint64_t address, std::uint32_t data) {
  if (log_ != nullptr) log_->msix.push_back({vector, address, data});
}

}  // namespace vpci::driver
