// How the vfio-user server presents a pci::Function (pci/function.h): the vfio region and
// IRQ numbering the protocol inherits from linux/vfio.h (spec "VFIO_USER_DEVICE_GET_INFO",
// reference §5) and the translation of region accesses into Function calls.
//
// Regions 0-5 are BAR0-5 (I/O BARs too: QEMU forwards port accesses as REGION_READ/
// WRITE), 6 the expansion ROM, 7 config space, 8 VGA; a pci::Function has no ROM and no
// VGA. IRQ indexes: 0 INTx (one vector), 1 MSI (none: virtio uses MSI-X or INTx),
// 2 MSI-X (msix_vector_count()), 3 ERR (one: QEMU warns "Could not enable error
// recovery" without it; the eventfd is accepted and never signalled), 4 REQ (none).
#pragma once

#include <cstdint>
#include <span>

#include "base/error.h"
#include "pci/function.h"

namespace vpci::server {

inline constexpr unsigned kRegionCount = 9;
inline constexpr unsigned kRegionRom = 6;
inline constexpr unsigned kRegionConfig = 7;
inline constexpr unsigned kRegionVga = 8;

inline constexpr unsigned kIrqIndexCount = 5;
enum IrqIndex : unsigned { kIrqIntx = 0, kIrqMsi = 1, kIrqMsix = 2, kIrqErr = 3, kIrqReq = 4 };
inline constexpr std::uint32_t kErrIrqCount = 1;

// One region as the server reports it; size 0 means absent. A BAR is reported
// mmappable only for the range its function declares mappable (pci::BarInfo), as one
// sparse mmap area: any mmappable region makes QEMU send every write as a blocking round
// trip (reference §7), which only pays when the doorbells themselves stop being messages.
struct RegionInfo {
  std::uint64_t size = 0;
  bool readable = false;
  bool writable = false;
  std::uint64_t mappable_offset = 0;
  std::uint64_t mappable_size = 0;  // 0: not mmappable
};

// Region `index` < kRegionCount of `function`.
[[nodiscard]] RegionInfo region_info(const pci::Function& function, unsigned index);
// Vectors of IRQ index `irq_index` < kIrqIndexCount (0: not supported).
[[nodiscard]] std::uint32_t irq_count(const pci::Function& function, unsigned irq_index);

// A BAR access of any length (already checked to lie inside the region). A pci::Function
// takes BAR accesses of 1, 2, 4 or 8 bytes; QEMU forwards the guest's access width, but
// the protocol allows any count (spec "VFIO_USER_REGION_READ"), so anything else is split
// into naturally aligned pieces in address order.
Status bar_read(pci::Function& function, unsigned bar, std::uint64_t offset,
                std::span<std::uint8_t> data);
Status bar_write(pci::Function& function, unsigned bar, std::uint64_t offset,
                 std::span<const std::uint8_t> data);

}  // namespace vpci::server
