#include "pci/header_decode.h"

#include "pci/capability_registers.h"
#include "pci/config_bytes.h"
#include "pci/registers.h"

namespace vpci::pci {
namespace {

std::uint8_t header_layout(std::span<const std::uint8_t> config) {
  return config_byte(config, reg::kHeaderType) & header_type::kLayoutMask;
}

BarKind memory_kind(std::uint32_t raw) {
  switch (raw & bar::kMemoryTypeMask) {
    case bar::kMemoryType32: return BarKind::kMemory32;
    case bar::kMemoryTypeBelow1M: return BarKind::kMemoryBelow1M;
    case bar::kMemoryType64: return BarKind::kMemory64;
    default: return BarKind::kMemoryReserved;
  }
}

// I/O window (PCI-to-PCI Bridge 1.2 §3.2.5.6): 4 KiB granular, 16 or 32 address bits.
BridgeWindow io_window(std::span<const std::uint8_t> c) {
  BridgeWindow w;
  const std::uint8_t base = config_byte(c, reg::kIoBase);
  const std::uint8_t limit = config_byte(c, reg::kIoLimit);
  w.raw_base = base;
  w.raw_limit = limit;
  const std::uint8_t type = base & bridge::kIoTypeMask;
  if (type != (limit & bridge::kIoTypeMask) ||
      (type != bridge::kIoType16 && type != bridge::kIoType32)) {
    w.type_known = false;
    return w;
  }
  w.base = static_cast<std::uint64_t>(base & bridge::kIoAddressMask) << bridge::kIoAddressShift;
  w.limit = static_cast<std::uint64_t>(limit & bridge::kIoAddressMask) << bridge::kIoAddressShift;
  w.bits = 16;
  if (type == bridge::kIoType32) {
    w.base |= static_cast<std::uint64_t>(config_word(c, reg::kIoBaseUpper)) << 16;
    w.limit |= static_cast<std::uint64_t>(config_word(c, reg::kIoLimitUpper)) << 16;
    w.bits = 32;
  }
  w.limit += bridge::kIoGranularity - 1;
  return w;
}

// Memory and prefetchable windows (§3.2.5.8, §3.2.5.9): 1 MiB granular; only the
// prefetchable one may have 64 address bits.
BridgeWindow memory_window(std::span<const std::uint8_t> c, bool prefetchable) {
  BridgeWindow w;
  const std::uint16_t base = config_word(c, prefetchable ? reg::kPrefetchBase : reg::kMemoryBase);
  const std::uint16_t limit =
      config_word(c, prefetchable ? reg::kPrefetchLimit : reg::kMemoryLimit);
  w.raw_base = base;
  w.raw_limit = limit;
  const std::uint16_t type = base & bridge::kMemoryTypeMask;
  const bool type_64 = prefetchable && type == bridge::kMemoryType64;
  if (type != (limit & bridge::kMemoryTypeMask) || (type != bridge::kMemoryType32 && !type_64)) {
    w.type_known = false;
    return w;
  }
  w.base = static_cast<std::uint64_t>(base & bridge::kMemoryAddressMask)
           << bridge::kMemoryAddressShift;
  w.limit = static_cast<std::uint64_t>(limit & bridge::kMemoryAddressMask)
            << bridge::kMemoryAddressShift;
  w.bits = 32;
  if (type_64) {
    w.base |= static_cast<std::uint64_t>(config_dword(c, reg::kPrefetchBaseUpper)) << 32;
    w.limit |= static_cast<std::uint64_t>(config_dword(c, reg::kPrefetchLimitUpper)) << 32;
    w.bits = 64;
  }
  w.limit += bridge::kMemoryGranularity - 1;
  return w;
}

}  // namespace

std::string_view bar_kind_name(BarKind kind) {
  switch (kind) {
    case BarKind::kIo: return "io";
    case BarKind::kMemory32: return "mem32";
    case BarKind::kMemory64: return "mem64";
    case BarKind::kMemoryBelow1M: return "mem1m";
    case BarKind::kMemoryReserved: return "mem-reserved";
  }
  return "mem-reserved";
}

std::vector<BarDecode> decode_bars(std::span<const std::uint8_t> config,
                                   const std::array<std::optional<std::uint64_t>, 6>& sizes) {
  std::vector<BarDecode> bars;
  if (!config_readable(config, 0, kHeaderSize)) return bars;
  const std::uint8_t layout = header_layout(config);
  const unsigned count = layout == header_type::kEndpoint  ? kEndpointBarCount
                         : layout == header_type::kBridge  ? kBridgeBarCount
                         : layout == header_type::kCardbus ? kCardbusBarCount
                                                           : 0;
  for (unsigned i = 0; i < count; ++i) {
    const std::uint32_t raw = config_dword(config, reg::kBar0 + 4 * i);
    if ((raw == 0 || raw == 0xFFFFFFFF) && !sizes[i]) continue;
    BarDecode b;
    b.index = i;
    b.raw = raw;
    b.size = sizes[i];
    if (raw & bar::kIoSpaceFlag) {
      b.kind = BarKind::kIo;
      b.address = raw & ~bar::kIoFlagsMask;
    } else {
      b.kind = memory_kind(raw);
      b.prefetchable = (raw & bar::kPrefetchable) != 0;
      b.address = raw & ~bar::kMemoryFlagsMask;
      if (b.kind == BarKind::kMemory64) {
        if (i + 1 < count) {
          b.raw_upper = config_dword(config, reg::kBar0 + 4 * (i + 1));
          b.address |= static_cast<std::uint64_t>(*b.raw_upper) << 32;
          ++i;  // the upper half is no BAR of its own
        } else {
          b.upper_missing = true;
        }
      }
    }
    bars.push_back(b);
  }
  return bars;
}

std::optional<BridgeDecode> decode_bridge(std::span<const std::uint8_t> config) {
  if (!config_readable(config, 0, kHeaderSize)) return std::nullopt;
  const std::uint8_t layout = header_layout(config);
  if (layout != header_type::kBridge && layout != header_type::kCardbus) return std::nullopt;
  BridgeDecode d;
  d.primary_bus = config[reg::kPrimaryBus];
  d.secondary_bus = config[reg::kSecondaryBus];
  d.subordinate_bus = config[reg::kSubordinateBus];
  d.secondary_latency = config[reg::kSecondaryLatency];
  if (layout == header_type::kBridge) {
    d.io = io_window(config);
    d.memory = memory_window(config, false);
    d.prefetchable = memory_window(config, true);
  }
  return d;
}

std::optional<SubsystemIds> decode_subsystem(std::span<const std::uint8_t> config,
                                             const CapabilityScan& scan) {
  if (!config_readable(config, 0, kHeaderSize)) return std::nullopt;
  std::uint32_t vendor_at = 0;
  std::uint32_t device_at = 0;
  switch (header_layout(config)) {
    case header_type::kEndpoint:
      vendor_at = reg::kSubsystemVendorId;
      device_at = reg::kSubsystemId;
      break;
    case header_type::kBridge:
      for (const auto& cap : scan.capabilities) {
        if (cap.space == CapabilitySpace::kStandard && cap.id == cap_id::kBridgeSubsystemVendorId) {
          vendor_at = cap.offset + ssvid::kVendorId;
          device_at = cap.offset + ssvid::kSubsystemId;
          break;
        }
      }
      if (vendor_at == 0) return std::nullopt;
      break;
    case header_type::kCardbus:
      vendor_at = reg::kCardbusSubsystemVendorId;
      device_at = reg::kCardbusSubsystemId;
      break;
    default: return std::nullopt;
  }
  if (!config_readable(config, device_at, 2)) return std::nullopt;
  return SubsystemIds{config_word(config, vendor_at), config_word(config, device_at)};
}

}  // namespace vpci::pci
