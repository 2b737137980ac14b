// MSI-X state of one function: the vector table and Pending Bit Array that live in a
// BAR (PCI Express Base 6.0 §7.7.2), per-vector and function masking, and delivery
// through a pci::InterruptOutput.
//
// Masking (PCIe 6.0 §6.1.4.5): a vector whose Mask bit or the Function Mask is set does
// not send its message; the function sets the vector's pending bit instead and sends the
// message as soon as both masks are clear (the pending bit is then cleared). With
// MsixTableOwner::kBus the bus emulates the table (QEMU's vfio-user client does), so
// every message goes to the output unmasked and the PBA stays zero.
//
// Table accesses: DWORD or aligned QWORD (§7.7.2: "software ... must use aligned full
// DWORD or aligned full QWORD transactions"); anything else is refused with an error
// (reads give 0xFF, like a master abort). The PBA is read-only.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "base/error.h"
#include "pci/capability_registers.h"
#include "pci/function.h"

namespace vpci::virtio::pci {

class MsixController {
 public:
  static constexpr std::uint32_t kEntrySize = vpci::pci::msix::kEntrySize;

  MsixController(std::uint16_t vectors, vpci::pci::MsixTableOwner owner);

  [[nodiscard]] std::uint16_t vector_count() const { return vectors_; }
  [[nodiscard]] std::uint32_t table_bytes() const { return vectors_ * kEntrySize; }
  [[nodiscard]] std::uint32_t pba_bytes() const {
    return static_cast<std::uint32_t>(pba_words(vectors_) * sizeof(std::uint64_t));
  }
  [[nodiscard]] bool enabled() const { return enabled_; }
  [[nodiscard]] bool function_masked() const { return function_masked_; }
  [[nodiscard]] bool vector_masked(std::uint16_t vector) const;
  [[nodiscard]] bool pending(std::uint16_t vector) const;

  // Power-on state: every vector masked, nothing pending, MSI-X disabled.
  void reset();
  void set_output(vpci::pci::InterruptOutput* output) { output_ = output; }

  // New Message Control state from config space (Enable bit 15, Function Mask bit 14).
  void set_control(bool enable, bool function_mask);

  Status table_read(std::uint64_t offset, std::span<std::uint8_t> data) const;
  Status table_write(std::uint64_t offset, std::span<const std::uint8_t> data);
  Status pba_read(std::uint64_t offset, std::span<std::uint8_t> data) const;

  // Sends vector `vector`, or records it pending while masked. Vectors beyond the table
  // (including VIRTIO_MSI_NO_VECTOR) send nothing. Does nothing while MSI-X is disabled.
  void signal(std::uint16_t vector);

 private:
  static constexpr std::uint32_t kEntryWords = kEntrySize / sizeof(std::uint32_t);
  static constexpr std::size_t pba_words(std::uint16_t vectors) {
    return (vectors + vpci::pci::msix::kPbaVectorsPerQword - 1) /
           vpci::pci::msix::kPbaVectorsPerQword;
  }
  // The DWORD at `field` (a pci::msix::kEntry* offset) of a vector's table entry.
  [[nodiscard]] std::uint32_t entry_field(std::uint16_t vector, std::uint32_t field) const {
    return table_[vector * kEntryWords + field / sizeof(std::uint32_t)];
  }
  std::uint32_t& entry_field(std::uint16_t vector, std::uint32_t field) {
    return table_[vector * kEntryWords + field / sizeof(std::uint32_t)];
  }
  void deliver(std::uint16_t vector);
  void deliver_pending();

  std::uint16_t vectors_;
  vpci::pci::MsixTableOwner owner_;
  vpci::pci::InterruptOutput* output_ = nullptr;
  std::vector<std::uint32_t> table_;  // kEntryWords DWORDs per entry, in host order
  std::vector<std::uint64_t> pba_;
  bool enabled_ = false;
  bool function_masked_ = false;
};

}  // namespace vpci::virtio::pci
