// The vSID map `vpci dt bind --map-out` writes: dt::BindResult's table as JSON for
// image-build scripts (ImageBuilder, Yocto) that program the hypervisor's vSMMU.
// Library callers read the typed BindResult; only the CLI needs this text form.
#pragma once

#include <string>

#include "dt/bind.h"

namespace vpci::tools {

// The JSON map (stable key order, two-space indent, trailing newline):
//   {"viommu":{"path","phandle"} | null,
//    "masters":[{"path","piommu","psid","vsid","pmask","host_path"[,"rid","host_rid"]}],
//    "pci":{"path"} | null,
//    "grant_dma":{"path","phandle","functions":[{"path","rid","backend_domid"}]} | null}
std::string bind_map_json(const dt::BindResult& result);

}  // namespace vpci::tools
