#include "virtio/pci/legacy_io_mapper.h"

#include <algorithm>
#include <array>
#include <bit>
#include <vector>

#include "base/little_endian.h"
#include "pci/capabilities.h"
#include "pci/registers.h"
#include "virtio/pci/registers.h"

namespace vpci::virtio::pci {
namespace {

namespace vp = vpci::pci;

bool bar_range_ok(const vp::BarInfo& bar, std::uint64_t offset, std::uint64_t length) {
  return bar.kind != vp::BarKind::kAbsent && offset <= bar.size && length <= bar.size - offset;
}

}  // namespace

Result<MmrLocation> locate_mmr(std::span<const std::uint8_t> config,
                               std::span<const vp::BarInfo, vp::kBarCount> bars) {
  if (config.size() < vp::kExtendedConfigSize) {
    return make_error(ErrorCode::kUnsupported,
                      "an MMR device is PCIe: need 4096 bytes of config, got {}", config.size());
  }
  const auto le16 = [&](std::uint32_t at) { return load_le<std::uint16_t>(config.subspan(at)); };
  const auto le32 = [&](std::uint32_t at) { return load_le<std::uint32_t>(config.subspan(at)); };
  if (le16(vp::reg::kVendorId) != kVendorId) {
    return make_error(ErrorCode::kNotFound, "vendor {:#06x} is not virtio",
                      le16(vp::reg::kVendorId));
  }
  MmrLocation loc;
  const std::uint16_t device_id = le16(vp::reg::kDeviceId);
  loc.virtio_id = virtio_id_from_mmr_device_id(device_id).value_or(le16(vp::reg::kSubsystemId));
  const auto transitional = transitional_device_id(loc.virtio_id);
  if (!transitional) {
    return make_error(ErrorCode::kUnsupported,
                      "virtio device type {} has no transitional device ID", loc.virtio_id);
  }
  loc.transitional_device_id = *transitional;

  bool have_vsec = false;
  bool have_notify = false;
  const auto scan = vp::scan_capabilities(config);
  for (const auto& cap : scan.capabilities) {
    if (cap.space == vp::CapabilitySpace::kStandard && cap.id == vp::cap_id::kVendorSpecific &&
        !have_notify &&
        std::uint32_t{cap.offset} + cap::kNotifySize <= vp::kConventionalConfigSize &&
        config[cap.offset + cap::kCfgType] == cfg_type::kNotify &&
        config[cap.offset + cap::kBar] < vp::kBarCount) {
      loc.notify_bar = config[cap.offset + cap::kBar];
      loc.notify_offset = le32(cap.offset + cap::kOffset);
      // The fast path writes 2 bytes at the notify region's base (docs/transitional-mmr.md §4).
      if (!bar_range_ok(bars[loc.notify_bar], loc.notify_offset, 2)) {
        return make_error(ErrorCode::kMalformedInput,
                          "notify capability at {:#x} points outside BAR{}", cap.offset,
                          loc.notify_bar);
      }
      have_notify = true;
    }
    if (cap.space != vp::CapabilitySpace::kExtended || cap.id != vp::ext_cap_id::kVendorSpecific ||
        have_vsec) {
      continue;
    }
    const std::uint32_t at = cap.offset;
    if (at + 8 > config.size() || le16(at + mmr_vsec::kVsecHeader) != mmr_vsec::kVsecId) continue;
    const std::uint16_t rev_len = le16(at + mmr_vsec::kVsecHeader + 2);
    const unsigned revision = rev_len & 0xF;
    const unsigned length = rev_len >> 4;
    if (revision != mmr_vsec::kVsecRevision || length < mmr_vsec::kSize ||
        at + mmr_vsec::kSize > config.size()) {
      return make_error(ErrorCode::kMalformedInput, "MMR VSEC at {:#x}: revision {} length {}", at,
                        revision, length);
    }
    if (config[at + mmr_vsec::kCfgType] != cfg_type::kLegacyMmr) {
      return make_error(ErrorCode::kMalformedInput, "MMR VSEC at {:#x}: cfg_type {} (want 10)", at,
                        config[at + mmr_vsec::kCfgType]);
    }
    loc.window_bar = config[at + mmr_vsec::kBar];
    loc.window_length = le32(at + mmr_vsec::kLength);
    loc.window_offset = load_le<std::uint64_t>(config.subspan(at + mmr_vsec::kOffset));
    loc.vsec_offset = static_cast<std::uint16_t>(at);
    if (loc.window_bar >= vp::kBarCount || bars[loc.window_bar].kind == vp::BarKind::kIo ||
        !bar_range_ok(bars[loc.window_bar], loc.window_offset, loc.window_length)) {
      return make_error(ErrorCode::kMalformedInput,
                        "MMR VSEC at {:#x}: window {:#x}+{:#x} is not inside memory BAR{}", at,
                        loc.window_offset, loc.window_length, loc.window_bar);
    }
    // The legacy header with MSI-X vectors is 24 bytes; an I/O BAR is at most 256.
    if (loc.window_length < legacy::kConfigOffsetMsix || loc.window_length > 256) {
      return make_error(ErrorCode::kMalformedInput,
                        "MMR VSEC at {:#x}: window length {} not in 24-256", at, loc.window_length);
    }
    have_vsec = true;
  }
  if (!have_vsec)
    return make_error(ErrorCode::kNotFound, "no transitional MMR capability (VSEC cfg_type 10)");
  if (!have_notify) return make_error(ErrorCode::kNotFound, "no virtio notify capability");
  return loc;
}

LegacyIoMapper::LegacyIoMapper(std::unique_ptr<vp::Function> mmr,
                               std::unique_ptr<LegacyAdminPath> admin, MmrLocation location)
    : mmr_(std::move(mmr)),
      admin_(std::move(admin)),
      underlying_(mmr_ ? mmr_.get() : &admin_->vf()),
      location_(location),
      io_bar_size_(std::max<std::uint32_t>(4, std::bit_ceil(location.window_length))) {}

LegacyIoMapper::~LegacyIoMapper() = default;

Result<std::unique_ptr<LegacyIoMapper>> LegacyIoMapper::create_over_admin(
    std::unique_ptr<LegacyAdminPath> path) {
  if (!path) return make_error(ErrorCode::kInvalidArgument, "no admin path to map");
  VirtioPciFunction& vf = path->vf();
  if (vf.bar_info(0).kind != vp::BarKind::kAbsent) {
    return make_error(ErrorCode::kConflict, "the VF implements BAR0; the mapper needs that slot");
  }
  MmrLocation location;
  location.virtio_id = vf.core().device_id();
  const auto id = transitional_device_id(location.virtio_id);
  if (!id) {
    return make_error(ErrorCode::kUnsupported, "virtio device {} has no transitional device ID",
                      location.virtio_id);
  }
  location.transitional_device_id = *id;
  location.window_length = path->window_length();
  return std::unique_ptr<LegacyIoMapper>(new LegacyIoMapper(nullptr, std::move(path), location));
}

Result<std::unique_ptr<LegacyIoMapper>> LegacyIoMapper::create(std::unique_ptr<vp::Function> mmr) {
  if (!mmr) return make_error(ErrorCode::kInvalidArgument, "no function to map");
  std::vector<std::uint8_t> config(mmr->config_size());
  VPCI_TRY(mmr->config_read(0, config));
  std::array<vp::BarInfo, vp::kBarCount> bars{};
  for (unsigned i = 0; i < vp::kBarCount; ++i) bars[i] = mmr->bar_info(i);
  if (bars[0].kind != vp::BarKind::kAbsent) {
    return make_error(ErrorCode::kConflict,
                      "the MMR function implements BAR0; the mapper needs that slot");
  }
  VPCI_ASSIGN_OR_RETURN(MmrLocation location, locate_mmr(config, bars));
  return std::unique_ptr<LegacyIoMapper>(new LegacyIoMapper(std::move(mmr), nullptr, location));
}

vp::BarInfo LegacyIoMapper::bar_info(unsigned bar) const {
  if (bar == 0) return {vp::BarKind::kIo, io_bar_size_, false};
  return underlying_->bar_info(bar);
}

std::uint8_t LegacyIoMapper::faked_byte(std::uint32_t offset, std::uint8_t underlying) const {
  const auto byte_of = [&](std::uint32_t value, std::uint32_t base) {
    return static_cast<std::uint8_t>(value >> (8 * (offset - base)));
  };
  switch (offset) {
    case vp::reg::kDeviceId:
    case vp::reg::kDeviceId + 1:
      return byte_of(location_.transitional_device_id, vp::reg::kDeviceId);
    case vp::reg::kRevisionId: return 0;  // §4.1.2.1: transitional devices have revision 0
    case vp::reg::kSubsystemVendorId:
    case vp::reg::kSubsystemVendorId + 1: return byte_of(kVendorId, vp::reg::kSubsystemVendorId);
    case vp::reg::kSubsystemId:
    case vp::reg::kSubsystemId + 1: return byte_of(location_.virtio_id, vp::reg::kSubsystemId);
    case vp::reg::kCommand:
      return static_cast<std::uint8_t>((underlying & ~vp::command::kIoSpace) |
                                       (io_enabled_ ? vp::command::kIoSpace : 0));
    default: break;
  }
  if (offset >= vp::reg::kBar0 && offset < vp::reg::kBar0 + 4) {
    // BAR0 shadow: address bits above the size, the I/O space flag (PCI 3.0 §6.2.5.1).
    const std::uint32_t value = (bar0_shadow_ & ~(io_bar_size_ - 1)) | vp::bar::kIoSpaceFlag;
    return byte_of(value, vp::reg::kBar0);
  }
  return underlying;
}

Status LegacyIoMapper::config_read(std::uint32_t offset, std::span<std::uint8_t> data) {
  VPCI_TRY(underlying_->config_read(offset, data));
  for (std::size_t i = 0; i < data.size(); ++i) {
    const auto at = static_cast<std::uint32_t>(offset + i);
    if (at < vp::kHeaderSize) data[i] = faked_byte(at, data[i]);
  }
  return {};
}

Status LegacyIoMapper::config_write(std::uint32_t offset, std::span<const std::uint8_t> data) {
  if (offset > config_size() || data.size() > config_size() - offset) {
    return make_error(ErrorCode::kOutOfRange, "config write of {} bytes at {:#x}", data.size(),
                      offset);
  }
  const std::uint32_t end = offset + static_cast<std::uint32_t>(data.size());
  if (offset <= vp::reg::kCommand && end > vp::reg::kCommand) {
    io_enabled_ = (data[vp::reg::kCommand - offset] & vp::command::kIoSpace) != 0;
  }
  if (end <= vp::reg::kBar0 || offset >= vp::reg::kBar0 + 4)
    return underlying_->config_write(offset, data);
  // Split around the BAR0 shadow.
  for (std::uint32_t at = offset; at < end; ++at) {
    const std::uint8_t byte = data[at - offset];
    if (at >= vp::reg::kBar0 && at < vp::reg::kBar0 + 4) {
      const unsigned shift = 8 * (at - vp::reg::kBar0);
      bar0_shadow_ = (bar0_shadow_ & ~(0xFFu << shift)) | (std::uint32_t{byte} << shift);
    } else {
      VPCI_TRY(underlying_->config_write(at, std::span<const std::uint8_t>(&byte, 1)));
    }
  }
  return {};
}

Status LegacyIoMapper::bar_read(unsigned bar, std::uint64_t offset, std::span<std::uint8_t> data) {
  if (bar != 0) return underlying_->bar_read(bar, offset, data);
  if (!io_enabled_ || offset >= location_.window_length ||
      data.size() > location_.window_length - offset || data.size() > 4) {
    std::fill(data.begin(), data.end(), 0xFF);
    return make_error(io_enabled_ ? ErrorCode::kOutOfRange : ErrorCode::kConflict,
                      "legacy I/O read of {} bytes at {} (I/O decoding {})", data.size(), offset,
                      io_enabled_ ? "on" : "off");
  }
  if (admin_) return admin_->read(offset, data);  // one admin command (or the doorbell)
  if (offset == legacy::kQueueNotify && data.size() == 2) {
    return mmr_->bar_read(location_.notify_bar, location_.notify_offset, data);
  }
  return mmr_->bar_read(location_.window_bar, location_.window_offset + offset, data);
}

Status LegacyIoMapper::bar_write(unsigned bar, std::uint64_t offset,
                                 std::span<const std::uint8_t> data) {
  if (bar != 0) return underlying_->bar_write(bar, offset, data);
  if (!io_enabled_ || offset >= location_.window_length ||
      data.size() > location_.window_length - offset || data.size() > 4) {
    return make_error(io_enabled_ ? ErrorCode::kOutOfRange : ErrorCode::kConflict,
                      "legacy I/O write of {} bytes at {} (I/O decoding {})", data.size(), offset,
                      io_enabled_ ? "on" : "off");
  }
  if (offset == legacy::kQueueNotify && data.size() == 2) ++fast_path_notifies_;
  if (admin_) return admin_->write(offset, data);  // one admin command (or the doorbell)
  if (offset == legacy::kQueueNotify && data.size() == 2) {
    // Fast path: the doorbell, not the legacy window (docs/transitional-mmr.md §4).
    return mmr_->bar_write(location_.notify_bar, location_.notify_offset, data);
  }
  return mmr_->bar_write(location_.window_bar, location_.window_offset + offset, data);
}

void LegacyIoMapper::reset() {
  underlying_->reset();
  bar0_shadow_ = 0;
  io_enabled_ = false;
}

}  // namespace vpci::virtio::pci
