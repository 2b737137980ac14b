// `vpci probe`'s engine: identifies the virtio device behind any PciAccess, brings it up
// with the driver (virtio_pci_driver.h) in DMA memory of its own, runs a self-test suited
// to its type, and leaves it reset:
//   rng  reads bytes from the request queue;
//   blk  reads the capacity and sector 0 (and, with a scratch sector, writes a pattern
//        there, reads it back and restores what was there);
//   net  reads the MAC and link status from the device configuration;
// other virtio types are identified and brought up (no self-test); a function that is
// not virtio is reported as such (not a failure: the access worked).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "base/error.h"
#include "driver/pci_access.h"
#include "driver/virtio_pci_driver.h"

namespace vpci::driver {

struct ProbeOptions {
  // The legacy interface (I/O BAR0, or a transitional MMR device's window) instead of the
  // modern one; without, modern when the device has it, else legacy.
  bool legacy = false;
  bool use_msix = true;                             // else INTx
  std::optional<std::uint64_t> blk_scratch_sector;  // blk: write and read back here
  std::chrono::milliseconds timeout{5000};          // each request
};

struct ProbeReport {
  bool virtio = false;
  std::uint16_t vendor_id = 0;
  std::uint16_t device_id = 0;
  std::uint32_t virtio_type = 0;
  std::string type_name;  // "entropy", "block", "network", "virtio type N", "not virtio"
  std::string interface;  // "modern", "legacy I/O", "legacy MMR"
  std::uint64_t features = 0;
  bool passed = false;
  std::vector<std::pair<std::string, std::string>> facts;  // what the self-test saw
  std::string failure;                                     // why it failed, if it did
};

// Runs the probe. An error is a broken access path (the server went away); a device that
// misbehaves is a report with passed == false and the reason.
Result<ProbeReport> probe_device(PciAccess& access, const ProbeOptions& options);

}  // namespace vpci::driver
