#include "dt/bind.h"

#include <utility>

#include "dt/bind_guest.h"
#include "dt/bind_plan.h"
#include "dt/bind_vsids.h"
#include "dt/iommu.h"

namespace vpci::dt {
namespace {

Status check_inputs(const Tree& partial, const BindOptions& options) {
  if (options.vsid_limit == 0 || options.vsid_limit > (std::uint64_t{1} << 32)) {
    return make_error(ErrorCode::kInvalidArgument, "vSID limit {:#x} must be between 1 and 2^32",
                      options.vsid_limit);
  }
  if (options.vsid_base >= options.vsid_limit) {
    return make_error(ErrorCode::kOutOfRange, "vSID base {:#x} is not below the vSID limit {:#x}",
                      options.vsid_base, options.vsid_limit);
  }
  // Xen partial trees are plain trees copied verbatim, not overlays
  // (docs/misc/arm/passthrough.txt); an overlay's unresolved references would
  // survive into the guest as placeholders.
  if (partial.find("/__fixups__") != nullptr) {
    return make_error(ErrorCode::kUnsupported,
                      "the partial tree has __fixups__ (an overlay compiled with /plugin/); give "
                      "a complete tree");
  }
  const auto& pci = options.pci;
  if (pci.ecam_size == 0 || pci.ecam_size % (std::uint64_t{1} << 20) != 0 ||
      pci.ecam_size > (std::uint64_t{256} << 20)) {
    return make_error(
        ErrorCode::kInvalidArgument,
        "ECAM size {:#x} must be 1 to 256 MiB in whole MiB (one MiB of config space per bus)",
        pci.ecam_size);
  }
  if (options.viommu.size == 0)
    return make_error(ErrorCode::kInvalidArgument, "vIOMMU size must not be 0");
  if (!options.viommu.interrupt_names.empty() && options.viommu.interrupts.empty()) {
    return make_error(ErrorCode::kInvalidArgument,
                      "vIOMMU interrupt names given without interrupts");
  }
  return {};
}

// The guest must be internally consistent: every iommus, iommu-map and msi-map
// resolves in the guest's own phandle space (a placeholder 0 left outside
// /passthrough, or a host phandle copied verbatim, would dangle here), and every
// IOMMU node is well-formed. The same parser `vpci dt show` uses.
Status check_guest(const Tree& guest) {
  const Topology topology = parse_topology(guest);
  if (!topology.problems.empty()) {
    return tl::unexpected(
        topology.problems.front().with_context("the guest tree would be inconsistent"));
  }
  return {};
}

}  // namespace

// The order of the steps fixes which error an input with several problems reports:
// the options, then the partial and host trees (plan_bind), then chosen and free
// IDs (assign_vsids), then the names and addresses of the added nodes
// (build_guest), then the finished guest.
Result<BindResult> bind_partial_tree(const Tree& host, const Tree& partial,
                                     const BindOptions& options) {
  VPCI_TRY(check_inputs(partial, options));
  BindResult result;
  result.guest = partial.clone();
  VPCI_ASSIGN_OR_RETURN(const BindPlan plan, plan_bind(host, partial, result.guest, options));
  VPCI_ASSIGN_OR_RETURN(const auto vsids, assign_vsids(plan, options));
  VPCI_TRY(build_guest(plan, vsids, options, result));
  VPCI_TRY(check_guest(result.guest));
  return result;
}

}  // namespace vpci::dt
