// Little-endian reads from the readable bytes of a config space (PCI Local Bus 3.0
// §6.1). A byte beyond the readable ones reads 0xFF, as a read of a register that does
// not respond (a master abort) does, so callers check lengths only where the
// difference matters.
#pragma once

#include <array>
#include <cstdint>
#include <span>

#include "base/little_endian.h"

namespace vpci::pci {

inline std::uint8_t config_byte(std::span<const std::uint8_t> config, std::uint32_t offset) {
  return offset < config.size() ? config[offset] : 0xFF;
}

// True when [offset, offset + length) is readable.
inline bool config_readable(std::span<const std::uint8_t> config, std::uint32_t offset,
                            std::uint32_t length) {
  return static_cast<std::uint64_t>(offset) + length <= config.size();
}

// A register of type T at `offset`; bytes past the readable ones read 0xFF each.
template <typename T>
T config_read(std::span<const std::uint8_t> config, std::uint32_t offset) {
  if (config_readable(config, offset, sizeof(T))) return load_le<T>(config.subspan(offset));
  std::array<std::uint8_t, sizeof(T)> bytes;
  for (std::uint32_t i = 0; i < sizeof(T); ++i) bytes[i] = config_byte(config, offset + i);
  return load_le<T>(bytes);
}

inline std::uint16_t config_word(std::span<const std::uint8_t> config, std::uint32_t offset) {
  return config_read<std::uint16_t>(config, offset);
}

inline std::uint32_t config_dword(std::span<const std::uint8_t> config, std::uint32_t offset) {
  return config_read<std::uint32_t>(config, offset);
}

}  // namespace vpci::pci
