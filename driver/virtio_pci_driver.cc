#include "driver/virtio_pci_driver.h"

#include <algorithm>

#include "base/little_endian.h"
#include "pci/capabilities.h"
#include "pci/registers.h"
#include "virtio/spec.h"

namespace vpci::driver {

using namespace vpci::virtio;
namespace {

namespace vp = vpci::pci;
namespace reg = vpci::virtio::pci;

std::vector<std::uint8_t> le_bytes(std::uint64_t value, unsigned width) {
  std::vector<std::uint8_t> out(width);
  store_le_bytes(out, value);
  return out;
}

constexpr std::uint64_t kMsiAddress = 0xFEE00000;
// The most queues this driver sets up: a device is hostile input and may claim 65535.
constexpr std::uint64_t kMaxQueues = 64;

// Room for a ring of `size` in `memory`, or an error naming the queue.
template <typename Ring>
Status check_room(const DriverMemory& memory, std::uint16_t queue, std::uint16_t size) {
  if (Ring::bytes_needed(size) > memory.available()) {
    return make_error(ErrorCode::kNoSpace,
                      "no room in the driver's memory for queue {} of {} entries ({} bytes left)",
                      queue, size, memory.available());
  }
  return {};
}
constexpr std::uint32_t kMsiDataBase = 0x4000;

}  // namespace

VirtioPciDriver::VirtioPciDriver(PciAccess& access, DriverMemory& memory)
    : access_(&access), ram_(&memory) {
  (void)access_->route_interrupts(&interrupts_, access_->msix_vector_count());
}

VirtioPciDriver::~VirtioPciDriver() {
  (void)access_->route_interrupts(nullptr, 0);
}

Result<std::uint32_t> VirtioPciDriver::config_read32(std::uint32_t offset) {
  std::array<std::uint8_t, 4> bytes{};
  VPCI_TRY(access_->config_read(offset, bytes));
  return load_le<std::uint32_t>(bytes);
}

Status VirtioPciDriver::config_write(std::uint32_t offset, unsigned width, std::uint32_t value) {
  const auto bytes = le_bytes(value, width);
  return access_->config_write(offset, bytes);
}

Result<ProbeResult> VirtioPciDriver::probe() {
  std::vector<std::uint8_t> config(access_->config_size());
  VPCI_TRY(access_->config_read(0, config));
  ProbeResult r;
  const auto le16 = [&](std::uint32_t at) {
    return load_le<std::uint16_t>(std::span(config).subspan(at));
  };
  const auto le32 = [&](std::uint32_t at) {
    return load_le<std::uint32_t>(std::span(config).subspan(at));
  };
  r.vendor_id = le16(vp::reg::kVendorId);
  r.device_id = le16(vp::reg::kDeviceId);
  r.revision = config[vp::reg::kRevisionId];
  r.subsystem_id = le16(vp::reg::kSubsystemId);
  if (r.vendor_id != reg::kVendorId) {
    return make_error(ErrorCode::kNotFound, "vendor {:#06x} is not virtio", r.vendor_id);
  }
  // Linux virtio_pci_modern_probe / virtio_pci_legacy_probe ID rules.
  if (r.device_id >= 0x1040 && r.device_id <= 0x107F) {
    r.virtio_id = r.device_id - 0x1040u;
  } else if (r.device_id >= 0x1000 && r.device_id <= 0x103F) {
    r.virtio_id = r.subsystem_id;
    r.legacy_io_bar = access_->bar_info(0).kind == vp::BarKind::kIo;
  } else if (auto mmr = reg::virtio_id_from_mmr_device_id(r.device_id)) {
    r.virtio_id = *mmr;
  }

  const auto scan = vp::scan_capabilities(config);
  for (const auto& c : scan.capabilities) {
    if (c.space == vp::CapabilitySpace::kStandard && c.id == vp::cap_id::kMsiX) {
      r.msix_cap = c.offset;
      r.msix_vectors = static_cast<std::uint16_t>((le16(c.offset + 2) & 0x7FF) + 1);
      const std::uint32_t table = le32(c.offset + 4);
      r.msix_table_bar = static_cast<std::uint8_t>(table & 7);
      r.msix_table_offset = table & ~7u;
    }
    if (c.space == vp::CapabilitySpace::kStandard && c.id == vp::cap_id::kVendorSpecific) {
      const std::uint8_t type = config[c.offset + reg::cap::kCfgType];
      const std::uint8_t bar = config[c.offset + reg::cap::kBar];
      if (bar >= vp::kBarCount) continue;  // §4.1.4.1: ignore unknown BARs
      CapabilityLocation loc{bar, le32(c.offset + reg::cap::kOffset),
                             le32(c.offset + reg::cap::kLength), c.offset};
      std::optional<CapabilityLocation>* slot = nullptr;
      switch (type) {
        case reg::cfg_type::kCommon: slot = &r.common; break;
        case reg::cfg_type::kNotify: slot = &r.notify; break;
        case reg::cfg_type::kIsr: slot = &r.isr; break;
        case reg::cfg_type::kDevice: slot = &r.device; break;
        case reg::cfg_type::kPciCfg: slot = &r.pci_cfg; break;
        default: break;
      }
      if (slot && !*slot) {
        *slot = loc;
        if (type == reg::cfg_type::kNotify) {
          r.notify_off_multiplier = le32(c.offset + reg::cap::kNotifyMultiplier);
        }
      }
    }
    if (c.space == vp::CapabilitySpace::kExtended && c.id == vp::ext_cap_id::kVendorSpecific &&
        c.offset + reg::mmr_vsec::kSize <= config.size() &&
        le16(c.offset + reg::mmr_vsec::kVsecHeader) == reg::mmr_vsec::kVsecId &&
        config[c.offset + reg::mmr_vsec::kCfgType] == reg::cfg_type::kLegacyMmr) {
      r.legacy_mmr = CapabilityLocation{
          config[c.offset + reg::mmr_vsec::kBar],
          load_le<std::uint64_t>(std::span(config).subspan(c.offset + reg::mmr_vsec::kOffset)),
          le32(c.offset + reg::mmr_vsec::kLength), c.offset};
    }
  }
  if (!(r.common && r.notify && r.isr) && !r.legacy_io_bar) {
    return make_error(ErrorCode::kNotFound, "neither the modern capabilities nor a legacy BAR0");
  }
  probe_ = r;
  return r;
}

// ---- register helpers ----------------------------------------------------------------------

Result<std::uint64_t> VirtioPciDriver::common_read(std::uint32_t offset, unsigned width) {
  std::vector<std::uint8_t> bytes(width);
  VPCI_TRY(access_->bar_read(probe_.common->bar, probe_.common->offset + offset, bytes));
  return load_le_bytes(bytes);
}

Status VirtioPciDriver::common_write(std::uint32_t offset, unsigned width, std::uint64_t value) {
  return access_->bar_write(probe_.common->bar, probe_.common->offset + offset,
                            le_bytes(value, width));
}

Result<std::uint64_t> VirtioPciDriver::legacy_read(std::uint32_t offset, unsigned width) {
  std::vector<std::uint8_t> bytes(width);
  if (options_.path == DriverPath::kLegacyMmr) {
    VPCI_TRY(access_->bar_read(probe_.legacy_mmr->bar, probe_.legacy_mmr->offset + offset, bytes));
  } else {
    VPCI_TRY(access_->bar_read(0, offset, bytes));
  }
  return load_le_bytes(bytes);
}

Status VirtioPciDriver::legacy_write(std::uint32_t offset, unsigned width, std::uint64_t value) {
  if (options_.path == DriverPath::kLegacyMmr) {
    return access_->bar_write(probe_.legacy_mmr->bar, probe_.legacy_mmr->offset + offset,
                              le_bytes(value, width));
  }
  return access_->bar_write(0, offset, le_bytes(value, width));
}

Result<std::uint8_t> VirtioPciDriver::read_isr() {
  if (options_.path == DriverPath::kModern) {
    std::array<std::uint8_t, 1> b{};
    VPCI_TRY(access_->bar_read(probe_.isr->bar, probe_.isr->offset, b));
    return b[0];
  }
  VPCI_ASSIGN_OR_RETURN(auto v, legacy_read(reg::legacy::kIsr, 1));
  return static_cast<std::uint8_t>(v);
}

std::uint8_t VirtioPciDriver::status() {
  if (options_.path == DriverPath::kModern) {
    return static_cast<std::uint8_t>(common_read(reg::common::kDeviceStatus, 1).value_or(0xFF));
  }
  return static_cast<std::uint8_t>(legacy_read(reg::legacy::kStatus, 1).value_or(0xFF));
}

bool VirtioPciDriver::legacy_msix_enabled() {
  if (!probe_.msix_cap) return false;
  auto control = config_read32(probe_.msix_cap);
  return control && ((*control >> 16) & 0x8000) != 0;
}

Result<std::vector<std::uint8_t>> VirtioPciDriver::read_device_config(std::uint32_t offset,
                                                                      std::uint32_t length) {
  std::vector<std::uint8_t> out(length);
  for (std::uint32_t i = 0; i < length; ++i) {
    std::span<std::uint8_t> byte(&out[i], 1);
    if (options_.path == DriverPath::kModern) {
      VPCI_TRY(access_->bar_read(probe_.device->bar, probe_.device->offset + offset + i, byte));
    } else {
      // §4.1.4.8: device config follows the 20- or 24-byte header; byte accesses, like
      // Linux's vp_legacy_get.
      const std::uint32_t base =
          legacy_msix_enabled() ? reg::legacy::kConfigOffsetMsix : reg::legacy::kConfigOffsetNoMsix;
      VPCI_ASSIGN_OR_RETURN(auto v, legacy_read(base + offset + i, 1));
      out[i] = static_cast<std::uint8_t>(v);
    }
  }
  return out;
}

// ---- initialisation ----------------------------------------------------------------------

Status VirtioPciDriver::setup_msix() {
  msix_ = false;
  if (!options_.use_msix || probe_.msix_vectors == 0) return {};
  // Command: memory + I/O decoding, bus master.
  VPCI_TRY(
      config_write(vp::reg::kCommand, 2,
                   vp::command::kIoSpace | vp::command::kMemorySpace | vp::command::kBusMaster));
  for (std::uint16_t v = 0; v < probe_.msix_vectors; ++v) {
    const std::uint64_t entry = probe_.msix_table_offset + 16ull * v;
    VPCI_TRY(access_->bar_write(probe_.msix_table_bar, entry, le_bytes(kMsiAddress, 4)));
    VPCI_TRY(access_->bar_write(probe_.msix_table_bar, entry + 4, le_bytes(0, 4)));
    VPCI_TRY(access_->bar_write(probe_.msix_table_bar, entry + 8, le_bytes(kMsiDataBase + v, 4)));
    VPCI_TRY(access_->bar_write(probe_.msix_table_bar, entry + 12, le_bytes(0, 4)));  // unmask
  }
  VPCI_TRY(config_write(probe_.msix_cap + 2u, 2, 0x8000));  // MSI-X Enable
  msix_ = true;
  return {};
}

Status VirtioPciDriver::initialise(const DriverOptions& options) {
  options_ = options;
  split_.clear();
  packed_.clear();
  notify_offsets_.clear();
  msix_consumed_ = interrupts_.msix.size();
  VPCI_TRY(
      config_write(vp::reg::kCommand, 2,
                   vp::command::kIoSpace | vp::command::kMemorySpace | vp::command::kBusMaster));
  if (options.path == DriverPath::kModern) return initialise_modern(options);
  if (options.path == DriverPath::kLegacyMmr && !probe_.legacy_mmr) {
    return make_error(ErrorCode::kNotFound, "no transitional MMR capability");
  }
  if (options.path == DriverPath::kLegacyIo && !probe_.legacy_io_bar) {
    return make_error(ErrorCode::kNotFound, "no legacy I/O BAR0");
  }
  return initialise_legacy(options);
}

Status VirtioPciDriver::initialise_modern(const DriverOptions& options) {
  if (!probe_.common) return make_error(ErrorCode::kNotFound, "no common config capability");
  namespace c = reg::common;
  // §3.1.1: reset, then wait for status to read 0.
  VPCI_TRY(common_write(c::kDeviceStatus, 1, 0));
  VPCI_ASSIGN_OR_RETURN(auto s0, common_read(c::kDeviceStatus, 1));
  if (s0 != 0) return make_error(ErrorCode::kProtocolViolation, "reset did not complete");
  VPCI_TRY(setup_msix());
  VPCI_TRY(common_write(c::kDeviceStatus, 1, status::kAcknowledge));
  VPCI_TRY(common_write(c::kDeviceStatus, 1, status::kAcknowledge | status::kDriver));
  std::uint64_t offered = 0;
  for (std::uint32_t sel = 0; sel < 2; ++sel) {
    VPCI_TRY(common_write(c::kDeviceFeatureSelect, 4, sel));
    VPCI_ASSIGN_OR_RETURN(auto word, common_read(c::kDeviceFeature, 4));
    offered |= word << (32 * sel);
  }
  std::uint64_t wanted = 0xFFFFFF | feature_bit(feature::kVersion1) |
                         feature_bit(feature::kAccessPlatform) |
                         feature_bit(feature::kIndirectDesc) | options.extra_features;
  if (options.packed) wanted |= feature_bit(feature::kRingPacked);
  features_ = offered & wanted;
  for (std::uint32_t sel = 0; sel < 2; ++sel) {
    VPCI_TRY(common_write(c::kDriverFeatureSelect, 4, sel));
    VPCI_TRY(common_write(c::kDriverFeature, 4, (features_ >> (32 * sel)) & 0xFFFFFFFF));
  }
  const std::uint8_t base = status::kAcknowledge | status::kDriver;
  VPCI_TRY(common_write(c::kDeviceStatus, 1, base | status::kFeaturesOk));
  VPCI_ASSIGN_OR_RETURN(auto s, common_read(c::kDeviceStatus, 1));
  if ((s & status::kFeaturesOk) == 0) {
    (void)common_write(c::kDeviceStatus, 1, base | status::kFailed);
    return make_error(ErrorCode::kProtocolViolation, "device refused features {:#x}", features_);
  }
  if (options.packed && !has_feature(features_, feature::kRingPacked)) {
    return make_error(ErrorCode::kUnsupported, "packed ring not offered");
  }
  if (msix_) {
    VPCI_TRY(common_write(c::kConfigMsixVector, 2, 0));
    VPCI_ASSIGN_OR_RETURN(auto v, common_read(c::kConfigMsixVector, 2));
    if (v != 0) return make_error(ErrorCode::kProtocolViolation, "config vector not mapped");
  }
  VPCI_ASSIGN_OR_RETURN(auto queues, common_read(c::kNumQueues, 2));
  if (queues > kMaxQueues) {
    return make_error(ErrorCode::kUnsupported,
                      "the device has {} queues; this driver sets up at "
                      "most {}",
                      queues, kMaxQueues);
  }
  for (std::uint16_t q = 0; q < static_cast<std::uint16_t>(queues); ++q) {
    VPCI_TRY(common_write(c::kQueueSelect, 2, q));
    VPCI_ASSIGN_OR_RETURN(auto max, common_read(c::kQueueSize, 2));
    if (max == 0) return make_error(ErrorCode::kNotFound, "queue {} absent", q);
    const auto size = static_cast<std::uint16_t>(
        options.queue_size ? std::min<std::uint64_t>(options.queue_size, max) : max);
    VPCI_TRY(common_write(c::kQueueSize, 2, size));
    if (msix_) {
      VPCI_TRY(common_write(c::kQueueMsixVector, 2, q + 1u));
      VPCI_ASSIGN_OR_RETURN(auto v, common_read(c::kQueueMsixVector, 2));
      if (v != q + 1u) return make_error(ErrorCode::kProtocolViolation, "queue vector not mapped");
    }
    QueueLayout layout;
    if (options.packed) {
      VPCI_TRY(check_room<PackedRing>(*ram_, q, size));
      packed_.push_back(std::make_unique<PackedRing>(*ram_, size));
      layout = packed_.back()->layout();
    } else {
      VPCI_TRY(check_room<SplitRing>(*ram_, q, size));
      split_.push_back(std::make_unique<SplitRing>(*ram_, size));
      layout = split_.back()->layout();
    }
    // 64-bit fields as two 32-bit halves, low first (§4.1.3.1), like Linux vp_iowrite64_twopart.
    for (auto [field, address] :
         {std::pair{c::kQueueDesc, layout.desc}, std::pair{c::kQueueDriver, layout.driver},
          std::pair{c::kQueueDevice, layout.device}}) {
      VPCI_TRY(common_write(field, 4, address & 0xFFFFFFFF));
      VPCI_TRY(common_write(field + 4, 4, address >> 32));
    }
    VPCI_ASSIGN_OR_RETURN(auto notify_off, common_read(c::kQueueNotifyOff, 2));
    notify_offsets_.push_back(static_cast<std::uint16_t>(notify_off));
    VPCI_TRY(common_write(c::kQueueEnable, 2, 1));
  }
  VPCI_TRY(common_write(c::kDeviceStatus, 1, base | status::kFeaturesOk | status::kDriverOk));
  return {};
}

Status VirtioPciDriver::initialise_legacy(const DriverOptions& options) {
  namespace l = reg::legacy;
  VPCI_TRY(legacy_write(l::kStatus, 1, 0));  // reset
  VPCI_TRY(setup_msix());
  VPCI_TRY(legacy_write(l::kStatus, 1, status::kAcknowledge));
  VPCI_TRY(legacy_write(l::kStatus, 1, status::kAcknowledge | status::kDriver));
  VPCI_ASSIGN_OR_RETURN(auto offered, legacy_read(l::kHostFeatures, 4));
  features_ = offered & (0xFFFFFF | feature_bit(feature::kIndirectDesc) | options.extra_features);
  VPCI_TRY(legacy_write(l::kGuestFeatures, 4, features_));
  if (msix_) {
    VPCI_TRY(legacy_write(l::kConfigVector, 2, 0));
    VPCI_ASSIGN_OR_RETURN(auto v, legacy_read(l::kConfigVector, 2));
    if (v != 0) return make_error(ErrorCode::kProtocolViolation, "legacy config vector not mapped");
  }
  for (std::uint16_t q = 0;; ++q) {
    VPCI_TRY(legacy_write(l::kQueueSelect, 2, q));
    VPCI_ASSIGN_OR_RETURN(auto size, legacy_read(l::kQueueNum, 2));
    if (size == 0) break;  // Linux: a zero size ends the queue list
    if (q == kMaxQueues) {
      return make_error(ErrorCode::kUnsupported, "the device has more than {} queues", kMaxQueues);
    }
    if (msix_) {
      VPCI_TRY(legacy_write(l::kQueueVector, 2, q + 1u));
      VPCI_ASSIGN_OR_RETURN(auto v, legacy_read(l::kQueueVector, 2));
      if (v != q + 1u) return make_error(ErrorCode::kProtocolViolation, "legacy queue vector");
    }
    // §2.7.2 legacy layout: 4096-aligned, used ring on the next 4096 boundary.
    const auto n = static_cast<std::uint16_t>(size);
    const std::uint64_t bytes =
        (16ull * n + 6 + 2ull * n + 4095) / 4096 * 4096 + (6 + 8ull * n + 4095) / 4096 * 4096;
    VPCI_ASSIGN_OR_RETURN(const GuestAddress base, ram_->allocate(bytes, 4096));
    VPCI_ASSIGN_OR_RETURN(QueueLayout layout, legacy_split_layout(base, n, 4096));
    split_.push_back(std::make_unique<SplitRing>(*ram_, layout));
    notify_offsets_.push_back(q);
    VPCI_TRY(legacy_write(l::kQueuePfn, 4, base >> l::kQueueAddressShift));
    VPCI_ASSIGN_OR_RETURN(auto pfn, legacy_read(l::kQueuePfn, 4));
    if (pfn != base >> l::kQueueAddressShift) {
      return make_error(ErrorCode::kProtocolViolation, "queue {} PFN reads back {:#x}", q, pfn);
    }
  }
  VPCI_TRY(legacy_write(l::kStatus, 1, status::kAcknowledge | status::kDriver | status::kDriverOk));
  return {};
}

// ---- queues and interrupts -------------------------------------------------------------------

Status VirtioPciDriver::notify(std::uint16_t queue) {
  const auto value = le_bytes(queue, 2);
  if (options_.path == DriverPath::kLegacyIo) {
    return access_->bar_write(0, reg::legacy::kQueueNotify, value);
  }
  if (options_.path == DriverPath::kLegacyMmr) {
    // docs/transitional-mmr.md: legacy doorbells go to the notify capability's base.
    return access_->bar_write(probe_.notify->bar, probe_.notify->offset, value);
  }
  const std::uint64_t offset = probe_.notify->offset + std::uint64_t{notify_offsets_.at(queue)} *
                                                           probe_.notify_off_multiplier;
  return access_->bar_write(probe_.notify->bar, offset, value);
}

std::uint16_t VirtioPciDriver::submit(std::uint16_t queue, const ChainBuilder& chain, bool kick) {
  const std::uint16_t id =
      packed_.empty() ? split_.at(queue)->add(chain) : packed_.at(queue)->add(chain);
  if (kick) (void)notify(queue);
  return id;
}

std::optional<UsedBuffer> VirtioPciDriver::pop_used(std::uint16_t queue) {
  return packed_.empty() ? split_.at(queue)->pop_used() : packed_.at(queue)->pop_used();
}

std::optional<UsedBuffer> VirtioPciDriver::wait_used(std::uint16_t queue,
                                                     std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto used = pop_used(queue);
  while (!used && std::chrono::steady_clock::now() < deadline) {
    if (!access_->poll(std::chrono::milliseconds(1))) return std::nullopt;  // path broken
    used = pop_used(queue);
  }
  return used;
}

bool VirtioPciDriver::wait_queue_interrupt(std::uint16_t queue, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!take_queue_interrupt(queue)) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    if (!access_->poll(std::chrono::milliseconds(1))) return false;
  }
  return true;
}

Status VirtioPciDriver::reset_device() {
  if (options_.path == DriverPath::kModern) return common_write(reg::common::kDeviceStatus, 1, 0);
  return legacy_write(reg::legacy::kStatus, 1, 0);
}

bool VirtioPciDriver::take_queue_interrupt(std::uint16_t queue) {
  if (msix_) {
    const std::uint16_t vector = queue + 1u;
    for (std::size_t i = msix_consumed_; i < interrupts_.msix.size(); ++i) {
      const auto& m = interrupts_.msix[i];
      // Paths that deliver on eventfds know the vector only (address 0).
      if (m.vector == vector &&
          (m.address == 0 || (m.address == kMsiAddress && m.data == kMsiDataBase + vector))) {
        msix_consumed_ = i + 1;
        return true;
      }
    }
    return false;
  }
  if (!interrupts_.intx) return false;
  auto isr = read_isr();
  // Reading the ISR de-asserts INTx (§4.1.4.5); eventfd paths unmask it for the next one.
  (void)access_->unmask_intx();
  return isr && (*isr & reg::kIsrQueue) != 0 && !interrupts_.intx;
}

}  // namespace vpci::driver
