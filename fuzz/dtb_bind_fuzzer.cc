// Fuzzes loading and binding of untrusted device trees (SECURITY.md: host and
// partial trees are user files; a toolstack may load blobs from guests' owners).
//
// Input: byte 0 selects the mode, byte 1 the vSID limit (small limits reach the
// exhaustion paths), the rest is blob data:
//   mode 0: a partial tree bound against a fixed host tree;
//   mode 1: a host tree, bound with a partial tree derived from its own masters;
//   mode 2: a 4-byte big-endian length, a host blob of that length, a partial blob;
//   mode 3: any blob through the loader, the topology parser and the DTS writer.
// Never crash; on success the invariants below must hold (abort otherwise).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <span>
#include <tuple>

#include <fmt/format.h>

#include "dt/bind.h"
#include "dt/dts.h"
#include "dt/iommu.h"
#include "dt/tree.h"
#include "tools/dt_bind_map.h"

namespace {

using namespace vpci::dt;

void check(bool condition) {
  if (!condition) std::abort();
}

// Two MMU-500s (1 and 2 cells), an SMMUv3 behind a masked iommu-map, masters at
// /soc/dev@0 ... /soc/dev@3.
Tree make_host() {
  Tree host;
  Node& root = host.root();
  root.set_u32("#address-cells", 2);
  root.set_u32("#size-cells", 2);
  Node& soc = **root.add_child("soc");
  soc.set_u32("#address-cells", 2);
  soc.set_u32("#size-cells", 2);
  const auto add_iommu = [&](const char* name, const char* compatible, std::uint32_t cells,
                             std::uint32_t phandle) {
    Node& n = **soc.add_child(name);
    n.set_string("compatible", compatible);
    n.set_u32("#iommu-cells", cells);
    n.set_u32("phandle", phandle);
  };
  add_iommu("iommu@1000", "arm,mmu-500", 1, 1);
  add_iommu("iommu@2000", "arm,mmu-500", 2, 2);
  add_iommu("iommu@3000", "arm,smmu-v3", 1, 3);
  const std::vector<std::vector<std::uint32_t>> iommus = {
      {1, 0x10}, {2, 0x10, 0x7f00}, {1, 0x20, 1, 0x21}, {3, 0x10, 2, 0x30, 0}};
  for (std::size_t i = 0; i < iommus.size(); ++i) {
    (*soc.add_child(fmt::format("dev@{}", i)))->set_cells("iommus", iommus[i]);
  }
  Node& pcie = **root.add_child("pcie@40000000");
  pcie.set_string("device_type", "pci");
  const std::uint32_t map[] = {0, 3, 0x1000, 0x100, 0x100, 3, 0x2000, 0x100};
  pcie.set_cells("iommu-map", map);
  pcie.set_u32("iommu-map-mask", 0xfff8);
  return host;
}

// The partial tree a user would write for `host`'s masters: xen,path and iommus
// with the placeholder 0 (layouts that do not parse are copied as they are).
Tree derive_partial(const Tree& host) {
  Tree partial;
  Node& passthrough = **partial.root().add_child("passthrough");
  const PhandleIndex phandles = host.phandle_index();
  std::size_t n = 0;
  for_each_node(host.root(), [&](const Node& node) {
    const Property* iommus = node.property("iommus");
    if (iommus == nullptr || n >= 256) return;
    Node& copy = *passthrough.add_child_unchecked(fmt::format("m{}", n++));
    copy.set_string("xen,path", node.path());
    auto specifiers = parse_iommus(phandles, node);
    if (!specifiers) {
      copy.set_property("iommus", iommus->value);
      return;
    }
    std::vector<std::uint32_t> cells;
    for (const auto& s : *specifiers) {
      cells.push_back(0);
      cells.insert(cells.end(), s.cells.begin(), s.cells.end());
    }
    copy.set_cells("iommus", cells);
  });
  return partial;
}

void check_bound(const BindResult& r, const BindOptions& options) {
  auto blob = serialize_dtb(r.guest);
  check(blob.has_value());
  auto reloaded = parse_dtb(*blob);
  check(reloaded.has_value());
  check(*serialize_dtb(*reloaded) == *blob);
  check(!(r.viommu_phandle >= kXenReservedPhandleFirst &&
          r.viommu_phandle <= kXenReservedPhandleLast));
  std::map<std::tuple<std::string, std::uint32_t, std::uint32_t>, std::uint32_t> vsid_of;
  std::map<std::uint32_t, std::tuple<std::string, std::uint32_t, std::uint32_t>> key_of;
  for (const auto& s : r.streams) {
    check(s.vsid < options.vsid_limit);
    const auto key = std::make_tuple(s.piommu, s.psid, s.pmask);
    check(vsid_of.emplace(key, s.vsid).first->second == s.vsid);
    check(key_of.emplace(s.vsid, key).first->second == key);
    if (s.rid) continue;
    // A platform master's iommus points at the vIOMMU only.
    const Node* node = reloaded->find(s.path);
    check(node != nullptr);
    const auto cells = node->property("iommus")->cells();
    check(cells.has_value() && cells->size() % 2 == 0);
    for (std::size_t i = 0; i < cells->size(); i += 2) check((*cells)[i] == r.viommu_phandle);
  }
  const Topology topology = parse_topology(*reloaded);
  check(topology.problems.empty());
  (void)vpci::tools::bind_map_json(r);
  (void)to_dts(r.guest);
}

void bind_and_check(const Tree& host, const Tree& partial, std::uint8_t limit_byte) {
  BindOptions options;
  options.vsid_limit = limit_byte == 0 ? 0x10000 : limit_byte;
  options.vsid_base = limit_byte % 4;
  if (options.vsid_base >= options.vsid_limit) options.vsid_base = 0;
  auto r = bind_partial_tree(host, partial, options);
  if (r) check_bound(*r, options);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  static const Tree kHost = make_host();
  const std::uint8_t mode = data[0] & 3;
  const std::uint8_t limit = data[1];
  const std::span<const std::uint8_t> rest(data + 2, size - 2);
  switch (mode) {
    case 0: {
      auto partial = parse_dtb(rest);
      if (partial) bind_and_check(kHost, *partial, limit);
      break;
    }
    case 1: {
      auto host = parse_dtb(rest);
      if (host) bind_and_check(*host, derive_partial(*host), limit);
      break;
    }
    case 2: {
      if (rest.size() < 4) break;
      const std::size_t host_size = (std::size_t{rest[0]} << 24) | (std::size_t{rest[1]} << 16) |
                                    (std::size_t{rest[2]} << 8) | rest[3];
      if (host_size > rest.size() - 4) break;
      auto host = parse_dtb(rest.subspan(4, host_size));
      auto partial = parse_dtb(rest.subspan(4 + host_size));
      if (host && partial) bind_and_check(*host, *partial, limit);
      break;
    }
    default: {
      auto tree = parse_dtb(rest);
      if (!tree) break;
      auto blob = serialize_dtb(*tree);
      check(blob.has_value());
      const Topology topology = parse_topology(*tree);
      (void)topology;
      (void)to_dts(*tree);
      break;
    }
  }
  return 0;
}
