// The device side of virtio administration commands (virtio 1.3 §2.12; reference
// ../shared/reference/virtio-admin.md): an owner device (an SR-IOV PF) executes commands
// its driver places on the admin virtqueue, some of them on behalf of group members
// (VFs). vpci implements the SR-IOV group with LIST_QUERY, LIST_USE and the legacy-access
// commands of §2.12.1.2, which the virtio TC adopted instead of the transitional MMR device
// (seed 004): a hypervisor reads and writes a VF's legacy registers through its PF.
//
// AdminCommandEngine owns the rules every command follows; what a legacy access does is
// the owner's business, behind LegacyMembers:
//   * buffers (§2.12.1): the readable part is gathered across descriptors and read as a
//     byte stream (missing fields read as zero, excess ignored); the writable part
//     receives status and status_qualifier, then the result, each truncated to the room
//     the driver gave; the used length is the bytes written. A command never fails only
//     because a buffer is short or long, and lengths need not be multiples of 8.
//   * status order: group type → opcode against the in-use list → member id (1..NumVFs)
//     for the commands that name one; EINVAL results have no side effects.
//   * LIST_QUERY always reports bits 0 and 1; LIST_USE naming an unsupported opcode fails
//     INVALID_FIELD; reset puts the in-use list back to {LIST_QUERY, LIST_USE}, and those
//     two stay usable whatever LIST_USE said (Linux sends a list without them).
//   * deviation (documented in docs/admin-legacy.md): LIST_QUERY and LIST_USE succeed
//     while VF Enable is clear. The spec makes the SR-IOV group exist only with VF Enable
//     set, but Linux sends both at DRIVER_OK, before any VF can exist, and never asks
//     again: a literal device would disable legacy access for good.
//   * commands complete in order, each with a used-buffer notification (Linux >= 6.11
//     sleeps on it with no timeout).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "base/error.h"
#include "virtio/admin_spec.h"
#include "virtio/virtqueue.h"

namespace vpci::virtio::admin {

// The two legacy register regions a command can address (§2.12.1.2): the legacy header
// without device configuration, and the device-specific configuration.
enum class LegacyRegion : std::uint8_t { kCommon, kDevice };

// What the owner of the SR-IOV group provides for the legacy commands.
class LegacyMembers {
 public:
  virtual ~LegacyMembers() = default;
  // VF Enable: the SR-IOV group exists (§2.12.1.1).
  [[nodiscard]] virtual bool group_enabled() const = 0;
  // Members are VF numbers 1..member_count() (NumVFs).
  [[nodiscard]] virtual std::uint64_t member_count() const = 0;
  // One access to member `member`'s legacy registers, little-endian data, exactly as a
  // legacy driver's access of that width at that offset would be. An access that does not
  // hit a single field inside the region is an error and changes nothing.
  [[nodiscard]] virtual Status legacy_write(std::uint64_t member, LegacyRegion region,
                                            std::uint32_t offset,
                                            std::span<const std::uint8_t> data) = 0;
  [[nodiscard]] virtual Status legacy_read(std::uint64_t member, LegacyRegion region,
                                           std::uint32_t offset, std::span<std::uint8_t> out) = 0;
  // Where member `member`'s queue notifications may be written, in order of preference
  // (§2.12.1.2 LEGACY_NOTIFY_INFO; at most kNotifyInfoEntries).
  [[nodiscard]] virtual std::vector<NotifyInfoEntry> legacy_notify_info(std::uint64_t member) = 0;
};

// What one command did: for tracing (`vpci serve --trace`) and statistics.
struct CommandRecord {
  std::uint16_t opcode = 0;
  std::uint16_t group_type = 0;
  std::uint64_t member = 0;
  std::uint16_t status = 0;
  std::uint16_t qualifier = 0;
  std::uint32_t used_length = 0;
};

// A command's outcome before it is written to the driver's buffers.
struct CommandOutcome {
  std::uint16_t status = kStatusOk;
  std::uint16_t qualifier = kQualifierOk;
  std::vector<std::uint8_t> result;
};

class AdminCommandEngine {
 public:
  // The readable bytes of a command read at most: a 24-byte header and the largest data
  // vpci defines (a LIST_USE bitmap, or a legacy write's 8-byte header and data).
  static constexpr std::size_t kMaxCommandBytes = 4096;

  explicit AdminCommandEngine(LegacyMembers& members) : members_(members) {}

  // Executes one command: `command` is its device-readable part (any length: missing
  // fields read as zero), `result_room` the bytes the driver left for the result.
  [[nodiscard]] CommandOutcome execute(std::span<const std::uint8_t> command,
                                       std::size_t result_room);
  // Serves every command waiting on the admin queue, in order, then notifies the driver.
  void serve(Virtqueue& queue);
  // Device reset: the in-use list goes back to {LIST_QUERY, LIST_USE}.
  void reset() { in_use_ = kAlwaysInUse; }

  // Opcodes vpci implements (bit n = opcode n) and those the driver enabled by LIST_USE.
  [[nodiscard]] static constexpr std::uint64_t supported() { return kSupported; }
  [[nodiscard]] std::uint64_t in_use() const { return in_use_; }
  // Called after each command served from the queue.
  void set_observer(std::function<void(const CommandRecord&)> observer) {
    observer_ = std::move(observer);
  }

 private:
  static constexpr std::uint64_t kAlwaysInUse = opcode_bit(kListQuery) | opcode_bit(kListUse);
  static constexpr std::uint64_t kSupported =
      kAlwaysInUse | opcode_bit(kLegacyCommonCfgWrite) | opcode_bit(kLegacyCommonCfgRead) |
      opcode_bit(kLegacyDevCfgWrite) | opcode_bit(kLegacyDevCfgRead) |
      opcode_bit(kLegacyNotifyInfo);

  [[nodiscard]] CommandOutcome list_use(std::span<const std::uint8_t> data);
  [[nodiscard]] CommandOutcome legacy_write(std::uint64_t member, LegacyRegion region,
                                            std::span<const std::uint8_t> data);
  [[nodiscard]] CommandOutcome legacy_read(std::uint64_t member, LegacyRegion region,
                                           std::span<const std::uint8_t> data,
                                           std::size_t result_room);
  [[nodiscard]] CommandOutcome notify_info(std::uint64_t member, std::size_t result_room);

  LegacyMembers& members_;
  std::uint64_t in_use_ = kAlwaysInUse;
  std::function<void(const CommandRecord&)> observer_;
};

// "LEGACY_COMMON_CFG_READ" for tracing; "opcode 0x2a" for the ones vpci does not know.
[[nodiscard]] std::string opcode_name(std::uint16_t opcode);
// "EINVAL/INVALID_MEMBER" and the like.
[[nodiscard]] std::string status_name(std::uint16_t status, std::uint16_t qualifier);

}  // namespace vpci::virtio::admin
