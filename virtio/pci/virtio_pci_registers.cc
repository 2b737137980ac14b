// VirtioPciFunction, part 3 of 3: the register files — common configuration (§4.1.4.3),
// the legacy register block (§4.1.4.10) and the PCI configuration access window
// (§4.1.4.9).
#include <algorithm>
#include <bit>
#include <cstring>

#include "base/xen_domid.h"
#include "pci/capabilities.h"
#include "pci/registers.h"
#include "virtio/pci/function_detail.h"
#include "virtio/pci/virtio_pci_function.h"
#include "virtio/pci/xen_grant_capability.h"
#include "virtio/spec.h"

namespace vpci::virtio::pci {

using namespace detail;
namespace vp = vpci::pci;

namespace {

struct CommonField {
  std::uint32_t offset;
  unsigned size;
};
constexpr std::array<CommonField, 20> kCommonFields = {{
    {common::kDeviceFeatureSelect, 4},  {common::kDeviceFeature, 4},
    {common::kDriverFeatureSelect, 4},  {common::kDriverFeature, 4},
    {common::kConfigMsixVector, 2},     {common::kNumQueues, 2},
    {common::kDeviceStatus, 1},         {common::kConfigGeneration, 1},
    {common::kQueueSelect, 2},          {common::kQueueSize, 2},
    {common::kQueueMsixVector, 2},      {common::kQueueEnable, 2},
    {common::kQueueNotifyOff, 2},       {common::kQueueDesc, 8},
    {common::kQueueDriver, 8},          {common::kQueueDevice, 8},
    {common::kQueueNotifConfigData, 2}, {common::kQueueReset, 2},
    {common::kAdminQueueIndex, 2},      {common::kAdminQueueNum, 2},
}};

// The field an access addresses and the byte shift inside it; nullopt when the access is
// not exactly one field or one 32-bit half of a 64-bit field.
struct FieldAccess {
  CommonField field;
  unsigned shift;
};
// Which field (index into kCommonFields) holds each byte of the structure; kNoField for
// the bytes no field covers. Built at compile time so a register access is one look-up
// instead of a scan of the field list.
constexpr std::uint8_t kNoField = 0xFF;
constexpr auto kFieldOfByte = [] {
  std::array<std::uint8_t, common::kSize> table{};
  table.fill(kNoField);
  for (std::size_t i = 0; i < kCommonFields.size(); ++i) {
    for (unsigned b = 0; b < kCommonFields[i].size; ++b) {
      table[kCommonFields[i].offset + b] = static_cast<std::uint8_t>(i);
    }
  }
  return table;
}();

std::optional<FieldAccess> common_field(std::uint32_t offset, unsigned width) {
  if (offset >= common::kSize || kFieldOfByte[offset] == kNoField) return std::nullopt;
  const CommonField& f = kCommonFields[kFieldOfByte[offset]];
  if (offset == f.offset && width == f.size) return FieldAccess{f, 0};
  if (f.size == 8 && width == 4 && (offset - f.offset) % 4 == 0) {
    return FieldAccess{f, (offset - f.offset) * 8};
  }
  return std::nullopt;
}

}  // namespace

Result<std::uint64_t> VirtioPciFunction::common_read(std::uint32_t offset, unsigned width) {
  const auto access = common_field(offset, width);
  if (!access) {
    return make_error(ErrorCode::kInvalidArgument,
                      "{}-byte common config read at {:#x} does not match a field", width, offset);
  }
  const std::uint16_t q = queue_select_;
  // Only the queue fields need the selected queue's registers; nullopt for an
  // out-of-range queue_select (checked here, so no error is built on this path).
  std::optional<QueueRegisters> regs;
  // The admin queue exists for a driver that negotiated ADMIN_VQ (§2.12); to others its
  // index reads like any queue that does not exist.
  const bool selectable =
      q < core_->num_queues() ||
      (q < core_->queue_count() && has_feature(core_->driver_features(), admin::kFeatureAdminVq));
  if (access->field.offset >= common::kQueueSize && access->field.offset <= common::kQueueDevice &&
      selectable) {
    regs = *core_->queue_registers(q);
  }
  std::uint64_t value = 0;
  switch (access->field.offset) {
    case common::kDeviceFeatureSelect: value = device_feature_select_; break;
    case common::kDeviceFeature: value = core_->device_features_word(device_feature_select_); break;
    case common::kDriverFeatureSelect: value = driver_feature_select_; break;
    case common::kDriverFeature: value = core_->driver_features_word(driver_feature_select_); break;
    case common::kConfigMsixVector: value = config_vector_; break;
    case common::kNumQueues: value = core_->num_queues(); break;
    case common::kDeviceStatus: value = core_->status(); break;
    case common::kConfigGeneration: value = core_->config_generation(); break;
    case common::kQueueSelect: value = q; break;
    case common::kQueueSize: value = regs ? regs->size : 0; break;
    case common::kQueueMsixVector: value = regs ? queue_vectors_[q] : kNoVector; break;
    case common::kQueueEnable: value = regs && regs->enabled ? 1 : 0; break;
    case common::kQueueNotifyOff: value = regs ? q : 0; break;
    case common::kQueueDesc: value = regs ? regs->desc : 0; break;
    case common::kQueueDriver: value = regs ? regs->driver : 0; break;
    case common::kQueueDevice: value = regs ? regs->device : 0; break;
    // §4.1.4.3: the admin queues follow the device's (0 of them without an admin owner).
    case common::kAdminQueueIndex:
      value = core_->admin_queue_count() != 0 ? core_->admin_queue_index() : 0;
      break;
    case common::kAdminQueueNum: value = core_->admin_queue_count(); break;
    // NOTIF_CONFIG_DATA is never offered; queue_reset completes at once.
    default: value = 0; break;
  }
  return (value >> access->shift) & (width == 8 ? ~0ull : ((1ull << (width * 8)) - 1));
}

Status VirtioPciFunction::common_write(std::uint32_t offset, unsigned width, std::uint64_t value) {
  const auto access = common_field(offset, width);
  if (!access) {
    return make_error(ErrorCode::kInvalidArgument,
                      "{}-byte common config write at {:#x} does not match a field", width, offset);
  }
  const std::uint32_t field = access->field.offset;
  if (field == common::kDeviceStatus && value == 0) return write_status(0);
  VPCI_TRY(claim(DriverInterface::kModern));
  const std::uint16_t q = queue_select_;
  const auto merge = [&](GuestAddress current) -> GuestAddress {
    if (width == 8) return value;
    const std::uint64_t mask = 0xFFFFFFFFull << access->shift;
    return (current & ~mask) | ((value << access->shift) & mask);
  };
  switch (field) {
    case common::kDeviceFeatureSelect:
      device_feature_select_ = static_cast<std::uint32_t>(value);
      return {};
    case common::kDriverFeatureSelect:
      driver_feature_select_ = static_cast<std::uint32_t>(value);
      return {};
    case common::kDriverFeature:
      return core_->write_driver_features_word(driver_feature_select_,
                                               static_cast<std::uint32_t>(value));
    case common::kConfigMsixVector:
      config_vector_ = checked_vector(static_cast<std::uint16_t>(value));
      return {};
    case common::kDeviceStatus: return write_status(static_cast<std::uint8_t>(value));
    case common::kQueueSelect: queue_select_ = static_cast<std::uint16_t>(value); return {};
    case common::kQueueSize: return core_->set_queue_size(q, static_cast<std::uint16_t>(value));
    case common::kQueueMsixVector:
      if (q >= queue_vectors_.size()) {
        return make_error(ErrorCode::kOutOfRange, "queue_select {} is not a queue", q);
      }
      queue_vectors_[q] = checked_vector(static_cast<std::uint16_t>(value));
      return {};
    case common::kQueueEnable:
      if (value != 1) {
        // §4.1.4.3.2: "The driver MUST NOT write a 0 to queue_enable."
        return make_error(ErrorCode::kProtocolViolation, "queue_enable written with {}", value);
      }
      return core_->enable_queue(q);
    case common::kQueueDesc: {
      VPCI_ASSIGN_OR_RETURN(auto regs, core_->queue_registers(q));
      return core_->set_queue_desc(q, merge(regs.desc));
    }
    case common::kQueueDriver: {
      VPCI_ASSIGN_OR_RETURN(auto regs, core_->queue_registers(q));
      return core_->set_queue_driver(q, merge(regs.driver));
    }
    case common::kQueueDevice: {
      VPCI_ASSIGN_OR_RETURN(auto regs, core_->queue_registers(q));
      return core_->set_queue_device(q, merge(regs.device));
    }
    case common::kQueueReset:
      if (value != 1)
        return make_error(ErrorCode::kProtocolViolation, "queue_reset written with {}", value);
      return core_->reset_queue(q);
    default:
      return make_error(ErrorCode::kInvalidArgument, "common config field at {:#x} is read-only",
                        field);
  }
}

// ---- legacy registers (I/O BAR0, MMR window) ---------------------------------------------------

Status VirtioPciFunction::legacy_read(std::uint64_t offset, std::span<std::uint8_t> data) {
  const std::uint32_t header =
      msix_enabled() ? legacy::kConfigOffsetMsix : legacy::kConfigOffsetNoMsix;
  const std::size_t size = data.size();
  if (offset >= header) {
    if (size == 8)
      return refuse_read(data, Error{ErrorCode::kInvalidArgument, "8-byte legacy access"});
    auto status = core_->read_config(static_cast<std::uint32_t>(offset - header), data);
    if (!status) return refuse_read(data, status.error());
    return {};
  }
  const std::uint16_t q = queue_select_;
  const auto regs = core_->queue_registers(q);
  std::uint64_t value = 0;
  const auto reg = [&](std::uint32_t at, std::size_t width) {
    return offset == at && size == width;
  };
  if (reg(legacy::kHostFeatures, 4)) {
    value = core_->device_features_word(0);
  } else if (reg(legacy::kGuestFeatures, 4)) {
    value = core_->driver_features_word(0);
  } else if (reg(legacy::kQueuePfn, 4)) {
    value = core_->legacy_queue_pfn(q).value_or(0);
  } else if (reg(legacy::kQueueNum, 2)) {
    value = regs ? regs->max_size : 0;  // §4.1.4.8: no size negotiation
  } else if (reg(legacy::kQueueSelect, 2)) {
    value = q;
  } else if (reg(legacy::kQueueNotify, 2)) {
    value = 0;
  } else if (reg(legacy::kStatus, 1)) {
    value = core_->status();
  } else if (reg(legacy::kIsr, 1)) {
    value = read_isr();
  } else if (header == legacy::kConfigOffsetMsix && reg(legacy::kConfigVector, 2)) {
    value = config_vector_;
  } else if (header == legacy::kConfigOffsetMsix && reg(legacy::kQueueVector, 2)) {
    value = regs ? queue_vectors_[q] : kNoVector;
  } else {
    return refuse_read(
        data, Error{ErrorCode::kInvalidArgument,
                    fmt::format("{}-byte legacy read at {} matches no register", size, offset)});
  }
  store_le_bytes(data, value);
  return {};
}

Status VirtioPciFunction::legacy_write(std::uint64_t offset, std::span<const std::uint8_t> data) {
  const std::uint32_t header =
      msix_enabled() ? legacy::kConfigOffsetMsix : legacy::kConfigOffsetNoMsix;
  const std::size_t size = data.size();
  if (offset >= header) {
    if (size == 8) return make_error(ErrorCode::kInvalidArgument, "8-byte legacy access");
    VPCI_TRY(claim(DriverInterface::kLegacy));
    return core_->write_config(static_cast<std::uint32_t>(offset - header), data);
  }
  const std::uint64_t value = load_le_bytes(data);
  const auto reg = [&](std::uint32_t at, std::size_t width) {
    return offset == at && size == width;
  };
  if (reg(legacy::kQueueNotify, 2)) {
    return core_->notify(static_cast<std::uint16_t>(value));
  }
  if (reg(legacy::kStatus, 1) && value == 0) return write_status(0);
  const bool writable = reg(legacy::kGuestFeatures, 4) || reg(legacy::kQueuePfn, 4) ||
                        reg(legacy::kQueueSelect, 2) || reg(legacy::kStatus, 1) ||
                        (header == legacy::kConfigOffsetMsix &&
                         (reg(legacy::kConfigVector, 2) || reg(legacy::kQueueVector, 2)));
  if (!writable) {
    return make_error(ErrorCode::kInvalidArgument,
                      "{}-byte legacy write at {} matches no writable register", size, offset);
  }
  VPCI_TRY(claim(DriverInterface::kLegacy));
  const std::uint16_t q = queue_select_;
  switch (offset) {
    case legacy::kGuestFeatures:
      return core_->write_driver_features_word(0, static_cast<std::uint32_t>(value));
    case legacy::kQueuePfn:
      return core_->set_legacy_queue_pfn(q, static_cast<std::uint32_t>(value));
    case legacy::kQueueSelect: queue_select_ = static_cast<std::uint16_t>(value); return {};
    case legacy::kStatus: return write_status(static_cast<std::uint8_t>(value));
    case legacy::kConfigVector:
      config_vector_ = checked_vector(static_cast<std::uint16_t>(value));
      return {};
    case legacy::kQueueVector:
      if (q >= queue_vectors_.size()) {
        return make_error(ErrorCode::kOutOfRange, "queue_select {} is not a queue", q);
      }
      queue_vectors_[q] = checked_vector(static_cast<std::uint16_t>(value));
      return {};
    default: return {};
  }
}

// ---- legacy registers through a PF's admin commands (§2.12.1.2) -----------------------------

Result<std::uint64_t> VirtioPciFunction::admin_legacy_offset(admin::LegacyRegion region,
                                                             std::uint32_t offset,
                                                             std::size_t width) const {
  if (!options_.admin_legacy) {
    return make_error(ErrorCode::kUnsupported,
                      "this function has no legacy registers behind admin commands");
  }
  if (width == 0) return make_error(ErrorCode::kInvalidArgument, "a legacy access of 0 bytes");
  // The header ends where device configuration starts: 24 with MSI-X enabled, else 20.
  const std::uint32_t header =
      msix_enabled() ? legacy::kConfigOffsetMsix : legacy::kConfigOffsetNoMsix;
  const std::uint64_t end = std::uint64_t{offset} + width;
  if (region == admin::LegacyRegion::kCommon) {
    if (end > header) {
      return make_error(ErrorCode::kOutOfRange,
                        "{}-byte legacy common access at {} passes the {}-byte header", width,
                        offset, header);
    }
    return std::uint64_t{offset};
  }
  if (end > core_->config_size()) {
    return make_error(ErrorCode::kOutOfRange,
                      "{}-byte legacy device config access at {} passes its {} bytes", width,
                      offset, core_->config_size());
  }
  return header + std::uint64_t{offset};
}

Status VirtioPciFunction::admin_legacy_read(admin::LegacyRegion region, std::uint32_t offset,
                                            std::span<std::uint8_t> out) {
  VPCI_ASSIGN_OR_RETURN(const std::uint64_t at, admin_legacy_offset(region, offset, out.size()));
  return legacy_read(at, out);
}

Status VirtioPciFunction::admin_legacy_write(admin::LegacyRegion region, std::uint32_t offset,
                                             std::span<const std::uint8_t> data) {
  VPCI_ASSIGN_OR_RETURN(const std::uint64_t at, admin_legacy_offset(region, offset, data.size()));
  return legacy_write(at, data);
}

// ---- PCI_CFG window (§4.1.4.9)
// -------------------------------------------------------------------

// The BAR access the capability's bar/offset/length fields describe, and whether it is
// one the device performs: an existing BAR, 1, 2 or 4 bytes, naturally aligned, inside.
VirtioPciFunction::PciCfgWindow VirtioPciFunction::pci_cfg_window() const {
  const std::uint32_t cap = layout_.pci_cfg_cap;
  PciCfgWindow w;
  w.bar = config_.raw8(cap + cap::kBar);
  w.offset = config_.raw32(cap + cap::kOffset);
  w.length = config_.raw32(cap + cap::kLength);
  const auto info = w.bar < vp::kBarCount ? bar_info(w.bar) : vp::BarInfo{};
  w.valid = info.kind != vp::BarKind::kAbsent &&
            (w.length == 1 || w.length == 2 || w.length == 4) && w.offset % w.length == 0 &&
            w.offset + std::uint64_t{w.length} <= info.size;
  return w;
}

std::uint32_t VirtioPciFunction::pci_cfg_read(std::uint32_t offset, unsigned width) {
  const std::uint32_t cap = layout_.pci_cfg_cap;
  const PciCfgWindow w = pci_cfg_window();
  const unsigned bar = w.bar;
  const std::uint32_t window = w.offset;
  const std::uint32_t length = w.length;
  const bool valid = w.valid;
  if (valid) {
    // "execute a read access of length cap.length at offset cap.offset at BAR cap.bar and
    // store the first cap.length bytes in pci_cfg_data"
    (void)bar_read(bar, window, std::span(pci_cfg_data_).first(length));
  } else {
    pci_cfg_data_ = {};
  }
  const std::uint32_t at = offset - (cap + cap::kPciCfgData);
  std::uint32_t value = 0;
  for (unsigned i = 0; i < width && at + i < 4; ++i)
    value |= std::uint32_t{pci_cfg_data_[at + i]} << (8 * i);
  return value;
}

void VirtioPciFunction::pci_cfg_write(std::uint32_t offset, unsigned width, std::uint32_t value) {
  const std::uint32_t cap = layout_.pci_cfg_cap;
  const std::uint32_t at = offset - (cap + cap::kPciCfgData);
  for (unsigned i = 0; i < width && at + i < 4; ++i)
    pci_cfg_data_[at + i] = static_cast<std::uint8_t>(value >> (8 * i));
  const PciCfgWindow w = pci_cfg_window();
  const unsigned bar = w.bar;
  const std::uint32_t window = w.offset;
  const std::uint32_t length = w.length;
  const bool valid = w.valid;
  // "execute a write access at offset cap.offset at BAR cap.bar using the first cap.length
  // bytes from pci_cfg_data"; an invalid window drops the write.
  if (valid)
    (void)bar_write(bar, window, std::span<const std::uint8_t>(pci_cfg_data_).first(length));
}

}  // namespace vpci::virtio::pci
