// virtio-net receive: tap → guest (devices/virtio_net.h; virtio 1.3 §5.1.6.3-4,
// reference virtio-net.md §6 and checklist items 11-13, 16).
#include <algorithm>
#include <cstring>

#include "base/little_endian.h"
#include "base/log.h"
#include "devices/virtio_net.h"
#include "virtio/spec.h"

namespace vpci::devices {
namespace {

// Frames read per tap wake-up before the loop serves its other sources again.
constexpr int kReceiveBurst = 64;
constexpr std::array<std::uint8_t, net::kMacBytes> kBroadcast = {0xff, 0xff, 0xff,
                                                                 0xff, 0xff, 0xff};

}  // namespace

void NetDevice::receive_frames(unsigned pair) {
  Receiver& receiver = receivers_[pair];
  virtio::Virtqueue* queue = host()->queue(static_cast<std::uint16_t>(2 * pair));
  for (int i = 0; i < kReceiveBurst; ++i) {
    if (receiver.frame_length == 0) {
      auto received = backend_->receive(pair, receiver.frame);
      if (!received) {
        // An oversized or unreadable frame: that frame is lost, the next may be fine.
        ++stats_.receive[pair].drops;
        logger().debug("{}", received.error().message);
        continue;
      }
      if (!*received) break;  // nothing more waiting
      receiver.frame_length = **received;
    }
    if (!deliver(pair)) {
      // No room: keep the frame and stop polling the tap until the guest adds
      // buffers (its kick calls resume_receive).
      sources_[pair].reading = false;
      update_source(pair);
      break;
    }
  }
  if (queue != nullptr) queue->notify_driver_if_needed();
}

void NetDevice::resume_receive(unsigned pair) {
  if (pair >= active_pairs_ && receivers_[pair].frame_length == 0) return;
  if (receivers_[pair].frame_length != 0 && !deliver(pair)) return;  // still no room
  if (!sources_[pair].reading) {
    sources_[pair].reading = true;
    update_source(pair);  // level-triggered: frames already waiting wake the loop
  }
}

bool NetDevice::hold_buffers(unsigned pair, virtio::Virtqueue& queue, std::uint64_t bytes) {
  Receiver& receiver = receivers_[pair];
  while (receiver.buffered_bytes < bytes) {
    auto chain = queue.pop();
    if (!chain) return false;
    if (chain->readable_bytes() != 0 || chain->writable_bytes() < header_size_) {
      // §5.1.6.3.1: receive buffers are device-writable and hold at least a header.
      // Give it back empty rather than leak it (reference §8).
      ++stats_.receive[pair].drops;
      chain->complete(0);
      continue;
    }
    receiver.buffered_bytes += chain->writable_bytes();
    receiver.buffers.push_back(std::move(*chain));
  }
  return true;
}

bool NetDevice::accepts_destination(std::span<const std::uint8_t> frame) const {
  if (promiscuous_ || frame.size() < net::kMacBytes) return true;
  std::array<std::uint8_t, net::kMacBytes> destination{};
  std::copy_n(frame.begin(), net::kMacBytes, destination.begin());
  if (destination == kBroadcast) return true;
  if ((destination[0] & 1) != 0) {  // multicast (§5.1.6.5.2)
    return all_multicast_ || multicast_overflow_ || multicast_.contains(destination);
  }
  return destination == mac_ || unicast_overflow_ || unicast_.contains(destination);
}

bool NetDevice::deliver(unsigned pair) {
  Receiver& receiver = receivers_[pair];
  virtio::Virtqueue* queue = host()->queue(static_cast<std::uint16_t>(2 * pair));
  const std::span<std::uint8_t> frame(receiver.frame.data(), receiver.frame_length);
  const auto drop = [&](std::uint64_t NetQueueStats::*counter) {
    ++(stats_.receive[pair].*counter);
    receiver.frame_length = 0;
    return true;
  };
  if (queue == nullptr || !queue->enabled() || queue->failed()) return drop(&NetQueueStats::drops);
  if (frame.size() < header_size_ + net::kEthernetHeader) return drop(&NetQueueStats::drops);
  const std::span<const std::uint8_t> ethernet = frame.subspan(header_size_);
  // §5.1.6.4.1: with MTU negotiated, no frame beyond it without GSO.
  if (ethernet.size() > max_frame_bytes(frame[1])) return drop(&NetQueueStats::drops);
  if (!accepts_destination(ethernet)) return drop(&NetQueueStats::filtered);

  const bool mergeable = negotiated(net::kFeatureMrgRxbuf);
  // Mergeable: enough buffers for the whole frame. Otherwise the first buffer alone
  // must hold it (§5.1.6.3.1) — else the frame is dropped, never truncated.
  if (!hold_buffers(pair, *queue, mergeable ? frame.size() : 1)) {
    if (queue->failed()) return drop(&NetQueueStats::drops);
    return false;  // wait for the guest's next receive buffers
  }
  std::size_t needed = 1;
  if (mergeable) {
    std::uint64_t room = 0;
    needed = 0;
    while (room < frame.size()) room += receiver.buffers[needed++].writable_bytes();
  } else if (receiver.buffers.front().writable_bytes() < frame.size()) {
    return drop(&NetQueueStats::drops);
  }

  // The header as the guest must see it: the tap leaves num_buffers zero (§5.1.6.4:
  // 1 without MRG_RXBUF), and may set DATA_VALID, which needs GUEST_CSUM.
  if (header_size_ >= net::kHeaderSize) {
    store_le<std::uint16_t>(frame.subspan(net::kNumBuffersOffset),
                            static_cast<std::uint16_t>(needed));
  }
  if (!negotiated(net::kFeatureGuestCsum)) frame[0] = 0;

  // Every buffer filled completely but the last, all published together, written while
  // the chains still hold their memory (reference checklist 16).
  queue->begin_used_batch();
  std::size_t offset = 0;
  for (std::size_t i = 0; i < needed; ++i) {
    virtio::DescriptorChain& chain = receiver.buffers[i];
    const std::size_t take = std::min<std::size_t>(frame.size() - offset, chain.writable_bytes());
    if (!chain.writer().write(frame.subspan(offset, take))) {
      chain.fail(
          Error{ErrorCode::kIoError,
                fmt::format("virtio-net receive queue {}: writing a frame", queue->index())});
    } else {
      chain.complete(static_cast<std::uint32_t>(take));
    }
    offset += take;
  }
  queue->end_used_batch();
  for (std::size_t i = 0; i < needed; ++i) {
    receiver.buffered_bytes -= receiver.buffers.front().writable_bytes();
    receiver.buffers.pop_front();
  }
  ++stats_.receive[pair].packets;
  stats_.receive[pair].bytes += ethernet.size();
  receiver.frame_length = 0;
  return true;
}

void NetDevice::return_held_buffers() {
  for (auto& receiver : receivers_) {
    // Newest first: each must be the last one popped still outstanding.
    while (!receiver.buffers.empty()) {
      receiver.buffers.back().return_to_ring();
      receiver.buffers.pop_back();
    }
    receiver.buffered_bytes = 0;
  }
  for (auto& frame : blocked_) {
    if (frame) frame->chain.return_to_ring();
    frame.reset();
  }
}

}  // namespace vpci::devices
