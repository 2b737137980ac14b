// The device side of the vfio-user server: what a PCI function must provide so that
// `VfioUserSession` (session.h) can serve it to a vfio-user client such as QEMU's
// `vfio-user-pci`, and what the server hands back to the function (interrupts, guest
// memory).
//
// Regions and interrupts use the vfio numbering the protocol inherits from
// linux/vfio.h (spec "VFIO_USER_DEVICE_GET_INFO", reference §5): regions 0-5 are
// BAR0-5, 6 the expansion ROM, 7 config space, 8 VGA; IRQ indexes 0 INTx, 1 MSI,
// 2 MSI-X, 3 ERR, 4 REQ.
//
// Threading model. Each device socket is served by one thread (`VfioUserServer`,
// socket_server.h). Every call into a PciFunction — config and region accesses, DMA
// notifications, IRQ notifications, reset, connect/disconnect — happens on that thread,
// one at a time, so a function needs no locking for them. `InterruptTrigger::trigger`
// is the one exception: it may be called from any thread (a block back end completing
// I/O on a worker), and is internally synchronised with SET_IRQS. `GuestMemory` is only
// modified on the server thread, between calls into the function; a function that
// touches guest memory from other threads must stop doing so for a region before
// returning from `dma_region_removed`, after which the server unmaps it.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "base/error.h"
#include "pci/config_space.h"

namespace vpci::server {

inline constexpr unsigned kRegionCount = 9;
inline constexpr unsigned kRegionRom = 6;
inline constexpr unsigned kRegionConfig = 7;
inline constexpr unsigned kRegionVga = 8;

inline constexpr unsigned kIrqIndexCount = 5;
enum IrqIndex : unsigned { kIrqIntx = 0, kIrqMsi = 1, kIrqMsix = 2, kIrqErr = 3, kIrqReq = 4 };

// One region as the function describes it. size 0 means "absent" (an unused BAR, no
// ROM, no VGA). BAR regions are never reported mmappable: any mmappable region makes
// QEMU send every write as a blocking round trip (reference §7), and virtio doorbells
// must stay posted.
struct RegionInfo {
  std::uint64_t size = 0;
  bool readable = true;
  bool writable = true;
};

// One guest-physical range the client mapped with DMA_MAP.
struct GuestMemoryRegion {
  std::uint64_t iova = 0;     // guest-physical (I/O virtual) start
  std::uint64_t size = 0;
  std::uint8_t* host = nullptr;  // nullptr: the client gave no fd; only GuestMemory::read/write
                                 // reach it (through DMA_READ/DMA_WRITE messages)
  bool writable = false;
};

// The guest memory the client has mapped, owned by the server.
class GuestMemory {
 public:
  virtual ~GuestMemory() = default;
  [[nodiscard]] const std::vector<GuestMemoryRegion>& regions() const { return regions_; }
  // A host view of [iova, iova + length) if it lies within one accessible (fd-backed)
  // region (and that region is writable when `for_write`); an error naming the address
  // otherwise. Zero-copy, usable from any thread (see the threading model above).
  [[nodiscard]] Result<std::span<std::uint8_t>> translate(std::uint64_t iova, std::uint64_t length,
                                                          bool for_write) const;

  // Copies guest memory [iova, iova + data.size()) into `data` / from `data`. The range
  // may span adjacent maps; every byte must be mapped (and, for write(), in a map with
  // the WRITE flag) or nothing is transferred and nothing is sent. Fd-backed maps are
  // copied directly. Maps the client gave no fd for are reached with DMA_READ/DMA_WRITE
  // messages to the client (spec "VFIO_USER_DMA_READ"/"VFIO_USER_DMA_WRITE"): that only
  // works on the server thread while it is inside a call into the PciFunction, blocks
  // until the client answers (or the session's timeout fails the access), and any
  // command the client sends meanwhile runs after the current call returns — the
  // function is never reentered. Elsewhere such accesses fail (kUnsupported).
  Status read(std::uint64_t iova, std::span<std::uint8_t> data) const;
  Status write(std::uint64_t iova, std::span<const std::uint8_t> data) const;

 protected:
  // The message path for a piece of read()/write() inside one fd-less map; the server's
  // table (server/guest_memory.h) forwards it to the session. Default: unsupported.
  virtual Status read_unbacked(std::uint64_t iova, std::span<std::uint8_t> data) const;
  virtual Status write_unbacked(std::uint64_t iova, std::span<const std::uint8_t> data) const;

  std::vector<GuestMemoryRegion> regions_;  // sorted by iova, non-overlapping
};

// Raises interrupts through the eventfds the client installed with SET_IRQS.
class InterruptTrigger {
 public:
  virtual ~InterruptTrigger() = default;
  // Signals vector `vector` of IRQ index `irq_index` (IrqIndex). Returns false when
  // nothing was signalled: no eventfd assigned, or the vector is masked (the trigger
  // is then remembered as pending and delivered on unmask). INTx is automasked
  // (vfio semantics): after one trigger it stays masked until the client unmasks it,
  // which the function sees as `irq_unmasked(kIrqIntx, 0)`. Thread-safe.
  virtual bool trigger(unsigned irq_index, unsigned vector) = 0;
};

class PciFunction {
 public:
  virtual ~PciFunction() = default;

  // ---- description (constant while a client is connected) ------------------------
  // Region `index` < kRegionCount. The config region's size is the config space size
  // (report 4096 for PCIe: QEMU drops PCIe for a 256-byte config region, reference §5).
  [[nodiscard]] virtual RegionInfo region_info(unsigned index) const = 0;
  // Number of vectors of IRQ index `irq_index` < kIrqIndexCount (0: not supported).
  [[nodiscard]] virtual std::uint32_t irq_count(unsigned irq_index) const = 0;

  // ---- accesses (already checked: inside the region, region readable/writable,
  // length <= max_data_xfer_size; any length and alignment) -------------------------
  virtual Status config_read(std::uint32_t offset, std::span<std::uint8_t> data) = 0;
  virtual Status config_write(std::uint32_t offset, std::span<const std::uint8_t> data) = 0;
  // `region` is a BAR (0-5), the ROM (6) or VGA (8).
  virtual Status region_read(unsigned region, std::uint64_t offset, std::span<std::uint8_t> data) = 0;
  virtual Status region_write(unsigned region, std::uint64_t offset,
                              std::span<const std::uint8_t> data) = 0;

  // ---- lifecycle ---------------------------------------------------------------------
  // A client connected: `interrupts` and `memory` stay valid until `disconnected()`.
  virtual void connected(InterruptTrigger& interrupts, const GuestMemory& memory) = 0;
  // The client went away; `reset()` has already been called. Drop the references.
  virtual void disconnected() = 0;
  // DEVICE_RESET, and on every disconnect: return to the power-on state.
  virtual void reset() = 0;

  // ---- notifications (optional) ---------------------------------------------------------
  virtual void dma_region_added(const GuestMemoryRegion& /*region*/) {}
  // Called before the region is unmapped; stop using its host pointer before returning.
  virtual void dma_region_removed(const GuestMemoryRegion& /*region*/) {}
  // The client unmasked a vector (for INTx: the guest serviced the interrupt). A
  // level-triggered source that is still asserted triggers again.
  virtual void irq_unmasked(unsigned /*irq_index*/, unsigned /*vector*/) {}
};

// Splits an arbitrary config access into the naturally aligned 4/2/1-byte accesses
// ConfigSpace accepts, in address order (QEMU reads the whole space in one request).
Status read_config_bytes(const pci::ConfigSpace& space, std::uint32_t offset,
                         std::span<std::uint8_t> data);
Status write_config_bytes(pci::ConfigSpace& space, std::uint32_t offset,
                          std::span<const std::uint8_t> data);

}  // namespace vpci::server
