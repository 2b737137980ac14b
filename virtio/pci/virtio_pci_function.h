// VirtioPciFunction: a virtio device (virtio::DeviceCore + virtio::Device) presented as
// a PCI function (pci::Function), in one of four transport kinds (virtio 1.3 §4.1):
//
//   kind            IDs (vendor 0x1AF4)             rev  subsystem ID   interfaces
//   kModern         0x1040 + virtio id              1    0x1100 (>=0x40) vendor caps
//   kTransitional   0x1000-0x103F (rng 0x1005, ...) 0    virtio id      vendor caps + I/O BAR0
//   kLegacy         0x1000-0x103F                   0    virtio id      I/O BAR0 only
//   kTransitionalMmr 0x10F9-0x10FF (registers.h)    0    virtio id      vendor caps + legacy
//                                                                       window in BAR4 (VSEC)
//
// Every kind is a PCIe endpoint with a 4 KiB configuration space (QEMU's vfio-user
// client wants 4096 bytes) and the PCI Express capability; INTx pin A; MSI-X when
// options.msix_vectors > 0.
//
// BAR layout, computed once at construction (every region page-aligned, so a driver may
// map each one separately, and QEMU's "page per vq" notify layout is one option away):
//
//   BAR0 (kTransitional, kLegacy): I/O, legacy registers (§4.1.4.8)
//     0 host features | 4 guest features | 8 queue PFN | 12 queue size | 14 queue select
//     16 queue notify | 18 status | 19 ISR | [20 config vector | 22 queue vector]
//     device config at 20, or at 24 while MSI-X is enabled; size = pow2(24 + config)
//
//   BAR2 (only with shared-memory regions): 64-bit prefetchable memory, the regions
//   back to back at 4 KiB-aligned offsets (SHARED_MEMORY_CFG caps, cfg_type 8)
//
//   BAR4 (kLegacy: only with MSI-X, table and PBA only): 64-bit memory, size = pow2(end)
//   0x0000 ┌──────────────────────────┐ COMMON_CFG (cfg_type 1), 0x40 bytes
//          │ common configuration     │
//   0x1000 ├──────────────────────────┤ ISR_CFG (cfg_type 3), 1 byte, read clears
//          │ ISR                      │
//   0x2000 ├──────────────────────────┤ DEVICE_CFG (cfg_type 4), device config size
//          │ device configuration     │ (absent when the device has none)
//   0x3000 ├──────────────────────────┤ NOTIFY_CFG (cfg_type 2): doorbell of queue q at
//          │ doorbells                │ q * notify_off_multiplier (0: one shared)
//   N·4K   ├──────────────────────────┤ kTransitionalMmr only: legacy window (VSEC
//          │ legacy registers + config│ cfg_type 10), BAR0's layout, 24 + config bytes
//   N·4K   ├──────────────────────────┤ MSI-X table, 16 bytes per vector
//   N·4K   ├──────────────────────────┤ MSI-X PBA
//          └──────────────────────────┘
//
// Register access rules (what a hostile driver gets):
//   * common config: each access must be exactly one field (8 bytes for the 64-bit
//     queue addresses), or one 32-bit half of a 64-bit field; anything else is refused
//     (error; reads 0xFF). A queue_select beyond
//     num_queues reads queue_size 0 and NO_VECTOR; writes to its queue fields are refused.
//   * doorbells: a 2- or 4-byte write at a doorbell address; the value's low 16 bits
//     name the queue (§4.1.5.2), so one address can serve every queue (multiplier 0, and
//     the MMR/mapper fast path). Reads return 0.
//   * ISR: a read of any width at offset 0 returns the ISR and clears it (§4.1.4.5),
//     de-asserting INTx; writes are ignored.
//   * device config: any width 1/2/4/8 inside the device's config size.
//   * holes between regions read 0 and ignore writes.
//   * PCI_CFG window (§4.1.4.9): bar/offset/length are RW; reading pci_cfg_data performs
//     a BAR read of `length` bytes at `offset`; writing it performs a BAR write of its
//     first `length` bytes (doorbells kick). A window with a BAR that is not implemented,
//     a length other than 1/2/4, an offset not a multiple of length, or a range outside
//     the BAR does nothing: reads give 0, writes are dropped.
//
// Transitional devices serve both interfaces; the first write after a reset (other
// than writing status 0) through one of them decides which one the driver uses
// (DeviceCore::set_driver_interface); writes through the other are then refused until
// the next reset. Writing status 0 through either interface resets the device.
// Legacy device configuration is little-endian: vpci serves x86 and little-endian Arm
// guests, whose native order it is (§4.1.4.8 "guest native endian").
//
// Interrupts (virtio 1.3 §4.1.5.3, §4.1.5.4): with MSI-X enabled, a used-buffer
// notification for queue q sends queue q's vector and a configuration change sends the
// config vector (nothing for NO_VECTOR); otherwise the ISR bit is set, PCI Status bit 3
// follows "ISR != 0", and INTx is asserted unless Command.InterruptDisable is set.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>
#include <vector>

#include "base/error.h"
#include "pci/config_space.h"
#include "pci/function.h"
#include "virtio/device_core.h"
#include "virtio/pci/msix.h"
#include "virtio/pci/registers.h"

namespace vpci::virtio::pci {

// The one transport-kind enum (the serve configuration's `transport` key too).
// kLegacyOverMmr is not a VirtioPciFunction of its own: it is the transitional MMR
// function behind a LegacyIoMapper (legacy_io_mapper.h), built by make_transport_function
// (transport_function.h), as is kSriovPf (an SR-IOV PF with its VFs, sriov_pf_function.h).
enum class TransportKind : std::uint8_t {
  kModern,
  kTransitional,
  kLegacy,
  kTransitionalMmr,
  kLegacyOverMmr,
  kLegacyOverAdmin,  // a VF behind the legacy I/O mapper's admin backend (legacy_admin_path.h)
  kSriovPf           // a PF with an admin queue and VFs, served itself (sriov_pf_function.h)
};
// Names in enum order, as the serve configuration spells them.
inline constexpr std::array<std::string_view, 7> kTransportKindNames = {
    "modern", "transitional", "legacy", "mmr", "legacy-over-mmr", "legacy-over-admin", "sriov-pf"};
std::string_view transport_kind_name(TransportKind kind);

struct SharedMemoryRegionSpec {
  std::uint8_t id = 0;     // shmid, unique per device (§4.1.4.7)
  std::uint64_t size = 0;  // power of two >= 4096
};

struct VendorCapabilitySpec {
  std::uint16_t vendor_id = 0;     // PCI-SIG vendor ID, not 0x1AF4 (§4.1.4.10)
  std::vector<std::uint8_t> data;  // after the vendor ID; padded to make cap_len % 4 == 0
};

struct SriovCapabilitySpec {
  std::uint16_t total_vfs = 1;
  std::uint16_t vf_device_id = 0;  // 0x1040 + virtio type (§4.1.2.1)
  std::uint16_t first_vf_offset = 1;
  std::uint16_t vf_stride = 1;
  std::uint64_t vf_bar4_size = 0;  // each VF's 64-bit memory BAR 4 (BAR4-5 in the capability)
};

// The SR-IOV capability's state as the PF's driver set it.
struct SriovState {
  bool vf_enable = false;
  std::uint16_t num_vfs = 0;
};

struct VirtioPciOptions {
  TransportKind kind = TransportKind::kModern;
  // MSI-X vectors; nullopt: one per queue plus one for configuration changes. 0: no MSI-X.
  std::optional<std::uint16_t> msix_vectors;
  vpci::pci::MsixTableOwner msix_owner = vpci::pci::MsixTableOwner::kFunction;
  // 0 (one shared doorbell) or a power of two >= 2; 4 like QEMU, 0x1000 page per queue.
  std::uint32_t notify_off_multiplier = 4;
  CoreOptions core;
  std::uint16_t subsystem_vendor_id = kVendorId;
  std::uint16_t modern_subsystem_id = 0x1100;  // §4.1.2.1: >= 0x40 for modern devices
  std::vector<SharedMemoryRegionSpec> shared_memory;
  std::vector<VendorCapabilitySpec> vendor_capabilities;
  // Xen: add the grant capability (docs/xen-grant-capability.md) naming this backend
  // domain, and offer and require VIRTIO_F_ACCESS_PLATFORM.
  std::optional<std::uint16_t> xen_backend_domid;
  // An SR-IOV VF whose legacy register block is reached only through its PF's admin
  // commands (virtio 1.3 §2.12.1.2, admin_legacy_read/write): the function keeps its
  // modern identity and BARs, and the driver may use either interface until reset.
  bool admin_legacy = false;
  // An SR-IOV PF: the SR-IOV extended capability (PCIe 6.0 §7.9.3) with these values;
  // NumVFs, VF Enable and System Page Size are writable, VF BAR0 is hardwired to zero
  // (virtio 1.3 §2.12.1.2 LEGACY_NOTIFY_INFO).
  std::optional<SriovCapabilitySpec> sriov;
  // The notification area (BAR4 from 0x3000) is reported mappable (pci::BarInfo), so a
  // vfio-user client may map it and the driver's doorbell writes never leave the guest —
  // nor reach the device: create() refuses this without core.idle_poll, with which the
  // device polls its rings instead (SPDK's vfio-user virtio targets work this way).
  bool notify_mappable = false;
};

// Where everything lives; computed once by the constructor.
struct VirtioPciLayout {
  static constexpr unsigned kLegacyBar = 0;
  static constexpr unsigned kSharedMemoryBar = 2;
  static constexpr unsigned kMemoryBar = 4;
  static constexpr std::uint64_t kCommonOffset = 0x0000;
  static constexpr std::uint64_t kIsrOffset = 0x1000;
  static constexpr std::uint64_t kDeviceOffset = 0x2000;
  static constexpr std::uint64_t kNotifyOffset = 0x3000;

  bool has_memory_bar = false;
  std::uint64_t memory_bar_size = 0;
  std::uint64_t device_cfg_length = 0;
  std::uint64_t notify_length = 0;
  std::optional<std::uint64_t> legacy_window_offset;  // MMR
  std::uint64_t legacy_window_length = 0;             // MMR: 24 + device config
  std::uint64_t msix_table_offset = 0;
  std::uint64_t msix_pba_offset = 0;
  std::uint32_t legacy_bar_size = 0;  // 0: no I/O BAR0
  std::uint64_t shared_memory_bar_size = 0;
  std::vector<std::uint64_t> shared_memory_offsets;
  // Config-space offsets of the capabilities the transport serves itself.
  std::uint16_t pci_cfg_cap = 0;
  std::uint16_t msix_cap = 0;
  std::uint16_t express_cap = 0;
  std::uint16_t mmr_vsec = 0;
  std::uint16_t sriov_cap = 0;
};

class VirtioPciFunction final : public vpci::pci::Function, private InterruptSink {
 public:
  static Result<std::unique_ptr<VirtioPciFunction>> create(std::unique_ptr<Device> device,
                                                           std::shared_ptr<GuestMemory> memory,
                                                           VirtioPciOptions options = {});
  ~VirtioPciFunction() override;

  // ---- pci::Function ----------------------------------------------------------------
  [[nodiscard]] std::uint32_t config_size() const override { return config_.size(); }
  [[nodiscard]] vpci::pci::BarInfo bar_info(unsigned bar) const override;
  [[nodiscard]] std::uint16_t msix_vector_count() const override {
    return msix_ ? msix_->vector_count() : 0;
  }
  Status config_read(std::uint32_t offset, std::span<std::uint8_t> data) override;
  Status config_write(std::uint32_t offset, std::span<const std::uint8_t> data) override;
  Status bar_read(unsigned bar, std::uint64_t offset, std::span<std::uint8_t> data) override;
  Status bar_write(unsigned bar, std::uint64_t offset, std::span<const std::uint8_t> data) override;
  void set_interrupt_output(vpci::pci::InterruptOutput* output) override;
  void set_event_loop(EventLoop* loop) override { core_->set_event_loop(loop); }
  void quiesce() override { core_->drain(); }
  void reset() override;

  // ---- inspection --------------------------------------------------------------------
  [[nodiscard]] TransportKind kind() const { return options_.kind; }
  [[nodiscard]] const VirtioPciLayout& layout() const { return layout_; }
  [[nodiscard]] const vpci::pci::ConfigSpace& config_space() const { return config_; }
  [[nodiscard]] DeviceCore& core() { return *core_; }
  [[nodiscard]] std::uint8_t isr() const { return isr_; }
  [[nodiscard]] bool intx_asserted() const { return intx_level_; }
  [[nodiscard]] const MsixController* msix() const { return msix_.get(); }
  // Which interface the driver committed to since the last reset, if any.
  [[nodiscard]] std::optional<DriverInterface> chosen_interface() const { return chosen_; }
  // Device-side access to a shared memory region's bytes (by shmid).
  [[nodiscard]] std::span<std::uint8_t> shared_memory(std::uint8_t id);
  // VirtioPciOptions::sriov: what the PF's driver wrote (nullopt without the capability).
  [[nodiscard]] std::optional<SriovState> sriov_state() const;

  // ---- legacy registers through a PF's admin commands (VirtioPciOptions::admin_legacy) --
  // One access of `region` (the legacy header without device configuration, which ends
  // at 20 or 24 bytes by this function's MSI-X state, or the device configuration) with
  // the same effect as a legacy driver's access (§2.12.1.2); it must hit a single field
  // inside the region, or it is refused and changes nothing.
  Status admin_legacy_read(admin::LegacyRegion region, std::uint32_t offset,
                           std::span<std::uint8_t> out);
  Status admin_legacy_write(admin::LegacyRegion region, std::uint32_t offset,
                            std::span<const std::uint8_t> data);

 private:
  VirtioPciFunction(std::shared_ptr<GuestMemory> memory, VirtioPciOptions options);
  Status build(std::unique_ptr<Device> device);
  Status build_config_space(std::uint32_t virtio_id);
  Status add_sriov_capability(const SriovCapabilitySpec& spec);

  // InterruptSink
  void raise_queue_interrupt(std::uint16_t queue) override;
  void raise_config_interrupt() override;

  // BAR regions.
  Status memory_read(std::uint64_t offset, std::span<std::uint8_t> data);
  Status memory_write(std::uint64_t offset, std::span<const std::uint8_t> data);
  Result<std::uint64_t> common_read(std::uint32_t offset, unsigned width);
  Status common_write(std::uint32_t offset, unsigned width, std::uint64_t value);
  Status notify_write(std::uint64_t offset, std::span<const std::uint8_t> data);
  // Where an admin-command access of `region` at `offset` lands in the legacy block.
  [[nodiscard]] Result<std::uint64_t> admin_legacy_offset(admin::LegacyRegion region,
                                                          std::uint32_t offset,
                                                          std::size_t width) const;
  Status legacy_read(std::uint64_t offset, std::span<std::uint8_t> data);
  Status legacy_write(std::uint64_t offset, std::span<const std::uint8_t> data);

  // Transitional devices: commit to `interface` (first write after reset) or refuse.
  Status claim(DriverInterface interface);
  Status write_status(std::uint8_t value);
  // Transport state a device reset clears (§4.1.4.3: vectors, ISR, selectors).
  void reset_transport_state();
  [[nodiscard]] std::uint8_t read_isr();
  void update_intx();
  void sync_msix_control();
  [[nodiscard]] bool msix_enabled() const { return msix_ && msix_->enabled(); }
  [[nodiscard]] std::uint16_t& queue_vector(std::uint16_t queue) { return queue_vectors_[queue]; }
  [[nodiscard]] std::uint16_t checked_vector(std::uint16_t vector) const;

  // PCI_CFG window (§4.1.4.9).
  struct PciCfgWindow {
    unsigned bar = 0;
    std::uint32_t offset = 0;
    std::uint32_t length = 0;
    bool valid = false;
  };
  [[nodiscard]] PciCfgWindow pci_cfg_window() const;
  std::uint32_t pci_cfg_read(std::uint32_t offset, unsigned width);
  void pci_cfg_write(std::uint32_t offset, unsigned width, std::uint32_t value);

  std::shared_ptr<GuestMemory> memory_;
  VirtioPciOptions options_;
  std::unique_ptr<DeviceCore> core_;
  vpci::pci::ConfigSpace config_;
  VirtioPciLayout layout_;
  std::unique_ptr<MsixController> msix_;
  vpci::pci::InterruptOutput* output_ = nullptr;

  std::uint32_t device_feature_select_ = 0;
  std::uint32_t driver_feature_select_ = 0;
  std::uint16_t queue_select_ = 0;
  std::uint16_t config_vector_ = kNoVector;
  std::vector<std::uint16_t> queue_vectors_;
  std::uint8_t isr_ = 0;
  bool intx_level_ = false;
  std::optional<DriverInterface> chosen_;
  std::array<std::uint8_t, 4> pci_cfg_data_{};
  std::vector<std::vector<std::uint8_t>> shared_memory_;
};

// The factory the CLI and the vfio-user server use.
Result<std::unique_ptr<VirtioPciFunction>> make_virtio_pci_function(
    TransportKind kind, std::unique_ptr<Device> device, std::shared_ptr<GuestMemory> memory,
    VirtioPciOptions options = {});

}  // namespace vpci::virtio::pci
