// Where a virtio-net device's frames go and come from. Each frame starts with the
// virtio-net header the driver and device agreed on (devices/net_spec.h): the back end
// passes it through untranslated, as a Linux tap does once TUNSETVNETHDRSZ matches
// (devices/tap_backend.h). One descriptor per queue pair, non-blocking, watched on the
// device's event loop.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include <sys/uio.h>

#include "base/error.h"

namespace vpci::devices {

class PacketBackend {
 public:
  virtual ~PacketBackend() = default;

  // Names the back end in messages ("tap vtap0").
  [[nodiscard]] virtual std::string name() const = 0;
  [[nodiscard]] virtual unsigned queue_pairs() const = 0;
  // The non-blocking descriptor of queue pair `pair`: readable when a frame waits,
  // writable when a frame can be sent.
  [[nodiscard]] virtual int fd(unsigned pair) const = 0;

  // Reads one whole frame into `out` and returns its length; nullopt when none waits.
  // A frame longer than `out` is an error (never a silent truncation): size `out` for
  // the largest frame the negotiation allows.
  [[nodiscard]] virtual Result<std::optional<std::size_t>> receive(unsigned pair,
                                                                   std::span<std::uint8_t> out) = 0;
  // Sends one frame given as a gather list; false when the back end is full (try again
  // once fd(pair) is writable). An error concerns this frame only (the kernel refused
  // its header, the link is down) and the caller drops it.
  [[nodiscard]] virtual Result<bool> send(unsigned pair, std::span<const iovec> frame) = 0;

  // The header length both directions carry (10, 12 or 20 bytes).
  [[nodiscard]] virtual Status set_header_size(unsigned bytes) = 0;
  // The offloads the guest accepts on receive (TUN_F_* bits, devices/net_spec.h).
  [[nodiscard]] virtual Status set_offloads(unsigned tun_offloads) = 0;
  // Frames are steered to the first `pairs` queue pairs only (§5.1.6.5.6 VQ_PAIRS_SET).
  [[nodiscard]] virtual Status set_active_pairs(unsigned pairs) = 0;
};

}  // namespace vpci::devices
