#include "tests/devices/net_harness.h"

#include <fcntl.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>

#include <sys/uio.h>

namespace vpci::devices::testing {
namespace {

using virtio::testing::ChainBuilder;

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "net harness: %s\n", what);
  std::abort();
}

}  // namespace

SocketPacketBackend::SocketPacketBackend(unsigned pairs) {
  for (unsigned i = 0; i < pairs; ++i) {
    int fds[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) != 0)
      die("socketpair");
    device_fds_.push_back(fds[0]);
    test_fds_.push_back(fds[1]);
  }
}

SocketPacketBackend::~SocketPacketBackend() {
  for (const int fd : device_fds_) ::close(fd);
  for (const int fd : test_fds_) ::close(fd);
}

Result<std::optional<std::size_t>> SocketPacketBackend::receive(unsigned pair,
                                                                std::span<std::uint8_t> out) {
  std::uint8_t spare = 0;
  iovec parts[2] = {{out.data(), out.size()}, {&spare, 1}};
  const ssize_t n = ::readv(device_fds_.at(pair), parts, 2);
  if (n < 0) {
    if (errno == EAGAIN) return std::optional<std::size_t>{};
    return make_error(ErrorCode::kIoError, "readv: {}", errno_text(errno));
  }
  if (static_cast<std::size_t>(n) > out.size())
    return make_error(ErrorCode::kOutOfRange, "frame larger than {} bytes", out.size());
  return std::optional<std::size_t>{static_cast<std::size_t>(n)};
}

Result<bool> SocketPacketBackend::send(unsigned pair, std::span<const iovec> frame) {
  if (refuse_sends > 0) {
    --refuse_sends;
    return false;
  }
  if (reject_frames) return make_error(ErrorCode::kInvalidArgument, "bad header (injected)");
  const ssize_t n = ::writev(device_fds_.at(pair), frame.data(), static_cast<int>(frame.size()));
  if (n < 0)
    return errno == EAGAIN ? Result<bool>(false)
                           : make_error(ErrorCode::kIoError, "writev: {}", errno_text(errno));
  return true;
}

void SocketPacketBackend::inject(unsigned pair, std::span<const std::uint8_t> frame) {
  if (::send(test_fds_.at(pair), frame.data(), frame.size(), 0) !=
      static_cast<ssize_t>(frame.size()))
    die("inject");
}

bool SocketPacketBackend::try_inject(unsigned pair, std::span<const std::uint8_t> frame) {
  const ssize_t n = ::send(test_fds_.at(pair), frame.data(), frame.size(), MSG_DONTWAIT);
  if (n < 0 && errno == EAGAIN) return false;
  if (n != static_cast<ssize_t>(frame.size())) die("try_inject");
  return true;
}

std::optional<std::vector<std::uint8_t>> SocketPacketBackend::sent(unsigned pair) {
  std::vector<std::uint8_t> frame(70000);
  const ssize_t n = ::recv(test_fds_.at(pair), frame.data(), frame.size(), MSG_DONTWAIT);
  if (n < 0) return std::nullopt;
  frame.resize(static_cast<std::size_t>(n));
  return frame;
}

NetHarness::NetHarness(NetDeviceOptions options, std::uint64_t features) {
  auto loop = EventLoop::create();
  if (!loop) die("event loop");
  loop_ = std::move(*loop);
  ram_ = std::make_unique<virtio::testing::FakeGuestRam>(memory_, 0x1000000, 16 << 20);
  auto backend = std::make_unique<SocketPacketBackend>(options.queue_pairs);
  backend_ = backend.get();
  auto device = NetDevice::create(std::move(backend), options);
  if (!device) die("NetDevice::create");
  device_ = device->get();
  const std::uint16_t queues = (*device)->num_queues();
  core_ = std::make_unique<virtio::DeviceCore>(std::move(*device), memory_, &interrupts_);
  core_->set_event_loop(loop_.get());
  if (!virtio::testing::ModernSetup::initialise(*core_, features)) die("initialisation");
  for (std::uint16_t q = 0; q < queues; ++q) {
    drivers_.push_back(std::make_unique<virtio::testing::SplitRing>(*ram_, 64));
    if (!virtio::testing::ModernSetup::enable_split(*core_, q, *drivers_.back()))
      die("queue enable");
  }
  if (!virtio::testing::ModernSetup::driver_ok(*core_)) die("DRIVER_OK");
}

void NetHarness::run_loop() {
  for (int i = 0; i < 20; ++i) {
    if (!loop_->run_once(std::chrono::milliseconds(1))) die("run_once");
  }
}

void NetHarness::transmit(std::span<const std::uint8_t> header_and_frame, int pieces) {
  ChainBuilder chain(*ram_);
  const std::size_t piece = (header_and_frame.size() + pieces - 1) / pieces;
  for (std::size_t at = 0; at < header_and_frame.size(); at += piece) {
    chain.readable(header_and_frame.subspan(at, std::min(piece, header_and_frame.size() - at)));
  }
  drivers_.at(1)->add(chain);
  if (!core_->notify(1)) die("notify tx");
}

std::vector<ChainBuilder> NetHarness::post_receive_buffers(int count, std::uint32_t bytes) {
  std::vector<ChainBuilder> chains;
  for (int i = 0; i < count; ++i) {
    chains.emplace_back(*ram_);
    chains.back().writable(bytes);
    drivers_.at(0)->add(chains.back());
  }
  if (!core_->notify(0)) die("notify rx");
  return chains;
}

std::optional<std::uint8_t> NetHarness::control(std::uint8_t class_id, std::uint8_t command,
                                                std::span<const std::uint8_t> data) {
  ChainBuilder chain(*ram_);
  const std::array<std::uint8_t, 2> header = {class_id, command};
  chain.readable(header);
  if (!data.empty()) chain.readable(data);
  chain.writable(1);
  const auto queue = static_cast<std::uint16_t>(drivers_.size() - 1);
  drivers_.at(queue)->add(chain);
  if (!core_->notify(queue)) die("notify ctrl");
  auto used = drivers_.at(queue)->pop_used();
  if (!used || used->length != 1) return std::nullopt;
  return chain.written_bytes().at(0);
}

}  // namespace vpci::devices::testing
