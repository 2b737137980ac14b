// Fuzzes the dump readers and the capability walker with arbitrary bytes: as lspci
// text, and as a raw config file. Invariants beyond "no crash":
//   * the walker reports only capabilities whose 4-byte header is readable, visits
//     each offset at most once, and stays within its bounded number of steps;
//   * free ranges never overlap a reported capability;
//   * writing a parsed device and parsing it again gives the same bytes.
#include <cstdint>
#include <cstdlib>
#include <set>
#include <string_view>

#include "pci/capabilities.h"
#include "pci/dump.h"

namespace {

void check(bool condition) {
  if (!condition) std::abort();
}

void check_scan(std::span<const std::uint8_t> config) {
  using vpci::pci::CapabilitySpace;
  const auto scan = vpci::pci::scan_capabilities(config);
  std::set<std::pair<int, int>> seen;
  for (const auto& cap : scan.capabilities) {
    check(cap.offset + 4u <= config.size());
    check(seen.insert({static_cast<int>(cap.space), cap.offset}).second);
    if (cap.space == CapabilitySpace::kStandard) check(cap.offset < 0x100);
  }
  check(scan.capabilities.size() <= 64 + 1024);
  const std::uint32_t space_size = config.size() > 256 ? 4096 : 256;
  if (config.size() < 0x40) return;
  for (const auto& range : vpci::pci::free_ranges(scan, space_size)) {
    check(range.begin < range.end);
    for (const auto& cap : scan.capabilities) {
      if (cap.space != range.space) continue;
      check(!(cap.offset >= range.begin && cap.offset < range.end));
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  if (auto devices = vpci::pci::parse_lspci_text(text)) {
    for (const auto& device : *devices) {
      check(device.config.size() <= 4096);
      check_scan(device.config);
      const std::string written = vpci::pci::format_lspci_dump(device.address, device.config);
      auto again = vpci::pci::parse_lspci_text(written);
      check(again.has_value() && again->size() == 1 && (*again)[0].config == device.config);
    }
  }
  if (auto raw = vpci::pci::parse_raw_config({data, size})) check_scan(raw->config);
  return 0;
}
