// Fuzzes the split virtqueue (virtio/split_ring.h) from the device side: the input is
// guest RAM holding the rings, descriptor tables and buffers, plus a script of device
// and driver actions. Invariants checked on every input:
//   * guest memory is only touched inside the mapped buffers, and never written in the
//     read-only region (the access observer sees every host range);
//   * every chain handed out is well-formed: buffers mapped for their access, byte
//     counts consistent and within the cap, at most queue-size buffers, readable bytes
//     readable in full;
//   * a failed queue hands out nothing and stays failed; used idx advances exactly by
//     the completions of a healthy queue.
//
// Input: [0] log2 queue size (mod 9) · [1] flags (bit0 EVENT_IDX, bit1 INDIRECT_DESC,
// bit2 4 KiB byte cap) · [2..3] le16 image length L · L bytes copied to guest RAM at
// kRamBase (desc table at 0, avail ring, used ring after it) · the rest: one action
// per byte (see run_chain_script in virtqueue_fuzz_guest.h).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <vector>

#include "fuzz/virtqueue_fuzz_guest.h"
#include "virtio/guest_memory.h"
#include "virtio/spec.h"
#include "virtio/virtqueue.h"

namespace {

using namespace vpci::virtio;
using namespace vpci::virtio::fuzzing;

// Split chains are identified by their head descriptor, which must be in the table.
void check_split_chain(const Guest& guest, DescriptorChain& chain, std::uint16_t queue_size,
                       std::uint64_t cap) {
  check_chain(guest, chain, queue_size, cap);
  if (chain.id() >= queue_size) fail("split head outside the table");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 4) return 0;
  Guest guest;
  const auto queue_size = static_cast<std::uint16_t>(1u << (data[0] % 9));
  const std::uint8_t flags = data[1];
  RingOptions options;
  options.event_idx = (flags & 1) != 0;
  options.indirect = (flags & 2) != 0;
  if ((flags & 4) != 0) options.max_chain_bytes = 4096;
  const std::uint64_t cap = std::min<std::uint64_t>(options.max_chain_bytes, 0xFFFFFFFFu);
  std::size_t image = static_cast<std::size_t>(data[2] | (data[3] << 8));
  image = std::min({image, size - 4, kRamSize});
  std::memcpy(guest.ram.data(), data + 4, image);
  const std::uint8_t* script = data + 4 + image;
  const std::size_t script_size = size - 4 - image;

  QueueLayout layout;
  layout.size = queue_size;
  layout.desc = kRamBase;
  layout.driver = kRamBase + split_layout::desc_bytes(queue_size);
  layout.device = (layout.driver + split_layout::avail_bytes(queue_size) + 3) & ~GuestAddress{3};

  Virtqueue queue(0, queue_size);
  if (!queue.set_layout(layout)) fail("layout refused");
  if (!queue.enable(guest.memory, RingFormat::kSplit, options, nullptr))
    fail("valid layout refused");

  std::uint64_t completed = 0;
  const auto used_idx = [&] {
    std::uint16_t idx = 0;
    std::memcpy(&idx, guest.ram.data() + (layout.device - kRamBase) + 2, 2);
    return from_le(idx);
  };
  bool used_ring_clobbered = false;
  const GuestAddress used_end = layout.device + split_layout::used_bytes(queue_size);
  const auto pop_one = [&]() -> std::optional<DescriptorChain> {
    const bool was_failed = queue.failed();
    auto chain = queue.pop();
    if (was_failed && chain) fail("failed queue handed out a chain");
    if (chain) {
      check_split_chain(guest, *chain, queue_size, cap);
      for (const auto& b : chain->writable_buffers()) {
        used_ring_clobbered |= b.address < used_end && layout.device < b.address + b.length;
      }
    }
    return chain;
  };
  const auto finish = [&](DescriptorChain& chain, std::uint8_t fill) {
    const std::uint64_t n = std::min<std::uint64_t>(chain.writable_bytes(), fill);
    std::vector<std::uint8_t> bytes(static_cast<std::size_t>(n), fill);
    if (!chain.writer().write(bytes)) fail("writable part of a validated chain unwritable");
    const bool healthy = !queue.failed();
    chain.complete();
    if (healthy && !queue.failed()) ++completed;
  };

  run_chain_script(std::span<const std::uint8_t>(script, script_size), queue_size, guest, queue,
                   pop_one, finish, [&] { used_ring_clobbered = true; });
  // Only the device writes used idx, unless the driver poked RAM or handed out a
  // writable buffer overlapping the used ring (its own fault, but legal to do).
  if (!queue.failed() && completed > 0 && !used_ring_clobbered &&
      static_cast<std::uint16_t>(completed) != used_idx()) {
    fail("used idx does not match the completions");
  }
  if (queue.failed() && queue.pop()) fail("failed queue handed out a chain");
  return 0;
}
