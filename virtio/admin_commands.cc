#include "virtio/admin_commands.h"

#include <algorithm>
#include <array>
#include <cstring>

#include <fmt/format.h>

#include "virtio/spec.h"

namespace vpci::virtio::admin {
namespace {

CommandOutcome failed(std::uint16_t qualifier) {
  return CommandOutcome{kStatusEinval, qualifier, {}};
}

// The command-specific bytes after the header, or none.
std::span<const std::uint8_t> data_of(std::span<const std::uint8_t> command) {
  return command.size() > sizeof(CommandHeader) ? command.subspan(sizeof(CommandHeader))
                                                : std::span<const std::uint8_t>{};
}

// A little-endian field at `offset` of `bytes`, zero where the driver supplied nothing
// (§2.12.1: missing fields read as zero).
template <typename T>
T field_or_zero(std::span<const std::uint8_t> bytes, std::size_t offset) {
  std::array<std::uint8_t, sizeof(T)> raw{};
  if (offset < bytes.size()) {
    std::copy_n(bytes.begin() + static_cast<std::ptrdiff_t>(offset),
                std::min(sizeof(T), bytes.size() - offset), raw.begin());
  }
  T value{};
  std::memcpy(&value, raw.data(), sizeof(T));
  return from_le(value);
}

bool uses_member(std::uint16_t opcode) {
  return opcode >= kLegacyCommonCfgWrite && opcode <= kLegacyNotifyInfo;
}

}  // namespace

CommandOutcome AdminCommandEngine::execute(std::span<const std::uint8_t> command,
                                           std::size_t result_room) {
  const auto opcode = field_or_zero<std::uint16_t>(command, offsetof(CommandHeader, opcode));
  const auto group = field_or_zero<std::uint16_t>(command, offsetof(CommandHeader, group_type));
  const auto member =
      field_or_zero<std::uint64_t>(command, offsetof(CommandHeader, group_member_id));
  const std::span<const std::uint8_t> data = data_of(command);

  // §2.12.1: the group first, then the opcode against the in-use list, then the member.
  if (group != kGroupSrIov) return failed(kQualifierInvalidGroup);
  // The deviation (admin_commands.h): the list commands work before VF Enable.
  const bool list_command = opcode == kListQuery || opcode == kListUse;
  if (!members_.group_enabled() && !list_command) return failed(kQualifierInvalidGroup);
  if (opcode >= kOpcodeLimit || ((in_use_ | kAlwaysInUse) & opcode_bit(opcode)) == 0)
    return failed(kQualifierInvalidOpcode);
  if (uses_member(opcode) && (member == 0 || member > members_.member_count()))
    return failed(kQualifierInvalidMember);

  switch (opcode) {
    case kListQuery: {
      std::array<std::uint8_t, sizeof(std::uint64_t)> bytes{};
      const std::uint64_t bits = to_le(kSupported);
      std::memcpy(bytes.data(), &bits, sizeof(bits));
      CommandOutcome outcome;
      outcome.result.assign(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(std::min(
                                                               bytes.size(), result_room)));
      return outcome;
    }
    case kListUse: return list_use(data);
    case kLegacyCommonCfgWrite: return legacy_write(member, LegacyRegion::kCommon, data);
    case kLegacyDevCfgWrite: return legacy_write(member, LegacyRegion::kDevice, data);
    case kLegacyCommonCfgRead: return legacy_read(member, LegacyRegion::kCommon, data, result_room);
    case kLegacyDevCfgRead: return legacy_read(member, LegacyRegion::kDevice, data, result_room);
    case kLegacyNotifyInfo: return notify_info(member, result_room);
    default: return failed(kQualifierInvalidOpcode);  // in use but unknown: impossible
  }
}

CommandOutcome AdminCommandEngine::list_use(std::span<const std::uint8_t> data) {
  // §2.12.1.1: le64 words, bit n = opcode n; any bit vpci does not support refuses the
  // whole list and leaves the in-use list as it was.
  std::uint64_t wanted = 0;
  for (std::size_t word = 0; word * 8 < data.size(); ++word) {
    const auto bits = field_or_zero<std::uint64_t>(data, word * 8);
    if (word == 0) {
      wanted = bits;
    } else if (bits != 0) {
      return failed(kQualifierInvalidField);
    }
  }
  if ((wanted & ~kSupported) != 0) return failed(kQualifierInvalidField);
  in_use_ = wanted;
  return {};
}

CommandOutcome AdminCommandEngine::legacy_write(std::uint64_t member, LegacyRegion region,
                                                std::span<const std::uint8_t> data) {
  // §2.12.1.2: u8 offset, u8 reserved[7], then the bytes to write (their count is the
  // access width).
  const auto offset = field_or_zero<std::uint8_t>(data, offsetof(LegacyWriteHeader, offset));
  const std::span<const std::uint8_t> bytes = data.size() > sizeof(LegacyWriteHeader)
                                                  ? data.subspan(sizeof(LegacyWriteHeader))
                                                  : std::span<const std::uint8_t>{};
  if (!members_.legacy_write(member, region, offset, bytes)) return failed(kQualifierInvalidField);
  return {};
}

CommandOutcome AdminCommandEngine::legacy_read(std::uint64_t member, LegacyRegion region,
                                               std::span<const std::uint8_t> data,
                                               std::size_t result_room) {
  // §2.12.1.2: the data is the offset byte; the read width is the result buffer's length.
  const auto offset = field_or_zero<std::uint8_t>(data, 0);
  CommandOutcome outcome;
  outcome.result.resize(result_room);
  if (!members_.legacy_read(member, region, offset, outcome.result))
    return failed(kQualifierInvalidField);
  return outcome;
}

CommandOutcome AdminCommandEngine::notify_info(std::uint64_t member, std::size_t result_room) {
  std::vector<NotifyInfoEntry> entries = members_.legacy_notify_info(member);
  entries.resize(std::min<std::size_t>(entries.size(), kNotifyInfoEntries));
  // All four entries are returned; unused ones are zero (flags 0 ends the list).
  std::array<std::uint8_t, kNotifyInfoEntries * sizeof(NotifyInfoEntry)> bytes{};
  for (std::size_t i = 0; i < entries.size(); ++i) {
    NotifyInfoEntry wire = entries[i];
    wire.offset = to_le(wire.offset);
    std::memcpy(bytes.data() + i * sizeof(NotifyInfoEntry), &wire, sizeof(wire));
  }
  CommandOutcome outcome;
  outcome.result.assign(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(
                                                           std::min(bytes.size(), result_room)));
  return outcome;
}

void AdminCommandEngine::serve(Virtqueue& queue) {
  while (auto chain = queue.pop()) {
    std::vector<std::uint8_t> command(static_cast<std::size_t>(
        std::min<std::uint64_t>(chain->readable_bytes(), kMaxCommandBytes)));
    if (!chain->reader().read(command)) {
      chain->fail(Error{ErrorCode::kProtocolViolation, "cannot read an admin command"});
      return;
    }
    const std::uint64_t writable = chain->writable_bytes();
    const std::size_t result_room = writable > sizeof(CommandStatus)
                                        ? static_cast<std::size_t>(std::min<std::uint64_t>(
                                              writable - sizeof(CommandStatus), kMaxCommandBytes))
                                        : 0;
    const CommandOutcome outcome = execute(command, result_room);

    // Status and qualifier, then the result, each cut to the room given (§2.12.1).
    std::vector<std::uint8_t> reply(sizeof(CommandStatus), 0);
    const std::uint16_t status = to_le(outcome.status);
    const std::uint16_t qualifier = to_le(outcome.qualifier);
    std::memcpy(reply.data() + offsetof(CommandStatus, status), &status, 2);
    std::memcpy(reply.data() + offsetof(CommandStatus, status_qualifier), &qualifier, 2);
    // resize + memcpy: GCC 12 at -O3 reports a false -Warray-bounds on vector::insert.
    reply.resize(sizeof(CommandStatus) + outcome.result.size());
    if (!outcome.result.empty())
      std::memcpy(reply.data() + sizeof(CommandStatus), outcome.result.data(),
                  outcome.result.size());
    reply.resize(static_cast<std::size_t>(std::min<std::uint64_t>(reply.size(), writable)));
    if (!chain->writer().write(reply)) {
      chain->fail(Error{ErrorCode::kProtocolViolation, "cannot write an admin command's status"});
      return;
    }
    const auto used = static_cast<std::uint32_t>(reply.size());
    if (observer_) {
      observer_(CommandRecord{
          field_or_zero<std::uint16_t>(command, offsetof(CommandHeader, opcode)),
          field_or_zero<std::uint16_t>(command, offsetof(CommandHeader, group_type)),
          field_or_zero<std::uint64_t>(command, offsetof(CommandHeader, group_member_id)),
          outcome.status, outcome.qualifier, used});
    }
    chain->complete(used);
  }
  queue.notify_driver_if_needed();
}

std::string opcode_name(std::uint16_t opcode) {
  switch (opcode) {
    case kListQuery: return "LIST_QUERY";
    case kListUse: return "LIST_USE";
    case kLegacyCommonCfgWrite: return "LEGACY_COMMON_CFG_WRITE";
    case kLegacyCommonCfgRead: return "LEGACY_COMMON_CFG_READ";
    case kLegacyDevCfgWrite: return "LEGACY_DEV_CFG_WRITE";
    case kLegacyDevCfgRead: return "LEGACY_DEV_CFG_READ";
    case kLegacyNotifyInfo: return "LEGACY_NOTIFY_INFO";
    default: return fmt::format("opcode {:#x}", opcode);
  }
}

std::string status_name(std::uint16_t status, std::uint16_t qualifier) {
  auto status_text = [&]() -> std::string {
    switch (status) {
      case kStatusOk: return "OK";
      case kStatusEagain: return "EAGAIN";
      case kStatusEnomem: return "ENOMEM";
      case kStatusEinval: return "EINVAL";
      default: return fmt::format("status {}", status);
    }
  }();
  if (status == kStatusOk && qualifier == kQualifierOk) return status_text;
  const auto qualifier_text = [&]() -> std::string {
    switch (qualifier) {
      case kQualifierOk: return "OK";
      case kQualifierInvalidCommand: return "INVALID_COMMAND";
      case kQualifierInvalidOpcode: return "INVALID_OPCODE";
      case kQualifierInvalidField: return "INVALID_FIELD";
      case kQualifierInvalidGroup: return "INVALID_GROUP";
      case kQualifierInvalidMember: return "INVALID_MEMBER";
      case kQualifierNoResource: return "NORESOURCE";
      case kQualifierTryAgain: return "TRYAGAIN";
      default: return fmt::format("qualifier {}", qualifier);
    }
  }();
  return status_text + "/" + qualifier_text;
}

}  // namespace vpci::virtio::admin
