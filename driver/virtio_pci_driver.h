// A virtio-pci driver that talks to any PCI function only through config and BAR
// accesses (PciAccess), the way Linux's drivers/virtio/virtio_pci_{modern,legacy}.c do
// (read for behaviour only):
//   * probe: walk the standard capability list; the first vendor capability of each
//     cfg_type whose BAR is 0-5 wins (virtio 1.3 §4.1.4.1); COMMON, NOTIFY and ISR are
//     required, DEVICE optional; the virtio device ID is device_id - 0x1040, or the
//     subsystem ID for 0x1000-0x103F; the MSI-X capability gives table and PBA.
//   * legacy path (transitional devices): I/O BAR0 registers (§4.1.4.8); or, for a
//     transitional MMR device (0x10F9-0x10FF), the window its VSEC names, with doorbells
//     through the notify capability (docs/transitional-mmr.md).
//   * initialisation (§3.1.1 / §3.1.2), split and packed queues in the driver's memory,
//     MSI-X (vector 0 for configuration changes, q + 1 for queue q) or INTx with the ISR.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "base/error.h"
#include "driver/pci_access.h"
#include "driver/virtqueue_rings.h"
#include "virtio/pci/registers.h"

namespace vpci::driver {

enum class DriverPath : std::uint8_t { kModern, kLegacyIo, kLegacyMmr };

struct CapabilityLocation {
  std::uint8_t bar = 0;
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
  std::uint16_t config_offset = 0;
};

struct ProbeResult {
  std::uint16_t vendor_id = 0;
  std::uint16_t device_id = 0;
  std::uint8_t revision = 0;
  std::uint16_t subsystem_id = 0;
  std::uint32_t virtio_id = 0;
  std::optional<CapabilityLocation> common, notify, isr, device, pci_cfg;
  std::uint32_t notify_off_multiplier = 0;
  std::optional<CapabilityLocation> legacy_mmr;  // from the cfg_type 10 VSEC
  bool legacy_io_bar = false;                    // BAR0 is I/O and the ID is transitional
  std::uint16_t msix_cap = 0;
  std::uint16_t msix_vectors = 0;
  std::uint8_t msix_table_bar = 0;
  std::uint32_t msix_table_offset = 0;
};

struct DriverOptions {
  DriverPath path = DriverPath::kModern;
  bool packed = false;               // VIRTIO_F_RING_PACKED (modern only)
  bool use_msix = true;              // else INTx + ISR
  std::uint64_t extra_features = 0;  // accepted if offered
  std::uint16_t queue_size = 0;      // 0: the device's maximum (modern)
};

class VirtioPciDriver {
 public:
  // `memory` holds the rings and buffers; the device must reach it (PciAccess::map_dma).
  // Both must outlive the driver, which detaches its interrupts when destroyed.
  VirtioPciDriver(PciAccess& access, DriverMemory& memory);
  ~VirtioPciDriver();
  VirtioPciDriver(const VirtioPciDriver&) = delete;
  VirtioPciDriver& operator=(const VirtioPciDriver&) = delete;

  // Reads config space and finds the capabilities; fails if neither path is usable.
  Result<ProbeResult> probe();
  // Full initialisation through DRIVER_OK, every queue set up.
  Status initialise(const DriverOptions& options);

  [[nodiscard]] const ProbeResult& probed() const { return probe_; }
  [[nodiscard]] InterruptLog& interrupts() { return interrupts_; }
  [[nodiscard]] DriverMemory& ram() { return *ram_; }
  [[nodiscard]] PciAccess& access() { return *access_; }
  [[nodiscard]] std::size_t queue_count() const { return notify_offsets_.size(); }
  [[nodiscard]] std::uint64_t negotiated_features() const { return features_; }
  [[nodiscard]] std::uint8_t status();

  // Places a chain on `queue`, notifies (unless told not to) and returns its head / buffer ID.
  std::uint16_t submit(std::uint16_t queue, const ChainBuilder& chain, bool kick = true);
  std::optional<UsedBuffer> pop_used(std::uint16_t queue);
  // pop_used, retried until `timeout` passes: for devices served on another thread or
  // process, which complete requests after the doorbell write returns. The access path
  // works meanwhile (PciAccess::poll: DMA requests answered, interrupts collected).
  std::optional<UsedBuffer> wait_used(std::uint16_t queue,
                                      std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // The ring drivers behind `queue` (nullptr if it is of the other format or absent),
  // for tests that write hostile descriptors and indices directly.
  [[nodiscard]] SplitRing* split_ring(std::uint16_t queue) {
    return queue < split_.size() ? split_[queue].get() : nullptr;
  }
  [[nodiscard]] PackedRing* packed_ring(std::uint16_t queue) {
    return queue < packed_.size() ? packed_[queue].get() : nullptr;
  }
  Status notify(std::uint16_t queue);
  // Consumes one used-buffer interrupt for `queue`: the queue's MSI-X message, or INTx
  // asserted and ISR bit 0 set (the ISR read de-asserts INTx; checked).
  bool take_queue_interrupt(std::uint16_t queue);
  // take_queue_interrupt, retried while the access path works, until `timeout`.
  bool wait_queue_interrupt(std::uint16_t queue,
                            std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // Writes status 0 (§2.1): the device stops and forgets the queues.
  Status reset_device();
  Result<std::vector<std::uint8_t>> read_device_config(std::uint32_t offset, std::uint32_t length);

  // Register access helpers (modern common config, legacy block).
  Result<std::uint64_t> common_read(std::uint32_t offset, unsigned width);
  Status common_write(std::uint32_t offset, unsigned width, std::uint64_t value);
  Result<std::uint64_t> legacy_read(std::uint32_t offset, unsigned width);
  Status legacy_write(std::uint32_t offset, unsigned width, std::uint64_t value);
  Result<std::uint8_t> read_isr();
  Result<std::uint32_t> config_read32(std::uint32_t offset);
  Status config_write(std::uint32_t offset, unsigned width, std::uint32_t value);

 private:
  Status setup_msix();
  Status initialise_modern(const DriverOptions& options);
  Status initialise_legacy(const DriverOptions& options);
  [[nodiscard]] bool legacy_msix_enabled();

  PciAccess* access_;
  DriverMemory* ram_;
  InterruptLog interrupts_;
  ProbeResult probe_;
  DriverOptions options_;
  std::uint64_t features_ = 0;
  bool msix_ = false;
  std::vector<std::unique_ptr<SplitRing>> split_;
  std::vector<std::unique_ptr<PackedRing>> packed_;
  std::vector<std::uint16_t> notify_offsets_;
  std::size_t msix_consumed_ = 0;
};

}  // namespace vpci::driver
