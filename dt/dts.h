// Writing a tree as DTS that keeps phandle references.
//
// `dtc -I dtb -O dts` prints phandles as plain numbers, and dtc 1.6.1 then warns on
// every such number when the DTS is compiled again ("iommus_property: cell 0 is not
// a phandle reference", checks.c check_property_phandle_args), even for upstream
// trees: the corpus juno.dtb gives 14 such warnings. This writer labels every node
// that is referenced and writes `&label` in the phandle cells of the properties
// whose layout is known (the phandle + "#...-cells" properties dtc checks, plus
// `iommu-map`, `msi-map` and `interrupt-parent`), so the output compiles with dtc's
// default checks and no warnings. Labels come from `__symbols__` when it names the
// node, else the node name with non-identifier characters replaced by '_'. Explicit `phandle`
// properties are kept, so compiling the output gives the same phandle values.
#pragma once

#include <string>

#include "dt/tree.h"

namespace vpci::dt {

std::string to_dts(const Tree& tree);

}  // namespace vpci::dt
