// virtio-net control queue (devices/virtio_net.h; virtio 1.3 §5.1.6.5, reference
// virtio-net.md §3 and §8 "Ctrl"). Linux busy-waits on every command holding RTNL, so
// each one is answered inside the kick, with a one-byte ack and used length 1.
#include <algorithm>
#include <cstring>

#include "base/little_endian.h"
#include "base/log.h"
#include "devices/virtio_net.h"
#include "virtio/spec.h"

namespace vpci::devices {
namespace {

// The largest command vpci reads: a MAC table of 2 × 64 entries is under 1 KiB, so
// anything beyond this is refused (ERR) without being read.
constexpr std::uint64_t kMaxCommandBytes = 4096;

}  // namespace

void NetDevice::serve_control(virtio::Virtqueue& queue) {
  while (auto chain = queue.pop()) {
    ++stats_.control_commands;
    // §5.1.6.5: class and command readable, then data; the ack is device-writable.
    if (chain->readable_bytes() < sizeof(net::ControlHeader) || chain->writable_bytes() < 1) {
      chain->fail(
          Error{ErrorCode::kProtocolViolation,
                fmt::format("virtio-net control command {} has {} readable and {} "
                            "writable bytes",
                            chain->id(), chain->readable_bytes(), chain->writable_bytes())});
      return;
    }
    std::uint8_t ack = net::kControlError;
    auto header = chain->reader().read_obj<net::ControlHeader>();
    const std::uint64_t data_bytes = chain->readable_bytes() - sizeof(net::ControlHeader);
    if (header && data_bytes <= kMaxCommandBytes) {
      std::vector<std::uint8_t> data(static_cast<std::size_t>(data_bytes));
      if (chain->reader().read(data)) ack = execute(*header, data);
    }
    if (ack != net::kControlOk) ++stats_.control_errors;
    if (!chain->writer().write_obj(ack)) {
      chain->fail(Error{ErrorCode::kProtocolViolation, "cannot write the virtio-net control ack"});
      return;
    }
    chain->complete();
  }
}

std::uint8_t NetDevice::execute(const net::ControlHeader& header,
                                std::span<const std::uint8_t> data) {
  using net::kControlError;
  using net::kControlOk;
  switch (header.class_id) {
    case net::kClassRx:
      // §5.1.6.5.1: one byte, 0 or 1 (anything else is on, as Linux never sends it).
      if (!negotiated(net::kFeatureCtrlRx) || data.size() != 1) return kControlError;
      if (header.command == net::kRxPromisc) {
        promiscuous_ = data[0] != 0;
        return kControlOk;
      }
      if (header.command == net::kRxAllMulti) {
        all_multicast_ = data[0] != 0;
        return kControlOk;
      }
      return kControlError;
    case net::kClassMac:
      if (header.command == net::kMacTableSet && negotiated(net::kFeatureCtrlRx))
        return set_mac_table(data);
      if (header.command == net::kMacAddrSet && negotiated(net::kFeatureCtrlMacAddr) &&
          data.size() == net::kMacBytes) {
        // §5.1.6.5.2: the config space's mac changes before the command is used.
        std::copy(data.begin(), data.end(), mac_.begin());
        return kControlOk;
      }
      return kControlError;
    case net::kClassMq:
      if (header.command != net::kMqVqPairsSet) return kControlError;
      return set_queue_pairs(data);
    case net::kClassGuestOffloads:
      if (header.command != net::kGuestOffloadsSet) return kControlError;
      return set_guest_offloads(data);
    default:
      // VLAN and ANNOUNCE are not offered; unknown classes get ERR (§5.1.6.5).
      return kControlError;
  }
}

std::uint8_t NetDevice::set_mac_table(std::span<const std::uint8_t> data) {
  // §5.1.6.5.2: le32 entries + entries × 6 unicast, then the same for multicast.
  std::set<std::array<std::uint8_t, net::kMacBytes>> tables[2];
  bool overflow[2] = {false, false};
  std::size_t at = 0;
  for (int table = 0; table < 2; ++table) {
    if (data.size() - at < sizeof(std::uint32_t)) return net::kControlError;
    const std::uint64_t entries = load_le<std::uint32_t>(data.subspan(at));
    at += sizeof(std::uint32_t);
    if (entries > (data.size() - at) / net::kMacBytes) return net::kControlError;
    overflow[table] = entries > net::kMacTableEntries;
    for (std::uint64_t i = 0; i < entries; ++i, at += net::kMacBytes) {
      if (overflow[table]) continue;
      std::array<std::uint8_t, net::kMacBytes> mac{};
      std::copy_n(data.begin() + static_cast<std::ptrdiff_t>(at), net::kMacBytes, mac.begin());
      tables[table].insert(mac);
    }
  }
  if (at != data.size()) return net::kControlError;
  unicast_ = std::move(tables[0]);
  multicast_ = std::move(tables[1]);
  unicast_overflow_ = overflow[0];
  multicast_overflow_ = overflow[1];
  return net::kControlOk;
}

std::uint8_t NetDevice::set_queue_pairs(std::span<const std::uint8_t> data) {
  // §5.1.6.5.5: 1 ≤ pairs ≤ max_virtqueue_pairs, with MQ negotiated.
  if (!negotiated(net::kFeatureMq) || data.size() != sizeof(std::uint16_t))
    return net::kControlError;
  const unsigned pairs = load_le<std::uint16_t>(data);
  if (pairs == 0 || pairs > options_.queue_pairs) return net::kControlError;
  if (auto steered = backend_->set_active_pairs(pairs); !steered) {
    logger().warn("{}", steered.error().message);
    return net::kControlError;
  }
  active_pairs_ = pairs;
  for (unsigned pair = 0; pair < options_.queue_pairs; ++pair) {
    sources_[pair].reading = pair < pairs || receivers_[pair].frame_length != 0;
    update_source(pair);
  }
  return net::kControlOk;
}

std::uint8_t NetDevice::set_guest_offloads(std::span<const std::uint8_t> data) {
  // §5.1.6.5.6.1: only GUEST_* offloads that were negotiated.
  if (!negotiated(net::kFeatureCtrlGuestOffloads) || data.size() != sizeof(std::uint64_t))
    return net::kControlError;
  const auto offloads = load_le<std::uint64_t>(data);
  const std::uint64_t allowed =
      host()->negotiated_features() &
      (virtio::feature_bit(net::kFeatureGuestCsum) | virtio::feature_bit(net::kFeatureGuestTso4) |
       virtio::feature_bit(net::kFeatureGuestTso6) | virtio::feature_bit(net::kFeatureGuestEcn) |
       virtio::feature_bit(net::kFeatureGuestUfo));
  if ((offloads & ~allowed) != 0) return net::kControlError;
  if (auto applied = apply_offloads(offloads); !applied) {
    logger().warn("{}", applied.error().message);
    return net::kControlError;
  }
  return net::kControlOk;
}

}  // namespace vpci::devices
