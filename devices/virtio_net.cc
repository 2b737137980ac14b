#include "devices/virtio_net.h"

#include <algorithm>
#include <cstring>

#include "base/little_endian.h"
#include "base/log.h"
#include "virtio/spec.h"

namespace vpci::devices {

using virtio::feature_bit;

Result<std::unique_ptr<NetDevice>> NetDevice::create(std::unique_ptr<PacketBackend> backend,
                                                     NetDeviceOptions options) {
  if (backend == nullptr)
    return make_error(ErrorCode::kInvalidArgument, "virtio-net needs a back end");
  if (options.queue_pairs == 0 || options.queue_pairs > net::kMaxQueuePairs) {
    return make_error(ErrorCode::kInvalidArgument, "{} queue pairs; virtio-net serves 1 to {}",
                      options.queue_pairs, net::kMaxQueuePairs);
  }
  if (backend->queue_pairs() != options.queue_pairs) {
    return make_error(ErrorCode::kInvalidArgument, "{} has {} queue(s) for {} queue pair(s)",
                      backend->name(), backend->queue_pairs(), options.queue_pairs);
  }
  if (options.mtu != 0 && options.mtu < net::kMinMtu) {
    return make_error(ErrorCode::kInvalidArgument, "MTU {} is below the minimum of {}", options.mtu,
                      net::kMinMtu);
  }
  for (const std::uint16_t size : {options.queue_size, options.control_queue_size}) {
    if (!std::has_single_bit(size) || size < 2 || size > virtio::kMaxQueueSize) {
      return make_error(ErrorCode::kInvalidArgument,
                        "queue size {} is not a power of two in 2..32768", size);
    }
  }
  // §5.1.4.1 / IEEE 802: a station address is unicast.
  if ((options.mac[0] & 1) != 0) {
    return make_error(ErrorCode::kInvalidArgument, "MAC {:02x}:...: is a multicast address",
                      options.mac[0]);
  }
  return std::unique_ptr<NetDevice>(new NetDevice(std::move(backend), options));
}

NetDevice::NetDevice(std::unique_ptr<PacketBackend> backend, NetDeviceOptions options)
    : backend_(std::move(backend)),
      options_(options),
      mac_(options.mac),
      // Sized once (a deque of move-only chains is not nothrow-movable, so no resize).
      receivers_(options.queue_pairs),
      blocked_(options.queue_pairs) {
  sources_.resize(options_.queue_pairs);
  stats_.receive.resize(options_.queue_pairs);
  stats_.transmit.resize(options_.queue_pairs);
  // One frame of the largest size any negotiation allows: GSO plus the header.
  for (auto& receiver : receivers_) receiver.frame.resize(net::kMaxGsoFrame + net::kHeaderSize);
}

NetDevice::~NetDevice() {
  stop_sources();
}

std::uint32_t NetDevice::device_id() const {
  return virtio::device_id::kNetwork;
}

std::uint64_t NetDevice::device_features() const {
  // Only dependency-consistent sets (§5.1.3.1): Linux refuses to probe a device that
  // offers a control-queue feature without CTRL_VQ, or TSO without checksum offload.
  std::uint64_t features =
      feature_bit(net::kFeatureMac) | feature_bit(net::kFeatureStatus) |
      feature_bit(net::kFeatureCsum) | feature_bit(net::kFeatureGuestCsum) |
      feature_bit(net::kFeatureHostTso4) | feature_bit(net::kFeatureHostTso6) |
      feature_bit(net::kFeatureGuestTso4) | feature_bit(net::kFeatureGuestTso6) |
      feature_bit(net::kFeatureMrgRxbuf) | feature_bit(net::kFeatureCtrlVq) |
      feature_bit(net::kFeatureCtrlRx) | feature_bit(net::kFeatureCtrlMacAddr) |
      feature_bit(net::kFeatureCtrlGuestOffloads);
  if (!options_.mergeable_rx_buffers) features &= ~feature_bit(net::kFeatureMrgRxbuf);
  if (options_.queue_pairs > 1) features |= feature_bit(net::kFeatureMq);
  if (options_.mtu != 0) features |= feature_bit(net::kFeatureMtu);
  return features;
}

std::uint16_t NetDevice::max_queue_size(std::uint16_t queue) const {
  // The control queue is the last one when MQ is negotiated; without MQ it is queue 2,
  // which then may be sized like a data queue (a size is a maximum).
  return queue == 2 * options_.queue_pairs ? options_.control_queue_size : options_.queue_size;
}

bool NetDevice::negotiated(unsigned bit) const {
  return host() != nullptr && virtio::has_feature(host()->negotiated_features(), bit);
}

std::uint16_t NetDevice::control_queue_index() const {
  // §5.1.2: controlq is 2N, N = max_virtqueue_pairs with MQ negotiated, else 1.
  return static_cast<std::uint16_t>(2 * (negotiated(net::kFeatureMq) ? options_.queue_pairs : 1));
}

NetDevice::QueueRole NetDevice::role_of(std::uint16_t queue) const {
  if (queue == control_queue_index()) return {Role::kControl, 0};
  if (queue < control_queue_index()) {
    return {queue % 2 == 0 ? Role::kReceive : Role::kTransmit, queue / 2u};
  }
  return {Role::kUnused, 0};
}

std::uint32_t NetDevice::max_frame_bytes(std::uint8_t gso_type) const {
  if ((gso_type & ~net::kGsoEcn) != net::kGsoNone) return net::kMaxGsoFrame;
  const std::uint32_t mtu = options_.mtu != 0 ? options_.mtu : net::kDefaultMtu;
  return mtu + net::kEthernetHeader + net::kVlanTag;
}

void NetDevice::read_config(std::uint32_t offset, std::span<std::uint8_t> out) const {
  std::array<std::uint8_t, net::config::kSize> config{};
  std::memcpy(config.data() + net::config::kMac, mac_.data(), mac_.size());
  store_le<std::uint16_t>(std::span(config).subspan(net::config::kStatus), net::kStatusLinkUp);
  store_le<std::uint16_t>(std::span(config).subspan(net::config::kMaxVirtqueuePairs),
                          options_.queue_pairs);
  store_le<std::uint16_t>(std::span(config).subspan(net::config::kMtu),
                          options_.mtu != 0 ? options_.mtu : net::kDefaultMtu);
  // DeviceCore checked the range.
  std::memcpy(out.data(), config.data() + offset, out.size());
}

void NetDevice::write_config(std::uint32_t offset, std::span<const std::uint8_t> data) {
  // §5.1.4 legacy interface: the driver may set the MAC through the config space — only
  // without VERSION_1 and CTRL_MAC_ADDR (QEMU's rule); every other write is ignored.
  if (negotiated(virtio::feature::kVersion1) || negotiated(net::kFeatureCtrlMacAddr)) return;
  if (offset >= net::kMacBytes || data.size() > net::kMacBytes - offset) return;
  std::memcpy(mac_.data() + offset, data.data(), data.size());
}

Status NetDevice::apply_offloads(std::uint64_t guest_features) {
  // Receive offloads the guest takes (reference §5 "Offload mapping"); TSO needs CSUM.
  unsigned offloads = 0;
  if (virtio::has_feature(guest_features, net::kFeatureGuestCsum)) {
    offloads |= net::kTunOffloadCsum;
    if (virtio::has_feature(guest_features, net::kFeatureGuestTso4))
      offloads |= net::kTunOffloadTso4;
    if (virtio::has_feature(guest_features, net::kFeatureGuestTso6))
      offloads |= net::kTunOffloadTso6;
  }
  return backend_->set_offloads(offloads);
}

Status NetDevice::accept_features(std::uint64_t features) {
  // §5.1.6.1: 12 bytes with VERSION_1 or MRG_RXBUF; a legacy driver without it uses 10.
  const bool long_header = virtio::has_feature(features, virtio::feature::kVersion1) ||
                           virtio::has_feature(features, net::kFeatureMrgRxbuf);
  header_size_ = long_header ? net::kHeaderSize : net::kLegacyHeaderSize;
  VPCI_TRY(backend_->set_header_size(header_size_));
  VPCI_TRY(apply_offloads(features));
  // §5.1.6.5.5: only the first pair carries traffic until VQ_PAIRS_SET.
  active_pairs_ = 1;
  return backend_->set_active_pairs(active_pairs_);
}

Status NetDevice::activate(EventLoop* loop) {
  if (loop == nullptr) {
    return make_error(ErrorCode::kUnsupported, "virtio-net needs an event loop to watch {}",
                      backend_->name());
  }
  stop_sources();
  loop_ = loop;
  for (unsigned pair = 0; pair < options_.queue_pairs; ++pair) {
    VPCI_ASSIGN_OR_RETURN(sources_[pair].id,
                          loop->add_fd(backend_->fd(pair), 0, [this, pair](std::uint32_t events) {
                            on_backend_ready(pair, events);
                          }));
    sources_[pair].reading = pair < active_pairs_;
    update_source(pair);
  }
  return {};
}

void NetDevice::update_source(unsigned pair) {
  PairSource& source = sources_[pair];
  if (loop_ == nullptr || source.id == 0) return;
  const std::uint32_t events = (source.reading ? EPOLLIN : 0u) | (source.writing ? EPOLLOUT : 0u);
  // Fails only for an unknown source, which this one is not.
  (void)loop_->modify_fd(source.id, events);
}

void NetDevice::on_backend_ready(unsigned pair, std::uint32_t events) {
  if ((events & EPOLLOUT) != 0 && blocked_[pair]) {
    if (virtio::Virtqueue* queue = host()->queue(static_cast<std::uint16_t>(2 * pair + 1))) {
      transmit(pair, *queue);
    }
  }
  if ((events & (EPOLLIN | EPOLLERR | EPOLLHUP)) != 0) receive_frames(pair);
}

void NetDevice::stop_sources() {
  for (auto& source : sources_) {
    if (loop_ != nullptr && source.id != 0) loop_->remove_fd(source.id);
    source = PairSource{};
  }
}

void NetDevice::process_queue(virtio::Virtqueue& queue) {
  const QueueRole role = role_of(queue.index());
  switch (role.role) {
    case Role::kReceive: resume_receive(role.pair); break;
    case Role::kTransmit: transmit(role.pair, queue); break;
    case Role::kControl: serve_control(queue); break;
    case Role::kUnused:
      // §5.1.2: queues beyond the negotiated pairs do not exist for the driver.
      queue.fail(Error{ErrorCode::kProtocolViolation,
                       fmt::format("virtio-net queue {} is not in use with the negotiated "
                                   "features",
                                   queue.index())});
      break;
  }
}

void NetDevice::restore_filters() {
  promiscuous_ = true;
  all_multicast_ = false;
  unicast_overflow_ = false;
  multicast_overflow_ = false;
  unicast_.clear();
  multicast_.clear();
}

void NetDevice::reset() {
  // Reference checklist 17: the waiting frame, offloads, filters (promiscuous again),
  // one active pair and the configured MAC.
  stop_sources();
  loop_ = nullptr;
  for (auto& receiver : receivers_) {
    receiver.buffers.clear();  // the queues were reset: completions are dropped
    receiver.buffered_bytes = 0;
    receiver.frame_length = 0;
  }
  for (auto& frame : blocked_) frame.reset();
  restore_filters();
  mac_ = options_.mac;
  active_pairs_ = 1;
  if (auto undone = apply_offloads(0); !undone)
    logger().warn("{}: resetting offloads: {}", backend_->name(), undone.error().message);
}

void NetDevice::reset_queue(std::uint16_t queue) {
  const QueueRole role = role_of(queue);
  if (role.role == Role::kReceive) {
    Receiver& receiver = receivers_[role.pair];
    receiver.buffers.clear();
    receiver.buffered_bytes = 0;
  } else if (role.role == Role::kTransmit) {
    blocked_[role.pair].reset();
    sources_[role.pair].writing = false;
    update_source(role.pair);
  }
}

void NetDevice::drain() {
  // Nothing is in flight in the kernel: frames are copied or written synchronously. What
  // the device holds are receive buffers it has not filled and transmit chains the tap
  // could not take; both go back to the ring so the memory under them can go away.
  return_held_buffers();
  // The driver will not kick for buffers it already made available, so a frame that
  // waited for them is retried once the caller (a DMA unmap) is done.
  if (loop_ != nullptr) {
    loop_->defer([this, alive = std::weak_ptr<bool>(alive_)] {
      if (alive.expired()) return;
      for (unsigned pair = 0; pair < options_.queue_pairs; ++pair) {
        if (receivers_[pair].frame_length != 0) resume_receive(pair);
        if (blocked_[pair] || sources_[pair].writing) {
          if (virtio::Virtqueue* queue = host()->queue(static_cast<std::uint16_t>(2 * pair + 1)))
            transmit(pair, *queue);
        }
      }
    });
  }
}

}  // namespace vpci::devices
