// TapBackend against the real Linux tun driver, in a network namespace of the test's own
// (unshare(CLONE_NEWNET) at start: nothing is created in, or sent to, the machine's own
// namespace). Needs CAP_SYS_ADMIN and CAP_NET_ADMIN: label "root", outside the fast tier.
// The kernel's side of the tap is reached with an AF_PACKET socket bound to it, so a
// frame the device sends is seen as the stack receives it, and a frame the stack sends
// is what the device reads.
#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <string>
#include <vector>

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include "devices/net_spec.h"
#include "devices/tap_backend.h"

namespace vpci::devices {
namespace {

// IEEE 802 local experimental EtherType: nothing else in the namespace sends it.
constexpr std::uint16_t kTestEtherType = 0x88b5;

class OwnNetworkNamespace : public ::testing::Environment {
 public:
  void SetUp() override {
    if (::unshare(CLONE_NEWNET) != 0) {
      FAIL() << "unshare(CLONE_NEWNET): " << std::strerror(errno)
             << " (these tests need root; they carry the CTest label \"root\")";
    }
  }
};
const auto* const kNamespace = ::testing::AddGlobalTestEnvironment(new OwnNetworkNamespace);

// A tap made the way `ip tuntap add` makes one: persistent, no process attached.
class PersistentTap {
 public:
  PersistentTap(const std::string& name, bool multi_queue) : name_(name) {
    const int fd = ::open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    ifreq request{};
    std::strncpy(request.ifr_name, name.c_str(), IFNAMSIZ - 1);
    request.ifr_flags = static_cast<short>(IFF_TAP | IFF_NO_PI | IFF_VNET_HDR |
                                           (multi_queue ? IFF_MULTI_QUEUE : 0));
    ok_ = fd >= 0 && ::ioctl(fd, TUNSETIFF, &request) == 0 && ::ioctl(fd, TUNSETPERSIST, 1) == 0;
    if (fd >= 0) ::close(fd);
  }
  ~PersistentTap() {
    const int fd = ::open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    ifreq request{};
    std::strncpy(request.ifr_name, name_.c_str(), IFNAMSIZ - 1);
    request.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    if (::ioctl(fd, TUNSETIFF, &request) != 0) {
      request.ifr_flags = static_cast<short>(request.ifr_flags | IFF_MULTI_QUEUE);
      (void)::ioctl(fd, TUNSETIFF, &request);
    }
    (void)::ioctl(fd, TUNSETPERSIST, 0);
    ::close(fd);
  }
  PersistentTap(const PersistentTap&) = delete;
  PersistentTap& operator=(const PersistentTap&) = delete;
  [[nodiscard]] bool ok() const { return ok_; }

 private:
  std::string name_;
  bool ok_ = false;
};

bool set_up(const std::string& name) {
  const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ifreq request{};
  std::strncpy(request.ifr_name, name.c_str(), IFNAMSIZ - 1);
  const bool ok = fd >= 0 && ::ioctl(fd, SIOCGIFFLAGS, &request) == 0 &&
                  (request.ifr_flags = static_cast<short>(request.ifr_flags | IFF_UP),
                   ::ioctl(fd, SIOCSIFFLAGS, &request) == 0);
  if (fd >= 0) ::close(fd);
  return ok;
}

// The stack's side of a tap: raw frames of kTestEtherType in and out.
class StackSide {
 public:
  explicit StackSide(const std::string& name) : index_(::if_nametoindex(name.c_str())) {
    fd_ = ::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(kTestEtherType));
    sockaddr_ll address{};
    address.sll_family = AF_PACKET;
    address.sll_protocol = htons(kTestEtherType);
    address.sll_ifindex = static_cast<int>(index_);
    if (fd_ >= 0 && ::bind(fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }
  ~StackSide() {
    if (fd_ >= 0) ::close(fd_);
  }
  StackSide(const StackSide&) = delete;
  StackSide& operator=(const StackSide&) = delete;
  [[nodiscard]] bool ok() const { return fd_ >= 0; }

  bool send(const std::vector<std::uint8_t>& frame) {
    return ::send(fd_, frame.data(), frame.size(), 0) == static_cast<ssize_t>(frame.size());
  }
  // The next frame the stack received, waiting up to a second.
  std::optional<std::vector<std::uint8_t>> receive() {
    timeval limit{1, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof(limit));
    std::vector<std::uint8_t> frame(70000);
    const ssize_t n = ::recv(fd_, frame.data(), frame.size(), 0);
    if (n < 0) return std::nullopt;
    frame.resize(static_cast<std::size_t>(n));
    return frame;
  }

 private:
  unsigned index_;
  int fd_ = -1;
};

std::vector<std::uint8_t> test_frame(std::size_t size, std::uint8_t source) {
  std::vector<std::uint8_t> frame = {0x52,
                                     0x54,
                                     0x00,
                                     0x00,
                                     0x00,
                                     0x01,  // destination
                                     0x52,
                                     0x54,
                                     0x00,
                                     0x00,
                                     0x01,
                                     source,  // source
                                     kTestEtherType >> 8,
                                     kTestEtherType & 0xff};
  while (frame.size() < size) frame.push_back(static_cast<std::uint8_t>(frame.size() * 3));
  return frame;
}

// The next kTestEtherType frame the device reads from pair `pair` (the stack may send its
// own, IPv6 neighbour discovery say), without its `header` bytes; waits up to a second.
std::optional<std::vector<std::uint8_t>> device_receive(TapBackend& tap, unsigned pair,
                                                        std::size_t header,
                                                        std::size_t room = 70000) {
  std::vector<std::uint8_t> buffer(room);
  for (int i = 0; i < 1000; ++i) {
    auto got = tap.receive(pair, buffer);
    if (!got) {
      ADD_FAILURE() << got.error().message;
      return std::nullopt;
    }
    if (!*got) {
      ::usleep(1000);
      continue;
    }
    const std::size_t length = **got;
    if (length >= header + 14 && buffer[header + 12] == (kTestEtherType >> 8) &&
        buffer[header + 13] == (kTestEtherType & 0xff)) {
      buffer.resize(length);
      buffer.erase(buffer.begin(), buffer.begin() + static_cast<std::ptrdiff_t>(header));
      return buffer;
    }
  }
  return std::nullopt;
}

Result<bool> device_send(TapBackend& tap, const net::Header& header, unsigned header_size,
                         const std::vector<std::uint8_t>& frame) {
  const iovec parts[2] = {{const_cast<net::Header*>(&header), header_size},
                          {const_cast<std::uint8_t*>(frame.data()), frame.size()}};
  return tap.send(0, parts);
}

TEST(TapBackend, CreatesAMissingTapThatGoesAwayWithIt) {
  ASSERT_EQ(::if_nametoindex("vpcit0"), 0u);
  {
    auto tap = TapBackend::open("vpcit0", 1);
    ASSERT_TRUE(tap.has_value()) << tap.error().message;
    EXPECT_TRUE((*tap)->created());
    EXPECT_NE(::if_nametoindex("vpcit0"), 0u);
    EXPECT_EQ((*tap)->name(), "tap vpcit0");
  }
  EXPECT_EQ(::if_nametoindex("vpcit0"), 0u);
}

TEST(TapBackend, OpensAnExistingTapByNameAndLeavesIt) {
  PersistentTap existing("vpcit1", false);
  ASSERT_TRUE(existing.ok());
  {
    auto tap = TapBackend::open("vpcit1", 1);
    ASSERT_TRUE(tap.has_value()) << tap.error().message;
    EXPECT_FALSE((*tap)->created());
  }
  EXPECT_NE(::if_nametoindex("vpcit1"), 0u);
}

TEST(TapBackend, RefusesWithTheReason) {
  auto long_name = TapBackend::open("a-name-too-long0", 1);
  ASSERT_FALSE(long_name.has_value());
  EXPECT_NE(long_name.error().message.find("1 to 15 characters"), std::string::npos)
      << long_name.error().message;

  PersistentTap single("vpcit2", false);
  ASSERT_TRUE(single.ok());
  auto two_pairs = TapBackend::open("vpcit2", 2);
  ASSERT_FALSE(two_pairs.has_value());
  EXPECT_NE(two_pairs.error().message.find("single-queue"), std::string::npos)
      << two_pairs.error().message;

  auto loopback = TapBackend::open("lo", 1);
  ASSERT_FALSE(loopback.has_value());
  EXPECT_NE(loopback.error().message.find("interface lo exists and is not a tap"),
            std::string::npos)
      << loopback.error().message;

  PersistentTap multi("vpcit7", true);
  ASSERT_TRUE(multi.ok());
  auto one_pair = TapBackend::open("vpcit7", 1);
  ASSERT_FALSE(one_pair.has_value());
  EXPECT_NE(one_pair.error().message.find("tap vpcit7 is multi-queue"), std::string::npos)
      << one_pair.error().message;

  auto first = TapBackend::open("vpcit2", 1);
  ASSERT_TRUE(first.has_value()) << first.error().message;
  auto second = TapBackend::open("vpcit2", 1);
  ASSERT_FALSE(second.has_value());
  EXPECT_NE(second.error().message.find("in use"), std::string::npos) << second.error().message;
}

TEST(TapBackend, HeadersPassUntranslatedAtTheNegotiatedSize) {
  auto tap = TapBackend::open("vpcit3", 1);
  ASSERT_TRUE(tap.has_value()) << tap.error().message;
  ASSERT_TRUE((*tap)->set_header_size(net::kHeaderSize));
  ASSERT_TRUE((*tap)->set_offloads(0));
  ASSERT_TRUE(set_up("vpcit3"));
  StackSide stack("vpcit3");
  ASSERT_TRUE(stack.ok());

  // Device -> stack: the 12-byte header is consumed, the frame arrives byte for byte.
  const auto out = test_frame(300, 1);
  auto sent = device_send(**tap, net::Header{}, net::kHeaderSize, out);
  ASSERT_TRUE(sent.has_value()) << sent.error().message;
  EXPECT_TRUE(*sent);
  EXPECT_EQ(stack.receive(), out);

  // Stack -> device, at 12 and then 10 bytes of header (a legacy driver without
  // MRG_RXBUF): the frame follows exactly that many bytes.
  for (const unsigned header : {net::kHeaderSize, net::kLegacyHeaderSize}) {
    ASSERT_TRUE((*tap)->set_header_size(header));
    const auto in = test_frame(200 + header, 2);
    ASSERT_TRUE(stack.send(in));
    EXPECT_EQ(device_receive(**tap, 0, header), in) << header << "-byte header";
  }
}

TEST(TapBackend, AMalformedHeaderFailsThatFrameOnly) {
  auto tap = TapBackend::open("vpcit4", 1);
  ASSERT_TRUE(tap.has_value()) << tap.error().message;
  ASSERT_TRUE((*tap)->set_header_size(net::kHeaderSize));
  ASSERT_TRUE(set_up("vpcit4"));
  StackSide stack("vpcit4");
  ASSERT_TRUE(stack.ok());
  const auto frame = test_frame(400, 3);

  // GSO without a segment size, and a checksum to be placed past the frame's end: the
  // kernel refuses both (virtio_net_hdr_to_skb), the device drops them.
  net::Header gso_without_size{};
  gso_without_size.gso_type = net::kGsoTcpv4;
  net::Header checksum_outside{};
  checksum_outside.flags = net::kHeaderFlagNeedsCsum;
  checksum_outside.csum_start = 1000;
  checksum_outside.csum_offset = 16;
  for (const net::Header& bad : {gso_without_size, checksum_outside}) {
    auto refused = device_send(**tap, bad, net::kHeaderSize, frame);
    ASSERT_FALSE(refused.has_value());
    EXPECT_EQ(refused.error().code, ErrorCode::kInvalidArgument) << refused.error().message;
    EXPECT_NE(refused.error().message.find("tap vpcit4"), std::string::npos);
  }
  // The tap keeps working for the next frame.
  auto sent = device_send(**tap, net::Header{}, net::kHeaderSize, frame);
  ASSERT_TRUE(sent.has_value()) << sent.error().message;
  EXPECT_EQ(stack.receive(), frame);
}

TEST(TapBackend, AFrameLargerThanTheBufferIsAnErrorNotATruncation) {
  auto tap = TapBackend::open("vpcit5", 1);
  ASSERT_TRUE(tap.has_value()) << tap.error().message;
  ASSERT_TRUE((*tap)->set_header_size(net::kHeaderSize));
  ASSERT_TRUE(set_up("vpcit5"));
  StackSide stack("vpcit5");
  ASSERT_TRUE(stack.ok());

  ASSERT_TRUE(stack.send(test_frame(1000, 4)));
  std::vector<std::uint8_t> small(500);
  std::optional<Error> error;
  for (int i = 0; i < 1000 && !error; ++i) {
    auto got = (*tap)->receive(0, small);
    if (!got)
      error = got.error();
    else if (!*got)
      ::usleep(1000);
    // A short frame of the stack's own (neighbour discovery) fits and is skipped.
  }
  ASSERT_TRUE(error.has_value()) << "a 1012-byte frame was read into 500 bytes without error";
  EXPECT_EQ(error->code, ErrorCode::kOutOfRange);
  EXPECT_NE(error->message.find("larger than 500 bytes"), std::string::npos) << error->message;
  // The next frame is whole.
  const auto next = test_frame(100, 5);
  ASSERT_TRUE(stack.send(next));
  EXPECT_EQ(device_receive(**tap, 0, net::kHeaderSize), next);
}

TEST(TapBackend, DetachedQueuePairsGetNoFrames) {
  auto tap = TapBackend::open("vpcit6", 2);
  ASSERT_TRUE(tap.has_value()) << tap.error().message;
  ASSERT_TRUE((*tap)->set_header_size(net::kHeaderSize));
  ASSERT_TRUE((*tap)->set_active_pairs(1));
  ASSERT_TRUE(set_up("vpcit6"));
  StackSide stack("vpcit6");
  ASSERT_TRUE(stack.ok());
  // Twenty flows (source MACs): with pair 1 detached (VQ_PAIRS_SET 1) all reach pair 0.
  for (std::uint8_t flow = 0; flow < 20; ++flow) ASSERT_TRUE(stack.send(test_frame(80, flow)));
  int on_first = 0;
  while (device_receive(**tap, 0, net::kHeaderSize)) ++on_first;
  EXPECT_EQ(on_first, 20);
  std::vector<std::uint8_t> buffer(2048);
  auto second = (*tap)->receive(1, buffer);
  ASSERT_TRUE(second.has_value()) << second.error().message;
  EXPECT_FALSE(second->has_value()) << "a detached queue received a frame";
  // Attached again, both queues are usable.
  EXPECT_TRUE((*tap)->set_active_pairs(2));
}

}  // namespace
}  // namespace vpci::devices
