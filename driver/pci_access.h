// How a driver reaches one PCI function: configuration space, BARs, DMA and interrupts,
// whatever carries them — an in-process pci::Function (function_access.h), a vfio-user
// server through the client (vfio_user_access.h), or Linux VFIO on real hardware
// (vfio_access.h). The virtio-pci driver (virtio_pci_driver.h) is written against this
// and nothing else.
//
// Interrupts arrive in an InterruptLog the driver owns: an access path either records
// them as they happen (the in-process function calls back) or collects them from
// eventfds when the driver waits (poll()).
#pragma once

#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "base/error.h"
#include "driver/driver_memory.h"
#include "pci/function.h"

namespace vpci::driver {

struct MsixMessage {
  std::uint16_t vector = 0;
  std::uint64_t address = 0;  // what the vector's table entry held (0: not known on this path)
  std::uint32_t data = 0;
};

// What the function signalled since the driver last looked.
struct InterruptLog {
  bool intx = false;     // INTx level (in-process) or a pending INTx event (eventfd paths)
  int intx_changes = 0;  // every level change / INTx event
  std::vector<MsixMessage> msix;
};

// A BAR as a driver sees it on a path that reports only its size (vfio-user regions, VFIO
// region info): the kind and prefetchability from its register's low dword `raw` (PCI
// Local Bus 3.0 §6.2.5.1), the size as given (0: no BAR).
vpci::pci::BarInfo bar_from_register(std::uint32_t raw, std::uint64_t size);

class PciAccess {
 public:
  virtual ~PciAccess() = default;

  // "vfio-user server /run/vpci/rng0.sock", "in-process function", "VFIO 0000:03:00.0".
  [[nodiscard]] virtual std::string describe() const = 0;
  [[nodiscard]] virtual std::uint32_t config_size() const = 0;
  [[nodiscard]] virtual vpci::pci::BarInfo bar_info(unsigned bar) const = 0;
  [[nodiscard]] virtual std::uint16_t msix_vector_count() const = 0;
  virtual Status config_read(std::uint32_t offset, std::span<std::uint8_t> data) = 0;
  virtual Status config_write(std::uint32_t offset, std::span<const std::uint8_t> data) = 0;
  virtual Status bar_read(unsigned bar, std::uint64_t offset, std::span<std::uint8_t> data) = 0;
  virtual Status bar_write(unsigned bar, std::uint64_t offset,
                           std::span<const std::uint8_t> data) = 0;
  // A doorbell write: posted where the path allows it (vfio-user NO_REPLY), so the driver
  // does not wait for the device to take the kick.
  virtual Status notify_write(unsigned bar, std::uint64_t offset,
                              std::span<const std::uint8_t> data) {
    return bar_write(bar, offset, data);
  }

  // Makes `memory` reachable by the function's DMA at memory.base().
  virtual Status map_dma(DmaMemory& memory) = 0;
  // Where interrupts are recorded from now on (not owned; nullptr detaches). MSI-X
  // vectors 0..vectors-1 and INTx are routed by the path as it needs.
  virtual Status route_interrupts(InterruptLog* log, std::uint16_t vectors) = 0;
  // Lets the path work for up to `wait` (answer the device's DMA requests, collect
  // interrupts into the log); returns early once an interrupt was recorded.
  virtual Status poll(std::chrono::milliseconds wait) = 0;
  // INTx is level-triggered and, on eventfd paths, automasked: the driver unmasks it
  // after handling each event (after reading the ISR).
  virtual Status unmask_intx() { return {}; }
  // Function-level reset.
  virtual Status reset() = 0;
};

}  // namespace vpci::driver
