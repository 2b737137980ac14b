// Fuzzes random configuration and BAR access sequences against every virtio-pci
// transport (modern, transitional, legacy, transitional MMR, and the legacy I/O -> MMR
// mapper), with rng or blk behind it and rings in real guest RAM. Invariants checked
// after every access:
//   * config reads inside config_size() always succeed; outside always fail;
//   * the capability chains stay walkable (pci::scan_capabilities: no error
//     diagnostics) and list exactly the capabilities the function started with;
//   * device status only changes per spec: a new bit must come from the value the
//     driver just wrote, except DEVICE_NEEDS_RESET; DRIVER_OK through the modern
//     interface implies FEATURES_OK; a legacy driver never gets FEATURES_OK;
//   * INTx is asserted exactly when the ISR is non-zero, MSI-X is off and
//     Command.InterruptDisable is clear;
//   * with MsixTableOwner::kFunction no message leaves for a masked vector.
//
// Input: byte 0 selects the transport (0-4), byte 1 options (bit 0 blk, bit 1 kBus MSI-X,
// bits 2-3 notify multiplier 4/0/0x1000/2, bit 4 no MSI-X); then operations:
//   op byte: bits 0-2 kind, bits 3-5 width code (1,2,4,8,3,0,16,2)
//   0 config read   [u16 offset]          1 config write  [u16 offset][u64 value]
//   2 BAR read      [u8 bar][u24 offset]  3 BAR write     [u8 bar][u24 offset][u64 value]
//   4 function reset
//   5 common config field write [u8 field][u64 value]   (BAR4, exact field width)
//   6 legacy register write     [u8 register][u64 value] (BAR0 or the MMR window)
//   7 guest RAM write           [u16 offset][u8 length][bytes]
#include <array>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <vector>

#include "devices/block_backend.h"
#include "devices/virtio_blk.h"
#include "devices/virtio_rng.h"
#include "fuzz/fuzz_support.h"
#include "pci/capabilities.h"
#include "pci/registers.h"
#include "virtio/pci/legacy_io_mapper.h"
#include "virtio/pci/virtio_pci_function.h"
#include "virtio/spec.h"

namespace {

using namespace vpci;
namespace vp = vpci::pci;
namespace vt = vpci::virtio;
namespace vpp = vpci::virtio::pci;

void check(bool condition) {
  if (!condition) std::abort();
}

// Deterministic entropy: fuzz runs must be reproducible.
using vpci::fuzz::CountingEntropy;
using vpci::fuzz::VectorBackend;

constexpr vt::GuestAddress kRamBase = 0x10000;
constexpr std::size_t kRamSize = 0x10000;

struct Checker final : vp::InterruptOutput {
  vpp::VirtioPciFunction* function = nullptr;
  vp::MsixTableOwner owner = vp::MsixTableOwner::kFunction;
  bool intx = false;
  void set_intx_level(bool asserted) override {
    check(asserted != intx);  // called on changes only
    intx = asserted;
  }
  void signal_msix(std::uint16_t vector, std::uint64_t, std::uint32_t) override {
    const auto* msix = function->msix();
    check(msix != nullptr && msix->enabled() && vector < msix->vector_count());
    if (owner == vp::MsixTableOwner::kFunction) {
      check(!msix->function_masked() && !msix->vector_masked(vector));
    }
  }
};

std::vector<std::pair<std::uint16_t, std::uint16_t>> capability_list(
    std::span<const std::uint8_t> config) {
  std::vector<std::pair<std::uint16_t, std::uint16_t>> list;
  const auto scan = vp::scan_capabilities(config);
  for (const auto& d : scan.diagnostics) check(d.severity != vp::Severity::kError);
  for (const auto& c : scan.capabilities) list.emplace_back(c.offset, c.id);
  return list;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::size_t pos = 0;
  auto take = [&](std::size_t n) {
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < n; ++i)
      v |= std::uint64_t{pos < size ? data[pos++] : 0u} << (8 * i);
    return v;
  };
  const unsigned selector = static_cast<unsigned>(take(1)) % 5;
  const unsigned flags = static_cast<unsigned>(take(1));

  auto memory = std::make_shared<vt::GuestMemory>();
  std::vector<std::uint8_t> ram(kRamSize);
  vt::MemoryRegionSpec region;
  region.guest_address = kRamBase;
  region.size = kRamSize;
  region.host = ram.data();
  check(memory->add_region(std::move(region)).has_value());

  std::unique_ptr<vt::Device> device;
  if (flags & 1) {
    devices::BlockDeviceOptions options;
    options.queue_size = 16;
    auto blk = devices::BlockDevice::create(std::make_unique<VectorBackend>(), options);
    check(blk.has_value());
    device = std::move(*blk);
  } else {
    devices::RngDeviceOptions options;
    options.queue_size = 16;
    options.max_bytes_per_request = 256;
    device = std::make_unique<devices::RngDevice>(options, std::make_unique<CountingEntropy>());
  }
  vpp::VirtioPciOptions options;
  static constexpr std::array<vpp::TransportKind, 5> kKinds = {
      vpp::TransportKind::kModern, vpp::TransportKind::kTransitional, vpp::TransportKind::kLegacy,
      vpp::TransportKind::kTransitionalMmr, vpp::TransportKind::kTransitionalMmr};
  options.kind = kKinds[selector];
  options.msix_owner = (flags & 2) ? vp::MsixTableOwner::kBus : vp::MsixTableOwner::kFunction;
  static constexpr std::array<std::uint32_t, 4> kMultipliers = {4, 0, 0x1000, 2};
  options.notify_off_multiplier = kMultipliers[(flags >> 2) & 3];
  if (flags & 0x10) options.msix_vectors = 0;
  auto created = vpp::VirtioPciFunction::create(std::move(device), memory, options);
  check(created.has_value());
  vpp::VirtioPciFunction* function = created->get();
  std::unique_ptr<vpp::VirtioPciFunction> owned = std::move(*created);
  std::unique_ptr<vpp::LegacyIoMapper> mapper;
  vp::Function* bus = function;
  if (selector == 4) {
    auto wrapped = vpp::LegacyIoMapper::create(std::move(owned));
    check(wrapped.has_value());
    mapper = std::move(*wrapped);
    bus = mapper.get();
  }
  Checker checker;
  checker.function = function;
  checker.owner = options.msix_owner;
  bus->set_interrupt_output(&checker);

  const std::uint32_t config_size = bus->config_size();
  std::vector<std::uint8_t> config(config_size);
  check(bus->config_read(0, config).has_value());
  const auto initial_caps = capability_list(config);
  const auto& layout = function->layout();

  static constexpr std::array<unsigned, 8> kWidths = {1, 2, 4, 8, 3, 0, 16, 2};
  static constexpr std::array<std::pair<std::uint32_t, unsigned>, 20> kCommon = {
      {{0x00, 4}, {0x04, 4}, {0x08, 4}, {0x0C, 4}, {0x10, 2}, {0x12, 2}, {0x14, 1},
       {0x15, 1}, {0x16, 2}, {0x18, 2}, {0x1A, 2}, {0x1C, 2}, {0x1E, 2}, {0x20, 4},
       {0x24, 4}, {0x28, 8}, {0x30, 4}, {0x34, 4}, {0x3A, 2}, {0x38, 2}}};
  static constexpr std::array<std::pair<std::uint32_t, unsigned>, 12> kLegacy = {{{0, 4},
                                                                                  {4, 4},
                                                                                  {8, 4},
                                                                                  {12, 2},
                                                                                  {14, 2},
                                                                                  {16, 2},
                                                                                  {18, 1},
                                                                                  {19, 1},
                                                                                  {20, 2},
                                                                                  {22, 2},
                                                                                  {24, 1},
                                                                                  {26, 2}}};

  for (int ops = 0; pos < size && ops < 512; ++ops) {
    const auto op = static_cast<std::uint8_t>(take(1));
    const unsigned width = kWidths[(op >> 3) & 7];
    const std::uint8_t status_before = function->core().status();
    std::uint64_t written = 0;
    bool wrote = false;
    std::vector<std::uint8_t> buffer(width);
    switch (op & 7) {
      case 0: {
        const auto offset = static_cast<std::uint32_t>(take(2) & 0x1FFF);
        const bool inside = offset + width <= config_size;
        const auto result = bus->config_read(offset, buffer);
        check(result.has_value() == inside || (width == 0 && offset <= config_size));
        break;
      }
      case 1: {
        const auto offset = static_cast<std::uint32_t>(take(2) & 0x1FFF);
        written = take(8);
        wrote = true;
        for (unsigned i = 0; i < width; ++i)
          buffer[i] = static_cast<std::uint8_t>(written >> (8 * (i % 8)));
        (void)bus->config_write(offset, buffer);
        break;
      }
      case 2: {
        const auto bar = static_cast<unsigned>(take(1) % 7);
        const std::uint64_t offset = take(3);
        (void)bus->bar_read(bar, offset, buffer);
        break;
      }
      case 3: {
        const auto bar = static_cast<unsigned>(take(1) % 7);
        const std::uint64_t offset = take(3);
        written = take(8);
        wrote = true;
        for (unsigned i = 0; i < width; ++i)
          buffer[i] = static_cast<std::uint8_t>(written >> (8 * (i % 8)));
        (void)bus->bar_write(bar, offset, buffer);
        break;
      }
      case 4:
        bus->reset();
        check(function->core().status() == 0);
        break;
      case 5: {
        const auto [offset, field_width] = kCommon[take(1) % kCommon.size()];
        written = take(8);
        wrote = true;
        std::vector<std::uint8_t> bytes(field_width);
        for (unsigned i = 0; i < field_width; ++i)
          bytes[i] = static_cast<std::uint8_t>(written >> (8 * i));
        (void)bus->bar_write(vpp::VirtioPciLayout::kMemoryBar,
                             vpp::VirtioPciLayout::kCommonOffset + offset, bytes);
        break;
      }
      case 6: {
        const auto [offset, reg_width] = kLegacy[take(1) % kLegacy.size()];
        written = take(8);
        wrote = true;
        std::vector<std::uint8_t> bytes(reg_width);
        for (unsigned i = 0; i < reg_width; ++i)
          bytes[i] = static_cast<std::uint8_t>(written >> (8 * i));
        if (layout.legacy_window_offset && selector != 4) {
          (void)bus->bar_write(vpp::VirtioPciLayout::kMemoryBar,
                               *layout.legacy_window_offset + offset, bytes);
        } else {
          if (selector == 4) {
            // The mapper needs Command.I/O before it decodes BAR0.
            const std::array<std::uint8_t, 2> command = {
                vp::command::kIoSpace | vp::command::kMemorySpace, 0};
            (void)bus->config_write(vp::reg::kCommand, command);
          }
          (void)bus->bar_write(0, offset, bytes);
        }
        break;
      }
      default: {
        const std::size_t at = take(2) % kRamSize;
        const std::size_t length = take(1) % 64;
        for (std::size_t i = 0; i < length && at + i < kRamSize; ++i)
          ram[at + i] = static_cast<std::uint8_t>(take(1));
        break;
      }
    }

    // ---- invariants ----
    check(bus->config_read(0, config).has_value());
    check(capability_list(config) == initial_caps);
    const std::uint8_t status_after = function->core().status();
    if (status_after != 0) {
      std::uint8_t allowed = status_before | vt::status::kDeviceNeedsReset;
      for (unsigned i = 0; wrote && i < 8; ++i)
        allowed |= static_cast<std::uint8_t>(written >> (8 * i));
      check((status_after & ~allowed) == 0);
      if (function->core().driver_interface() == vt::DriverInterface::kModern &&
          (status_after & vt::status::kDriverOk) != 0) {
        check((status_after & vt::status::kFeaturesOk) != 0);
      }
      if (function->core().driver_interface() == vt::DriverInterface::kLegacy) {
        check((status_after & vt::status::kFeaturesOk) == 0);
      }
    }
    const bool msix_on = function->msix() && function->msix()->enabled();
    const std::uint16_t command = function->config_space().raw16(vp::reg::kCommand);
    const bool expect_intx =
        function->isr() != 0 && !msix_on && (command & vp::command::kInterruptDisable) == 0;
    check(function->intx_asserted() == expect_intx);
    check(checker.intx == expect_intx);
  }
  return 0;
}
