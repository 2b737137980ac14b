#include "dt/bind.h"

#include <algorithm>
#include <map>
#include <set>
#include <tuple>
#include <unordered_map>

#include <fmt/ranges.h>

#include "domain/xen_abi.h"
#include "dt/iommu.h"

namespace vpci::dt {
namespace {

constexpr std::string_view kPassthroughPath = "/passthrough";
constexpr std::string_view kPciFunctionsPath = "/pci-passthrough";
constexpr std::string_view kVsidProperty = "vpci,vsid";
constexpr std::string_view kHostRidProperty = "vpci,host-rid";
constexpr std::string_view kBackendDomidProperty = "vpci,backend-domid";

// The identity of a physical stream: the same stream ID on another IOMMU is another
// stream (Tegra234, Juno, R-Car reuse IDs across IOMMUs).
struct StreamKey {
  std::string piommu;
  std::uint32_t psid = 0;
  std::uint32_t pmask = 0;
  auto operator<=>(const StreamKey&) const = default;
};

// Where a stream was met and what the user asked for it.
struct StreamUse {
  std::size_t key = 0;  // index into Binder::keys_
  std::string host_path;
  std::optional<std::uint32_t> rid;
  std::optional<std::uint32_t> host_rid;
};

struct MasterPlan {
  Node* guest_node = nullptr;  // the node in the guest tree whose iommus is rewritten
  std::string path;            // its path (partial and guest paths are the same)
  std::string host_path;
  std::vector<StreamUse> uses;  // one per specifier
  std::optional<VsidRequest> request;
  std::string request_origin;
};

struct PciFunctionPlan {
  std::string path;  // in the partial tree
  std::uint32_t rid = 0;
  bool virtio = false;
  std::uint32_t backend_domid = 0;
  StreamUse use;  // passthrough only
  std::optional<VsidRequest> request;
  std::string request_origin;
};

std::string hex(std::uint64_t value) {
  return fmt::format("{:x}", value);
}

std::string format_cells(std::span<const std::uint32_t> cells) {
  std::string out = "<";
  for (std::size_t i = 0; i < cells.size(); ++i)
    out += fmt::format("{}{:#x}", i == 0 ? "" : " ", cells[i]);
  return out + ">";
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

class Binder {
 public:
  Binder(const Tree& host, const Tree& partial, const BindOptions& options)
      : host_(host), partial_(partial), options_(options), host_phandles_(host.phandle_index()) {}

  Result<BindResult> run() {
    VPCI_TRY(check_inputs());
    result_.guest = partial_.clone();
    if (Node* passthrough = result_.guest.find(kPassthroughPath))
      VPCI_TRY(collect_masters(*passthrough));
    if (const Node* functions = partial_.find(kPciFunctionsPath))
      VPCI_TRY(collect_pci_functions(*functions));
    if (masters_.empty() && functions_.empty()) {
      return make_error(
          ErrorCode::kNotFound,
          "the partial tree lists nothing to bind: no node under {} has iommus or a host node with "
          "iommus, and there is no {} node",
          kPassthroughPath, kPciFunctionsPath);
    }
    VPCI_TRY(apply_requests());
    VPCI_TRY(allocate());
    VPCI_TRY(build_guest());
    VPCI_TRY(check_guest());
    return std::move(result_);
  }

 private:
  Status check_inputs() {
    if (options_.vsid_limit == 0 || options_.vsid_limit > (std::uint64_t{1} << 32)) {
      return make_error(ErrorCode::kInvalidArgument, "vSID limit {:#x} must be between 1 and 2^32",
                        options_.vsid_limit);
    }
    if (options_.vsid_base >= options_.vsid_limit) {
      return make_error(ErrorCode::kOutOfRange, "vSID base {:#x} is not below the vSID limit {:#x}",
                        options_.vsid_base, options_.vsid_limit);
    }
    // Xen partial trees are plain trees copied verbatim, not overlays
    // (docs/misc/arm/passthrough.txt); an overlay's unresolved references would
    // survive into the guest as placeholders.
    if (partial_.find("/__fixups__") != nullptr) {
      return make_error(ErrorCode::kUnsupported,
                        "the partial tree has __fixups__ (an overlay compiled with /plugin/); give "
                        "a complete tree");
    }
    const auto& pci = options_.pci;
    if (pci.ecam_size == 0 || pci.ecam_size % (std::uint64_t{1} << 20) != 0 ||
        pci.ecam_size > (std::uint64_t{256} << 20)) {
      return make_error(
          ErrorCode::kInvalidArgument,
          "ECAM size {:#x} must be 1 to 256 MiB in whole MiB (one MiB of config space per bus)",
          pci.ecam_size);
    }
    if (options_.viommu.size == 0)
      return make_error(ErrorCode::kInvalidArgument, "vIOMMU size must not be 0");
    if (!options_.viommu.interrupt_names.empty() && options_.viommu.interrupts.empty()) {
      return make_error(ErrorCode::kInvalidArgument,
                        "vIOMMU interrupt names given without interrupts");
    }
    return {};
  }

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
    const auto [it, inserted] = key_lookup_.emplace(key, keys_.size());
    if (inserted) {
      keys_.push_back(std::move(key));
      key_first_user_.push_back(first_user);
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
    masters_.push_back(std::move(plan));
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
        if (*domid >= domain::xen::kDomidFirstReserved) {
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
        functions_.push_back(std::move(plan));
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
      functions_.push_back(std::move(plan));
    }
    return {};
  }

  // Attaches command-line requests to their masters (overriding the partial
  // tree's property for the same master).
  Status apply_requests() {
    for (const auto& request : options_.vsid_requests) {
      bool matched = false;
      for (auto& m : masters_) {
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
      for (auto& f : functions_) {
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

  // Records that `key` must get `vsid`, checking range and uniqueness.
  Status request(std::size_t key, std::uint32_t vsid, const std::string& origin) {
    if (vsid >= options_.vsid_limit) {
      return make_error(ErrorCode::kOutOfRange,
                        "{}: vSID {:#x} is outside the vIOMMU's ID space 0-{:#x}", origin, vsid,
                        options_.vsid_limit - 1);
    }
    if (assigned_[key]) {
      if (*assigned_[key] != vsid) {
        return make_error(ErrorCode::kConflict,
                          "{}: vSID {:#x} conflicts with vSID {:#x} chosen by {} for the same "
                          "physical stream ({} "
                          "stream {:#x} mask {:#x})",
                          origin, vsid, *assigned_[key], assigned_origin_[key], keys_[key].piommu,
                          keys_[key].psid, keys_[key].pmask);
      }
      return {};
    }
    if (const auto it = vsid_owner_.find(vsid); it != vsid_owner_.end()) {
      const StreamKey& other = keys_[it->second];
      return make_error(ErrorCode::kAlreadyExists,
                        "ID collision: {} asks for vSID {:#x} for {} stream {:#x}, but {} already "
                        "has it for {} stream "
                        "{:#x}",
                        origin, vsid, keys_[key].piommu, keys_[key].psid,
                        assigned_origin_[it->second], other.piommu, other.psid);
    }
    assigned_[key] = vsid;
    assigned_origin_[key] = origin;
    vsid_owner_.emplace(vsid, key);
    return {};
  }

  Status apply_user_ids(const std::vector<StreamUse*>& uses, const VsidRequest& req,
                        const std::string& origin, const std::string& path) {
    std::set<std::size_t> distinct;
    for (const StreamUse* u : uses) distinct.insert(u->key);
    if (req.vsids.size() == uses.size()) {
      for (std::size_t i = 0; i < uses.size(); ++i)
        VPCI_TRY(request(uses[i]->key, req.vsids[i], origin));
      return {};
    }
    if (req.vsids.size() == 1 && distinct.size() == 1)
      return request(uses.front()->key, req.vsids.front(), origin);
    return make_error(ErrorCode::kInvalidArgument,
                      "{}: {} has {} iommus specifier(s) ({} distinct stream(s)) but {} vSID(s) "
                      "were given; give one "
                      "per specifier",
                      origin, path, uses.size(), distinct.size(), req.vsids.size());
  }

  Status allocate() {
    assigned_.assign(keys_.size(), std::nullopt);
    assigned_origin_.assign(keys_.size(), std::string{});
    for (auto& m : masters_) {
      if (!m.request) continue;
      std::vector<StreamUse*> uses;
      for (auto& u : m.uses) uses.push_back(&u);
      VPCI_TRY(apply_user_ids(uses, *m.request, m.request_origin, m.path));
    }
    for (auto& f : functions_) {
      if (f.virtio || !f.request) continue;
      VPCI_TRY(apply_user_ids({&f.use}, *f.request, f.request_origin, f.path));
    }
    // First free at or above the base, keys in order of first appearance.
    std::uint64_t cursor = options_.vsid_base;
    for (std::size_t key = 0; key < keys_.size(); ++key) {
      if (assigned_[key]) continue;
      while (cursor < options_.vsid_limit &&
             vsid_owner_.count(static_cast<std::uint32_t>(cursor)) != 0)
        ++cursor;
      if (cursor >= options_.vsid_limit) {
        const std::size_t unassigned = static_cast<std::size_t>(std::count(
            assigned_.begin() + static_cast<std::ptrdiff_t>(key), assigned_.end(), std::nullopt));
        return make_error(
            ErrorCode::kNoSpace,
            "vSID space exhausted: {} more stream(s) need an ID (first: {} stream {:#x} of {}) but "
            "{:#x}-{:#x} is full",
            unassigned, keys_[key].piommu, keys_[key].psid, key_first_user_[key],
            options_.vsid_base, options_.vsid_limit - 1);
      }
      const auto vsid = static_cast<std::uint32_t>(cursor);
      assigned_[key] = vsid;
      assigned_origin_[key] = key_first_user_[key];
      vsid_owner_.emplace(vsid, key);
    }
    return {};
  }

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

  Status build_guest() {
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
        !masters_.empty() ||
        std::any_of(functions_.begin(), functions_.end(), [](const auto& f) { return !f.virtio; });
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

    for (auto& m : masters_) {
      std::vector<std::uint32_t> cells;
      for (const auto& u : m.uses) {
        const std::uint32_t vsid = *assigned_[u.key];
        cells.push_back(result_.viommu_phandle);
        cells.push_back(vsid);
        result_.streams.push_back(BoundStream{m.path,
                                              u.host_path,
                                              keys_[u.key].piommu,
                                              keys_[u.key].psid,
                                              keys_[u.key].pmask,
                                              vsid,
                                              {},
                                              {}});
      }
      m.guest_node->set_cells("iommus", cells);
      m.guest_node->remove_property(kVsidProperty);
    }

    if (!functions_.empty()) VPCI_TRY(add_pci_bridge(address_cells, size_cells));
    // The function list is vpci's input, not part of the guest.
    root.remove_child(kPciFunctionsPath.substr(1));
    if (Node* local_fixups = guest.find("/__local_fixups__"))
      local_fixups->remove_child(kPciFunctionsPath.substr(1));
    fix_symbols();
    return {};
  }

  Status add_pci_bridge(std::uint32_t address_cells, std::uint32_t size_cells) {
    Node& root = result_.guest.root();
    const auto& pci = options_.pci;
    const bool need_grant =
        std::any_of(functions_.begin(), functions_.end(), [](const auto& f) { return f.virtio; });
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
    for (auto& f : functions_) {
      if (f.virtio) {
        routes.push_back({f.rid, result_.grant_phandle, f.backend_domid});
        result_.grants.push_back(GrantRoute{f.path, f.rid, f.backend_domid});
      } else {
        const std::uint32_t vsid = *assigned_[f.use.key];
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

    for (auto& f : functions_) {
      if (f.virtio) continue;
      const std::uint32_t vsid = *assigned_[f.use.key];
      const StreamKey& key = keys_[f.use.key];
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

  // The guest must be internally consistent: every iommus, iommu-map and msi-map
  // resolves in the guest's own phandle space (a placeholder 0 left outside
  // /passthrough, or a host phandle copied verbatim, would dangle here), and every
  // IOMMU node is well-formed. The same parser `vpci dt show` uses.
  Status check_guest() {
    const Topology topology = parse_topology(result_.guest);
    if (!topology.problems.empty()) {
      return tl::unexpected(
          topology.problems.front().with_context("the guest tree would be inconsistent"));
    }
    return {};
  }

  const Tree& host_;
  const Tree& partial_;
  const BindOptions& options_;
  const PhandleIndex host_phandles_;
  std::unordered_map<std::string, const Node*> host_paths_;

  std::vector<StreamKey> keys_;
  std::vector<std::string> key_first_user_;
  std::map<StreamKey, std::size_t> key_lookup_;
  std::vector<MasterPlan> masters_;
  std::vector<PciFunctionPlan> functions_;

  std::vector<std::optional<std::uint32_t>> assigned_;
  std::vector<std::string> assigned_origin_;
  std::map<std::uint32_t, std::size_t> vsid_owner_;

  bool grant_created_ = false;
  std::set<std::uint32_t> used_phandles_;
  std::uint32_t phandle_cursor_ = 1;

  BindResult result_;
};

}  // namespace

Result<BindResult> bind_partial_tree(const Tree& host, const Tree& partial,
                                     const BindOptions& options) {
  return Binder(host, partial, options).run();
}

}  // namespace vpci::dt
