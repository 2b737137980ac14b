#include "driver/vfio_user_access.h"

#include <poll.h>
#include <unistd.h>

#include <cerrno>

#include <fmt/format.h>
#include <sys/eventfd.h>

#include "base/little_endian.h"
#include "pci/registers.h"
#include "server/protocol.h"

namespace vpci::driver {
namespace {

namespace wire = vpci::server::vfio_user;
// vfio-user IRQ indexes (linux/vfio.h VFIO_PCI_*_IRQ_INDEX).
constexpr std::uint32_t kIrqIntx = 0;
constexpr std::uint32_t kIrqMsix = 2;

}  // namespace

Result<std::unique_ptr<VfioUserAccess>> VfioUserAccess::create(client::VfioUserClient& client,
                                                               bool message_dma) {
  std::unique_ptr<VfioUserAccess> access(new VfioUserAccess(client, message_dma));
  VPCI_ASSIGN_OR_RETURN(const auto info, client.device_info());
  if ((info.flags & wire::kDeviceFlagPci) == 0 || info.num_regions <= client::kPciConfigRegion) {
    return make_error(ErrorCode::kUnsupported, "vfio-user server {}: not a PCI device",
                      client.path());
  }
  VPCI_ASSIGN_OR_RETURN(const auto config, client.region_info(client::kPciConfigRegion));
  access->config_size_ = static_cast<std::uint32_t>(std::min<std::uint64_t>(config.size, 4096));
  // The sizes come from the regions, the kinds from the BAR registers.
  for (unsigned bar = 0; bar < vpci::pci::kBarCount; ++bar) {
    VPCI_ASSIGN_OR_RETURN(const auto region, client.region_info(bar));
    if (region.size == 0) continue;
    std::array<std::uint8_t, 4> raw{};
    VPCI_TRY(client.region_read(client::kPciConfigRegion, vpci::pci::reg::kBar0 + 4 * bar, raw));
    access->bars_[bar] = bar_from_register(load_le<std::uint32_t>(raw), region.size);
  }
  if (info.num_irqs > kIrqMsix) {
    VPCI_ASSIGN_OR_RETURN(const auto msix, client.irq_info(kIrqMsix));
    access->msix_vectors_ = static_cast<std::uint16_t>(std::min<std::uint32_t>(msix.count, 2048));
  }
  return access;
}

VfioUserAccess::~VfioUserAccess() {
  // Best effort: the connection may be gone already.
  if (log_ != nullptr) (void)route_interrupts(nullptr, 0);
  for (const auto& [base, size] : mapped_) (void)client_->dma_unmap(base, size);
}

std::string VfioUserAccess::describe() const {
  return fmt::format("vfio-user server {}", client_->path());
}

vpci::pci::BarInfo VfioUserAccess::bar_info(unsigned bar) const {
  return bar < bars_.size() ? bars_[bar] : vpci::pci::BarInfo{};
}

Status VfioUserAccess::check_bar(unsigned bar, std::uint64_t offset, std::size_t length) const {
  if (bar >= bars_.size() || bars_[bar].size == 0 || offset > bars_[bar].size ||
      length > bars_[bar].size - offset) {
    return make_error(ErrorCode::kOutOfRange, "BAR{} access of {} bytes at {:#x} outside the BAR",
                      bar, length, offset);
  }
  return {};
}

Status VfioUserAccess::config_read(std::uint32_t offset, std::span<std::uint8_t> data) {
  return client_->region_read(client::kPciConfigRegion, offset, data);
}

Status VfioUserAccess::config_write(std::uint32_t offset, std::span<const std::uint8_t> data) {
  return client_->region_write(client::kPciConfigRegion, offset, data);
}

Status VfioUserAccess::bar_read(unsigned bar, std::uint64_t offset, std::span<std::uint8_t> data) {
  VPCI_TRY(check_bar(bar, offset, data.size()));
  return client_->region_read(bar, offset, data);
}

Status VfioUserAccess::bar_write(unsigned bar, std::uint64_t offset,
                                 std::span<const std::uint8_t> data) {
  VPCI_TRY(check_bar(bar, offset, data.size()));
  return client_->region_write(bar, offset, data);
}

Status VfioUserAccess::notify_write(unsigned bar, std::uint64_t offset,
                                    std::span<const std::uint8_t> data) {
  VPCI_TRY(check_bar(bar, offset, data.size()));
  return client_->region_write_posted(bar, offset, data);
}

Status VfioUserAccess::map_dma(DmaMemory& memory) {
  VPCI_TRY(client_->dma_map(memory.base(), memory.bytes(), message_dma_ ? -1 : memory.fd()));
  mapped_.emplace_back(memory.base(), memory.size());
  return {};
}

Status VfioUserAccess::route_interrupts(InterruptLog* log, std::uint16_t vectors) {
  if (interrupts_.msix_count() != 0) VPCI_TRY(client_->disable_irqs(kIrqMsix));
  if (interrupts_.has_intx()) VPCI_TRY(client_->disable_irqs(kIrqIntx));
  interrupts_.clear();
  log_ = log;
  if (log == nullptr) return {};
  // INTx and every MSI-X vector at once, as QEMU gives them (the device uses what the
  // driver enables).
  VPCI_TRY(interrupts_.create(true, std::min(vectors, msix_vectors_)));
  const std::array<int, 1> intx = {interrupts_.intx_fd()};
  VPCI_TRY(client_->set_irq_eventfds(kIrqIntx, 0, intx));
  VPCI_TRY(client_->unmask_irq(kIrqIntx, 0));
  const std::vector<int> msix = interrupts_.msix_fds();
  if (!msix.empty()) VPCI_TRY(client_->set_irq_eventfds(kIrqMsix, 0, msix));
  return {};
}

Status VfioUserAccess::poll(std::chrono::milliseconds wait) {
  // Answer the server's DMA requests, look at the eventfds, and wait a short slice on
  // them, until `wait` passes or an interrupt came.
  const auto deadline = std::chrono::steady_clock::now() + wait;
  do {
    VPCI_TRY(client_->serve_requests(std::chrono::milliseconds(0)));
    if (interrupts_.collect(log_)) return {};
    const bool any_eventfd = interrupts_.has_intx() || interrupts_.msix_count() != 0;
    const auto left =
        std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    const std::chrono::milliseconds slice(std::clamp<std::int64_t>(left.count(), 0, 1));
    if (any_eventfd) interrupts_.wait(slice);
    VPCI_TRY(client_->serve_requests(any_eventfd ? std::chrono::milliseconds(0) : slice));
    if (interrupts_.collect(log_)) return {};
  } while (std::chrono::steady_clock::now() < deadline);
  return {};
}

Status VfioUserAccess::unmask_intx() {
  if (log_ != nullptr) log_->intx = false;  // the ISR read de-asserted it
  return client_->unmask_irq(kIrqIntx, 0);
}

}  // namespace vpci::driver
