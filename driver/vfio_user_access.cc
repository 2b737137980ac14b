#include "driver/vfio_user_access.h"

#include <poll.h>
#include <unistd.h>

#include <cerrno>

#include <fmt/format.h>
#include <sys/eventfd.h>

#include "pci/registers.h"
#include "server/protocol.h"

namespace vpci::driver {
namespace {

namespace wire = vpci::server::vfio_user;
// vfio-user IRQ indexes (linux/vfio.h VFIO_PCI_*_IRQ_INDEX).
constexpr std::uint32_t kIrqIntx = 0;
constexpr std::uint32_t kIrqMsix = 2;

Result<server::UniqueFd> make_eventfd() {
  server::UniqueFd fd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!fd.valid()) return make_error(ErrorCode::kIoError, "eventfd: {}", errno_text(errno));
  return fd;
}

// The count an eventfd holds (0 if none), read without blocking.
std::uint64_t drain(int fd) {
  std::uint64_t count = 0;
  return ::read(fd, &count, sizeof(count)) == sizeof(count) ? count : 0;
}

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
  for (unsigned bar = 0; bar < vpci::pci::kBarCount; ++bar) {
    VPCI_ASSIGN_OR_RETURN(const auto region, client.region_info(bar));
    access->bars_[bar].size = region.size;
  }
  // The BAR kinds come from the config space (the regions only say how big).
  for (unsigned bar = 0; bar < vpci::pci::kBarCount; ++bar) {
    if (access->bars_[bar].size == 0) continue;
    std::array<std::uint8_t, 4> low{};
    VPCI_TRY(client.region_read(client::kPciConfigRegion, vpci::pci::reg::kBar0 + 4 * bar, low));
    const std::uint32_t value =
        low[0] | (low[1] << 8) | (low[2] << 16) | (std::uint32_t{low[3]} << 24);
    auto& info_bar = access->bars_[bar];
    if ((value & 1) != 0) {
      info_bar.kind = vpci::pci::BarKind::kIo;
    } else {
      info_bar.kind =
          ((value >> 1) & 3) == 2 ? vpci::pci::BarKind::kMemory64 : vpci::pci::BarKind::kMemory32;
      info_bar.prefetchable = (value & 8) != 0;
    }
  }
  if (info.num_irqs > kIrqMsix) {
    VPCI_ASSIGN_OR_RETURN(const auto msix, client.irq_info(kIrqMsix));
    access->msix_vectors_ = static_cast<std::uint16_t>(std::min<std::uint32_t>(msix.count, 2048));
  }
  return access;
}

VfioUserAccess::~VfioUserAccess() {
  // Best effort: the connection may be gone already.
  if (log_ != nullptr) {
    (void)client_->disable_irqs(kIrqMsix);
    (void)client_->disable_irqs(kIrqIntx);
  }
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
  if (log == nullptr) {
    log_ = nullptr;
    if (!msix_.empty()) VPCI_TRY(client_->disable_irqs(kIrqMsix));
    if (intx_.valid()) VPCI_TRY(client_->disable_irqs(kIrqIntx));
    msix_.clear();
    intx_.reset();
    return {};
  }
  log_ = log;
  if (!intx_.valid()) {
    VPCI_ASSIGN_OR_RETURN(intx_, make_eventfd());
    const std::array<int, 1> fds = {intx_.get()};
    VPCI_TRY(client_->set_irq_eventfds(kIrqIntx, 0, fds));
    VPCI_TRY(client_->unmask_irq(kIrqIntx, 0));
  }
  vectors = std::min(vectors, msix_vectors_);
  if (msix_.size() != vectors) {
    msix_.clear();
    std::vector<int> fds;
    for (std::uint16_t v = 0; v < vectors; ++v) {
      VPCI_ASSIGN_OR_RETURN(auto fd, make_eventfd());
      fds.push_back(fd.get());
      msix_.push_back(std::move(fd));
    }
    if (!fds.empty()) VPCI_TRY(client_->set_irq_eventfds(kIrqMsix, 0, fds));
  }
  return {};
}

bool VfioUserAccess::collect() {
  if (log_ == nullptr) return false;
  bool any = false;
  if (intx_.valid() && drain(intx_.get()) != 0) {
    log_->intx = true;
    ++log_->intx_changes;
    any = true;
  }
  for (std::size_t v = 0; v < msix_.size(); ++v) {
    for (std::uint64_t n = drain(msix_[v].get()); n > 0; --n) {
      log_->msix.push_back({static_cast<std::uint16_t>(v), 0, 0});
      any = true;
    }
  }
  return any;
}

Status VfioUserAccess::poll(std::chrono::milliseconds wait) {
  // Answer the server's DMA requests for a moment, then look at the eventfds; a short
  // slice each, so an interrupt ends the wait early.
  const auto deadline = std::chrono::steady_clock::now() + wait;
  do {
    VPCI_TRY(client_->serve_requests(std::chrono::milliseconds(0)));
    if (collect()) return {};
    std::vector<pollfd> fds;
    if (intx_.valid()) fds.push_back({intx_.get(), POLLIN, 0});
    for (const auto& fd : msix_) fds.push_back({fd.get(), POLLIN, 0});
    const auto left =
        std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    const int slice = static_cast<int>(std::clamp<std::int64_t>(left.count(), 0, 1));
    if (!fds.empty()) {
      (void)::poll(fds.data(), fds.size(), slice);
    }
    VPCI_TRY(client_->serve_requests(std::chrono::milliseconds(fds.empty() ? slice : 0)));
    if (collect()) return {};
  } while (std::chrono::steady_clock::now() < deadline);
  return {};
}

Status VfioUserAccess::unmask_intx() {
  if (log_ != nullptr) log_->intx = false;  // the ISR read de-asserted it
  return client_->unmask_irq(kIrqIntx, 0);
}

}  // namespace vpci::driver
