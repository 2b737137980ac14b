// What a bind is asked to do, read from the partial tree, the host tree and the
// options before any vSID is given or any node added: the masters and PCI
// functions to bind, the physical streams they use, and the vSIDs chosen for them.
// Internal to bind_partial_tree (dt/bind.h): the vSID allocator (dt/bind_vsids.h)
// and the guest builder (dt/bind_guest.h) work from it.
#pragma once

#include <compare>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"
#include "dt/bind.h"
#include "dt/tree.h"

namespace vpci::dt {

// The partial tree's conventions (docs/device-tree.md, "Partial tree").
inline constexpr std::string_view kPassthroughPath = "/passthrough";
inline constexpr std::string_view kPciFunctionsPath = "/pci-passthrough";
inline constexpr std::string_view kVsidProperty = "vpci,vsid";
inline constexpr std::string_view kHostRidProperty = "vpci,host-rid";
inline constexpr std::string_view kBackendDomidProperty = "vpci,backend-domid";

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
  std::size_t key = 0;  // index into BindPlan::keys
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

struct BindPlan {
  // The distinct physical streams in order of first use, and the path of each
  // stream's first user (named when no vSID is left for it).
  std::vector<StreamKey> keys;
  std::vector<std::string> key_first_user;
  std::vector<MasterPlan> masters;         // under /passthrough, in tree order
  std::vector<PciFunctionPlan> functions;  // under /pci-passthrough, in tree order
};

// Collects the masters under /passthrough in `guest` (the clone of `partial` that
// becomes the guest tree: the plan points at its nodes so the builder can rewrite
// them) and the PCI functions under /pci-passthrough in `partial`, checks each
// against `host`, and attaches the chosen vSIDs: `options.vsid_requests` override
// the partial tree's `vpci,vsid` for the same master. Errors name the nodes.
Result<BindPlan> plan_bind(const Tree& host, const Tree& partial, Tree& guest,
                           const BindOptions& options);

}  // namespace vpci::dt
