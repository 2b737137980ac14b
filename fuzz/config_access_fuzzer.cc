// Fuzzes guest access sequences and capability edits on a config space that has
// every kind of BAR, an expansion ROM and capabilities in both spaces. Invariants:
//   * in-range accesses of width 1/2/4 always succeed; others always fail;
//   * read-only identity registers never change through guest writes;
//   * BAR flag bits never change and address bits below the BAR size read 0;
//   * editing never corrupts the chains: every scan is free of error diagnostics.
#include <array>
#include <cstdint>
#include <cstdlib>

#include "pci/capabilities.h"
#include "pci/config_space.h"

namespace {

using namespace vpci::pci;

void check(bool condition) {
  if (!condition) std::abort();
}

ConfigSpace make_space() {
  HeaderIdentity ids{0x1AF4, 0x1042, 1, 0x010000, 0x1AF4, 0x1100, 1, false};
  ConfigSpace space = ConfigSpace::make_endpoint(kExtendedConfigSize, ids);
  check(space.define_bar(0, {BarType::kIo, 0x40, false}).has_value());
  check(space.define_bar(1, {BarType::kMemory32, 0x1000, false}).has_value());
  check(space.define_bar(2, {BarType::kMemory64, 0x4000, true}).has_value());
  check(space.define_expansion_rom(0x8000).has_value());
  std::array<std::uint8_t, 0x3A> express{};
  express[0] = 2;
  check(add_standard_capability(space, cap_id::kPciExpress, express).has_value());
  check(add_standard_capability(space, cap_id::kMsiX, std::array<std::uint8_t, 10>{}).has_value());
  check(add_extended_capability(space, ext_cap_id::kAts, 1, std::array<std::uint8_t, 4>{})
            .has_value());
  return space;
}

bool chains_well_formed(const ConfigSpace& space) {
  const auto scan = scan_capabilities(space.bytes());
  for (const auto& d : scan.diagnostics) {
    if (d.severity == Severity::kError) return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  ConfigSpace space = make_space();
  std::size_t pos = 0;
  auto take = [&](std::size_t n) {
    std::uint32_t v = 0;
    for (std::size_t i = 0; i < n; ++i) v = (v << 8) | (pos < size ? data[pos++] : 0);
    return v;
  };
  while (pos < size) {
    const std::uint8_t op = static_cast<std::uint8_t>(take(1));
    const std::uint32_t offset = take(2) & 0x1FFF;  // sometimes out of range
    const unsigned width = (op >> 4) & 7;
    switch (op & 0x7) {
      case 0:
      case 1: {
        auto value = space.read(offset, width);
        const bool valid = (width == 1 || width == 2 || width == 4) && offset + width <= 4096;
        check(value.has_value() == valid);
        break;
      }
      case 2:
      case 3: {
        const std::uint32_t value = take(4);
        const bool valid = (width == 1 || width == 2 || width == 4) && offset + width <= 4096;
        check(space.write(offset, width, value).has_value() == valid);
        break;
      }
      case 4: {
        const bool added = add_extended_capability(space, static_cast<std::uint16_t>(take(2)), 1,
                                                   std::array<std::uint8_t, 8>{},
                                                   static_cast<std::uint16_t>(offset & 0xFFF))
                               .has_value();
        (void)added;
        break;
      }
      case 5:
        (void)hide_capability(space,
                              (op & 8) ? CapabilitySpace::kExtended : CapabilitySpace::kStandard,
                              static_cast<std::uint16_t>(offset & 0xFFF));
        break;
      case 6:
        (void)add_standard_capability(space, static_cast<std::uint8_t>(take(1)),
                                      std::array<std::uint8_t, 6>{},
                                      static_cast<std::uint16_t>(offset & 0xFF));
        break;
      default: space.reset(); break;
    }
    check(space.raw32(0) == 0x10421AF4u);
    check(space.raw32(0x08) == 0x01000001u);
    check((space.raw32(0x10) & 0x3Fu) == 0x1u);    // I/O BAR of 0x40: flags + zero low bits
    check((space.raw32(0x14) & 0xFFFu) == 0x0u);   // 4 KiB memory BAR
    check((space.raw32(0x18) & 0x3FFFu) == 0xCu);  // 64-bit prefetchable 16 KiB
    check((space.raw32(0x30) & 0x7FFEu) == 0u);    // ROM: only enable below 32 KiB
    check(chains_well_formed(space));
  }
  return 0;
}
