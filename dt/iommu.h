// IOMMU topology of a device tree: providers, masters and PCI host bridges.
//
// Bindings (Linux Documentation/devicetree/bindings/):
//   iommu/iommu.txt      `iommus` = list of (phandle, specifier) where the specifier has
//                        the *provider's* `#iommu-cells` cells, so entries of one list
//                        may differ in length;
//   iommu/arm,smmu.yaml  SMMUv1/v2/MMU-500: 1 cell (stream ID) or 2 cells (stream ID,
//                        SMR mask);
//   iommu/arm,smmu-v3.yaml  1 cell (stream ID);
//   iommu/renesas,ipmmu-vmsa.yaml  1 cell (micro-TLB number);
//   pci/pci-iommu.yaml, pci/pci-msi.txt  `iommu-map` / `msi-map` tuples
//                        (rid-base, phandle, id-base, length), RID masked with
//                        `iommu-map-mask` / `msi-map-mask` first.
//
// The id-base of an `iommu-map` tuple is one cell even when the target IOMMU has
// `#iommu-cells = <2>`: the binding says "currently always 1 cell", Linux's
// of_map_id() reads 4-cell tuples, and the SM8550 tree (2-cell qcom SMMU) is written
// that way. The specifier's mask cell then comes from the provider's
// `stream-match-mask` (arm,smmu.yaml), or 0.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/error.h"
#include "dt/tree.h"

namespace vpci::dt {

enum class IommuKind : std::uint8_t {
  kSmmuV1,    // arm,smmu-v1, arm,mmu-400, arm,mmu-401
  kSmmuV2,    // arm,smmu-v2 and vendor SMMUv2 (qcom,smmu-v2, cavium,smmu-v2)
  kMmu500,    // arm,mmu-500 and vendor variants (nvidia,smmu-500, qcom,smmu-500, ...)
  kSmmuV3,    // arm,smmu-v3
  kIpmmu,     // renesas,ipmmu-* / renesas,rcar-gen*-ipmmu-vmsa
  kXenGrant,  // xen,grant-dma: not a hardware IOMMU, the specifier is a domain ID
  kUnknown,   // has #iommu-cells but a compatible vpci does not know
};

std::string_view iommu_kind_name(IommuKind kind);
// Classifies a provider by its `compatible` list (first recognized entry wins, so a
// vendor string followed by the generic one is recognized through either).
IommuKind classify_iommu(const Node& node);

// A node with `#iommu-cells`.
struct IommuProvider {
  std::string path;
  std::uint32_t phandle = 0;  // 0 when the node has none (then nothing can reference it)
  std::uint32_t cells = 0;
  IommuKind kind = IommuKind::kUnknown;
  std::vector<std::string> compatible;
  bool enabled = true;
  // `stream-match-mask` of SMMUv1/v2 providers with one cell (arm,smmu.yaml); 0 if absent.
  std::uint32_t stream_match_mask = 0;
};

// One (phandle, specifier) entry of `iommus`. For SMMU-style providers the first
// specifier cell is the stream ID and a second one is the SMR mask.
struct IommuSpecifier {
  std::uint32_t phandle = 0;
  std::vector<std::uint32_t> cells;

  [[nodiscard]] std::uint32_t stream_id() const { return cells.empty() ? 0 : cells[0]; }
  [[nodiscard]] std::uint32_t mask() const { return cells.size() > 1 ? cells[1] : 0; }
  friend bool operator==(const IommuSpecifier&, const IommuSpecifier&) = default;
};

struct IommuMaster {
  std::string path;
  bool enabled = true;
  std::vector<IommuSpecifier> specifiers;
};

// One (rid-base, phandle, id-base, length) tuple of `iommu-map` or `msi-map`.
struct IdMapEntry {
  std::uint32_t rid_base = 0;
  std::uint32_t phandle = 0;
  std::uint32_t id_base = 0;
  std::uint32_t length = 0;
  friend bool operator==(const IdMapEntry&, const IdMapEntry&) = default;
};

struct PciHostBridge {
  std::string path;
  std::uint32_t bus_first = 0;  // `bus-range`, default 0-255 (host-generic-pci.txt)
  std::uint32_t bus_last = 255;
  std::vector<IdMapEntry> iommu_map;
  std::uint32_t iommu_map_mask = 0xffff;  // absent = no masking
  std::vector<IdMapEntry> msi_map;
  std::uint32_t msi_map_mask = 0xffff;
};

struct Topology {
  std::vector<IommuProvider> providers;  // tree order
  std::vector<IommuMaster> masters;      // nodes with `iommus`, tree order
  std::vector<PciHostBridge> bridges;    // nodes with `iommu-map` or `msi-map`
  // Everything that could not be parsed, one message each (dangling phandles,
  // cell-count mismatches, overlapping maps...). The nodes concerned are left out of
  // the lists above. `vpci dt show` prints these; binding fails only when it needs
  // one of the nodes concerned (and then reports the same message).
  std::vector<Error> problems;

  [[nodiscard]] const IommuProvider* provider_by_phandle(std::uint32_t phandle) const;
  [[nodiscard]] const IommuProvider* provider_by_path(std::string_view path) const;
};

// Reads a provider node (one with `#iommu-cells`).
Result<IommuProvider> parse_iommu_provider(const Node& node);

// Splits `master`'s `iommus` into specifiers using each referenced provider's
// `#iommu-cells`. Errors: dangling phandle, a target without `#iommu-cells`, a list
// that ends inside a specifier (cell-count mismatch).
// `phandles` is the tree's Tree::phandle_index().
Result<std::vector<IommuSpecifier>> parse_iommus(const PhandleIndex& phandles, const Node& master);

// Reads and checks a PCI host bridge's `bus-range`, `iommu-map(-mask)` and
// `msi-map(-mask)`. Checks (dtc 1.6.1 checks none of them): 4-cell tuples, length > 0,
// targets exist (`#iommu-cells` / `#msi-cells` or `msi-controller`), every RID range
// within 16 bits, and no two `iommu-map` tuples covering the same masked RID
// (pci-iommu.yaml gives a RID one IOMMU specifier; `msi-map` may overlap,
// pci-msi.txt). RID ranges whose bus lies outside `bus-range` are errors too.
Result<PciHostBridge> parse_pci_host_bridge(const PhandleIndex& phandles, const Node& node);

// A RID translated through a bridge's `iommu-map`.
struct MappedId {
  std::uint32_t phandle = 0;
  std::uint32_t id = 0;
  std::size_t entry = 0;  // index of the tuple used
};
// Applies `iommu-map-mask` and finds the tuple covering the RID (pci-iommu.yaml).
// kNotFound when the bridge has no `iommu-map` or no tuple covers the RID.
Result<MappedId> map_rid(const PciHostBridge& bridge, std::uint32_t rid);

// Parses the whole tree; never fails (see Topology::problems).
Topology parse_topology(const Tree& tree);

}  // namespace vpci::dt
