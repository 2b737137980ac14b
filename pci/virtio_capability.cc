#include "pci/virtio_capability.h"

#include "base/little_endian.h"
#include "pci/registers.h"

namespace vpci::pci {
std::string_view virtio_cfg_type_name(std::uint8_t cfg_type) {
  switch (cfg_type) {
    case 1: return "common";
    case 2: return "notify";
    case 3: return "isr";
    case 4: return "device";
    case 5: return "pci-cfg";
    case 8: return "shared-memory";
    case 9: return "vendor";
    default: return "unknown";
  }
}

std::optional<VirtioCapabilityFields> decode_virtio_capability(std::span<const std::uint8_t> config,
                                                               std::uint32_t offset) {
  constexpr std::uint32_t kMinimumLength = 16;  // struct virtio_pci_cap
  if (config.size() < 4 || config[0] != (kVirtioVendorId & 0xFF) ||
      config[1] != (kVirtioVendorId >> 8)) {
    return std::nullopt;
  }
  if (offset + kMinimumLength > config.size() ||
      offset + kMinimumLength > kConventionalConfigSize) {
    return std::nullopt;
  }
  VirtioCapabilityFields fields;
  fields.cap_len = config[offset + 2];
  fields.cfg_type = config[offset + 3];
  if (fields.cfg_type == 9) {
    // virtio_pci_vndr_data: {vndr, next, len, cfg_type, le16 vendor_id, ...}
    fields.vendor_id = load_le<std::uint16_t>(config.subspan(offset + 4));
    return fields;
  }
  if (fields.cap_len < kMinimumLength) return std::nullopt;
  fields.bar = config[offset + 4];
  fields.id = config[offset + 5];
  fields.offset = load_le<std::uint32_t>(config.subspan(offset + 8));
  fields.length = load_le<std::uint32_t>(config.subspan(offset + 12));
  const std::uint32_t end = offset + fields.cap_len;
  if (fields.cfg_type == 2 && fields.cap_len >= 20 && end <= config.size()) {
    fields.notify_off_multiplier = load_le<std::uint32_t>(config.subspan(offset + 16));
  }
  if (fields.cfg_type == 8 && fields.cap_len >= 24 && end <= config.size()) {
    fields.offset |= static_cast<std::uint64_t>(load_le<std::uint32_t>(config.subspan(offset + 16)))
                     << 32;
    fields.length |= static_cast<std::uint64_t>(load_le<std::uint32_t>(config.subspan(offset + 20)))
                     << 32;
  }
  return fields;
}

}  // namespace vpci::pci
