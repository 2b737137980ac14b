// Administration commands, device side (virtio/admin_commands.h): every status and
// qualifier rule, the buffer rules, LIST_QUERY/LIST_USE, the legacy commands against a
// recording owner, and the admin queue itself with chains cut anywhere.
#include "virtio/admin_commands.h"

#include <cstring>
#include <map>

#include <gtest/gtest.h>

#include "tests/virtio/fake_driver.h"
#include "virtio/spec.h"

namespace vpci::virtio::admin {
namespace {

using virtio::testing::ChainBuilder;
using virtio::testing::FakeGuestRam;
using virtio::testing::RecordingQueueSink;
using virtio::testing::SplitRing;

// An owner with `vfs` members, each with a 24-byte common region (fields of 1, 2 or 4
// bytes as in §4.1.4.8) and an 8-byte device region of byte fields. Accesses are recorded;
// anything not a single field in range is refused without effect.
class RecordingMembers final : public LegacyMembers {
 public:
  struct Access {
    std::uint64_t member;
    LegacyRegion region;
    std::uint32_t offset;
    std::vector<std::uint8_t> bytes;
    bool write;
  };

  [[nodiscard]] bool group_enabled() const override { return enabled; }
  [[nodiscard]] std::uint64_t member_count() const override { return enabled ? vfs : 0; }
  Status legacy_write(std::uint64_t member, LegacyRegion region, std::uint32_t offset,
                      std::span<const std::uint8_t> data) override {
    VPCI_TRY(check(region, offset, data.size()));
    accesses.push_back(Access{member, region, offset, {data.begin(), data.end()}, true});
    auto& bytes = registers[member];
    bytes.resize(64);
    std::copy(data.begin(), data.end(), bytes.begin() + base(region) + offset);
    return {};
  }
  Status legacy_read(std::uint64_t member, LegacyRegion region, std::uint32_t offset,
                     std::span<std::uint8_t> out) override {
    VPCI_TRY(check(region, offset, out.size()));
    auto& bytes = registers[member];
    bytes.resize(64);
    std::copy_n(bytes.begin() + base(region) + offset, out.size(), out.begin());
    accesses.push_back(Access{member, region, offset, {out.begin(), out.end()}, false});
    return {};
  }
  std::vector<NotifyInfoEntry> legacy_notify_info(std::uint64_t member) override {
    NotifyInfoEntry entry{};
    entry.flags = kNotifyMemberBar;
    entry.bar = 2;
    entry.offset = 0x1000 + 2 * member;
    return {entry};
  }

  bool enabled = true;
  std::uint64_t vfs = 2;
  std::vector<Access> accesses;
  std::map<std::uint64_t, std::vector<std::uint8_t>> registers;

 private:
  static std::size_t base(LegacyRegion region) { return region == LegacyRegion::kCommon ? 0 : 32; }
  static Status check(LegacyRegion region, std::uint32_t offset, std::size_t width) {
    if (region == LegacyRegion::kDevice) {
      if (width == 1 && offset < 8) return {};
    } else {
      static const std::map<std::uint32_t, std::size_t> kFields = {
          {0, 4}, {4, 4}, {8, 4}, {12, 2}, {14, 2}, {16, 2}, {18, 1}, {19, 1}, {20, 2}, {22, 2}};
      const auto field = kFields.find(offset);
      if (field != kFields.end() && field->second == width) return {};
    }
    return make_error(ErrorCode::kInvalidArgument, "not a single field");
  }
};

// resize + memcpy: GCC 12 at -O3 reports a false -Warray-bounds on vector::insert.
void append(std::vector<std::uint8_t>& to, std::span<const std::uint8_t> bytes) {
  const std::size_t at = to.size();
  to.resize(at + bytes.size());
  if (!bytes.empty()) std::memcpy(to.data() + at, bytes.data(), bytes.size());
}

// A command's readable part: header, then data.
std::vector<std::uint8_t> command(std::uint16_t opcode, std::uint64_t member,
                                  std::vector<std::uint8_t> data = {},
                                  std::uint16_t group = kGroupSrIov) {
  CommandHeader header{};
  header.opcode = to_le(opcode);
  header.group_type = to_le(group);
  header.group_member_id = to_le(member);
  std::vector<std::uint8_t> bytes(sizeof(header));
  std::memcpy(bytes.data(), &header, sizeof(header));
  append(bytes, data);
  return bytes;
}

std::vector<std::uint8_t> bitmap(std::uint64_t bits) {
  std::vector<std::uint8_t> bytes(8);
  const std::uint64_t le = to_le(bits);
  std::memcpy(bytes.data(), &le, 8);
  return bytes;
}

std::vector<std::uint8_t> legacy_write_data(std::uint8_t offset, std::vector<std::uint8_t> bytes) {
  std::vector<std::uint8_t> data(sizeof(LegacyWriteHeader), 0);
  data[0] = offset;
  append(data, bytes);
  return data;
}

constexpr std::uint64_t kLegacyBits = 0x7c;  // opcodes 2..6, as Linux's LIST_USE sends them

class AdminCommandsTest : public ::testing::Test {
 protected:
  CommandOutcome run(const std::vector<std::uint8_t>& bytes, std::size_t room = 64) {
    return engine.execute(bytes, room);
  }
  void enable_legacy() {
    ASSERT_EQ(run(command(kListUse, 0, bitmap(kLegacyBits))).status, kStatusOk);
  }
  static void expect_einval(const CommandOutcome& outcome, std::uint16_t qualifier) {
    EXPECT_EQ(outcome.status, kStatusEinval);
    EXPECT_EQ(outcome.qualifier, qualifier) << status_name(outcome.status, outcome.qualifier);
    EXPECT_TRUE(outcome.result.empty());
  }

  RecordingMembers members;
  AdminCommandEngine engine{members};
};

TEST_F(AdminCommandsTest, GroupIsCheckedFirstThenOpcodeThenMember) {
  // Wrong group, with an opcode not in use and member 0: the group is reported.
  expect_einval(run(command(kLegacyCommonCfgRead, 0, {}, /*group=*/0)), kQualifierInvalidGroup);
  expect_einval(run(command(kListQuery, 0, {}, /*group=*/2)), kQualifierInvalidGroup);
  // Right group, a legacy opcode before LIST_USE enabled it, bad member: the opcode.
  expect_einval(run(command(kLegacyCommonCfgRead, 99, {0})), kQualifierInvalidOpcode);
  enable_legacy();
  // Now the member: 0 is the owner, not a member; NumVFs + 1 does not exist.
  expect_einval(run(command(kLegacyCommonCfgRead, 0, {18}), 1), kQualifierInvalidMember);
  expect_einval(run(command(kLegacyCommonCfgRead, 3, {18}), 1), kQualifierInvalidMember);
  EXPECT_EQ(run(command(kLegacyCommonCfgRead, 2, {18}), 1).status, kStatusOk);
  // Opcodes vpci does not implement, below and above the bitmap's reach.
  expect_einval(run(command(0x7, 1)), kQualifierInvalidOpcode);
  expect_einval(run(command(0x40, 1)), kQualifierInvalidOpcode);
  expect_einval(run(command(0xffff, 1)), kQualifierInvalidOpcode);
  EXPECT_EQ(members.accesses.size(), 1u);  // only the one valid read reached a member
}

TEST_F(AdminCommandsTest, ListQueryReportsTheSupportedOpcodesTruncatedToTheRoom) {
  auto outcome = run(command(kListQuery, 0));
  EXPECT_EQ(outcome.status, kStatusOk);
  ASSERT_EQ(outcome.result.size(), 8u);
  EXPECT_EQ(outcome.result, bitmap(0x7f));  // 0 and 1 always, 2..6 legacy
  // A 3-byte result buffer gets the first 3 bytes; no room at all is not an error.
  outcome = run(command(kListQuery, 0), 3);
  EXPECT_EQ(outcome.status, kStatusOk);
  EXPECT_EQ(outcome.result, std::vector<std::uint8_t>({0x7f, 0, 0}));
  EXPECT_EQ(run(command(kListQuery, 0), 0).status, kStatusOk);
}

TEST_F(AdminCommandsTest, ListUseRefusesUnsupportedOpcodesWithoutSideEffects) {
  enable_legacy();
  EXPECT_EQ(engine.in_use(), kLegacyBits);
  // Bit 7 (not supported): the whole list is refused, the previous one stays.
  expect_einval(run(command(kListUse, 0, bitmap(kLegacyBits | 0x80))), kQualifierInvalidField);
  EXPECT_EQ(engine.in_use(), kLegacyBits);
  // A second word with any bit set names opcodes 64+: refused too.
  auto two_words = bitmap(0x3);
  append(two_words, bitmap(1));
  expect_einval(run(command(kListUse, 0, two_words)), kQualifierInvalidField);
  EXPECT_EQ(engine.in_use(), kLegacyBits);
  // A list without LIST_QUERY/LIST_USE (Linux sends one) leaves both usable.
  EXPECT_EQ(run(command(kListQuery, 0)).status, kStatusOk);
  EXPECT_EQ(run(command(kListUse, 0, bitmap(0x4))).status, kStatusOk);
  expect_einval(run(command(kLegacyCommonCfgRead, 1, {18}), 1), kQualifierInvalidOpcode);
  // A missing bitmap reads as zero: nothing but the list commands in use.
  EXPECT_EQ(run(command(kListUse, 0)).status, kStatusOk);
  EXPECT_EQ(engine.in_use(), 0u);
  // Reset goes back to {LIST_QUERY, LIST_USE}.
  enable_legacy();
  engine.reset();
  EXPECT_EQ(engine.in_use(), 0x3u);
  expect_einval(run(command(kLegacyDevCfgRead, 1, {0}), 1), kQualifierInvalidOpcode);
}

// The documented deviation: Linux lists and enables commands at DRIVER_OK, before VF
// Enable; the member commands still need the group.
TEST_F(AdminCommandsTest, ListCommandsWorkBeforeVfEnableMemberCommandsDoNot) {
  members.enabled = false;
  EXPECT_EQ(run(command(kListQuery, 0)).status, kStatusOk);
  EXPECT_EQ(run(command(kListUse, 0, bitmap(kLegacyBits))).status, kStatusOk);
  expect_einval(run(command(kLegacyCommonCfgRead, 1, {18}), 1), kQualifierInvalidGroup);
  expect_einval(run(command(kLegacyNotifyInfo, 1)), kQualifierInvalidGroup);
  members.enabled = true;
  EXPECT_EQ(run(command(kLegacyCommonCfgRead, 1, {18}), 1).status, kStatusOk);
}

TEST_F(AdminCommandsTest, LegacyWritesTakeOffsetAndWidthFromTheData) {
  enable_legacy();
  // 2 bytes at 14 (queue select) of VF 2; a 4-byte write at 4 (guest features) of VF 1.
  EXPECT_EQ(run(command(kLegacyCommonCfgWrite, 2, legacy_write_data(14, {3, 0}))).status,
            kStatusOk);
  EXPECT_EQ(run(command(kLegacyCommonCfgWrite, 1, legacy_write_data(4, {1, 2, 3, 4}))).status,
            kStatusOk);
  EXPECT_EQ(run(command(kLegacyDevCfgWrite, 1, legacy_write_data(5, {0xaa}))).status, kStatusOk);
  ASSERT_EQ(members.accesses.size(), 3u);
  EXPECT_EQ(members.accesses[0].member, 2u);
  EXPECT_EQ(members.accesses[0].offset, 14u);
  EXPECT_EQ(members.accesses[0].bytes, std::vector<std::uint8_t>({3, 0}));
  EXPECT_EQ(members.accesses[1].bytes.size(), 4u);
  EXPECT_EQ(members.accesses[2].region, LegacyRegion::kDevice);
  // Multi-field (4 bytes at 18: status + ISR + vector), misaligned, beyond the region,
  // or no data at all: INVALID_FIELD, and the member saw nothing.
  for (const auto& bad :
       {legacy_write_data(18, {1, 2, 3, 4}), legacy_write_data(13, {1, 2}),
        legacy_write_data(200, {1}), legacy_write_data(4, {}), std::vector<std::uint8_t>{4}}) {
    expect_einval(run(command(kLegacyCommonCfgWrite, 1, bad)), kQualifierInvalidField);
  }
  EXPECT_EQ(members.accesses.size(), 3u);
}

TEST_F(AdminCommandsTest, LegacyReadsTakeTheirWidthFromTheResultRoom) {
  enable_legacy();
  ASSERT_TRUE(
      members.legacy_write(1, LegacyRegion::kCommon, 12, std::vector<std::uint8_t>{0x00, 0x01}));
  members.accesses.clear();
  auto outcome = run(command(kLegacyCommonCfgRead, 1, {12}), 2);
  EXPECT_EQ(outcome.status, kStatusOk);
  EXPECT_EQ(outcome.result, std::vector<std::uint8_t>({0x00, 0x01}));
  // The data is the offset byte alone; extra bytes are ignored, a missing one reads 0.
  EXPECT_EQ(run(command(kLegacyCommonCfgRead, 1, {12, 0xff, 0xff}), 2).status, kStatusOk);
  EXPECT_EQ(run(command(kLegacyCommonCfgRead, 1), 4).status, kStatusOk);  // offset 0, 4 bytes
  // A width that is no field (3 bytes, or none) fails without touching the member.
  const std::size_t before = members.accesses.size();
  expect_einval(run(command(kLegacyCommonCfgRead, 1, {12}), 3), kQualifierInvalidField);
  expect_einval(run(command(kLegacyDevCfgRead, 1, {0}), 0), kQualifierInvalidField);
  EXPECT_EQ(members.accesses.size(), before);
}

TEST_F(AdminCommandsTest, NotifyInfoListsTheMemberEntryThenEnds) {
  enable_legacy();
  auto outcome = run(command(kLegacyNotifyInfo, 2), 64);
  EXPECT_EQ(outcome.status, kStatusOk);
  ASSERT_EQ(outcome.result.size(), 64u);
  NotifyInfoEntry first{};
  std::memcpy(&first, outcome.result.data(), sizeof(first));
  EXPECT_EQ(first.flags, kNotifyMemberBar);
  EXPECT_EQ(first.bar, 2);
  EXPECT_EQ(from_le(first.offset), 0x1004u);
  EXPECT_EQ(outcome.result[16], kNotifyEnd);  // the second entry ends the list
  // Truncated to the room the driver gave: 20 bytes.
  EXPECT_EQ(run(command(kLegacyNotifyInfo, 2), 20).result.size(), 20u);
}

TEST(OpcodeNames, ForTheTrace) {
  EXPECT_EQ(opcode_name(kLegacyDevCfgRead), "LEGACY_DEV_CFG_READ");
  EXPECT_EQ(opcode_name(0x2a), "opcode 0x2a");
  EXPECT_EQ(status_name(kStatusOk, kQualifierOk), "OK");
  EXPECT_EQ(status_name(kStatusEinval, kQualifierInvalidMember), "EINVAL/INVALID_MEMBER");
}

// The queue: commands cut anywhere across descriptors, odd buffer sizes, in-order
// completion with one notification for the batch, honest used lengths.
class AdminQueueTest : public ::testing::Test {
 protected:
  void SetUp() override {
    driver = std::make_unique<SplitRing>(ram, 16);
    queue = std::make_unique<Virtqueue>(0, 16);
    ASSERT_TRUE(queue->set_layout(driver->layout()));
    ASSERT_TRUE(
        queue->enable(memory, RingFormat::kSplit, {.event_idx = false, .indirect = true}, &sink));
  }
  std::shared_ptr<GuestMemory> memory = std::make_shared<GuestMemory>();
  FakeGuestRam ram{memory, 0x100000, 1 << 20};
  RecordingQueueSink sink;
  std::unique_ptr<SplitRing> driver;
  std::unique_ptr<Virtqueue> queue;
  RecordingMembers members;
  AdminCommandEngine engine{members};
};

TEST_F(AdminQueueTest, CommandsGatheredAcrossDescriptorsCompleteInOrder) {
  std::vector<CommandRecord> trace;
  engine.set_observer([&](const CommandRecord& r) { trace.push_back(r); });
  // LIST_USE with the header cut after 5 and 19 bytes, and the bitmap in its own buffer.
  const auto use = command(kListUse, 0, bitmap(kLegacyBits));
  ChainBuilder list_use(ram);
  list_use.readable(std::span(use).subspan(0, 5))
      .readable(std::span(use).subspan(5, 14))
      .readable(std::span(use).subspan(19))
      .writable(8);
  driver->add(list_use);
  // A 2-byte read of VF 1's queue size with the status and result in one 10-byte buffer.
  ASSERT_TRUE(
      members.legacy_write(1, LegacyRegion::kCommon, 12, std::vector<std::uint8_t>{0x00, 0x01}));
  ChainBuilder read(ram);
  read.readable(command(kLegacyCommonCfgRead, 1, {12})).writable(3).writable(7);
  driver->add(read);
  // A bad member with room for only 3 bytes of status: used length 3.
  ChainBuilder bad(ram);
  bad.readable(command(kLegacyNotifyInfo, 9)).writable(3);
  driver->add(bad);
  engine.serve(*queue);

  auto first = driver->pop_used();
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->length, 8u);
  EXPECT_EQ(list_use.written_bytes(), std::vector<std::uint8_t>(8, 0));  // OK/OK
  auto second = driver->pop_used();
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->length, 10u);
  EXPECT_EQ(read.written_bytes(), std::vector<std::uint8_t>({0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x01}));
  auto third = driver->pop_used();
  ASSERT_TRUE(third.has_value());
  EXPECT_EQ(third->length, 3u);
  EXPECT_EQ(bad.written_bytes(),
            std::vector<std::uint8_t>({kStatusEinval, 0, kQualifierInvalidMember}));
  EXPECT_EQ(sink.notifications.size(), 1u);  // one interrupt for the batch
  ASSERT_EQ(trace.size(), 3u);
  EXPECT_EQ(trace[2].member, 9u);
  EXPECT_EQ(trace[2].qualifier, kQualifierInvalidMember);
  EXPECT_EQ(trace[1].used_length, 10u);
}

TEST_F(AdminQueueTest, ACommandWithNoWritableBufferCompletesWithNothingWritten) {
  ChainBuilder query(ram);
  query.readable(command(kListQuery, 0));
  driver->add(query);
  ChainBuilder empty(ram);
  empty.writable(16);  // no readable part: every field reads as zero → group 0
  driver->add(empty);
  engine.serve(*queue);
  auto first = driver->pop_used();
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->length, 0u);
  auto second = driver->pop_used();
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->length, 8u);
  const auto status = empty.written_bytes();
  EXPECT_EQ(status.at(0), kStatusEinval);
  EXPECT_EQ(status.at(2), kQualifierInvalidGroup);
  EXPECT_FALSE(queue->failed());
}

}  // namespace
}  // namespace vpci::virtio::admin
