// The message trace: decodes the fields that matter and stays inside truncated input.
#include "server/trace.h"

#include <cstring>

#include <gtest/gtest.h>

#include "server/protocol.h"

namespace vpci::server {
namespace {

using namespace vfio_user;

std::vector<std::uint8_t> message(std::uint16_t command, std::vector<std::uint8_t> payload,
                                  std::uint32_t flags = kTypeCommand) {
  // resize + memcpy: GCC 12 -O3 reports a false -Warray-bounds on vector::insert here.
  std::vector<std::uint8_t> bytes(kHeaderSize + payload.size());
  if (!payload.empty()) std::memcpy(bytes.data() + kHeaderSize, payload.data(), payload.size());
  encode_header(bytes, Header{42, command, static_cast<std::uint32_t>(bytes.size()), flags, 0});
  return bytes;
}

TEST(TraceTest, DescribesRegionAccessesAndPostedWrites) {
  std::vector<std::uint8_t> payload;
  append(payload, std::uint64_t{0xFE0});
  append(payload, std::uint32_t{0});
  append(payload, std::uint32_t{4});
  append(payload, std::uint32_t{0x600});
  EXPECT_EQ(describe_request(message(kRegionWrite, payload, kTypeCommand | kFlagNoReply), 0),
            "<- #42 REGION_WRITE region 0 offset 0xfe0 count 4 data 0x600 (no reply)");
}

TEST(TraceTest, TruncatedMessagesAreDescribedWithoutOverreading) {
  // A DMA_MAP with only 6 payload bytes: the missing fields read as 0.
  EXPECT_EQ(describe_request(message(kDmaMap, {1, 0, 0, 0, 3, 0}), 1),
            "<- #42 DMA_MAP flags 0x0 offset 0x0 iova 0x0 size 0x0 +1 fd");
  const std::vector<std::uint8_t> short_message{1, 2, 3};
  EXPECT_EQ(describe_request(short_message, 0), "<- short message of 3 bytes");
  // A VERSION JSON without its NUL stops at the end of the message.
  EXPECT_EQ(describe_request(message(kVersion, {0, 0, 2, 0, '{', '}'}), 0),
            "<- #42 VERSION 0.2 {}");
}

TEST(TraceTest, ErrorRepliesNameErrnoAndReason) {
  std::vector<std::uint8_t> reply(kHeaderSize);
  encode_header(reply, Header{7, kDmaUnmap, kHeaderSize, kTypeReply | kFlagError, 2});
  EXPECT_EQ(describe_reply(reply, "no such map"),
            "-> #7 DMA_UNMAP error No such file or directory (no such map)");
}

}  // namespace
}  // namespace vpci::server
