// The SR-IOV extended capability of a virtio PF (VirtioPciOptions::sriov; PCIe Base 6.0
// §7.9.3, virtio 1.3 §2.12.1.2 and reference virtio-admin.md §3-4).
#include <algorithm>

#include "base/little_endian.h"
#include "pci/capabilities.h"
#include "pci/capability_registers.h"
#include "virtio/pci/virtio_pci_function.h"

namespace vpci::virtio::pci {

namespace vp = vpci::pci;
namespace sriov = vpci::pci::sriov;

Status VirtioPciFunction::add_sriov_capability(const SriovCapabilitySpec& spec) {
  if (spec.total_vfs == 0) {
    return make_error(ErrorCode::kInvalidArgument, "an SR-IOV PF needs at least one VF");
  }
  if (spec.vf_bar4_size != 0 &&
      (!std::has_single_bit(spec.vf_bar4_size) || spec.vf_bar4_size < 4096)) {
    return make_error(ErrorCode::kInvalidArgument,
                      "VF BAR4 of {:#x} bytes is not a power of two >= 4 KiB", spec.vf_bar4_size);
  }
  // The body after the 4-byte header, written at its register offsets minus 4.
  std::vector<std::uint8_t> body(sriov::kSize - 4, 0);
  const auto put = [&](std::uint32_t at, std::uint64_t value, unsigned size) {
    store_le_bytes(std::span(body).subspan(at - 4, size), value);
  };
  put(sriov::kInitialVfs, spec.total_vfs, 2);
  put(sriov::kTotalVfs, spec.total_vfs, 2);
  put(sriov::kFirstVfOffset, spec.first_vf_offset, 2);
  put(sriov::kVfStride, spec.vf_stride, 2);
  put(sriov::kVfDeviceId, spec.vf_device_id, 2);
  put(sriov::kSupportedPageSizes, sriov::kPageSize4K, 4);
  put(sriov::kSystemPageSize, sriov::kPageSize4K, 4);
  // VF BAR0 stays zero: the legacy notify address lives in a VF memory BAR (§2.12.1.2:
  // a device offering LEGACY_NOTIFY_INFO MUST hardwire VF BAR0 to zero). VF BAR4-5: a
  // 64-bit memory BAR; its size reads back from the low bits like a function's BAR.
  if (spec.vf_bar4_size != 0) put(sriov::kVfBar0 + 4 * 4, vp::bar::kMemoryType64, 4);
  VPCI_ASSIGN_OR_RETURN(layout_.sriov_cap,
                        vp::add_extended_capability(config_, vp::ext_cap_id::kSriov, 1, body));
  const std::uint32_t at = layout_.sriov_cap;
  config_.set_bit_kind(at + sriov::kControl, 2,
                       sriov::kVfEnable | sriov::kVfMemorySpaceEnable | sriov::kAriCapableHierarchy,
                       vp::BitKind::kReadWrite);
  config_.set_bit_kind(at + sriov::kNumVfs, 2, 0xFFFF, vp::BitKind::kReadWrite);
  config_.set_bit_kind(at + sriov::kSystemPageSize, 4, 0xFFFFFFFF, vp::BitKind::kReadWrite);
  if (spec.vf_bar4_size != 0) {
    // BAR sizing: the address bits above the size are writable (PCIe 6.0 §7.9.3.12).
    const std::uint64_t mask = ~(spec.vf_bar4_size - 1);
    config_.set_bit_kind(at + sriov::kVfBar0 + 16, 4, static_cast<std::uint32_t>(mask) & ~0xFu,
                         vp::BitKind::kReadWrite);
    config_.set_bit_kind(at + sriov::kVfBar0 + 20, 4, static_cast<std::uint32_t>(mask >> 32),
                         vp::BitKind::kReadWrite);
  }
  return {};
}

std::optional<SriovState> VirtioPciFunction::sriov_state() const {
  if (layout_.sriov_cap == 0) return std::nullopt;
  const auto control = config_.read(layout_.sriov_cap + sriov::kControl, 2);
  const auto num_vfs = config_.read(layout_.sriov_cap + sriov::kNumVfs, 2);
  const auto total = config_.read(layout_.sriov_cap + sriov::kTotalVfs, 2);
  SriovState state;
  state.vf_enable = control && (*control & sriov::kVfEnable) != 0;
  // NumVFs beyond TotalVFs is the PF driver's mistake: only TotalVFs exist.
  state.num_vfs =
      static_cast<std::uint16_t>(std::min<std::uint32_t>(num_vfs.value_or(0), total.value_or(0)));
  return state;
}

}  // namespace vpci::virtio::pci
