#include "virtio/pci/virtio_pci_function.h"

#include <algorithm>
#include <bit>
#include <cstring>

#include "domain/xen_abi.h"
#include "pci/capabilities.h"
#include "pci/registers.h"
#include "virtio/pci/xen_grant_capability.h"
#include "virtio/spec.h"

namespace vpci::virtio::pci {
namespace {

namespace vp = vpci::pci;

constexpr std::uint64_t kPage = 0x1000;
constexpr std::uint64_t kMaxNotifyRegion = 16u << 20;  // keeps the BAR sane for any multiplier
constexpr std::uint32_t kMaxLegacyDeviceConfig = 256 - legacy::kConfigOffsetMsix;

std::uint64_t round_up(std::uint64_t value, std::uint64_t align) {
  return (value + align - 1) / align * align;
}

std::uint64_t load_le(std::span<const std::uint8_t> data) {
  std::uint64_t value = 0;
  for (std::size_t i = data.size(); i-- > 0;) value = (value << 8) | data[i];
  return value;
}

void store_le(std::span<std::uint8_t> data, std::uint64_t value) {
  for (auto& byte : data) {
    byte = static_cast<std::uint8_t>(value);
    value >>= 8;
  }
}

bool valid_width(std::size_t size) {
  return size == 1 || size == 2 || size == 4 || size == 8;
}

Status refuse_read(std::span<std::uint8_t> data, Error error) {
  std::fill(data.begin(), data.end(), 0xFF);
  return tl::unexpected(std::move(error));
}

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

struct CommonField {
  std::uint32_t offset;
  unsigned size;
};
constexpr std::array<CommonField, 20> kCommonFields = {{
    {common::kDeviceFeatureSelect, 4},  {common::kDeviceFeature, 4},
    {common::kDriverFeatureSelect, 4},  {common::kDriverFeature, 4},
    {common::kConfigMsixVector, 2},     {common::kNumQueues, 2},
    {common::kDeviceStatus, 1},         {common::kConfigGeneration, 1},
    {common::kQueueSelect, 2},          {common::kQueueSize, 2},
    {common::kQueueMsixVector, 2},      {common::kQueueEnable, 2},
    {common::kQueueNotifyOff, 2},       {common::kQueueDesc, 8},
    {common::kQueueDriver, 8},          {common::kQueueDevice, 8},
    {common::kQueueNotifConfigData, 2}, {common::kQueueReset, 2},
    {common::kAdminQueueIndex, 2},      {common::kAdminQueueNum, 2},
}};

// The field an access addresses and the byte shift inside it; nullopt when the access is
// not exactly one field or one 32-bit half of a 64-bit field.
struct FieldAccess {
  CommonField field;
  unsigned shift;
};
// Which field (index into kCommonFields) holds each byte of the structure; kNoField for
// the bytes no field covers. Built at compile time so a register access is one look-up
// instead of a scan of the field list.
constexpr std::uint8_t kNoField = 0xFF;
constexpr auto kFieldOfByte = [] {
  std::array<std::uint8_t, common::kSize> table{};
  table.fill(kNoField);
  for (std::size_t i = 0; i < kCommonFields.size(); ++i) {
    for (unsigned b = 0; b < kCommonFields[i].size; ++b) {
      table[kCommonFields[i].offset + b] = static_cast<std::uint8_t>(i);
    }
  }
  return table;
}();

std::optional<FieldAccess> common_field(std::uint32_t offset, unsigned width) {
  if (offset >= common::kSize || kFieldOfByte[offset] == kNoField) return std::nullopt;
  const CommonField& f = kCommonFields[kFieldOfByte[offset]];
  if (offset == f.offset && width == f.size) return FieldAccess{f, 0};
  if (f.size == 8 && width == 4 && (offset - f.offset) % 4 == 0) {
    return FieldAccess{f, (offset - f.offset) * 8};
  }
  return std::nullopt;
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
  store_le(std::span(body).subspan(cap::kOffset - 2, 4), offset);
  store_le(std::span(body).subspan(cap::kLength - 2, 4), length);
  if (cap_len >= cap::kCap64Size && type == cfg_type::kSharedMemory) {
    store_le(std::span(body).subspan(cap::kOffsetHi - 2, 4), offset >> 32);
    store_le(std::span(body).subspan(cap::kLengthHi - 2, 4), length >> 32);
  }
  return body;
}

// PCI Express Capability, version 2, endpoint (PCIe Base 6.0 §7.5.3): 60 bytes.
std::vector<std::uint8_t> express_cap_body() {
  std::vector<std::uint8_t> body(0x3C - 2, 0);
  const auto put = [&](std::uint32_t at, std::uint64_t value, unsigned size) {
    store_le(std::span(body).subspan(at - 2, size), value);
  };
  put(0x02, 0x0002, 2);      // version 2, device/port type 0: PCI Express Endpoint
  put(0x04, 0x00008000, 4);  // Device Capabilities: Role-Based Error Reporting, MPS 128
  put(0x08, 0x2000, 2);      // Device Control: Max_Read_Request_Size 512
  put(0x0C, 0x00000011, 4);  // Link Capabilities: 2.5 GT/s, x1
  put(0x12, 0x0011, 2);      // Link Status: 2.5 GT/s, x1
  put(0x2C, 0x00000002, 4);  // Link Capabilities 2: 2.5 GT/s supported
  put(0x30, 0x0001, 2);      // Link Control 2: target 2.5 GT/s
  return body;
}

}  // namespace

std::string_view transport_kind_name(TransportKind kind) {
  const auto index = static_cast<std::size_t>(kind);
  return index < kTransportKindNames.size() ? kTransportKindNames[index] : "unknown";
}

VirtioPciFunction::VirtioPciFunction(std::shared_ptr<GuestMemory> memory, VirtioPciOptions options)
    : memory_(std::move(memory)), options_(std::move(options)), config_(vp::kExtendedConfigSize) {}

VirtioPciFunction::~VirtioPciFunction() = default;

Result<std::unique_ptr<VirtioPciFunction>> VirtioPciFunction::create(
    std::unique_ptr<Device> device, std::shared_ptr<GuestMemory> memory, VirtioPciOptions options) {
  if (!device || !memory) {
    return make_error(ErrorCode::kInvalidArgument, "virtio-pci function needs a device and memory");
  }
  if (options.kind == TransportKind::kLegacyOverMmr) {
    return make_error(ErrorCode::kInvalidArgument,
                      "legacy-over-mmr is an MMR function behind the legacy I/O mapper: build it "
                      "with make_transport_function");
  }
  std::unique_ptr<VirtioPciFunction> function(
      new VirtioPciFunction(std::move(memory), std::move(options)));
  VPCI_TRY(function->build(std::move(device)));
  return function;
}

Result<std::unique_ptr<VirtioPciFunction>> make_virtio_pci_function(
    TransportKind kind, std::unique_ptr<Device> device, std::shared_ptr<GuestMemory> memory,
    VirtioPciOptions options) {
  options.kind = kind;
  return VirtioPciFunction::create(std::move(device), std::move(memory), std::move(options));
}

Status VirtioPciFunction::build(std::unique_ptr<Device> device) {
  const TransportKind kind = options_.kind;
  const std::uint32_t virtio_id = device->device_id();
  const bool modern_interface = kind != TransportKind::kLegacy;
  const bool legacy_interface = kind != TransportKind::kModern;

  if (options_.xen_backend_domid) {
    if (!modern_interface) {
      return make_error(ErrorCode::kInvalidArgument,
                        "Xen grants need VIRTIO_F_ACCESS_PLATFORM, which a legacy device lacks");
    }
    if (*options_.xen_backend_domid >= domain::xen::kDomidFirstReserved) {
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
  const std::uint16_t queues = core_->num_queues();
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
    case TransportKind::kLegacyOverMmr:  // refused by create(): the mapper builds it
      return make_error(ErrorCode::kInvalidArgument, "legacy-over-mmr is not a virtio-pci function");
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
  cs.set_bit_kind(layout_.express_cap + 0x08u, 2, 0x7FFF, vp::BitKind::kReadWrite);  // DevCtl
  cs.set_bit_kind(layout_.express_cap + 0x10u, 2, 0x00C3, vp::BitKind::kReadWrite);  // LnkCtl

  if (msix_) {
    std::vector<std::uint8_t> body(10, 0);
    store_le(std::span(body).subspan(0, 2), msix_->vector_count() - 1u);  // table size - 1
    store_le(std::span(body).subspan(2, 4),
             layout_.msix_table_offset | VirtioPciLayout::kMemoryBar);
    store_le(std::span(body).subspan(6, 4), layout_.msix_pba_offset | VirtioPciLayout::kMemoryBar);
    VPCI_ASSIGN_OR_RETURN(layout_.msix_cap,
                          vp::add_standard_capability(cs, vp::cap_id::kMsiX, body));
    // Message Control: MSI-X Enable (15) and Function Mask (14) are RW (PCIe 6.0 §7.7.2.2).
    cs.set_bit_kind(layout_.msix_cap + 2u, 2, 0xC000, vp::BitKind::kReadWrite);
    cs.add_write_observer(layout_.msix_cap + 2u, 2,
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
    store_le(std::span(notify).subspan(cap::kNotifyMultiplier - 2, 4),
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
      store_le(std::span(body).subspan(2, 2), vendor.vendor_id);
      std::copy(vendor.data.begin(), vendor.data.end(), body.begin() + 4);
      VPCI_TRY(add_vendor(std::move(body)));
    }
  }

  if (layout_.legacy_window_offset) {
    // docs/transitional-mmr.md §3: VSEC locating the legacy window.
    std::vector<std::uint8_t> body(mmr_vsec::kSize - 4, 0);
    const auto put = [&](std::uint32_t at, std::uint64_t value, unsigned size) {
      store_le(std::span(body).subspan(at - 4, size), value);
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

  cs.add_write_observer(vp::reg::kCommand, 2, [this](std::uint32_t, unsigned) { update_intx(); });
  cs.capture_reset_state();
  return {};
}

// ---- pci::Function -----------------------------------------------------------------------------

vp::BarInfo VirtioPciFunction::bar_info(unsigned bar) const {
  if (bar == VirtioPciLayout::kLegacyBar && layout_.legacy_bar_size) {
    return {vp::BarKind::kIo, layout_.legacy_bar_size, false};
  }
  if (bar == VirtioPciLayout::kSharedMemoryBar && layout_.shared_memory_bar_size) {
    return {vp::BarKind::kMemory64, layout_.shared_memory_bar_size, true};
  }
  if (bar == VirtioPciLayout::kMemoryBar && layout_.has_memory_bar) {
    return {vp::BarKind::kMemory64, layout_.memory_bar_size, false};
  }
  return {};
}

Status VirtioPciFunction::config_read(std::uint32_t offset, std::span<std::uint8_t> data) {
  if (auto done = config_.read_bytes(offset, data); !done) return refuse_read(data, done.error());
  return {};
}

Status VirtioPciFunction::config_write(std::uint32_t offset, std::span<const std::uint8_t> data) {
  return config_.write_bytes(offset, data);
}

Status VirtioPciFunction::bar_read(unsigned bar, std::uint64_t offset,
                                   std::span<std::uint8_t> data) {
  const auto info = bar_info(bar);
  if (info.kind == vp::BarKind::kAbsent || !valid_width(data.size()) || offset > info.size ||
      data.size() > info.size - offset) {
    return refuse_read(
        data, Error{ErrorCode::kOutOfRange,
                    fmt::format("BAR{} read of {} bytes at {:#x}", bar, data.size(), offset)});
  }
  if (bar == VirtioPciLayout::kLegacyBar) return legacy_read(offset, data);
  if (bar == VirtioPciLayout::kMemoryBar) return memory_read(offset, data);
  for (std::size_t i = 0; i < shared_memory_.size(); ++i) {
    const std::uint64_t begin = layout_.shared_memory_offsets[i];
    if (offset >= begin && offset - begin + data.size() <= shared_memory_[i].size()) {
      std::memcpy(data.data(), shared_memory_[i].data() + (offset - begin), data.size());
      return {};
    }
  }
  std::fill(data.begin(), data.end(), 0);  // hole between shared memory regions
  return {};
}

Status VirtioPciFunction::bar_write(unsigned bar, std::uint64_t offset,
                                    std::span<const std::uint8_t> data) {
  const auto info = bar_info(bar);
  if (info.kind == vp::BarKind::kAbsent || !valid_width(data.size()) || offset > info.size ||
      data.size() > info.size - offset) {
    return make_error(ErrorCode::kOutOfRange, "BAR{} write of {} bytes at {:#x}", bar, data.size(),
                      offset);
  }
  if (bar == VirtioPciLayout::kLegacyBar) return legacy_write(offset, data);
  if (bar == VirtioPciLayout::kMemoryBar) return memory_write(offset, data);
  for (std::size_t i = 0; i < shared_memory_.size(); ++i) {
    const std::uint64_t begin = layout_.shared_memory_offsets[i];
    if (offset >= begin && offset - begin + data.size() <= shared_memory_[i].size()) {
      std::memcpy(shared_memory_[i].data() + (offset - begin), data.data(), data.size());
      return {};
    }
  }
  return {};
}

void VirtioPciFunction::set_interrupt_output(vp::InterruptOutput* output) {
  output_ = output;
  if (msix_) msix_->set_output(output);
}

void VirtioPciFunction::reset() {
  core_->reset();
  config_.reset();
  if (msix_) msix_->reset();
  pci_cfg_data_ = {};
  for (auto& region : shared_memory_) std::fill(region.begin(), region.end(), 0);
  reset_transport_state();
  sync_msix_control();
}

std::span<std::uint8_t> VirtioPciFunction::shared_memory(std::uint8_t id) {
  for (std::size_t i = 0; i < options_.shared_memory.size(); ++i) {
    if (options_.shared_memory[i].id == id) return shared_memory_[i];
  }
  return {};
}

// ---- interrupts ------------------------------------------------------------------------------

void VirtioPciFunction::raise_queue_interrupt(std::uint16_t queue) {
  if (msix_enabled()) {
    // §4.1.5.4: MSI-X vector of the queue; NO_VECTOR means no notification.
    if (queue < queue_vectors_.size()) msix_->signal(queue_vectors_[queue]);
    return;
  }
  isr_ |= kIsrQueue;  // §4.1.5.3
  update_intx();
}

void VirtioPciFunction::raise_config_interrupt() {
  if (msix_enabled()) {
    msix_->signal(config_vector_);
    return;
  }
  isr_ |= kIsrConfig;
  update_intx();
}

std::uint8_t VirtioPciFunction::read_isr() {
  // §4.1.4.5: reading the ISR resets it to 0 and de-asserts the INTx interrupt.
  const std::uint8_t value = isr_;
  isr_ = 0;
  update_intx();
  return value;
}

void VirtioPciFunction::update_intx() {
  const bool pending = isr_ != 0 && !msix_enabled();
  const std::uint16_t status = config_.raw16(vp::reg::kStatus);
  config_.set_raw16(vp::reg::kStatus,
                    static_cast<std::uint16_t>(pending ? status | vp::status::kInterruptStatus
                                                       : status & ~vp::status::kInterruptStatus));
  const bool level =
      pending && (config_.raw16(vp::reg::kCommand) & vp::command::kInterruptDisable) == 0;
  if (level == intx_level_) return;
  intx_level_ = level;
  if (output_) output_->set_intx_level(level);
}

void VirtioPciFunction::sync_msix_control() {
  if (msix_) {
    const std::uint16_t control = config_.raw16(layout_.msix_cap + 2u);
    msix_->set_control((control & 0x8000) != 0, (control & 0x4000) != 0);
  }
  update_intx();
}

std::uint16_t VirtioPciFunction::checked_vector(std::uint16_t vector) const {
  // §4.1.4.3: a vector the device cannot map reads back as NO_VECTOR.
  return msix_ && vector < msix_->vector_count() ? vector : kNoVector;
}

// ---- transport state
// -----------------------------------------------------------------------------

void VirtioPciFunction::reset_transport_state() {
  device_feature_select_ = 0;
  driver_feature_select_ = 0;
  queue_select_ = 0;
  config_vector_ = kNoVector;
  std::fill(queue_vectors_.begin(), queue_vectors_.end(), kNoVector);
  isr_ = 0;
  chosen_.reset();
  if (options_.kind == TransportKind::kTransitional ||
      options_.kind == TransportKind::kTransitionalMmr) {
    (void)core_->set_driver_interface(DriverInterface::kModern);  // status is 0 here
  }
  update_intx();
}

Status VirtioPciFunction::claim(DriverInterface interface) {
  if (options_.kind != TransportKind::kTransitional &&
      options_.kind != TransportKind::kTransitionalMmr) {
    return {};
  }
  if (!chosen_) {
    VPCI_TRY(core_->set_driver_interface(interface));
    chosen_ = interface;
    return {};
  }
  if (*chosen_ != interface) {
    return make_error(ErrorCode::kConflict,
                      "the driver uses the {} interface; a {} write is refused until reset",
                      *chosen_ == DriverInterface::kLegacy ? "legacy" : "modern",
                      interface == DriverInterface::kLegacy ? "legacy" : "modern");
  }
  return {};
}

Status VirtioPciFunction::write_status(std::uint8_t value) {
  if (value == 0) {
    core_->reset();
    reset_transport_state();
    return {};
  }
  return core_->write_status(value);
}

// ---- memory BAR --------------------------------------------------------------------------------

Status VirtioPciFunction::memory_read(std::uint64_t offset, std::span<std::uint8_t> data) {
  const std::uint64_t size = data.size();
  const auto inside = [&](std::uint64_t begin, std::uint64_t length) {
    return offset >= begin && offset < begin + length;
  };
  const auto fits = [&](std::uint64_t begin, std::uint64_t length) {
    return offset + size <= begin + length;
  };
  const bool modern = options_.kind != TransportKind::kLegacy;
  if (modern && inside(VirtioPciLayout::kCommonOffset, common::kSize)) {
    auto value = common_read(static_cast<std::uint32_t>(offset - VirtioPciLayout::kCommonOffset),
                             static_cast<unsigned>(size));
    if (!value) return refuse_read(data, value.error());
    store_le(data, *value);
    return {};
  }
  if (modern && offset == VirtioPciLayout::kIsrOffset) {
    std::fill(data.begin(), data.end(), 0);
    data[0] = read_isr();
    return {};
  }
  if (modern && inside(VirtioPciLayout::kDeviceOffset, layout_.device_cfg_length)) {
    if (!fits(VirtioPciLayout::kDeviceOffset, layout_.device_cfg_length)) {
      return refuse_read(data, Error{ErrorCode::kOutOfRange, "device config read past its end"});
    }
    auto status = core_->read_config(
        static_cast<std::uint32_t>(offset - VirtioPciLayout::kDeviceOffset), data);
    if (!status) return refuse_read(data, status.error());
    return {};
  }
  if (layout_.legacy_window_offset &&
      inside(*layout_.legacy_window_offset, layout_.legacy_window_length)) {
    if (!fits(*layout_.legacy_window_offset, layout_.legacy_window_length)) {
      return refuse_read(data, Error{ErrorCode::kOutOfRange, "legacy window read past its end"});
    }
    return legacy_read(offset - *layout_.legacy_window_offset, data);
  }
  if (msix_ && inside(layout_.msix_table_offset, msix_->table_bytes())) {
    return msix_->table_read(offset - layout_.msix_table_offset, data);
  }
  if (msix_ && inside(layout_.msix_pba_offset, msix_->pba_bytes())) {
    return msix_->pba_read(offset - layout_.msix_pba_offset, data);
  }
  // Doorbells read 0; so do holes between the regions.
  std::fill(data.begin(), data.end(), 0);
  return {};
}

Status VirtioPciFunction::memory_write(std::uint64_t offset, std::span<const std::uint8_t> data) {
  const std::uint64_t size = data.size();
  const auto inside = [&](std::uint64_t begin, std::uint64_t length) {
    return offset >= begin && offset < begin + length;
  };
  const bool modern = options_.kind != TransportKind::kLegacy;
  if (modern && inside(VirtioPciLayout::kCommonOffset, common::kSize)) {
    return common_write(static_cast<std::uint32_t>(offset - VirtioPciLayout::kCommonOffset),
                        static_cast<unsigned>(size), load_le(data));
  }
  if (modern && inside(VirtioPciLayout::kDeviceOffset, layout_.device_cfg_length)) {
    if (offset + size > VirtioPciLayout::kDeviceOffset + layout_.device_cfg_length) {
      return make_error(ErrorCode::kOutOfRange, "device config write past its end");
    }
    VPCI_TRY(claim(DriverInterface::kModern));
    return core_->write_config(static_cast<std::uint32_t>(offset - VirtioPciLayout::kDeviceOffset),
                               data);
  }
  if (modern && inside(VirtioPciLayout::kNotifyOffset, layout_.notify_length)) {
    return notify_write(offset - VirtioPciLayout::kNotifyOffset, data);
  }
  if (layout_.legacy_window_offset &&
      inside(*layout_.legacy_window_offset, layout_.legacy_window_length)) {
    if (offset + size > *layout_.legacy_window_offset + layout_.legacy_window_length) {
      return make_error(ErrorCode::kOutOfRange, "legacy window write past its end");
    }
    return legacy_write(offset - *layout_.legacy_window_offset, data);
  }
  if (msix_ && inside(layout_.msix_table_offset, msix_->table_bytes())) {
    return msix_->table_write(offset - layout_.msix_table_offset, data);
  }
  if (msix_ && inside(layout_.msix_pba_offset, msix_->pba_bytes())) {
    return make_error(ErrorCode::kInvalidArgument, "the MSI-X PBA is read-only");
  }
  return {};  // ISR and holes ignore writes
}

Status VirtioPciFunction::notify_write(std::uint64_t offset, std::span<const std::uint8_t> data) {
  const std::uint32_t mult = options_.notify_off_multiplier;
  const std::uint64_t queues = core_->num_queues();
  const bool doorbell = mult == 0 ? offset == 0 : offset % mult == 0 && offset / mult < queues;
  if (!doorbell || (data.size() != 2 && data.size() != 4)) {
    return make_error(ErrorCode::kInvalidArgument,
                      "{}-byte write at notify offset {:#x} is not a doorbell", data.size(),
                      offset);
  }
  // §4.1.5.2: the driver writes the queue index (NOTIFICATION_DATA is never offered).
  return core_->notify(static_cast<std::uint16_t>(load_le(data.first(2))));
}

// ---- common configuration ----------------------------------------------------------------------

Result<std::uint64_t> VirtioPciFunction::common_read(std::uint32_t offset, unsigned width) {
  const auto access = common_field(offset, width);
  if (!access) {
    return make_error(ErrorCode::kInvalidArgument,
                      "{}-byte common config read at {:#x} does not match a field", width, offset);
  }
  const std::uint16_t q = queue_select_;
  // Only the queue fields need the selected queue's registers; nullopt for an
  // out-of-range queue_select (checked here, so no error is built on this path).
  std::optional<QueueRegisters> regs;
  if (access->field.offset >= common::kQueueSize && access->field.offset <= common::kQueueDevice &&
      q < core_->num_queues()) {
    regs = *core_->queue_registers(q);
  }
  std::uint64_t value = 0;
  switch (access->field.offset) {
    case common::kDeviceFeatureSelect: value = device_feature_select_; break;
    case common::kDeviceFeature: value = core_->device_features_word(device_feature_select_); break;
    case common::kDriverFeatureSelect: value = driver_feature_select_; break;
    case common::kDriverFeature: value = core_->driver_features_word(driver_feature_select_); break;
    case common::kConfigMsixVector: value = config_vector_; break;
    case common::kNumQueues: value = core_->num_queues(); break;
    case common::kDeviceStatus: value = core_->status(); break;
    case common::kConfigGeneration: value = core_->config_generation(); break;
    case common::kQueueSelect: value = q; break;
    case common::kQueueSize: value = regs ? regs->size : 0; break;
    case common::kQueueMsixVector: value = regs ? queue_vectors_[q] : kNoVector; break;
    case common::kQueueEnable: value = regs && regs->enabled ? 1 : 0; break;
    case common::kQueueNotifyOff: value = regs ? q : 0; break;
    case common::kQueueDesc: value = regs ? regs->desc : 0; break;
    case common::kQueueDriver: value = regs ? regs->driver : 0; break;
    case common::kQueueDevice: value = regs ? regs->device : 0; break;
    // NOTIF_CONFIG_DATA and ADMIN_VQ are never offered; queue_reset completes at once.
    default: value = 0; break;
  }
  return (value >> access->shift) & (width == 8 ? ~0ull : ((1ull << (width * 8)) - 1));
}

Status VirtioPciFunction::common_write(std::uint32_t offset, unsigned width, std::uint64_t value) {
  const auto access = common_field(offset, width);
  if (!access) {
    return make_error(ErrorCode::kInvalidArgument,
                      "{}-byte common config write at {:#x} does not match a field", width, offset);
  }
  const std::uint32_t field = access->field.offset;
  if (field == common::kDeviceStatus && value == 0) return write_status(0);
  VPCI_TRY(claim(DriverInterface::kModern));
  const std::uint16_t q = queue_select_;
  const auto merge = [&](GuestAddress current) -> GuestAddress {
    if (width == 8) return value;
    const std::uint64_t mask = 0xFFFFFFFFull << access->shift;
    return (current & ~mask) | ((value << access->shift) & mask);
  };
  switch (field) {
    case common::kDeviceFeatureSelect:
      device_feature_select_ = static_cast<std::uint32_t>(value);
      return {};
    case common::kDriverFeatureSelect:
      driver_feature_select_ = static_cast<std::uint32_t>(value);
      return {};
    case common::kDriverFeature:
      return core_->write_driver_features_word(driver_feature_select_,
                                               static_cast<std::uint32_t>(value));
    case common::kConfigMsixVector:
      config_vector_ = checked_vector(static_cast<std::uint16_t>(value));
      return {};
    case common::kDeviceStatus: return write_status(static_cast<std::uint8_t>(value));
    case common::kQueueSelect: queue_select_ = static_cast<std::uint16_t>(value); return {};
    case common::kQueueSize: return core_->set_queue_size(q, static_cast<std::uint16_t>(value));
    case common::kQueueMsixVector:
      if (q >= queue_vectors_.size()) {
        return make_error(ErrorCode::kOutOfRange, "queue_select {} is not a queue", q);
      }
      queue_vectors_[q] = checked_vector(static_cast<std::uint16_t>(value));
      return {};
    case common::kQueueEnable:
      if (value != 1) {
        // §4.1.4.3.2: "The driver MUST NOT write a 0 to queue_enable."
        return make_error(ErrorCode::kProtocolViolation, "queue_enable written with {}", value);
      }
      return core_->enable_queue(q);
    case common::kQueueDesc: {
      VPCI_ASSIGN_OR_RETURN(auto regs, core_->queue_registers(q));
      return core_->set_queue_desc(q, merge(regs.desc));
    }
    case common::kQueueDriver: {
      VPCI_ASSIGN_OR_RETURN(auto regs, core_->queue_registers(q));
      return core_->set_queue_driver(q, merge(regs.driver));
    }
    case common::kQueueDevice: {
      VPCI_ASSIGN_OR_RETURN(auto regs, core_->queue_registers(q));
      return core_->set_queue_device(q, merge(regs.device));
    }
    case common::kQueueReset:
      if (value != 1)
        return make_error(ErrorCode::kProtocolViolation, "queue_reset written with {}", value);
      return core_->reset_queue(q);
    default:
      return make_error(ErrorCode::kInvalidArgument, "common config field at {:#x} is read-only",
                        field);
  }
}

// ---- legacy registers (I/O BAR0, MMR window) ---------------------------------------------------

Status VirtioPciFunction::legacy_read(std::uint64_t offset, std::span<std::uint8_t> data) {
  const std::uint32_t header =
      msix_enabled() ? legacy::kConfigOffsetMsix : legacy::kConfigOffsetNoMsix;
  const std::size_t size = data.size();
  if (offset >= header) {
    if (size == 8)
      return refuse_read(data, Error{ErrorCode::kInvalidArgument, "8-byte legacy access"});
    auto status = core_->read_config(static_cast<std::uint32_t>(offset - header), data);
    if (!status) return refuse_read(data, status.error());
    return {};
  }
  const std::uint16_t q = queue_select_;
  const auto regs = core_->queue_registers(q);
  std::uint64_t value = 0;
  const auto reg = [&](std::uint32_t at, std::size_t width) {
    return offset == at && size == width;
  };
  if (reg(legacy::kHostFeatures, 4)) {
    value = core_->device_features_word(0);
  } else if (reg(legacy::kGuestFeatures, 4)) {
    value = core_->driver_features_word(0);
  } else if (reg(legacy::kQueuePfn, 4)) {
    value = core_->legacy_queue_pfn(q).value_or(0);
  } else if (reg(legacy::kQueueNum, 2)) {
    value = regs ? regs->max_size : 0;  // §4.1.4.8: no size negotiation
  } else if (reg(legacy::kQueueSelect, 2)) {
    value = q;
  } else if (reg(legacy::kQueueNotify, 2)) {
    value = 0;
  } else if (reg(legacy::kStatus, 1)) {
    value = core_->status();
  } else if (reg(legacy::kIsr, 1)) {
    value = read_isr();
  } else if (header == legacy::kConfigOffsetMsix && reg(legacy::kConfigVector, 2)) {
    value = config_vector_;
  } else if (header == legacy::kConfigOffsetMsix && reg(legacy::kQueueVector, 2)) {
    value = regs ? queue_vectors_[q] : kNoVector;
  } else {
    return refuse_read(
        data, Error{ErrorCode::kInvalidArgument,
                    fmt::format("{}-byte legacy read at {} matches no register", size, offset)});
  }
  store_le(data, value);
  return {};
}

Status VirtioPciFunction::legacy_write(std::uint64_t offset, std::span<const std::uint8_t> data) {
  const std::uint32_t header =
      msix_enabled() ? legacy::kConfigOffsetMsix : legacy::kConfigOffsetNoMsix;
  const std::size_t size = data.size();
  if (offset >= header) {
    if (size == 8) return make_error(ErrorCode::kInvalidArgument, "8-byte legacy access");
    VPCI_TRY(claim(DriverInterface::kLegacy));
    return core_->write_config(static_cast<std::uint32_t>(offset - header), data);
  }
  const std::uint64_t value = load_le(data);
  const auto reg = [&](std::uint32_t at, std::size_t width) {
    return offset == at && size == width;
  };
  if (reg(legacy::kQueueNotify, 2)) {
    return core_->notify(static_cast<std::uint16_t>(value));
  }
  if (reg(legacy::kStatus, 1) && value == 0) return write_status(0);
  const bool writable = reg(legacy::kGuestFeatures, 4) || reg(legacy::kQueuePfn, 4) ||
                        reg(legacy::kQueueSelect, 2) || reg(legacy::kStatus, 1) ||
                        (header == legacy::kConfigOffsetMsix &&
                         (reg(legacy::kConfigVector, 2) || reg(legacy::kQueueVector, 2)));
  if (!writable) {
    return make_error(ErrorCode::kInvalidArgument,
                      "{}-byte legacy write at {} matches no writable register", size, offset);
  }
  VPCI_TRY(claim(DriverInterface::kLegacy));
  const std::uint16_t q = queue_select_;
  switch (offset) {
    case legacy::kGuestFeatures:
      return core_->write_driver_features_word(0, static_cast<std::uint32_t>(value));
    case legacy::kQueuePfn:
      return core_->set_legacy_queue_pfn(q, static_cast<std::uint32_t>(value));
    case legacy::kQueueSelect: queue_select_ = static_cast<std::uint16_t>(value); return {};
    case legacy::kStatus: return write_status(static_cast<std::uint8_t>(value));
    case legacy::kConfigVector:
      config_vector_ = checked_vector(static_cast<std::uint16_t>(value));
      return {};
    case legacy::kQueueVector:
      if (q >= queue_vectors_.size()) {
        return make_error(ErrorCode::kOutOfRange, "queue_select {} is not a queue", q);
      }
      queue_vectors_[q] = checked_vector(static_cast<std::uint16_t>(value));
      return {};
    default: return {};
  }
}

// ---- PCI_CFG window (§4.1.4.9)
// -------------------------------------------------------------------

std::uint32_t VirtioPciFunction::pci_cfg_read(std::uint32_t offset, unsigned width) {
  const std::uint32_t cap = layout_.pci_cfg_cap;
  const unsigned bar = config_.raw8(cap + cap::kBar);
  const std::uint32_t window = config_.raw32(cap + cap::kOffset);
  const std::uint32_t length = config_.raw32(cap + cap::kLength);
  const auto info = bar < vp::kBarCount ? bar_info(bar) : vp::BarInfo{};
  const bool valid = info.kind != vp::BarKind::kAbsent &&
                     (length == 1 || length == 2 || length == 4) && window % length == 0 &&
                     window + std::uint64_t{length} <= info.size;
  if (valid) {
    // "execute a read access of length cap.length at offset cap.offset at BAR cap.bar and
    // store the first cap.length bytes in pci_cfg_data"
    (void)bar_read(bar, window, std::span(pci_cfg_data_).first(length));
  } else {
    pci_cfg_data_ = {};
  }
  const std::uint32_t at = offset - (cap + cap::kPciCfgData);
  std::uint32_t value = 0;
  for (unsigned i = 0; i < width && at + i < 4; ++i)
    value |= std::uint32_t{pci_cfg_data_[at + i]} << (8 * i);
  return value;
}

void VirtioPciFunction::pci_cfg_write(std::uint32_t offset, unsigned width, std::uint32_t value) {
  const std::uint32_t cap = layout_.pci_cfg_cap;
  const std::uint32_t at = offset - (cap + cap::kPciCfgData);
  for (unsigned i = 0; i < width && at + i < 4; ++i)
    pci_cfg_data_[at + i] = static_cast<std::uint8_t>(value >> (8 * i));
  const unsigned bar = config_.raw8(cap + cap::kBar);
  const std::uint32_t window = config_.raw32(cap + cap::kOffset);
  const std::uint32_t length = config_.raw32(cap + cap::kLength);
  const auto info = bar < vp::kBarCount ? bar_info(bar) : vp::BarInfo{};
  const bool valid = info.kind != vp::BarKind::kAbsent &&
                     (length == 1 || length == 2 || length == 4) && window % length == 0 &&
                     window + std::uint64_t{length} <= info.size;
  // "execute a write access at offset cap.offset at BAR cap.bar using the first cap.length
  // bytes from pci_cfg_data"; an invalid window drops the write.
  if (valid)
    (void)bar_write(bar, window, std::span<const std::uint8_t>(pci_cfg_data_).first(length));
}

}  // namespace vpci::virtio::pci
