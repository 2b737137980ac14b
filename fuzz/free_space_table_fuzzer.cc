// Fuzzes the per-device free-space table reader (pci/free_space_table.h) with arbitrary
// TOML text. (placement_fuzzer only feeds it tables it generates itself.) Invariants:
//   * nothing escapes as an exception; an error names the file and says something;
//   * every range of an accepted table is non-empty, DWORD aligned, inside
//     [0x100, 0x1000), in extended space, and the ranges of one entry are sorted and
//     do not overlap (placement relies on all of this without re-checking);
//   * no two entries name the same device, and subsystem IDs come in pairs;
//   * every key prints back to text that parses to the same key, and lookup() finds
//     each entry by its own key.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <string_view>

#include "fuzz/fuzz_support.h"
#include "pci/free_space_table.h"

namespace {

using namespace vpci::pci;

constexpr std::string_view kSource = "fuzz-table.toml";

void run(std::string_view text) {
  auto table = parse_free_space_table(text, std::string(kSource));
  if (!table) {
    FUZZ_CHECK(!table.error().message.empty());
    FUZZ_CHECK(table.error().message.find(kSource) != std::string::npos);
    return;
  }
  for (std::size_t i = 0; i < table->entries.size(); ++i) {
    const FreeSpaceTableEntry& entry = table->entries[i];
    FUZZ_CHECK(entry.key.subsystem_vendor.has_value() == entry.key.subsystem_device.has_value());
    for (std::size_t j = 0; j < i; ++j) FUZZ_CHECK(!(table->entries[j].key == entry.key));
    std::uint32_t previous_end = 0x100;
    for (const ConfigRange& range : entry.free) {
      FUZZ_CHECK(range.space == CapabilitySpace::kExtended);
      FUZZ_CHECK(range.begin < range.end);
      FUZZ_CHECK(range.begin % 4 == 0 && range.end % 4 == 0);
      FUZZ_CHECK(range.begin >= previous_end && range.end <= 0x1000);
      previous_end = range.end;
    }
    auto reparsed = parse_device_key(entry.key.to_string());
    FUZZ_CHECK(reparsed.has_value() && *reparsed == entry.key);
    const FreeSpaceTableEntry* found = table->lookup(
        entry.key.vendor, entry.key.device, entry.key.subsystem_vendor, entry.key.subsystem_device);
    FUZZ_CHECK(found == &entry);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    run(std::string_view(reinterpret_cast<const char*>(data), size));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "exception escaped: %s\n", e.what());
    std::abort();
  } catch (...) {
    std::fprintf(stderr, "unknown exception escaped\n");
    std::abort();
  }
  return 0;
}
