// pci/header_decode and pci/capability_decode on handmade config spaces; the CLI
// tests compare the same decodes with lspci -vvv over the whole corpus.
#include <array>
#include <cstdint>
#include <optional>
#include <vector>

#include <gtest/gtest.h>

#include "pci/capabilities.h"
#include "pci/capability_decode.h"
#include "pci/header_decode.h"
#include "pci/registers.h"

namespace vpci::pci {
namespace {

class Bytes {
 public:
  explicit Bytes(std::size_t size) : bytes_(size, 0) {}
  Bytes& u8(std::uint32_t at, std::uint8_t v) {
    bytes_.at(at) = v;
    return *this;
  }
  Bytes& u16(std::uint32_t at, std::uint16_t v) { return u8(at, v & 0xFF).u8(at + 1, v >> 8); }
  Bytes& u32(std::uint32_t at, std::uint32_t v) { return u16(at, v & 0xFFFF).u16(at + 2, v >> 16); }
  [[nodiscard]] const std::vector<std::uint8_t>& get() const { return bytes_; }

 private:
  std::vector<std::uint8_t> bytes_;
};

constexpr std::array<std::optional<std::uint64_t>, 6> kNoSizes{};

TEST(MsiDecodeTest, SixtyFourBitMaskable) {
  // Enable, 4 vectors capable (MMC 2), 2 enabled (MME 1), 64-bit, per-vector masking.
  Bytes c(256);
  c.u8(0x50, cap_id::kMsi).u16(0x52, 0x0001 | (2 << 1) | (1 << 4) | (1 << 7) | (1 << 8));
  c.u32(0x54, 0xFEE00000).u32(0x58, 0x1).u16(0x5C, 0x4021).u32(0x60, 0x2).u32(0x64, 0x1);
  const auto m = decode_msi(c.get(), 0x50);
  ASSERT_TRUE(m.has_value());
  EXPECT_TRUE(m->enabled);
  EXPECT_TRUE(m->address_64bit);
  EXPECT_TRUE(m->per_vector_masking);
  EXPECT_EQ(m->vectors_capable, 4u);
  EXPECT_EQ(m->vectors_enabled, 2u);
  EXPECT_EQ(m->address, 0x1FEE00000u);
  EXPECT_EQ(m->data, 0x4021);
  EXPECT_EQ(m->mask_bits, 2u);
  EXPECT_EQ(m->pending_bits, 1u);
}

TEST(MsiDecodeTest, ThirtyTwoBitKeepsDataAtEight) {
  Bytes c(256);
  c.u8(0x50, cap_id::kMsi).u16(0x52, 0).u32(0x54, 0xFEE01000).u16(0x58, 0x0031);
  const auto m = decode_msi(c.get(), 0x50);
  ASSERT_TRUE(m.has_value());
  EXPECT_FALSE(m->enabled);
  EXPECT_FALSE(m->address_64bit);
  EXPECT_EQ(m->vectors_capable, 1u);
  EXPECT_EQ(m->address, 0xFEE01000u);
  EXPECT_EQ(m->data, 0x31);
  EXPECT_FALSE(m->mask_bits.has_value());
}

TEST(MsiDecodeTest, NotReadableInFullIsNothing) {
  Bytes c(0x58);  // a 64-bit maskable MSI at 0x50 needs 24 bytes
  c.u16(0x52, (1 << 7) | (1 << 8));
  EXPECT_FALSE(decode_msi(c.get(), 0x50).has_value());
  EXPECT_FALSE(decode_msi(c.get(), 0x100).has_value());
}

TEST(MsixDecodeTest, TableAndPbaLocations) {
  Bytes c(256);
  c.u8(0x70, cap_id::kMsiX)
      .u16(0x72, 0x8000 | 0x4000 | 3)
      .u32(0x74, 0x2000 | 1)
      .u32(0x78, 0x3800 | 4);
  const auto m = decode_msix(c.get(), 0x70);
  ASSERT_TRUE(m.has_value());
  EXPECT_TRUE(m->enabled);
  EXPECT_TRUE(m->function_mask);
  EXPECT_EQ(m->table_size, 4u);
  EXPECT_EQ(m->table_bir, 1);
  EXPECT_EQ(m->table_offset, 0x2000u);
  EXPECT_EQ(m->pba_bir, 4);
  EXPECT_EQ(m->pba_offset, 0x3800u);
  EXPECT_FALSE(decode_msix(c.get(), 0xF8).has_value());
}

TEST(DvsecDecodeTest, HeaderFields) {
  Bytes c(4096);
  c.u32(0x200, 0x23 | (1u << 16))
      .u32(0x204, 0x1E98 | (2u << 16) | (0x38u << 20))
      .u16(0x208, 0x0003);
  const auto d = decode_dvsec(c.get(), 0x200);
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->vendor_id, 0x1E98);
  EXPECT_EQ(d->revision, 2);
  EXPECT_EQ(d->length, 0x38);
  EXPECT_EQ(d->id, 3);
  EXPECT_FALSE(decode_dvsec(std::span(c.get()).first(0x208), 0x200).has_value());
}

TEST(BarDecodeTest, KindsAddressesAndSizes) {
  Bytes c(256);
  c.u8(reg::kHeaderType, header_type::kEndpoint);
  c.u32(0x10, 0x0000000C).u32(0x14, 0x00000062);  // BAR0: 64-bit prefetchable at 0x6200000000
  c.u32(0x18, 0x0000C001);                        // BAR2: I/O at 0xc000
  c.u32(0x1C, 0xFE000002);                        // BAR3: below-1M type (legacy)
  // BAR4 reads 0 but the source knows a size: unassigned 32-bit memory.
  c.u32(0x24, 0xF0000004);  // BAR5: 64-bit in the last register
  std::array<std::optional<std::uint64_t>, 6> sizes{};
  sizes[0] = 1ull << 28;
  sizes[4] = 0x1000;
  const auto bars = decode_bars(c.get(), sizes);
  ASSERT_EQ(bars.size(), 5u);
  EXPECT_EQ(bars[0].index, 0u);
  EXPECT_EQ(bars[0].kind, BarKind::kMemory64);
  EXPECT_TRUE(bars[0].prefetchable);
  EXPECT_EQ(bars[0].address, 0x6200000000u);
  EXPECT_EQ(bars[0].raw_upper, 0x62u);
  EXPECT_EQ(bars[0].size, 1ull << 28);
  EXPECT_EQ(bars[1].index, 2u);
  EXPECT_EQ(bars[1].kind, BarKind::kIo);
  EXPECT_EQ(bars[1].address, 0xC000u);
  EXPECT_FALSE(bars[1].size.has_value());
  EXPECT_EQ(bars[2].kind, BarKind::kMemoryBelow1M);
  EXPECT_EQ(bars[3].index, 4u);
  EXPECT_EQ(bars[3].kind, BarKind::kMemory32);
  EXPECT_EQ(bars[3].address, 0u);
  EXPECT_EQ(bars[3].size, 0x1000u);
  EXPECT_EQ(bars[4].index, 5u);
  EXPECT_TRUE(bars[4].upper_missing);
  EXPECT_EQ(bar_kind_name(bars[4].kind), "mem64");
}

TEST(BarDecodeTest, BridgesHaveTwoCardbusOneOthersNone) {
  Bytes c(256);
  c.u8(reg::kHeaderType, header_type::kBridge)
      .u32(0x10, 0xFE000000)
      .u32(0x14, 0xFD000000)
      .u32(0x18, 0x00010100);
  EXPECT_EQ(decode_bars(c.get(), kNoSizes).size(), 2u);
  c.u8(reg::kHeaderType, header_type::kCardbus);
  EXPECT_EQ(decode_bars(c.get(), kNoSizes).size(), 1u);  // the socket registers' base
  c.u8(reg::kHeaderType, 0x05);
  EXPECT_TRUE(decode_bars(c.get(), kNoSizes).empty());
  EXPECT_TRUE(decode_bars(std::span(c.get()).first(0x30), kNoSizes).empty());
}

TEST(BridgeDecodeTest, BusNumbersAndWindows) {
  Bytes c(256);
  c.u8(reg::kHeaderType, header_type::kBridge);
  c.u8(reg::kPrimaryBus, 0x00).u8(reg::kSecondaryBus, 0x03).u8(reg::kSubordinateBus, 0x05);
  c.u8(reg::kSecondaryLatency, 0x20);
  // I/O: 32-bit 0x12000-0x12fff (upper 16 bits 0x0001).
  c.u8(reg::kIoBase, 0x21)
      .u8(reg::kIoLimit, 0x21)
      .u16(reg::kIoBaseUpper, 1)
      .u16(reg::kIoLimitUpper, 1);
  // Memory: closed (base above limit).
  c.u16(reg::kMemoryBase, 0xFFF0).u16(reg::kMemoryLimit, 0x0000);
  // Prefetchable: 64-bit 0x8_0000_0000-0x8_001f_ffff.
  c.u16(reg::kPrefetchBase, 0x0001).u16(reg::kPrefetchLimit, 0x0011);
  c.u32(reg::kPrefetchBaseUpper, 8).u32(reg::kPrefetchLimitUpper, 8);
  const auto b = decode_bridge(c.get());
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(b->secondary_bus, 3);
  EXPECT_EQ(b->subordinate_bus, 5);
  EXPECT_EQ(b->secondary_latency, 0x20);
  ASSERT_TRUE(b->io && b->memory && b->prefetchable);
  EXPECT_EQ(b->io->bits, 32u);
  EXPECT_EQ(b->io->base, 0x12000u);
  EXPECT_EQ(b->io->limit, 0x12FFFu);
  EXPECT_TRUE(b->io->open());
  EXPECT_FALSE(b->memory->open());
  EXPECT_TRUE(b->memory->type_known);
  EXPECT_EQ(b->memory->base, 0xFFF00000u);
  EXPECT_EQ(b->memory->limit, 0xFFFFFu);
  EXPECT_EQ(b->prefetchable->bits, 64u);
  EXPECT_EQ(b->prefetchable->base, 0x800000000u);
  EXPECT_EQ(b->prefetchable->limit, 0x8001FFFFFu);
  // A CardBus bridge keeps its bus numbers at the same offsets, its windows elsewhere.
  c.u8(reg::kHeaderType, header_type::kCardbus);
  const auto cardbus = decode_bridge(c.get());
  ASSERT_TRUE(cardbus.has_value());
  EXPECT_EQ(cardbus->subordinate_bus, 5);
  EXPECT_FALSE(cardbus->io.has_value());
}

TEST(BridgeDecodeTest, MismatchedOrReservedTypesAreUnknown) {
  Bytes c(256);
  c.u8(reg::kHeaderType, header_type::kBridge);
  c.u8(reg::kIoBase, 0x01).u8(reg::kIoLimit, 0x00);  // 32-bit base, 16-bit limit
  c.u16(reg::kMemoryBase, 0x0001)
      .u16(reg::kMemoryLimit, 0x0001);  // memory window has no 64-bit type
  c.u16(reg::kPrefetchBase, 0x0002).u16(reg::kPrefetchLimit, 0x0002);
  const auto b = decode_bridge(c.get());
  ASSERT_TRUE(b.has_value());
  EXPECT_FALSE(b->io->type_known);
  EXPECT_FALSE(b->memory->type_known);
  EXPECT_FALSE(b->prefetchable->type_known);
  EXPECT_EQ(b->io->raw_base, 0x01u);
  c.u8(reg::kHeaderType, header_type::kEndpoint);
  EXPECT_FALSE(decode_bridge(c.get()).has_value());
}

TEST(SubsystemDecodeTest, WhereEachHeaderTypeKeepsIt) {
  Bytes endpoint(256);
  endpoint.u16(reg::kSubsystemVendorId, 0x1AF4).u16(reg::kSubsystemId, 0x1100);
  const auto e = decode_subsystem(endpoint.get(), scan_capabilities(endpoint.get()));
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->vendor_id, 0x1AF4);
  EXPECT_EQ(e->device_id, 0x1100);

  Bytes bridge(256);
  bridge.u8(reg::kHeaderType, header_type::kBridge).u16(reg::kStatus, status::kCapabilityList);
  bridge.u8(reg::kCapabilityPointer, 0x40)
      .u8(0x40, cap_id::kBridgeSubsystemVendorId)
      .u16(0x44, 0x1B36)
      .u16(0x46, 7);
  const auto b = decode_subsystem(bridge.get(), scan_capabilities(bridge.get()));
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(b->vendor_id, 0x1B36);
  EXPECT_EQ(b->device_id, 7);
  bridge.u8(reg::kCapabilityPointer, 0);  // no capability: no subsystem
  EXPECT_FALSE(decode_subsystem(bridge.get(), scan_capabilities(bridge.get())).has_value());

  Bytes cardbus(256);
  cardbus.u8(reg::kHeaderType, header_type::kCardbus).u16(0x40, 0x104C).u16(0x42, 0xAC56);
  const auto cb = decode_subsystem(cardbus.get(), scan_capabilities(cardbus.get()));
  ASSERT_TRUE(cb.has_value());
  EXPECT_EQ(cb->vendor_id, 0x104C);
  EXPECT_FALSE(decode_subsystem(std::span(cardbus.get()).first(0x40),
                                scan_capabilities(std::span(cardbus.get()).first(0x40)))
                   .has_value());
}

}  // namespace
}  // namespace vpci::pci
