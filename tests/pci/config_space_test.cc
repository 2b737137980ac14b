#include "pci/config_space.h"

#include <gtest/gtest.h>

namespace vpci::pci {
namespace {

HeaderIdentity test_ids() {
  HeaderIdentity ids;
  ids.vendor_id = 0x1AF4;
  ids.device_id = 0x1042;
  ids.revision = 1;
  ids.class_code = 0x010000;
  ids.subsystem_vendor_id = 0x1AF4;
  ids.subsystem_id = 0x1100;
  ids.interrupt_pin = 1;
  return ids;
}

std::uint32_t read(const ConfigSpace& space, std::uint32_t offset, unsigned width) {
  auto value = space.read(offset, width);
  EXPECT_TRUE(value.has_value()) << "read " << offset << "/" << width;
  return value.value_or(0xDEADBEEF);
}

void write(ConfigSpace& space, std::uint32_t offset, unsigned width, std::uint32_t value) {
  ASSERT_TRUE(space.write(offset, width, value).has_value()) << "write " << offset << "/" << width;
}

TEST(ConfigSpaceTest, IdentityRegistersAreReadOnly) {
  ConfigSpace space = ConfigSpace::make_endpoint(kExtendedConfigSize, test_ids());
  EXPECT_EQ(read(space, 0, 4), 0x10421AF4u);
  write(space, 0, 4, 0xFFFFFFFF);
  EXPECT_EQ(read(space, 0, 4), 0x10421AF4u);
  EXPECT_EQ(read(space, 0x08, 4), 0x01000001u);
  write(space, 0x08, 4, 0);
  EXPECT_EQ(read(space, 0x08, 4), 0x01000001u);
  EXPECT_EQ(read(space, 0x2C, 4), 0x11001AF4u);
  write(space, 0x2C, 2, 0);
  EXPECT_EQ(read(space, 0x2C, 4), 0x11001AF4u);
  EXPECT_EQ(read(space, 0x3D, 1), 1u);
}

TEST(ConfigSpaceTest, CommandHasOnlyItsWritableBits) {
  ConfigSpace space = ConfigSpace::make_endpoint(kConventionalConfigSize, test_ids());
  write(space, 0x04, 2, 0xFFFF);
  // IO, MEM, MASTER, PARITY, SERR, INTX_DISABLE: PCIe Base 6.0 §7.5.1.1.3.
  EXPECT_EQ(read(space, 0x04, 2), 0x0547u);
  write(space, 0x04, 2, 0x0000);
  EXPECT_EQ(read(space, 0x04, 2), 0x0000u);
}

TEST(ConfigSpaceTest, StatusErrorBitsAreWriteOneToClear) {
  ConfigSpace space = ConfigSpace::make_endpoint(kConventionalConfigSize, test_ids());
  space.set_raw16(0x06, 0xF910 | 0x0008);  // all RW1C bits + CapList + IntStatus
  write(space, 0x06, 2, 0x0000);           // writing 0 changes nothing
  EXPECT_EQ(read(space, 0x06, 2), 0xF918u);
  write(space, 0x06, 2, 0x0100);  // clears only Master Data Parity Error
  EXPECT_EQ(read(space, 0x06, 2), 0xF818u);
  write(space, 0x06, 2, 0xFFFF);  // RO bits survive
  EXPECT_EQ(read(space, 0x06, 2), 0x0018u);
}

TEST(ConfigSpaceTest, ReservedZeroBitsReadZeroEvenIfStored) {
  ConfigSpace space = ConfigSpace::make_endpoint(kConventionalConfigSize, test_ids());
  space.set_raw16(0x06, 0x0046);
  EXPECT_EQ(read(space, 0x06, 2), 0u);
  EXPECT_EQ(space.bit_kind(0x06, 1), BitKind::kReservedZero);
  EXPECT_EQ(space.bit_kind(0x07, 0), BitKind::kWrite1ToClear);
  EXPECT_EQ(space.bit_kind(0x05, 3), BitKind::kReservedPreserve);
}

TEST(ConfigSpaceTest, DwordWriteAcrossCommandAndStatusActsOnBoth) {
  ConfigSpace space = ConfigSpace::make_endpoint(kConventionalConfigSize, test_ids());
  space.set_raw16(0x06, 0x2010);  // Received Master Abort + CapList
  // The usual "write back what you read with MEM set" clears the pending abort too.
  write(space, 0x04, 4, 0x20100002);
  EXPECT_EQ(read(space, 0x04, 4), 0x00100002u);
}

TEST(ConfigSpaceTest, UnalignedAndCrossRegisterAccesses) {
  ConfigSpace space = ConfigSpace::make_endpoint(kConventionalConfigSize, test_ids());
  EXPECT_EQ(read(space, 0x01, 2), 0x421Au);      // vendor high byte, device low byte
  EXPECT_EQ(read(space, 0x03, 4), 0x00000010u);  // device high byte + command + status low
  write(space, 0x3B, 2, 0xAB00);                 // byte 0x3B (RO, BAR area end? CardBus) + line
  EXPECT_EQ(read(space, 0x3C, 1), 0xABu);
  EXPECT_EQ(read(space, 0xFF, 1), 0u);
}

TEST(ConfigSpaceTest, AccessesOutsideTheSpaceOrOfBadWidthAreErrors) {
  ConfigSpace space = ConfigSpace::make_endpoint(kConventionalConfigSize, test_ids());
  EXPECT_EQ(space.read(0xFE, 4).error().code, ErrorCode::kOutOfRange);
  EXPECT_EQ(space.read(0x100, 1).error().code, ErrorCode::kOutOfRange);
  EXPECT_EQ(space.read(0, 3).error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(space.write(0xFFFFFFFF, 4, 0).error().code, ErrorCode::kOutOfRange);
  ConfigSpace express = ConfigSpace::make_endpoint(kExtendedConfigSize, test_ids());
  EXPECT_TRUE(express.read(0xFFC, 4).has_value());
  EXPECT_FALSE(express.read(0xFFD, 4).has_value());
}

TEST(ConfigSpaceTest, Memory32BarSizing) {
  ConfigSpace space = ConfigSpace::make_endpoint(kConventionalConfigSize, test_ids());
  ASSERT_TRUE(space.define_bar(1, {BarType::kMemory32, 0x4000, false}).has_value());
  EXPECT_EQ(read(space, 0x14, 4), 0u);
  write(space, 0x14, 4, 0xFFFFFFFF);
  EXPECT_EQ(read(space, 0x14, 4), 0xFFFFC000u);
  EXPECT_EQ(~(read(space, 0x14, 4) & ~0xFu) + 1, 0x4000u);
  write(space, 0x14, 4, 0xFEBD1234);  // low address bits are not writable
  EXPECT_EQ(read(space, 0x14, 4), 0xFEBD0000u);
  EXPECT_EQ(space.bar_address(1), 0xFEBD0000u);
}

TEST(ConfigSpaceTest, PrefetchableBarKeepsItsFlags) {
  ConfigSpace space = ConfigSpace::make_endpoint(kConventionalConfigSize, test_ids());
  ASSERT_TRUE(space.define_bar(0, {BarType::kMemory32, 0x100000, true}).has_value());
  EXPECT_EQ(read(space, 0x10, 4), 0x8u);
  write(space, 0x10, 4, 0xFFFFFFFF);
  EXPECT_EQ(read(space, 0x10, 4), 0xFFF00008u);
  write(space, 0x10, 4, 0);
  EXPECT_EQ(read(space, 0x10, 4), 0x8u);
}

TEST(ConfigSpaceTest, IoBarSizing) {
  ConfigSpace space = ConfigSpace::make_endpoint(kConventionalConfigSize, test_ids());
  ASSERT_TRUE(space.define_bar(0, {BarType::kIo, 0x20, false}).has_value());
  EXPECT_EQ(read(space, 0x10, 4), 0x1u);
  write(space, 0x10, 4, 0xFFFFFFFF);
  EXPECT_EQ(read(space, 0x10, 4), 0xFFFFFFE1u);
  EXPECT_EQ(~(read(space, 0x10, 4) & ~0x3u) + 1, 0x20u);
  write(space, 0x10, 4, 0xC040);
  EXPECT_EQ(space.bar_address(0), 0xC040u);
}

TEST(ConfigSpaceTest, Memory64BarSizesAcrossBothDwords) {
  ConfigSpace space = ConfigSpace::make_endpoint(kConventionalConfigSize, test_ids());
  ASSERT_TRUE(space.define_bar(4, {BarType::kMemory64, 0x4000, true}).has_value());
  EXPECT_EQ(read(space, 0x20, 4), 0xCu);
  write(space, 0x20, 4, 0xFFFFFFFF);
  write(space, 0x24, 4, 0xFFFFFFFF);
  const std::uint64_t mask =
      (static_cast<std::uint64_t>(read(space, 0x24, 4)) << 32) | (read(space, 0x20, 4) & ~0xFu);
  EXPECT_EQ(~mask + 1, 0x4000u);
  write(space, 0x20, 4, 0xFE000000);
  write(space, 0x24, 4, 0x00000080);
  EXPECT_EQ(space.bar_address(4), 0x80FE000000u);
  EXPECT_FALSE(space.bar_address(5).has_value());
}

TEST(ConfigSpaceTest, HugeMemory64BarHasReadOnlyLowAddressDword) {
  ConfigSpace space = ConfigSpace::make_endpoint(kConventionalConfigSize, test_ids());
  ASSERT_TRUE(space.define_bar(2, {BarType::kMemory64, 1ull << 34, true}).has_value());
  write(space, 0x18, 4, 0xFFFFFFFF);
  write(space, 0x1C, 4, 0xFFFFFFFF);
  EXPECT_EQ(read(space, 0x18, 4), 0xCu);
  EXPECT_EQ(read(space, 0x1C, 4), 0xFFFFFFFCu);
}

TEST(ConfigSpaceTest, BarSizingWorksWithByteAndWordAccesses) {
  ConfigSpace space = ConfigSpace::make_endpoint(kConventionalConfigSize, test_ids());
  ASSERT_TRUE(space.define_bar(0, {BarType::kMemory32, 0x1000, false}).has_value());
  for (unsigned i = 0; i < 4; ++i) write(space, 0x10 + i, 1, 0xFF);
  EXPECT_EQ(read(space, 0x10, 4), 0xFFFFF000u);
  EXPECT_EQ(read(space, 0x10, 1), 0x00u);
  EXPECT_EQ(read(space, 0x11, 1), 0xF0u);
  write(space, 0x10, 2, 0);
  write(space, 0x12, 2, 0);
  EXPECT_EQ(read(space, 0x10, 4), 0u);
  write(space, 0x12, 2, 0xFFFF);
  EXPECT_EQ(read(space, 0x10, 4), 0xFFFF0000u);
}

TEST(ConfigSpaceTest, ExpansionRomSizingAndEnable) {
  ConfigSpace space = ConfigSpace::make_endpoint(kConventionalConfigSize, test_ids());
  ASSERT_TRUE(space.define_expansion_rom(0x10000).has_value());
  write(space, 0x30, 4, 0xFFFFFFFF);
  EXPECT_EQ(read(space, 0x30, 4), 0xFFFF0001u);
  write(space, 0x30, 4, 0xFEB00000);
  EXPECT_EQ(read(space, 0x30, 4), 0xFEB00000u);
  EXPECT_FALSE(space.define_expansion_rom(0x400).has_value());
}

TEST(ConfigSpaceTest, UndefinedBarsReadZeroAndIgnoreWrites) {
  ConfigSpace space = ConfigSpace::make_endpoint(kConventionalConfigSize, test_ids());
  write(space, 0x18, 4, 0xFFFFFFFF);
  EXPECT_EQ(read(space, 0x18, 4), 0u);
}

TEST(ConfigSpaceTest, BarDefinitionsAreValidated) {
  ConfigSpace space = ConfigSpace::make_endpoint(kConventionalConfigSize, test_ids());
  EXPECT_EQ(space.define_bar(0, {BarType::kMemory32, 0x3000, false}).error().code,
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(space.define_bar(0, {BarType::kMemory32, 8, false}).error().code,
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(space.define_bar(0, {BarType::kIo, 0x200, false}).error().code,
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(space.define_bar(5, {BarType::kMemory64, 0x1000, false}).error().code,
            ErrorCode::kOutOfRange);
  EXPECT_EQ(space.define_bar(6, {BarType::kMemory32, 0x1000, false}).error().code,
            ErrorCode::kOutOfRange);
  ASSERT_TRUE(space.define_bar(2, {BarType::kMemory64, 0x1000, false}).has_value());
  EXPECT_EQ(space.define_bar(3, {BarType::kMemory32, 0x1000, false}).error().code,
            ErrorCode::kConflict);
  ConfigSpace bridge = ConfigSpace::make_bridge(kConventionalConfigSize, test_ids());
  EXPECT_EQ(bridge.define_bar(2, {BarType::kMemory32, 0x1000, false}).error().code,
            ErrorCode::kOutOfRange);
  EXPECT_TRUE(bridge.define_bar(0, {BarType::kMemory64, 0x1000, false}).has_value());
}

TEST(ConfigSpaceTest, BridgeWindowsAndBusNumbers) {
  HeaderIdentity ids = test_ids();
  ids.class_code = 0x060400;
  ConfigSpace bridge = ConfigSpace::make_bridge(kExtendedConfigSize, ids);
  EXPECT_EQ(read(bridge, 0x0E, 1), 1u);
  write(bridge, 0x18, 4, 0xFF030201);  // secondary latency timer is RO 0 on PCIe
  EXPECT_EQ(read(bridge, 0x18, 4), 0x00030201u);
  write(bridge, 0x1C, 2, 0xFFFF);  // I/O base/limit: 7:4 RW, 3:0 = 32-bit decode
  EXPECT_EQ(read(bridge, 0x1C, 2), 0xF1F1u);
  write(bridge, 0x20, 4, 0xFFFFFFFF);  // memory base/limit 15:4
  EXPECT_EQ(read(bridge, 0x20, 4), 0xFFF0FFF0u);
  write(bridge, 0x24, 4, 0xFFFFFFFF);  // prefetchable: 64-bit capable
  EXPECT_EQ(read(bridge, 0x24, 4), 0xFFF1FFF1u);
  write(bridge, 0x28, 4, 0x12345678);
  EXPECT_EQ(read(bridge, 0x28, 4), 0x12345678u);
  bridge.set_raw16(0x1E, 0xF900);
  write(bridge, 0x1E, 2, 0x2000);  // secondary status is RW1C
  EXPECT_EQ(read(bridge, 0x1E, 2), 0xD900u);
  write(bridge, 0x3E, 2, 0xFFFF);
  EXPECT_EQ(read(bridge, 0x3E, 2), 0x007Fu);
}

TEST(ConfigSpaceTest, HooksServeDynamicRegisters) {
  ConfigSpace space = ConfigSpace::make_endpoint(kConventionalConfigSize, test_ids());
  std::uint32_t window = 0x11223344;
  std::vector<std::pair<std::uint32_t, std::uint32_t>> writes;
  ASSERT_TRUE(space
                  .set_hooks(0x50, 4,
                             {[&](std::uint32_t off, unsigned width) {
                                const unsigned shift = 8 * (off - 0x50);
                                return width == 4 ? window
                                                  : (window >> shift) & ((1u << (8 * width)) - 1);
                              },
                              [&](std::uint32_t off, unsigned width, std::uint32_t value) {
                                writes.emplace_back(off, value);
                                (void)width;
                              }})
                  .has_value());
  EXPECT_EQ(read(space, 0x50, 4), 0x11223344u);
  EXPECT_EQ(read(space, 0x52, 1), 0x22u);
  EXPECT_EQ(read(space, 0x4F, 2), 0x4400u);  // straddles: one plain byte, one hooked
  write(space, 0x50, 4, 0xCAFE);
  ASSERT_EQ(writes.size(), 1u);
  EXPECT_EQ(writes[0].second, 0xCAFEu);
  EXPECT_EQ(space.raw32(0x50), 0u);  // hooked writes never reach the stored bytes
  EXPECT_EQ(space.set_hooks(0x52, 4, {}).error().code, ErrorCode::kConflict);
}

TEST(ConfigSpaceTest, ObserversSeeWritesThatTouchTheirRange) {
  ConfigSpace space = ConfigSpace::make_endpoint(kConventionalConfigSize, test_ids());
  int calls = 0;
  space.add_write_observer(0x04, 2, [&](std::uint32_t, unsigned) { ++calls; });
  write(space, 0x06, 2, 0);
  EXPECT_EQ(calls, 0);
  write(space, 0x04, 4, 2);
  EXPECT_EQ(calls, 1);
  write(space, 0x05, 1, 0);
  EXPECT_EQ(calls, 2);
}

TEST(ConfigSpaceTest, ResetRestoresPowerOnState) {
  ConfigSpace space = ConfigSpace::make_endpoint(kConventionalConfigSize, test_ids());
  ASSERT_TRUE(space.define_bar(0, {BarType::kMemory32, 0x1000, false}).has_value());
  write(space, 0x10, 4, 0xFE000000);
  write(space, 0x04, 2, 0x6);
  space.reset();
  EXPECT_EQ(read(space, 0x10, 4), 0u);
  EXPECT_EQ(read(space, 0x04, 2), 0u);
}

TEST(ConfigSpaceTest, ImageOfTruncatedDumpReadsAllOnesPastTheEnd) {
  std::vector<std::uint8_t> bytes(64, 0);
  bytes[0] = 0x86;
  auto space = ConfigSpace::from_image(bytes);
  ASSERT_TRUE(space.has_value());
  EXPECT_EQ(space->size(), kConventionalConfigSize);
  EXPECT_EQ(read(*space, 0x40, 4), 0xFFFFFFFFu);
  std::vector<std::uint8_t> big(4097, 0);
  EXPECT_FALSE(ConfigSpace::from_image(big).has_value());
}

}  // namespace
}  // namespace vpci::pci
