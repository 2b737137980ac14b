// The interrupt eventfds a vfio-user client installed with SET_IRQS, with vfio's mask
// state, for every IRQ index of one function (server/vfio_regions.h numbering).
//
// vfio semantics (linux/vfio.h, reference vfio-user.md §5): INTx is an automasked edge —
// after one trigger it stays masked until the client unmasks it (QEMU does at the guest's
// EOI); MSI/MSI-X vectors the client masked remember a trigger as pending and deliver it
// on unmask.
//
// Threading: thread-safe (one mutex), so a back end completing on another thread may
// signal; everything else is called from the server thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <vector>

#include "pci/function.h"
#include "server/unique_fd.h"

namespace vpci::server {

class IrqEventfds {
 public:
  explicit IrqEventfds(const pci::Function& function);

  // Signals vector `vector` of IRQ index `irq_index`. False when nothing was signalled:
  // no eventfd assigned, or the vector is masked (then remembered as pending, except for
  // INTx, whose source re-asserts on unmask instead).
  bool trigger(unsigned irq_index, unsigned vector);

  // Assigns fds[i] to vector start + i; an empty `fds` de-assigns the range.
  void assign(unsigned irq_index, std::uint32_t start, std::vector<UniqueFd> fds);
  void disable(unsigned irq_index);
  void set_masked(unsigned irq_index, std::uint32_t vector, bool masked);
  [[nodiscard]] bool has_eventfd(unsigned irq_index, std::uint32_t vector) const;
  [[nodiscard]] bool masked(unsigned irq_index, std::uint32_t vector) const;
  void clear();
  // Eventfd writes so far (interrupts delivered to the client), for profiling.
  [[nodiscard]] std::uint64_t signalled() const {
    return signalled_.load(std::memory_order_relaxed);
  }

 private:
  struct Vector {
    UniqueFd eventfd;
    bool masked = false;
    bool pending = false;
  };
  bool signal_locked(unsigned irq_index, Vector& vector);

  mutable std::mutex mutex_;
  std::vector<std::vector<Vector>> vectors_;  // [irq_index][vector]
  std::atomic<std::uint64_t> signalled_{0};
};

}  // namespace vpci::server
