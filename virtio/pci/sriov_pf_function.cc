#include "virtio/pci/sriov_pf_function.h"

namespace vpci::virtio::pci {

Status SriovPfFunction::config_write(std::uint32_t offset, std::span<const std::uint8_t> data) {
  Status written = owner_->pf().config_write(offset, data);
  // PCIe 6.0 §9.3.3.3.1: clearing VF Enable makes the VFs go away; when it is set again
  // they start from their initial state, whatever a driver left in them.
  const bool enabled = owner_->group_enabled();
  if (vfs_enabled_ && !enabled) reset_vfs();
  vfs_enabled_ = enabled;
  return written;
}

void SriovPfFunction::set_event_loop(EventLoop* loop) {
  // The VFs' back ends (a tap per net VF) run on the PF's loop: one thread per served
  // device, whatever its number of functions.
  owner_->pf().set_event_loop(loop);
  for (std::size_t member = 1; member <= owner_->vf_count(); ++member)
    owner_->vf(member).set_event_loop(loop);
}

void SriovPfFunction::quiesce() {
  owner_->pf().quiesce();
  for (std::size_t member = 1; member <= owner_->vf_count(); ++member) owner_->vf(member).quiesce();
}

void SriovPfFunction::reset() {
  owner_->pf().reset();  // clears VF Enable with the rest of the PF's config space
  reset_vfs();
  vfs_enabled_ = false;
}

void SriovPfFunction::reset_vfs() {
  for (std::size_t member = 1; member <= owner_->vf_count(); ++member) owner_->vf(member).reset();
}

}  // namespace vpci::virtio::pci
