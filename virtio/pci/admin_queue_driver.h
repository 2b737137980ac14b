// The PF driver inside vpci: the role the host kernel's virtio_pci plays in Linux's
// design of legacy access (reference ../shared/reference/virtio-admin.md §5). Given a PF
// (any pci::Function offering VIRTIO_F_ADMIN_VQ), it finds the common and notify
// capabilities in its config space, negotiates VERSION_1 + ADMIN_VQ + SR_IOV through the
// common configuration, sets up the admin queue as a split ring in memory of its own,
// sets NumVFs and VF Enable in the SR-IOV capability, then sends LIST_QUERY, LIST_USE of
// the legacy commands and LEGACY_NOTIFY_INFO for each VF — the sequence Linux sends.
// Commands then travel through that real admin virtqueue: the ring code and the device
// model run exactly as under a foreign driver.
//
// Each command is one chain as Linux builds it: the 24-byte header and the data in
// separate readable buffers, the 8-byte status and the result in separate writable ones.
// It is synchronous: the doorbell write returns with the command done (a vpci PF
// completes it inside the write, its memory being host-mapped); a command not complete
// then is an error, never a wait.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "base/error.h"
#include "pci/function.h"
#include "virtio/admin_spec.h"
#include "virtio/guest_memory.h"

namespace vpci::virtio::pci {

class AdminQueueDriver {
 public:
  // Where the driver's memory appears in the PF's guest memory, and how big it is.
  static constexpr GuestAddress kMemoryBase = 0x4000'0000;
  static constexpr std::size_t kMemoryBytes = 16 * 1024;
  static constexpr std::uint16_t kQueueSize = 16;

  // Brings `pf` up with `vfs` VFs enabled. `pf_memory` is the guest memory the PF's device
  // reads: the driver registers its own memory there (and removes it when destroyed).
  static Result<std::unique_ptr<AdminQueueDriver>> create(vpci::pci::Function& pf,
                                                          std::shared_ptr<GuestMemory> pf_memory,
                                                          std::uint16_t vfs);
  ~AdminQueueDriver();
  AdminQueueDriver(const AdminQueueDriver&) = delete;
  AdminQueueDriver& operator=(const AdminQueueDriver&) = delete;

  // One command; the result's bytes (used length minus the status). A status other than
  // OK is an error naming it.
  Result<std::vector<std::uint8_t>> execute(std::uint16_t opcode, std::uint64_t member,
                                            std::span<const std::uint8_t> data,
                                            std::size_t result_bytes);
  // LEGACY_COMMON_CFG_WRITE/READ and LEGACY_DEV_CFG_WRITE/READ (`device_config` picks).
  Status legacy_write(std::uint64_t member, bool device_config, std::uint8_t offset,
                      std::span<const std::uint8_t> data);
  Status legacy_read(std::uint64_t member, bool device_config, std::uint8_t offset,
                     std::span<std::uint8_t> out);
  // VF `member`'s preferred legacy notify address (the first member-BAR entry of its
  // LEGACY_NOTIFY_INFO), if the PF gave one.
  [[nodiscard]] std::optional<admin::NotifyInfoEntry> notify_entry(std::uint64_t member) const;
  [[nodiscard]] std::uint64_t commands_sent() const { return commands_; }

 private:
  AdminQueueDriver(vpci::pci::Function& pf, std::shared_ptr<GuestMemory> pf_memory)
      : pf_(pf), pf_memory_(std::move(pf_memory)) {}
  Status bring_up(std::uint16_t vfs);
  Status common_write(std::uint32_t offset, std::uint64_t value, unsigned width);
  Result<std::uint64_t> common_read(std::uint32_t offset, unsigned width);
  void put(std::size_t at, std::span<const std::uint8_t> bytes);
  void put_descriptor(std::uint16_t index, std::uint64_t address, std::uint32_t length,
                      std::uint16_t flags, std::uint16_t next);

  vpci::pci::Function& pf_;
  std::shared_ptr<GuestMemory> pf_memory_;
  std::vector<std::uint8_t> memory_ = std::vector<std::uint8_t>(kMemoryBytes, 0);
  bool registered_ = false;
  unsigned common_bar_ = 0;
  std::uint64_t common_offset_ = 0;
  unsigned notify_bar_ = 0;
  std::uint64_t notify_address_ = 0;  // the admin queue's doorbell in notify_bar_
  std::uint16_t admin_queue_ = 0;
  std::uint16_t avail_idx_ = 0;
  std::uint16_t used_seen_ = 0;
  std::uint64_t commands_ = 0;
  bool stuck_ = false;  // a command was not completed: its descriptors are not ours
  std::vector<std::optional<admin::NotifyInfoEntry>> notify_entries_;  // per VF
};

}  // namespace vpci::virtio::pci
