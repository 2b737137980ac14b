// Shared by the split and packed virtqueue fuzzers: a guest with one RAM region and
// one read-only region whose every host access is checked by an access observer, and
// the well-formedness checks every chain handed to a device must pass.
#pragma once

#include <errno.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "virtio/guest_memory.h"
#include "virtio/virtqueue.h"

namespace vpci::virtio::fuzzing {

inline constexpr GuestAddress kRamBase = 0x10000;
inline constexpr std::size_t kRamSize = 16 * 1024;
inline constexpr GuestAddress kRomBase = 0x40000;
inline constexpr std::size_t kRomSize = 4096;

[[noreturn]] inline void fail(const char* what) {
  std::fprintf(stderr, "%s: invariant violated: %s\n", program_invocation_short_name, what);
  std::abort();
}

struct Guest {
  std::vector<std::uint8_t> ram = std::vector<std::uint8_t>(kRamSize, 0);
  std::vector<std::uint8_t> rom = std::vector<std::uint8_t>(kRomSize, 0xA5);
  std::shared_ptr<GuestMemory> memory = std::make_shared<GuestMemory>();

  Guest() {
    MemoryRegionSpec ram_spec;
    ram_spec.guest_address = kRamBase;
    ram_spec.size = ram.size();
    ram_spec.host = ram.data();
    MemoryRegionSpec rom_spec;
    rom_spec.guest_address = kRomBase;
    rom_spec.size = rom.size();
    rom_spec.host = rom.data();
    rom_spec.writable = false;
    if (!memory->add_region(std::move(ram_spec)) || !memory->add_region(std::move(rom_spec)))
      fail("setup");
    memory->set_access_observer([this](const AccessRecord& record) { check_access(record); });
  }
  bool in(const std::vector<std::uint8_t>& bytes, const std::uint8_t* p, std::uint64_t n) const {
    const auto begin = reinterpret_cast<std::uintptr_t>(bytes.data());
    const auto at = reinterpret_cast<std::uintptr_t>(p);
    return at >= begin && n <= bytes.size() && at - begin <= bytes.size() - n;
  }
  void check_access(const AccessRecord& record) const {
    if (record.length == 0) fail("empty access reported");
    if (in(ram, record.host, record.length)) return;
    if (in(rom, record.host, record.length)) {
      if (record.access == Access::kWrite) fail("write into read-only memory");
      return;
    }
    fail("access outside mapped memory");
  }
  bool mapped(GuestAddress address, std::uint64_t length, bool writable) const {
    const auto inside = [&](GuestAddress base, std::size_t size) {
      return address >= base && length <= size && address - base <= size - length;
    };
    return inside(kRamBase, kRamSize) || (!writable && inside(kRomBase, kRomSize));
  }
};

inline void check_chain(const Guest& guest, DescriptorChain& chain, std::uint16_t queue_size,
                        std::uint64_t cap) {
  std::uint64_t readable = 0;
  std::uint64_t writable = 0;
  for (const auto& b : chain.readable_buffers()) {
    if (b.length == 0 || !guest.mapped(b.address, b.length, false))
      fail("readable buffer not mapped");
    readable += b.length;
  }
  for (const auto& b : chain.writable_buffers()) {
    if (b.length == 0 || !guest.mapped(b.address, b.length, true))
      fail("writable buffer not mapped writable");
    writable += b.length;
  }
  if (readable != chain.readable_bytes() || writable != chain.writable_bytes()) fail("byte counts");
  if (readable + writable > cap) fail("chain above the byte cap");
  if (chain.readable_buffers().size() + chain.writable_buffers().size() > queue_size)
    fail("chain too long");
  std::vector<std::uint8_t> data(static_cast<std::size_t>(readable));
  if (!chain.reader().read(data)) fail("readable part of a validated chain unreadable");
}

// Runs the fuzzer's operation script against `queue`, one byte per operation: pop and
// complete, pop and hold (at most 8 in flight), complete a held chain out of order,
// send a used-buffer notification, or poke a byte of guest RAM behind the device's
// back (`on_ram_poke` runs after each poke). An empty script pops and completes
// everything available. Held chains are completed at the end.
template <typename PopOne, typename Finish, typename OnRamPoke>
void run_chain_script(std::span<const std::uint8_t> script, int queue_size, Guest& guest,
                      Virtqueue& queue, PopOne pop_one, Finish finish, OnRamPoke on_ram_poke) {
  std::deque<DescriptorChain> held;
  if (script.empty()) {
    for (int i = 0; i < 2 * queue_size; ++i) {
      auto chain = pop_one();
      if (!chain) break;
      finish(*chain, 1);
    }
  }
  for (std::size_t i = 0; i < script.size(); ++i) {
    const std::uint8_t op = script[i];
    switch (op % 5) {
      case 0:  // pop and complete at once
        if (auto chain = pop_one()) finish(*chain, static_cast<std::uint8_t>(op >> 3));
        break;
      case 1:  // pop and keep in flight
        if (held.size() < 8) {
          if (auto chain = pop_one()) held.push_back(std::move(*chain));
        }
        break;
      case 2:  // complete an in-flight chain, out of order
        if (!held.empty()) {
          const std::size_t pick = (op >> 3) % held.size();
          finish(held[pick], static_cast<std::uint8_t>(op));
          held.erase(held.begin() + static_cast<long>(pick));
        }
        break;
      case 3: queue.notify_driver_if_needed(); break;
      case 4:  // the driver changes a byte of guest RAM behind the device's back
        if (i + 2 < script.size()) {
          const std::size_t offset = (script[i + 1] | (script[i + 2] << 8)) % kRamSize;
          guest.ram[offset] = static_cast<std::uint8_t>(op);
          on_ram_poke();
          i += 2;
        }
        break;
    }
  }
  for (auto& chain : held) finish(chain, 2);
}

}  // namespace vpci::virtio::fuzzing
