#include "dt/bind_plan.h"

#include <algorithm>
#include <map>
#include <span>
#include <unordered_map>
#include <utility>

#include <fmt/ranges.h>

#include "base/xen_domid.h"
#include "dt/iommu.h"

namespace vpci::dt {
namespace {

std::string format_cells(std::span<const std::uint32_t> cells) {
  std::string out = "<";
  for (std::size_t i = 0; i < cells.size(); ++i)
    out += fmt::format("{}{:#x}", i == 0 ? "" : " ", cells[i]);
  return out + ">";
}

Result<std::optional<std::string>> string_property(const Node& node, std::string_view name) {
  const Property* p = node.property(name);
  if (p == nullptr) return std::optional<std::string>{};
  auto value = p->string();
  if (!value)
    return make_error(ErrorCode::kMalformedInput, "{} {} must be a single string", node.path(),
                      name);
  return std::optional<std::string>{std::move(*value)};
}

Result<std::optional<std::uint32_t>> u32_property(const Node& node, std::string_view name) {
  const Property* p = node.property(name);
  if (p == nullptr) return std::optional<std::uint32_t>{};
  const auto value = p->u32();
  if (!value)
    return make_error(ErrorCode::kMalformedInput, "{} {} must be one cell", node.path(), name);
  return std::optional<std::uint32_t>{*value};
}

Result<std::optional<VsidRequest>> partial_vsid_request(const Node& node) {
  const Property* p = node.property(kVsidProperty);
  if (p == nullptr) return std::optional<VsidRequest>{};
  const auto cells = p->cells();
  if (!cells || cells->empty()) {
    return make_error(ErrorCode::kMalformedInput, "{} {} must be one or more cells", node.path(),
                      kVsidProperty);
  }
  return std::optional<VsidRequest>{VsidRequest{node.path(), *cells}};
}

class Planner {
 public:
  Planner(const Tree& host, const BindOptions& options)
      : host_(host), options_(options), host_phandles_(host.phandle_index()) {}

  Result<BindPlan> run(const Tree& partial, Tree& guest) {
    if (Node* passthrough = guest.find(kPassthroughPath)) VPCI_TRY(collect_masters(*passthrough));
    if (const Node* functions = partial.find(kPciFunctionsPath))
      VPCI_TRY(collect_pci_functions(*functions));
    if (plan_.masters.empty() && plan_.functions.empty()) {
      return make_error(
          ErrorCode::kNotFound,
          "the partial tree lists nothing to bind: no node under {} has iommus or a host node with "
          "iommus, and there is no {} node",
          kPassthroughPath, kPciFunctionsPath);
    }
    VPCI_TRY(apply_requests());
    return std::move(plan_);
  }

 private:
  // Host lookups by path through an index built on first use: Tree::find scans
  // siblings, and a host with thousands of devices on one bus made binding
  // thousands of masters quadratic.
  const Node* find_host(const std::string& path) {
    if (host_paths_.empty()) {
      std::vector<std::pair<const Node*, std::string>> stack = {{&host_.root(), ""}};
      while (!stack.empty()) {
        auto [node, node_path] = std::move(stack.back());
        stack.pop_back();
        for (const auto& child : node->children())
          stack.emplace_back(child.get(), fmt::format("{}/{}", node_path, child->name()));
        host_paths_.emplace(node_path.empty() ? "/" : std::move(node_path), node);
      }
    }
    const auto it = host_paths_.find(path);
    return it != host_paths_.end() ? it->second : nullptr;
  }

  std::size_t key_index(StreamKey key, const std::string& first_user) {
    const auto [it, inserted] = key_lookup_.emplace(key, plan_.keys.size());
    if (inserted) {
      plan_.keys.push_back(std::move(key));
      plan_.key_first_user.push_back(first_user);
    }
    return it->second;
  }

  // The physical IOMMU behind a host phandle, with the checks every bound stream
  // needs: it exists, it is an IOMMU vpci knows, its specifiers have 1 or 2 cells.
  Result<IommuProvider> host_provider(std::uint32_t phandle, std::string_view user) {
    const auto it = host_phandles_.find(phandle);
    if (it == host_phandles_.end()) {
      return make_error(ErrorCode::kNotFound, "{}: dangling phandle {:#x} in the host tree", user,
                        phandle);
    }
    VPCI_ASSIGN_OR_RETURN(auto provider, parse_iommu_provider(*it->second));
    if (provider.kind == IommuKind::kUnknown || provider.kind == IommuKind::kXenGrant) {
      return make_error(
          ErrorCode::kUnsupported,
          "{}: unknown IOMMU provider {} (compatible \"{}\"); vpci binds streams of SMMUv1/v2, "
          "MMU-500, SMMUv3 and IPMMU providers",
          user, provider.path, fmt::join(provider.compatible, "\", \""));
    }
    if (provider.cells != 1 && provider.cells != 2) {
      return make_error(ErrorCode::kUnsupported,
                        "{}: {} has #iommu-cells = <{}>; vpci binds 1 (stream ID) or 2 "
                        "(stream ID, SMR mask)",
                        user, provider.path, provider.cells);
    }
    return provider;
  }

  Status collect_masters(Node& node) {
    for (const auto& child : node.children()) {
      VPCI_TRY(collect_master(*child));
      VPCI_TRY(collect_masters(*child));
    }
    return {};
  }

  Status collect_master(Node& node) {
    const std::string path = node.path();
    VPCI_ASSIGN_OR_RETURN(const auto xen_path, string_property(node, "xen,path"));
    const Property* partial_iommus = node.property("iommus");
    if (!xen_path) {
      if (partial_iommus != nullptr) {
        return make_error(ErrorCode::kMalformedInput,
                          "{} has iommus but no xen,path naming its host node, so its stream IDs "
                          "cannot be checked",
                          path);
      }
      if (node.has_property(kVsidProperty)) {
        return make_error(ErrorCode::kMalformedInput, "{} has {} but no xen,path", path,
                          kVsidProperty);
      }
      return {};
    }
    VPCI_TRY(check_xen_reg(node));
    const Node* host_node = find_host(*xen_path);
    if (host_node == nullptr) {
      return make_error(ErrorCode::kNotFound, "{}: xen,path \"{}\" does not exist in the host tree",
                        path, *xen_path);
    }
    if (!host_node->has_property("iommus")) {
      if (partial_iommus != nullptr) {
        return make_error(ErrorCode::kConflict, "{} has iommus but its host node {} has none", path,
                          *xen_path);
      }
      return {};  // a device without an IOMMU: nothing to bind
    }
    // xen,force-assign-without-iommu: the user asked Xen to assign the device
    // without IOMMU protection (Xen docs/misc/arm/device-tree/passthrough.txt).
    if (partial_iommus == nullptr && node.has_property("xen,force-assign-without-iommu")) return {};
    auto host_specifiers = parse_iommus(host_phandles_, *host_node);
    if (!host_specifiers)
      return tl::unexpected(std::move(host_specifiers).error().with_context(path));

    if (partial_iommus != nullptr)
      VPCI_TRY(check_partial_iommus(node, *partial_iommus, *host_node, *host_specifiers));

    MasterPlan plan;
    plan.guest_node = &node;
    plan.path = path;
    plan.host_path = *xen_path;
    for (std::size_t i = 0; i < host_specifiers->size(); ++i) {
      const IommuSpecifier& s = (*host_specifiers)[i];
      VPCI_ASSIGN_OR_RETURN(const auto provider,
                            host_provider(s.phandle, fmt::format("{} iommus entry {} (host {})",
                                                                 path, i, *xen_path)));
      const std::uint32_t mask = s.cells.size() > 1 ? s.cells[1] : provider.stream_match_mask;
      StreamUse use;
      use.key = key_index(StreamKey{provider.path, s.stream_id(), mask}, path);
      use.host_path = *xen_path;
      plan.uses.push_back(std::move(use));
    }
    VPCI_ASSIGN_OR_RETURN(plan.request, partial_vsid_request(node));
    if (plan.request) plan.request_origin = fmt::format("{} in {}", kVsidProperty, path);
    plan_.masters.push_back(std::move(plan));
    return {};
  }

  // Xen's `xen,reg` = list of <host address, size, guest address> in the cells of
  // the node's parent (docs/misc/arm/passthrough.txt); a list of another length
  // would be misread by Xen, so it is refused here with the node named.
  static Status check_xen_reg(const Node& node) {
    const Property* p = node.property("xen,reg");
    if (p == nullptr || node.parent() == nullptr) return {};
    const std::uint32_t ac = node.parent()->address_cells();
    const std::uint32_t sc = node.parent()->size_cells();
    const std::size_t entry = 2 * std::size_t{ac} + sc;
    const auto cells = p->cells();
    if (!cells || entry == 0 || cells->empty() || cells->size() % entry != 0) {
      return make_error(ErrorCode::kMalformedInput,
                        "{} xen,reg: {} bytes is not a list of <host address, size, guest address> "
                        "with the parent's "
                        "#address-cells = <{}> and #size-cells = <{}> ({} cells each)",
                        node.path(), p->value.size(), ac, sc, entry);
    }
    return {};
  }

  // The partial `iommus` must be the host's with each phandle replaced by the
  // placeholder 0 (or left as the host phandle): same entries, same cells.
  Status check_partial_iommus(const Node& node, const Property& partial_iommus,
                              const Node& host_node,
                              const std::vector<IommuSpecifier>& host_specifiers) {
    const auto cells = partial_iommus.cells();
    std::size_t expected = 0;
    for (const auto& s : host_specifiers) expected += 1 + s.cells.size();
    if (!cells || cells->size() != expected) {
      return make_error(ErrorCode::kMalformedInput,
                        "cell-count mismatch: {} iommus has {} bytes but host node {} has {} "
                        "specifier(s) taking {} "
                        "cells (the providers' #iommu-cells)",
                        node.path(), partial_iommus.value.size(), host_node.path(),
                        host_specifiers.size(), expected);
    }
    std::size_t at = 0;
    for (std::size_t i = 0; i < host_specifiers.size(); ++i) {
      const IommuSpecifier& host = host_specifiers[i];
      const std::uint32_t ph = (*cells)[at];
      if (ph != 0 && ph != host.phandle) {
        return make_error(
            ErrorCode::kConflict,
            "{} iommus entry {}: phandle {:#x} is neither the placeholder 0 nor the host IOMMU's "
            "phandle {:#x} (host node {})",
            node.path(), i, ph, host.phandle, host_node.path());
      }
      const std::span<const std::uint32_t> partial_cells(cells->data() + at + 1, host.cells.size());
      if (!std::equal(partial_cells.begin(), partial_cells.end(), host.cells.begin())) {
        return make_error(ErrorCode::kConflict,
                          "stream ID mismatch: {} iommus entry {} has {} but host node {} has {}",
                          node.path(), i, format_cells(partial_cells), host_node.path(),
                          format_cells(host.cells));
      }
      at += 1 + host.cells.size();
    }
    return {};
  }

  Status collect_pci_functions(const Node& container) {
    if (container.address_cells() != 1 || container.size_cells() != 0 ||
        !container.has_property("#address-cells") || !container.has_property("#size-cells")) {
      return make_error(ErrorCode::kMalformedInput,
                        "{} must have #address-cells = <1> and #size-cells = <0> (reg of a "
                        "function is its guest RID)",
                        container.path());
    }
    if (container.has_property("xen,path") || container.has_property("iommus")) {
      return make_error(ErrorCode::kMalformedInput,
                        "{} lists PCI functions in child nodes; it takes no xen,path or iommus",
                        container.path());
    }
    const std::uint32_t bus_count = static_cast<std::uint32_t>(options_.pci.ecam_size >> 20);
    std::map<std::uint32_t, std::string> rids;
    for (const auto& child : container.children()) {
      const Node& node = *child;
      const std::string path = node.path();
      if (!node.children().empty()) {
        return make_error(ErrorCode::kMalformedInput, "{}: a PCI function node has no child nodes",
                          path);
      }
      const Property* reg = node.property("reg");
      const auto rid = reg != nullptr ? reg->u32() : std::nullopt;
      if (!rid) {
        return make_error(
            ErrorCode::kMalformedInput,
            "{} needs reg = <guest RID> (bus << 8 | device << 3 | function), one cell", path);
      }
      if (*rid > 0xffff || (*rid >> 8) >= bus_count) {
        return make_error(ErrorCode::kOutOfRange,
                          "{}: guest RID {:#x} is outside the virtual bridge's buses 0-{}", path,
                          *rid, bus_count - 1);
      }
      if (const auto [it, inserted] = rids.emplace(*rid, path); !inserted) {
        return make_error(ErrorCode::kAlreadyExists, "{} and {} both claim guest RID {:#06x}",
                          it->second, path, *rid);
      }
      VPCI_ASSIGN_OR_RETURN(const auto domid, u32_property(node, kBackendDomidProperty));
      VPCI_ASSIGN_OR_RETURN(const auto xen_path, string_property(node, "xen,path"));
      PciFunctionPlan plan;
      plan.path = path;
      plan.rid = *rid;
      if (domid && xen_path) {
        return make_error(
            ErrorCode::kMalformedInput,
            "{} has both {} (a virtio-pci function) and xen,path (a passthrough function)", path,
            kBackendDomidProperty);
      }
      if (domid) {
        if (*domid >= vpci::xen::kDomidFirstReserved) {
          return make_error(ErrorCode::kOutOfRange,
                            "{}: backend domain ID {:#x} is a reserved Xen domain ID", path,
                            *domid);
        }
        if (node.has_property(kVsidProperty) || node.has_property(kHostRidProperty)) {
          return make_error(
              ErrorCode::kMalformedInput,
              "{}: a virtio-pci function uses grants, not the vIOMMU; it takes no {} or {}", path,
              kVsidProperty, kHostRidProperty);
        }
        plan.virtio = true;
        plan.backend_domid = *domid;
        plan_.functions.push_back(std::move(plan));
        continue;
      }
      if (!xen_path) {
        return make_error(ErrorCode::kMalformedInput,
                          "{} is neither a virtio-pci function ({} = <domid>) nor a passthrough "
                          "function (xen,path "
                          "= host bridge, {} = <host RID>)",
                          path, kBackendDomidProperty, kHostRidProperty);
      }
      VPCI_ASSIGN_OR_RETURN(const auto host_rid, u32_property(node, kHostRidProperty));
      if (!host_rid || *host_rid > 0xffff) {
        return make_error(ErrorCode::kMalformedInput,
                          "{} needs {} = <RID on the host bridge>, below 0x10000", path,
                          kHostRidProperty);
      }
      const Node* host_bridge_node = find_host(*xen_path);
      if (host_bridge_node == nullptr) {
        return make_error(ErrorCode::kNotFound,
                          "{}: xen,path \"{}\" does not exist in the host tree", path, *xen_path);
      }
      auto bridge = parse_pci_host_bridge(host_phandles_, *host_bridge_node);
      if (!bridge) return tl::unexpected(std::move(bridge).error().with_context(path));
      auto mapped = map_rid(*bridge, *host_rid);
      if (!mapped) return tl::unexpected(std::move(mapped).error().with_context(path));
      VPCI_ASSIGN_OR_RETURN(
          const auto provider,
          host_provider(mapped->phandle,
                        fmt::format("{} (host RID {:#06x} on {})", path, *host_rid, *xen_path)));
      // iommu-map gives only the stream ID; the mask is the IOMMU's
      // stream-match-mask (arm,smmu.yaml), as for a 1-cell specifier.
      plan.use.key =
          key_index(StreamKey{provider.path, mapped->id, provider.stream_match_mask}, path);
      plan.use.host_path = *xen_path;
      plan.use.rid = *rid;
      plan.use.host_rid = *host_rid;
      VPCI_ASSIGN_OR_RETURN(plan.request, partial_vsid_request(node));
      if (plan.request) plan.request_origin = fmt::format("{} in {}", kVsidProperty, path);
      plan_.functions.push_back(std::move(plan));
    }
    return {};
  }

  // Attaches command-line requests to their masters (overriding the partial
  // tree's property for the same master).
  Status apply_requests() {
    for (const auto& request : options_.vsid_requests) {
      bool matched = false;
      for (auto& m : plan_.masters) {
        if (m.path == request.path || m.host_path == request.path) {
          if (matched) {
            return make_error(ErrorCode::kConflict,
                              "--vsid {}: several passthrough nodes have this host path; name the "
                              "partial-tree node instead",
                              request.path);
          }
          m.request = request;
          m.request_origin = fmt::format("--vsid {}", request.path);
          matched = true;
        }
      }
      for (auto& f : plan_.functions) {
        if (f.path == request.path) {
          if (f.virtio) {
            return make_error(ErrorCode::kInvalidArgument,
                              "--vsid {}: a virtio-pci function has no vSID", request.path);
          }
          f.request = request;
          f.request_origin = fmt::format("--vsid {}", request.path);
          matched = true;
        }
      }
      if (!matched) {
        return make_error(ErrorCode::kNotFound,
                          "--vsid {}: no passthrough master or PCI function has this path",
                          request.path);
      }
    }
    return {};
  }

  const Tree& host_;
  const BindOptions& options_;
  const PhandleIndex host_phandles_;
  std::unordered_map<std::string, const Node*> host_paths_;
  std::map<StreamKey, std::size_t> key_lookup_;
  BindPlan plan_;
};

}  // namespace

Result<BindPlan> plan_bind(const Tree& host, const Tree& partial, Tree& guest,
                           const BindOptions& options) {
  return Planner(host, options).run(partial, guest);
}

}  // namespace vpci::dt
