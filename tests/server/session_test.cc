// VfioUserSession without sockets: the framing checks the socket layer relies on, and
// the device lifecycle calls a session makes.
#include "server/session.h"

#include <cstring>

#include <gtest/gtest.h>

#include "server/scratch_function.h"

namespace vpci::server {
namespace {

using namespace vfio_user;

IncomingMessage message(std::uint16_t command, std::vector<std::uint8_t> payload,
                        std::uint32_t size_adjust = 0) {
  IncomingMessage m;
  m.bytes.resize(kHeaderSize + payload.size());
  if (!payload.empty()) std::memcpy(m.bytes.data() + kHeaderSize, payload.data(), payload.size());
  encode_header(m.bytes,
                Header{7, command, static_cast<std::uint32_t>(m.bytes.size()) + size_adjust,
                       kTypeCommand, 0});
  return m;
}

std::vector<std::uint8_t> version_payload() {
  return {0, 0, 0, 0};
}

TEST(SessionTest, FramingErrorsAskToClose) {
  ScratchFunction function;
  VfioUserSession session(function, function.guest_memory());
  IncomingMessage short_message;
  short_message.bytes = {1, 2, 3};
  EXPECT_TRUE(session.handle(std::move(short_message)).close_connection);
  EXPECT_TRUE(session.handle(message(kVersion, version_payload(), 4)).close_connection);
  const DispatchResult ok = session.handle(message(kVersion, version_payload()));
  EXPECT_FALSE(ok.close_connection);
  ASSERT_TRUE(ok.reply.has_value());
  const Header reply = decode_header(*ok.reply);
  EXPECT_EQ(reply.msg_id, 7);
  EXPECT_EQ(reply.flags, kTypeReply);
  EXPECT_EQ(reply.message_size, ok.reply->size());
}

TEST(SessionTest, LifecycleCallsReachTheFunction) {
  ScratchFunction function;
  {
    VfioUserSession session(function, function.guest_memory());
    EXPECT_TRUE(function.is_connected());
    EXPECT_TRUE(session.handle(message(kVersion, version_payload())).reply.has_value());
    // An fd-less DMA map is recorded and reported.
    std::vector<std::uint8_t> map(kDmaMapSize, 0);
    store(map, 0, std::uint32_t{kDmaMapSize});
    store(map, 4, kDmaMapRead);
    store(map, 16, std::uint64_t{0x1000});
    store(map, 24, std::uint64_t{0x1000});
    const DispatchResult result = session.handle(message(kDmaMap, map));
    ASSERT_TRUE(result.reply.has_value());
    EXPECT_EQ(decode_header(*result.reply).flags & kFlagError, 0u) << session.last_error();
    // It reaches the device's memory as a message-backed region: no host mapping, so
    // zero-copy access is refused while copies go through DMA_READ/DMA_WRITE.
    const auto memory = function.guest_memory()->snapshot();
    ASSERT_EQ(memory->regions().size(), 1u);
    EXPECT_EQ(memory->regions()[0]->host(), nullptr);
    EXPECT_FALSE(memory->all_host_mapped());
    EXPECT_FALSE(memory->host_buffers(0x1000, 4, virtio::Access::kRead).has_value());
    EXPECT_EQ(session.dma_maps().unshared_count(), 1u);
  }
  EXPECT_FALSE(function.is_connected());
  EXPECT_TRUE(function.guest_memory()->snapshot()->regions().empty());
  EXPECT_EQ(function.reset_count(), 1u);
}

TEST(SessionTest, ErrnoMapping) {
  EXPECT_EQ(errno_for(ErrorCode::kAlreadyExists), EEXIST);
  EXPECT_EQ(errno_for(ErrorCode::kUnsupported), ENOTSUP);
  EXPECT_EQ(errno_for(ErrorCode::kOutOfRange), EINVAL);
}

}  // namespace
}  // namespace vpci::server
