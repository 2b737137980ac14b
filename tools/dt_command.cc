// `vpci dt bind --host H --partial P [-o OUT.dtb] [--dts-out OUT.dts] [--map-out MAP.json]
//               [--vsid PATH=ID[,ID...]]... [--vsid-base N] [--vsid-limit N] [...]`
// `vpci dt show FILE [--json]`
//
// bind writes nothing unless the whole bind succeeded: every output is produced in
// memory first, written to a temporary file beside its destination and renamed into
// place only when all of them were written.

#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "dt/bind.h"
#include "dt/dts.h"
#include "dt/iommu.h"
#include "dt/tree.h"
#include "tools/cli_error.h"
#include "tools/commands.h"
#include "tools/dt_bind_map.h"
#include "tools/dt_bind_options.h"
#include "tools/output_file.h"

namespace vpci::tools {
namespace {

struct BindCommandOptions {
  std::string host;
  std::string partial;
  std::string dtb_out;
  std::string dts_out;
  std::string map_out;
  BindOptionText binding;
};

struct ShowCommandOptions {
  std::string file;
  bool json = false;
};

Status bind_and_write(const BindCommandOptions& o, const dt::BindOptions& options) {
  auto host = dt::load_tree_file(o.host);
  if (!host) return tl::unexpected(std::move(host).error().with_context("--host"));
  auto partial = dt::load_tree_file(o.partial);
  if (!partial) return tl::unexpected(std::move(partial).error().with_context("--partial"));
  VPCI_ASSIGN_OR_RETURN(auto result, dt::bind_partial_tree(*host, *partial, options));
  VPCI_ASSIGN_OR_RETURN(auto blob, dt::serialize_dtb(result.guest));

  std::vector<OutputFile> files;
  if (!o.dtb_out.empty()) files.push_back({o.dtb_out, std::string(blob.begin(), blob.end())});
  if (!o.dts_out.empty() || (o.dtb_out.empty() && o.map_out.empty())) {
    const std::string dts = dt::to_dts(result.guest);
    if (o.dts_out.empty()) {
      // No output named: the guest tree as DTS on stdout.
      fmt::print("{}", dts);
    } else {
      files.push_back({o.dts_out, dts});
    }
  }
  if (!o.map_out.empty()) {
    const auto json = bind_map_json(result);
    files.push_back({o.map_out, json});
  }
  VPCI_TRY(write_output_files(files));
  if (!files.empty()) {
    fmt::print(stderr, "vpci dt bind: {} stream(s) bound to {} (phandle {:#x}){}{}\n",
               result.streams.size(), result.viommu_path.empty() ? "no vIOMMU" : result.viommu_path,
               result.viommu_phandle,
               result.pci_path.empty() ? "" : fmt::format(", PCI bridge {}", result.pci_path),
               result.grants.empty()
                   ? ""
                   : fmt::format(", {} virtio-pci grant route(s)", result.grants.size()));
  }
  return {};
}

// Option values that do not parse are usage errors; everything found wrong in the
// trees or while writing is rejected input (tools/cli_error.h).
int run_bind(const BindCommandOptions& o) {
  const auto options = parse_bind_options(o.binding);
  if (!options) return usage_error("dt bind", options.error().message);
  if (auto status = bind_and_write(o, *options); !status)
    return rejected("dt bind", status.error());
  return kExitSuccess;
}

std::string format_specifier(const dt::Topology& topology, const dt::IommuSpecifier& s) {
  const dt::IommuProvider* p = topology.provider_by_phandle(s.phandle);
  std::string out = p != nullptr ? p->path : fmt::format("phandle {:#x}", s.phandle);
  for (const auto c : s.cells) out += fmt::format(" {:#x}", c);
  return out;
}

std::string map_target(const dt::Tree& tree, std::uint32_t phandle) {
  const auto index = tree.phandle_index();
  const auto it = index.find(phandle);
  return it != index.end() ? it->second->path() : fmt::format("phandle {:#x}", phandle);
}

Status run_show(const ShowCommandOptions& o) {
  VPCI_ASSIGN_OR_RETURN(const auto tree, dt::load_tree_file(o.file));
  const dt::Topology topology = dt::parse_topology(tree);
  if (o.json) {
    using nlohmann::ordered_json;
    ordered_json out;
    out["iommus"] = ordered_json::array();
    for (const auto& p : topology.providers) {
      out["iommus"].push_back({{"path", p.path},
                               {"phandle", p.phandle},
                               {"kind", dt::iommu_kind_name(p.kind)},
                               {"compatible", p.compatible},
                               {"iommu_cells", p.cells},
                               {"enabled", p.enabled}});
    }
    out["masters"] = ordered_json::array();
    for (const auto& m : topology.masters) {
      ordered_json specs = ordered_json::array();
      for (const auto& s : m.specifiers) {
        const dt::IommuProvider* p = topology.provider_by_phandle(s.phandle);
        specs.push_back({{"iommu", p != nullptr ? p->path : std::string{}}, {"cells", s.cells}});
      }
      out["masters"].push_back({{"path", m.path}, {"enabled", m.enabled}, {"iommus", specs}});
    }
    out["pci_host_bridges"] = ordered_json::array();
    for (const auto& b : topology.bridges) {
      const auto entries = [&](const std::vector<dt::IdMapEntry>& map) {
        ordered_json list = ordered_json::array();
        for (const auto& e : map) {
          list.push_back({{"rid_base", e.rid_base},
                          {"target", map_target(tree, e.phandle)},
                          {"id_base", e.id_base},
                          {"length", e.length}});
        }
        return list;
      };
      out["pci_host_bridges"].push_back({{"path", b.path},
                                         {"bus_range", {b.bus_first, b.bus_last}},
                                         {"iommu_map", entries(b.iommu_map)},
                                         {"iommu_map_mask", b.iommu_map_mask},
                                         {"msi_map", entries(b.msi_map)},
                                         {"msi_map_mask", b.msi_map_mask}});
    }
    out["problems"] = ordered_json::array();
    for (const auto& e : topology.problems) out["problems"].push_back(e.message);
    // `compatible` strings are arbitrary bytes: replace what is not UTF-8.
    fmt::print("{}\n", out.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace));
    return {};
  }
  fmt::print("IOMMUs ({}):\n", topology.providers.size());
  for (const auto& p : topology.providers) {
    fmt::print("  {}  phandle {:#x}  {}  #iommu-cells={}  \"{}\"{}\n", p.path, p.phandle,
               dt::iommu_kind_name(p.kind), p.cells, fmt::join(p.compatible, "\", \""),
               p.enabled ? "" : "  (disabled)");
  }
  fmt::print("Masters ({}):\n", topology.masters.size());
  for (const auto& m : topology.masters) {
    fmt::print("  {}{}\n", m.path, m.enabled ? "" : "  (disabled)");
    for (const auto& s : m.specifiers) fmt::print("    -> {}\n", format_specifier(topology, s));
  }
  fmt::print("PCI host bridges with iommu-map/msi-map ({}):\n", topology.bridges.size());
  for (const auto& b : topology.bridges) {
    fmt::print("  {}  buses {:#x}-{:#x}\n", b.path, b.bus_first, b.bus_last);
    for (const auto& e : b.iommu_map) {
      fmt::print("    iommu-map RID {:#06x}+{:#x} -> {} ID {:#x} (mask {:#x})\n", e.rid_base,
                 e.length, map_target(tree, e.phandle), e.id_base, b.iommu_map_mask);
    }
    for (const auto& e : b.msi_map) {
      fmt::print("    msi-map   RID {:#06x}+{:#x} -> {} ID {:#x} (mask {:#x})\n", e.rid_base,
                 e.length, map_target(tree, e.phandle), e.id_base, b.msi_map_mask);
    }
  }
  if (!topology.problems.empty()) {
    fmt::print("Problems ({}):\n", topology.problems.size());
    for (const auto& e : topology.problems) fmt::print("  {}\n", e.message);
  }
  return {};
}

void register_dt_command(CLI::App& app, int& exit_code) {
  CLI::App* dt =
      app.add_subcommand("dt", "Guest device trees: bind passthrough devices to a virtual IOMMU");
  dt->require_subcommand(1);

  auto bind = std::make_shared<BindCommandOptions>();
  CLI::App* bind_cmd =
      dt->add_subcommand("bind",
                         "Bind a partial guest tree (Xen /passthrough conventions, "
                         "docs/device-tree.md) against the host tree: add a "
                         "vIOMMU, allocate virtual stream IDs, add a virtual PCI host bridge for "
                         "listed PCI functions");
  bind_cmd->add_option("--host", bind->host, "host device tree (DTB or DTS)")->required();
  bind_cmd->add_option("--partial", bind->partial, "partial guest device tree (DTB or DTS)")
      ->required();
  bind_cmd->add_option("-o,--output", bind->dtb_out, "write the guest tree as DTB");
  bind_cmd->add_option("--dts-out", bind->dts_out, "write the guest tree as DTS");
  bind_cmd->add_option("--map-out", bind->map_out, "write the vSID map as JSON");
  bind_cmd->add_option(
      "--vsid", bind->binding.vsids,
      "PATH=ID[,ID...]: choose the vSIDs of a master (partial-tree path or its xen,path), one ID "
      "per iommus specifier; repeatable");
  bind_cmd->add_option("--vsid-base", bind->binding.vsid_base,
                       "first vSID given automatically (default 0)");
  bind_cmd->add_option("--vsid-limit", bind->binding.vsid_limit,
                       "vSIDs must be below this (default 0x10000)");
  bind_cmd->add_option("--viommu-base", bind->binding.viommu_base,
                       "vIOMMU MMIO base (default 0x4040000)");
  bind_cmd->add_option("--viommu-size", bind->binding.viommu_size,
                       "vIOMMU MMIO size (default 0x40000)");
  bind_cmd->add_option("--viommu-interrupts", bind->binding.viommu_interrupts,
                       "vIOMMU interrupts property cells, e.g. \"0,70,1\" (default: none)");
  bind_cmd->add_option("--viommu-interrupt-names", bind->binding.viommu_interrupt_names,
                       "vIOMMU interrupt-names (combined | eventq gerror priq cmdq-sync)");
  bind_cmd->add_option("--pci-ecam", bind->binding.pci_ecam,
                       "virtual PCI bridge ECAM BASE,SIZE (default 0x10000000,0x10000000)");
  bind_cmd->add_option("--pci-mem32", bind->binding.pci_mem32,
                       "32-bit memory window BASE,SIZE (default 0x23000000,0x10000000)");
  bind_cmd->add_option(
      "--pci-mem64", bind->binding.pci_mem64,
      "64-bit prefetchable window BASE,SIZE (default 0x100000000,0x100000000; SIZE 0 omits it)");
  bind_cmd->callback([bind, &exit_code] { exit_code = run_bind(*bind); });

  auto show = std::make_shared<ShowCommandOptions>();
  CLI::App* show_cmd = dt->add_subcommand(
      "show", "List a device tree's IOMMUs, masters with their IDs, and PCI iommu-map/msi-map");
  show_cmd->add_option("FILE", show->file, "device tree (DTB or DTS)")->required();
  show_cmd->add_flag("--json", show->json, "machine-readable output");
  show_cmd->callback([show, &exit_code] {
    if (auto status = run_show(*show); !status) exit_code = rejected("dt show", status.error());
  });
}

VPCI_REGISTER_COMMAND(register_dt_command);

}  // namespace
}  // namespace vpci::tools
