#include "pci/pasid.h"

#include <charconv>
#include <vector>

#include "base/little_endian.h"
#include "base/split.h"

namespace vpci::pci {
namespace {}  // namespace

Result<std::uint64_t> parse_number(std::string_view text, std::uint64_t max) {
  int base = 10;
  std::string_view digits = text;
  if (digits.size() > 2 && digits[0] == '0' && (digits[1] == 'x' || digits[1] == 'X')) {
    base = 16;
    digits.remove_prefix(2);
  }
  std::uint64_t value = 0;
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value, base);
  // The limit is said in the base the user wrote the number in.
  const auto limit = [&] {
    return base == 16 ? fmt::format("{:#x}", max) : fmt::format("{}", max);
  };
  if (!digits.empty() && ec == std::errc::result_out_of_range) {
    return make_error(ErrorCode::kOutOfRange, "{} exceeds the maximum {}", text, limit());
  }
  if (digits.empty() || ec != std::errc() || end != digits.data() + digits.size()) {
    return make_error(ErrorCode::kInvalidArgument, "'{}' is not a number (decimal or 0x hex)",
                      text);
  }
  if (value > max)
    return make_error(ErrorCode::kOutOfRange, "{} exceeds the maximum {}", text, limit());
  return value;
}

Result<PasidFields> validate_pasid_fields(const PasidFields& fields) {
  if (fields.max_width > pasid::kMaxWidthLimit) {
    return make_error(ErrorCode::kInvalidArgument,
                      "Max PASID Width {} exceeds 20 (PCIe Base 6.0 §7.8.8.2: larger values are "
                      "reserved)",
                      fields.max_width);
  }
  return fields;
}

std::uint16_t pasid_capability_register(const PasidFields& fields) {
  std::uint16_t value = static_cast<std::uint16_t>((fields.max_width << pasid::kMaxWidthShift) &
                                                   pasid::kMaxWidthMask);
  if (fields.execute) value |= pasid::kExecuteSupported;
  if (fields.privileged) value |= pasid::kPrivilegedSupported;
  return value;
}

PasidFields decode_pasid_capability_register(std::uint16_t value) {
  return PasidFields{static_cast<unsigned>((value & pasid::kMaxWidthMask) >> pasid::kMaxWidthShift),
                     (value & pasid::kExecuteSupported) != 0,
                     (value & pasid::kPrivilegedSupported) != 0};
}

std::array<std::uint8_t, 4> pasid_body(const PasidFields& fields) {
  const std::uint16_t capability = pasid_capability_register(fields);
  // Control starts at 0: the guest driver enables PASID itself.
  std::array<std::uint8_t, 4> body{};
  store_le(std::span(body).first(2), capability);
  return body;
}

std::array<std::uint8_t, 4> pasid_body_write_mask() {
  std::array<std::uint8_t, 4> mask{};
  store_le(std::span(mask).subspan(2), pasid::kControlWritableMask);
  return mask;
}

Result<IommufdHwInfo> decode_iommu_hw_info(std::span<const std::uint8_t> bytes) {
  if (bytes.size() < iommufd::kHwInfoSize) {
    return make_error(ErrorCode::kMalformedInput,
                      "struct iommu_hw_info of {} bytes is shorter than the {} bytes that hold "
                      "out_capabilities",
                      bytes.size(), iommufd::kHwInfoSize);
  }
  const auto size = load_le<std::uint32_t>(bytes.subspan(iommufd::kSizeOffset));
  if (size < iommufd::kHwInfoSize) {
    return make_error(ErrorCode::kMalformedInput,
                      "iommu_hw_info.size is {}; out_capabilities needs at least {}", size,
                      iommufd::kHwInfoSize);
  }
  for (std::size_t i = 0; i < 3; ++i) {
    if (bytes[iommufd::kReservedOffset + i] != 0) {
      return make_error(ErrorCode::kMalformedInput,
                        "iommu_hw_info reserved byte {} is {:#04x}, not 0",
                        iommufd::kReservedOffset + i, bytes[iommufd::kReservedOffset + i]);
    }
  }
  return IommufdHwInfo{bytes[iommufd::kMaxPasidLog2Offset],
                       load_le<std::uint64_t>(bytes.subspan(iommufd::kCapabilitiesOffset))};
}

Result<PasidFields> pasid_from_iommufd(const IommufdHwInfo& info) {
  if (info.out_max_pasid_log2 == 0) {
    return make_error(ErrorCode::kUnsupported,
                      "iommufd reports no PASID support (out_max_pasid_log2 = 0); there is no "
                      "PASID capability to synthesize");
  }
  return validate_pasid_fields(
             PasidFields{info.out_max_pasid_log2,
                         (info.out_capabilities & iommufd::kCapPciPasidExec) != 0,
                         (info.out_capabilities & iommufd::kCapPciPasidPriv) != 0})
      .map_error([](Error e) { return std::move(e).with_context("iommufd out_max_pasid_log2"); });
}

Result<VfioDeviceFeaturePasid> decode_vfio_device_feature_pasid(
    std::span<const std::uint8_t> bytes) {
  if (bytes.size() != vfio_feature::kStructSize) {
    return make_error(ErrorCode::kMalformedInput,
                      "vfio_device_feature_pasid is {} bytes, expected {}", bytes.size(),
                      vfio_feature::kStructSize);
  }
  return VfioDeviceFeaturePasid{load_le<std::uint16_t>(bytes), bytes[2], bytes[3]};
}

Result<PasidFields> pasid_from_vfio_feature(const VfioDeviceFeaturePasid& feature) {
  constexpr std::uint16_t kKnown = vfio_feature::kCapExec | vfio_feature::kCapPriv;
  if ((feature.capabilities & ~kKnown) != 0) {
    return make_error(ErrorCode::kMalformedInput,
                      "VFIO PASID feature capabilities {:#06x} set bits the proposal does not "
                      "define (only EXEC bit 0 and PRIV bit 1)",
                      feature.capabilities);
  }
  if (feature.reserved != 0) {
    return make_error(ErrorCode::kMalformedInput,
                      "VFIO PASID feature reserved byte is {:#04x}, not 0", feature.reserved);
  }
  if (feature.width == 0) {
    return make_error(ErrorCode::kUnsupported,
                      "VFIO PASID feature width is 0: the device has no PASID support");
  }
  return validate_pasid_fields(PasidFields{feature.width,
                                           (feature.capabilities & vfio_feature::kCapExec) != 0,
                                           (feature.capabilities & vfio_feature::kCapPriv) != 0})
      .map_error([](Error e) { return std::move(e).with_context("VFIO PASID feature width"); });
}

std::string_view pasid_source_name(PasidSource source) {
  switch (source) {
    case PasidSource::kRegister: return "register";
    case PasidSource::kIommufd: return "iommufd";
    case PasidSource::kVfioFeature: return "vfio-feature";
  }
  return "register";
}

Result<PasidSpec> parse_pasid_spec(std::string_view text) {
  const auto parts = split(text, ',');
  PasidSpec spec;
  std::size_t first_key = 0;
  if (parts[0] == "iommufd") {
    spec.source = PasidSource::kIommufd;
    first_key = 1;
  } else if (parts[0] == "vfio") {
    spec.source = PasidSource::kVfioFeature;
    first_key = 1;
  }
  bool have_width = false;
  for (std::size_t i = first_key; i < parts.size(); ++i) {
    const std::string_view part = parts[i];
    const std::size_t eq = part.find('=');
    const std::string_view key = part.substr(0, eq);
    const std::string_view value =
        eq == std::string_view::npos ? std::string_view() : part.substr(eq + 1);
    auto bad_key = [&]() {
      return make_error(ErrorCode::kInvalidArgument, "--pasid {}: unknown or misplaced item '{}'",
                        text, part);
    };
    if (spec.source == PasidSource::kRegister) {
      if (part == "exec") {
        spec.fields.execute = true;
      } else if (part == "priv") {
        spec.fields.privileged = true;
      } else if (key == "width" && eq != std::string_view::npos) {
        VPCI_ASSIGN_OR_RETURN(const auto width, parse_number(value, 0xFF).map_error([&](Error e) {
          return std::move(e).with_context(fmt::format("--pasid {}: width", text));
        }));
        spec.fields.max_width = static_cast<unsigned>(width);
        have_width = true;
      } else {
        return bad_key();
      }
    } else if (spec.source == PasidSource::kIommufd) {
      if (key == "max_pasid_log2" && eq != std::string_view::npos) {
        VPCI_ASSIGN_OR_RETURN(const auto log2, parse_number(value, 0xFF).map_error([&](Error e) {
          return std::move(e).with_context(fmt::format("--pasid {}: max_pasid_log2", text));
        }));
        spec.iommufd.out_max_pasid_log2 = static_cast<std::uint8_t>(log2);
        have_width = true;
      } else if (key == "capabilities" && eq != std::string_view::npos) {
        VPCI_ASSIGN_OR_RETURN(
            spec.iommufd.out_capabilities, parse_number(value, ~0ull).map_error([&](Error e) {
              return std::move(e).with_context(fmt::format("--pasid {}: capabilities", text));
            }));
      } else {
        return bad_key();
      }
    } else {
      if (key == "width" && eq != std::string_view::npos) {
        VPCI_ASSIGN_OR_RETURN(const auto width, parse_number(value, 0xFF).map_error([&](Error e) {
          return std::move(e).with_context(fmt::format("--pasid {}: width", text));
        }));
        spec.vfio.width = static_cast<std::uint8_t>(width);
        have_width = true;
      } else if (key == "capabilities" && eq != std::string_view::npos) {
        VPCI_ASSIGN_OR_RETURN(const auto caps, parse_number(value, 0xFFFF).map_error([&](Error e) {
          return std::move(e).with_context(fmt::format("--pasid {}: capabilities", text));
        }));
        spec.vfio.capabilities = static_cast<std::uint16_t>(caps);
      } else {
        return bad_key();
      }
    }
  }
  if (!have_width) {
    return make_error(ErrorCode::kInvalidArgument,
                      "--pasid {}: missing the width (width=N, iommufd,max_pasid_log2=N or "
                      "vfio,width=N)",
                      text);
  }
  auto with_spec = [&](Error e) {
    return std::move(e).with_context(fmt::format("--pasid {}", text));
  };
  Result<PasidFields> fields =
      spec.source == PasidSource::kIommufd       ? pasid_from_iommufd(spec.iommufd)
      : spec.source == PasidSource::kVfioFeature ? pasid_from_vfio_feature(spec.vfio)
                                                 : validate_pasid_fields(spec.fields);
  VPCI_ASSIGN_OR_RETURN(spec.fields, std::move(fields).map_error(with_spec));
  return spec;
}

}  // namespace vpci::pci
