// Interrupts that arrive on eventfds — the way vfio-user (SET_IRQS) and Linux VFIO
// (VFIO_DEVICE_SET_IRQS) deliver them: one eventfd for INTx, one per MSI-X vector. The
// access paths hand the fds to the device and let this collect what they counted into
// the driver's InterruptLog.
#pragma once

#include <chrono>
#include <cstdint>
#include <vector>

#include "base/error.h"
#include "driver/pci_access.h"
#include "server/unique_fd.h"

namespace vpci::driver {

class EventfdInterrupts {
 public:
  // Fresh non-blocking eventfds: one for INTx if `intx`, and `vectors` for MSI-X.
  Status create(bool intx, std::uint16_t vectors);
  void clear();

  [[nodiscard]] int intx_fd() const { return intx_.get(); }
  [[nodiscard]] bool has_intx() const { return intx_.valid(); }
  [[nodiscard]] std::vector<int> msix_fds() const;
  [[nodiscard]] std::size_t msix_count() const { return msix_.size(); }

  // Moves what the eventfds counted into `log` (nothing without one): an INTx event, and
  // one MsixMessage per count of each vector (address unknown: 0). True if anything was.
  bool collect(InterruptLog* log);
  // Waits up to `wait` for any eventfd to count (returns at once if one has).
  void wait(std::chrono::milliseconds wait) const;

 private:
  server::UniqueFd intx_;
  std::vector<server::UniqueFd> msix_;
};

}  // namespace vpci::driver
