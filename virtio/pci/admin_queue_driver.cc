#include "virtio/pci/admin_queue_driver.h"

#include <cstring>

#include <fmt/format.h>

#include "base/little_endian.h"
#include "pci/capabilities.h"
#include "pci/capability_registers.h"
#include "pci/virtio_capability.h"
#include "virtio/admin_commands.h"
#include "virtio/pci/registers.h"
#include "virtio/spec.h"

namespace vpci::virtio::pci {
namespace {

namespace vp = vpci::pci;

// The driver's memory: the split ring (§2.7) and one command's buffers.
constexpr std::size_t kDesc = 0;
constexpr std::size_t kAvail = 256;
constexpr std::size_t kUsed = 512;
constexpr std::size_t kHeader = 1024;
constexpr std::size_t kData = 1088;
constexpr std::size_t kStatus = 2176;
constexpr std::size_t kResult = 2240;
constexpr std::size_t kMaxPayload = 1024;  // data and result each
static_assert(kResult + kMaxPayload <= AdminQueueDriver::kMemoryBytes);

constexpr std::uint64_t kFeatures = feature_bit(feature::kVersion1) |
                                    feature_bit(admin::kFeatureAdminVq) |
                                    feature_bit(admin::kFeatureSrIov);
// LIST_USE: the legacy commands Linux's virtio-vfio-pci needs, all of 0x2-0x6.
constexpr std::uint64_t kLegacyCommands =
    admin::opcode_bit(admin::kLegacyCommonCfgWrite) |
    admin::opcode_bit(admin::kLegacyCommonCfgRead) | admin::opcode_bit(admin::kLegacyDevCfgWrite) |
    admin::opcode_bit(admin::kLegacyDevCfgRead) | admin::opcode_bit(admin::kLegacyNotifyInfo);

}  // namespace

Result<std::unique_ptr<AdminQueueDriver>> AdminQueueDriver::create(
    vp::Function& pf, std::shared_ptr<GuestMemory> pf_memory, std::uint16_t vfs) {
  std::unique_ptr<AdminQueueDriver> driver(new AdminQueueDriver(pf, std::move(pf_memory)));
  MemoryRegionSpec spec;
  spec.guest_address = kMemoryBase;
  spec.size = kMemoryBytes;
  spec.host = driver->memory_.data();
  VPCI_TRY(driver->pf_memory_->add_region(std::move(spec)));
  driver->registered_ = true;
  if (auto up = driver->bring_up(vfs); !up) {
    return tl::unexpected(std::move(up).error().with_context("bringing up the SR-IOV PF"));
  }
  return driver;
}

AdminQueueDriver::~AdminQueueDriver() {
  if (registered_) (void)pf_memory_->remove_range(kMemoryBase, kMemoryBytes);
}

Status AdminQueueDriver::common_write(std::uint32_t offset, std::uint64_t value, unsigned width) {
  std::vector<std::uint8_t> bytes(width);
  store_le_bytes(bytes, value);
  return pf_.bar_write(common_bar_, common_offset_ + offset, bytes);
}

Result<std::uint64_t> AdminQueueDriver::common_read(std::uint32_t offset, unsigned width) {
  std::vector<std::uint8_t> bytes(width);
  VPCI_TRY(pf_.bar_read(common_bar_, common_offset_ + offset, bytes));
  return load_le_bytes(bytes);
}

Status AdminQueueDriver::bring_up(std::uint16_t vfs) {
  // The capabilities, as any driver finds them (§4.1.4).
  std::vector<std::uint8_t> config(pf_.config_size());
  VPCI_TRY(pf_.config_read(0, config));
  std::optional<vp::VirtioCapabilityFields> common_cap;
  std::optional<vp::VirtioCapabilityFields> notify_cap;
  std::optional<std::uint16_t> sriov_cap;
  for (const vp::Capability& cap : vp::scan_capabilities(config).capabilities) {
    if (cap.space == vp::CapabilitySpace::kExtended && cap.id == vp::ext_cap_id::kSriov)
      sriov_cap = cap.offset;
    if (cap.space != vp::CapabilitySpace::kStandard || cap.id != vp::cap_id::kVendorSpecific)
      continue;
    auto fields = vp::decode_virtio_capability(config, cap.offset);
    if (!fields) continue;
    if (fields->cfg_type == cfg_type::kCommon && !common_cap) common_cap = fields;
    if (fields->cfg_type == cfg_type::kNotify && !notify_cap) notify_cap = fields;
  }
  if (!common_cap || !notify_cap || !sriov_cap) {
    return make_error(ErrorCode::kNotFound, "the PF lacks the {} capability",
                      !common_cap   ? "virtio common"
                      : !notify_cap ? "virtio notify"
                                    : "SR-IOV");
  }
  common_bar_ = common_cap->bar;
  common_offset_ = common_cap->offset;
  notify_bar_ = notify_cap->bar;

  // §3.1.1: reset, ACKNOWLEDGE | DRIVER, features, FEATURES_OK.
  VPCI_TRY(common_write(common::kDeviceStatus, 0, 1));
  VPCI_TRY(common_write(common::kDeviceStatus, status::kAcknowledge | status::kDriver, 1));
  std::uint64_t offered = 0;
  for (std::uint32_t select = 0; select < 2; ++select) {
    VPCI_TRY(common_write(common::kDeviceFeatureSelect, select, 4));
    VPCI_ASSIGN_OR_RETURN(const std::uint64_t word, common_read(common::kDeviceFeature, 4));
    offered |= word << (32 * select);
  }
  if ((offered & kFeatures) != kFeatures) {
    return make_error(ErrorCode::kUnsupported,
                      "the PF does not offer VERSION_1, ADMIN_VQ and SR_IOV (features {:#x})",
                      offered);
  }
  for (std::uint32_t select = 0; select < 2; ++select) {
    VPCI_TRY(common_write(common::kDriverFeatureSelect, select, 4));
    VPCI_TRY(common_write(common::kDriverFeature, (kFeatures >> (32 * select)) & 0xFFFFFFFF, 4));
  }
  const std::uint8_t features_ok = status::kAcknowledge | status::kDriver | status::kFeaturesOk;
  VPCI_TRY(common_write(common::kDeviceStatus, features_ok, 1));
  VPCI_ASSIGN_OR_RETURN(const std::uint64_t status_now, common_read(common::kDeviceStatus, 1));
  if ((status_now & status::kFeaturesOk) == 0)
    return make_error(ErrorCode::kUnsupported, "the PF refused FEATURES_OK");

  // The admin queue (§2.12, §4.1.4.3): selected and set up like any queue.
  VPCI_ASSIGN_OR_RETURN(const std::uint64_t count, common_read(common::kAdminQueueNum, 2));
  VPCI_ASSIGN_OR_RETURN(const std::uint64_t index, common_read(common::kAdminQueueIndex, 2));
  if (count == 0) return make_error(ErrorCode::kUnsupported, "the PF has no admin queue");
  admin_queue_ = static_cast<std::uint16_t>(index);
  VPCI_TRY(common_write(common::kQueueSelect, admin_queue_, 2));
  VPCI_TRY(common_write(common::kQueueSize, kQueueSize, 2));
  VPCI_TRY(common_write(common::kQueueDesc, kMemoryBase + kDesc, 8));
  VPCI_TRY(common_write(common::kQueueDriver, kMemoryBase + kAvail, 8));
  VPCI_TRY(common_write(common::kQueueDevice, kMemoryBase + kUsed, 8));
  VPCI_ASSIGN_OR_RETURN(const std::uint64_t notify_off, common_read(common::kQueueNotifyOff, 2));
  notify_address_ = notify_cap->offset + notify_off * notify_cap->notify_off_multiplier.value_or(0);
  VPCI_TRY(common_write(common::kQueueEnable, 1, 2));
  VPCI_TRY(common_write(common::kDeviceStatus, features_ok | status::kDriverOk, 1));

  // VFs: NumVFs, then VF Enable (PCIe 6.0 §7.9.3.3-5).
  std::array<std::uint8_t, 2> num{};
  store_le_bytes(num, vfs);
  VPCI_TRY(pf_.config_write(*sriov_cap + vp::sriov::kNumVfs, num));
  std::array<std::uint8_t, 2> control{};
  store_le_bytes(control, vp::sriov::kVfEnable | vp::sriov::kVfMemorySpaceEnable);
  VPCI_TRY(pf_.config_write(*sriov_cap + vp::sriov::kControl, control));

  // What Linux sends at DRIVER_OK: LIST_QUERY, then LIST_USE of the legacy commands.
  VPCI_ASSIGN_OR_RETURN(auto listed, execute(admin::kListQuery, 0, {}, 8));
  const std::uint64_t supported = listed.size() == 8 ? load_le<std::uint64_t>(listed) : 0;
  if ((supported & kLegacyCommands) != kLegacyCommands) {
    return make_error(ErrorCode::kUnsupported,
                      "the PF does not support all legacy commands (LIST_QUERY {:#x})", supported);
  }
  std::array<std::uint8_t, 8> use{};
  store_le_bytes(use, kLegacyCommands);
  VPCI_TRY(execute(admin::kListUse, 0, use, 0));
  for (std::uint64_t member = 1; member <= vfs; ++member) {
    VPCI_ASSIGN_OR_RETURN(auto entries,
                          execute(admin::kLegacyNotifyInfo, member, {},
                                  admin::kNotifyInfoEntries * sizeof(admin::NotifyInfoEntry)));
    std::optional<admin::NotifyInfoEntry> chosen;
    // Linux takes the first member-BAR entry (reference §3).
    for (std::size_t at = 0; at + sizeof(admin::NotifyInfoEntry) <= entries.size();
         at += sizeof(admin::NotifyInfoEntry)) {
      admin::NotifyInfoEntry entry{};
      std::memcpy(&entry, entries.data() + at, sizeof(entry));
      if (entry.flags == admin::kNotifyEnd) break;
      if (entry.flags == admin::kNotifyMemberBar) {
        entry.offset = from_le(entry.offset);
        chosen = entry;
        break;
      }
    }
    notify_entries_.push_back(chosen);
  }
  return {};
}

void AdminQueueDriver::put(std::size_t at, std::span<const std::uint8_t> bytes) {
  if (!bytes.empty())
    std::memcpy(memory_.data() + at, bytes.data(), bytes.size());  // data() may be null
}

void AdminQueueDriver::put_descriptor(std::uint16_t index, std::uint64_t address,
                                      std::uint32_t length, std::uint16_t flags,
                                      std::uint16_t next) {
  const SplitDescriptor desc{to_le(address), to_le(length), to_le(flags), to_le(next)};
  std::memcpy(memory_.data() + kDesc + sizeof(desc) * index, &desc, sizeof(desc));
}

Result<std::vector<std::uint8_t>> AdminQueueDriver::execute(std::uint16_t opcode,
                                                            std::uint64_t member,
                                                            std::span<const std::uint8_t> data,
                                                            std::size_t result_bytes) {
  if (stuck_) {
    return make_error(ErrorCode::kConflict,
                      "the PF's admin queue left a command incomplete; no more commands are sent");
  }
  if (data.size() > kMaxPayload || result_bytes > kMaxPayload) {
    return make_error(ErrorCode::kInvalidArgument, "admin command of {} / {} bytes", data.size(),
                      result_bytes);
  }
  admin::CommandHeader header{};
  header.opcode = to_le(opcode);
  header.group_type = to_le(admin::kGroupSrIov);
  header.group_member_id = to_le(member);
  put(kHeader, std::span(reinterpret_cast<const std::uint8_t*>(&header), sizeof(header)));
  put(kData, data);
  std::memset(memory_.data() + kStatus, 0xff, sizeof(admin::CommandStatus));

  // One chain: header, data, status, result (descriptors 0-3; one command at a time).
  std::uint16_t count = 0;
  const auto link = [&](std::uint64_t at, std::size_t length, bool writable) {
    const auto index = count++;
    put_descriptor(
        index, kMemoryBase + at, static_cast<std::uint32_t>(length),
        static_cast<std::uint16_t>((writable ? desc_flags::kWrite : 0) | desc_flags::kNext),
        static_cast<std::uint16_t>(index + 1));
  };
  link(kHeader, sizeof(header), false);
  if (!data.empty()) link(kData, data.size(), false);
  link(kStatus, sizeof(admin::CommandStatus), true);
  if (result_bytes > 0) link(kResult, result_bytes, true);
  // The last descriptor ends the chain.
  SplitDescriptor last{};
  std::memcpy(&last, memory_.data() + kDesc + sizeof(last) * (count - 1), sizeof(last));
  last.flags = to_le(static_cast<std::uint16_t>(from_le(last.flags) & ~desc_flags::kNext));
  std::memcpy(memory_.data() + kDesc + sizeof(last) * (count - 1), &last, sizeof(last));

  const std::uint16_t head = to_le(std::uint16_t{0});
  std::memcpy(memory_.data() + kAvail + 4 + std::size_t{2} * (avail_idx_ % kQueueSize), &head, 2);
  ++avail_idx_;
  const std::uint16_t idx = to_le(avail_idx_);
  std::memcpy(memory_.data() + kAvail + 2, &idx, 2);
  ++commands_;
  std::array<std::uint8_t, 2> doorbell{};
  store_le_bytes(doorbell, admin_queue_);
  VPCI_TRY(pf_.bar_write(notify_bar_, notify_address_, doorbell));

  std::uint16_t used_idx = 0;
  std::memcpy(&used_idx, memory_.data() + kUsed + 2, 2);
  if (from_le(used_idx) == used_seen_) {
    // The chain still belongs to the device: reusing its descriptors could corrupt a
    // command the PF completes later, so this driver stops.
    stuck_ = true;
    return make_error(ErrorCode::kProtocolViolation, "the PF did not complete admin command {}",
                      admin::opcode_name(opcode));
  }
  UsedElement used{};
  std::memcpy(&used, memory_.data() + kUsed + 4 + std::size_t{8} * (used_seen_ % kQueueSize),
              sizeof(used));
  ++used_seen_;
  const std::uint32_t length = from_le(used.len);
  admin::CommandStatus status{};
  std::memcpy(&status, memory_.data() + kStatus, sizeof(status));
  if (length < sizeof(status) || from_le(status.status) != admin::kStatusOk) {
    return make_error(
        ErrorCode::kProtocolViolation, "admin command {} for member {}: {}",
        admin::opcode_name(opcode), member,
        length < 2 ? std::string("no status written")
                   : admin::status_name(from_le(status.status), from_le(status.status_qualifier)));
  }
  const std::size_t got = std::min<std::size_t>(length - sizeof(status), result_bytes);
  return std::vector<std::uint8_t>(memory_.begin() + kResult,
                                   memory_.begin() + static_cast<std::ptrdiff_t>(kResult + got));
}

Status AdminQueueDriver::legacy_write(std::uint64_t member, bool device_config, std::uint8_t offset,
                                      std::span<const std::uint8_t> data) {
  std::vector<std::uint8_t> payload(sizeof(admin::LegacyWriteHeader) + data.size(), 0);
  payload[0] = offset;
  if (!data.empty())
    std::memcpy(payload.data() + sizeof(admin::LegacyWriteHeader), data.data(), data.size());
  VPCI_TRY(execute(device_config ? admin::kLegacyDevCfgWrite : admin::kLegacyCommonCfgWrite, member,
                   payload, 0));
  return {};
}

Status AdminQueueDriver::legacy_read(std::uint64_t member, bool device_config, std::uint8_t offset,
                                     std::span<std::uint8_t> out) {
  const std::array<std::uint8_t, 1> payload = {offset};
  VPCI_ASSIGN_OR_RETURN(
      auto bytes, execute(device_config ? admin::kLegacyDevCfgRead : admin::kLegacyCommonCfgRead,
                          member, payload, out.size()));
  if (bytes.size() != out.size()) {
    return make_error(ErrorCode::kProtocolViolation, "legacy read of {} bytes returned {}",
                      out.size(), bytes.size());
  }
  if (!out.empty()) std::memcpy(out.data(), bytes.data(), out.size());
  return {};
}

std::optional<admin::NotifyInfoEntry> AdminQueueDriver::notify_entry(std::uint64_t member) const {
  if (member == 0 || member > notify_entries_.size()) return std::nullopt;
  return notify_entries_[member - 1];
}

}  // namespace vpci::virtio::pci
