// Small helpers shared by the files that implement VirtioPciFunction
// (virtio_pci_function.cc: accesses and state; virtio_pci_build.cc: layout and
// capabilities; virtio_pci_registers.cc: the register files). Internal to virtio/pci.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>

#include "base/error.h"
#include "base/little_endian.h"
#include "virtio/pci/registers.h"

namespace vpci::virtio::pci::detail {

inline constexpr std::uint64_t kPage = 0x1000;
inline constexpr std::uint64_t kMaxNotifyRegion = 16u
                                                  << 20;  // keeps the BAR sane for any multiplier
inline constexpr std::uint32_t kMaxLegacyDeviceConfig = 256 - legacy::kConfigOffsetMsix;

inline std::uint64_t round_up(std::uint64_t value, std::uint64_t align) {
  return (value + align - 1) / align * align;
}

inline bool valid_width(std::size_t size) {
  return size == 1 || size == 2 || size == 4 || size == 8;
}

inline Status refuse_read(std::span<std::uint8_t> data, Error error) {
  std::fill(data.begin(), data.end(), 0xFF);
  return tl::unexpected(std::move(error));
}

}  // namespace vpci::virtio::pci::detail
