// The legacy I/O mapper's second backend (legacy_io_mapper.h; virtio 1.3 §2.12.1.2,
// reference virtio-admin.md §4): a guest's access to the legacy I/O BAR of a VF becomes
// one admin command on its PF's admin queue, sent by vpci's own PF driver
// (admin_queue_driver.h) — what Linux's virtio-vfio-pci does with the host kernel's PF
// driver. Routing of one access (never split, never cached, no replay):
//   offset 16, 2 bytes (queue notify)  → the VF's notify address from LEGACY_NOTIFY_INFO,
//                                         or LEGACY_COMMON_CFG_WRITE at 16 without one
//   offset < 20, or < 24 with MSI-X    → LEGACY_COMMON_CFG_READ/WRITE at that offset
//   anything above                     → LEGACY_DEV_CFG_READ/WRITE at offset - 20 / 24
// where MSI-X is the VF's own MSI-X Enable, the state the guest set through the mapper.
#pragma once

#include <cstdint>
#include <memory>
#include <span>

#include "base/error.h"
#include "virtio/pci/admin_queue_driver.h"
#include "virtio/pci/sriov_pf.h"

namespace vpci::virtio::pci {

class LegacyAdminPath {
 public:
  // Brings `pf` up with its VFs enabled and serves the legacy registers of VF `member`.
  static Result<std::unique_ptr<LegacyAdminPath>> create(std::unique_ptr<SriovPf> pf,
                                                         std::uint64_t member);
  LegacyAdminPath(const LegacyAdminPath&) = delete;
  LegacyAdminPath& operator=(const LegacyAdminPath&) = delete;
  ~LegacyAdminPath();

  [[nodiscard]] VirtioPciFunction& vf() { return pf_->vf(member_); }
  [[nodiscard]] SriovPf& sriov_pf() { return *pf_; }
  [[nodiscard]] const AdminQueueDriver& driver() const { return *driver_; }
  // The legacy register block's length: 24 + the VF's device configuration (for net,
  // its MAC and status only, as Linux's virtio-vfio-pci).
  [[nodiscard]] std::uint32_t window_length();

  Status read(std::uint64_t offset, std::span<std::uint8_t> data);
  Status write(std::uint64_t offset, std::span<const std::uint8_t> data);

 private:
  LegacyAdminPath(std::unique_ptr<SriovPf> pf, std::uint64_t member)
      : pf_(std::move(pf)), member_(member) {}
  // Where an access at `offset` goes: the device configuration or not, and the offset
  // inside that region.
  [[nodiscard]] std::pair<bool, std::uint8_t> route(std::uint64_t offset);

  std::unique_ptr<SriovPf> pf_;
  std::uint64_t member_;
  std::unique_ptr<AdminQueueDriver> driver_;  // before pf_ goes: it unregisters its memory
};

}  // namespace vpci::virtio::pci
