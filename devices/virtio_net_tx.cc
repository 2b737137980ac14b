// virtio-net transmit: guest → tap (devices/virtio_net.h; virtio 1.3 §5.1.6.2,
// reference virtio-net.md §5 and §8, checklist item 14).
#include <algorithm>

#include "base/log.h"
#include "devices/virtio_net.h"

namespace vpci::devices {
namespace {

// tun_get_user refuses more (EINVAL); a longer gather list is copied into one buffer.
constexpr std::size_t kMaxGather = 1024;

}  // namespace

void NetDevice::transmit(unsigned pair, virtio::Virtqueue& queue) {
  if (blocked_[pair] && !send_parked(pair)) return;  // the tap is still full
  while (auto chain = queue.pop()) {
    if (!transmit_chain(pair, *chain)) break;  // parked; EPOLLOUT resumes
  }
  queue.notify_driver_if_needed();
}

bool NetDevice::send_parked(unsigned pair) {
  BlockedFrame& frame = *blocked_[pair];
  auto sent = backend_->send(pair, frame.gather);
  if (sent && !*sent) return false;
  NetQueueStats& stats = stats_.transmit[pair];
  if (sent) {
    ++stats.packets;
    stats.bytes += frame.chain.readable_bytes() - header_size_;
  } else {
    ++stats.drops;
    logger().debug("{}", sent.error().message);
  }
  frame.chain.complete(0);
  blocked_[pair].reset();
  sources_[pair].writing = false;
  update_source(pair);
  return true;
}

bool NetDevice::transmit_chain(unsigned pair, virtio::DescriptorChain& chain) {
  NetQueueStats& stats = stats_.transmit[pair];
  const auto drop = [&] {
    ++stats.drops;
    chain.complete(0);  // §5.1.6.2: the buffer goes back; nothing was written
    return true;
  };
  // §5.1.6.2.1: transmit buffers are device-readable, and start with the header.
  if (chain.writable_bytes() != 0 || chain.readable_bytes() < header_size_) return drop();
  const std::uint64_t length = chain.readable_bytes();
  std::uint8_t gso_type = net::kGsoNone;
  {
    // Peek at gso_type (byte 1) for the size cap without consuming the chain.
    virtio::ChainReader peek = chain.reader();
    std::array<std::uint8_t, 2> start{};
    if (!peek.read(start)) return drop();
    gso_type = start[1];
  }
  // The tap accepts oversized frames (reference §8): the caps are enforced here.
  if (length - header_size_ > max_frame_bytes(gso_type)) return drop();

  BlockedFrame frame{std::move(chain), {}, {}, {}};
  if (frame.chain.memory().all_host_mapped()) {
    auto buffers = frame.chain.reader().take_buffers(length);
    if (!buffers) {
      chain = std::move(frame.chain);
      return drop();
    }
    frame.buffers = std::move(*buffers);
    for (const auto& span : frame.buffers.spans) frame.gather.push_back({span.data(), span.size()});
  }
  if (frame.gather.empty() || frame.gather.size() > kMaxGather) {
    // Guest memory reached through messages, or a gather list the tap would refuse:
    // one contiguous copy.
    frame.gather.clear();
    frame.bounce.resize(length);
    virtio::ChainReader copy = frame.chain.reader();
    if (frame.buffers.spans.empty()) {
      if (!copy.read(frame.bounce)) {
        chain = std::move(frame.chain);
        return drop();
      }
    } else {
      std::size_t at = 0;
      for (const auto& span : frame.buffers.spans) {
        std::copy(span.begin(), span.end(), frame.bounce.begin() + static_cast<std::ptrdiff_t>(at));
        at += span.size();
      }
    }
    frame.gather.push_back({frame.bounce.data(), frame.bounce.size()});
  }
  blocked_[pair].emplace(std::move(frame));
  if (send_parked(pair)) return true;
  // The tap is full: keep the frame, poll for room (reference §5 "Backpressure").
  sources_[pair].writing = true;
  update_source(pair);
  return false;
}

}  // namespace vpci::devices
