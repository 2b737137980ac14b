// Decoding of virtio-pci vendor capabilities (virtio 1.3 §4.1.4) found in a config
// space. Lives in pci/ because `vpci inspect` decodes real devices without any
// virtio device model; the virtio transports build these structures themselves.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

namespace vpci::pci {

inline constexpr std::uint16_t kVirtioVendorId = 0x1AF4;

struct VirtioCapabilityFields {
  std::uint8_t cfg_type = 0;
  std::uint8_t bar = 0;
  std::uint8_t id = 0;
  std::uint8_t cap_len = 0;
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
  std::optional<std::uint32_t> notify_off_multiplier;  // cfg_type 2
  std::optional<std::uint16_t> vendor_id;              // cfg_type 9
};

// "common", "notify", "isr", "device", "pci-cfg", "shared-memory", "vendor", or
// "unknown".
std::string_view virtio_cfg_type_name(std::uint8_t cfg_type);

// Decodes the vendor capability at `offset` of `config` when the function is a virtio
// device (vendor 0x1AF4) and the capability is long enough; nullopt otherwise.
std::optional<VirtioCapabilityFields> decode_virtio_capability(std::span<const std::uint8_t> config,
                                                               std::uint32_t offset);

}  // namespace vpci::pci
