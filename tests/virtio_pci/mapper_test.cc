// The legacy I/O -> MMR mapper against a foreign pci::Function (not vpci's transport):
// it must work from the capability alone (docs/transitional-mmr.md), fake the config
// space like a variant driver, and forward each legacy access to the right place.
#include <gtest/gtest.h>

#include "pci/capabilities.h"
#include "pci/config_space.h"
#include "pci/registers.h"
#include "virtio/pci/legacy_io_mapper.h"
#include "virtio/pci/registers.h"

namespace vpci::virtio::pci {
namespace {

namespace vp = vpci::pci;

struct Access {
  bool write;
  unsigned bar;
  std::uint64_t offset;
  std::size_t size;
  std::uint64_t value;
};

// A bare MMR device: notify cap -> BAR2 + 0x800 (multiplier 0), VSEC -> BAR2 + 0x400,
// 32-byte window. BAR2 reads return the low byte of the offset in every byte.
class ForeignMmrFunction final : public vp::Function {
 public:
  struct Shape {
    bool vsec = true;
    std::uint64_t window_offset = 0x400;
    std::uint32_t window_length = 32;
    bool bar0 = false;
    std::uint8_t cfg_type = cfg_type::kLegacyMmr;
  };
  explicit ForeignMmrFunction(Shape shape) : config_(4096) {
    vp::HeaderIdentity ids;
    ids.vendor_id = kVendorId;
    ids.device_id = 0x10FA;  // block
    ids.subsystem_vendor_id = kVendorId;
    ids.subsystem_id = 2;
    config_ = vp::ConfigSpace::make_endpoint(4096, ids);
    if (shape.bar0) (void)config_.define_bar(0, {vp::BarType::kMemory32, 0x1000});
    (void)config_.define_bar(2, {vp::BarType::kMemory32, 0x1000});
    std::vector<std::uint8_t> express(58, 0);
    express[0] = 0x02;
    (void)vp::add_standard_capability(config_, vp::cap_id::kPciExpress, express);
    std::vector<std::uint8_t> notify = {
        20, cfg_type::kNotify, 2, 0, 0, 0, 0x00, 0x08, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0};
    (void)vp::add_standard_capability(config_, vp::cap_id::kVendorSpecific, notify);
    if (shape.vsec) {
      std::vector<std::uint8_t> vsec(20, 0);
      vsec[0] = mmr_vsec::kVsecId;
      vsec[2] = static_cast<std::uint8_t>(mmr_vsec::kVsecRevision | (mmr_vsec::kSize << 4));
      vsec[3] = static_cast<std::uint8_t>(mmr_vsec::kSize >> 4);
      vsec[4] = shape.cfg_type;
      vsec[5] = 2;
      for (int i = 0; i < 4; ++i)
        vsec[8 + i] = static_cast<std::uint8_t>(shape.window_length >> (8 * i));
      for (int i = 0; i < 8; ++i)
        vsec[12 + i] = static_cast<std::uint8_t>(shape.window_offset >> (8 * i));
      (void)vp::add_extended_capability(config_, vp::ext_cap_id::kVendorSpecific, 1, vsec);
    }
  }
  std::uint32_t config_size() const override { return 4096; }
  vp::BarInfo bar_info(unsigned bar) const override {
    const auto spec = config_.bar_spec(bar);
    if (!spec) return {};
    return {vp::BarKind::kMemory32, spec->size, false};
  }
  std::uint16_t msix_vector_count() const override { return 0; }
  Status config_read(std::uint32_t offset, std::span<std::uint8_t> data) override {
    for (std::size_t i = 0; i < data.size(); ++i) {
      VPCI_ASSIGN_OR_RETURN(auto v, config_.read(offset + static_cast<std::uint32_t>(i), 1));
      data[i] = static_cast<std::uint8_t>(v);
    }
    return {};
  }
  Status config_write(std::uint32_t offset, std::span<const std::uint8_t> data) override {
    for (std::size_t i = 0; i < data.size(); ++i) {
      VPCI_TRY(config_.write(offset + static_cast<std::uint32_t>(i), 1, data[i]));
    }
    return {};
  }
  Status bar_read(unsigned bar, std::uint64_t offset, std::span<std::uint8_t> data) override {
    for (auto& b : data) b = static_cast<std::uint8_t>(offset);
    accesses.push_back({false, bar, offset, data.size(), 0});
    return {};
  }
  Status bar_write(unsigned bar, std::uint64_t offset,
                   std::span<const std::uint8_t> data) override {
    std::uint64_t v = 0;
    for (std::size_t i = data.size(); i-- > 0;) v = (v << 8) | data[i];
    accesses.push_back({true, bar, offset, data.size(), v});
    return {};
  }
  void set_interrupt_output(vp::InterruptOutput*) override {}
  void reset() override { ++resets; }

  vp::ConfigSpace config_;
  std::vector<Access> accesses;
  int resets = 0;
};

std::uint32_t cfg32(vp::Function& f, std::uint32_t offset) {
  std::array<std::uint8_t, 4> b{};
  EXPECT_TRUE(f.config_read(offset, b).has_value());
  return b[0] | (b[1] << 8) | (b[2] << 16) | (static_cast<std::uint32_t>(b[3]) << 24);
}
void cfg_write(vp::Function& f, std::uint32_t offset, std::uint32_t value, unsigned width = 4) {
  std::vector<std::uint8_t> b(width);
  for (unsigned i = 0; i < width; ++i) b[i] = static_cast<std::uint8_t>(value >> (8 * i));
  EXPECT_TRUE(f.config_write(offset, b).has_value());
}

TEST(LegacyIoMapper, FakesTransitionalIdentityAndBar0) {
  auto foreign = std::make_unique<ForeignMmrFunction>(ForeignMmrFunction::Shape{});
  auto* raw = foreign.get();
  auto mapper = LegacyIoMapper::create(std::move(foreign));
  ASSERT_TRUE(mapper.has_value()) << mapper.error().message;
  auto& m = **mapper;
  EXPECT_EQ(m.location().virtio_id, 2u);
  EXPECT_EQ(m.location().window_bar, 2);
  EXPECT_EQ(m.location().window_offset, 0x400u);
  EXPECT_EQ(m.location().notify_offset, 0x800u);
  EXPECT_EQ(cfg32(m, 0), 0x10011AF4u);     // transitional blk ID
  EXPECT_EQ(cfg32(m, 8) & 0xFF, 0u);       // revision 0
  EXPECT_EQ(cfg32(m, 0x2C), 0x00021AF4u);  // subsystem 1af4:0002
  EXPECT_EQ(m.bar_info(0).kind, vp::BarKind::kIo);
  EXPECT_EQ(m.bar_info(0).size, 32u);
  // BAR0 sizing and programming go to the shadow, never to the device.
  cfg_write(m, vp::reg::kBar0, 0xFFFFFFFF);
  EXPECT_EQ(cfg32(m, vp::reg::kBar0), 0xFFFFFFE1u);
  cfg_write(m, vp::reg::kBar0, 0xC041);
  EXPECT_EQ(cfg32(m, vp::reg::kBar0), 0xC041u);
  EXPECT_EQ(raw->config_.raw32(vp::reg::kBar0), 0u);
  // Without Command.I/O, BAR0 accesses are refused.
  std::array<std::uint8_t, 2> two{};
  EXPECT_FALSE(m.bar_read(0, legacy::kQueueNum, two).has_value());
  EXPECT_EQ(two[0], 0xFF);
  EXPECT_TRUE(raw->accesses.empty());
  cfg_write(m, vp::reg::kCommand, vp::command::kIoSpace | vp::command::kMemorySpace, 2);
  EXPECT_EQ(cfg32(m, vp::reg::kCommand) & 3, 3u);
  m.reset();
  EXPECT_EQ(raw->resets, 1);
  EXPECT_EQ(cfg32(m, vp::reg::kCommand) & 1, 0u);
  EXPECT_EQ(cfg32(m, vp::reg::kBar0), 1u);
}

TEST(LegacyIoMapper, ForwardsRegistersToWindowAndNotifyToDoorbell) {
  auto foreign = std::make_unique<ForeignMmrFunction>(ForeignMmrFunction::Shape{});
  auto* raw = foreign.get();
  auto mapper = LegacyIoMapper::create(std::move(foreign));
  ASSERT_TRUE(mapper.has_value());
  auto& m = **mapper;
  cfg_write(m, vp::reg::kCommand, vp::command::kIoSpace, 2);
  std::array<std::uint8_t, 2> two{};
  ASSERT_TRUE(m.bar_read(0, legacy::kQueueNum, two).has_value());
  EXPECT_EQ(two[0], 0x0C);  // the foreign BAR answered at 0x40C
  ASSERT_EQ(raw->accesses.size(), 1u);
  EXPECT_EQ(raw->accesses[0].bar, 2u);
  EXPECT_EQ(raw->accesses[0].offset, 0x40Cu);
  // Notify: fast path to the doorbell at 0x800, value = queue index.
  const std::array<std::uint8_t, 2> queue1 = {1, 0};
  ASSERT_TRUE(m.bar_write(0, legacy::kQueueNotify, queue1).has_value());
  EXPECT_EQ(raw->accesses.back().offset, 0x800u);
  EXPECT_EQ(raw->accesses.back().value, 1u);
  EXPECT_EQ(m.fast_path_notifies(), 1u);
  // A 1-byte access at 16 is not the notify register's width: it goes to the window.
  const std::array<std::uint8_t, 1> one = {1};
  ASSERT_TRUE(m.bar_write(0, legacy::kQueueNotify, one).has_value());
  EXPECT_EQ(raw->accesses.back().offset, 0x410u);
  // Device config bytes and the status register go to the window.
  ASSERT_TRUE(m.bar_write(0, 26, one).has_value());
  EXPECT_EQ(raw->accesses.back().offset, 0x41Au);
  // Past the window (32 bytes) and 8-byte accesses are refused without touching the device.
  const std::size_t before = raw->accesses.size();
  EXPECT_FALSE(m.bar_write(0, 31, two).has_value());
  std::array<std::uint8_t, 8> eight{};
  EXPECT_FALSE(m.bar_read(0, 0, eight).has_value());
  EXPECT_EQ(raw->accesses.size(), before);
  // Other BARs pass through.
  ASSERT_TRUE(m.bar_read(2, 0x10, two).has_value());
  EXPECT_EQ(raw->accesses.back().offset, 0x10u);
}

TEST(LegacyIoMapper, RefusesFunctionsWithoutAUsableCapability) {
  ForeignMmrFunction::Shape no_vsec;
  no_vsec.vsec = false;
  auto a = LegacyIoMapper::create(std::make_unique<ForeignMmrFunction>(no_vsec));
  ASSERT_FALSE(a.has_value());
  EXPECT_EQ(a.error().code, ErrorCode::kNotFound);
  ForeignMmrFunction::Shape outside;
  outside.window_offset = 0xFF0;  // 32 bytes from here leave the 4 KiB BAR
  auto b = LegacyIoMapper::create(std::make_unique<ForeignMmrFunction>(outside));
  ASSERT_FALSE(b.has_value());
  EXPECT_EQ(b.error().code, ErrorCode::kMalformedInput);
  ForeignMmrFunction::Shape short_window;
  short_window.window_length = 16;
  EXPECT_FALSE(
      LegacyIoMapper::create(std::make_unique<ForeignMmrFunction>(short_window)).has_value());
  ForeignMmrFunction::Shape wrong_type;
  wrong_type.cfg_type = 9;
  EXPECT_FALSE(
      LegacyIoMapper::create(std::make_unique<ForeignMmrFunction>(wrong_type)).has_value());
  ForeignMmrFunction::Shape with_bar0;
  with_bar0.bar0 = true;
  auto c = LegacyIoMapper::create(std::make_unique<ForeignMmrFunction>(with_bar0));
  ASSERT_FALSE(c.has_value());
  EXPECT_EQ(c.error().code, ErrorCode::kConflict);
  EXPECT_FALSE(LegacyIoMapper::create(nullptr).has_value());
}

}  // namespace
}  // namespace vpci::virtio::pci
