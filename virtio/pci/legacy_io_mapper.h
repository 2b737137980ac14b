// LegacyIoMapper: the "I/O to memory rd/wr mapper" of the transitional MMR proposal
// (seed 004; docs/transitional-mmr.md §5). It wraps any pci::Function that exposes the
// MMR capability (a PCIe VSEC with cfg_type 10, docs/transitional-mmr.md §3) and presents
// it as an ordinary transitional virtio-pci device, with the behaviour of a
// hypervisor-side variant driver (cf. Linux drivers/vfio/pci/virtio/legacy_io.c, read for
// behaviour only):
//
//   guest view                              underlying MMR function
//   ──────────                              ───────────────────────
//   device ID 0x1000-0x103F, revision 0,    config reads pass through, with these bytes
//   subsystem 0x1AF4:<virtio id>            replaced; writes pass through except BAR0
//   BAR0: I/O, pow2(window length) bytes    BAR0 shadow register (sizing, address) and
//     (Command.I/O must be set)             Command.I/O shadow bit
//   BAR0 + 16, 2-byte write (queue notify)  fast path: written straight to the notify
//                                           capability's base doorbell
//   BAR0 + anything else                    the same offset in the legacy window
//                                           (VSEC bar + offset)
//   BAR1-5, MSI-X, INTx, reset              passed through
//
// The underlying function's BAR0 must be unimplemented (the slot becomes the I/O BAR).
//
// A second backend, the one the virtio TC adopted (create_over_admin, legacy_admin_path.h):
// the underlying function is an SR-IOV VF, and the legacy accesses become admin commands
// on its PF's admin queue instead of accesses to an MMR window; the guest view is the
// same (Linux's virtio-vfio-pci presents exactly this device).
#pragma once

#include <cstdint>
#include <memory>

#include "base/error.h"
#include "pci/function.h"
#include "virtio/pci/legacy_admin_path.h"

namespace vpci::virtio::pci {

// What the mapper found in the underlying function's config space.
struct MmrLocation {
  std::uint32_t virtio_id = 0;
  std::uint16_t transitional_device_id = 0;
  std::uint8_t window_bar = 0;
  std::uint64_t window_offset = 0;
  std::uint32_t window_length = 0;
  std::uint8_t notify_bar = 0;
  std::uint64_t notify_offset = 0;
  std::uint16_t vsec_offset = 0;
};

// Parses the MMR VSEC and the notify capability of `config` (4096 bytes of a virtio
// function); `bars` says which BARs exist and their sizes. Errors name what is missing or
// malformed.
Result<MmrLocation> locate_mmr(std::span<const std::uint8_t> config,
                               std::span<const vpci::pci::BarInfo, vpci::pci::kBarCount> bars);

class LegacyIoMapper final : public vpci::pci::Function {
 public:
  static Result<std::unique_ptr<LegacyIoMapper>> create(std::unique_ptr<vpci::pci::Function> mmr);
  // The admin-command backend: VF `path->vf()` presented as a transitional device.
  static Result<std::unique_ptr<LegacyIoMapper>> create_over_admin(
      std::unique_ptr<LegacyAdminPath> path);
  ~LegacyIoMapper() override;

  [[nodiscard]] std::uint32_t config_size() const override { return underlying_->config_size(); }
  [[nodiscard]] vpci::pci::BarInfo bar_info(unsigned bar) const override;
  [[nodiscard]] std::uint16_t msix_vector_count() const override {
    return underlying_->msix_vector_count();
  }
  Status config_read(std::uint32_t offset, std::span<std::uint8_t> data) override;
  Status config_write(std::uint32_t offset, std::span<const std::uint8_t> data) override;
  Status bar_read(unsigned bar, std::uint64_t offset, std::span<std::uint8_t> data) override;
  Status bar_write(unsigned bar, std::uint64_t offset, std::span<const std::uint8_t> data) override;
  void set_event_loop(EventLoop* loop) override { underlying_->set_event_loop(loop); }
  void quiesce() override { underlying_->quiesce(); }
  void set_interrupt_output(vpci::pci::InterruptOutput* output) override {
    underlying_->set_interrupt_output(output);
  }
  void reset() override;

  [[nodiscard]] const MmrLocation& location() const { return location_; }
  [[nodiscard]] vpci::pci::Function& underlying() { return *underlying_; }
  // The admin-command backend, if this mapper uses it.
  [[nodiscard]] LegacyAdminPath* admin_path() { return admin_.get(); }
  [[nodiscard]] std::uint64_t fast_path_notifies() const { return fast_path_notifies_; }

 private:
  LegacyIoMapper(std::unique_ptr<vpci::pci::Function> mmr, std::unique_ptr<LegacyAdminPath> admin,
                 MmrLocation location);
  // The byte the guest sees at config offset `offset`, given the underlying byte.
  [[nodiscard]] std::uint8_t faked_byte(std::uint32_t offset, std::uint8_t underlying) const;

  std::unique_ptr<vpci::pci::Function> mmr_;  // the MMR backend's function
  std::unique_ptr<LegacyAdminPath> admin_;    // or the admin backend (owns the VF)
  vpci::pci::Function* underlying_;           // the MMR function or the VF
  MmrLocation location_;                      // admin: ids and window length only
  std::uint32_t io_bar_size_;
  std::uint32_t bar0_shadow_ = 0;
  bool io_enabled_ = false;
  std::uint64_t fast_path_notifies_ = 0;
};

}  // namespace vpci::virtio::pci
