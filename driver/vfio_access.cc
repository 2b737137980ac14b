#include "driver/vfio_access.h"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>

#include <fmt/format.h>
#include <linux/vfio.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>

#include "base/little_endian.h"
#include "pci/registers.h"

namespace vpci::driver {
namespace {

Error os_error(const std::string& what) {
  return Error{ErrorCode::kIoError, fmt::format("{}: {}", what, errno_text(errno))};
}

}  // namespace

Result<std::unique_ptr<VfioAccess>> VfioAccess::open(const std::string& address) {
  std::unique_ptr<VfioAccess> vfio(new VfioAccess(address));
  // The function's IOMMU group (/sys/bus/pci/devices/<address>/iommu_group -> .../<N>).
  std::error_code ec;
  const auto link = std::filesystem::read_symlink(
      std::filesystem::path("/sys/bus/pci/devices") / address / "iommu_group", ec);
  if (ec) {
    return make_error(ErrorCode::kNotFound,
                      "{}: no IOMMU group ({}): is it a PCI address with the "
                      "IOMMU on?",
                      address, ec.message());
  }
  const std::string group_path = "/dev/vfio/" + link.filename().string();
  vfio->container_.reset(::open("/dev/vfio/vfio", O_RDWR | O_CLOEXEC));
  if (!vfio->container_.valid()) return tl::unexpected(os_error("open /dev/vfio/vfio"));
  if (::ioctl(vfio->container_.get(), VFIO_GET_API_VERSION) != VFIO_API_VERSION)
    return make_error(ErrorCode::kUnsupported, "/dev/vfio/vfio: unknown VFIO API version");
  if (::ioctl(vfio->container_.get(), VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU) <= 0)
    return make_error(ErrorCode::kUnsupported, "/dev/vfio/vfio: no type1v2 IOMMU");
  vfio->group_.reset(::open(group_path.c_str(), O_RDWR | O_CLOEXEC));
  if (!vfio->group_.valid())
    return tl::unexpected(
        os_error("open " + group_path + " (is " + address + " bound to vfio-pci?)"));
  vfio_group_status status{};
  status.argsz = sizeof(status);
  if (::ioctl(vfio->group_.get(), VFIO_GROUP_GET_STATUS, &status) != 0)
    return tl::unexpected(os_error("VFIO_GROUP_GET_STATUS"));
  if ((status.flags & VFIO_GROUP_FLAGS_VIABLE) == 0) {
    return make_error(ErrorCode::kConflict,
                      "{}: not viable (bind every function of the IOMMU "
                      "group to vfio-pci)",
                      group_path);
  }
  int container = vfio->container_.get();
  if (::ioctl(vfio->group_.get(), VFIO_GROUP_SET_CONTAINER, &container) != 0)
    return tl::unexpected(os_error("VFIO_GROUP_SET_CONTAINER"));
  if (::ioctl(vfio->container_.get(), VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU) != 0)
    return tl::unexpected(os_error("VFIO_SET_IOMMU"));
  vfio->device_.reset(::ioctl(vfio->group_.get(), VFIO_GROUP_GET_DEVICE_FD, address.c_str()));
  if (!vfio->device_.valid())
    return tl::unexpected(os_error("VFIO_GROUP_GET_DEVICE_FD " + address));

  for (std::uint32_t index = 0; index < vfio->regions_.size(); ++index) {
    vfio_region_info info{};
    info.argsz = sizeof(info);
    info.index = index;
    if (::ioctl(vfio->device_.get(), VFIO_DEVICE_GET_REGION_INFO, &info) != 0) continue;
    vfio->regions_[index] = {info.offset, info.size};
  }
  vfio->config_size_ = static_cast<std::uint32_t>(
      std::min<std::uint64_t>(vfio->regions_[VFIO_PCI_CONFIG_REGION_INDEX].size, 4096));
  for (unsigned bar = 0; bar < vpci::pci::kBarCount; ++bar) {
    if (vfio->regions_[bar].size == 0) continue;
    std::array<std::uint8_t, 4> raw{};
    VPCI_TRY(vfio->config_read(vpci::pci::reg::kBar0 + 4 * bar, raw));
    vfio->bars_[bar] = bar_from_register(load_le<std::uint32_t>(raw), vfio->regions_[bar].size);
  }
  vfio_irq_info irq{};
  irq.argsz = sizeof(irq);
  irq.index = VFIO_PCI_MSIX_IRQ_INDEX;
  if (::ioctl(vfio->device_.get(), VFIO_DEVICE_GET_IRQ_INFO, &irq) == 0)
    vfio->msix_vectors_ = static_cast<std::uint16_t>(std::min<std::uint32_t>(irq.count, 2048));
  return vfio;
}

VfioAccess::~VfioAccess() {
  if (log_ != nullptr) (void)route_interrupts(nullptr, 0);
  for (const auto& [iova, size] : mapped_) {
    vfio_iommu_type1_dma_unmap unmap{};
    unmap.argsz = sizeof(unmap);
    unmap.iova = iova;
    unmap.size = size;
    (void)::ioctl(container_.get(), VFIO_IOMMU_UNMAP_DMA, &unmap);
  }
}

vpci::pci::BarInfo VfioAccess::bar_info(unsigned bar) const {
  return bar < bars_.size() ? bars_[bar] : vpci::pci::BarInfo{};
}

Status VfioAccess::access(std::uint32_t index, std::uint64_t offset, std::span<std::uint8_t> read,
                          std::span<const std::uint8_t> write) {
  const Region& region = regions_.at(index);
  const std::size_t length = read.empty() ? write.size() : read.size();
  if (offset > region.size || length > region.size - offset) {
    return make_error(ErrorCode::kOutOfRange, "VFIO region {}: {} bytes at {:#x} outside its {:#x}",
                      index, length, offset, region.size);
  }
  const auto at = static_cast<off_t>(region.offset + offset);
  const ssize_t n = read.empty() ? ::pwrite(device_.get(), write.data(), length, at)
                                 : ::pread(device_.get(), read.data(), length, at);
  if (n != static_cast<ssize_t>(length))
    return tl::unexpected(os_error(fmt::format("VFIO region {} access at {:#x}", index, offset)));
  return {};
}

Status VfioAccess::config_read(std::uint32_t offset, std::span<std::uint8_t> data) {
  return access(VFIO_PCI_CONFIG_REGION_INDEX, offset, data, {});
}
Status VfioAccess::config_write(std::uint32_t offset, std::span<const std::uint8_t> data) {
  return access(VFIO_PCI_CONFIG_REGION_INDEX, offset, {}, data);
}
Status VfioAccess::bar_read(unsigned bar, std::uint64_t offset, std::span<std::uint8_t> data) {
  if (bar >= vpci::pci::kBarCount) return make_error(ErrorCode::kOutOfRange, "BAR{}", bar);
  return access(bar, offset, data, {});
}
Status VfioAccess::bar_write(unsigned bar, std::uint64_t offset,
                             std::span<const std::uint8_t> data) {
  if (bar >= vpci::pci::kBarCount) return make_error(ErrorCode::kOutOfRange, "BAR{}", bar);
  return access(bar, offset, {}, data);
}

Status VfioAccess::map_dma(DmaMemory& memory) {
  vfio_iommu_type1_dma_map map{};
  map.argsz = sizeof(map);
  map.flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE;
  map.vaddr = reinterpret_cast<std::uint64_t>(memory.bytes().data());
  map.iova = memory.base();
  map.size = memory.size();
  if (::ioctl(container_.get(), VFIO_IOMMU_MAP_DMA, &map) != 0)
    return tl::unexpected(os_error("VFIO_IOMMU_MAP_DMA"));
  mapped_.emplace_back(memory.base(), memory.size());
  return {};
}

Status VfioAccess::set_irqs(std::uint32_t index, std::uint32_t flags, std::span<const int> fds,
                            std::uint32_t count) {
  std::vector<std::uint8_t> buffer(sizeof(vfio_irq_set) + sizeof(int) * fds.size());
  vfio_irq_set set{};
  set.argsz = static_cast<std::uint32_t>(buffer.size());
  set.flags = flags;
  set.index = index;
  set.start = 0;
  set.count = count;
  std::memcpy(buffer.data(), &set, sizeof(set));
  if (!fds.empty()) std::memcpy(buffer.data() + sizeof(set), fds.data(), sizeof(int) * fds.size());
  if (::ioctl(device_.get(), VFIO_DEVICE_SET_IRQS, buffer.data()) != 0)
    return tl::unexpected(os_error(fmt::format("VFIO_DEVICE_SET_IRQS index {}", index)));
  return {};
}

Status VfioAccess::route_interrupts(InterruptLog* log, std::uint16_t vectors) {
  const std::uint32_t none = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER;
  if (interrupts_.msix_count() != 0) VPCI_TRY(set_irqs(VFIO_PCI_MSIX_IRQ_INDEX, none, {}, 0));
  if (interrupts_.has_intx()) VPCI_TRY(set_irqs(VFIO_PCI_INTX_IRQ_INDEX, none, {}, 0));
  interrupts_.clear();
  log_ = log;
  if (log == nullptr) return {};
  // Linux VFIO allows one of INTx or MSI-X at a time: MSI-X when the function has it.
  vectors = std::min(vectors, msix_vectors_);
  VPCI_TRY(interrupts_.create(vectors == 0, vectors));
  const std::uint32_t eventfds = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
  if (vectors == 0) {
    const std::array<int, 1> intx = {interrupts_.intx_fd()};
    return set_irqs(VFIO_PCI_INTX_IRQ_INDEX, eventfds, intx, 1);
  }
  return set_irqs(VFIO_PCI_MSIX_IRQ_INDEX, eventfds, interrupts_.msix_fds(), vectors);
}

Status VfioAccess::poll(std::chrono::milliseconds wait) {
  if (interrupts_.collect(log_)) return {};
  interrupts_.wait(wait);
  (void)interrupts_.collect(log_);
  return {};
}

Status VfioAccess::unmask_intx() {
  if (log_ != nullptr) log_->intx = false;
  if (!interrupts_.has_intx()) return {};
  return set_irqs(VFIO_PCI_INTX_IRQ_INDEX, VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_UNMASK, {},
                  1);
}

Status VfioAccess::reset() {
  if (::ioctl(device_.get(), VFIO_DEVICE_RESET) != 0)
    return tl::unexpected(os_error("VFIO_DEVICE_RESET"));
  return {};
}

}  // namespace vpci::driver
