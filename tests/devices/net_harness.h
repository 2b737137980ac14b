// Test support for virtio-net: a packet back end made of SOCK_SEQPACKET socket pairs
// (one message per frame, like a tap) whose far ends the test reads and writes, and a
// harness that brings a NetDevice up behind a DeviceCore on an event loop with fake
// split-ring drivers for its queues.
#pragma once

#include <unistd.h>

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include <sys/socket.h>

#include "base/event_loop.h"
#include "devices/virtio_net.h"
#include "tests/virtio/fake_driver.h"
#include "virtio/device_core.h"

namespace vpci::devices::testing {

class SocketPacketBackend final : public PacketBackend {
 public:
  explicit SocketPacketBackend(unsigned pairs);
  ~SocketPacketBackend() override;
  SocketPacketBackend(const SocketPacketBackend&) = delete;
  SocketPacketBackend& operator=(const SocketPacketBackend&) = delete;

  [[nodiscard]] std::string name() const override { return "socket back end"; }
  [[nodiscard]] unsigned queue_pairs() const override {
    return static_cast<unsigned>(device_fds_.size());
  }
  [[nodiscard]] int fd(unsigned pair) const override { return device_fds_.at(pair); }
  [[nodiscard]] Result<std::optional<std::size_t>> receive(unsigned pair,
                                                           std::span<std::uint8_t> out) override;
  [[nodiscard]] Result<bool> send(unsigned pair, std::span<const iovec> frame) override;
  [[nodiscard]] Status set_header_size(unsigned bytes) override {
    header_size = bytes;
    return {};
  }
  [[nodiscard]] Status set_offloads(unsigned tun_offloads) override {
    offloads = tun_offloads;
    return {};
  }
  [[nodiscard]] Status set_active_pairs(unsigned pairs) override {
    active_pairs = pairs;
    return {};
  }

  // The test's side: a frame for the device to receive, and the next frame it sent.
  void inject(unsigned pair, std::span<const std::uint8_t> frame);
  // As inject, but false (nothing sent) when the socket is full, as a tap's queue can be.
  bool try_inject(unsigned pair, std::span<const std::uint8_t> frame);
  std::optional<std::vector<std::uint8_t>> sent(unsigned pair);

  unsigned header_size = 0;
  unsigned offloads = ~0u;
  unsigned active_pairs = 0;
  int refuse_sends = 0;        // answer "full" this many times
  bool reject_frames = false;  // answer EINVAL, as a tap does for a bad header

 private:
  std::vector<int> device_fds_;
  std::vector<int> test_fds_;
};

class NetHarness {
 public:
  // Brings the device up with `features` (those offered are accepted), one fake driver
  // per queue, activated on its own loop.
  NetHarness(NetDeviceOptions options, std::uint64_t features);

  [[nodiscard]] NetDevice& device() { return *device_; }
  [[nodiscard]] virtio::DeviceCore& core() { return *core_; }
  [[nodiscard]] SocketPacketBackend& backend() { return *backend_; }
  [[nodiscard]] virtio::testing::FakeGuestRam& ram() { return *ram_; }
  [[nodiscard]] virtio::testing::SplitRing& driver(std::uint16_t queue) {
    return *drivers_.at(queue);
  }
  // Runs the loop until nothing is ready (bounded).
  void run_loop();

  // Transmit: a chain of `header` + `frame` (cut into `pieces`) on txq 0; kicks.
  void transmit(std::span<const std::uint8_t> header_and_frame, int pieces = 1);
  // Receive: posts `count` device-writable buffers of `bytes` on rxq 0 and kicks.
  std::vector<virtio::testing::ChainBuilder> post_receive_buffers(int count, std::uint32_t bytes);
  // Control: sends class/command/data, returns the ack (nullopt: not answered).
  std::optional<std::uint8_t> control(std::uint8_t class_id, std::uint8_t command,
                                      std::span<const std::uint8_t> data);

 private:
  std::unique_ptr<EventLoop> loop_;
  std::shared_ptr<virtio::GuestMemory> memory_ = std::make_shared<virtio::GuestMemory>();
  std::unique_ptr<virtio::testing::FakeGuestRam> ram_;
  virtio::testing::RecordingInterrupts interrupts_;
  SocketPacketBackend* backend_ = nullptr;
  NetDevice* device_ = nullptr;
  std::unique_ptr<virtio::DeviceCore> core_;
  std::vector<std::unique_ptr<virtio::testing::SplitRing>> drivers_;
};

}  // namespace vpci::devices::testing
