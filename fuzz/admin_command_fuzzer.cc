// Fuzzes administration commands (virtio/admin_commands.h): the input is a sequence of
// commands as an admin-queue driver would place them (any readable bytes, any result
// room), against an owner whose members have a legacy register file with single-field
// rules. Every few commands the owner toggles VF Enable or the engine is reset.
// Invariants checked after every command:
//   * the status is OK or EINVAL, the qualifier OK exactly when the status is;
//   * the result never exceeds the room the driver gave, and EINVAL carries none;
//   * EINVAL has no side effect: the in-use list and every member's registers unchanged;
//   * members are only reached with ids 1..NumVFs while VF Enable is set, and only by
//     opcodes the driver enabled with LIST_USE;
//   * LIST_QUERY always reports LIST_QUERY and LIST_USE; the in-use list stays within
//     what LIST_QUERY reports.
//
// Input: per command: u8 framing (bit0-1 room selector, bit2 toggle VF Enable before,
// bit3 reset before), le16 length, then that many command bytes.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <span>
#include <vector>

#include "virtio/admin_commands.h"

namespace {

using namespace vpci;
using namespace vpci::virtio::admin;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "admin_command_fuzzer invariant violated: %s\n", what);
  std::abort();
}

constexpr std::uint64_t kMembers = 3;

// 24 bytes of common registers (fields as in virtio 1.3 §4.1.4.8) and 8 of device
// configuration, per member.
class Members final : public LegacyMembers {
 public:
  [[nodiscard]] bool group_enabled() const override { return enabled; }
  [[nodiscard]] std::uint64_t member_count() const override { return enabled ? kMembers : 0; }
  Status legacy_write(std::uint64_t member, LegacyRegion region, std::uint32_t offset,
                      std::span<const std::uint8_t> data) override {
    check_member(member);
    check_enabled(region == LegacyRegion::kCommon ? kLegacyCommonCfgWrite : kLegacyDevCfgWrite);
    if (!single_field(region, offset, data.size()))
      return make_error(ErrorCode::kInvalidArgument, "not a field");
    auto& bytes = registers_[member];
    for (std::size_t i = 0; i < data.size(); ++i) bytes[base(region) + offset + i] = data[i];
    return {};
  }
  Status legacy_read(std::uint64_t member, LegacyRegion region, std::uint32_t offset,
                     std::span<std::uint8_t> out) override {
    check_member(member);
    check_enabled(region == LegacyRegion::kCommon ? kLegacyCommonCfgRead : kLegacyDevCfgRead);
    if (!single_field(region, offset, out.size()))
      return make_error(ErrorCode::kInvalidArgument, "not a field");
    auto& bytes = registers_[member];
    for (std::size_t i = 0; i < out.size(); ++i) out[i] = bytes[base(region) + offset + i];
    return {};
  }
  std::vector<NotifyInfoEntry> legacy_notify_info(std::uint64_t member) override {
    check_member(member);
    check_enabled(kLegacyNotifyInfo);
    NotifyInfoEntry entry{};
    entry.flags = kNotifyMemberBar;
    entry.bar = 2;
    entry.offset = 0x3000;
    return {entry};
  }
  [[nodiscard]] std::map<std::uint64_t, std::array<std::uint8_t, 32>> registers() const {
    return registers_;
  }

  bool enabled = true;
  std::uint64_t allowed_opcodes = 0;  // the engine's in-use list, checked on every access

 private:
  void check_enabled(std::uint16_t opcode) const {
    if ((allowed_opcodes & opcode_bit(opcode)) == 0)
      fail("a member reached by an opcode not in use");
  }
  void check_member(std::uint64_t member) const {
    if (!enabled) fail("a member reached while VF Enable is clear");
    if (member == 0 || member > kMembers) fail("a member id outside 1..NumVFs");
  }
  static std::size_t base(LegacyRegion region) { return region == LegacyRegion::kCommon ? 0 : 24; }
  static bool single_field(LegacyRegion region, std::uint32_t offset, std::size_t width) {
    if (region == LegacyRegion::kDevice) return width == 1 && offset < 8;
    switch (offset) {
      case 0:
      case 4:
      case 8: return width == 4;
      case 12:
      case 14:
      case 16:
      case 20:
      case 22: return width == 2;
      case 18:
      case 19: return width == 1;
      default: return false;
    }
  }
  std::map<std::uint64_t, std::array<std::uint8_t, 32>> registers_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Members members;
  AdminCommandEngine engine(members);
  std::size_t at = 0;
  for (int commands = 0; at + 3 <= size && commands < 256; ++commands) {
    const std::uint8_t framing = data[at];
    const std::size_t length = data[at + 1] | (std::size_t{data[at + 2]} << 8);
    at += 3;
    const std::span<const std::uint8_t> command(data + at, std::min(length, size - at));
    at += command.size();
    if ((framing & 4) != 0) members.enabled = !members.enabled;
    if ((framing & 8) != 0) engine.reset();
    // Result room: none, a status-sized scrap, a legacy field's width, or plenty.
    static constexpr std::size_t kRooms[] = {0, 1, 2, 64};
    const std::size_t room = kRooms[framing & 3];

    const std::uint64_t in_use_before = engine.in_use();
    const auto registers_before = members.registers();
    members.allowed_opcodes = engine.in_use();
    const CommandOutcome outcome = engine.execute(command, room);
    if (outcome.status != kStatusOk && outcome.status != kStatusEinval)
      fail("status not OK/EINVAL");
    if ((outcome.status == kStatusOk) != (outcome.qualifier == kQualifierOk))
      fail("qualifier disagrees with status");
    if (outcome.result.size() > room) fail("result beyond the room given");
    if (outcome.status == kStatusEinval) {
      if (!outcome.result.empty()) fail("EINVAL with a result");
      if (engine.in_use() != in_use_before) fail("EINVAL changed the in-use list");
      if (members.registers() != registers_before) fail("EINVAL changed a member");
    }
    if ((engine.in_use() & ~AdminCommandEngine::supported()) != 0)
      fail("in-use list beyond the supported one");
  }
  // LIST_QUERY, whatever happened before, reports the two list commands.
  std::vector<std::uint8_t> query(sizeof(CommandHeader), 0);
  query[offsetof(CommandHeader, group_type)] = kGroupSrIov;
  const CommandOutcome listed = engine.execute(query, 8);
  if (listed.status != kStatusOk || listed.result.size() != 8 || (listed.result[0] & 3) != 3)
    fail("LIST_QUERY does not report LIST_QUERY and LIST_USE");
  return 0;
}
