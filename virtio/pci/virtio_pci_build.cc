// VirtioPciFunction, part 2 of 3: the BAR layout and the configuration space with its
// capabilities, computed once at construction (virtio 1.3 §4.1.4).
#include <algorithm>
#include <bit>
#include <cstring>

#include "base/xen_domid.h"
#include "pci/capabilities.h"
#include "pci/capability_registers.h"
#include "pci/registers.h"
#include "virtio/pci/function_detail.h"
#include "virtio/pci/virtio_pci_function.h"
#include "virtio/pci/xen_grant_capability.h"
#include "virtio/spec.h"

namespace vpci::virtio::pci {

using namespace detail;
namespace vp = vpci::pci;

namespace {

// PCI class code by virtio device type; what QEMU's virtio-pci proxies report, so guests
// see familiar classes.
std::uint32_t class_code_for(std::uint32_t virtio_id) {
  switch (virtio_id) {
    case 1: return 0x020000;  // Ethernet controller
    case 2:                   // block: SCSI storage controller (QEMU's choice)
    case 8: return 0x010000;
    case 3: return 0x078000;   // simple communication controller
    case 5: return 0x050000;   // memory controller (balloon)
    default: return 0x00FF00;  // unclassified
  }
}

std::vector<std::uint8_t> virtio_cap_body(std::uint8_t cap_len, std::uint8_t type, std::uint8_t bar,
                                          std::uint8_t id, std::uint64_t offset,
                                          std::uint64_t length) {
  // Everything after cap_vndr/cap_next (§4.1.4 struct virtio_pci_cap).
  std::vector<std::uint8_t> body(cap_len - 2u, 0);
  body[0] = cap_len;
  body[1] = type;
  body[2] = bar;
  body[3] = id;
  store_le_bytes(std::span(body).subspan(cap::kOffset - 2, 4), offset);
  store_le_bytes(std::span(body).subspan(cap::kLength - 2, 4), length);
  if (cap_len >= cap::kCap64Size && type == cfg_type::kSharedMemory) {
    store_le_bytes(std::span(body).subspan(cap::kOffsetHi - 2, 4), offset >> 32);
    store_le_bytes(std::span(body).subspan(cap::kLengthHi - 2, 4), length >> 32);
  }
  return body;
}

// PCI Express Capability, version 2, endpoint (PCIe Base 6.0 §7.5.3): 60 bytes.
std::vector<std::uint8_t> express_cap_body() {
  namespace pcie = vp::pcie;
  std::vector<std::uint8_t> body(pcie::kSizeV2 - 2, 0);
  const auto put = [&](std::uint32_t at, std::uint64_t value, unsigned size) {
    store_le_bytes(std::span(body).subspan(at - 2, size), value);
  };
  put(pcie::kFlags, 2 | (pcie::kTypeEndpoint << pcie::kFlagsTypeShift), 2);  // version 2
  put(pcie::kDeviceCapabilities, 0x00008000, 4);  // Role-Based Error Reporting, MPS 128
  put(pcie::kDeviceControl, 0x2000, 2);           // Max_Read_Request_Size 512
  put(pcie::kLinkCapabilities, 0x00000011, 4);    // 2.5 GT/s, x1
  put(pcie::kLinkStatus, 0x0011, 2);              // 2.5 GT/s, x1
  put(pcie::kLinkCapabilities2, 0x00000002, 4);   // 2.5 GT/s supported
  put(pcie::kLinkControl2, 0x0001, 2);            // target 2.5 GT/s
  return body;
}

}  // namespace

Status VirtioPciFunction::build(std::unique_ptr<Device> device) {
  const TransportKind kind = options_.kind;
  const std::uint32_t virtio_id = device->device_id();
  const bool modern_interface = kind != TransportKind::kLegacy;
  const bool legacy_interface = kind != TransportKind::kModern || options_.admin_legacy;

  if (options_.xen_backend_domid) {
    if (!modern_interface) {
      return make_error(ErrorCode::kInvalidArgument,
                        "Xen grants need VIRTIO_F_ACCESS_PLATFORM, which a legacy device lacks");
    }
    if (*options_.xen_backend_domid >= vpci::xen::kDomidFirstReserved) {
      return make_error(ErrorCode::kInvalidArgument, "Xen domain ID {:#x} is reserved",
                        *options_.xen_backend_domid);
    }
    options_.core.offer_access_platform = true;
    options_.core.require_access_platform = true;
  }
  const std::uint32_t mult = options_.notify_off_multiplier;
  // §4.1.4.4: "an even power of 2, or 0" (even: a multiple of 2, so doorbells stay aligned).
  if (mult != 0 && (mult < 2 || !std::has_single_bit(mult))) {
    return make_error(ErrorCode::kInvalidArgument,
                      "notify_off_multiplier {:#x} is neither 0 nor a power of two >= 2", mult);
  }

  InterruptSink* sink = this;
  core_ = std::make_unique<DeviceCore>(std::move(device), memory_, sink, options_.core);
  if (kind == TransportKind::kLegacy)
    VPCI_TRY(core_->set_driver_interface(DriverInterface::kLegacy));
  // Every selectable queue: the device's and the admin queue (§4.1.4.3) each have a
  // vector and a doorbell.
  const std::uint16_t queues = core_->queue_count();
  queue_vectors_.assign(queues, kNoVector);

  const std::uint16_t vectors = options_.msix_vectors.value_or(
      static_cast<std::uint16_t>(std::min<std::uint32_t>(queues + 1u, kMaxMsixVectors)));
  if (vectors > kMaxMsixVectors) {
    return make_error(ErrorCode::kInvalidArgument, "{} MSI-X vectors exceed the limit of {}",
                      vectors, kMaxMsixVectors);
  }
  if (vectors > 0) msix_ = std::make_unique<MsixController>(vectors, options_.msix_owner);

  // ---- layout ----------------------------------------------------------------------------
  const std::uint32_t device_cfg = core_->config_size();
  std::uint64_t next = 0;
  if (modern_interface) {
    layout_.device_cfg_length = device_cfg;
    layout_.notify_length =
        mult == 0 || queues == 0 ? 4 : static_cast<std::uint64_t>(queues - 1) * mult + 4;
    if (layout_.notify_length > kMaxNotifyRegion) {
      return make_error(ErrorCode::kInvalidArgument,
                        "notify region of {:#x} bytes ({} queues x {:#x}) is too large",
                        layout_.notify_length, queues, mult);
    }
    if (device_cfg > kPage) {
      return make_error(ErrorCode::kUnsupported, "device config of {} bytes exceeds a page",
                        device_cfg);
    }
    next = VirtioPciLayout::kNotifyOffset + round_up(layout_.notify_length, kPage);
  }
  if (legacy_interface && device_cfg > kMaxLegacyDeviceConfig) {
    return make_error(ErrorCode::kUnsupported,
                      "device config of {} bytes does not fit the legacy register block",
                      device_cfg);
  }
  if (kind == TransportKind::kTransitionalMmr) {
    layout_.legacy_window_offset = next;
    layout_.legacy_window_length = legacy::kConfigOffsetMsix + device_cfg;
    next += round_up(layout_.legacy_window_length, kPage);
  }
  if (msix_) {
    layout_.msix_table_offset = next;
    next += round_up(msix_->table_bytes(), kPage);
    layout_.msix_pba_offset = next;
    next += round_up(msix_->pba_bytes(), kPage);
  }
  layout_.has_memory_bar = next > 0;
  layout_.memory_bar_size = next > 0 ? std::bit_ceil(next) : 0;
  if (kind == TransportKind::kTransitional || kind == TransportKind::kLegacy) {
    layout_.legacy_bar_size =
        std::max<std::uint32_t>(32, std::bit_ceil(legacy::kConfigOffsetMsix + device_cfg));
  }
  std::uint64_t shm_next = 0;
  for (const auto& region : options_.shared_memory) {
    if (region.size < kPage || !std::has_single_bit(region.size) || region.size > (1ull << 40)) {
      return make_error(
          ErrorCode::kInvalidArgument,
          "shared memory region {} of {:#x} bytes is not a power of two in 4 KiB-1 TiB", region.id,
          region.size);
    }
    for (std::size_t i = 0; i < layout_.shared_memory_offsets.size(); ++i) {
      if (options_.shared_memory[i].id == region.id) {
        return make_error(ErrorCode::kAlreadyExists, "shared memory id {} used twice", region.id);
      }
    }
    if (!modern_interface) {
      return make_error(ErrorCode::kUnsupported, "shared memory needs the modern interface");
    }
    shm_next = round_up(shm_next, region.size);
    layout_.shared_memory_offsets.push_back(shm_next);
    shm_next += region.size;
    shared_memory_.emplace_back(region.size, 0);
  }
  layout_.shared_memory_bar_size = shm_next > 0 ? std::bit_ceil(shm_next) : 0;

  VPCI_TRY(build_config_space(virtio_id));
  reset_transport_state();
  return {};
}

Status VirtioPciFunction::build_config_space(std::uint32_t virtio_id) {
  const TransportKind kind = options_.kind;
  vp::HeaderIdentity ids;
  ids.vendor_id = kVendorId;
  ids.class_code = class_code_for(virtio_id);
  ids.subsystem_vendor_id = options_.subsystem_vendor_id;
  ids.interrupt_pin = 1;
  switch (kind) {
    case TransportKind::kModern:
      if (virtio_id > 0x3F) {
        return make_error(ErrorCode::kUnsupported, "virtio device id {} has no PCI device ID",
                          virtio_id);
      }
      ids.device_id = static_cast<std::uint16_t>(kModernDeviceIdBase + virtio_id);
      ids.revision = 1;  // §4.1.2.1: SHOULD be >= 1 for non-transitional devices
      ids.subsystem_id = options_.modern_subsystem_id;
      break;
    case TransportKind::kTransitional:
    case TransportKind::kLegacy:
    case TransportKind::kTransitionalMmr: {
      const auto id = kind == TransportKind::kTransitionalMmr ? mmr_device_id(virtio_id)
                                                              : transitional_device_id(virtio_id);
      if (!id) {
        return make_error(ErrorCode::kUnsupported, "virtio device id {} has no {} PCI device ID",
                          virtio_id, transport_kind_name(kind));
      }
      ids.device_id = *id;
      ids.revision = 0;  // §4.1.2.1: transitional devices MUST have revision 0
      ids.subsystem_id = static_cast<std::uint16_t>(virtio_id);  // and subsystem = type
      break;
    }
    case TransportKind::kLegacyOverMmr:  // refused by create(): make_transport_function
    case TransportKind::kLegacyOverAdmin:
    case TransportKind::kSriovPf:
      return make_error(ErrorCode::kInvalidArgument, "{} is not one virtio-pci function",
                        transport_kind_name(kind));
  }
  config_ = vp::ConfigSpace::make_endpoint(vp::kExtendedConfigSize, ids);
  auto& cs = config_;
  if (layout_.legacy_bar_size) {
    VPCI_TRY(
        cs.define_bar(VirtioPciLayout::kLegacyBar, {vp::BarType::kIo, layout_.legacy_bar_size}));
  }
  if (layout_.shared_memory_bar_size) {
    VPCI_TRY(cs.define_bar(VirtioPciLayout::kSharedMemoryBar,
                           {vp::BarType::kMemory64, layout_.shared_memory_bar_size, true}));
  }
  if (layout_.has_memory_bar) {
    VPCI_TRY(cs.define_bar(VirtioPciLayout::kMemoryBar,
                           {vp::BarType::kMemory64, layout_.memory_bar_size, false}));
  }

  // PCI Express endpoint: lets the function have 4 KiB of config space.
  VPCI_ASSIGN_OR_RETURN(layout_.express_cap, vp::add_standard_capability(
                                                 cs, vp::cap_id::kPciExpress, express_cap_body()));
  cs.set_bit_kind(layout_.express_cap + vp::pcie::kDeviceControl, 2, 0x7FFF,
                  vp::BitKind::kReadWrite);
  cs.set_bit_kind(layout_.express_cap + vp::pcie::kLinkControl, 2, 0x00C3, vp::BitKind::kReadWrite);

  if (msix_) {
    // Everything after the ID and next pointer: the registers at their offset - 2.
    std::vector<std::uint8_t> body(vp::msix::kSize - 2, 0);
    store_le<std::uint16_t>(std::span(body).subspan(vp::msix::kControl - 2),
                            static_cast<std::uint16_t>(msix_->vector_count() - 1u));  // N - 1
    store_le<std::uint32_t>(
        std::span(body).subspan(vp::msix::kTable - 2),
        static_cast<std::uint32_t>(layout_.msix_table_offset | VirtioPciLayout::kMemoryBar));
    store_le<std::uint32_t>(
        std::span(body).subspan(vp::msix::kPba - 2),
        static_cast<std::uint32_t>(layout_.msix_pba_offset | VirtioPciLayout::kMemoryBar));
    VPCI_ASSIGN_OR_RETURN(layout_.msix_cap,
                          vp::add_standard_capability(cs, vp::cap_id::kMsiX, body));
    // Message Control: MSI-X Enable (15) and Function Mask (14) are RW (PCIe 6.0 §7.7.2.2).
    cs.set_bit_kind(layout_.msix_cap + vp::msix::kControl, 2,
                    vp::msix::kEnable | vp::msix::kFunctionMask, vp::BitKind::kReadWrite);
    cs.add_write_observer(layout_.msix_cap + vp::msix::kControl, 2,
                          [this](std::uint32_t, unsigned) { sync_msix_control(); });
  }

  if (kind != TransportKind::kLegacy) {
    constexpr auto bar = static_cast<std::uint8_t>(VirtioPciLayout::kMemoryBar);
    const auto add_vendor = [&](std::vector<std::uint8_t> body) -> Result<std::uint16_t> {
      return vp::add_standard_capability(cs, vp::cap_id::kVendorSpecific, body);
    };
    VPCI_TRY(add_vendor(virtio_cap_body(cap::kSize, cfg_type::kCommon, bar, 0,
                                        VirtioPciLayout::kCommonOffset, common::kSize)));
    auto notify = virtio_cap_body(cap::kNotifySize, cfg_type::kNotify, bar, 0,
                                  VirtioPciLayout::kNotifyOffset, layout_.notify_length);
    store_le_bytes(std::span(notify).subspan(cap::kNotifyMultiplier - 2, 4),
                   options_.notify_off_multiplier);
    VPCI_TRY(add_vendor(std::move(notify)));
    VPCI_TRY(add_vendor(
        virtio_cap_body(cap::kSize, cfg_type::kIsr, bar, 0, VirtioPciLayout::kIsrOffset, 1)));
    if (layout_.device_cfg_length > 0) {
      VPCI_TRY(
          add_vendor(virtio_cap_body(cap::kSize, cfg_type::kDevice, bar, 0,
                                     VirtioPciLayout::kDeviceOffset, layout_.device_cfg_length)));
    }
    VPCI_ASSIGN_OR_RETURN(
        layout_.pci_cfg_cap,
        add_vendor(virtio_cap_body(cap::kPciCfgSize, cfg_type::kPciCfg, 0, 0, 0, 0)));
    // §4.1.4.9: the driver programs bar, offset and length; pci_cfg_data is the window.
    cs.set_bit_kind(layout_.pci_cfg_cap + cap::kBar, 1, 0xFF, vp::BitKind::kReadWrite);
    cs.set_bit_kind(layout_.pci_cfg_cap + cap::kOffset, 4, 0xFFFFFFFF, vp::BitKind::kReadWrite);
    cs.set_bit_kind(layout_.pci_cfg_cap + cap::kLength, 4, 0xFFFFFFFF, vp::BitKind::kReadWrite);
    VPCI_TRY(cs.set_hooks(
        layout_.pci_cfg_cap + cap::kPciCfgData, 4,
        vp::RegisterHooks{
            [this](std::uint32_t offset, unsigned width) { return pci_cfg_read(offset, width); },
            [this](std::uint32_t offset, unsigned width, std::uint32_t value) {
              pci_cfg_write(offset, width, value);
            }}));
    for (std::size_t i = 0; i < options_.shared_memory.size(); ++i) {
      VPCI_TRY(
          add_vendor(virtio_cap_body(cap::kCap64Size, cfg_type::kSharedMemory,
                                     static_cast<std::uint8_t>(VirtioPciLayout::kSharedMemoryBar),
                                     options_.shared_memory[i].id, layout_.shared_memory_offsets[i],
                                     options_.shared_memory[i].size)));
    }
    auto vendor_caps = options_.vendor_capabilities;
    if (options_.xen_backend_domid) {
      vendor_caps.push_back(
          {kXenPciVendorId, xen_grant_capability_data(*options_.xen_backend_domid)});
    }
    for (const auto& vendor : vendor_caps) {
      if (vendor.vendor_id == kVendorId) {
        return make_error(ErrorCode::kInvalidArgument,
                          "vendor data capability must not use the virtio vendor ID (§4.1.4.10)");
      }
      // struct virtio_pci_vndr_data: cap_len, cfg_type, le16 vendor_id, data; length % 4 == 0.
      const std::size_t length = round_up(6 + vendor.data.size(), 4);
      if (length > 0xFF) {
        return make_error(ErrorCode::kNoSpace, "vendor data capability of {} bytes", length);
      }
      std::vector<std::uint8_t> body(length - 2, 0);
      body[0] = static_cast<std::uint8_t>(length);
      body[1] = cfg_type::kVendor;
      store_le_bytes(std::span(body).subspan(2, 2), vendor.vendor_id);
      std::copy(vendor.data.begin(), vendor.data.end(), body.begin() + 4);
      VPCI_TRY(add_vendor(std::move(body)));
    }
  }

  if (layout_.legacy_window_offset) {
    // docs/transitional-mmr.md §3: VSEC locating the legacy window.
    std::vector<std::uint8_t> body(mmr_vsec::kSize - 4, 0);
    const auto put = [&](std::uint32_t at, std::uint64_t value, unsigned size) {
      store_le_bytes(std::span(body).subspan(at - 4, size), value);
    };
    put(mmr_vsec::kVsecHeader, mmr_vsec::kVsecId, 2);
    put(mmr_vsec::kVsecHeader + 2, mmr_vsec::kVsecRevision | (mmr_vsec::kSize << 4), 2);
    put(mmr_vsec::kCfgType, cfg_type::kLegacyMmr, 1);
    put(mmr_vsec::kBar, VirtioPciLayout::kMemoryBar, 1);
    put(mmr_vsec::kLength, layout_.legacy_window_length, 4);
    put(mmr_vsec::kOffset, *layout_.legacy_window_offset, 8);
    VPCI_ASSIGN_OR_RETURN(layout_.mmr_vsec, vp::add_extended_capability(
                                                cs, vp::ext_cap_id::kVendorSpecific, 1, body));
  }

  if (options_.sriov) VPCI_TRY(add_sriov_capability(*options_.sriov));

  cs.add_write_observer(vp::reg::kCommand, 2, [this](std::uint32_t, unsigned) { update_intx(); });
  cs.capture_reset_state();
  return {};
}

// ---- pci::Function -----------------------------------------------------------------------------

}  // namespace vpci::virtio::pci
