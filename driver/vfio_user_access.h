// PciAccess over a vfio-user server (client/vfio_user_client.h): config space is region
// 7, BARs are regions 0-5 (sizes from GET_REGION_INFO), doorbells are posted writes,
// driver memory is DMA_MAPped with its memfd (or, with `message_dma`, without one: the
// server then reaches it through DMA_READ/DMA_WRITE, answered while the driver polls),
// and interrupts arrive on eventfds given with SET_IRQS (INTx and every MSI-X vector).
#pragma once

#include <array>
#include <memory>
#include <vector>

#include "client/vfio_user_client.h"
#include "driver/eventfd_interrupts.h"
#include "driver/pci_access.h"

namespace vpci::driver {

class VfioUserAccess final : public PciAccess {
 public:
  // Reads the device's regions and IRQ counts; the client stays the caller's.
  static Result<std::unique_ptr<VfioUserAccess>> create(client::VfioUserClient& client,
                                                        bool message_dma = false);
  ~VfioUserAccess() override;

  [[nodiscard]] std::string describe() const override;
  [[nodiscard]] std::uint32_t config_size() const override { return config_size_; }
  [[nodiscard]] vpci::pci::BarInfo bar_info(unsigned bar) const override;
  [[nodiscard]] std::uint16_t msix_vector_count() const override { return msix_vectors_; }
  Status config_read(std::uint32_t offset, std::span<std::uint8_t> data) override;
  Status config_write(std::uint32_t offset, std::span<const std::uint8_t> data) override;
  Status bar_read(unsigned bar, std::uint64_t offset, std::span<std::uint8_t> data) override;
  Status bar_write(unsigned bar, std::uint64_t offset, std::span<const std::uint8_t> data) override;
  Status notify_write(unsigned bar, std::uint64_t offset,
                      std::span<const std::uint8_t> data) override;
  Status map_dma(DmaMemory& memory) override;
  Status route_interrupts(InterruptLog* log, std::uint16_t vectors) override;
  Status poll(std::chrono::milliseconds wait) override;
  Status unmask_intx() override;
  Status reset() override { return client_->reset(); }

 private:
  explicit VfioUserAccess(client::VfioUserClient& client, bool message_dma)
      : client_(&client), message_dma_(message_dma) {}
  Status check_bar(unsigned bar, std::uint64_t offset, std::size_t length) const;

  client::VfioUserClient* client_;
  bool message_dma_;
  std::uint32_t config_size_ = 0;
  std::array<vpci::pci::BarInfo, vpci::pci::kBarCount> bars_{};
  std::uint16_t msix_vectors_ = 0;
  InterruptLog* log_ = nullptr;
  EventfdInterrupts interrupts_;
  std::vector<std::pair<GuestAddress, std::size_t>> mapped_;
};

}  // namespace vpci::driver
