// PciAccess over Linux VFIO (/dev/vfio, the type1 IOMMU): a real PCI function bound to
// vfio-pci, driven from userspace — config space and BARs through the device fd's region
// offsets, driver memory mapped with VFIO_IOMMU_MAP_DMA, interrupts on eventfds
// (VFIO_DEVICE_SET_IRQS). Compile-tested here; nothing in CI has a device bound to
// vfio-pci, so it is untested against hardware (docs/client.md).
#pragma once

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "driver/eventfd_interrupts.h"
#include "driver/pci_access.h"
#include "server/unique_fd.h"

namespace vpci::driver {

class VfioAccess final : public PciAccess {
 public:
  // `address`: the function's PCI address ("0000:03:00.0"), bound to vfio-pci, whose
  // IOMMU group holds nothing else in use.
  static Result<std::unique_ptr<VfioAccess>> open(const std::string& address);
  ~VfioAccess() override;

  [[nodiscard]] std::string describe() const override { return "VFIO " + address_; }
  [[nodiscard]] std::uint32_t config_size() const override { return config_size_; }
  [[nodiscard]] vpci::pci::BarInfo bar_info(unsigned bar) const override;
  [[nodiscard]] std::uint16_t msix_vector_count() const override { return msix_vectors_; }
  Status config_read(std::uint32_t offset, std::span<std::uint8_t> data) override;
  Status config_write(std::uint32_t offset, std::span<const std::uint8_t> data) override;
  Status bar_read(unsigned bar, std::uint64_t offset, std::span<std::uint8_t> data) override;
  Status bar_write(unsigned bar, std::uint64_t offset, std::span<const std::uint8_t> data) override;
  Status map_dma(DmaMemory& memory) override;
  Status route_interrupts(InterruptLog* log, std::uint16_t vectors) override;
  Status poll(std::chrono::milliseconds wait) override;
  Status unmask_intx() override;
  Status reset() override;

 private:
  struct Region {
    std::uint64_t offset = 0;  // in the device fd
    std::uint64_t size = 0;
  };
  explicit VfioAccess(std::string address) : address_(std::move(address)) {}
  Status access(std::uint32_t index, std::uint64_t offset, std::span<std::uint8_t> read,
                std::span<const std::uint8_t> write);
  Status set_irqs(std::uint32_t index, std::uint32_t flags, std::span<const int> fds,
                  std::uint32_t count);

  std::string address_;
  server::UniqueFd container_;
  server::UniqueFd group_;
  server::UniqueFd device_;
  std::array<Region, 8> regions_{};  // BAR0-5, ROM, config
  std::array<vpci::pci::BarInfo, vpci::pci::kBarCount> bars_{};
  std::uint32_t config_size_ = 0;
  std::uint16_t msix_vectors_ = 0;
  InterruptLog* log_ = nullptr;
  EventfdInterrupts interrupts_;
  std::vector<std::pair<GuestAddress, std::size_t>> mapped_;
};

}  // namespace vpci::driver
