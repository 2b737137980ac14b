#include "dt/iommu.h"

#include <algorithm>

namespace vpci::dt {
namespace {

bool ends_with(std::string_view text, std::string_view suffix) {
  return text.size() >= suffix.size() && text.substr(text.size() - suffix.size()) == suffix;
}

std::optional<IommuKind> classify_compatible(std::string_view c) {
  if (c == "xen,grant-dma") return IommuKind::kXenGrant;
  if (ends_with(c, ",smmu-v3")) return IommuKind::kSmmuV3;
  // "arm,mmu-500", "nvidia,smmu-500", "qcom,smmu-500", "marvell,ap806-smmu-500", ...
  if (ends_with(c, "mmu-500")) return IommuKind::kMmu500;
  if (ends_with(c, ",smmu-v2")) return IommuKind::kSmmuV2;
  if (ends_with(c, ",smmu-v1") || c == "arm,mmu-400" || c == "arm,mmu-401")
    return IommuKind::kSmmuV1;
  // renesas,ipmmu-vmsa, renesas,ipmmu-r8a779g0, renesas,rcar-gen4-ipmmu-vmsa
  if (c.starts_with("renesas,") && c.find("ipmmu") != std::string_view::npos)
    return IommuKind::kIpmmu;
  return std::nullopt;
}

// Reads a required single-cell property of a map target (`#iommu-cells`,
// `#msi-cells`).
std::optional<std::uint32_t> cell_count(const Node& node, std::string_view name) {
  const Property* p = node.property(name);
  return p != nullptr ? p->u32() : std::nullopt;
}

Result<std::vector<IdMapEntry>> parse_id_map(const Node& node, std::string_view name,
                                             const PhandleIndex& phandles) {
  const Property* p = node.property(name);
  if (p == nullptr) return std::vector<IdMapEntry>{};
  const auto cells = p->cells();
  // pci-iommu.yaml / pci-msi.txt: (rid-base, phandle, id-base, length), id-base one
  // cell (see iommu.h).
  if (!cells || cells->size() % 4 != 0 || cells->empty()) {
    return make_error(
        ErrorCode::kMalformedInput,
        "{} {}: {} bytes is not a list of (rid-base, phandle, id-base, length) tuples of 4 cells",
        node.path(), name, p->value.size());
  }
  const bool is_msi = name == "msi-map";
  std::vector<IdMapEntry> entries;
  for (std::size_t i = 0; i < cells->size(); i += 4) {
    IdMapEntry e{(*cells)[i], (*cells)[i + 1], (*cells)[i + 2], (*cells)[i + 3]};
    const std::size_t index = i / 4;
    const auto target = phandles.find(e.phandle);
    if (target == phandles.end()) {
      return make_error(ErrorCode::kNotFound, "{} {} tuple {}: dangling phandle {:#x}", node.path(),
                        name, index, e.phandle);
    }
    const Node& t = *target->second;
    if (is_msi) {
      if (!t.has_property("msi-controller") && !t.has_property("#msi-cells")) {
        return make_error(ErrorCode::kMalformedInput, "{} {} tuple {}: {} is not an MSI controller",
                          node.path(), name, index, t.path());
      }
    } else {
      const auto n = cell_count(t, "#iommu-cells");
      if (!n) {
        return make_error(ErrorCode::kMalformedInput,
                          "{} {} tuple {}: {} has no #iommu-cells (not an IOMMU)", node.path(),
                          name, index, t.path());
      }
      if (*n == 0) {
        return make_error(ErrorCode::kMalformedInput,
                          "{} {} tuple {}: {} has #iommu-cells = <0>, so it cannot take an ID",
                          node.path(), name, index, t.path());
      }
    }
    if (e.length == 0) {
      return make_error(ErrorCode::kMalformedInput, "{} {} tuple {}: length 0 maps no RID",
                        node.path(), name, index);
    }
    if (std::uint64_t{e.rid_base} + e.length > 0x10000) {
      return make_error(ErrorCode::kOutOfRange,
                        "{} {} tuple {}: RIDs {:#x}+{:#x} go past the 16-bit RID space",
                        node.path(), name, index, e.rid_base, e.length);
    }
    if (std::uint64_t{e.id_base} + e.length - 1 > 0xffffffffu) {
      return make_error(ErrorCode::kOutOfRange, "{} {} tuple {}: IDs {:#x}+{:#x} overflow 32 bits",
                        node.path(), name, index, e.id_base, e.length);
    }
    entries.push_back(e);
  }
  return entries;
}

}  // namespace

std::string_view iommu_kind_name(IommuKind kind) {
  switch (kind) {
    case IommuKind::kSmmuV1: return "smmu-v1";
    case IommuKind::kSmmuV2: return "smmu-v2";
    case IommuKind::kMmu500: return "mmu-500";
    case IommuKind::kSmmuV3: return "smmu-v3";
    case IommuKind::kIpmmu: return "ipmmu";
    case IommuKind::kXenGrant: return "xen-grant-dma";
    case IommuKind::kUnknown: return "unknown";
  }
  return "unknown";
}

IommuKind classify_iommu(const Node& node) {
  for (const auto& c : node.compatible()) {
    if (const auto kind = classify_compatible(c)) return *kind;
  }
  return IommuKind::kUnknown;
}

const IommuProvider* Topology::provider_by_phandle(std::uint32_t phandle) const {
  for (const auto& p : providers) {
    if (p.phandle != 0 && p.phandle == phandle) return &p;
  }
  return nullptr;
}

const IommuProvider* Topology::provider_by_path(std::string_view path) const {
  for (const auto& p : providers) {
    if (p.path == path) return &p;
  }
  return nullptr;
}

Result<IommuProvider> parse_iommu_provider(const Node& node) {
  IommuProvider provider;
  provider.path = node.path();
  const Property* cells = node.property("#iommu-cells");
  const auto n = cells != nullptr ? cells->u32() : std::nullopt;
  if (!n)
    return make_error(ErrorCode::kMalformedInput, "{}: #iommu-cells must be one cell",
                      provider.path);
  provider.cells = *n;
  provider.phandle = node.phandle().value_or(0);
  provider.kind = classify_iommu(node);
  provider.compatible = node.compatible();
  provider.enabled = node.enabled();
  if (const Property* smm = node.property("stream-match-mask")) {
    const auto mask = smm->u32();
    if (!mask)
      return make_error(ErrorCode::kMalformedInput, "{}: stream-match-mask must be one cell",
                        provider.path);
    provider.stream_match_mask = *mask;
  }
  return provider;
}

Result<std::vector<IommuSpecifier>> parse_iommus(const PhandleIndex& phandles, const Node& master) {
  const Property* p = master.property("iommus");
  if (p == nullptr) return make_error(ErrorCode::kNotFound, "{} has no iommus", master.path());
  const auto cells = p->cells();
  if (!cells) {
    return make_error(ErrorCode::kMalformedInput, "{} iommus: {} bytes is not a list of cells",
                      master.path(), p->value.size());
  }
  if (cells->empty())
    return make_error(ErrorCode::kMalformedInput, "{} iommus is empty", master.path());
  std::vector<IommuSpecifier> out;
  std::size_t i = 0;
  while (i < cells->size()) {
    const std::uint32_t ph = (*cells)[i];
    const auto target = phandles.find(ph);
    if (target == phandles.end()) {
      return make_error(ErrorCode::kNotFound, "{} iommus entry {}: dangling phandle {:#x}",
                        master.path(), out.size(), ph);
    }
    const Node& provider = *target->second;
    const auto n = cell_count(provider, "#iommu-cells");
    if (!n) {
      return make_error(ErrorCode::kMalformedInput,
                        "{} iommus entry {}: {} has no #iommu-cells (not an IOMMU)", master.path(),
                        out.size(), provider.path());
    }
    if (*n > 8) {
      return make_error(ErrorCode::kUnsupported,
                        "{}: #iommu-cells = <{}> is not a plausible specifier size",
                        provider.path(), *n);
    }
    if (i + 1 + *n > cells->size()) {
      return make_error(
          ErrorCode::kMalformedInput,
          "{} iommus entry {}: cell-count mismatch: {} has #iommu-cells = <{}> but only {} cell(s) "
          "remain",
          master.path(), out.size(), provider.path(), *n, cells->size() - i - 1);
    }
    IommuSpecifier s;
    s.phandle = ph;
    s.cells.assign(cells->begin() + static_cast<std::ptrdiff_t>(i + 1),
                   cells->begin() + static_cast<std::ptrdiff_t>(i + 1 + *n));
    out.push_back(std::move(s));
    i += 1 + *n;
  }
  return out;
}

Result<PciHostBridge> parse_pci_host_bridge(const PhandleIndex& phandles, const Node& node) {
  PciHostBridge bridge;
  bridge.path = node.path();
  if (const Property* range = node.property("bus-range")) {
    const auto cells = range->cells();
    if (!cells || cells->size() != 2 || (*cells)[0] > (*cells)[1] || (*cells)[1] > 255) {
      return make_error(ErrorCode::kMalformedInput,
                        "{} bus-range must be <first last> with first <= last <= 255", bridge.path);
    }
    bridge.bus_first = (*cells)[0];
    bridge.bus_last = (*cells)[1];
  }
  const auto read_mask = [&](std::string_view name, std::uint32_t& mask) -> Status {
    if (const Property* p = node.property(name)) {
      const auto value = p->u32();
      if (!value)
        return make_error(ErrorCode::kMalformedInput, "{} {} must be one cell", bridge.path, name);
      mask = *value;
    }
    return {};
  };
  VPCI_TRY(read_mask("iommu-map-mask", bridge.iommu_map_mask));
  VPCI_TRY(read_mask("msi-map-mask", bridge.msi_map_mask));
  VPCI_ASSIGN_OR_RETURN(bridge.iommu_map, parse_id_map(node, "iommu-map", phandles));
  VPCI_ASSIGN_OR_RETURN(bridge.msi_map, parse_id_map(node, "msi-map", phandles));

  // A RID range's bus numbers are only meaningful when the mask keeps all bus bits;
  // with e.g. mask 0 every RID collapses to 0 whatever the bus-range.
  const auto check_buses = [&](const std::vector<IdMapEntry>& map, std::uint32_t mask,
                               std::string_view name) -> Status {
    if ((mask & 0xff00u) != 0xff00u) return {};
    for (std::size_t i = 0; i < map.size(); ++i) {
      const std::uint32_t first_bus = map[i].rid_base >> 8;
      const std::uint32_t last_bus = (map[i].rid_base + map[i].length - 1) >> 8;
      if (first_bus < bridge.bus_first || last_bus > bridge.bus_last) {
        return make_error(ErrorCode::kOutOfRange,
                          "{} {} tuple {}: buses {:#x}-{:#x} lie outside bus-range {:#x}-{:#x}",
                          bridge.path, name, i, first_bus, last_bus, bridge.bus_first,
                          bridge.bus_last);
      }
    }
    return {};
  };
  VPCI_TRY(check_buses(bridge.iommu_map, bridge.iommu_map_mask, "iommu-map"));
  VPCI_TRY(check_buses(bridge.msi_map, bridge.msi_map_mask, "msi-map"));

  // pci-iommu.yaml: a RID is associated with one IOMMU specifier; overlapping
  // tuples would make the answer depend on the reader's search order.
  std::vector<std::size_t> order(bridge.iommu_map.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return bridge.iommu_map[a].rid_base < bridge.iommu_map[b].rid_base;
  });
  for (std::size_t k = 1; k < order.size(); ++k) {
    const IdMapEntry& prev = bridge.iommu_map[order[k - 1]];
    const IdMapEntry& next = bridge.iommu_map[order[k]];
    if (std::uint64_t{prev.rid_base} + prev.length > next.rid_base) {
      return make_error(ErrorCode::kConflict, "{} iommu-map tuples {} and {} both cover RID {:#x}",
                        bridge.path, order[k - 1], order[k], next.rid_base);
    }
  }
  return bridge;
}

Result<MappedId> map_rid(const PciHostBridge& bridge, std::uint32_t rid) {
  if (bridge.iommu_map.empty()) {
    return make_error(ErrorCode::kNotFound, "{} has no iommu-map, so RID {:#06x} has no stream ID",
                      bridge.path, rid);
  }
  const std::uint32_t masked = rid & bridge.iommu_map_mask;
  for (std::size_t i = 0; i < bridge.iommu_map.size(); ++i) {
    const IdMapEntry& e = bridge.iommu_map[i];
    if (masked >= e.rid_base && std::uint64_t{masked} < std::uint64_t{e.rid_base} + e.length) {
      return MappedId{e.phandle, masked - e.rid_base + e.id_base, i};
    }
  }
  return make_error(ErrorCode::kNotFound,
                    "{} iommu-map covers no RID {:#06x} (masked with {:#x}: {:#06x})", bridge.path,
                    rid, bridge.iommu_map_mask, masked);
}

Topology parse_topology(const Tree& tree) {
  Topology topology;
  const PhandleIndex phandles = tree.phandle_index();
  for_each_node(tree.root(), [&](const Node& node) {
    if (node.has_property("#iommu-cells")) {
      auto provider = parse_iommu_provider(node);
      if (provider) {
        topology.providers.push_back(std::move(*provider));
      } else {
        topology.problems.push_back(provider.error());
      }
    }
    if (node.has_property("iommus")) {
      auto specifiers = parse_iommus(phandles, node);
      if (specifiers) {
        topology.masters.push_back(
            IommuMaster{node.path(), node.enabled(), std::move(*specifiers)});
      } else {
        topology.problems.push_back(specifiers.error());
      }
    }
    if (node.has_property("iommu-map") || node.has_property("msi-map")) {
      auto bridge = parse_pci_host_bridge(phandles, node);
      if (bridge) {
        topology.bridges.push_back(std::move(*bridge));
      } else {
        topology.problems.push_back(bridge.error());
      }
    }
  });
  return topology;
}

}  // namespace vpci::dt
