// Where a virtqueue lives in guest memory and which ring rules apply to it.
#pragma once

#include <cstdint>
#include <limits>

#include "base/error.h"
#include "virtio/guest_memory.h"

namespace vpci::virtio {

enum class RingFormat : std::uint8_t { kSplit, kPacked };

// The three areas of a virtqueue (virtio 1.3 §2.6): for split rings the descriptor
// table, available ring and used ring; for packed rings the descriptor ring, driver
// event suppression and device event suppression.
struct QueueLayout {
  std::uint16_t size = 0;
  GuestAddress desc = 0;
  GuestAddress driver = 0;
  GuestAddress device = 0;
};

struct RingOptions {
  bool event_idx = false;      // VIRTIO_F_EVENT_IDX negotiated
  bool indirect = false;       // VIRTIO_F_INDIRECT_DESC negotiated
  // Cap on the bytes of one chain. §2.7.5.2 forbids chains above 2^32 bytes; used
  // lengths are 32-bit, so vpci refuses anything above 2^32 - 1.
  std::uint64_t max_chain_bytes = std::numeric_limits<std::uint32_t>::max();
};

// The legacy split layout (virtio 1.3 §2.7.2, "Legacy Interfaces: A Note on Virtqueue
// Layout"): descriptor table at `base`, available ring right after it, used ring at
// the next `align` boundary. Legacy PCI passes base = PFN << 12 and align = 4096.
// Fails if the queue size is not a power of two or the layout wraps past 2^64.
[[nodiscard]] Result<QueueLayout> legacy_split_layout(GuestAddress base, std::uint16_t size,
                                                      std::uint64_t align);

}  // namespace vpci::virtio
