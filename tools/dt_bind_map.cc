#include "tools/dt_bind_map.h"

#include <utility>

#include <nlohmann/json.hpp>

namespace vpci::tools {

std::string bind_map_json(const dt::BindResult& result) {
  using nlohmann::ordered_json;
  ordered_json out;
  if (result.viommu_path.empty()) {
    out["viommu"] = nullptr;
  } else {
    out["viommu"] = {{"path", result.viommu_path}, {"phandle", result.viommu_phandle}};
  }
  out["masters"] = ordered_json::array();
  for (const auto& s : result.streams) {
    ordered_json m = {{"path", s.path}, {"piommu", s.piommu}, {"psid", s.psid},
                      {"vsid", s.vsid}, {"pmask", s.pmask},   {"host_path", s.host_path}};
    if (s.rid) m["rid"] = *s.rid;
    if (s.host_rid) m["host_rid"] = *s.host_rid;
    out["masters"].push_back(std::move(m));
  }
  out["pci"] =
      result.pci_path.empty() ? ordered_json(nullptr) : ordered_json{{"path", result.pci_path}};
  if (result.grant_path.empty()) {
    out["grant_dma"] = nullptr;
  } else {
    ordered_json functions = ordered_json::array();
    for (const auto& g : result.grants) {
      functions.push_back(
          {{"path", g.function}, {"rid", g.rid}, {"backend_domid", g.backend_domid}});
    }
    out["grant_dma"] = {
        {"path", result.grant_path}, {"phandle", result.grant_phandle}, {"functions", functions}};
  }
  // Paths are checked on load (dt/tree.h), so no replacement happens in practice; the
  // handler only guarantees dump() cannot throw.
  return out.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n";
}

}  // namespace vpci::tools
