#include "tools/dt_bind_options.h"

#include <charconv>
#include <cstdint>
#include <utility>

#include "pci/pasid.h"

namespace vpci::tools {
namespace {

// Numbers as pci::parse_number reads them (decimal or 0x hex), named by their option.
Result<std::uint64_t> parse_number(std::string_view text, std::string_view option) {
  return pci::parse_number(text, ~std::uint64_t{0}).map_error([&](Error e) {
    return std::move(e).with_context(option);
  });
}

// "BASE,SIZE"
Result<std::pair<std::uint64_t, std::uint64_t>> parse_window(std::string_view text,
                                                             std::string_view option) {
  const auto comma = text.find(',');
  if (comma == std::string_view::npos) {
    return make_error(ErrorCode::kInvalidArgument, "{}: \"{}\" is not BASE,SIZE", option, text);
  }
  VPCI_ASSIGN_OR_RETURN(const auto base, parse_number(text.substr(0, comma), option));
  VPCI_ASSIGN_OR_RETURN(const auto size, parse_number(text.substr(comma + 1), option));
  return std::pair{base, size};
}

Result<std::uint32_t> parse_u32(std::string_view text, std::string_view option) {
  return pci::parse_number(text, 0xffffffffu)
      .map([](std::uint64_t value) { return static_cast<std::uint32_t>(value); })
      .map_error([&](Error e) { return std::move(e).with_context(option); });
}

// One ID of a --vsid list; `whole` is the option value, quoted in the error.
Result<std::uint32_t> parse_id(std::string_view text, std::string_view whole) {
  int base = 10;
  if (text.starts_with("0x") || text.starts_with("0X")) {
    text.remove_prefix(2);
    base = 16;
  }
  std::uint32_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value, base);
  if (text.empty() || ec != std::errc{} || end != text.data() + text.size()) {
    return make_error(ErrorCode::kInvalidArgument, "\"{}\": \"{}\" is not a 32-bit number", whole,
                      text);
  }
  return value;
}

}  // namespace

Result<dt::VsidRequest> parse_vsid_request(std::string_view text) {
  const auto eq = text.rfind('=');
  if (eq == std::string_view::npos || eq == 0 || text.front() != '/') {
    return make_error(ErrorCode::kInvalidArgument,
                      "\"{}\" is not PATH=ID[,ID...] with an absolute node path", text);
  }
  dt::VsidRequest request;
  request.path = std::string(text.substr(0, eq));
  std::string_view ids = text.substr(eq + 1);
  while (true) {
    const auto comma = ids.find(',');
    VPCI_ASSIGN_OR_RETURN(const auto id, parse_id(ids.substr(0, comma), text));
    request.vsids.push_back(id);
    if (comma == std::string_view::npos) break;
    ids.remove_prefix(comma + 1);
  }
  return request;
}

Result<dt::BindOptions> parse_bind_options(const BindOptionText& text) {
  dt::BindOptions options;
  for (const auto& v : text.vsids) {
    auto request = parse_vsid_request(v);
    if (!request) return tl::unexpected(std::move(request).error().with_context("--vsid"));
    options.vsid_requests.push_back(std::move(*request));
  }
  if (!text.vsid_base.empty()) {
    VPCI_ASSIGN_OR_RETURN(options.vsid_base, parse_u32(text.vsid_base, "--vsid-base"));
  }
  if (!text.vsid_limit.empty()) {
    VPCI_ASSIGN_OR_RETURN(options.vsid_limit, parse_number(text.vsid_limit, "--vsid-limit"));
  }
  if (!text.viommu_base.empty()) {
    VPCI_ASSIGN_OR_RETURN(options.viommu.base, parse_number(text.viommu_base, "--viommu-base"));
  }
  if (!text.viommu_size.empty()) {
    VPCI_ASSIGN_OR_RETURN(options.viommu.size, parse_number(text.viommu_size, "--viommu-size"));
  }
  if (!text.viommu_interrupts.empty()) {
    // Cells separated by commas, spaces or both ("0,70,1", "0 70 1", "0, 70, 1").
    std::string_view rest = text.viommu_interrupts;
    while (!rest.empty()) {
      const auto sep = rest.find_first_of(", ");
      const auto cell = rest.substr(0, sep);
      if (!cell.empty()) {
        VPCI_ASSIGN_OR_RETURN(const auto value, parse_u32(cell, "--viommu-interrupts"));
        options.viommu.interrupts.push_back(value);
      }
      if (sep == std::string_view::npos) break;
      rest.remove_prefix(sep + 1);
    }
  }
  options.viommu.interrupt_names = text.viommu_interrupt_names;
  if (!text.pci_ecam.empty()) {
    VPCI_ASSIGN_OR_RETURN(const auto w, parse_window(text.pci_ecam, "--pci-ecam"));
    options.pci.ecam_base = w.first;
    options.pci.ecam_size = w.second;
  }
  if (!text.pci_mem32.empty()) {
    VPCI_ASSIGN_OR_RETURN(const auto w, parse_window(text.pci_mem32, "--pci-mem32"));
    options.pci.mem32_base = w.first;
    options.pci.mem32_size = w.second;
  }
  if (!text.pci_mem64.empty()) {
    VPCI_ASSIGN_OR_RETURN(const auto w, parse_window(text.pci_mem64, "--pci-mem64"));
    options.pci.mem64_base = w.first;
    options.pci.mem64_size = w.second;
  }
  return options;
}

}  // namespace vpci::tools
