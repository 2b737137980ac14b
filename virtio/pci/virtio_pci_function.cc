// VirtioPciFunction, part 1 of 3: construction, the pci::Function accesses and their
// routing to the BAR regions, reset and interrupts. The layout and capabilities are in
// virtio_pci_build.cc, the register files in virtio_pci_registers.cc.
#include "virtio/pci/virtio_pci_function.h"

#include <algorithm>
#include <bit>
#include <cstring>

#include "base/xen_domid.h"
#include "pci/capabilities.h"
#include "pci/capability_registers.h"
#include "pci/registers.h"
#include "virtio/pci/function_detail.h"
#include "virtio/pci/xen_grant_capability.h"
#include "virtio/spec.h"

namespace vpci::virtio::pci {

using namespace detail;
namespace vp = vpci::pci;

std::string_view transport_kind_name(TransportKind kind) {
  const auto index = static_cast<std::size_t>(kind);
  return index < kTransportKindNames.size() ? kTransportKindNames[index] : "unknown";
}

VirtioPciFunction::VirtioPciFunction(std::shared_ptr<GuestMemory> memory, VirtioPciOptions options)
    : memory_(std::move(memory)), options_(std::move(options)), config_(vp::kExtendedConfigSize) {}

VirtioPciFunction::~VirtioPciFunction() = default;

Result<std::unique_ptr<VirtioPciFunction>> VirtioPciFunction::create(
    std::unique_ptr<Device> device, std::shared_ptr<GuestMemory> memory, VirtioPciOptions options) {
  if (!device || !memory) {
    return make_error(ErrorCode::kInvalidArgument, "virtio-pci function needs a device and memory");
  }
  if (options.kind == TransportKind::kLegacyOverMmr ||
      options.kind == TransportKind::kLegacyOverAdmin || options.kind == TransportKind::kSriovPf) {
    return make_error(ErrorCode::kInvalidArgument,
                      "{} is more than one virtio-pci function: build it with "
                      "make_transport_function",
                      transport_kind_name(options.kind));
  }
  if (options.notify_mappable && options.kind == TransportKind::kLegacy) {
    return make_error(ErrorCode::kInvalidArgument,
                      "a legacy device has no notification area to map (its doorbell is I/O "
                      "BAR0 offset 16)");
  }
  if (options.notify_mappable && options.core.idle_poll.count() <= 0) {
    // Doorbell writes to a mapped area never reach the device: without polling, every
    // request would wait for ever.
    return make_error(ErrorCode::kInvalidArgument,
                      "a mappable notification area needs the device to poll its queues "
                      "(CoreOptions::idle_poll)");
  }
  std::unique_ptr<VirtioPciFunction> function(
      new VirtioPciFunction(std::move(memory), std::move(options)));
  VPCI_TRY(function->build(std::move(device)));
  return function;
}

Result<std::unique_ptr<VirtioPciFunction>> make_virtio_pci_function(
    TransportKind kind, std::unique_ptr<Device> device, std::shared_ptr<GuestMemory> memory,
    VirtioPciOptions options) {
  options.kind = kind;
  return VirtioPciFunction::create(std::move(device), std::move(memory), std::move(options));
}

vp::BarInfo VirtioPciFunction::bar_info(unsigned bar) const {
  if (bar == VirtioPciLayout::kLegacyBar && layout_.legacy_bar_size) {
    return {vp::BarKind::kIo, layout_.legacy_bar_size, false};
  }
  if (bar == VirtioPciLayout::kSharedMemoryBar && layout_.shared_memory_bar_size) {
    return {vp::BarKind::kMemory64, layout_.shared_memory_bar_size, true};
  }
  if (bar == VirtioPciLayout::kMemoryBar && layout_.has_memory_bar) {
    vp::BarInfo info{vp::BarKind::kMemory64, layout_.memory_bar_size, false};
    if (options_.notify_mappable) {
      // The doorbells' pages only: everything else in BAR4 must reach the device.
      info.mappable_offset = VirtioPciLayout::kNotifyOffset;
      info.mappable_size = round_up(layout_.notify_length, kPage);
    }
    return info;
  }
  return {};
}

Status VirtioPciFunction::config_read(std::uint32_t offset, std::span<std::uint8_t> data) {
  if (auto done = config_.read_bytes(offset, data); !done) return refuse_read(data, done.error());
  return {};
}

Status VirtioPciFunction::config_write(std::uint32_t offset, std::span<const std::uint8_t> data) {
  return config_.write_bytes(offset, data);
}

Status VirtioPciFunction::bar_read(unsigned bar, std::uint64_t offset,
                                   std::span<std::uint8_t> data) {
  const auto info = bar_info(bar);
  if (info.kind == vp::BarKind::kAbsent || !valid_width(data.size()) || offset > info.size ||
      data.size() > info.size - offset) {
    return refuse_read(
        data, Error{ErrorCode::kOutOfRange,
                    fmt::format("BAR{} read of {} bytes at {:#x}", bar, data.size(), offset)});
  }
  if (bar == VirtioPciLayout::kLegacyBar) return legacy_read(offset, data);
  if (bar == VirtioPciLayout::kMemoryBar) return memory_read(offset, data);
  for (std::size_t i = 0; i < shared_memory_.size(); ++i) {
    const std::uint64_t begin = layout_.shared_memory_offsets[i];
    if (offset >= begin && offset - begin + data.size() <= shared_memory_[i].size()) {
      std::memcpy(data.data(), shared_memory_[i].data() + (offset - begin), data.size());
      return {};
    }
  }
  std::fill(data.begin(), data.end(), 0);  // hole between shared memory regions
  return {};
}

Status VirtioPciFunction::bar_write(unsigned bar, std::uint64_t offset,
                                    std::span<const std::uint8_t> data) {
  const auto info = bar_info(bar);
  if (info.kind == vp::BarKind::kAbsent || !valid_width(data.size()) || offset > info.size ||
      data.size() > info.size - offset) {
    return make_error(ErrorCode::kOutOfRange, "BAR{} write of {} bytes at {:#x}", bar, data.size(),
                      offset);
  }
  if (bar == VirtioPciLayout::kLegacyBar) return legacy_write(offset, data);
  if (bar == VirtioPciLayout::kMemoryBar) return memory_write(offset, data);
  for (std::size_t i = 0; i < shared_memory_.size(); ++i) {
    const std::uint64_t begin = layout_.shared_memory_offsets[i];
    if (offset >= begin && offset - begin + data.size() <= shared_memory_[i].size()) {
      std::memcpy(shared_memory_[i].data() + (offset - begin), data.data(), data.size());
      return {};
    }
  }
  return {};
}

void VirtioPciFunction::set_interrupt_output(vp::InterruptOutput* output) {
  output_ = output;
  if (msix_) msix_->set_output(output);
}

void VirtioPciFunction::reset() {
  core_->reset();
  config_.reset();
  if (msix_) msix_->reset();
  pci_cfg_data_ = {};
  for (auto& region : shared_memory_) std::fill(region.begin(), region.end(), 0);
  reset_transport_state();
  sync_msix_control();
}

std::span<std::uint8_t> VirtioPciFunction::shared_memory(std::uint8_t id) {
  for (std::size_t i = 0; i < options_.shared_memory.size(); ++i) {
    if (options_.shared_memory[i].id == id) return shared_memory_[i];
  }
  return {};
}

// ---- interrupts ------------------------------------------------------------------------------

void VirtioPciFunction::raise_queue_interrupt(std::uint16_t queue) {
  if (msix_enabled()) {
    // §4.1.5.4: MSI-X vector of the queue; NO_VECTOR means no notification.
    if (queue < queue_vectors_.size()) msix_->signal(queue_vectors_[queue]);
    return;
  }
  isr_ |= kIsrQueue;  // §4.1.5.3
  update_intx();
}

void VirtioPciFunction::raise_config_interrupt() {
  if (msix_enabled()) {
    msix_->signal(config_vector_);
    return;
  }
  isr_ |= kIsrConfig;
  update_intx();
}

std::uint8_t VirtioPciFunction::read_isr() {
  // §4.1.4.5: reading the ISR resets it to 0 and de-asserts the INTx interrupt.
  const std::uint8_t value = isr_;
  isr_ = 0;
  update_intx();
  return value;
}

void VirtioPciFunction::update_intx() {
  const bool pending = isr_ != 0 && !msix_enabled();
  const std::uint16_t status = config_.raw16(vp::reg::kStatus);
  config_.set_raw16(vp::reg::kStatus,
                    static_cast<std::uint16_t>(pending ? status | vp::status::kInterruptStatus
                                                       : status & ~vp::status::kInterruptStatus));
  const bool level =
      pending && (config_.raw16(vp::reg::kCommand) & vp::command::kInterruptDisable) == 0;
  if (level == intx_level_) return;
  intx_level_ = level;
  if (output_) output_->set_intx_level(level);
}

void VirtioPciFunction::sync_msix_control() {
  if (msix_) {
    const std::uint16_t control = config_.raw16(layout_.msix_cap + vpci::pci::msix::kControl);
    msix_->set_control((control & vpci::pci::msix::kEnable) != 0,
                       (control & vpci::pci::msix::kFunctionMask) != 0);
  }
  update_intx();
}

std::uint16_t VirtioPciFunction::checked_vector(std::uint16_t vector) const {
  // §4.1.4.3: a vector the device cannot map reads back as NO_VECTOR.
  return msix_ && vector < msix_->vector_count() ? vector : kNoVector;
}

// ---- transport state
// -----------------------------------------------------------------------------

void VirtioPciFunction::reset_transport_state() {
  device_feature_select_ = 0;
  driver_feature_select_ = 0;
  queue_select_ = 0;
  config_vector_ = kNoVector;
  std::fill(queue_vectors_.begin(), queue_vectors_.end(), kNoVector);
  isr_ = 0;
  chosen_.reset();
  if (options_.kind == TransportKind::kTransitional ||
      options_.kind == TransportKind::kTransitionalMmr) {
    (void)core_->set_driver_interface(DriverInterface::kModern);  // status is 0 here
  }
  update_intx();
}

Status VirtioPciFunction::claim(DriverInterface interface) {
  if (options_.kind != TransportKind::kTransitional &&
      options_.kind != TransportKind::kTransitionalMmr && !options_.admin_legacy) {
    return {};
  }
  if (!chosen_) {
    VPCI_TRY(core_->set_driver_interface(interface));
    chosen_ = interface;
    return {};
  }
  if (*chosen_ != interface) {
    return make_error(ErrorCode::kConflict,
                      "the driver uses the {} interface; a {} write is refused until reset",
                      *chosen_ == DriverInterface::kLegacy ? "legacy" : "modern",
                      interface == DriverInterface::kLegacy ? "legacy" : "modern");
  }
  return {};
}

Status VirtioPciFunction::write_status(std::uint8_t value) {
  if (value == 0) {
    core_->reset();
    reset_transport_state();
    return {};
  }
  return core_->write_status(value);
}

// ---- memory BAR --------------------------------------------------------------------------------

Status VirtioPciFunction::memory_read(std::uint64_t offset, std::span<std::uint8_t> data) {
  const std::uint64_t size = data.size();
  const auto inside = [&](std::uint64_t begin, std::uint64_t length) {
    return offset >= begin && offset < begin + length;
  };
  const auto fits = [&](std::uint64_t begin, std::uint64_t length) {
    return offset + size <= begin + length;
  };
  const bool modern = options_.kind != TransportKind::kLegacy;
  if (modern && inside(VirtioPciLayout::kCommonOffset, common::kSize)) {
    auto value = common_read(static_cast<std::uint32_t>(offset - VirtioPciLayout::kCommonOffset),
                             static_cast<unsigned>(size));
    if (!value) return refuse_read(data, value.error());
    store_le_bytes(data, *value);
    return {};
  }
  if (modern && offset == VirtioPciLayout::kIsrOffset) {
    std::fill(data.begin(), data.end(), 0);
    data[0] = read_isr();
    return {};
  }
  if (modern && inside(VirtioPciLayout::kDeviceOffset, layout_.device_cfg_length)) {
    if (!fits(VirtioPciLayout::kDeviceOffset, layout_.device_cfg_length)) {
      return refuse_read(data, Error{ErrorCode::kOutOfRange, "device config read past its end"});
    }
    auto status = core_->read_config(
        static_cast<std::uint32_t>(offset - VirtioPciLayout::kDeviceOffset), data);
    if (!status) return refuse_read(data, status.error());
    return {};
  }
  if (layout_.legacy_window_offset &&
      inside(*layout_.legacy_window_offset, layout_.legacy_window_length)) {
    if (!fits(*layout_.legacy_window_offset, layout_.legacy_window_length)) {
      return refuse_read(data, Error{ErrorCode::kOutOfRange, "legacy window read past its end"});
    }
    return legacy_read(offset - *layout_.legacy_window_offset, data);
  }
  if (msix_ && inside(layout_.msix_table_offset, msix_->table_bytes())) {
    return msix_->table_read(offset - layout_.msix_table_offset, data);
  }
  if (msix_ && inside(layout_.msix_pba_offset, msix_->pba_bytes())) {
    return msix_->pba_read(offset - layout_.msix_pba_offset, data);
  }
  // Doorbells read 0; so do holes between the regions.
  std::fill(data.begin(), data.end(), 0);
  return {};
}

Status VirtioPciFunction::memory_write(std::uint64_t offset, std::span<const std::uint8_t> data) {
  const std::uint64_t size = data.size();
  const auto inside = [&](std::uint64_t begin, std::uint64_t length) {
    return offset >= begin && offset < begin + length;
  };
  const bool modern = options_.kind != TransportKind::kLegacy;
  if (modern && inside(VirtioPciLayout::kCommonOffset, common::kSize)) {
    return common_write(static_cast<std::uint32_t>(offset - VirtioPciLayout::kCommonOffset),
                        static_cast<unsigned>(size), load_le_bytes(data));
  }
  if (modern && inside(VirtioPciLayout::kDeviceOffset, layout_.device_cfg_length)) {
    if (offset + size > VirtioPciLayout::kDeviceOffset + layout_.device_cfg_length) {
      return make_error(ErrorCode::kOutOfRange, "device config write past its end");
    }
    VPCI_TRY(claim(DriverInterface::kModern));
    return core_->write_config(static_cast<std::uint32_t>(offset - VirtioPciLayout::kDeviceOffset),
                               data);
  }
  if (modern && inside(VirtioPciLayout::kNotifyOffset, layout_.notify_length)) {
    return notify_write(offset - VirtioPciLayout::kNotifyOffset, data);
  }
  if (layout_.legacy_window_offset &&
      inside(*layout_.legacy_window_offset, layout_.legacy_window_length)) {
    if (offset + size > *layout_.legacy_window_offset + layout_.legacy_window_length) {
      return make_error(ErrorCode::kOutOfRange, "legacy window write past its end");
    }
    return legacy_write(offset - *layout_.legacy_window_offset, data);
  }
  if (msix_ && inside(layout_.msix_table_offset, msix_->table_bytes())) {
    return msix_->table_write(offset - layout_.msix_table_offset, data);
  }
  if (msix_ && inside(layout_.msix_pba_offset, msix_->pba_bytes())) {
    return make_error(ErrorCode::kInvalidArgument, "the MSI-X PBA is read-only");
  }
  return {};  // ISR and holes ignore writes
}

Status VirtioPciFunction::notify_write(std::uint64_t offset, std::span<const std::uint8_t> data) {
  const std::uint32_t mult = options_.notify_off_multiplier;
  const std::uint64_t queues = core_->queue_count();
  const bool doorbell = mult == 0 ? offset == 0 : offset % mult == 0 && offset / mult < queues;
  if (!doorbell || (data.size() != 2 && data.size() != 4)) {
    return make_error(ErrorCode::kInvalidArgument,
                      "{}-byte write at notify offset {:#x} is not a doorbell", data.size(),
                      offset);
  }
  // §4.1.5.2: the driver writes the queue index (NOTIFICATION_DATA is never offered).
  return core_->notify(static_cast<std::uint16_t>(load_le_bytes(data.first(2))));
}

// ---- common configuration ----------------------------------------------------------------------

}  // namespace vpci::virtio::pci
