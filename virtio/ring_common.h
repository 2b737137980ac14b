// Helpers shared by the split and packed ring implementations (not a public API).
#pragma once

#include <atomic>
#include <bit>
#include <cstdint>

#include "base/error.h"
#include "virtio/descriptor_chain.h"
#include "virtio/guest_memory.h"
#include "virtio/ring_layout.h"

namespace vpci::virtio::ring_internal {

// Pairs with the driver's write barrier before it publishes an index or flags word.
inline void acquire_fence() {
  std::atomic_thread_fence(std::memory_order_acquire);
}
// Orders the device's ring writes before the index or flags word that publishes them.
inline void release_fence() {
  std::atomic_thread_fence(std::memory_order_release);
}
// Orders a store we published before a load of the other side's suppression field.
inline void full_fence() {
  std::atomic_thread_fence(std::memory_order_seq_cst);
}

// A ring area must be aligned and fully mapped with the given access.
Status check_area(const MemoryMap& memory, const char* what, GuestAddress address,
                  std::uint64_t bytes, std::uint64_t align, Access access);

// Adds one buffer descriptor to `chain`, applying the rules every format shares:
// readable before writable (§2.7.4.2, §2.8.17), the byte cap (§2.7.5.2), and the buffer
// being mapped for the access it grants. Zero-length buffers are dropped.
Status append_buffer(const MemoryMap& memory, const RingOptions& options, ChainDescriptors& chain,
                     GuestAddress address, std::uint32_t length, bool writable);

}  // namespace vpci::virtio::ring_internal
