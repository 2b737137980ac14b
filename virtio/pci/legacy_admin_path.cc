#include "virtio/pci/legacy_admin_path.h"

#include "virtio/pci/registers.h"
#include "virtio/spec.h"

namespace vpci::virtio::pci {

Result<std::unique_ptr<LegacyAdminPath>> LegacyAdminPath::create(std::unique_ptr<SriovPf> pf,
                                                                 std::uint64_t member) {
  if (!pf || member == 0 || member > pf->vf_count()) {
    return make_error(ErrorCode::kInvalidArgument, "VF {} of an SR-IOV PF with {} VFs", member,
                      pf ? pf->vf_count() : 0);
  }
  std::unique_ptr<LegacyAdminPath> path(new LegacyAdminPath(std::move(pf), member));
  VPCI_ASSIGN_OR_RETURN(
      path->driver_, AdminQueueDriver::create(path->pf_->pf(), path->pf_->pf_memory(),
                                              static_cast<std::uint16_t>(path->pf_->vf_count())));
  return path;
}

LegacyAdminPath::~LegacyAdminPath() {
  driver_.reset();  // unregisters its memory from the PF while the PF exists
}

std::uint32_t LegacyAdminPath::window_length() {
  // Linux's virtio-vfio-pci exposes only the MAC and status of virtio_net_config (8
  // bytes), so its I/O BAR0 is 32 bytes; a guest expecting that device gets the same.
  constexpr std::uint32_t kNetMacAndStatus = 8;
  if (vf().core().device_id() == device_id::kNetwork) {
    return legacy::kConfigOffsetMsix + kNetMacAndStatus;
  }
  return legacy::kConfigOffsetMsix + vf().core().config_size();
}

std::pair<bool, std::uint8_t> LegacyAdminPath::route(std::uint64_t offset) {
  // The 20/24 split follows the VF's own MSI-X state (reference §6 "MSI-X state").
  const VirtioPciFunction& function = vf();
  const std::uint32_t header = function.msix() != nullptr && function.msix()->enabled()
                                   ? legacy::kConfigOffsetMsix
                                   : legacy::kConfigOffsetNoMsix;
  if (offset < header) return {false, static_cast<std::uint8_t>(offset)};
  return {true, static_cast<std::uint8_t>(offset - header)};
}

Status LegacyAdminPath::read(std::uint64_t offset, std::span<std::uint8_t> data) {
  if (offset == legacy::kQueueNotify && data.size() == 2) {
    if (auto entry = driver_->notify_entry(member_)) {
      return vf().bar_read(entry->bar, entry->offset, data);
    }
  }
  const auto [device_config, at] = route(offset);
  return driver_->legacy_read(member_, device_config, at, data);
}

Status LegacyAdminPath::write(std::uint64_t offset, std::span<const std::uint8_t> data) {
  if (offset == legacy::kQueueNotify && data.size() == 2) {
    // The doorbell: straight to the VF's notify address (§2.12.1.2 LEGACY_NOTIFY_INFO);
    // COMMON_CFG_WRITE at 16 is the fallback when the PF named none.
    if (auto entry = driver_->notify_entry(member_)) {
      return vf().bar_write(entry->bar, entry->offset, data);
    }
  }
  const auto [device_config, at] = route(offset);
  return driver_->legacy_write(member_, device_config, at, data);
}

}  // namespace vpci::virtio::pci
