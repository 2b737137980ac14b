// An SR-IOV physical function and its virtual functions as virtio 1.3 §2.12 arranges them
// for legacy access (reference ../shared/reference/virtio-admin.md §1-4):
//   * the PF: a modern virtio-pci function with VIRTIO_F_ADMIN_VQ and VIRTIO_F_SR_IOV, one
//     admin queue, and the SR-IOV extended capability (TotalVFs, NumVFs, VF Enable, VF
//     Device ID 0x1040 + type, VF BAR0 hardwired to zero);
//   * each VF: a modern function of the same device type (non-transitional identity,
//     §2.12.1.2 SHOULD) whose legacy register block exists but is reached only through
//     the PF's admin commands (VirtioPciOptions::admin_legacy);
//   * SriovPf itself: the owner side of the SR-IOV group (admin::LegacyMembers): VF n is
//     member n, members exist while VF Enable is set and n <= NumVFs, and a member's
//     legacy notifications go to its own notify region (a member-BAR entry, the only kind
//     Linux's virtio-vfio-pci uses).
// The PF's guest memory is its driver's; each VF has the guest memory of whoever drives
// its data path (for the legacy-over-admin mapper: the guest's).
#pragma once

#include <algorithm>
#include <memory>
#include <vector>

#include "base/error.h"
#include "virtio/admin_commands.h"
#include "virtio/device.h"
#include "virtio/guest_memory.h"
#include "virtio/pci/virtio_pci_function.h"

namespace vpci::virtio::pci {

// The PF of a legacy-over-admin device: a management function of its VFs' virtio type
// with no queues, features or configuration of its own — only the admin queue the core
// adds. Nobody but vpci's own PF driver (admin_queue_driver.h) ever drives it.
class ManagementPfDevice final : public Device {
 public:
  explicit ManagementPfDevice(std::uint32_t virtio_type) : type_(virtio_type) {}
  [[nodiscard]] std::uint32_t device_id() const override { return type_; }
  [[nodiscard]] std::uint64_t device_features() const override { return 0; }
  [[nodiscard]] std::uint16_t num_queues() const override { return 0; }
  [[nodiscard]] std::uint16_t max_queue_size(std::uint16_t) const override { return 1; }
  [[nodiscard]] std::uint32_t config_size() const override { return 0; }
  void read_config(std::uint32_t, std::span<std::uint8_t> out) const override {
    std::fill(out.begin(), out.end(), 0);
  }
  void process_queue(Virtqueue&) override {}  // it has no queues of its own

 private:
  std::uint32_t type_;
};

struct SriovPfParts {
  std::unique_ptr<Device> pf_device;
  std::shared_ptr<GuestMemory> pf_memory;
  std::vector<std::unique_ptr<Device>> vf_devices;  // VF 1, 2, ...; same device type
  std::vector<std::shared_ptr<GuestMemory>> vf_memories;
  VirtioPciOptions pf_options;  // kind kModern; admin_owner and sriov are filled in
  VirtioPciOptions vf_options;  // kind kModern; admin_legacy is set
};

class SriovPf final : public admin::LegacyMembers {
 public:
  static Result<std::unique_ptr<SriovPf>> create(SriovPfParts parts);
  SriovPf(const SriovPf&) = delete;
  SriovPf& operator=(const SriovPf&) = delete;
  ~SriovPf() override;

  [[nodiscard]] VirtioPciFunction& pf() { return *pf_; }
  [[nodiscard]] const VirtioPciFunction& pf() const { return *pf_; }
  // The PF's guest memory: where its driver's rings live.
  [[nodiscard]] const std::shared_ptr<GuestMemory>& pf_memory() const { return pf_memory_; }
  [[nodiscard]] std::size_t vf_count() const { return vfs_.size(); }
  // VF `member` (1-based, as the SR-IOV group numbers members).
  [[nodiscard]] VirtioPciFunction& vf(std::size_t member) { return *vfs_.at(member - 1); }

  // admin::LegacyMembers
  [[nodiscard]] bool group_enabled() const override;
  [[nodiscard]] std::uint64_t member_count() const override;
  [[nodiscard]] Status legacy_write(std::uint64_t member, admin::LegacyRegion region,
                                    std::uint32_t offset,
                                    std::span<const std::uint8_t> data) override;
  [[nodiscard]] Status legacy_read(std::uint64_t member, admin::LegacyRegion region,
                                   std::uint32_t offset, std::span<std::uint8_t> out) override;
  [[nodiscard]] std::vector<admin::NotifyInfoEntry> legacy_notify_info(
      std::uint64_t member) override;

 private:
  SriovPf() = default;

  std::shared_ptr<GuestMemory> pf_memory_;
  std::vector<std::unique_ptr<VirtioPciFunction>> vfs_;
  std::unique_ptr<VirtioPciFunction> pf_;  // after vfs_: its admin engine refers to this
};

}  // namespace vpci::virtio::pci
