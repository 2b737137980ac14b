// Little-endian reads from the readable bytes of a config space (PCI Local Bus 3.0
// §6.1). A byte beyond the readable ones reads 0xFF, as a read of a register that does
// not respond (a master abort) does, so callers check lengths only where the
// difference matters.
#pragma once

#include <cstdint>
#include <span>

namespace vpci::pci {

inline std::uint8_t config_byte(std::span<const std::uint8_t> config, std::uint32_t offset) {
  return offset < config.size() ? config[offset] : 0xFF;
}

inline std::uint16_t config_word(std::span<const std::uint8_t> config, std::uint32_t offset) {
  return static_cast<std::uint16_t>(config_byte(config, offset) |
                                    (config_byte(config, offset + 1) << 8));
}

inline std::uint32_t config_dword(std::span<const std::uint8_t> config, std::uint32_t offset) {
  return static_cast<std::uint32_t>(config_word(config, offset)) |
         (static_cast<std::uint32_t>(config_word(config, offset + 2)) << 16);
}

// True when [offset, offset + length) is readable.
inline bool config_readable(std::span<const std::uint8_t> config, std::uint32_t offset,
                            std::uint32_t length) {
  return static_cast<std::uint64_t>(offset) + length <= config.size();
}

}  // namespace vpci::pci
