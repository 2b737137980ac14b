#include "pci/virtio_capability.h"

#include "pci/registers.h"

namespace vpci::pci {
namespace {

std::uint32_t le32(std::span<const std::uint8_t> c, std::uint32_t off) {
  return static_cast<std::uint32_t>(c[off]) | (static_cast<std::uint32_t>(c[off + 1]) << 8) |
         (static_cast<std::uint32_t>(c[off + 2]) << 16) |
         (static_cast<std::uint32_t>(c[off + 3]) << 24);
}

}  // namespace

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
    fields.vendor_id = static_cast<std::uint16_t>(config[offset + 4] | (config[offset + 5] << 8));
    return fields;
  }
  if (fields.cap_len < kMinimumLength) return std::nullopt;
  fields.bar = config[offset + 4];
  fields.id = config[offset + 5];
  fields.offset = le32(config, offset + 8);
  fields.length = le32(config, offset + 12);
  const std::uint32_t end = offset + fields.cap_len;
  if (fields.cfg_type == 2 && fields.cap_len >= 20 && end <= config.size()) {
    fields.notify_off_multiplier = le32(config, offset + 16);
  }
  if (fields.cfg_type == 8 && fields.cap_len >= 24 && end <= config.size()) {
    fields.offset |= static_cast<std::uint64_t>(le32(config, offset + 16)) << 32;
    fields.length |= static_cast<std::uint64_t>(le32(config, offset + 20)) << 32;
  }
  return fields;
}

}  // namespace vpci::pci
