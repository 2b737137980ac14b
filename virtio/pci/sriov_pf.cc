#include "virtio/pci/sriov_pf.h"

#include <algorithm>

#include <fmt/format.h>

namespace vpci::virtio::pci {

Result<std::unique_ptr<SriovPf>> SriovPf::create(SriovPfParts parts) {
  if (!parts.pf_device || parts.vf_devices.empty() ||
      parts.vf_devices.size() != parts.vf_memories.size()) {
    return make_error(ErrorCode::kInvalidArgument,
                      "an SR-IOV PF needs its device and, per VF, a device and guest memory");
  }
  if (parts.pf_options.kind != TransportKind::kModern ||
      parts.vf_options.kind != TransportKind::kModern) {
    return make_error(ErrorCode::kInvalidArgument,
                      "an SR-IOV PF and its VFs are modern functions (virtio 1.3 §2.12.1.2)");
  }
  const std::uint32_t type = parts.pf_device->device_id();
  for (const auto& vf : parts.vf_devices) {
    if (!vf || vf->device_id() != type) {
      return make_error(ErrorCode::kInvalidArgument,
                        "every VF must be a virtio device of the PF's type {}", type);
    }
  }
  std::unique_ptr<SriovPf> owner(new SriovPf());
  owner->pf_memory_ = parts.pf_memory;
  for (std::size_t i = 0; i < parts.vf_devices.size(); ++i) {
    VirtioPciOptions options = parts.vf_options;
    options.admin_legacy = true;
    auto vf = VirtioPciFunction::create(std::move(parts.vf_devices[i]),
                                        std::move(parts.vf_memories[i]), std::move(options));
    if (!vf) return tl::unexpected(std::move(vf).error().with_context(fmt::format("VF {}", i + 1)));
    owner->vfs_.push_back(std::move(*vf));
  }
  VirtioPciOptions options = std::move(parts.pf_options);
  options.core.admin_owner = owner.get();
  SriovCapabilitySpec sriov;
  sriov.total_vfs = static_cast<std::uint16_t>(owner->vfs_.size());
  sriov.vf_device_id = static_cast<std::uint16_t>(kModernDeviceIdBase + type);
  sriov.vf_bar4_size = owner->vfs_.front()->layout().memory_bar_size;
  options.sriov = sriov;
  auto pf = VirtioPciFunction::create(std::move(parts.pf_device), std::move(parts.pf_memory),
                                      std::move(options));
  if (!pf) return tl::unexpected(std::move(pf).error().with_context("PF"));
  owner->pf_ = std::move(*pf);
  return owner;
}

SriovPf::~SriovPf() = default;

bool SriovPf::group_enabled() const {
  const auto state = pf_ ? pf_->sriov_state() : std::nullopt;
  return state && state->vf_enable;
}

std::uint64_t SriovPf::member_count() const {
  const auto state = pf_ ? pf_->sriov_state() : std::nullopt;  // one read of the capability
  if (!state || !state->vf_enable) return 0;
  return std::min<std::uint64_t>(state->num_vfs, vfs_.size());
}

Status SriovPf::legacy_write(std::uint64_t member, admin::LegacyRegion region, std::uint32_t offset,
                             std::span<const std::uint8_t> data) {
  return vf(member).admin_legacy_write(region, offset, data);
}

Status SriovPf::legacy_read(std::uint64_t member, admin::LegacyRegion region, std::uint32_t offset,
                            std::span<std::uint8_t> out) {
  return vf(member).admin_legacy_read(region, offset, out);
}

std::vector<admin::NotifyInfoEntry> SriovPf::legacy_notify_info(std::uint64_t member) {
  // The VF's own notify region: writing a queue index at its start rings that queue
  // (the transport takes the index from the data, §4.1.5.2).
  (void)member;
  admin::NotifyInfoEntry entry{};
  entry.flags = admin::kNotifyMemberBar;
  entry.bar = static_cast<std::uint8_t>(VirtioPciLayout::kMemoryBar);
  entry.offset = VirtioPciLayout::kNotifyOffset;
  return {entry};
}

}  // namespace vpci::virtio::pci
