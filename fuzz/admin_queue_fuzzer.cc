// Fuzzes a whole admin virtqueue (virtio 1.3 §2.12, issue 16): an SR-IOV PF with three
// virtio-rng VFs, built as `vpci serve` builds transport "sriov-pf" (make_transport_function),
// driven through its pci::Function by a driver whose ring lives in fuzz-controlled guest
// RAM. The input is a script of: well-formed command chains (any opcode, group, member and
// data, split over several readable descriptors; any result room over one or two writable
// ones), raw descriptors (any address, length, flags and next: loops, chains into the
// ring itself, addresses outside RAM), SR-IOV writes (NumVFs, VF Enable) and resets.
// Invariants:
//   * guest memory is only touched inside RAM (the access observer);
//   * a well-formed command completes inside its doorbell write (the synchronous
//     completion vpci's own PF driver relies on), with its head's id and a used length
//     within the writable bytes, at least the 8-byte status when there is room for it;
//     the status is OK exactly when the qualifier is, and one of the spec's values;
//   * a VF no executed command named as its member is untouched by that command: its
//     config space and its legacy registers (read side-effect free) are unchanged — a
//     hostile PF driver cannot disturb other VFs;
//   * after DEVICE_NEEDS_RESET the driver resets and brings the PF up again, which works
//     (as after a raw descriptor, which may have had the device write over the ring).
//
// Input: [0] setup — bits 0-1 NumVFs - 1 (1..3, of 3 VFs), bit 2 VF Enable clear — then
// actions, each an opcode byte and its operands (see Harness::run).
#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <memory>
#include <set>
#include <vector>

#include "base/little_endian.h"
#include "devices/virtio_rng.h"
#include "fuzz/fuzz_support.h"
#include "pci/capability_registers.h"
#include "pci/registers.h"
#include "virtio/admin_spec.h"
#include "virtio/guest_memory.h"
#include "virtio/pci/registers.h"
#include "virtio/pci/sriov_pf_function.h"
#include "virtio/pci/transport_function.h"
#include "virtio/ring_layout.h"
#include "virtio/spec.h"

namespace {

using namespace vpci::virtio;
namespace vp = vpci::virtio::pci;  // the transports
namespace bus = vpci::pci;         // PCI registers and pci::Function
namespace common = vpci::virtio::pci::common;
namespace fuzz = vpci::fuzz;
namespace devices = vpci::devices;
using vpci::load_le;
using vpci::store_le;
using vpci::virtio::pci::VirtioPciLayout;

constexpr GuestAddress kRamBase = 0x100000;
constexpr std::size_t kRamSize = std::size_t{64} * 1024;
constexpr std::uint16_t kQueueSize = 16;
constexpr GuestAddress kDesc = 0x0000;  // offsets in RAM: split ring, §2.7
constexpr GuestAddress kAvail = 0x1000;
constexpr GuestAddress kUsed = 0x2000;
constexpr GuestAddress kBuffers = 0x4000;  // a command's buffers, one after another
constexpr std::size_t kMaxData = 96;
constexpr std::size_t kMaxRoom = 96;
constexpr unsigned kVfs = 3;
constexpr std::uint64_t kFeatures =
    (1ull << feature::kVersion1) | (1ull << feature::kSrIov) | (1ull << feature::kAdminVq);

class Harness {
 public:
  explicit Harness(std::uint8_t setup)
      : num_vfs_(static_cast<std::uint16_t>(1 + (setup & 3) % kVfs)), vf_enable_((setup & 4) == 0) {
    fuzz::map_checked_ram(*memory_, ram_, kRamBase);
    std::vector<std::unique_ptr<Device>> vfs;
    for (unsigned i = 0; i < kVfs; ++i) {
      vfs.push_back(std::make_unique<devices::RngDevice>(
          devices::RngDeviceOptions{}, std::make_unique<fuzz::CountingEntropy>()));
    }
    vp::VirtioPciOptions options;
    options.core.admin_observer = [this](const admin::CommandRecord& r) { records_.push_back(r); };
    auto function = vp::make_transport_function(
        vp::TransportKind::kSriovPf,
        std::make_unique<devices::RngDevice>(devices::RngDeviceOptions{},
                                             std::make_unique<fuzz::CountingEntropy>()),
        memory_, std::move(options), std::move(vfs));
    FUZZ_CHECK(function.has_value());
    function_ = std::move(*function);
    owner_ = &static_cast<vp::SriovPfFunction&>(*function_).owner();
    sriov_cap_ = owner_->pf().layout().sriov_cap;
    FUZZ_CHECK(sriov_cap_ != 0);
    bring_up();
  }

  void run(fuzz::Input& in) {
    for (int actions = 0; !in.empty() && actions < 64; ++actions) {
      switch (in.u8() % 5) {
        case 0: command(in); break;
        case 1: raw_descriptor(in); break;
        case 2:
          vf_enable_ = !vf_enable_;
          write_sriov();
          break;
        case 3:
          num_vfs_ = in.u16();  // any value: the PF clamps to TotalVFs
          write_sriov();
          break;
        default:
          function_->reset();
          bring_up();
          break;
      }
      if ((read_common(common::kDeviceStatus, 1) & status::kDeviceNeedsReset) != 0) bring_up();
    }
  }

 private:
  // §3.1.1 through the common configuration, the admin queue as the split ring at kDesc.
  void bring_up() {
    std::fill(ram_.begin(), ram_.end(), 0);
    avail_idx_ = 0;
    const std::array<std::uint8_t, 2> command = {
        bus::command::kMemorySpace | bus::command::kBusMaster, 0};
    (void)function_->config_write(bus::reg::kCommand, command);
    write_sriov();
    write_common(common::kDeviceStatus, 0, 1);
    write_common(common::kDeviceStatus, status::kAcknowledge | status::kDriver, 1);
    for (std::uint32_t select = 0; select < 2; ++select) {
      write_common(common::kDriverFeatureSelect, select, 4);
      write_common(common::kDriverFeature, (kFeatures >> (32 * select)) & 0xFFFFFFFFu, 4);
    }
    const std::uint8_t ok = status::kAcknowledge | status::kDriver | status::kFeaturesOk;
    write_common(common::kDeviceStatus, ok, 1);
    FUZZ_CHECK((read_common(common::kDeviceStatus, 1) & status::kFeaturesOk) != 0);
    admin_queue_ = static_cast<std::uint16_t>(read_common(common::kAdminQueueIndex, 2));
    FUZZ_CHECK(read_common(common::kAdminQueueNum, 2) == 1);
    write_common(common::kQueueSelect, admin_queue_, 2);
    write_common(common::kQueueSize, kQueueSize, 2);
    write_common(common::kQueueDesc, kRamBase + kDesc, 8);
    write_common(common::kQueueDriver, kRamBase + kAvail, 8);
    write_common(common::kQueueDevice, kRamBase + kUsed, 8);
    notify_offset_ = VirtioPciLayout::kNotifyOffset + read_common(common::kQueueNotifyOff, 2) * 4;
    write_common(common::kQueueEnable, 1, 2);
    write_common(common::kDeviceStatus, ok | status::kDriverOk, 1);
    FUZZ_CHECK(read_common(common::kDeviceStatus, 1) == (ok | status::kDriverOk));
  }

  void write_sriov() {
    std::array<std::uint8_t, 2> bytes{};
    store_le<std::uint16_t>(bytes, num_vfs_);
    (void)function_->config_write(sriov_cap_ + bus::sriov::kNumVfs, bytes);
    store_le<std::uint16_t>(bytes, vf_enable_ ? bus::sriov::kVfEnable : 0);
    (void)function_->config_write(sriov_cap_ + bus::sriov::kControl, bytes);
  }

  // A well-formed chain: header and data over 1-3 readable descriptors, status and result
  // room over 1-2 writable ones.
  void command(fuzz::Input& in) {
    static constexpr std::array<std::uint16_t, 7> kOpcodes = {
        admin::kListQuery,           admin::kListUse,           admin::kLegacyCommonCfgWrite,
        admin::kLegacyCommonCfgRead, admin::kLegacyDevCfgWrite, admin::kLegacyDevCfgRead,
        admin::kLegacyNotifyInfo};
    const std::uint8_t selector = in.u8();
    admin::CommandHeader header{};
    header.opcode = (selector & 7) < kOpcodes.size() ? kOpcodes[selector & 7] : in.u16();
    header.group_type = (selector & 8) != 0 ? in.u16() : admin::kGroupSrIov;
    header.group_member_id = (selector & 64) != 0 ? in.u64() : (selector >> 4) & 3;
    std::vector<std::uint8_t> readable(sizeof(header));
    std::memcpy(readable.data(), &header, sizeof(header));
    const auto data = in.bytes(in.u8() % (kMaxData + 1));
    readable.insert(readable.end(), data.begin(), data.end());
    const std::size_t room = sizeof(admin::CommandStatus) + in.u8() % (kMaxRoom + 1);
    const unsigned read_pieces = 1 + in.u8() % 3;
    const unsigned write_pieces = room > 1 ? 1 + in.u8() % 2 : 1;

    // The buffers: the readable bytes, then the writable room, at kBuffers.
    std::copy(readable.begin(), readable.end(), ram_.begin() + kBuffers);
    std::fill_n(ram_.begin() + static_cast<std::ptrdiff_t>(kBuffers + readable.size()), room,
                std::uint8_t{0xA5});
    std::uint16_t index = 0;
    const auto add = [&](GuestAddress at, std::size_t length, bool writable, bool last) {
      put_descriptor(index, kRamBase + at, static_cast<std::uint32_t>(length),
                     static_cast<std::uint16_t>((writable ? desc_flags::kWrite : 0) |
                                                (last ? 0 : desc_flags::kNext)),
                     static_cast<std::uint16_t>(index + 1));
      ++index;
    };
    std::size_t at = 0;
    for (unsigned piece = 0; piece < read_pieces; ++piece) {
      const std::size_t length =
          piece + 1 == read_pieces ? readable.size() - at : (readable.size() - at) / 2;
      add(kBuffers + at, length, false, false);
      at += length;
    }
    const std::size_t first_split = write_pieces == 2 ? room / 2 : room;
    add(kBuffers + at, first_split, true, write_pieces == 1);
    if (write_pieces == 2) add(kBuffers + at + first_split, room - first_split, true, true);

    const auto before = snapshot();
    records_.clear();
    const std::uint16_t used_before = used_idx();
    publish(0);
    if ((read_common(common::kDeviceStatus, 1) & status::kDeviceNeedsReset) != 0) return;

    // Completed inside the doorbell write, as itself, within its room.
    FUZZ_CHECK(used_idx() == static_cast<std::uint16_t>(used_before + 1));
    const auto [id, length] = used_entry(used_before);
    FUZZ_CHECK(id == 0);
    FUZZ_CHECK(length <= room);
    FUZZ_CHECK(length >= sizeof(admin::CommandStatus));
    admin::CommandStatus status{};
    std::memcpy(&status, ram_.data() + kBuffers + readable.size(), sizeof(status));
    FUZZ_CHECK((status.status == admin::kStatusOk) ==
               (status.status_qualifier == admin::kQualifierOk));
    FUZZ_CHECK(status.status == admin::kStatusOk || status.status == admin::kStatusEinval ||
               status.status == admin::kStatusEagain || status.status == admin::kStatusEnomem);
    FUZZ_CHECK(records_.size() == 1);
    check_untouched(before, records_.front().member);
  }

  // One raw descriptor (any address, length, flags, next) as the head of a chain.
  void raw_descriptor(fuzz::Input& in) {
    const std::uint16_t index = in.u16() % kQueueSize;
    const GuestAddress address = in.u64();
    const std::uint32_t length = static_cast<std::uint32_t>(in.u64());
    const std::uint16_t flags = in.u16();
    const std::uint16_t next = in.u16();
    put_descriptor(index, address, length, flags, next);
    const auto before = snapshot();
    records_.clear();
    publish(index);
    // Whatever the chain held, a command can only have reached the member it named.
    for (const auto& record : records_) check_untouched(before, record.member);
    if (records_.empty()) check_untouched(before, 0);
    // The chain may have had the device write into the ring itself (the driver's own
    // doing): a driver that scribbled over its ring starts over.
    bring_up();
  }

  void publish(std::uint16_t head) {
    const std::size_t slot = kAvail + 4 + std::size_t{2} * (avail_idx_ % kQueueSize);
    store_le<std::uint16_t>(std::span(ram_).subspan(slot, 2), head);
    ++avail_idx_;
    store_le<std::uint16_t>(std::span(ram_).subspan(kAvail + 2, 2), avail_idx_);
    std::array<std::uint8_t, 2> doorbell{};
    store_le<std::uint16_t>(doorbell, admin_queue_);
    (void)function_->bar_write(VirtioPciLayout::kMemoryBar, notify_offset_, doorbell);
  }

  void put_descriptor(std::uint16_t index, GuestAddress address, std::uint32_t length,
                      std::uint16_t flags, std::uint16_t next) {
    const auto entry = std::span(ram_).subspan(kDesc + std::size_t{16} * index, 16);
    store_le<std::uint64_t>(entry.subspan(0, 8), address);
    store_le<std::uint32_t>(entry.subspan(8, 4), length);
    store_le<std::uint16_t>(entry.subspan(12, 2), flags);
    store_le<std::uint16_t>(entry.subspan(14, 2), next);
  }

  [[nodiscard]] std::uint16_t used_idx() const {
    return load_le<std::uint16_t>(std::span<const std::uint8_t>(ram_).subspan(kUsed + 2, 2));
  }
  [[nodiscard]] std::pair<std::uint32_t, std::uint32_t> used_entry(std::uint16_t at) const {
    const auto entry = std::span<const std::uint8_t>(ram_).subspan(
        kUsed + 4 + std::size_t{8} * (at % kQueueSize), 8);
    return {load_le<std::uint32_t>(entry.subspan(0, 4)),
            load_le<std::uint32_t>(entry.subspan(4, 4))};
  }

  // What a VF shows that no command may change unless it names the VF: its config space
  // and the legacy registers a read leaves alone (§4.1.4.8: everything but the ISR).
  struct VfState {
    std::vector<std::uint8_t> config;
    std::array<std::uint8_t, 13> legacy{};
  };
  [[nodiscard]] std::vector<VfState> snapshot() {
    std::vector<VfState> states;
    for (std::size_t member = 1; member <= kVfs; ++member) {
      auto& vf = owner_->vf(member);
      VfState state;
      const auto bytes = vf.config_space().bytes();
      state.config.assign(bytes.begin(), bytes.end());
      const auto legacy = std::span(state.legacy);
      (void)vf.admin_legacy_read(admin::LegacyRegion::kCommon, 0, legacy.subspan(0, 4));
      (void)vf.admin_legacy_read(admin::LegacyRegion::kCommon, 4, legacy.subspan(4, 4));
      (void)vf.admin_legacy_read(admin::LegacyRegion::kCommon, 12, legacy.subspan(8, 2));
      (void)vf.admin_legacy_read(admin::LegacyRegion::kCommon, 14, legacy.subspan(10, 2));
      (void)vf.admin_legacy_read(admin::LegacyRegion::kCommon, 18, legacy.subspan(12, 1));
      states.push_back(std::move(state));
    }
    return states;
  }
  void check_untouched(const std::vector<VfState>& before, std::uint64_t named) {
    const auto after = snapshot();
    for (std::size_t member = 1; member <= kVfs; ++member) {
      if (member == named) continue;
      FUZZ_CHECK(after[member - 1].config == before[member - 1].config);
      FUZZ_CHECK(after[member - 1].legacy == before[member - 1].legacy);
    }
  }

  void write_common(std::uint32_t offset, std::uint64_t value, unsigned width) {
    std::array<std::uint8_t, 8> bytes{};
    store_le<std::uint64_t>(bytes, value);
    FUZZ_CHECK(function_
                   ->bar_write(VirtioPciLayout::kMemoryBar, VirtioPciLayout::kCommonOffset + offset,
                               std::span<const std::uint8_t>(bytes).first(width))
                   .has_value());
  }
  std::uint64_t read_common(std::uint32_t offset, unsigned width) {
    std::array<std::uint8_t, 8> bytes{};
    FUZZ_CHECK(function_
                   ->bar_read(VirtioPciLayout::kMemoryBar, VirtioPciLayout::kCommonOffset + offset,
                              std::span(bytes).first(width))
                   .has_value());
    return load_le<std::uint64_t>(bytes);
  }

  std::vector<std::uint8_t> ram_ = std::vector<std::uint8_t>(kRamSize, 0);
  std::shared_ptr<GuestMemory> memory_ = std::make_shared<GuestMemory>();
  std::unique_ptr<bus::Function> function_;
  vp::SriovPf* owner_ = nullptr;
  std::uint16_t sriov_cap_ = 0;
  std::uint16_t num_vfs_;
  bool vf_enable_;
  std::uint16_t admin_queue_ = 0;
  std::uint64_t notify_offset_ = 0;
  std::uint16_t avail_idx_ = 0;
  std::vector<admin::CommandRecord> records_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz::Input in(data, size);
  Harness harness(in.u8());
  harness.run(in);
  return 0;
}
