// Legacy access through a PF's admin queue (virtio/pci/sriov_pf.h, admin_queue_driver.h,
// legacy_admin_path.h): the PF's SR-IOV capability and admin queue as vpci's own PF driver
// finds them, the VF rules (single field, in range, MSI-X split), a hostile driver that
// never disturbs another VF, and the guest-visible identity of the mapper's admin backend.
#include <gtest/gtest.h>

#include "base/little_endian.h"
#include "pci/capabilities.h"
#include "pci/capability_registers.h"
#include "tests/virtio_pci/test_devices.h"
#include "virtio/pci/admin_queue_driver.h"
#include "virtio/pci/legacy_admin_path.h"
#include "virtio/pci/legacy_io_mapper.h"
#include "virtio/pci/registers.h"
#include "virtio/pci/sriov_pf.h"
#include "virtio/pci/sriov_pf_function.h"
#include "virtio/pci/transport_function.h"
#include "virtio/ring_layout.h"

namespace vpci::virtio::testing {
namespace {

namespace l = pci::legacy;
using pci::AdminQueueDriver;
using pci::SriovPf;

// A PF with `vfs` virtio-rng VFs, each VF in guest memory of its own.
struct SriovRig {
  std::vector<std::unique_ptr<Guest>> vf_guests;
  std::unique_ptr<SriovPf> pf;
  std::unique_ptr<AdminQueueDriver> driver;

  explicit SriovRig(std::size_t vfs) {
    pci::SriovPfParts parts;
    parts.pf_device = std::make_unique<pci::ManagementPfDevice>(4);  // rng
    parts.pf_memory = std::make_shared<GuestMemory>();
    for (std::size_t i = 0; i < vfs; ++i) {
      vf_guests.push_back(std::make_unique<Guest>());
      parts.vf_devices.push_back(make_device(DeviceType::kRng));
      parts.vf_memories.push_back(vf_guests.back()->memory);
    }
    auto created = SriovPf::create(std::move(parts));
    if (!created) {
      ADD_FAILURE() << created.error().message;
      return;
    }
    pf = std::move(*created);
    auto up = AdminQueueDriver::create(pf->pf(), pf->pf_memory(), static_cast<std::uint16_t>(vfs));
    if (!up) {
      ADD_FAILURE() << up.error().message;
      return;
    }
    driver = std::move(*up);
  }
  // Brings VF `member`'s rng up through legacy commands, queue 0 placed by PFN (§2.7.2)
  // in its guest memory, and has it fill one buffer: its queue interrupt sets ISR bit 0.
  void run_rng_request(std::uint64_t member) {
    Guest& guest = *vf_guests.at(member - 1);
    const std::uint16_t size = 64;  // the rng's queue size: no negotiation in legacy
    const GuestAddress base = guest.ram.alloc(16384, 4096);
    auto layout = legacy_split_layout(base, size, 4096);
    ASSERT_TRUE(layout.has_value());
    rings.push_back(std::make_unique<SplitRing>(guest.ram, *layout));
    const auto status_write = [&](std::uint8_t value) {
      ASSERT_TRUE(
          driver->legacy_write(member, false, l::kStatus, std::array<std::uint8_t, 1>{value}));
    };
    status_write(status::kAcknowledge);
    status_write(status::kAcknowledge | status::kDriver);
    ASSERT_TRUE(
        driver->legacy_write(member, false, l::kQueueSelect, std::array<std::uint8_t, 2>{0, 0}));
    std::array<std::uint8_t, 4> pfn{};
    store_le_bytes(pfn, base >> 12);
    ASSERT_TRUE(driver->legacy_write(member, false, l::kQueuePfn, pfn));
    status_write(status::kAcknowledge | status::kDriver | status::kDriverOk);
    ChainBuilder buffer(guest.ram);
    buffer.writable(16);
    rings.back()->add(buffer);
    // The doorbell, as COMMON_CFG_WRITE at 16 (the fallback of LEGACY_NOTIFY_INFO).
    ASSERT_TRUE(
        driver->legacy_write(member, false, l::kQueueNotify, std::array<std::uint8_t, 2>{0, 0}));
    ASSERT_TRUE(rings.back()->pop_used().has_value());
  }
  std::vector<std::unique_ptr<SplitRing>> rings;

  std::uint8_t read8(std::uint64_t member, std::uint8_t offset) {
    std::array<std::uint8_t, 1> byte{};
    EXPECT_TRUE(driver->legacy_read(member, false, offset, byte));
    return byte[0];
  }
};

TEST(AdminLegacy, ThePfPresentsTheSriovCapabilityAndTheDriverEnablesItsVfs) {
  SriovRig rig(2);
  ASSERT_TRUE(rig.driver);
  std::vector<std::uint8_t> config(rig.pf->pf().config_size());
  ASSERT_TRUE(rig.pf->pf().config_read(0, config));
  std::optional<std::uint16_t> at;
  for (const auto& cap : vpci::pci::scan_capabilities(config).capabilities) {
    if (cap.space == vpci::pci::CapabilitySpace::kExtended &&
        cap.id == vpci::pci::ext_cap_id::kSriov)
      at = cap.offset;
  }
  ASSERT_TRUE(at.has_value());
  const auto le16 = [&](std::uint32_t offset) {
    return load_le<std::uint16_t>(std::span(config).subspan(*at + offset));
  };
  namespace sr = vpci::pci::sriov;
  EXPECT_EQ(le16(sr::kTotalVfs), 2);
  EXPECT_EQ(le16(sr::kNumVfs), 2);  // the driver wrote it
  EXPECT_NE(le16(sr::kControl) & sr::kVfEnable, 0);
  EXPECT_EQ(le16(sr::kVfDeviceId), 0x1044);  // 0x1040 + rng
  EXPECT_EQ(load_le<std::uint32_t>(std::span(config).subspan(*at + sr::kVfBar0)), 0u);
  // The VFs keep their modern identity (§2.12.1.2 SHOULD).
  std::array<std::uint8_t, 4> ids{};
  ASSERT_TRUE(rig.pf->vf(1).config_read(0, ids));
  EXPECT_EQ(load_le<std::uint16_t>(std::span(ids).subspan(2)), 0x1044);
  EXPECT_EQ(rig.pf->member_count(), 2u);
  // LEGACY_NOTIFY_INFO gave each VF a member-BAR entry.
  auto entry = rig.driver->notify_entry(2);
  ASSERT_TRUE(entry.has_value());
  EXPECT_EQ(entry->flags, admin::kNotifyMemberBar);
  EXPECT_EQ(entry->bar, pci::VirtioPciLayout::kMemoryBar);
}

TEST(AdminLegacy, AHostileDriverNeverDisturbsAnotherVf) {
  SriovRig rig(2);
  ASSERT_TRUE(rig.driver);
  // VF 2 brought to ACKNOWLEDGE | DRIVER through its legacy status register.
  const std::array<std::uint8_t, 1> ack_driver = {status::kAcknowledge | status::kDriver};
  ASSERT_TRUE(rig.driver->legacy_write(2, false, l::kStatus, ack_driver));
  const auto before = rig.read8(2, l::kStatus);
  ASSERT_EQ(before, ack_driver[0]);

  // On VF 1: a 4-byte write over status, ISR and the config vector (three fields), a
  // write past the header (24 without MSI-X is device config: 20), a misaligned 2-byte
  // write, a read of 3 bytes, a member that does not exist.
  const std::array<std::uint8_t, 4> four = {1, 2, 3, 4};
  EXPECT_FALSE(rig.driver->legacy_write(1, false, l::kStatus, four));
  EXPECT_FALSE(rig.driver->legacy_write(1, false, 20, std::array<std::uint8_t, 2>{1, 0}));
  EXPECT_FALSE(rig.driver->legacy_write(1, false, 13, std::array<std::uint8_t, 2>{1, 0}));
  std::array<std::uint8_t, 3> three{};
  EXPECT_FALSE(rig.driver->legacy_read(1, false, l::kQueueNum, three));
  auto missing = rig.driver->legacy_write(3, false, l::kStatus, ack_driver);
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().message.find("INVALID_MEMBER"), std::string::npos)
      << missing.error().message;
  // A device-config access beyond rng's (empty) configuration.
  EXPECT_FALSE(rig.driver->legacy_read(1, true, 0, std::span(three).first(1)));
  // VF 1's status is untouched by the refused writes; VF 2 as it was.
  EXPECT_EQ(rig.read8(1, l::kStatus), 0);
  EXPECT_EQ(rig.read8(2, l::kStatus), before);
  // A reset of VF 1 (status 0) through a command resets VF 1 only.
  ASSERT_TRUE(rig.driver->legacy_write(1, false, l::kStatus, std::array<std::uint8_t, 1>{0}));
  EXPECT_EQ(rig.read8(2, l::kStatus), before);
}

TEST(AdminLegacy, IsrIsReadToClearThroughACommandForThatVfOnly) {
  SriovRig rig(2);
  ASSERT_TRUE(rig.driver);
  // Each VF fills one buffer (MSI-X is off): its queue interrupt sets ISR bit 0.
  rig.run_rng_request(1);
  rig.run_rng_request(2);
  EXPECT_NE(rig.pf->vf(1).isr(), 0);
  EXPECT_NE(rig.pf->vf(2).isr(), 0);
  EXPECT_NE(rig.read8(1, l::kIsr), 0);  // the read returns it and clears it
  EXPECT_EQ(rig.pf->vf(1).isr(), 0);
  EXPECT_NE(rig.pf->vf(2).isr(), 0);    // VF 2's is still pending
  EXPECT_EQ(rig.read8(1, l::kIsr), 0);  // exactly once
}

// A PF that stops answering (here: reset behind the driver's back) makes a command fail
// at once, never wait, and the driver sends nothing more on a ring it no longer owns.
TEST(AdminLegacy, ACommandThePfDoesNotCompleteIsAnErrorNotAWait) {
  SriovRig rig(1);
  ASSERT_TRUE(rig.driver);
  rig.pf->pf().reset();
  std::array<std::uint8_t, 1> status{};
  auto lost = rig.driver->legacy_read(1, false, l::kStatus, status);
  ASSERT_FALSE(lost);
  EXPECT_NE(lost.error().message.find("did not complete"), std::string::npos)
      << lost.error().message;
  auto after = rig.driver->legacy_read(1, false, l::kStatus, status);
  ASSERT_FALSE(after);
  EXPECT_NE(after.error().message.find("no more commands"), std::string::npos)
      << after.error().message;
}

TEST(AdminLegacy, TheMapperPresentsWhatLinuxVirtioVfioPciPresents) {
  auto created =
      pci::make_transport_function(pci::TransportKind::kLegacyOverAdmin,
                                   make_device(DeviceType::kBlk), std::make_shared<GuestMemory>());
  ASSERT_TRUE(created.has_value()) << created.error().message;
  vpci::pci::Function& mapper = **created;
  std::array<std::uint8_t, 0x30> header{};
  ASSERT_TRUE(mapper.config_read(0, header));
  const auto le16 = [&](std::uint32_t at) {
    return load_le<std::uint16_t>(std::span(header).subspan(at));
  };
  EXPECT_EQ(le16(vpci::pci::reg::kVendorId), 0x1af4);
  EXPECT_EQ(le16(vpci::pci::reg::kDeviceId), 0x1001);  // transitional blk
  EXPECT_EQ(header[vpci::pci::reg::kRevisionId], 0);
  EXPECT_EQ(le16(vpci::pci::reg::kSubsystemVendorId), 0x1af4);
  EXPECT_EQ(le16(vpci::pci::reg::kSubsystemId), 2);  // blk
  EXPECT_EQ(mapper.bar_info(0).kind, vpci::pci::BarKind::kIo);
  // Without COMMAND.IO every legacy access is refused; with it, host features come from
  // the VF through LEGACY_COMMON_CFG_READ.
  std::array<std::uint8_t, 4> features{};
  EXPECT_FALSE(mapper.bar_read(0, l::kHostFeatures, features));
  ASSERT_TRUE(mapper.config_write(vpci::pci::reg::kCommand,
                                  std::array<std::uint8_t, 2>{vpci::pci::command::kIoSpace, 0}));
  ASSERT_TRUE(mapper.bar_read(0, l::kHostFeatures, features));
  EXPECT_NE(load_le<std::uint32_t>(features), 0u);
}

// Transport "sriov-pf" (what `vpci serve` serves): the PF itself, with its admin queue and
// SR-IOV capability, its VFs in the PF's guest memory; a driver of the PF reaches the VFs'
// legacy registers through commands, and clearing VF Enable or resetting the PF resets
// every VF (PCIe 6.0 §9.3.3.3.1) — nothing a driver left in a VF survives.
TEST(AdminLegacy, TheSriovPfTransportServesThePfAndResetsItsVfs) {
  auto memory = std::make_shared<GuestMemory>();
  std::vector<std::unique_ptr<Device>> vfs;
  vfs.push_back(make_device(DeviceType::kRng));
  vfs.push_back(make_device(DeviceType::kRng));
  auto created = pci::make_transport_function(
      pci::TransportKind::kSriovPf, make_device(DeviceType::kRng), memory, {}, std::move(vfs));
  ASSERT_TRUE(created.has_value()) << created.error().message;
  auto& function = static_cast<pci::SriovPfFunction&>(**created);
  SriovPf& owner = function.owner();
  ASSERT_EQ(owner.vf_count(), 2u);
  std::array<std::uint8_t, 4> ids{};
  ASSERT_TRUE(function.config_read(0, ids));
  EXPECT_EQ(load_le<std::uint16_t>(std::span(ids).subspan(2)), 0x1044);  // modern rng

  auto driver = AdminQueueDriver::create(function, memory, 2);
  ASSERT_TRUE(driver.has_value()) << driver.error().message;
  const std::uint8_t acknowledged = status::kAcknowledge;
  ASSERT_TRUE((*driver)->legacy_write(1, false, l::kStatus, std::array{acknowledged}));
  std::array<std::uint8_t, 1> status_byte{};
  ASSERT_TRUE((*driver)->legacy_read(1, false, l::kStatus, status_byte));
  EXPECT_EQ(status_byte[0], acknowledged);
  ASSERT_TRUE((*driver)->legacy_read(2, false, l::kStatus, status_byte));
  EXPECT_EQ(status_byte[0], 0) << "VF 2 was not addressed";

  // VF Enable cleared and set again: VF 1 is back in its initial state.
  const std::uint32_t control = owner.pf().layout().sriov_cap + vpci::pci::sriov::kControl;
  ASSERT_TRUE(function.config_write(control, std::array<std::uint8_t, 2>{0, 0}));
  EXPECT_FALSE(owner.group_enabled());
  ASSERT_TRUE(
      function.config_write(control, std::array<std::uint8_t, 2>{vpci::pci::sriov::kVfEnable, 0}));
  ASSERT_TRUE(owner.vf(1).admin_legacy_read(admin::LegacyRegion::kCommon, l::kStatus, status_byte));
  EXPECT_EQ(status_byte[0], 0) << "clearing VF Enable must reset the VFs";

  // A reset of the PF resets the VFs too.
  ASSERT_TRUE(owner.vf(2).admin_legacy_write(admin::LegacyRegion::kCommon, l::kStatus,
                                             std::array{acknowledged}));
  function.reset();
  EXPECT_FALSE(owner.group_enabled());
  ASSERT_TRUE(owner.vf(2).admin_legacy_read(admin::LegacyRegion::kCommon, l::kStatus, status_byte));
  EXPECT_EQ(status_byte[0], 0) << "a PF reset must reset the VFs";
  driver->reset();  // before the function: it unregisters its memory

  // VF devices only with sriov-pf, and sriov-pf only with VF devices.
  EXPECT_FALSE(pci::make_transport_function(pci::TransportKind::kSriovPf,
                                            make_device(DeviceType::kRng),
                                            std::make_shared<GuestMemory>()));
  std::vector<std::unique_ptr<Device>> one;
  one.push_back(make_device(DeviceType::kRng));
  EXPECT_FALSE(pci::make_transport_function(pci::TransportKind::kModern,
                                            make_device(DeviceType::kRng),
                                            std::make_shared<GuestMemory>(), {}, std::move(one)));
}

}  // namespace
}  // namespace vpci::virtio::testing
