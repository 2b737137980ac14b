// A DeviceCore with a one-queue SinkDevice on its own event loop, driven by a fake
// driver: the fixture of the tests of what the core does from its loop (the poll window,
// interrupt coalescing).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>

#include <gtest/gtest.h>

#include "base/event_loop.h"
#include "tests/virtio/fake_driver.h"
#include "virtio/device_core.h"

namespace vpci::virtio::testing {

class CoreOnLoopTest : public ::testing::Test {
 protected:
  // Brings the core up to DRIVER_OK with queue 0 enabled (split or packed, 8 entries).
  void start(const CoreOptions& options, std::uint64_t features, bool packed) {
    core =
        std::make_unique<DeviceCore>(std::make_unique<SinkDevice>(), memory, &interrupts, options);
    core->set_event_loop(loop.get());
    ASSERT_TRUE(ModernSetup::initialise(*core, features));
    if (packed) {
      packed_ring = std::make_unique<PackedRing>(ram, 8);
      ASSERT_TRUE(ModernSetup::enable_packed(*core, 0, *packed_ring));
    } else {
      split = std::make_unique<SplitRing>(ram, 8);
      ASSERT_TRUE(ModernSetup::enable_split(*core, 0, *split));
    }
    ASSERT_TRUE(ModernSetup::driver_ok(*core));
  }
  // Makes one 3-byte buffer available; with `kick`, notifies the device.
  void add(bool kick) {
    ChainBuilder chain(ram);
    chain.readable({1, 2, 3});
    if (split) {
      split->add(chain);
    } else {
      packed_ring->add(chain);
    }
    if (kick) {
      ASSERT_TRUE(core->notify(0));
    }
  }
  // Takes every used buffer; returns how many there were.
  std::size_t used() {
    std::size_t n = 0;
    while (split ? split->pop_used() : packed_ring->pop_used()) ++n;
    return n;
  }
  // Takes the RAM away from the device, as QEMU does for a moment while its firmware
  // reprograms memory (PAM); returns what memory->add_region needs to put it back.
  MemoryRegionSpec unmap_ram() {
    const MemoryRegion* region = memory->snapshot()->find_region(ram.base());
    EXPECT_NE(region, nullptr);
    MemoryRegionSpec spec;
    if (region == nullptr) return spec;
    spec.guest_address = region->guest_address();
    spec.size = region->size();
    spec.host = region->host();
    EXPECT_TRUE(memory->remove_range(spec.guest_address, spec.size));
    return spec;
  }
  // Runs the loop for `time` (bounded by time, not loop turns).
  void run_for(std::chrono::milliseconds time) {
    const auto end = std::chrono::steady_clock::now() + time;
    while (std::chrono::steady_clock::now() < end) {
      ASSERT_TRUE(loop->run_once(std::chrono::milliseconds(1)));
    }
  }

  std::unique_ptr<EventLoop> loop = std::move(EventLoop::create().value());
  std::shared_ptr<GuestMemory> memory = std::make_shared<GuestMemory>();
  FakeGuestRam ram{memory, 0x40000, 1 << 20};
  RecordingInterrupts interrupts;
  std::unique_ptr<DeviceCore> core;
  std::unique_ptr<SplitRing> split;
  std::unique_ptr<PackedRing> packed_ring;
};

}  // namespace vpci::virtio::testing
