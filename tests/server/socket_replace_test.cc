// Which socket files a VfioUserServer may take over and remove: a stale one (nothing
// listens) is replaced, a live one is refused, and only the file this server bound is
// removed when it goes.
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "server/scratch_function.h"
#include "server/socket_server.h"
#include "tests/server/test_client.h"
#include "tests/support/scratch_dir.h"

namespace vpci::server {
namespace {

using ::testing::HasSubstr;
using testing::TestClient;

class SocketReplaceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(scratch_.valid());
    dir_ = scratch_.path();
    path_ = (dir_ / "dev.sock").string();
  }

  // True if a client can connect and negotiate on `path_`.
  [[nodiscard]] bool answers() const {
    auto client = TestClient::connect(path_);
    return client.has_value() && client->negotiate();
  }

  vpci::testing::ScratchDir scratch_{"socket-replace-test"};
  std::filesystem::path dir_;
  std::string path_;
  ScratchFunction function_;
};

TEST_F(SocketReplaceTest, ALiveSocketIsRefusedAndKeepsServing) {
  auto first = VfioUserServer::create(path_, function_, function_.guest_memory());
  ASSERT_TRUE(first.has_value()) << first.error().message;
  (*first)->start();
  ScratchFunction other;
  auto second = VfioUserServer::create(path_, other, other.guest_memory());
  ASSERT_FALSE(second.has_value());
  EXPECT_EQ(second.error().code, ErrorCode::kConflict);
  EXPECT_THAT(second.error().message,
              HasSubstr("socket " + path_ + " is in use by a running server"));
  EXPECT_TRUE(std::filesystem::is_socket(path_));
  EXPECT_TRUE(answers());
}

TEST_F(SocketReplaceTest, AStaleSocketFileIsReplaced) {
  {
    // A socket bound and closed leaves its file behind, with nobody listening.
    const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path_.c_str(), path_.size() + 1);
    ASSERT_EQ(::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)), 0);
    ::close(fd);
  }
  ASSERT_TRUE(std::filesystem::is_socket(path_));
  auto server = VfioUserServer::create(path_, function_, function_.guest_memory());
  ASSERT_TRUE(server.has_value()) << server.error().message;
  (*server)->start();
  EXPECT_TRUE(answers());
  server->reset();
  EXPECT_FALSE(std::filesystem::exists(path_));
}

TEST_F(SocketReplaceTest, OnlyTheSocketThisServerBoundIsRemoved) {
  auto server = VfioUserServer::create(path_, function_, function_.guest_memory());
  ASSERT_TRUE(server.has_value()) << server.error().message;
  (*server)->start();
  // Someone removes the file and puts another one there meanwhile.
  std::filesystem::remove(path_);
  std::ofstream(path_) << "not yours";
  server->reset();
  EXPECT_TRUE(std::filesystem::exists(path_));
  EXPECT_FALSE(VfioUserServer::create(path_, function_, function_.guest_memory())
                   .has_value());  // not a socket
}

}  // namespace
}  // namespace vpci::server
