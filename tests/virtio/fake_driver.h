// Test-side guest RAM for the driver library (driver/): a block of "guest RAM" that is
// both the driver's memory (driver::DriverMemory, where driver::SplitRing/PackedRing and
// ChainBuilder build rings and chains, raw access included for hostile rings) and
// registered in the device's GuestMemory, host-mapped or message-backed; plus recorders
// of what a Virtqueue or DeviceCore reports, and the modern set-up sequence for cores.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "driver/virtqueue_rings.h"
#include "virtio/device_core.h"
#include "virtio/guest_memory.h"
#include "virtio/ring_layout.h"
#include "virtio/spec.h"
#include "virtio/virtqueue.h"

namespace vpci::virtio::testing {

// How the device reaches a FakeGuestRam: host-mapped (the device gets a host pointer, as
// with memfd-shared guest RAM) or message-backed (every access goes through a
// MessageMemory, as with vfio-user maps without an fd).
enum class RamBacking : std::uint8_t { kMapped, kMessages };

using driver::BufferElement;
using driver::ChainBuilder;
using driver::PackedRing;
using driver::SplitRing;
using driver::UsedBuffer;

// The storage of a FakeGuestRam that owns its bytes; a base so it exists before
// driver::DriverMemory views it.
struct OwnedRamBytes {
  std::vector<std::uint8_t> owned;
};

// One block of guest RAM at [base, base + size): the driver's memory, registered in
// `memory` for the device.
class FakeGuestRam final : private OwnedRamBytes, public driver::DriverMemory {
 public:
  FakeGuestRam(std::shared_ptr<GuestMemory> memory, GuestAddress base, std::size_t size,
               RamBacking backing = RamBacking::kMapped);
  // RAM the caller owns (e.g. a memfd mapping shared with a vfio-user server); it must
  // outlive this object. Registered in `memory` like owned RAM.
  FakeGuestRam(std::shared_ptr<GuestMemory> memory, GuestAddress base,
               std::span<std::uint8_t> external);
  ~FakeGuestRam() override;

  [[nodiscard]] const std::shared_ptr<GuestMemory>& memory() const { return memory_; }
  // Device accesses through the message path (RamBacking::kMessages).
  [[nodiscard]] std::uint64_t message_accesses() const;
  // From now on every message access fails (kIoError), as when the peer stops answering
  // DMA_READ/DMA_WRITE (RamBacking::kMessages only).
  void fail_messages(bool fail);

 private:
  void register_in(RamBacking backing);

  std::shared_ptr<GuestMemory> memory_;
  class Messages;
  std::shared_ptr<Messages> messages_;  // RamBacking::kMessages only
};

// Records what a Virtqueue reports.
class RecordingQueueSink final : public QueueEventSink {
 public:
  void used_buffer_notification(std::uint16_t queue) override { notifications.push_back(queue); }
  void queue_failed(std::uint16_t queue, const Error& error) override {
    failures.push_back(queue);
    last_error = error;
  }
  std::vector<std::uint16_t> notifications;
  std::vector<std::uint16_t> failures;
  std::optional<Error> last_error;
};

// A one-queue device that completes every chain with nothing written (a transmit queue):
// for tests of what the core does around a device.
class SinkDevice final : public Device {
 public:
  [[nodiscard]] std::uint32_t device_id() const override { return 0x7E; }
  [[nodiscard]] std::uint64_t device_features() const override { return 0; }
  [[nodiscard]] std::uint16_t num_queues() const override { return 1; }
  [[nodiscard]] std::uint16_t max_queue_size(std::uint16_t /*queue*/) const override { return 16; }
  [[nodiscard]] std::uint32_t config_size() const override { return 0; }
  void read_config(std::uint32_t /*offset*/, std::span<std::uint8_t> /*out*/) const override {}
  void process_queue(Virtqueue& queue) override {
    while (auto chain = queue.pop()) chain->complete(0);
  }
};

// Records what a DeviceCore raises.
class RecordingInterrupts final : public InterruptSink {
 public:
  void raise_queue_interrupt(std::uint16_t queue) override { queue_interrupts.push_back(queue); }
  void raise_config_interrupt() override { ++config_interrupts; }
  std::vector<std::uint16_t> queue_interrupts;
  int config_interrupts = 0;
};

// Drives a DeviceCore through the modern initialisation sequence (§3.1.1) and sets up
// queues with fake drivers. `features` are accepted if offered (VERSION_1 always).
struct ModernSetup {
  static Status initialise(DeviceCore& core, std::uint64_t features);
  static Status enable_split(DeviceCore& core, std::uint16_t queue, const SplitRing& driver);
  static Status enable_packed(DeviceCore& core, std::uint16_t queue, const PackedRing& driver);
  static Status driver_ok(DeviceCore& core);
};

}  // namespace vpci::virtio::testing
