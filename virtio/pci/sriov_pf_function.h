// Transport "sriov-pf": an SR-IOV PF served to a driver as itself (virtio 1.3 §2.12.1.2,
// reference virtio-admin.md §1-3). The bus sees the PF only — a modern function with
// VIRTIO_F_ADMIN_VQ, VIRTIO_F_SR_IOV and the SR-IOV capability; its driver owns the admin
// queue and, once it sets NumVFs and VF Enable, reaches VF n's legacy registers through
// commands with member n. A VF is not a function on this bus (vfio-user has one function
// per socket), so:
//   * a VF's queues use the PF's guest memory (one client, one address space);
//   * a VF's interrupts have no route and are dropped (its ISR and MSI-X pending state
//     are still kept, so a driver polling the ISR through a command sees them);
//   * clearing VF Enable, or a reset of the PF, resets every VF (PCIe 6.0 §9.3.3.3.1:
//     VFs disappear and come back in their initial state).
#pragma once

#include <memory>

#include "pci/function.h"
#include "virtio/pci/sriov_pf.h"

namespace vpci::virtio::pci {

class SriovPfFunction final : public vpci::pci::Function {
 public:
  explicit SriovPfFunction(std::unique_ptr<SriovPf> owner) : owner_(std::move(owner)) {}

  [[nodiscard]] SriovPf& owner() { return *owner_; }

  // ---- pci::Function: the PF's, with the VFs following its life cycle ------------------
  [[nodiscard]] std::uint32_t config_size() const override { return pf().config_size(); }
  [[nodiscard]] vpci::pci::BarInfo bar_info(unsigned bar) const override {
    return pf().bar_info(bar);
  }
  [[nodiscard]] std::uint16_t msix_vector_count() const override {
    return pf().msix_vector_count();
  }
  Status config_read(std::uint32_t offset, std::span<std::uint8_t> data) override {
    return owner_->pf().config_read(offset, data);
  }
  Status config_write(std::uint32_t offset, std::span<const std::uint8_t> data) override;
  Status bar_read(unsigned bar, std::uint64_t offset, std::span<std::uint8_t> data) override {
    return owner_->pf().bar_read(bar, offset, data);
  }
  Status bar_write(unsigned bar, std::uint64_t offset,
                   std::span<const std::uint8_t> data) override {
    return owner_->pf().bar_write(bar, offset, data);
  }
  void set_interrupt_output(vpci::pci::InterruptOutput* output) override {
    owner_->pf().set_interrupt_output(output);
  }
  void set_event_loop(EventLoop* loop) override;
  void quiesce() override;
  void reset() override;

 private:
  [[nodiscard]] const VirtioPciFunction& pf() const { return owner_->pf(); }
  void reset_vfs();

  std::unique_ptr<SriovPf> owner_;
  bool vfs_enabled_ = false;  // VF Enable as of the last config write
};

}  // namespace vpci::virtio::pci
