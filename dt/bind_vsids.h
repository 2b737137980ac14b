// Giving every physical stream of a bind plan its vSID. Chosen IDs (the partial
// tree's `vpci,vsid`, BindOptions::vsid_requests) are checked first: in range, one
// ID per stream, one stream per ID. The remaining streams get the first free ID at
// or above BindOptions::vsid_base in order of first use, so the same inputs always
// give the same IDs. Internal to bind_partial_tree (dt/bind.h).
#pragma once

#include <cstdint>
#include <vector>

#include "base/error.h"
#include "dt/bind.h"
#include "dt/bind_plan.h"

namespace vpci::dt {

// One vSID per entry of `plan.keys`, in the same order.
Result<std::vector<std::uint32_t>> assign_vsids(const BindPlan& plan, const BindOptions& options);

}  // namespace vpci::dt
