// Building the guest tree from a bind plan and its vSIDs. Internal to
// bind_partial_tree (dt/bind.h), which documents the nodes added.
#pragma once

#include <cstdint>
#include <span>

#include "base/error.h"
#include "dt/bind.h"
#include "dt/bind_plan.h"

namespace vpci::dt {

// Edits `result.guest` (the tree the plan's master nodes live in): adds the vIOMMU,
// rewrites every planned master's `iommus` to <&viommu vSID>, adds the virtual PCI
// host bridge and, for virtio-pci functions, a xen,grant-dma node, drops
// /pci-passthrough and updates __symbols__. Fills the rest of `result`. `vsids` has
// one vSID per `plan.keys` entry (assign_vsids, dt/bind_vsids.h).
Status build_guest(const BindPlan& plan, std::span<const std::uint32_t> vsids,
                   const BindOptions& options, BindResult& result);

}  // namespace vpci::dt
