// A minimal PCI function for protocol tests, the dispatch fuzzer, the scale benchmark
// and the real-guest smoke test: a PCIe endpoint (4 KiB config space) with one 64-bit
// memory BAR0 backed by plain bytes and INTx, no MSI/MSI-X, no virtio. It is a
// pci::Function like every device vpci serves, so it takes the same path through the
// server.
//
// BAR0 layout: bytes [0, kDoorbell) are scratch memory the guest reads and writes.
// Writing any value to the 4-byte doorbell at kDoorbell asserts INTx (a level that
// stays asserted until the guest writes 0 there) — enough to exercise SET_IRQS,
// automasking and unmask/re-trigger end to end. A tiny DMA engine moves bytes through
// the device's virtio::GuestMemory (so maps without an fd work through DMA_READ/
// DMA_WRITE messages): write a guest address to kDmaAddress (u64), the direction to
// kDmaControl (u32: 0 copies guest memory to the start of BAR0, kDmaToGuest copies the
// start of BAR0 to guest memory), then a length to kDmaLength (u32, at most
// kDmaAddress), which starts the transfer; kDmaStatus reads kDmaInFlight (0) until it
// ends, then kDmaDone or kDmaFailed. A guest polls it: with DMA through messages the
// transfer waits for the client while the client serves the guest's next (posted) accesses.
// With kDmaDeferred also set in kDmaControl and an event loop attached, the transfer runs
// after the access that started it returns, as deferred work on the loop — the way
// virtio queue work runs on unshared memory.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "base/event_loop.h"
#include "pci/config_space.h"
#include "pci/function.h"
#include "virtio/guest_memory.h"

namespace vpci::server {

class ScratchFunction final : public pci::Function {
 public:
  static constexpr std::uint64_t kBarSize = 0x1000;
  static constexpr std::uint64_t kDoorbell = 0xFFC;
  static constexpr std::uint64_t kDmaAddress = 0xFE0;
  static constexpr std::uint64_t kDmaLength = 0xFE8;
  static constexpr std::uint64_t kDmaStatus = 0xFEC;
  static constexpr std::uint64_t kDmaControl = 0xFF0;
  static constexpr std::uint32_t kDmaToGuest = 1;
  static constexpr std::uint32_t kDmaDeferred = 2;
  static constexpr std::uint32_t kDmaInFlight = 0;  // kDmaStatus values
  static constexpr std::uint32_t kDmaDone = 1;
  static constexpr std::uint32_t kDmaFailed = 2;
  // The IDs of QEMU's own PCI test device (Red Hat 1b36:0005, "pci-testdev"): a
  // test-only identity no guest driver binds to, recognisable in the guest's lspci.
  // Never used for a device vpci ships.
  static constexpr std::uint16_t kVendorId = 0x1B36;
  static constexpr std::uint16_t kDeviceId = 0x0005;
  static constexpr std::uint16_t kSubsystemId = 0x1100;

  explicit ScratchFunction(
      std::shared_ptr<virtio::GuestMemory> memory = std::make_shared<virtio::GuestMemory>());

  // pci::Function
  [[nodiscard]] std::uint32_t config_size() const override { return config_.size(); }
  [[nodiscard]] pci::BarInfo bar_info(unsigned bar) const override;
  [[nodiscard]] std::uint16_t msix_vector_count() const override { return 0; }
  Status config_read(std::uint32_t offset, std::span<std::uint8_t> data) override;
  Status config_write(std::uint32_t offset, std::span<const std::uint8_t> data) override;
  Status bar_read(unsigned bar, std::uint64_t offset, std::span<std::uint8_t> data) override;
  Status bar_write(unsigned bar, std::uint64_t offset, std::span<const std::uint8_t> data) override;
  void set_interrupt_output(pci::InterruptOutput* output) override { output_ = output; }
  void set_event_loop(EventLoop* loop) override { loop_ = loop; }
  void reset() override;

  // What the server feeds with DMA_MAP/UNMAP.
  [[nodiscard]] const std::shared_ptr<virtio::GuestMemory>& guest_memory() const { return memory_; }

  // Observations for tests.
  [[nodiscard]] const pci::ConfigSpace& config() const { return config_; }
  [[nodiscard]] const std::vector<std::uint8_t>& bar() const { return bar_; }
  [[nodiscard]] unsigned reset_count() const { return reset_count_; }
  // Rising edges of the INTx level the function asserted.
  [[nodiscard]] unsigned interrupts_raised() const { return interrupts_raised_; }
  [[nodiscard]] bool is_connected() const { return output_ != nullptr; }

 private:
  void update_intx();
  void run_dma(std::uint32_t length);

  std::shared_ptr<virtio::GuestMemory> memory_;
  pci::ConfigSpace config_;
  std::vector<std::uint8_t> bar_;
  bool doorbell_set_ = false;
  bool intx_level_ = false;
  pci::InterruptOutput* output_ = nullptr;
  EventLoop* loop_ = nullptr;
  unsigned reset_count_ = 0;
  unsigned interrupts_raised_ = 0;
};

}  // namespace vpci::server
