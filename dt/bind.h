// Binding a partial guest device tree to a virtual IOMMU — "like libacpi, but for
// device tree": a library a toolstack links (libxl-style, at domain build) and that
// `vpci dt bind` runs at image build time (ImageBuilder, Yocto, Zephyr, dom0less).
//
// Inputs
//   * the host tree, which holds the physical stream IDs (Xen strips `iommus` from
//     dom0's copy, so this must be the firmware/boot DTB, not /proc/device-tree of
//     dom0);
//   * a partial guest tree in Xen's conventions (docs/misc/arm/passthrough.txt):
//     nodes under `/passthrough` carry `xen,path` (the host node) and `xen,reg`, and
//     `iommus` copied from the host with 0 where the SMMU phandle was. vpci extends
//     this with optional chosen virtual IDs and with PCI functions; the whole input
//     format is described in docs/device-tree.md, "Partial tree".
//
// Output
//   * the guest tree: the partial tree plus one vIOMMU node (arm,smmu-v3,
//     `#iommu-cells = <1>`), every bound `iommus` rewritten to <&viommu vSID>, and,
//     when PCI functions are listed, a pci-host-ecam-generic bridge whose
//     `iommu-map` sends passthrough RIDs to the vIOMMU and virtio-pci RIDs to a
//     xen,grant-dma node with the backend's domain ID;
//   * the table the hypervisor needs: vSID -> (physical IOMMU, physical stream ID,
//     SMR mask).
//
// Virtual IDs are keyed on (physical IOMMU, stream ID, mask), never on the stream ID
// alone: Tegra234, Juno and R-Car reuse stream IDs on different IOMMUs. Masters that
// share a key share the vSID (the hardware cannot tell them apart either). Chosen IDs
// are checked first, then the remaining keys get the first free ID at or above
// `vsid_base`, in partial-tree order, so the same inputs always give the same output.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "base/error.h"
#include "dt/tree.h"

namespace vpci::dt {

// Phandles Xen's toolstack assigns itself (libxl_arm.c: GUEST_PHANDLE_GIC 65000,
// grant-dma IOMMU 65001; the vSMMUv3 series adds 65002). Partial trees are copied
// verbatim by libxl, so vpci never allocates these.
inline constexpr std::uint32_t kXenReservedPhandleFirst = 65000;
inline constexpr std::uint32_t kXenReservedPhandleLast = 65002;

struct VirtualIommuOptions {
  // GUEST_VSMMUV3_BASE / size of the unmerged Xen vSMMUv3 series.
  std::uint64_t base = 0x04040000;
  std::uint64_t size = 0x40000;
  // Raw `interrupts` cells in the guest interrupt controller's format (3 per GIC
  // interrupt) and optional `interrupt-names` (arm,smmu-v3.yaml: "combined" or an
  // ordered subset of eventq, gerror, priq, cmdq-sync). Empty: no interrupts, as in
  // the Xen series' node.
  std::vector<std::uint32_t> interrupts;
  std::vector<std::string> interrupt_names;
};

struct VirtualPciOptions {
  // libxl_arm.c's guest bridge: ECAM at 0x10000000 (256 MiB = buses 0-255), MEM32
  // window 0x23000000+256 MiB, MEM64 prefetchable 4 GiB at 4 GiB, PCI = CPU address.
  std::uint64_t ecam_base = 0x10000000;
  std::uint64_t ecam_size = 0x10000000;  // a multiple of 1 MiB: one MiB per bus
  std::uint64_t mem32_base = 0x23000000;
  std::uint64_t mem32_size = 0x10000000;
  std::uint64_t mem64_base = 0x100000000;
  std::uint64_t mem64_size = 0x100000000;
};

struct VsidRequest {
  // A partial-tree node path (`/passthrough/...` or `/pci-passthrough/...`) or the
  // host path a passthrough node names in `xen,path`.
  std::string path;
  // One ID per `iommus` specifier of that master, or a single ID when all its
  // specifiers name the same (IOMMU, stream ID, mask).
  std::vector<std::uint32_t> vsids;
};

struct BindOptions {
  // Automatic IDs are the first free ones at or above this.
  std::uint32_t vsid_base = 0;
  // IDs must be below this (exclusive): the vIOMMU's stream ID space. 2^16 matches
  // the 16-bit RID space PCI functions live in.
  std::uint64_t vsid_limit = 0x10000;
  // Chosen IDs; these override `vpci,vsid` in the partial tree for the same master.
  std::vector<VsidRequest> vsid_requests;
  VirtualIommuOptions viommu;
  VirtualPciOptions pci;
};

// One row of the hypervisor's table: a guest stream behind the vIOMMU.
struct BoundStream {
  std::string path;       // guest node whose `iommus` carries it (the PCI bridge for PCI functions)
  std::string host_path;  // host node it came from (host bridge for PCI functions)
  std::string piommu;     // host path of the physical IOMMU
  std::uint32_t psid = 0;
  std::uint32_t pmask =
      0;  // SMR mask: 2nd specifier cell, else the IOMMU's stream-match-mask, else 0
  std::uint32_t vsid = 0;
  std::optional<std::uint32_t> rid;       // guest RID, PCI functions only
  std::optional<std::uint32_t> host_rid;  // host RID, PCI functions only
};

// A virtio-pci function routed to a grant backend.
struct GrantRoute {
  std::string function;  // the partial tree's function node
  std::uint32_t rid = 0;
  std::uint32_t backend_domid = 0;
};

struct BindResult {
  Tree guest;
  std::string viommu_path;  // empty when nothing needed the vIOMMU
  std::uint32_t viommu_phandle = 0;
  std::string pci_path;    // the virtual host bridge, empty when no PCI function was listed
  std::string grant_path;  // the xen,grant-dma node, empty when no virtio-pci function was listed
  std::uint32_t grant_phandle = 0;
  std::vector<BoundStream> streams;  // platform masters in tree order, then PCI functions
  std::vector<GrantRoute> grants;
};

// Binds `partial` against `host`. Nothing is modified: the guest tree is a new tree.
// Errors name the nodes concerned: a missing `xen,path` target, partial and host
// `iommus` that disagree (both nodes named), dangling phandles, providers vpci does
// not know, cell-count mismatches, chosen IDs out of range or colliding, an exhausted
// ID space, malformed PCI function nodes.
Result<BindResult> bind_partial_tree(const Tree& host, const Tree& partial,
                                     const BindOptions& options = {});

}  // namespace vpci::dt
