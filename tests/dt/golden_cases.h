// The binds of small handmade trees (tests/dt/data) whose outputs are pinned by
// golden files: the guest tree as sorted DTS, <name>-guest.golden.dts
// (tests/dt/golden_test.cc), and the CLI's JSON map, <name>-map.golden.json
// (tests/tools/dt_bind_map_test.cc). One list, so both files always describe the
// same bind. Regenerate after an intended change with
//   VPCI_UPDATE_GOLDEN=1 build/release/bin/dt_golden_test
//   VPCI_UPDATE_GOLDEN=1 build/release/bin/tools_dt_bind_test
// and review the diff.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

#include "dt/bind.h"

namespace vpci::dt::testing {

struct GoldenCase {
  const char* name;
  const char* host;
  const char* partial;
  BindOptions options;
};

// The case called `name` ("soc", "soc-base", "grant"); fails the calling test and
// returns nullptr when there is none.
const GoldenCase* golden_case(std::string_view name);

// Binds the case's trees from tests/dt/data.
Result<BindResult> bind_golden_case(const GoldenCase& c);

// With VPCI_UPDATE_GOLDEN set, writes `actual` to `golden`; otherwise expects the
// file to hold exactly `actual`.
void compare_or_update(const std::filesystem::path& golden, const std::string& actual);

}  // namespace vpci::dt::testing
