// virtio-rng, the entropy device (virtio 1.3 §5.4): one request queue of device-
// writable buffers, each filled with bytes from the kernel's CSPRNG (getrandom(2)).
//
// Policy: §5.4.6.1 says the driver MUST NOT place device-readable buffers in the
// queue, so a chain with any is a protocol violation (the queue stops, the device
// needs a reset). §5.4.6.2 lets the device fill less than the whole buffer; vpci caps
// each chain at `max_bytes_per_request` so one notification cannot make the device
// produce unbounded output.
#pragma once

#include <cstdint>
#include <memory>
#include <span>

#include "base/error.h"
#include "virtio/device.h"

namespace vpci::devices {

class EntropySource {
 public:
  virtual ~EntropySource() = default;
  // Fills a prefix of `out` (at least one byte unless it fails) and returns its length.
  [[nodiscard]] virtual Result<std::size_t> fill(std::span<std::uint8_t> out) = 0;
};

// getrandom(2) without flags: blocks only until the kernel pool is initialised.
class KernelEntropySource final : public EntropySource {
 public:
  [[nodiscard]] Result<std::size_t> fill(std::span<std::uint8_t> out) override;
};

struct RngDeviceOptions {
  std::uint16_t queue_size = 256;
  std::uint32_t max_bytes_per_request = 64 * 1024;
};

class RngDevice final : public virtio::Device {
 public:
  explicit RngDevice(RngDeviceOptions options = {},
                     std::unique_ptr<EntropySource> source = std::make_unique<KernelEntropySource>());

  [[nodiscard]] std::uint32_t device_id() const override;
  [[nodiscard]] std::uint64_t device_features() const override { return 0; }  // §5.4.3: none
  [[nodiscard]] std::uint16_t num_queues() const override { return 1; }
  [[nodiscard]] std::uint16_t max_queue_size(std::uint16_t) const override { return options_.queue_size; }
  [[nodiscard]] std::uint32_t config_size() const override { return 0; }  // §5.4.4: none
  void read_config(std::uint32_t, std::span<std::uint8_t>) const override {}
  void process_queue(virtio::Virtqueue& queue) override;

  [[nodiscard]] std::uint64_t bytes_produced() const { return bytes_produced_; }

 private:
  void serve(virtio::DescriptorChain& chain);

  RngDeviceOptions options_;
  std::unique_ptr<EntropySource> source_;
  std::uint64_t bytes_produced_ = 0;
};

}  // namespace vpci::devices
