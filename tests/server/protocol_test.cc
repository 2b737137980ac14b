// The vfio-user server over a real AF_UNIX socket, driven by TestClient: every
// command, every error path, fds in the wrong places, broken framing, disconnects and
// reconnects, and fd-leak checks over many connections.
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sys/eventfd.h>
#include <sys/mman.h>

#include "server/scratch_function.h"
#include "server/socket_server.h"
#include "server/vfio_regions.h"
#include "tests/server/test_client.h"
#include "tests/support/scratch_dir.h"

namespace vpci::server {
namespace {

using namespace vfio_user;
using testing::Payload;
using testing::TestClient;

// One directory for the sockets of this test program, removed when it exits.
std::string temp_socket_path(const std::string& name) {
  static const vpci::testing::ScratchDir dir("server-test");
  return (dir / name).string();
}

UniqueFd make_memfd(std::size_t size) {
  UniqueFd fd(::memfd_create("guest-ram", MFD_CLOEXEC));
  EXPECT_EQ(::ftruncate(fd.get(), static_cast<off_t>(size)), 0);
  return fd;
}

// A pipe whose write end we hand to the server: once every copy of the write end is
// closed, the read end reports EOF, proving the server closed the fd it received.
struct Probe {
  UniqueFd read_end;
  UniqueFd write_end;
  Probe() {
    std::array<int, 2> fds{};
    EXPECT_EQ(::pipe2(fds.data(), O_CLOEXEC), 0);
    read_end.reset(fds[0]);
    write_end.reset(fds[1]);
  }
  // After our own copy is closed: true once the server's copy is closed too.
  bool server_closed_it() {
    write_end.reset();
    pollfd p{read_end.get(), POLLIN, 0};
    return ::poll(&p, 1, 2000) == 1 && (p.revents & POLLHUP) != 0;
  }
};

template <typename T>
T field(const testing::ReplyMessage& reply, std::size_t offset) {
  EXPECT_GE(reply.payload.size(), offset + sizeof(T));
  if (reply.payload.size() < offset + sizeof(T)) return T{};
  return load<T>(reply.payload, offset);
}

class ProtocolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = temp_socket_path("scratch.sock");
    auto server = VfioUserServer::create(path_, function_, function_.guest_memory());
    ASSERT_TRUE(server.has_value()) << server.error().message;
    server_ = std::move(*server);
    server_->start();
    auto client = TestClient::connect(path_);
    ASSERT_TRUE(client.has_value());
    client_.emplace(std::move(*client));
  }
  void TearDown() override {
    client_.reset();
    server_.reset();
  }

  void expect_error(const std::optional<testing::ReplyMessage>& reply, int error) {
    ASSERT_TRUE(reply.has_value());
    EXPECT_TRUE(reply->is_error());
    EXPECT_EQ(reply->header.error, static_cast<std::uint32_t>(error));
    EXPECT_EQ(reply->header.message_size, kHeaderSize);  // spec: error reply is the header only
  }
  void expect_ok(const std::optional<testing::ReplyMessage>& reply) {
    ASSERT_TRUE(reply.has_value());
    EXPECT_FALSE(reply->is_error()) << "errno " << reply->header.error;
  }
  // Waits until the server has finished `n` connections in total.
  void wait_connections_closed(std::uint64_t n) {
    for (int i = 0; i < 500 && server_->connections_closed() < n; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ASSERT_GE(server_->connections_closed(), n);
  }
  std::vector<std::uint8_t> read_bar(std::uint64_t offset, std::uint32_t count) {
    auto reply = client_->call(kRegionRead, testing::region_read(0, offset, count));
    EXPECT_TRUE(reply && !reply->is_error());
    if (!reply || reply->payload.size() != kRegionAccessSize + count) return {};
    return {reply->payload.begin() + kRegionAccessSize, reply->payload.end()};
  }
  void write_u32(unsigned region, std::uint64_t offset, std::uint32_t value) {
    std::array<std::uint8_t, 4> bytes{};
    std::memcpy(bytes.data(), &value, 4);
    expect_ok(client_->call(kRegionWrite, testing::region_write(region, offset, bytes)));
  }
  void write_u64(unsigned region, std::uint64_t offset, std::uint64_t value) {
    std::array<std::uint8_t, 8> bytes{};
    std::memcpy(bytes.data(), &value, 8);
    expect_ok(client_->call(kRegionWrite, testing::region_write(region, offset, bytes)));
  }

  std::string path_;
  ScratchFunction function_;
  std::unique_ptr<VfioUserServer> server_;
  std::optional<TestClient> client_;
};

// ---- VERSION ---------------------------------------------------------------------

TEST_F(ProtocolTest, VersionRepliesWithCapabilities) {
  Payload p;
  const std::string json = R"({"capabilities":{"max_msg_fds":16,"pgsizes":4096}})";
  p.add(std::uint16_t{0}).add(std::uint16_t{5});
  p.add_bytes(std::span(reinterpret_cast<const std::uint8_t*>(json.c_str()), json.size() + 1));
  auto reply = client_->call(kVersion, p);
  expect_ok(reply);
  EXPECT_EQ(field<std::uint16_t>(*reply, 0), 0);
  EXPECT_EQ(field<std::uint16_t>(*reply, 2), kMaxMinorVersion);  // min(client 5, ours)
  ASSERT_EQ(reply->payload.back(), 0) << "JSON must be NUL-terminated";
  const std::string text(reply->payload.begin() + 4, reply->payload.end() - 1);
  const auto doc = nlohmann::json::parse(text);
  const auto& caps = doc.at("capabilities");
  EXPECT_EQ(caps.at("max_msg_fds"), kMaxMsgFds);  // always stated (reference §7)
  EXPECT_EQ(caps.at("max_data_xfer_size"), kMaxDataXferSize);
  EXPECT_EQ(caps.at("pgsizes"), kPageSize);
  EXPECT_FALSE(caps.contains("write_multiple"));
  EXPECT_FALSE(caps.contains("migration"));
}

TEST_F(ProtocolTest, VersionMinorNeverExceedsClients) {
  ASSERT_TRUE(client_->negotiate());  // QEMU sends 0.0 and expects 0.0 back
}

TEST_F(ProtocolTest, CommandsBeforeVersionAreRejected) {
  expect_error(
      client_->call(kDeviceGetInfo, Payload().add(std::uint32_t{16}).add(0u).add(0u).add(0u)),
      EINVAL);
  ASSERT_TRUE(client_->negotiate());
}

TEST_F(ProtocolTest, BadVersionsAreRejected) {
  expect_error(client_->call(kVersion, Payload().add(std::uint16_t{1}).add(std::uint16_t{0})),
               ENOTSUP);
  expect_error(client_->call(kVersion, Payload().add(std::uint16_t{0})), EINVAL);  // short
  const std::string no_nul = R"({"capabilities":{}})";
  expect_error(client_->call(kVersion, Payload()
                                           .add(std::uint32_t{0})
                                           .add_bytes(std::span(
                                               reinterpret_cast<const std::uint8_t*>(no_nul.data()),
                                               no_nul.size()))),
               EINVAL);
  for (const std::string bad :
       {"{nope", "[1]", R"({"capabilities":3})", R"({"capabilities":{"max_msg_fds":-1}})",
        R"({"capabilities":{"pgsizes":"4096"}})"}) {
    SCOPED_TRACE(bad);
    expect_error(client_->call(kVersion, Payload()
                                             .add(std::uint32_t{0})
                                             .add_bytes(std::span(
                                                 reinterpret_cast<const std::uint8_t*>(bad.c_str()),
                                                 bad.size() + 1))),
                 EINVAL);
  }
  const std::string big_pages = R"({"capabilities":{"pgsizes":8192}})";
  expect_error(
      client_->call(kVersion, Payload()
                                  .add(std::uint32_t{0})
                                  .add_bytes(std::span(
                                      reinterpret_cast<const std::uint8_t*>(big_pages.c_str()),
                                      big_pages.size() + 1))),
      ENOTSUP);
  ASSERT_TRUE(client_->negotiate());
  expect_error(client_->call(kVersion, Payload().add(std::uint32_t{0})), EINVAL);  // twice
}

// ---- device, region and IRQ info ----------------------------------------------------

TEST_F(ProtocolTest, DeviceInfo) {
  ASSERT_TRUE(client_->negotiate());
  auto reply =
      client_->call(kDeviceGetInfo, Payload().add(std::uint32_t{16}).add(0u).add(0u).add(0u));
  expect_ok(reply);
  EXPECT_EQ(field<std::uint32_t>(*reply, 4), kDeviceFlagReset | kDeviceFlagPci);
  EXPECT_EQ(field<std::uint32_t>(*reply, 8), 9u);
  EXPECT_EQ(field<std::uint32_t>(*reply, 12), 5u);
  expect_error(client_->call(kDeviceGetInfo, Payload().add(std::uint32_t{16})), EINVAL);  // short
  expect_error(
      client_->call(kDeviceGetInfo, Payload().add(std::uint32_t{8}).add(0u).add(0u).add(0u)),
      EINVAL);  // argsz lies
}

TEST_F(ProtocolTest, RegionInfoNeverReportsMmap) {
  ASSERT_TRUE(client_->negotiate());
  auto bar0 = client_->call(kDeviceGetRegionInfo, testing::region_info(0));
  expect_ok(bar0);
  EXPECT_EQ(field<std::uint32_t>(*bar0, 0), kRegionInfoSize);
  EXPECT_EQ(field<std::uint32_t>(*bar0, 4), kRegionFlagRead | kRegionFlagWrite);
  EXPECT_EQ(field<std::uint32_t>(*bar0, 8), 0u);
  EXPECT_EQ(field<std::uint64_t>(*bar0, 16), ScratchFunction::kBarSize);
  auto config = client_->call(kDeviceGetRegionInfo, testing::region_info(kRegionConfig));
  expect_ok(config);
  EXPECT_EQ(field<std::uint64_t>(*config, 16), 4096u);  // PCIe config (reference §5)
  for (std::uint32_t absent : {1u, 2u, 5u, kRegionRom, kRegionVga}) {
    auto reply = client_->call(kDeviceGetRegionInfo, testing::region_info(absent));
    expect_ok(reply);
    EXPECT_EQ(field<std::uint32_t>(*reply, 4), 0u);
    EXPECT_EQ(field<std::uint64_t>(*reply, 16), 0u);
  }
  expect_error(client_->call(kDeviceGetRegionInfo, testing::region_info(9)), EINVAL);
  expect_error(client_->call(kDeviceGetRegionInfo, testing::region_info(0xFFFFFFFF)), EINVAL);
  expect_error(client_->call(kDeviceGetRegionInfo, testing::region_info(0, 16)), EINVAL);
  expect_error(client_->call(kDeviceGetRegionInfo, Payload().add(std::uint32_t{32})), EINVAL);
}

TEST_F(ProtocolTest, RegionIoFdsListsNone) {
  ASSERT_TRUE(client_->negotiate());
  auto reply = client_->call(kDeviceGetRegionIoFds,
                             Payload().add(std::uint32_t{16}).add(0u).add(0u).add(0u));
  expect_ok(reply);
  EXPECT_EQ(field<std::uint32_t>(*reply, 12), 0u);
  expect_error(client_->call(kDeviceGetRegionIoFds,
                             Payload().add(std::uint32_t{16}).add(0u).add(3u).add(0u)),
               EINVAL);
}

TEST_F(ProtocolTest, IrqInfo) {
  ASSERT_TRUE(client_->negotiate());
  auto intx = client_->call(kDeviceGetIrqInfo, testing::irq_info(kIrqIntx));
  expect_ok(intx);
  EXPECT_EQ(field<std::uint32_t>(*intx, 4),
            kIrqInfoEventfd | kIrqInfoMaskable | kIrqInfoAutomasked);
  EXPECT_EQ(field<std::uint32_t>(*intx, 12), 1u);
  auto msix = client_->call(kDeviceGetIrqInfo, testing::irq_info(kIrqMsix));
  expect_ok(msix);
  EXPECT_EQ(field<std::uint32_t>(*msix, 12), 0u);
  expect_error(client_->call(kDeviceGetIrqInfo, testing::irq_info(5)), EINVAL);
  expect_error(client_->call(kDeviceGetIrqInfo, Payload().add(std::uint32_t{16}).add(0u)), EINVAL);
}

// ---- region access -------------------------------------------------------------------

TEST_F(ProtocolTest, ConfigSpaceReadsWholeAndSizesBar) {
  ASSERT_TRUE(client_->negotiate());
  auto reply = client_->call(kRegionRead, testing::region_read(kRegionConfig, 0, 4096));
  expect_ok(reply);
  ASSERT_EQ(reply->payload.size(), kRegionAccessSize + 4096);
  EXPECT_EQ(field<std::uint16_t>(*reply, kRegionAccessSize + 0), ScratchFunction::kVendorId);
  EXPECT_EQ(field<std::uint16_t>(*reply, kRegionAccessSize + 2), ScratchFunction::kDeviceId);
  EXPECT_EQ(field<std::uint32_t>(*reply, 12), 4096u);  // the reply repeats count
  // BAR sizing through config writes (PCI Local Bus 3.0 §6.2.5.1).
  write_u32(kRegionConfig, 0x10, 0xFFFFFFFF);
  auto bar = client_->call(kRegionRead, testing::region_read(kRegionConfig, 0x10, 4));
  expect_ok(bar);
  EXPECT_EQ(field<std::uint32_t>(*bar, kRegionAccessSize), 0xFFFFF004u);  // 4 KiB, 64-bit
  // An unaligned 3-byte read is split into byte accesses.
  auto odd = client_->call(kRegionRead, testing::region_read(kRegionConfig, 1, 3));
  expect_ok(odd);
  EXPECT_EQ(odd->payload[kRegionAccessSize], ScratchFunction::kVendorId >> 8);
  expect_error(client_->call(kRegionRead, testing::region_read(kRegionConfig, 4095, 2)), EINVAL);
}

TEST_F(ProtocolTest, BarReadWriteAndBounds) {
  ASSERT_TRUE(client_->negotiate());
  const std::array<std::uint8_t, 5> data{1, 2, 3, 4, 5};
  expect_ok(client_->call(kRegionWrite, testing::region_write(0, 0x100, data)));
  EXPECT_EQ(read_bar(0x100, 5), std::vector<std::uint8_t>(data.begin(), data.end()));
  // Out of range, wrapping, absent regions, oversized counts.
  expect_error(client_->call(kRegionRead, testing::region_read(0, 0x1000, 1)), EINVAL);
  expect_error(client_->call(kRegionRead, testing::region_read(0, 0xFFFFFFFFFFFFFFFF, 2)), EINVAL);
  expect_error(client_->call(kRegionRead, testing::region_read(1, 0, 4)), EINVAL);
  expect_error(client_->call(kRegionRead, testing::region_read(9, 0, 4)), EINVAL);
  expect_error(client_->call(kRegionRead, testing::region_read(0, 0, kMaxDataXferSize + 1)),
               EINVAL);
  expect_error(client_->call(kRegionWrite, testing::region_write(0, 0xFFE, data)), EINVAL);
  // A read with trailing bytes, a write whose count lies about its data.
  expect_error(
      client_->call(kRegionRead, Payload(testing::region_read(0, 0, 4)).add(std::uint8_t{0})),
      EINVAL);
  Payload lying;
  lying.add(std::uint64_t{0}).add(std::uint32_t{0}).add(std::uint32_t{100}).add_bytes(data);
  expect_error(client_->call(kRegionWrite, lying), EINVAL);
  expect_error(client_->call(kRegionWrite, Payload().add(std::uint64_t{0})), EINVAL);
  // Nothing of the rejected writes landed.
  EXPECT_EQ(read_bar(0xFFE, 2), (std::vector<std::uint8_t>{0, 0}));
}

TEST_F(ProtocolTest, NoReplyWritesGetNoReplyEvenOnError) {
  ASSERT_TRUE(client_->negotiate());
  const std::array<std::uint8_t, 4> data{0xAA, 0xBB, 0xCC, 0xDD};
  client_->send_command(kRegionWrite, testing::region_write(0, 0x40, data), {}, kFlagNoReply);
  client_->send_command(kRegionWrite, testing::region_write(0, 0x2000, data), {}, kFlagNoReply);
  client_->send_command(kDeviceGetInfo, Payload(), {}, kFlagNoReply);
  // The next reply is for the read: nothing was sent for the three posted commands.
  EXPECT_EQ(read_bar(0x40, 4), std::vector<std::uint8_t>(data.begin(), data.end()));
  EXPECT_GE(server_->protocol_errors(), 2u);
}

TEST_F(ProtocolTest, DeviceResetRestoresPowerOnState) {
  ASSERT_TRUE(client_->negotiate());
  write_u32(0, 0, 0x12345678);
  write_u32(kRegionConfig, 0x04, 0x0006);
  expect_ok(client_->call(kDeviceReset, Payload()));
  EXPECT_EQ(read_bar(0, 4), (std::vector<std::uint8_t>{0, 0, 0, 0}));
  auto command = client_->call(kRegionRead, testing::region_read(kRegionConfig, 0x04, 2));
  EXPECT_EQ(field<std::uint16_t>(*command, kRegionAccessSize), 0u);
  expect_error(client_->call(kDeviceReset, Payload().add(std::uint32_t{0})), EINVAL);
}

// ---- DMA ----------------------------------------------------------------------------------

TEST_F(ProtocolTest, DmaMapLetsTheDeviceReadGuestMemory) {
  ASSERT_TRUE(client_->negotiate());
  constexpr std::size_t kRam = 0x10000;
  UniqueFd ram = make_memfd(kRam);
  auto* host = static_cast<std::uint8_t*>(
      ::mmap(nullptr, kRam, PROT_READ | PROT_WRITE, MAP_SHARED, ram.get(), 0));
  ASSERT_NE(host, MAP_FAILED);
  for (std::size_t i = 0; i < 64; ++i) host[0x3000 + i] = static_cast<std::uint8_t>(i * 3);
  const int fd = ram.get();
  // Map the second half of the file at guest 0x100000.
  expect_ok(client_->call(kDmaMap,
                          testing::dma_map(kDmaMapRead | kDmaMapWrite, 0x2000, 0x100000, 0x4000),
                          std::span(&fd, 1)));
  write_u32(kRegionConfig, 0x04, 0x0006);  // memory + bus master
  write_u64(0, ScratchFunction::kDmaAddress, 0x101000);
  write_u32(0, ScratchFunction::kDmaLength, 64);
  EXPECT_EQ(read_bar(ScratchFunction::kDmaStatus, 4), (std::vector<std::uint8_t>{1, 0, 0, 0}));
  const auto copied = read_bar(0, 64);
  ASSERT_EQ(copied.size(), 64u);
  EXPECT_EQ(std::memcmp(copied.data(), host + 0x3000, 64), 0);
  // Past the end of the map: the device's translate fails.
  write_u64(0, ScratchFunction::kDmaAddress, 0x103FF0);
  write_u32(0, ScratchFunction::kDmaLength, 64);
  EXPECT_EQ(read_bar(ScratchFunction::kDmaStatus, 4), (std::vector<std::uint8_t>{2, 0, 0, 0}));
  // After an exact unmap it fails too.
  auto unmap = client_->call(kDmaUnmap, testing::dma_unmap(0, 0x100000, 0x4000));
  expect_ok(unmap);
  EXPECT_EQ(unmap->payload.size(), kDmaUnmapSize);  // the reply echoes the request
  write_u64(0, ScratchFunction::kDmaAddress, 0x101000);
  write_u32(0, ScratchFunction::kDmaLength, 64);
  EXPECT_EQ(read_bar(ScratchFunction::kDmaStatus, 4), (std::vector<std::uint8_t>{2, 0, 0, 0}));
  ::munmap(host, kRam);
}

TEST_F(ProtocolTest, DmaMapValidation) {
  ASSERT_TRUE(client_->negotiate());
  UniqueFd ram = make_memfd(0x10000);
  const int fd = ram.get();
  const std::uint32_t rw = kDmaMapRead | kDmaMapWrite;
  expect_ok(client_->call(kDmaMap, testing::dma_map(rw, 0, 0x10000, 0x8000), std::span(&fd, 1)));
  // Overlaps, at the start, the end, inside and around: EEXIST.
  for (auto [iova, size] : {std::pair<std::uint64_t, std::uint64_t>{0x10000, 0x1000},
                            {0xF000, 0x2000},
                            {0x17000, 0x1000},
                            {0x0, 0x100000}}) {
    expect_error(client_->call(kDmaMap, testing::dma_map(rw, 0, iova, size), std::span(&fd, 1)),
                 EEXIST);
  }
  // Beyond the fd, offset past the end, unaligned, wrapping, zero size, bad flags.
  expect_error(
      client_->call(kDmaMap, testing::dma_map(rw, 0x8000, 0x100000, 0x10000), std::span(&fd, 1)),
      EINVAL);
  expect_error(client_->call(kDmaMap, testing::dma_map(rw, 0xFFFFFFFFFFFFF000, 0x100000, 0x1000),
                             std::span(&fd, 1)),
               EINVAL);
  expect_error(client_->call(kDmaMap, testing::dma_map(rw, 0, 0x100800, 0x1000), std::span(&fd, 1)),
               EINVAL);
  expect_error(
      client_->call(kDmaMap, testing::dma_map(rw, 0x800, 0x100000, 0x1000), std::span(&fd, 1)),
      EINVAL);
  expect_error(client_->call(kDmaMap, testing::dma_map(rw, 0, 0xFFFFFFFFFFFFF000, 0x2000),
                             std::span(&fd, 1)),
               EINVAL);
  expect_error(client_->call(kDmaMap, testing::dma_map(rw, 0, 0x100000, 0), std::span(&fd, 1)),
               EINVAL);
  expect_error(
      client_->call(kDmaMap, testing::dma_map(0x4, 0, 0x100000, 0x1000), std::span(&fd, 1)),
      EINVAL);
  expect_error(client_->call(kDmaMap, testing::dma_map(kDmaMapWrite, 0, 0x100000, 0x1000),
                             std::span(&fd, 1)),
               EINVAL);
  // Short payload, argsz smaller than the structure.
  expect_error(client_->call(kDmaMap, Payload().add(std::uint32_t{32}).add(rw), std::span(&fd, 1)),
               EINVAL);
  Payload small_argsz;
  small_argsz.add(std::uint32_t{16})
      .add(rw)
      .add(std::uint64_t{0})
      .add(std::uint64_t{0x100000})
      .add(std::uint64_t{0x1000});
  expect_error(client_->call(kDmaMap, small_argsz, std::span(&fd, 1)), EINVAL);
  // A pipe is not memory; two fds are one too many. Both get closed by the server.
  Probe pipe_probe;
  const int pipe_fd = pipe_probe.write_end.get();
  expect_error(
      client_->call(kDmaMap, testing::dma_map(rw, 0, 0x100000, 0x1000), std::span(&pipe_fd, 1)),
      EINVAL);
  EXPECT_TRUE(pipe_probe.server_closed_it());
  Probe second;
  const std::array<int, 2> two{fd, second.write_end.get()};
  expect_error(client_->call(kDmaMap, testing::dma_map(rw, 0, 0x100000, 0x1000), two), EINVAL);
  EXPECT_TRUE(second.server_closed_it());
  // Without an fd the range is recorded (QEMU maps ROM that way) but not accessible.
  expect_ok(client_->call(kDmaMap, testing::dma_map(kDmaMapRead, 0, 0x200000, 0x1000)));
  expect_error(client_->call(kDmaMap, testing::dma_map(kDmaMapRead, 0, 0x200000, 0x1000)), EEXIST);

  // Unmaps must match exactly; dirty bitmaps are not supported; ALL needs 0/0.
  expect_error(client_->call(kDmaUnmap, testing::dma_unmap(0, 0x10000, 0x1000)), EINVAL);
  expect_error(client_->call(kDmaUnmap, testing::dma_unmap(0, 0x400000, 0x1000)), ENOENT);
  expect_error(
      client_->call(kDmaUnmap, testing::dma_unmap(kDmaUnmapGetDirtyBitmap, 0x10000, 0x8000)),
      ENOTSUP);
  expect_error(client_->call(kDmaUnmap, testing::dma_unmap(0x80, 0x10000, 0x8000)), EINVAL);
  expect_error(client_->call(kDmaUnmap, testing::dma_unmap(kDmaUnmapAll, 0x10000, 0)), EINVAL);
  expect_error(client_->call(kDmaUnmap, Payload().add(std::uint32_t{24})), EINVAL);
  Probe unmap_fd;
  const int stray = unmap_fd.write_end.get();
  expect_error(
      client_->call(kDmaUnmap, testing::dma_unmap(0, 0x10000, 0x8000), std::span(&stray, 1)),
      EINVAL);
  EXPECT_TRUE(unmap_fd.server_closed_it());
  expect_ok(client_->call(kDmaUnmap, testing::dma_unmap(0, 0x10000, 0x8000)));
  expect_ok(client_->call(kDmaUnmap, testing::dma_unmap(kDmaUnmapAll, 0, 0)));
  expect_error(client_->call(kDmaUnmap, testing::dma_unmap(0, 0x200000, 0x1000)), ENOENT);
}

// ---- interrupts ---------------------------------------------------------------------------------

bool eventfd_fired(int fd, int timeout_ms = 1000) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, timeout_ms) != 1) return false;
  std::uint64_t value = 0;
  return ::read(fd, &value, sizeof(value)) == sizeof(value) && value > 0;
}

TEST_F(ProtocolTest, IntxIsAutomaskedAndRetriggersOnUnmaskWhileAsserted) {
  ASSERT_TRUE(client_->negotiate());
  UniqueFd irq(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  const int fd = irq.get();
  expect_ok(client_->call(
      kDeviceSetIrqs, testing::set_irqs(kIrqSetDataEventfd | kIrqSetActionTrigger, kIrqIntx, 0, 1),
      std::span(&fd, 1)));
  write_u32(0, ScratchFunction::kDoorbell, 1);  // assert
  EXPECT_TRUE(eventfd_fired(fd));
  write_u32(0, ScratchFunction::kDoorbell, 1);  // automasked: no second edge
  EXPECT_FALSE(eventfd_fired(fd, 100));
  // The guest's EOI arrives as UNMASK; the line is still high, so it fires again.
  expect_ok(client_->call(
      kDeviceSetIrqs, testing::set_irqs(kIrqSetDataNone | kIrqSetActionUnmask, kIrqIntx, 0, 1)));
  EXPECT_TRUE(eventfd_fired(fd));
  write_u32(0, ScratchFunction::kDoorbell, 0);  // deassert
  expect_ok(client_->call(
      kDeviceSetIrqs, testing::set_irqs(kIrqSetDataNone | kIrqSetActionUnmask, kIrqIntx, 0, 1)));
  EXPECT_FALSE(eventfd_fired(fd, 100));
  // A software trigger with DATA_BOOL, then masking with DATA_BOOL.
  Payload trigger = testing::set_irqs(kIrqSetDataBool | kIrqSetActionTrigger, kIrqIntx, 0, 1);
  trigger.add(std::uint8_t{1});
  expect_ok(client_->call(kDeviceSetIrqs, trigger));
  EXPECT_TRUE(eventfd_fired(fd));
  // Disable the index: no more interrupts.
  expect_ok(client_->call(
      kDeviceSetIrqs, testing::set_irqs(kIrqSetDataNone | kIrqSetActionUnmask, kIrqIntx, 0, 1)));
  expect_ok(client_->call(
      kDeviceSetIrqs, testing::set_irqs(kIrqSetDataNone | kIrqSetActionTrigger, kIrqIntx, 0, 0)));
  write_u32(0, ScratchFunction::kDoorbell, 1);
  EXPECT_FALSE(eventfd_fired(fd, 100));
}

TEST_F(ProtocolTest, SetIrqsValidation) {
  ASSERT_TRUE(client_->negotiate());
  UniqueFd irq(::eventfd(0, EFD_CLOEXEC));
  const int fd = irq.get();
  const std::uint32_t assign = kIrqSetDataEventfd | kIrqSetActionTrigger;
  expect_error(client_->call(kDeviceSetIrqs, testing::set_irqs(assign, 5, 0, 1), std::span(&fd, 1)),
               EINVAL);
  expect_error(
      client_->call(kDeviceSetIrqs, testing::set_irqs(assign, kIrqIntx, 1, 1), std::span(&fd, 1)),
      EINVAL);
  expect_error(client_->call(kDeviceSetIrqs, testing::set_irqs(assign, kIrqIntx, 0xFFFFFFFF, 2),
                             std::span(&fd, 1)),
               EINVAL);
  expect_error(
      client_->call(kDeviceSetIrqs, testing::set_irqs(assign, kIrqMsix, 0, 1), std::span(&fd, 1)),
      EINVAL);  // the scratch device has no MSI-X
  expect_error(client_->call(kDeviceSetIrqs, testing::set_irqs(kIrqSetDataNone | kIrqSetDataBool |
                                                                   kIrqSetActionTrigger,
                                                               kIrqIntx, 0, 1)),
               EINVAL);
  expect_error(client_->call(kDeviceSetIrqs, testing::set_irqs(kIrqSetDataNone | kIrqSetActionMask |
                                                                   kIrqSetActionUnmask,
                                                               kIrqIntx, 0, 1)),
               EINVAL);
  expect_error(
      client_->call(kDeviceSetIrqs,
                    testing::set_irqs(0x100 | kIrqSetDataNone | kIrqSetActionMask, kIrqIntx, 0, 1)),
      EINVAL);
  expect_error(
      client_->call(kDeviceSetIrqs,
                    testing::set_irqs(kIrqSetDataBool | kIrqSetActionTrigger, kIrqIntx, 0, 1)),
      EINVAL);  // DATA_BOOL without its byte
  expect_error(client_->call(kDeviceSetIrqs, testing::set_irqs(kIrqSetDataNone | kIrqSetActionMask,
                                                               kIrqIntx, 0, 0)),
               EINVAL);  // count 0 only disables with TRIGGER
  expect_error(
      client_->call(kDeviceSetIrqs,
                    testing::set_irqs(kIrqSetDataEventfd | kIrqSetActionUnmask, kIrqIntx, 0, 1),
                    std::span(&fd, 1)),
      ENOTSUP);  // resample eventfds
  expect_error(client_->call(kDeviceSetIrqs, Payload().add(std::uint32_t{20}).add(assign)), EINVAL);
  // fds with DATA_NONE, a pipe instead of an eventfd, too many fds: all closed.
  Probe with_none;
  const int stray = with_none.write_end.get();
  expect_error(
      client_->call(kDeviceSetIrqs,
                    testing::set_irqs(kIrqSetDataNone | kIrqSetActionTrigger, kIrqIntx, 0, 1),
                    std::span(&stray, 1)),
      EINVAL);
  EXPECT_TRUE(with_none.server_closed_it());
  Probe not_eventfd;
  const int pipe_fd = not_eventfd.write_end.get();
  expect_error(client_->call(kDeviceSetIrqs, testing::set_irqs(assign, kIrqIntx, 0, 1),
                             std::span(&pipe_fd, 1)),
               EINVAL);
  EXPECT_TRUE(not_eventfd.server_closed_it());
  Probe extra;
  const std::array<int, 2> two{fd, extra.write_end.get()};
  expect_error(client_->call(kDeviceSetIrqs, testing::set_irqs(assign, kIrqIntx, 0, 1), two),
               EINVAL);
  EXPECT_TRUE(extra.server_closed_it());
  // De-assign with no fds is fine.
  expect_ok(client_->call(kDeviceSetIrqs, testing::set_irqs(assign, kIrqIntx, 0, 1)));
}

// ---- fds in the wrong places, unsupported commands -------------------------------------------

TEST_F(ProtocolTest, FdsOnCommandsThatTakeNoneAreClosed) {
  ASSERT_TRUE(client_->negotiate());
  for (std::uint16_t command :
       {std::uint16_t{kDeviceGetInfo}, std::uint16_t{kDeviceGetRegionInfo},
        std::uint16_t{kRegionRead}, std::uint16_t{kRegionWrite}, std::uint16_t{kDeviceReset},
        std::uint16_t{kDmaRead}, std::uint16_t{99}}) {
    Probe probe;
    const int fd = probe.write_end.get();
    SCOPED_TRACE(command);
    expect_error(client_->call(command, testing::region_info(0), std::span(&fd, 1)), EINVAL);
    EXPECT_TRUE(probe.server_closed_it());
  }
}

TEST_F(ProtocolTest, MoreFdsThanAdvertisedAreRejectedAndClosed) {
  ASSERT_TRUE(client_->negotiate());
  std::vector<Probe> probes(kMaxMsgFds + 4);
  std::vector<int> fds;
  for (auto& p : probes) fds.push_back(p.write_end.get());
  expect_error(
      client_->call(kDeviceSetIrqs,
                    testing::set_irqs(kIrqSetDataEventfd | kIrqSetActionTrigger, kIrqIntx, 0, 1),
                    fds),
      EINVAL);
  for (auto& p : probes) EXPECT_TRUE(p.server_closed_it());
}

TEST_F(ProtocolTest, UnsupportedCommandsGetEnotsup) {
  ASSERT_TRUE(client_->negotiate());
  expect_error(client_->call(kDmaRead, Payload().add(std::uint64_t{0}).add(std::uint64_t{8})),
               ENOTSUP);
  expect_error(client_->call(kDmaWrite, Payload().add(std::uint64_t{0}).add(std::uint64_t{0})),
               ENOTSUP);
  expect_error(client_->call(kRegionWriteMulti, Payload().add(std::uint64_t{0})), ENOTSUP);
  expect_error(client_->call(kDeviceFeature, Payload().add(std::uint32_t{8}).add(0u)), ENOTSUP);
  expect_error(client_->call(0, Payload()), ENOTSUP);
  expect_error(client_->call(0xFFFF, Payload()), ENOTSUP);
  // The connection still works.
  expect_ok(
      client_->call(kDeviceGetInfo, Payload().add(std::uint32_t{16}).add(0u).add(0u).add(0u)));
}

// ---- framing, disconnects, reconnects -------------------------------------------------------

TEST_F(ProtocolTest, BrokenFramingClosesOnlyThatConnection) {
  struct Case {
    const char* name;
    Header header;
  };
  const Case cases[] = {
      {"size below header", Header{1, kDeviceGetInfo, 8, kTypeCommand, 0}},
      {"size beyond any request", Header{1, kRegionWrite, 0x7FFFFFFF, kTypeCommand, 0}},
      {"a reply from the client", Header{1, kDeviceGetInfo, kHeaderSize, kTypeReply, 0}},
      {"unknown message type", Header{1, kDeviceGetInfo, kHeaderSize, 7, 0}},
  };
  std::uint64_t closed = 0;
  for (const Case& c : cases) {
    ASSERT_TRUE(client_->negotiate()) << c.name;
    std::vector<std::uint8_t> bytes(kHeaderSize);
    encode_header(bytes, c.header);
    ASSERT_TRUE(client_->send_raw(bytes)) << c.name;
    EXPECT_TRUE(client_->wait_closed()) << c.name;
    wait_connections_closed(++closed);
    auto next = TestClient::connect(path_);
    ASSERT_TRUE(next.has_value());
    client_.emplace(std::move(*next));
  }
  ASSERT_TRUE(client_->negotiate());
}

// The server reads whatever the socket holds in one go and cuts messages out of it;
// fds must still land on the message they were sent with.
TEST_F(ProtocolTest, FdSentAfterABurstOfPostedWritesBelongsToItsDmaMap) {
  ASSERT_TRUE(client_->negotiate());
  constexpr std::size_t kRam = 0x4000;
  UniqueFd ram = make_memfd(kRam);
  auto* host = static_cast<std::uint8_t*>(
      ::mmap(nullptr, kRam, PROT_READ | PROT_WRITE, MAP_SHARED, ram.get(), 0));
  ASSERT_NE(host, MAP_FAILED);
  for (std::size_t i = 0; i < 16; ++i) host[0x100 + i] = static_cast<std::uint8_t>(0x40 + i);
  for (std::uint32_t i = 0; i < 300; ++i) {
    std::array<std::uint8_t, 4> value{};
    std::memcpy(value.data(), &i, 4);
    client_->send_command(kRegionWrite, testing::region_write(0, 0x20, value), {}, kFlagNoReply);
  }
  const int fd = ram.get();
  client_->send_command(kDmaMap, testing::dma_map(kDmaMapRead, 0, 0x200000, kRam),
                        std::span(&fd, 1));
  // A posted write right behind the map, in the same burst, must not take its fd.
  const std::array<std::uint8_t, 4> tail{1, 2, 3, 4};
  client_->send_command(kRegionWrite, testing::region_write(0, 0x24, tail), {}, kFlagNoReply);
  expect_ok(client_->receive());  // the DMA_MAP reply: the only reply so far
  EXPECT_EQ(server_->protocol_errors(), 0u);
  EXPECT_EQ(read_bar(0x20, 8), (std::vector<std::uint8_t>{0x2B, 0x01, 0, 0, 1, 2, 3, 4}));  // 299
  write_u32(kRegionConfig, 0x04, 0x0006);  // memory + bus master
  write_u64(0, ScratchFunction::kDmaAddress, 0x200100);
  write_u32(0, ScratchFunction::kDmaLength, 16);
  EXPECT_EQ(read_bar(ScratchFunction::kDmaStatus, 4), (std::vector<std::uint8_t>{1, 0, 0, 0}));
  const auto copied = read_bar(0, 16);
  ASSERT_EQ(copied.size(), 16u);
  EXPECT_EQ(std::memcmp(copied.data(), host + 0x100, 16), 0);
  ::munmap(host, kRam);
}

// Messages larger than the receive buffer, and messages arriving in pieces, are
// reassembled.
TEST_F(ProtocolTest, LargeAndFragmentedMessagesAreReassembled) {
  ASSERT_TRUE(client_->negotiate());
  std::vector<std::uint8_t> data(0xFE0);
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<std::uint8_t>(i * 7 + 1);
  // A 4,096-byte REGION_WRITE sent as three pieces with pauses between them.
  const Payload payload = testing::region_write(0, 0, data);
  std::vector<std::uint8_t> bytes(kHeaderSize);
  encode_header(bytes, Header{77, kRegionWrite,
                              static_cast<std::uint32_t>(kHeaderSize + payload.bytes().size()),
                              kTypeCommand, 0});
  bytes.insert(bytes.end(), payload.bytes().begin(), payload.bytes().end());
  const std::span<const std::uint8_t> all(bytes);
  ASSERT_TRUE(client_->send_raw(all.subspan(0, 10)));
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_TRUE(client_->send_raw(all.subspan(10, 2000)));
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_TRUE(client_->send_raw(all.subspan(2010)));
  expect_ok(client_->receive());
  EXPECT_EQ(read_bar(0, 0xFE0), data);
  // Config space read whole and written back whole: 4,128 bytes on the wire.
  auto config = client_->call(kRegionRead, testing::region_read(kRegionConfig, 0, 4096));
  expect_ok(config);
  ASSERT_EQ(config->payload.size(), kRegionAccessSize + 4096);
  const std::vector<std::uint8_t> image(config->payload.begin() + kRegionAccessSize,
                                        config->payload.end());
  expect_ok(client_->call(kRegionWrite, testing::region_write(kRegionConfig, 0, image)));
  EXPECT_EQ(read_bar(0, 0xFE0), data);
  EXPECT_EQ(server_->protocol_errors(), 0u);
}

// Reads block in recvmsg (no poll per message); stop() must still end an idle
// connection at once.
TEST_F(ProtocolTest, StopEndsAnIdleConnection) {
  ASSERT_TRUE(client_->negotiate());
  server_->stop();
  EXPECT_TRUE(client_->wait_closed());
  EXPECT_FALSE(function_.is_connected());
}

TEST_F(ProtocolTest, DisconnectMidMessageResetsDeviceAndAcceptsNextClient) {
  ASSERT_TRUE(client_->negotiate());
  UniqueFd ram = make_memfd(0x4000);
  const int fd = ram.get();
  expect_ok(
      client_->call(kDmaMap, testing::dma_map(kDmaMapRead, 0, 0x10000, 0x4000), std::span(&fd, 1)));
  write_u32(0, 0x10, 0xCAFE);
  // A header promising 64 bytes of REGION_WRITE, then only 8 of them, then gone.
  std::vector<std::uint8_t> bytes(kHeaderSize + 8);
  encode_header(bytes, Header{9, kRegionWrite, kHeaderSize + 64, kTypeCommand, 0});
  ASSERT_TRUE(client_->send_raw(bytes));
  client_->close();
  wait_connections_closed(1);
  EXPECT_FALSE(function_.is_connected());
  EXPECT_TRUE(function_.guest_memory()->snapshot()->regions().empty());
  EXPECT_GE(function_.reset_count(), 1u);
  // A new client on the same socket sees a freshly reset device.
  auto next = TestClient::connect(path_);
  ASSERT_TRUE(next.has_value());
  client_.emplace(std::move(*next));
  ASSERT_TRUE(client_->negotiate());
  EXPECT_EQ(read_bar(0x10, 4), (std::vector<std::uint8_t>{0, 0, 0, 0}));
}

TEST_F(ProtocolTest, ThousandConnectionsLeakNoFds) {
  client_.reset();
  wait_connections_closed(1);
  const std::size_t before = testing::open_fd_count();
  constexpr int kCycles = 1000;
  for (int i = 0; i < kCycles; ++i) {
    auto client = TestClient::connect(path_);
    ASSERT_TRUE(client.has_value());
    ASSERT_TRUE(client->negotiate());
    // Give the server fds to own: a DMA map and an INTx eventfd.
    UniqueFd ram = make_memfd(0x2000);
    UniqueFd irq(::eventfd(0, EFD_CLOEXEC));
    const int ram_fd = ram.get();
    const int irq_fd = irq.get();
    auto map =
        client->call(kDmaMap, testing::dma_map(kDmaMapRead | kDmaMapWrite, 0, 0x10000, 0x2000),
                     std::span(&ram_fd, 1));
    ASSERT_TRUE(map && !map->is_error());
    auto set =
        client->call(kDeviceSetIrqs,
                     testing::set_irqs(kIrqSetDataEventfd | kIrqSetActionTrigger, kIrqIntx, 0, 1),
                     std::span(&irq_fd, 1));
    ASSERT_TRUE(set && !set->is_error());
    if (i % 2 == 1) {
      // Every other client leaves in the middle of a message.
      std::vector<std::uint8_t> partial(kHeaderSize);
      encode_header(partial, Header{1, kRegionWrite, 64, kTypeCommand, 0});
      client->send_raw(partial);
    }
  }
  wait_connections_closed(1 + kCycles);
  EXPECT_EQ(testing::open_fd_count(), before);
  EXPECT_TRUE(function_.guest_memory()->snapshot()->regions().empty());
}

TEST(MultiDeviceTest, DevicesOnSeparateSocketsAreIndependent) {
  ScratchFunction first;
  ScratchFunction second;
  const std::string first_path = temp_socket_path("first.sock");
  const std::string second_path = temp_socket_path("second.sock");
  auto server1 = VfioUserServer::create(first_path, first, first.guest_memory());
  auto server2 = VfioUserServer::create(second_path, second, second.guest_memory());
  ASSERT_TRUE(server1 && server2);
  (*server1)->start();
  (*server2)->start();
  auto good = TestClient::connect(second_path);
  auto bad = TestClient::connect(first_path);
  ASSERT_TRUE(good && bad);
  ASSERT_TRUE(good->negotiate());
  ASSERT_TRUE(bad->negotiate());
  // Garbage on the first device closes that connection only.
  std::vector<std::uint8_t> junk(kHeaderSize, 0xFF);
  bad->send_raw(junk);
  EXPECT_TRUE(bad->wait_closed());
  const std::array<std::uint8_t, 4> data{9, 8, 7, 6};
  auto write = good->call(kRegionWrite, testing::region_write(0, 0, data));
  ASSERT_TRUE(write && !write->is_error());
  auto read = good->call(kRegionRead, testing::region_read(0, 0, 4));
  ASSERT_TRUE(read && !read->is_error());
  EXPECT_EQ(read->payload[kRegionAccessSize], 9);
}

// The payload is read without polling first when the header has arrived; a payload
// that comes later must still be waited for, not mistaken for a closed connection.
TEST_F(ProtocolTest, PayloadArrivingAfterTheHeaderIsWaitedFor) {
  ASSERT_TRUE(client_->negotiate());
  const std::array<std::uint8_t, 4> data{1, 2, 3, 4};
  const auto payload = testing::region_write(0, 0x20, data);
  const std::uint16_t id = 77;
  const std::uint16_t command = kRegionWrite;
  const auto size = static_cast<std::uint32_t>(kHeaderSize + payload.bytes().size());
  std::array<std::uint8_t, kHeaderSize> head{};
  std::memcpy(head.data() + 0, &id, 2);
  std::memcpy(head.data() + 2, &command, 2);
  std::memcpy(head.data() + 4, &size, 4);
  ASSERT_TRUE(client_->send_raw(head));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_TRUE(client_->send_raw(payload));
  auto reply = client_->receive();
  expect_ok(reply);
  EXPECT_EQ(reply->header.msg_id, id);
  EXPECT_EQ(read_bar(0x20, 4), std::vector<std::uint8_t>(data.begin(), data.end()));
}

TEST(ServerStatsTest, CountsMessagesByCommandRegionAndPosted) {
  ScratchFunction function;
  const std::string path = temp_socket_path("stats.sock");
  auto server = VfioUserServer::create(path, function, function.guest_memory());
  ASSERT_TRUE(server);
  EXPECT_TRUE((*server)->stats().empty());  // off until enabled
  (*server)->enable_stats();
  (*server)->start();
  auto client = TestClient::connect(path);
  ASSERT_TRUE(client && client->negotiate());
  const std::array<std::uint8_t, 4> data{5, 6, 7, 8};
  for (int i = 0; i < 3; ++i) {
    client->send_command(kRegionWrite, testing::region_write(0, 0x40, data), {}, kFlagNoReply);
  }
  auto read = client->call(kRegionRead, testing::region_read(0, 0x40, 4));
  ASSERT_TRUE(read && !read->is_error());
  auto config = client->call(kRegionRead, testing::region_read(kRegionConfig, 0, 4));
  ASSERT_TRUE(config && !config->is_error());
  client->close();
  (*server)->stop();
  std::map<std::string, std::uint64_t> counts;
  for (const auto& row : (*server)->stats()) counts[row.what] = row.messages;
  EXPECT_EQ(counts, (std::map<std::string, std::uint64_t>{{"VERSION", 1},
                                                          {"REGION_WRITE region 0 posted", 3},
                                                          {"REGION_READ region 0", 1},
                                                          {"REGION_READ region 7", 1}}));
  EXPECT_EQ((*server)->interrupts_signalled(), 0u);  // the scratch device raised none
}

TEST(ServerCreateTest, RefusesPathsThatAreNotSockets) {
  ScratchFunction function;
  const std::string path = temp_socket_path("regular-file");
  { std::ofstream(path) << "x"; }
  EXPECT_FALSE(VfioUserServer::create(path, function, function.guest_memory()).has_value());
  EXPECT_FALSE(
      VfioUserServer::create(std::string(200, 'a'), function, function.guest_memory()).has_value());
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace vpci::server
