// Decoding of the configuration header as `lspci -vvv` shows it: the BARs, a type 1
// header's bus numbers and forwarding windows, and the subsystem IDs. Pure functions
// of the readable bytes (a truncated dump decodes what it holds); `vpci inspect`
// renders the results (tools/device_decode.h).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "pci/capabilities.h"

namespace vpci::pci {

// The memory type of a BAR (PCI Local Bus 3.0 §6.2.5.1): "io", "mem32", "mem64",
// "mem1m" (PCI 2.x "below 1M", type 01b) or "mem-reserved" (type 11b).
enum class BarKind : std::uint8_t { kIo, kMemory32, kMemory64, kMemoryBelow1M, kMemoryReserved };
std::string_view bar_kind_name(BarKind kind);

struct BarDecode {
  unsigned index = 0;
  BarKind kind = BarKind::kMemory32;
  bool prefetchable = false;
  std::uint64_t address = 0;  // flag bits cleared; both halves of a 64-bit BAR
  std::uint32_t raw = 0;
  std::optional<std::uint32_t> raw_upper;  // 64-bit: the next BAR register
  bool upper_missing = false;              // 64-bit in the last BAR register: no upper half
  std::optional<std::uint64_t> size;       // when the source knows it (sysfs)
};

// The BARs of a type 0 (6 registers), type 1 (2) or CardBus (1) header, in order, the upper half of
// a 64-bit BAR folded into its lower one. Registers reading 0 or all-ones are left out,
// as lspci does (nothing assigned, or no function), unless the source knows a size for
// them. `sizes` are per register index.
std::vector<BarDecode> decode_bars(std::span<const std::uint8_t> config,
                                   const std::array<std::optional<std::uint64_t>, 6>& sizes);

// One forwarding window of a type 1 header, with `limit` inclusive.
struct BridgeWindow {
  // False when base and limit disagree on the addressing type or use a reserved one
  // (lspci: "!!! Unknown ... range types"); then only the raw registers mean anything.
  bool type_known = true;
  std::uint64_t base = 0;
  std::uint64_t limit = 0;
  unsigned bits = 0;  // address width: I/O 16 or 32, memory 32, prefetchable 32 or 64
  std::uint32_t raw_base = 0;
  std::uint32_t raw_limit = 0;
  // A window forwards nothing when its base is above its limit.
  [[nodiscard]] bool open() const { return type_known && base <= limit; }
};

struct BridgeDecode {
  std::uint8_t primary_bus = 0;
  std::uint8_t secondary_bus = 0;
  std::uint8_t subordinate_bus = 0;
  std::uint8_t secondary_latency = 0;
  // Type 1 only: a CardBus bridge's windows are registers of another layout.
  std::optional<BridgeWindow> io;
  std::optional<BridgeWindow> memory;
  std::optional<BridgeWindow> prefetchable;
};

// The bus numbers of a type 1 or CardBus header and a type 1 header's windows; nullopt
// for other header types or when the 64-byte header is not readable.
std::optional<BridgeDecode> decode_bridge(std::span<const std::uint8_t> config);

struct SubsystemIds {
  std::uint16_t vendor_id = 0;
  std::uint16_t device_id = 0;
};

// The subsystem IDs where the header type keeps them, as libpci reads them: type 0 at
// 0x2C, type 1 in the Bridge Subsystem Vendor ID capability (the first in `scan`),
// type 2 at 0x40. nullopt when there are none or they are not readable. A vendor ID
// of 0 or 0xFFFF means "none given" (lspci then prints no Subsystem line).
std::optional<SubsystemIds> decode_subsystem(std::span<const std::uint8_t> config,
                                             const CapabilityScan& scan);

}  // namespace vpci::pci
