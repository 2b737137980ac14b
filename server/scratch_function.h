// A minimal PCI function for protocol tests, the dispatch fuzzer and the real-guest
// smoke test: a PCIe endpoint (4 KiB config space) with one 64-bit memory BAR0 backed
// by plain bytes and INTx, no MSI/MSI-X, no virtio.
//
// BAR0 layout: bytes [0, kDoorbell) are scratch memory the guest reads and writes.
// Writing any value to the 4-byte doorbell at kDoorbell asserts INTx (a level that
// stays asserted until the guest writes 0 there) — enough to exercise SET_IRQS,
// automasking and unmask/re-trigger end to end. A tiny DMA engine moves bytes through
// GuestMemory::read/write (so fd-less maps work through DMA_READ/DMA_WRITE messages):
// write a guest address to kDmaAddress (u64), the direction to kDmaControl (u32: 0
// copies guest memory to the start of BAR0, kDmaToGuest copies the start of BAR0 to
// guest memory), then a length to kDmaLength (u32, at most kDmaAddress), which starts
// the transfer; kDmaStatus then reads 1 on success, 2 on failure.
#pragma once

#include <cstdint>
#include <vector>

#include "pci/config_space.h"
#include "server/pci_function.h"

namespace vpci::server {

class ScratchFunction : public PciFunction {
 public:
  static constexpr std::uint64_t kBarSize = 0x1000;
  static constexpr std::uint64_t kDoorbell = 0xFFC;
  static constexpr std::uint64_t kDmaAddress = 0xFE0;
  static constexpr std::uint64_t kDmaLength = 0xFE8;
  static constexpr std::uint64_t kDmaStatus = 0xFEC;
  static constexpr std::uint64_t kDmaControl = 0xFF0;
  static constexpr std::uint32_t kDmaToGuest = 1;
  // The IDs of QEMU's own PCI test device (Red Hat 1b36:0005, "pci-testdev"): a
  // test-only identity no guest driver binds to, recognisable in the guest's lspci.
  // Never used for a device vpci ships.
  static constexpr std::uint16_t kVendorId = 0x1B36;
  static constexpr std::uint16_t kDeviceId = 0x0005;

  ScratchFunction();

  [[nodiscard]] RegionInfo region_info(unsigned index) const override;
  [[nodiscard]] std::uint32_t irq_count(unsigned irq_index) const override;
  Status config_read(std::uint32_t offset, std::span<std::uint8_t> data) override;
  Status config_write(std::uint32_t offset, std::span<const std::uint8_t> data) override;
  Status region_read(unsigned region, std::uint64_t offset, std::span<std::uint8_t> data) override;
  Status region_write(unsigned region, std::uint64_t offset, std::span<const std::uint8_t> data) override;
  void connected(InterruptTrigger& interrupts, const GuestMemory& memory) override;
  void disconnected() override;
  void reset() override;
  void dma_region_added(const GuestMemoryRegion& region) override;
  void dma_region_removed(const GuestMemoryRegion& region) override;
  void irq_unmasked(unsigned irq_index, unsigned vector) override;

  // Observations for tests.
  [[nodiscard]] const pci::ConfigSpace& config() const { return config_; }
  [[nodiscard]] const std::vector<std::uint8_t>& bar() const { return bar_; }
  [[nodiscard]] const GuestMemory* memory() const { return memory_; }
  [[nodiscard]] unsigned reset_count() const { return reset_count_; }
  [[nodiscard]] unsigned interrupts_delivered() const { return interrupts_delivered_; }
  [[nodiscard]] unsigned dma_regions_added() const { return dma_regions_added_; }
  [[nodiscard]] unsigned dma_regions_removed() const { return dma_regions_removed_; }
  [[nodiscard]] bool is_connected() const { return interrupts_ != nullptr; }

 private:
  void raise_intx();
  void run_dma(std::uint32_t length);

  pci::ConfigSpace config_;
  std::vector<std::uint8_t> bar_;
  bool intx_level_ = false;
  InterruptTrigger* interrupts_ = nullptr;
  const GuestMemory* memory_ = nullptr;
  unsigned reset_count_ = 0;
  unsigned interrupts_delivered_ = 0;
  unsigned dma_regions_added_ = 0;
  unsigned dma_regions_removed_ = 0;
};

}  // namespace vpci::server
