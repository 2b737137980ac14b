// pci::Function: one emulated PCI function as a bus sees it — a configuration space,
// up to six BARs, and interrupt lines — independent of how accesses reach it.
//
// Implemented by the virtio-pci transports (virtio/pci/) and by the legacy I/O → MMR
// mapper; driven by the vfio-user server (server/function_adapter.h wraps a Function
// as a server::PciFunction), by the in-process test driver, and by the benchmarks.
//
//   bus (vfio-user session, test driver, bench)
//        │ config_read/config_write          bar_read/bar_write
//        ▼                                       ▼
//   pci::Function ── ConfigSpace (pci/)      BAR decoders (transport-specific)
//        │
//        └──▶ InterruptOutput: INTx level, MSI-X vector messages
//
// Interrupts. A Function decides *whether* to interrupt (ISR bits, MSI-X enable and,
// when it owns the MSI-X table, per-vector and function masking with pending bits,
// PCI spec 6.0 §6.1.4.5); the InterruptOutput decides *how* (an eventfd, a test
// recorder). When the bus emulates the MSI-X table itself — QEMU's vfio-user client
// does: table writes never reach the server, PBA reads do (reference vfio-user.md §5)
// — construct the Function with MsixTableOwner::kBus: every vector message is then
// passed to the output unmasked and the bus applies its own masking.
//
// Threading: not thread-safe; the bus serialises every call (vfio-user: the socket's
// thread). InterruptOutput may be called from inside any of these calls.
#pragma once

#include <cstdint>
#include <span>

#include "base/error.h"

namespace vpci {
class EventLoop;
}

namespace vpci::pci {

inline constexpr unsigned kBarCount = 6;

enum class BarKind : std::uint8_t { kAbsent, kIo, kMemory32, kMemory64 };

struct BarInfo {
  BarKind kind = BarKind::kAbsent;
  std::uint64_t size = 0;  // power of two, or 0 when absent
  bool prefetchable = false;
  // A page-aligned range of the BAR that a client may map to plain shared memory instead
  // of forwarding accesses: the function does not need to see the writes there, because
  // it polls the state they announce (virtio's notification area of a polling device,
  // virtio 1.3 §4.1.4.4). Its reads then see what was written. Size 0: none.
  std::uint64_t mappable_offset = 0;
  std::uint64_t mappable_size = 0;
};

// Who applies MSI-X table masking (see the file comment).
enum class MsixTableOwner : std::uint8_t { kFunction, kBus };

class InterruptOutput {
 public:
  // INTx (pin A) level. Called on every change of the level only.
  virtual void set_intx_level(bool asserted) = 0;
  // Deliver MSI-X vector `vector` (with kFunction: only unmasked vectors, with the
  // message address/data the driver programmed into the table).
  virtual void signal_msix(std::uint16_t vector, std::uint64_t address, std::uint32_t data) = 0;

 protected:
  ~InterruptOutput() = default;
};

class Function {
 public:
  virtual ~Function() = default;

  // Size of configuration space: 256 (conventional) or 4096 (PCIe).
  [[nodiscard]] virtual std::uint32_t config_size() const = 0;
  [[nodiscard]] virtual BarInfo bar_info(unsigned bar) const = 0;
  // Number of MSI-X vectors (0: no MSI-X capability).
  [[nodiscard]] virtual std::uint16_t msix_vector_count() const = 0;

  // Accesses. Config accesses of any length inside config_size() are split into
  // naturally aligned pieces by the implementation. BAR accesses are 1, 2, 4 or 8
  // bytes; `offset` + size must lie inside the BAR. A refused access (outside the
  // region, bad width for the register) returns an error and, for reads, fills `data`
  // with 0xFF the way a master abort reads back — callers may ignore the error.
  virtual Status config_read(std::uint32_t offset, std::span<std::uint8_t> data) = 0;
  virtual Status config_write(std::uint32_t offset, std::span<const std::uint8_t> data) = 0;
  virtual Status bar_read(unsigned bar, std::uint64_t offset, std::span<std::uint8_t> data) = 0;
  virtual Status bar_write(unsigned bar, std::uint64_t offset,
                           std::span<const std::uint8_t> data) = 0;

  // Where interrupts go; nullptr detaches (interrupts are then dropped, ISR/pending
  // state still tracked). Not owned; must outlive its use.
  virtual void set_interrupt_output(InterruptOutput* output) = 0;
  // Function-level reset: config space and device return to the power-on state.
  virtual void reset() = 0;
  // The event loop the bus runs this function on (base/event_loop.h): every call above
  // comes from its thread, and the device's back end registers its own sources (fds,
  // timers, deferred work) there. nullptr (the default, and for in-process buses such
  // as the test driver): no loop; devices that need one refuse to start. Not owned;
  // set before the first access and cleared before the loop goes away.
  virtual void set_event_loop(EventLoop* loop) { (void)loop; }
  // Returns once the function has no DMA in flight (a back end's reads and writes into
  // guest memory, e.g. virtio-blk on io_uring): the bus calls it before it takes guest
  // memory away (vfio-user DMA_UNMAP). Bounded by the back end's own I/O time.
  virtual void quiesce() {}
};

}  // namespace vpci::pci
