#include "pci/capability_decode.h"

#include "pci/capability_registers.h"
#include "pci/config_bytes.h"

namespace vpci::pci {

std::optional<MsiDecode> decode_msi(std::span<const std::uint8_t> config, std::uint32_t offset) {
  const std::uint16_t control = config_word(config, offset + msi::kControl);
  MsiDecode d;
  d.enabled = (control & msi::kEnable) != 0;
  d.address_64bit = (control & msi::kAddress64) != 0;
  d.per_vector_masking = (control & msi::kPerVectorMasking) != 0;
  d.vectors_capable =
      1u << ((control & msi::kMultipleMessageCapableMask) >> msi::kMultipleMessageCapableShift);
  d.vectors_enabled =
      1u << ((control & msi::kMultipleMessageEnableMask) >> msi::kMultipleMessageEnableShift);
  std::uint32_t size = msi::kSize32;
  if (d.address_64bit) size += msi::kAddress64Extra;
  if (d.per_vector_masking) size += msi::kMaskingExtra;
  if (!config_readable(config, offset, size)) return std::nullopt;
  d.address = config_dword(config, offset + msi::kAddressLow);
  if (d.address_64bit) {
    d.address |= static_cast<std::uint64_t>(config_dword(config, offset + msi::kAddressHigh)) << 32;
  }
  d.data = config_word(config, offset + (d.address_64bit ? msi::kData64 : msi::kData32));
  if (d.per_vector_masking) {
    d.mask_bits = config_dword(config, offset + (d.address_64bit ? msi::kMask64 : msi::kMask32));
    d.pending_bits =
        config_dword(config, offset + (d.address_64bit ? msi::kPending64 : msi::kPending32));
  }
  return d;
}

std::optional<MsixDecode> decode_msix(std::span<const std::uint8_t> config, std::uint32_t offset) {
  if (!config_readable(config, offset, msix::kSize)) return std::nullopt;
  const std::uint16_t control = config_word(config, offset + msix::kControl);
  const std::uint32_t table = config_dword(config, offset + msix::kTable);
  const std::uint32_t pba = config_dword(config, offset + msix::kPba);
  MsixDecode d;
  d.enabled = (control & msix::kEnable) != 0;
  d.function_mask = (control & msix::kFunctionMask) != 0;
  d.table_size = (control & msix::kTableSizeMask) + 1u;
  d.table_bir = static_cast<std::uint8_t>(table & msix::kBirMask);
  d.table_offset = table & msix::kOffsetMask;
  d.pba_bir = static_cast<std::uint8_t>(pba & msix::kBirMask);
  d.pba_offset = pba & msix::kOffsetMask;
  return d;
}

std::optional<DvsecDecode> decode_dvsec(std::span<const std::uint8_t> config,
                                        std::uint32_t offset) {
  if (!config_readable(config, offset, dvsec::kMinimumLength)) return std::nullopt;
  const std::uint32_t header1 = config_dword(config, offset + dvsec::kHeader1);
  DvsecDecode d;
  d.vendor_id = static_cast<std::uint16_t>(header1 & dvsec::kVendorMask);
  d.revision = static_cast<std::uint8_t>((header1 >> dvsec::kRevisionShift) & dvsec::kRevisionMask);
  d.length = static_cast<std::uint16_t>(header1 >> dvsec::kLengthShift);
  d.id = config_word(config, offset + dvsec::kHeader2);
  return d;
}

}  // namespace vpci::pci
