// Message-based DMA over a real socket (session.h "Message-based DMA"): the client maps
// guest memory WITHOUT an fd and answers the server's DMA_READ/DMA_WRITE requests in
// the spec layout (u64 count, data at payload offset 16) or QEMU's (u32 count, data at
// 12), while the scratch function's DMA engine moves bytes through GuestMemory.
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <thread>

#include <gtest/gtest.h>

#include "server/scratch_function.h"
#include "server/socket_server.h"
#include "server/vfio_regions.h"
#include "tests/server/test_client.h"

namespace vpci::server {
namespace {

using namespace vfio_user;
using testing::ReplyMessage;
using testing::TestClient;

enum class Layout { kSpec, kQemu };

constexpr std::uint64_t kRamBase = 0x100000;
constexpr std::size_t kRamSize = 0x4000;

std::string socket_path(const std::string& name) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("vpci-dma-test-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  return (dir / name).string();
}

// Sends a reply message with the given payload (and flags/error) for `request`.
void send_reply(TestClient& client, const ReplyMessage& request,
                std::span<const std::uint8_t> payload, std::uint32_t extra_flags = 0,
                std::uint32_t error = 0, std::optional<std::uint16_t> msg_id = std::nullopt) {
  std::vector<std::uint8_t> bytes;
  encode_header(bytes, Header{msg_id.value_or(request.header.msg_id), request.header.command,
                              static_cast<std::uint32_t>(kHeaderSize + payload.size()),
                              kTypeReply | extra_flags, error});
  bytes.insert(bytes.end(), payload.begin(), payload.end());
  ASSERT_TRUE(client.send_raw(bytes));
}

class MessageDmaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = socket_path("scratch.sock");
    auto server = VfioUserServer::create(path_, function_, function_.guest_memory());
    ASSERT_TRUE(server.has_value()) << server.error().message;
    server_ = std::move(*server);
    server_->set_dma_timeout(std::chrono::milliseconds(300));
    server_->start();
    auto client = TestClient::connect(path_);
    ASSERT_TRUE(client.has_value());
    client_.emplace(std::move(*client));
    for (std::size_t i = 0; i < ram_.size(); ++i) ram_[i] = static_cast<std::uint8_t>(i * 7 + 1);
  }

  // Negotiates, maps guest RAM without an fd and turns bus mastering on.
  void attach(std::uint64_t max_data_xfer = 1048576,
              std::uint32_t map_flags = kDmaMapRead | kDmaMapWrite) {
    ASSERT_TRUE(client_->negotiate(max_data_xfer));
    expect_ok(client_->call(kDmaMap, testing::dma_map(map_flags, 0, kRamBase, kRamSize)));
    expect_ok(
        client_->call(kRegionWrite, testing::region_write(kRegionConfig, 0x04, le32(0x0006))));
  }

  static std::vector<std::uint8_t> le32(std::uint32_t v) {
    std::vector<std::uint8_t> b(4);
    std::memcpy(b.data(), &v, 4);
    return b;
  }
  static std::vector<std::uint8_t> le64(std::uint64_t v) {
    std::vector<std::uint8_t> b(8);
    std::memcpy(b.data(), &v, 8);
    return b;
  }
  void expect_ok(const std::optional<ReplyMessage>& reply) {
    ASSERT_TRUE(reply.has_value());
    EXPECT_FALSE(reply->is_error()) << "errno " << reply->header.error;
  }

  // Programs the DMA engine and sends the length write that starts it; returns the
  // REGION_WRITE's msg_id (its reply comes after the DMA).
  std::uint16_t start_dma(std::uint64_t address, std::uint32_t length, bool to_guest) {
    expect_ok(client_->call(kRegionWrite,
                            testing::region_write(0, ScratchFunction::kDmaAddress, le64(address))));
    expect_ok(client_->call(
        kRegionWrite, testing::region_write(0, ScratchFunction::kDmaControl,
                                            le32(to_guest ? ScratchFunction::kDmaToGuest : 0))));
    return client_->send_command(
        kRegionWrite, testing::region_write(0, ScratchFunction::kDmaLength, le32(length)));
  }

  // Answers one server request from ram_ in `layout`; returns its (address, count).
  std::pair<std::uint64_t, std::uint64_t> answer(const ReplyMessage& request, Layout layout) {
    EXPECT_EQ(request.header.flags & kFlagTypeMask, kTypeCommand);
    EXPECT_GE(request.payload.size(), 16u);
    if (request.payload.size() < 12) return {0, 0};
    const auto address = load<std::uint64_t>(request.payload, 0);
    // Decode the request as the client of `layout` would.
    const std::uint64_t count = layout == Layout::kSpec ? load<std::uint64_t>(request.payload, 8)
                                                        : load<std::uint32_t>(request.payload, 8);
    EXPECT_GE(address, kRamBase);
    EXPECT_LE(address - kRamBase + count, kRamSize);
    const std::size_t at = address - kRamBase;
    std::vector<std::uint8_t> payload = le64(address);
    if (layout == Layout::kSpec) {
      const auto c = le64(count);
      payload.insert(payload.end(), c.begin(), c.end());
    } else {
      const auto c = le32(static_cast<std::uint32_t>(count));
      payload.insert(payload.end(), c.begin(), c.end());
    }
    if (request.header.command == kDmaRead) {
      EXPECT_EQ(request.payload.size(), 16u);  // the server always asks with a u64 count
      payload.insert(payload.end(), ram_.begin() + at, ram_.begin() + at + count);
      send_reply(*client_, request, payload);
    } else {
      EXPECT_EQ(request.header.command, kDmaWrite);
      const std::size_t data_at = layout == Layout::kSpec ? 16 : 12;
      EXPECT_EQ(request.payload.size(), data_at + count) << "request not in the client's layout";
      if (request.payload.size() == data_at + count) {
        std::memcpy(ram_.data() + at, request.payload.data() + data_at, count);
      }
      // QEMU replies with the header only; a spec client echoes address and count.
      if (layout == Layout::kQemu) payload.clear();
      send_reply(*client_, request, payload);
    }
    return {address, count};
  }

  // Answers requests until the reply to `msg_id` arrives; returns the requests seen.
  std::vector<std::pair<std::uint16_t, std::pair<std::uint64_t, std::uint64_t>>> serve_until(
      std::uint16_t msg_id, Layout layout) {
    std::vector<std::pair<std::uint16_t, std::pair<std::uint64_t, std::uint64_t>>> seen;
    while (true) {
      auto message = client_->receive();
      EXPECT_TRUE(message.has_value());
      if (!message) return seen;
      if ((message->header.flags & kFlagTypeMask) == kTypeReply) {
        EXPECT_EQ(message->header.msg_id, msg_id);
        EXPECT_FALSE(message->is_error());
        return seen;
      }
      seen.emplace_back(message->header.command, answer(*message, layout));
    }
  }

  std::vector<std::uint8_t> read_bar(std::uint64_t offset, std::uint32_t count) {
    auto reply = client_->call(kRegionRead, testing::region_read(0, offset, count));
    EXPECT_TRUE(reply && !reply->is_error());
    if (!reply || reply->payload.size() != kRegionAccessSize + count) return {};
    return {reply->payload.begin() + kRegionAccessSize, reply->payload.end()};
  }
  std::uint32_t dma_status() {
    const auto bytes = read_bar(ScratchFunction::kDmaStatus, 4);
    std::uint32_t v = 0;
    if (bytes.size() == 4) std::memcpy(&v, bytes.data(), 4);
    return v;
  }

  void read_then_write(Layout layout) {
    attach();
    // Device reads 64 bytes of guest memory: one DMA_READ, answered in `layout`.
    const auto id = start_dma(kRamBase + 0x1000, 64, /*to_guest=*/false);
    const auto seen = serve_until(id, layout);
    ASSERT_EQ(seen.size(), 1u);
    EXPECT_EQ(seen[0].first, kDmaRead);
    EXPECT_EQ(seen[0].second, std::make_pair(kRamBase + 0x1000, std::uint64_t{64}));
    EXPECT_EQ(dma_status(), 1u);
    EXPECT_EQ(read_bar(0, 64),
              std::vector<std::uint8_t>(ram_.begin() + 0x1000, ram_.begin() + 0x1040));

    // Device writes 32 bytes to guest memory: the layout is known now, so one
    // DMA_WRITE in it (answer() checks the data offset).
    std::vector<std::uint8_t> pattern(32);
    for (std::size_t i = 0; i < pattern.size(); ++i)
      pattern[i] = static_cast<std::uint8_t>(0xA0 + i);
    expect_ok(client_->call(kRegionWrite, testing::region_write(0, 0, pattern)));
    const auto id2 = start_dma(kRamBase + 0x2008, 32, /*to_guest=*/true);
    const auto seen2 = serve_until(id2, layout);
    ASSERT_EQ(seen2.size(), 1u);
    EXPECT_EQ(seen2[0].first, kDmaWrite);
    EXPECT_EQ(dma_status(), 1u);
    EXPECT_EQ(std::vector<std::uint8_t>(ram_.begin() + 0x2008, ram_.begin() + 0x2028), pattern);
  }

  std::string path_;
  ScratchFunction function_;
  std::unique_ptr<VfioUserServer> server_;
  std::optional<TestClient> client_;
  std::array<std::uint8_t, kRamSize> ram_{};
};

TEST_F(MessageDmaTest, SpecLayoutReadAndWrite) {
  read_then_write(Layout::kSpec);
}

TEST_F(MessageDmaTest, QemuLayoutReadAndWrite) {
  read_then_write(Layout::kQemu);
}

TEST_F(MessageDmaTest, TransfersAreChunkedByTheClientsMaxDataXferSize) {
  attach(/*max_data_xfer=*/1000);
  // A write first: the layout is unknown, so a 1-byte DMA_READ probe precedes the
  // DMA_WRITEs (QEMU would misplace spec-layout data).
  std::vector<std::uint8_t> pattern(2500);
  for (std::size_t i = 0; i < pattern.size(); ++i) pattern[i] = static_cast<std::uint8_t>(i ^ 0x5A);
  expect_ok(client_->call(kRegionWrite, testing::region_write(0, 0, pattern)));
  const auto id = start_dma(kRamBase + 0x100, 2500, /*to_guest=*/true);
  const auto seen = serve_until(id, Layout::kQemu);
  ASSERT_EQ(seen.size(), 4u);
  EXPECT_EQ(seen[0].first, kDmaRead);
  EXPECT_EQ(seen[0].second, std::make_pair(kRamBase + 0x100, std::uint64_t{1}));
  for (std::size_t i = 1; i < 4; ++i) {
    EXPECT_EQ(seen[i].first, kDmaWrite);
    EXPECT_EQ(seen[i].second.first, kRamBase + 0x100 + 1000 * (i - 1));
    EXPECT_EQ(seen[i].second.second, i < 3 ? 1000u : 500u);
  }
  EXPECT_EQ(dma_status(), 1u);
  EXPECT_EQ(std::vector<std::uint8_t>(ram_.begin() + 0x100, ram_.begin() + 0x100 + 2500), pattern);

  // A read of 4000 bytes: four pieces of at most 1000.
  const auto id2 = start_dma(kRamBase + 0x3000 - 2000, 4000, /*to_guest=*/false);
  const auto seen2 = serve_until(id2, Layout::kQemu);
  ASSERT_EQ(seen2.size(), 4u);
  EXPECT_EQ(dma_status(), 1u);
  EXPECT_EQ(read_bar(0, 4000),
            std::vector<std::uint8_t>(ram_.begin() + 0x3000 - 2000, ram_.begin() + 0x3000 + 2000));
}

// While the device waits for a DMA reply, a register read is answered at once: QEMU's
// vCPU may be waiting for it while holding the lock its DMA_READ handler needs
// (server/socket_server.cc, Connection). A map waits until the current command is done.
// The status register then says "in flight", also after an earlier transfer succeeded:
// the guest polls it after a posted length write (a stale "done" let the real-guest check
// read the copy's status too early).
TEST_F(MessageDmaTest, RegisterAccessesWhileWaitingAreServedAtOnceMapsAfterwards) {
  attach();
  serve_until(start_dma(kRamBase + 0x40, 16, /*to_guest=*/false), Layout::kSpec);
  ASSERT_EQ(dma_status(), ScratchFunction::kDmaDone);
  const auto id = start_dma(kRamBase, 64, /*to_guest=*/false);
  auto request = client_->receive();
  ASSERT_TRUE(request.has_value());
  ASSERT_EQ(request->header.command, kDmaRead);
  const auto status_id =
      client_->send_command(kRegionRead, testing::region_read(0, ScratchFunction::kDmaStatus, 4));
  auto status = client_->receive();
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(status->header.msg_id, status_id);
  ASSERT_EQ(status->payload.size(), kRegionAccessSize + 4);
  EXPECT_EQ(status->payload[kRegionAccessSize], ScratchFunction::kDmaInFlight);
  const auto map_id =
      client_->send_command(kDmaMap, testing::dma_map(kDmaMapRead, 0, 0x7000000000, 0x1000));
  answer(*request, Layout::kSpec);
  auto first = client_->receive();
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->header.msg_id, id);
  auto second = client_->receive();
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->header.msg_id, map_id);
  EXPECT_FALSE(second->is_error());
  EXPECT_EQ(read_bar(ScratchFunction::kDmaStatus, 4), (std::vector<std::uint8_t>{1, 0, 0, 0}));
  auto bar = read_bar(0, 64);
  EXPECT_EQ(bar, std::vector<std::uint8_t>(ram_.begin(), ram_.begin() + 64));
}

// A command served during a DMA wait may need DMA itself: exchanges nest, and a reply
// for the outer one that arrives while the inner one waits is kept for it.
TEST_F(MessageDmaTest, ExchangesNestAndAnOuterReplyIsKeptForLater) {
  attach();
  const auto outer_id = start_dma(kRamBase, 16, /*to_guest=*/false);
  auto outer = client_->receive();
  ASSERT_TRUE(outer.has_value());
  ASSERT_EQ(outer->header.command, kDmaRead);
  // While the server waits: restart the engine at another address (register writes are
  // served at once), which sends a second DMA_READ nested in the first.
  const auto inner_id = start_dma(kRamBase + 0x100, 16, /*to_guest=*/false);
  auto inner = client_->receive();
  ASSERT_TRUE(inner.has_value());
  ASSERT_EQ(inner->header.command, kDmaRead);
  EXPECT_NE(inner->header.msg_id, outer->header.msg_id);
  // Answer the outer request first: the server must keep it until the inner one is done.
  answer(*outer, Layout::kSpec);
  answer(*inner, Layout::kSpec);
  auto first = client_->receive();
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->header.msg_id, inner_id);
  auto second = client_->receive();
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->header.msg_id, outer_id);
  EXPECT_EQ(server_->protocol_errors(), 0u);
  // The outer transfer finished last, so BAR0 holds its bytes, and it succeeded.
  EXPECT_EQ(read_bar(ScratchFunction::kDmaStatus, 4), (std::vector<std::uint8_t>{1, 0, 0, 0}));
  EXPECT_EQ(read_bar(0, 16), std::vector<std::uint8_t>(ram_.begin(), ram_.begin() + 16));
}

// A transfer that runs as deferred loop work (as virtio queue work does on unshared
// memory) waits outside the connection's own callback: a map the client sends meanwhile
// is queued, and must be served as soon as the transfer ends — without the client
// sending anything more (QEMU would be holding its lock, waiting for that reply).
TEST_F(MessageDmaTest, CommandsQueuedDuringADeferredTransferAreServedWhenItEnds) {
  attach();
  expect_ok(client_->call(kRegionWrite,
                          testing::region_write(0, ScratchFunction::kDmaAddress, le64(kRamBase))));
  expect_ok(client_->call(
      kRegionWrite,
      testing::region_write(0, ScratchFunction::kDmaControl, le32(ScratchFunction::kDmaDeferred))));
  // The access that starts the transfer is answered first.
  expect_ok(
      client_->call(kRegionWrite, testing::region_write(0, ScratchFunction::kDmaLength, le32(16))));
  auto request = client_->receive();
  ASSERT_TRUE(request.has_value());
  ASSERT_EQ(request->header.command, kDmaRead);
  const auto map_id =
      client_->send_command(kDmaMap, testing::dma_map(kDmaMapRead, 0, 0x7000000000, 0x1000));
  answer(*request, Layout::kSpec);  // the stream keeps the map ahead of this reply
  auto map_reply = client_->receive();
  ASSERT_TRUE(map_reply.has_value()) << "the queued map was not served after the transfer";
  EXPECT_EQ(map_reply->header.msg_id, map_id);
  EXPECT_FALSE(map_reply->is_error());
  EXPECT_EQ(read_bar(ScratchFunction::kDmaStatus, 4), (std::vector<std::uint8_t>{1, 0, 0, 0}));
  EXPECT_EQ(read_bar(0, 16), std::vector<std::uint8_t>(ram_.begin(), ram_.begin() + 16));
}

TEST_F(MessageDmaTest, ClientThatNeverAnswersTimesOutWithoutStallingOtherSockets) {
  // A second device on its own socket keeps working while this one waits.
  ScratchFunction other_function;
  auto other = VfioUserServer::create(socket_path("other.sock"), other_function,
                                      other_function.guest_memory());
  ASSERT_TRUE(other.has_value());
  (*other)->start();
  auto other_client = TestClient::connect((*other)->socket_path());
  ASSERT_TRUE(other_client.has_value());
  ASSERT_TRUE(other_client->negotiate());

  attach();
  const auto id = start_dma(kRamBase, 16, /*to_guest=*/false);
  auto request = client_->receive();
  ASSERT_TRUE(request.has_value());
  ASSERT_EQ(request->header.command, kDmaRead);
  // The server thread of this socket is now waiting; the other one answers.
  auto info = other_client->call(kDeviceGetInfo, testing::Payload()
                                                     .add(std::uint32_t{16})
                                                     .add(std::uint32_t{0})
                                                     .add(std::uint32_t{0})
                                                     .add(std::uint32_t{0}));
  ASSERT_TRUE(info.has_value());
  EXPECT_FALSE(info->is_error());
  // No answer: the access fails after the timeout and the command still completes.
  auto done = client_->receive(10000);
  ASSERT_TRUE(done.has_value());
  EXPECT_EQ(done->header.msg_id, id);
  EXPECT_FALSE(done->is_error());  // the device saw the error, not the REGION_WRITE
  EXPECT_EQ(dma_status(), 2u);
  // A late answer is dropped and the connection carries on.
  answer(*request, Layout::kSpec);
  EXPECT_EQ(dma_status(), 2u);
  const auto id2 = start_dma(kRamBase, 16, /*to_guest=*/false);
  serve_until(id2, Layout::kSpec);
  EXPECT_EQ(dma_status(), 1u);
}

TEST_F(MessageDmaTest, MalformedRepliesFailTheAccess) {
  attach();
  const std::uint64_t errors_before = server_->protocol_errors();
  auto expect_failed_read = [&](auto&& bad_answer) {
    const auto id = start_dma(kRamBase + 0x40, 16, /*to_guest=*/false);
    auto request = client_->receive();
    ASSERT_TRUE(request.has_value());
    ASSERT_EQ(request->header.command, kDmaRead);
    bad_answer(*request);
    auto done = client_->receive();
    ASSERT_TRUE(done.has_value());
    EXPECT_EQ(done->header.msg_id, id);
    EXPECT_EQ(dma_status(), 2u);
  };
  // Error flag: a well-formed refusal.
  expect_failed_read([&](const ReplyMessage& r) { send_reply(*client_, r, {}, kFlagError, 14); });
  // Wrong size: 4 bytes short of either layout.
  expect_failed_read([&](const ReplyMessage& r) {
    std::vector<std::uint8_t> p = le64(kRamBase + 0x40);
    const auto c = le32(16);
    p.insert(p.end(), c.begin(), c.end());
    p.resize(p.size() + 12);
    send_reply(*client_, r, p);
  });
  // Right size (spec layout) but the address is not echoed.
  expect_failed_read([&](const ReplyMessage& r) {
    std::vector<std::uint8_t> p = le64(kRamBase);
    const auto c = le64(16);
    p.insert(p.end(), c.begin(), c.end());
    p.resize(p.size() + 16);
    send_reply(*client_, r, p);
  });
  // Count field disagrees with the size.
  expect_failed_read([&](const ReplyMessage& r) {
    std::vector<std::uint8_t> p = le64(kRamBase + 0x40);
    const auto c = le64(15);
    p.insert(p.end(), c.begin(), c.end());
    p.resize(p.size() + 16);
    send_reply(*client_, r, p);
  });
  EXPECT_GE(server_->protocol_errors(), errors_before + 3);  // the malformed ones
  // The connection survived all of that.
  const auto id = start_dma(kRamBase, 16, /*to_guest=*/false);
  serve_until(id, Layout::kQemu);
  EXPECT_EQ(dma_status(), 1u);

  // A reply with a msg_id nobody asked for ends the connection.
  start_dma(kRamBase, 16, /*to_guest=*/false);
  auto request = client_->receive();
  ASSERT_TRUE(request.has_value());
  send_reply(*client_, *request, {}, 0, 0,
             static_cast<std::uint16_t>(request->header.msg_id + 100));
  EXPECT_TRUE(client_->wait_closed());
  // And the socket takes the next client.
  auto next = TestClient::connect(path_);
  ASSERT_TRUE(next.has_value());
  EXPECT_TRUE(next->negotiate());
}

TEST_F(MessageDmaTest, UnmappedOrForbiddenAccessesSendNothing) {
  attach(1048576, kDmaMapRead);  // read-only map
  // Write to a read-only map, then a read past the end of the map: both fail before
  // any request is sent, so the next message is the command's own reply.
  const auto id = start_dma(kRamBase, 16, /*to_guest=*/true);
  auto reply = client_->receive();
  ASSERT_TRUE(reply.has_value());
  EXPECT_EQ(reply->header.msg_id, id);
  EXPECT_EQ(reply->header.flags & kFlagTypeMask, kTypeReply);
  EXPECT_EQ(dma_status(), 2u);
  const auto id2 = start_dma(kRamBase + kRamSize - 8, 16, /*to_guest=*/false);
  auto reply2 = client_->receive();
  ASSERT_TRUE(reply2.has_value());
  EXPECT_EQ(reply2->header.msg_id, id2);
  EXPECT_EQ(reply2->header.flags & kFlagTypeMask, kTypeReply);
  EXPECT_EQ(dma_status(), 2u);
}

}  // namespace
}  // namespace vpci::server
