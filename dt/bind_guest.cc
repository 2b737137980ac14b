#include "dt/bind_guest.h"

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include <fmt/format.h>

namespace vpci::dt {
namespace {

std::string hex(std::uint64_t value) {
  return fmt::format("{:x}", value);
}

Result<std::vector<std::uint32_t>> encode_address(std::uint64_t value, std::uint32_t cells,
                                                  std::string_view what) {
  if (cells == 0 || cells > 2) {
    return make_error(ErrorCode::kUnsupported, "{}: the root's cell count {} is not 1 or 2", what,
                      cells);
  }
  if (cells == 1) {
    if (value > 0xffffffffu) {
      return make_error(ErrorCode::kOutOfRange,
                        "{} {:#x} does not fit the root's single address/size cell", what, value);
    }
    return std::vector<std::uint32_t>{static_cast<std::uint32_t>(value)};
  }
  return std::vector<std::uint32_t>{static_cast<std::uint32_t>(value >> 32),
                                    static_cast<std::uint32_t>(value)};
}

class GuestBuilder {
 public:
  GuestBuilder(const BindPlan& plan, std::span<const std::uint32_t> vsids,
               const BindOptions& options, BindResult& result)
      : plan_(plan), vsids_(vsids), options_(options), result_(result) {}

  Status run() {
    Tree& guest = result_.guest;
    Node& root = guest.root();
    const auto phandles = guest.phandles();
    used_phandles_.insert(phandles.begin(), phandles.end());

    // Explicit root cell counts: the nodes added below carry `reg`, and dtc warns
    // when children rely on the defaults (DT spec 2.3.5: 2 and 1).
    if (!root.has_property("#address-cells")) root.set_u32("#address-cells", 2);
    if (!root.has_property("#size-cells")) root.set_u32("#size-cells", 1);
    const std::uint32_t address_cells = root.address_cells();
    const std::uint32_t size_cells = root.size_cells();

    const bool need_viommu =
        !plan_.masters.empty() || std::any_of(plan_.functions.begin(), plan_.functions.end(),
                                              [](const auto& f) { return !f.virtio; });
    if (need_viommu) {
      const auto& v = options_.viommu;
      const std::string name = "iommu@" + hex(v.base);
      if (root.child(name) != nullptr) {
        return make_error(ErrorCode::kAlreadyExists,
                          "the partial tree already has /{}; choose another vIOMMU address", name);
      }
      VPCI_ASSIGN_OR_RETURN(auto reg, encode_address(v.base, address_cells, "vIOMMU base"));
      VPCI_ASSIGN_OR_RETURN(auto size, encode_address(v.size, size_cells, "vIOMMU size"));
      reg.insert(reg.end(), size.begin(), size.end());
      VPCI_ASSIGN_OR_RETURN(Node * node, root.add_child(name));
      // arm,smmu-v3.yaml: compatible, reg, #iommu-cells = <1> required;
      // additionalProperties: false, so no xen,* extras here.
      node->set_string("compatible", "arm,smmu-v3");
      node->set_cells("reg", reg);
      if (!v.interrupts.empty()) {
        node->set_cells("interrupts", v.interrupts);
        if (!v.interrupt_names.empty()) {
          node->set_property("interrupt-names", encode_strings(v.interrupt_names));
        }
      }
      node->set_u32("#iommu-cells", 1);
      result_.viommu_phandle = next_phandle();
      node->set_u32("phandle", result_.viommu_phandle);
      result_.viommu_path = node->path();
    }

    for (const auto& m : plan_.masters) {
      std::vector<std::uint32_t> cells;
      for (const auto& u : m.uses) {
        const std::uint32_t vsid = vsids_[u.key];
        cells.push_back(result_.viommu_phandle);
        cells.push_back(vsid);
        result_.streams.push_back(BoundStream{m.path,
                                              u.host_path,
                                              plan_.keys[u.key].piommu,
                                              plan_.keys[u.key].psid,
                                              plan_.keys[u.key].pmask,
                                              vsid,
                                              {},
                                              {}});
      }
      m.guest_node->set_cells("iommus", cells);
      m.guest_node->remove_property(kVsidProperty);
    }

    if (!plan_.functions.empty()) VPCI_TRY(add_pci_bridge(address_cells, size_cells));
    // The function list is vpci's input, not part of the guest.
    root.remove_child(kPciFunctionsPath.substr(1));
    if (Node* local_fixups = guest.find("/__local_fixups__"))
      local_fixups->remove_child(kPciFunctionsPath.substr(1));
    fix_symbols();
    return {};
  }

 private:
  // Smallest phandle not in use and outside Xen's reserved 65000-65002.
  std::uint32_t next_phandle() {
    while (used_phandles_.count(phandle_cursor_) != 0 ||
           (phandle_cursor_ >= kXenReservedPhandleFirst &&
            phandle_cursor_ <= kXenReservedPhandleLast)) {
      ++phandle_cursor_;
    }
    used_phandles_.insert(phandle_cursor_);
    return phandle_cursor_;
  }

  Status add_pci_bridge(std::uint32_t address_cells, std::uint32_t size_cells) {
    Node& root = result_.guest.root();
    const auto& pci = options_.pci;
    const bool need_grant = std::any_of(plan_.functions.begin(), plan_.functions.end(),
                                        [](const auto& f) { return f.virtio; });
    if (need_grant) {
      // Reuse a xen,grant-dma node the partial tree already has (libxl's
      // convention for virtio-mmio grants), so one guest has one grant IOMMU.
      const Node* existing = nullptr;
      for_each_node(static_cast<const Node&>(root), [&](const Node& n) {
        if (existing == nullptr && n.is_compatible("xen,grant-dma") && n.phandle()) existing = &n;
      });
      if (existing != nullptr) {
        result_.grant_path = existing->path();
        result_.grant_phandle = *existing->phandle();
      } else {
        const std::string name = "xen-grant-dma";
        if (root.child(name) != nullptr) {
          return make_error(ErrorCode::kAlreadyExists,
                            "the partial tree already has /{} but it is not a "
                            "xen,grant-dma node with a phandle",
                            name);
        }
        VPCI_ASSIGN_OR_RETURN(Node * grant, root.add_child(name));
        // xen,grant-dma.yaml: compatible and #iommu-cells = <1> (the backend
        // domid); nothing else is allowed.
        grant->set_string("compatible", "xen,grant-dma");
        grant->set_u32("#iommu-cells", 1);
        result_.grant_phandle = next_phandle();
        grant->set_u32("phandle", result_.grant_phandle);
        result_.grant_path = grant->path();
        grant_created_ = true;
      }
    }

    const std::string name = "pcie@" + hex(pci.ecam_base);
    if (root.child(name) != nullptr) {
      return make_error(ErrorCode::kAlreadyExists,
                        "the partial tree already has /{}; choose another ECAM address", name);
    }
    VPCI_ASSIGN_OR_RETURN(auto reg, encode_address(pci.ecam_base, address_cells, "ECAM base"));
    VPCI_ASSIGN_OR_RETURN(auto reg_size, encode_address(pci.ecam_size, size_cells, "ECAM size"));
    reg.insert(reg.end(), reg_size.begin(), reg_size.end());

    // host-generic-pci.txt / IEEE 1275 PCI binding: ranges entries are
    // (phys.hi, phys.mid, phys.lo) PCI address, parent address, 2-cell size.
    // 0x02000000 = 32-bit memory, 0x43000000 = 64-bit prefetchable memory.
    std::vector<std::uint32_t> ranges;
    const auto add_range = [&](std::uint32_t space, std::uint64_t base,
                               std::uint64_t size) -> Status {
      if (size == 0) return {};
      ranges.push_back(space);
      ranges.push_back(static_cast<std::uint32_t>(base >> 32));
      ranges.push_back(static_cast<std::uint32_t>(base));
      VPCI_ASSIGN_OR_RETURN(auto parent, encode_address(base, address_cells, "PCI window base"));
      ranges.insert(ranges.end(), parent.begin(), parent.end());
      ranges.push_back(static_cast<std::uint32_t>(size >> 32));
      ranges.push_back(static_cast<std::uint32_t>(size));
      return {};
    };
    if (pci.mem32_size == 0 || pci.mem32_base + pci.mem32_size > (std::uint64_t{1} << 32)) {
      return make_error(
          ErrorCode::kInvalidArgument,
          "the 32-bit PCI memory window {:#x}+{:#x} must be non-empty and below 4 GiB "
          "(host-generic-pci.txt requires non-prefetchable memory)",
          pci.mem32_base, pci.mem32_size);
    }
    VPCI_TRY(add_range(0x02000000, pci.mem32_base, pci.mem32_size));
    VPCI_TRY(add_range(0x43000000, pci.mem64_base, pci.mem64_size));

    // iommu-map, sorted by RID, one tuple per run of consecutive RIDs whose IDs are
    // consecutive too (pci-iommu.yaml arithmetic: ID = RID - rid-base + id-base).
    // A virtio function's ID is its backend domid; the libxl RFC's
    // <BDF 65001 domid 8> gave function k the domid + k, so runs are only merged
    // when the IDs really step by one.
    struct Route {
      std::uint32_t rid, phandle, id;
    };
    std::vector<Route> routes;
    for (const auto& f : plan_.functions) {
      if (f.virtio) {
        routes.push_back({f.rid, result_.grant_phandle, f.backend_domid});
        result_.grants.push_back(GrantRoute{f.path, f.rid, f.backend_domid});
      } else {
        const std::uint32_t vsid = vsids_[f.use.key];
        routes.push_back({f.rid, result_.viommu_phandle, vsid});
      }
    }
    std::sort(routes.begin(), routes.end(),
              [](const Route& a, const Route& b) { return a.rid < b.rid; });
    std::vector<std::uint32_t> map;
    for (std::size_t i = 0; i < routes.size();) {
      std::size_t j = i + 1;
      while (j < routes.size() && routes[j].rid == routes[j - 1].rid + 1 &&
             routes[j].phandle == routes[i].phandle && routes[j].id == routes[j - 1].id + 1) {
        ++j;
      }
      map.insert(map.end(), {routes[i].rid, routes[i].phandle, routes[i].id,
                             static_cast<std::uint32_t>(j - i)});
      i = j;
    }

    VPCI_ASSIGN_OR_RETURN(Node * bridge, root.add_child(name));
    bridge->set_string("compatible", "pci-host-ecam-generic");
    bridge->set_string("device_type", "pci");
    bridge->set_cells("reg", reg);
    const std::uint32_t bus_range[] = {0, static_cast<std::uint32_t>((pci.ecam_size >> 20) - 1)};
    bridge->set_cells("bus-range", bus_range);
    bridge->set_u32("#address-cells", 3);
    bridge->set_u32("#size-cells", 2);
    bridge->set_cells("ranges", ranges);
    bridge->set_cells("iommu-map", map);
    result_.pci_path = bridge->path();

    for (const auto& f : plan_.functions) {
      if (f.virtio) continue;
      const std::uint32_t vsid = vsids_[f.use.key];
      const StreamKey& key = plan_.keys[f.use.key];
      result_.streams.push_back(BoundStream{result_.pci_path, f.use.host_path, key.piommu, key.psid,
                                            key.pmask, vsid, f.rid, f.use.host_rid});
    }
    return {};
  }

  // __symbols__ (dtc -@) maps labels to paths: drop labels of nodes that are gone,
  // and label the nodes vpci added when the label is free (a reused grant node
  // keeps the labels it has).
  void fix_symbols() {
    Tree& guest = result_.guest;
    Node* symbols = guest.find("/__symbols__");
    if (symbols == nullptr) return;
    std::vector<std::string> stale;
    for (const auto& p : symbols->properties()) {
      const auto path = p.string();
      if (!path || guest.find(*path) == nullptr) stale.push_back(p.name);
    }
    for (const auto& name : stale) symbols->remove_property(name);
    const auto label = [&](std::string_view name, const std::string& path) {
      if (!path.empty() && !symbols->has_property(name)) symbols->set_string(name, path);
    };
    label("viommu", result_.viommu_path);
    label("vpci_pcie", result_.pci_path);
    if (grant_created_) label("xen_grant_dma", result_.grant_path);
  }

  const BindPlan& plan_;
  const std::span<const std::uint32_t> vsids_;
  const BindOptions& options_;
  BindResult& result_;

  bool grant_created_ = false;
  std::set<std::uint32_t> used_phandles_;
  std::uint32_t phandle_cursor_ = 1;
};

}  // namespace

Status build_guest(const BindPlan& plan, std::span<const std::uint32_t> vsids,
                   const BindOptions& options, BindResult& result) {
  return GuestBuilder(plan, vsids, options, result).run();
}

}  // namespace vpci::dt
