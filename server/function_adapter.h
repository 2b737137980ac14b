// FunctionAdapter: serves any pci::Function (pci/function.h) — a virtio-pci transport,
// the legacy-over-MMR mapper — as a server::PciFunction, so VfioUserServer can hand it
// to QEMU's vfio-user-pci.
//
//   VfioUserSession ──PciFunction──▶ FunctionAdapter ──pci::Function──▶ transport/device
//          ▲  InterruptTrigger            │ ▲ pci::InterruptOutput           │
//          └──────────────────────────────┘ └────────────────────────────────┘
//   DMA_MAP/UNMAP ──▶ dma_region_added/removed ──▶ virtio::GuestMemory (shared with the device)
//
// Regions: BAR0-5 from bar_info() (I/O BARs too: QEMU forwards port accesses as
// REGION_READ/WRITE), config from config_size(), no ROM, no VGA. IRQs: INTx 1, MSI 0
// (virtio uses MSI-X or INTx), MSI-X msix_vector_count(), ERR 1 (QEMU warns "Could not
// enable error recovery" without it; the eventfd is accepted and never signalled), REQ 0.
//
// Interrupts: the bus (QEMU) emulates the MSI-X table, so construct the Function with
// pci::MsixTableOwner::kBus; signal_msix(v) becomes trigger(kIrqMsix, v). INTx is a level
// but vfio INTx is an automasked edge (reference vfio-user.md §5): asserting the level
// triggers once, and every unmask from the client (QEMU's EOI) while the level is still
// asserted triggers again.
//
// Guest memory: a shared virtio::GuestMemory mirrors the client's DMA_MAP table, so the
// device reads rings and buffers through MemoryMap snapshots (the only sanctioned path to
// guest memory). On DMA_UNMAP the region is removed and dma_region_removed() waits until
// every snapshot that still lists it is gone (its on_release hook ran) before returning,
// because the server munmaps it right after (virtio/guest_memory.h threading contract).
// A device must therefore not hold a snapshot across an unbounded wait. Maps without an
// fd (QEMU's ROM areas, or guest RAM that is not memory-backend-memfd,share=on) have no
// host memory and are not added: virtio devices stay fd-only (they use rings in place,
// which message-based DMA cannot offer); a warning is printed once per such map, and a
// ring or buffer there fails translation, so the queue goes to NEEDS_RESET with an error
// naming the address.
//
// Threading: every PciFunction call comes from the server thread (pci_function.h). The
// InterruptOutput calls may come from any thread (a block device completing on a worker);
// they only read atomics and call the thread-safe InterruptTrigger. The Function must
// stop raising interrupts once reset() returns (the session resets before disconnecting).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>

#include "pci/function.h"
#include "server/pci_function.h"
#include "virtio/guest_memory.h"

namespace vpci::server {

class FunctionAdapter final : public PciFunction, private pci::InterruptOutput {
 public:
  inline static constexpr std::uint32_t kErrIrqCount = 1;

  // `memory` is what the device will be constructed with (guest_memory()); a fresh one
  // by default. Attach the Function before the server starts.
  explicit FunctionAdapter(
      std::shared_ptr<virtio::GuestMemory> memory = std::make_shared<virtio::GuestMemory>());
  ~FunctionAdapter() override;
  FunctionAdapter(const FunctionAdapter&) = delete;
  FunctionAdapter& operator=(const FunctionAdapter&) = delete;

  [[nodiscard]] const std::shared_ptr<virtio::GuestMemory>& guest_memory() const { return memory_; }
  // Not owned: must outlive every server using the adapter.
  void attach(pci::Function& function) { function_ = &function; }
  // Owned.
  void attach(std::unique_ptr<pci::Function> function);
  [[nodiscard]] pci::Function* function() const { return function_; }

  // PciFunction
  [[nodiscard]] RegionInfo region_info(unsigned index) const override;
  [[nodiscard]] std::uint32_t irq_count(unsigned irq_index) const override;
  Status config_read(std::uint32_t offset, std::span<std::uint8_t> data) override;
  Status config_write(std::uint32_t offset, std::span<const std::uint8_t> data) override;
  Status region_read(unsigned region, std::uint64_t offset, std::span<std::uint8_t> data) override;
  Status region_write(unsigned region, std::uint64_t offset,
                      std::span<const std::uint8_t> data) override;
  void connected(InterruptTrigger& interrupts, const GuestMemory& memory) override;
  void disconnected() override;
  void reset() override;
  void dma_region_added(const GuestMemoryRegion& region) override;
  void dma_region_removed(const GuestMemoryRegion& region) override;
  void irq_unmasked(unsigned irq_index, unsigned vector) override;

 private:
  // pci::InterruptOutput
  void set_intx_level(bool asserted) override;
  void signal_msix(std::uint16_t vector, std::uint64_t address, std::uint32_t data) override;

  // Set by a region's on_release hook (any thread), awaited by dma_region_removed.
  struct ReleaseLatch {
    std::mutex mutex;
    std::condition_variable released_cv;
    bool released = false;
  };

  std::shared_ptr<virtio::GuestMemory> memory_;
  std::unique_ptr<pci::Function> owned_function_;
  pci::Function* function_ = nullptr;
  std::atomic<InterruptTrigger*> trigger_{nullptr};
  std::atomic<bool> intx_asserted_{false};
  std::map<std::uint64_t, std::shared_ptr<ReleaseLatch>> latches_;  // by iova; server thread only
};

}  // namespace vpci::server
