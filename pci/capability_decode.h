// Decoding of the capabilities whose fields `lspci -vvv` prints and `vpci inspect`
// reports: MSI, MSI-X and the Designated Vendor-Specific header. Each decoder takes the
// readable bytes and the capability's offset, and returns nullopt when the structure
// is not readable in full (a truncated dump).
#pragma once

#include <cstdint>
#include <optional>
#include <span>

namespace vpci::pci {

// MSI (PCI Local Bus 3.0 §6.8.1).
struct MsiDecode {
  bool enabled = false;
  bool address_64bit = false;
  bool per_vector_masking = false;
  unsigned vectors_capable = 1;  // Multiple Message Capable, as a count
  unsigned vectors_enabled = 1;  // Multiple Message Enable, as a count
  std::uint64_t address = 0;
  std::uint16_t data = 0;
  std::optional<std::uint32_t> mask_bits;     // with per-vector masking
  std::optional<std::uint32_t> pending_bits;  // with per-vector masking
};
std::optional<MsiDecode> decode_msi(std::span<const std::uint8_t> config, std::uint32_t offset);

// MSI-X (PCIe Base 6.0 §7.7.2).
struct MsixDecode {
  bool enabled = false;
  bool function_mask = false;
  unsigned table_size = 1;  // entries (the register holds N-1)
  std::uint8_t table_bir = 0;
  std::uint32_t table_offset = 0;
  std::uint8_t pba_bir = 0;
  std::uint32_t pba_offset = 0;
};
std::optional<MsixDecode> decode_msix(std::span<const std::uint8_t> config, std::uint32_t offset);

// Designated Vendor-Specific Extended Capability header (PCIe Base 6.0 §7.9.6).
struct DvsecDecode {
  std::uint16_t vendor_id = 0;
  std::uint16_t id = 0;
  std::uint8_t revision = 0;
  std::uint16_t length = 0;  // bytes, including the capability header
};
std::optional<DvsecDecode> decode_dvsec(std::span<const std::uint8_t> config, std::uint32_t offset);

}  // namespace vpci::pci
