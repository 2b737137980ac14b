// virtio-net (virtio 1.3 §5.1) over a PacketBackend (a Linux tap, devices/tap_backend.h),
// on the device's event loop: frames from the tap wake the device with no doorbell.
// Facts, sources and the checklist this follows: ../shared/reference/virtio-net.md.
//
// Queues (§5.1.2): receiveq i = 2i, transmitq i = 2i + 1 for each of `queue_pairs`
// pairs, and the control queue at 2N, where N is the number of pairs if MQ was
// negotiated and 1 otherwise — so roles are fixed at FEATURES_OK, not at reset.
//
// Header (§5.1.6): 12 bytes with VERSION_1 or MRG_RXBUF, 10 for a legacy driver without
// MRG_RXBUF; recomputed at every feature negotiation and handed to the back end
// (TUNSETVNETHDRSZ), so headers pass untranslated both ways. The device writes
// num_buffers itself (the tap leaves it zero) and clears DATA_VALID unless GUEST_CSUM was
// negotiated. Legacy fields are taken as little-endian: vpci serves x86 guests.
//
// Receive (devices/virtio_net_rx.cc): one frame at a time is read from the tap into a
// bounce buffer sized for the largest frame the negotiation allows and copied into the
// guest's buffers — with MRG_RXBUF spread over as many buffers as it needs, published
// together in one used batch (§5.1.6.4.2: never a partial packet); without it into one
// buffer, a frame that does not fit that buffer being dropped and counted. When the
// guest has no room, the frame waits, the tap is no longer polled, and the next receive
// kick resumes it. Without promiscuous mode (CTRL_RX) frames are filtered by MAC.
//
// Transmit (devices/virtio_net_tx.cc): one writev per frame, zero-copy from guest memory
// where it is host-mapped; frames over the size cap (MTU + Ethernet + VLAN, or 64 KiB
// with GSO) or with a header the kernel refuses are dropped with used length 0; a full
// tap parks the chain until the tap is writable again.
//
// Control (§5.1.6.5, devices/virtio_net_control.cc): RX mode, MAC table, MAC address,
// VQ pairs, guest offloads; answered at once with a one-byte ack; anything else ERR.
//
// Features offered: MAC, STATUS (link up), CSUM, GUEST_CSUM, HOST_TSO4/6, GUEST_TSO4/6,
// MRG_RXBUF, CTRL_VQ, CTRL_RX, CTRL_MAC_ADDR, CTRL_GUEST_OFFLOADS, MQ with more than one
// pair, MTU when configured; the core adds the ring features (EVENT_IDX, INDIRECT_DESC,
// RING_PACKED, VERSION_1; ANY_LAYOUT on the legacy interface).
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <set>
#include <vector>

#include "base/error.h"
#include "base/event_loop.h"
#include "devices/net_spec.h"
#include "devices/packet_backend.h"
#include "virtio/device.h"
#include "virtio/virtqueue.h"

namespace vpci::devices {

struct NetDeviceOptions {
  std::array<std::uint8_t, net::kMacBytes> mac{};
  std::uint16_t queue_pairs = 1;  // 1..kMaxQueuePairs; the back end has as many
  std::uint16_t mtu = 0;          // 0: VIRTIO_NET_F_MTU not offered (1500 assumed)
  std::uint16_t queue_size = 256;
  std::uint16_t control_queue_size = 64;
  // Offer VIRTIO_NET_F_MRG_RXBUF. Without it a legacy driver uses the 10-byte header.
  bool mergeable_rx_buffers = true;
};

struct NetQueueStats {
  std::uint64_t packets = 0;
  std::uint64_t bytes = 0;     // frame bytes, without the virtio-net header
  std::uint64_t drops = 0;     // frames dropped (malformed, oversized, refused, no room ever)
  std::uint64_t filtered = 0;  // receive only: frames not for this MAC (CTRL_RX)
};

struct NetDeviceStats {
  std::vector<NetQueueStats> receive;   // per queue pair
  std::vector<NetQueueStats> transmit;  // per queue pair
  std::uint64_t control_commands = 0;
  std::uint64_t control_errors = 0;  // commands answered ERR
};

class NetDevice final : public virtio::Device {
 public:
  [[nodiscard]] static Result<std::unique_ptr<NetDevice>> create(
      std::unique_ptr<PacketBackend> backend, NetDeviceOptions options);
  ~NetDevice() override;
  NetDevice(const NetDevice&) = delete;
  NetDevice& operator=(const NetDevice&) = delete;

  // virtio::Device
  [[nodiscard]] std::uint32_t device_id() const override;
  [[nodiscard]] std::uint64_t device_features() const override;
  [[nodiscard]] std::uint16_t num_queues() const override {
    return static_cast<std::uint16_t>(2 * options_.queue_pairs + 1);
  }
  [[nodiscard]] std::uint16_t max_queue_size(std::uint16_t queue) const override;
  [[nodiscard]] std::uint32_t config_size() const override { return net::config::kSize; }
  void read_config(std::uint32_t offset, std::span<std::uint8_t> out) const override;
  void write_config(std::uint32_t offset, std::span<const std::uint8_t> data) override;
  [[nodiscard]] Status accept_features(std::uint64_t features) override;
  [[nodiscard]] Status activate(EventLoop* loop) override;
  void process_queue(virtio::Virtqueue& queue) override;
  void reset() override;
  void reset_queue(std::uint16_t queue) override;
  void drain() override;

  [[nodiscard]] const NetDeviceStats& stats() const { return stats_; }
  // The negotiated header length (10 or 12), 12 before negotiation.
  [[nodiscard]] std::uint32_t header_size() const { return header_size_; }
  [[nodiscard]] unsigned active_pairs() const { return active_pairs_; }
  [[nodiscard]] PacketBackend& backend() { return *backend_; }

 private:
  enum class Role : std::uint8_t { kReceive, kTransmit, kControl, kUnused };
  struct QueueRole {
    Role role;
    unsigned pair;
  };
  // Receive state of one queue pair.
  struct Receiver {
    std::deque<virtio::DescriptorChain> buffers;  // popped, not yet filled (oldest first)
    std::uint64_t buffered_bytes = 0;             // their writable bytes
    std::vector<std::uint8_t> frame;              // bounce buffer, header first
    std::size_t frame_length = 0;                 // 0: no frame waiting
  };
  // A frame the tap could not take yet, with what its iovecs point into.
  struct BlockedFrame {
    virtio::DescriptorChain chain;
    virtio::HostBufferList buffers;
    std::vector<iovec> gather;
    std::vector<std::uint8_t> bounce;
  };
  struct PairSource {
    EventLoop::SourceId id = 0;
    bool reading = false;  // EPOLLIN wanted: the guest has room (or may have)
    bool writing = false;  // EPOLLOUT wanted: a frame waits for the tap
  };

  NetDevice(std::unique_ptr<PacketBackend> backend, NetDeviceOptions options);
  [[nodiscard]] QueueRole role_of(std::uint16_t queue) const;
  [[nodiscard]] std::uint16_t control_queue_index() const;
  [[nodiscard]] bool negotiated(unsigned bit) const;
  [[nodiscard]] std::uint32_t max_frame_bytes(std::uint8_t gso_type) const;
  void update_source(unsigned pair);
  void on_backend_ready(unsigned pair, std::uint32_t events);
  void stop_sources();

  // Receive (virtio_net_rx.cc).
  void receive_frames(unsigned pair);
  void resume_receive(unsigned pair);
  // Delivers the waiting frame: true when it is gone (delivered, filtered or dropped),
  // false when the guest has no room for it yet.
  [[nodiscard]] bool deliver(unsigned pair);
  [[nodiscard]] bool accepts_destination(std::span<const std::uint8_t> frame) const;
  // Pops buffers until `bytes` are held or the ring is empty; false if still short.
  [[nodiscard]] bool hold_buffers(unsigned pair, virtio::Virtqueue& queue, std::uint64_t bytes);
  void return_held_buffers();

  // Transmit (virtio_net_tx.cc).
  void transmit(unsigned pair, virtio::Virtqueue& queue);
  // Sends one chain: false when the tap is full (the chain is then parked).
  [[nodiscard]] bool transmit_chain(unsigned pair, virtio::DescriptorChain& chain);
  [[nodiscard]] bool send_parked(unsigned pair);

  // Control (virtio_net_control.cc).
  void serve_control(virtio::Virtqueue& queue);
  [[nodiscard]] std::uint8_t execute(const net::ControlHeader& header,
                                     std::span<const std::uint8_t> data);
  [[nodiscard]] std::uint8_t set_mac_table(std::span<const std::uint8_t> data);
  [[nodiscard]] std::uint8_t set_queue_pairs(std::span<const std::uint8_t> data);
  [[nodiscard]] std::uint8_t set_guest_offloads(std::span<const std::uint8_t> data);
  [[nodiscard]] Status apply_offloads(std::uint64_t guest_features);
  void restore_filters();

  std::unique_ptr<PacketBackend> backend_;
  NetDeviceOptions options_;
  EventLoop* loop_ = nullptr;
  std::uint32_t header_size_ = net::kHeaderSize;
  unsigned active_pairs_ = 1;
  std::array<std::uint8_t, net::kMacBytes> mac_{};
  std::vector<Receiver> receivers_;
  std::vector<std::optional<BlockedFrame>> blocked_;  // per pair
  std::vector<PairSource> sources_;
  // CTRL_RX filter state (§5.1.6.5.1-2); reset state: promiscuous, as QEMU.
  bool promiscuous_ = true;
  bool all_multicast_ = false;
  bool unicast_overflow_ = false;
  bool multicast_overflow_ = false;
  std::set<std::array<std::uint8_t, net::kMacBytes>> unicast_;
  std::set<std::array<std::uint8_t, net::kMacBytes>> multicast_;
  NetDeviceStats stats_;
  // Expires with the device: deferred work on the loop checks it first.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace vpci::devices
