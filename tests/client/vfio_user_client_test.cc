// The vfio-user client (client/vfio_user_client.h) against vpci's own server over a real
// socket, and against scripted hostile servers: truncated replies, bogus sizes, replies
// to the wrong message, fd floods, looping capability chains, a server that never
// answers — each an error naming what was wrong, within the client's timeout, with every
// fd closed.
#include "client/vfio_user_client.h"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <thread>

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "devices/virtio_rng.h"
#include "server/protocol.h"
#include "server/socket_server.h"
#include "tests/server/test_client.h"
#include "tests/support/scratch_dir.h"
#include "virtio/pci/virtio_pci_function.h"

namespace vpci::client {
namespace {

namespace wire = vpci::server::vfio_user;
using namespace std::chrono_literals;
using server::UniqueFd;

std::string socket_path(const vpci::testing::ScratchDir& dir, const char* name) {
  return (dir.path() / name).string();
}

// ---- against vpci's own server ----------------------------------------------------------

TEST(VfioUserClient, ReadsWhatVpcisServerServes) {
  vpci::testing::ScratchDir dir("client");
  auto memory = std::make_shared<virtio::GuestMemory>();
  auto function =
      virtio::pci::VirtioPciFunction::create(std::make_unique<devices::RngDevice>(), memory);
  ASSERT_TRUE(function.has_value());
  const std::string path = socket_path(dir, "rng.sock");
  auto server = server::VfioUserServer::create(path, **function, memory);
  ASSERT_TRUE(server.has_value()) << server.error().message;
  (*server)->start();

  auto client = VfioUserClient::connect(path);
  ASSERT_TRUE(client.has_value()) << client.error().message;
  EXPECT_EQ((*client)->version().major, 0);
  EXPECT_EQ((*client)->version().max_msg_fds, wire::kMaxMsgFds);
  EXPECT_EQ((*client)->version().max_data_xfer_size, wire::kMaxDataXferSize);

  auto info = (*client)->device_info();
  ASSERT_TRUE(info.has_value()) << info.error().message;
  EXPECT_EQ(info->flags, wire::kDeviceFlagReset | wire::kDeviceFlagPci);
  EXPECT_EQ(info->num_regions, 9u);
  EXPECT_EQ(info->num_irqs, 5u);
  auto config = (*client)->region_info(kPciConfigRegion);
  ASSERT_TRUE(config.has_value()) << config.error().message;
  EXPECT_EQ(config->size, 4096u);
  auto bar4 = (*client)->region_info(4);
  ASSERT_TRUE(bar4.has_value());
  EXPECT_EQ(bar4->size, (*function)->bar_info(4).size);
  auto msix = (*client)->irq_info(2);
  ASSERT_TRUE(msix.has_value());
  EXPECT_EQ(msix->count, (*function)->msix_vector_count());

  // The whole config space, byte for byte what the function holds.
  std::vector<std::uint8_t> read(4096);
  ASSERT_TRUE((*client)->region_read(kPciConfigRegion, 0, read));
  std::vector<std::uint8_t> expected(4096);
  ASSERT_TRUE((*function)->config_read(0, expected));
  EXPECT_EQ(read, expected);
  // A write reaches the function; a reset clears it again.
  const std::array<std::uint8_t, 2> memory_enable = {2, 0};
  ASSERT_TRUE((*client)->region_write(kPciConfigRegion, 4, memory_enable));
  std::array<std::uint8_t, 2> command{};
  ASSERT_TRUE((*client)->region_read(kPciConfigRegion, 4, command));
  EXPECT_EQ(command[0] & 2, 2);
  ASSERT_TRUE((*client)->reset());
  ASSERT_TRUE((*client)->region_read(kPciConfigRegion, 4, command));
  EXPECT_EQ(command[0] & 2, 0);
  // A region the server refuses: its errno, named.
  std::array<std::uint8_t, 4> beyond{};
  auto refused = (*client)->region_read(kPciConfigRegion, 4094, beyond);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message.find("REGION_READ failed"), std::string::npos)
      << refused.error().message;
}

TEST(VfioUserClient, ConnectNamesAMissingSocket) {
  auto client = VfioUserClient::connect("/nonexistent/vpci.sock");
  ASSERT_FALSE(client);
  EXPECT_EQ(client.error().message,
            "cannot connect to vfio-user server /nonexistent/vpci.sock: No such file or directory");
  EXPECT_FALSE(VfioUserClient::connect(""));
  EXPECT_FALSE(VfioUserClient::connect(std::string(200, 'x')));
}

// ---- scripted hostile servers -----------------------------------------------------------

// A server that accepts one connection and answers each message with what `script`
// sends (script gets the socket, the request's header and payload; returns false to stop
// answering but keep the connection open).
class ScriptedServer {
 public:
  using Script =
      std::function<bool(int fd, const wire::Header& request, const std::vector<std::uint8_t>&)>;

  ScriptedServer(std::string path, Script script) : path_(std::move(path)) {
    listener_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::copy(path_.begin(), path_.end(), address.sun_path);
    EXPECT_EQ(::bind(listener_.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
    EXPECT_EQ(::listen(listener_.get(), 1), 0);
    thread_ = std::thread([this, script = std::move(script)] { serve(script); });
  }
  ~ScriptedServer() {
    stop_ = true;
    thread_.join();
  }
  ScriptedServer(const ScriptedServer&) = delete;
  ScriptedServer& operator=(const ScriptedServer&) = delete;

 private:
  bool read_exact(int fd, std::uint8_t* out, std::size_t length) {
    std::size_t done = 0;
    while (done < length && !stop_) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      const ssize_t n = ::recv(fd, out + done, length - done, 0);
      if (n <= 0) return false;
      done += static_cast<std::size_t>(n);
    }
    return done == length;
  }
  void serve(const Script& script) {
    pollfd p{listener_.get(), POLLIN, 0};
    while (!stop_ && ::poll(&p, 1, 20) == 0) {
    }
    if (stop_) return;
    UniqueFd connection(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    bool answering = true;
    while (!stop_) {
      std::array<std::uint8_t, wire::kHeaderSize> head{};
      if (!read_exact(connection.get(), head.data(), head.size())) break;
      const wire::Header header = wire::decode_header(head);
      std::vector<std::uint8_t> payload(header.message_size - wire::kHeaderSize);
      if (!read_exact(connection.get(), payload.data(), payload.size())) break;
      if (answering) answering = script(connection.get(), header, payload);
    }
    while (!stop_) std::this_thread::sleep_for(5ms);  // keep the connection open
  }

  std::string path_;
  UniqueFd listener_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
};

// The reply header to `request` with `payload_size` bytes after it.
std::vector<std::uint8_t> reply_to(const wire::Header& request, std::size_t payload_size,
                                   std::uint32_t flags = wire::kTypeReply) {
  wire::Header header;
  header.msg_id = request.msg_id;
  header.command = request.command;
  header.message_size = static_cast<std::uint32_t>(wire::kHeaderSize + payload_size);
  header.flags = flags;
  std::vector<std::uint8_t> bytes;
  wire::encode_header(bytes, header);
  return bytes;
}

void send_bytes(int fd, std::span<const std::uint8_t> bytes, std::span<const int> fds = {}) {
  iovec iov{const_cast<std::uint8_t*>(bytes.data()), bytes.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  std::vector<char> control(CMSG_SPACE(sizeof(int) * std::max<std::size_t>(fds.size(), 1)));
  if (!fds.empty()) {
    msg.msg_control = control.data();
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  EXPECT_EQ(::sendmsg(fd, &msg, MSG_NOSIGNAL), static_cast<ssize_t>(bytes.size()));
}

// A well-behaved VERSION reply (0.0, no capabilities), then `rest` for every later request.
ScriptedServer::Script after_version(ScriptedServer::Script rest) {
  return [rest = std::move(rest)](int fd, const wire::Header& request,
                                  const std::vector<std::uint8_t>& payload) {
    if (request.command == wire::kVersion) {
      auto bytes = reply_to(request, sizeof(wire::VersionPayload));
      wire::append_wire(bytes, wire::VersionPayload{0, 0});
      send_bytes(fd, bytes);
      return true;
    }
    return rest(fd, request, payload);
  };
}

// A GET_INFO reply announcing `regions` and `irqs`.
ScriptedServer::Script device_info_reply(std::uint32_t regions, std::uint32_t irqs) {
  return [=](int fd, const wire::Header& request, const std::vector<std::uint8_t>&) {
    auto bytes = reply_to(request, sizeof(wire::DeviceInfoPayload));
    wire::append_wire(bytes, wire::DeviceInfoPayload{16, 3, regions, irqs});
    send_bytes(fd, bytes);
    return true;
  };
}

// A PCI device with 9 regions and 5 IRQ indexes whose REGION_READs read zeroes; every
// other request (GET_REGION_INFO) goes to `rest`.
ScriptedServer::Script device_with(ScriptedServer::Script rest) {
  return after_version([rest = std::move(rest)](int fd, const wire::Header& request,
                                                const std::vector<std::uint8_t>& payload) {
    if (request.command == wire::kDeviceGetInfo)
      return device_info_reply(9, 5)(fd, request, payload);
    if (request.command == wire::kRegionRead) {
      const auto access = wire::read_wire<wire::RegionAccessPayload>(payload);
      auto bytes = reply_to(request, payload.size() + access.count);
      bytes.insert(bytes.end(), payload.begin(), payload.end());
      bytes.insert(bytes.end(), access.count, 0);
      send_bytes(fd, bytes);
      return true;
    }
    return rest(fd, request, payload);
  });
}

struct HostileCase {
  const char* name;
  ScriptedServer::Script script;
  const char* expected;  // a part of the error message
};

Result<RegionInfo> exercise(VfioUserClient& client) {
  VPCI_ASSIGN_OR_RETURN(const DeviceInfo info, client.device_info());
  (void)info;
  std::array<std::uint8_t, 64> config{};
  VPCI_TRY(client.region_read(kPciConfigRegion, 0, config));
  return client.region_info(kPciConfigRegion);
}

TEST(VfioUserClient, HostileServersAreErrorsWithinTheTimeout) {
  const std::size_t fds_before = server::testing::open_fd_count();
  const int spare_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(spare_fd, 0);
  const std::vector<HostileCase> cases = {
      {"silent", [](int, const wire::Header&, const std::vector<std::uint8_t>&) { return false; },
       "no reply to VERSION within 300 ms"},
      {"version 1.0",
       [](int fd, const wire::Header& request, const std::vector<std::uint8_t>&) {
         auto bytes = reply_to(request, sizeof(wire::VersionPayload));
         wire::append_wire(bytes, wire::VersionPayload{1, 0});
         send_bytes(fd, bytes);
         return true;
       },
       "VERSION reply 1.0"},
      {"unterminated capabilities",
       [](int fd, const wire::Header& request, const std::vector<std::uint8_t>&) {
         const std::string json = R"({"capabilities":{}})";
         auto bytes = reply_to(request, sizeof(wire::VersionPayload) + json.size());
         wire::append_wire(bytes, wire::VersionPayload{0, 0});
         bytes.insert(bytes.end(), json.begin(), json.end());
         send_bytes(fd, bytes);
         return true;
       },
       "not a NUL-terminated JSON object"},
      {"huge transfer size",
       [](int fd, const wire::Header& request, const std::vector<std::uint8_t>&) {
         const std::string json = R"({"capabilities":{"max_data_xfer_size":1099511627776}})";
         auto bytes = reply_to(request, sizeof(wire::VersionPayload) + json.size() + 1);
         wire::append_wire(bytes, wire::VersionPayload{0, 0});
         bytes.insert(bytes.end(), json.begin(), json.end());
         bytes.push_back(0);
         send_bytes(fd, bytes);
         return true;
       },
       "max_data_xfer_size = 1099511627776: expected 4096 to 67108864"},
      {"bogus size",
       [](int fd, const wire::Header& request, const std::vector<std::uint8_t>&) {
         auto bytes = reply_to(request, 0);
         wire::store<std::uint32_t>(bytes, 4, 0xFFFFFFF0u);
         send_bytes(fd, bytes);
         return true;
       },
       "a message larger than"},
      {"wrong id",
       [](int fd, const wire::Header& request, const std::vector<std::uint8_t>&) {
         wire::Header other = request;
         other.msg_id = static_cast<std::uint16_t>(request.msg_id + 7);
         send_bytes(fd, reply_to(other, 0));
         return true;
       },
       "a reply to message 8 (VERSION) while 1 was awaited"},
      {"closes mid-reply",
       [](int fd, const wire::Header& request, const std::vector<std::uint8_t>&) {
         auto bytes = reply_to(request, 4);  // promises 4 payload bytes, sends none
         send_bytes(fd, bytes);
         ::shutdown(fd, SHUT_RDWR);
         return false;
       },
       "closed the connection during VERSION"},
      {"too many regions", after_version(device_info_reply(1000, 5)),
       "GET_INFO announces 1000 regions"},
      {"short region read",
       after_version(
           [&](int fd, const wire::Header& request, const std::vector<std::uint8_t>& payload) {
             if (request.command == wire::kDeviceGetInfo)
               return device_info_reply(9, 5)(fd, request, payload);
             auto bytes = reply_to(request, sizeof(wire::RegionAccessPayload) + 3);
             bytes.insert(bytes.end(), payload.begin(), payload.begin() + 16);
             bytes.insert(bytes.end(), 3, 0xAB);
             send_bytes(fd, bytes);
             return true;
           }),
       "REGION_READ of 64 bytes at region 7 offset 0x0 answered with 19 payload bytes"},
      {"fd flood",
       device_with([&](int fd, const wire::Header& request, const std::vector<std::uint8_t>&) {
         auto bytes = reply_to(request, sizeof(wire::RegionInfoPayload));
         wire::append_wire(bytes, wire::RegionInfoPayload{32, 7, kPciConfigRegion, 0, 4096, 0});
         const std::vector<int> fds(8, spare_fd);
         send_bytes(fd, bytes, fds);
         return true;
       }),
       "GET_REGION_INFO region 7 came with 8 fds (at most 1)"},
      {"looping capabilities",
       device_with([](int fd, const wire::Header& request, const std::vector<std::uint8_t>&) {
         // A capability (of a kind the client skips) at 32 whose next points back at itself.
         auto bytes = reply_to(request, 40);
         wire::append_wire(bytes,
                           wire::RegionInfoPayload{40, 3 | 8, kPciConfigRegion, 32, 4096, 0});
         wire::append<std::uint16_t>(bytes, 99);
         wire::append<std::uint16_t>(bytes, 1);
         wire::append<std::uint32_t>(bytes, 32);
         send_bytes(fd, bytes);
         return true;
       }),
       "capability at offset 32 outside the 40-byte reply or out of order"},
  };
  vpci::testing::ScratchDir dir("client-hostile");
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string path = socket_path(dir, "hostile.sock");
    std::filesystem::remove(path);
    ScriptedServer server(path, c.script);
    ClientOptions options;
    options.timeout = 300ms;
    const auto started = std::chrono::steady_clock::now();
    std::string message;
    if (auto client = VfioUserClient::connect(path, options); !client) {
      message = client.error().message;
    } else if (auto result = exercise(**client); !result) {
      message = result.error().message;
    }
    const auto took = std::chrono::steady_clock::now() - started;
    EXPECT_NE(message.find(c.expected), std::string::npos) << message;
    // Within the timeout (each wait is bounded by it; a case makes at most a few).
    EXPECT_LT(took, 3s);
  }
  ::close(spare_fd);
  EXPECT_EQ(server::testing::open_fd_count(), fds_before) << "a received fd was not closed";
}

// A server's DMA_READ while the client waits for a reply is answered (EFAULT: the client
// maps nothing), and the awaited reply still arrives.
TEST(VfioUserClient, AServersDmaRequestIsAnsweredWhileWaiting) {
  vpci::testing::ScratchDir dir("client-dma");
  std::atomic<std::uint32_t> dma_error{0};
  ScriptedServer server(
      socket_path(dir, "dma.sock"),
      after_version([&](int fd, const wire::Header& request, const std::vector<std::uint8_t>&) {
        if (request.command == wire::kDeviceGetInfo) {
          // Ask for 16 bytes at 0x1000 first.
          wire::Header dma;
          dma.msg_id = 77;
          dma.command = wire::kDmaRead;
          dma.message_size = wire::kHeaderSize + 16;
          dma.flags = wire::kTypeCommand;
          std::vector<std::uint8_t> bytes;
          wire::encode_header(bytes, dma);
          wire::append<std::uint64_t>(bytes, 0x1000);
          wire::append<std::uint64_t>(bytes, 16);
          send_bytes(fd, bytes);
          auto reply = reply_to(request, sizeof(wire::DeviceInfoPayload));
          wire::append_wire(reply, wire::DeviceInfoPayload{16, 3, 9, 5});
          send_bytes(fd, reply);
          return true;
        }
        // The client's answer to the DMA_READ arrives as the next "request".
        if (request.command == wire::kDmaRead && request.msg_id == 77 &&
            (request.flags & wire::kFlagError) != 0) {
          dma_error = request.error;
        }
        return true;
      }));
  auto client = VfioUserClient::connect(socket_path(dir, "dma.sock"));
  ASSERT_TRUE(client.has_value()) << client.error().message;
  auto info = (*client)->device_info();
  ASSERT_TRUE(info.has_value()) << info.error().message;
  EXPECT_EQ(info->num_regions, 9u);
  for (int i = 0; i < 100 && dma_error == 0; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(dma_error, static_cast<std::uint32_t>(EFAULT));
}

}  // namespace
}  // namespace vpci::client
