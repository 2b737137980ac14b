// `vpci inspect SOURCE [--device BDF] [--json] [--map]`
#include <cstdio>
#include <memory>
#include <optional>

#include <fmt/format.h>

#include "pci/dump.h"
#include "tools/cli_error.h"
#include "tools/commands.h"
#include "tools/device_report.h"

namespace vpci::tools {
namespace {

struct InspectOptions {
  std::string source;
  std::string device;
  bool json = false;
  bool map = false;
};

int run_inspect(const InspectOptions& options) {
  // A malformed --device is a usage error whatever SOURCE holds (tools/cli_error.h).
  std::optional<pci::DeviceAddress> wanted;
  if (!options.device.empty()) {
    auto parsed = pci::parse_device_address(options.device);
    if (!parsed) return usage_error("inspect", "--device: " + parsed.error().message);
    wanted = *parsed;
  }
  auto devices = pci::load_dump_source(options.source);
  if (!devices) return rejected("inspect", devices.error());
  std::vector<pci::DeviceDump> selected;
  if (wanted) {
    for (auto& d : *devices) {
      if (d.address == *wanted) selected.push_back(std::move(d));
    }
    if (selected.empty()) {
      return rejected("inspect",
                      fmt::format("{}: no device {}", options.source, wanted->to_string()));
    }
  } else {
    selected = std::move(*devices);
  }
  PciNames names;
  std::vector<DeviceReport> reports;
  reports.reserve(selected.size());
  for (const auto& d : selected) reports.push_back(DeviceReport::build(d));
  if (options.map) {
    std::vector<MapPanel> panels;
    for (const auto& r : reports) panels.push_back(report_map_panel(r, names));
    fmt::print("{}", render_config_map_svg(panels));
    return 0;
  }
  if (options.json) {
    nlohmann::json out = {{"devices", nlohmann::json::array()}};
    for (const auto& r : reports) out["devices"].push_back(report_json(r));
    fmt::print("{}\n", out.dump(2));
    return 0;
  }
  for (std::size_t i = 0; i < reports.size(); ++i) {
    if (i != 0) fmt::print("\n");
    fmt::print("{}", report_text(reports[i], names));
  }
  return 0;
}

void register_inspect_command(CLI::App& app, int& exit_code) {
  auto options = std::make_shared<InspectOptions>();
  CLI::App* cmd = app.add_subcommand(
      "inspect",
      "Decode PCI config spaces: header, BARs, capabilities (virtio fields decoded), free "
      "ranges, diagnostics");
  cmd->add_option(
         "SOURCE", options->source,
         "lspci -x/-xxx/-xxxx text, a raw config file, or a /sys/bus/pci/devices/... directory")
      ->required();
  cmd->add_option("--device", options->device,
                  "only the device at this address (BB:DD.F or DDDD:BB:DD.F)");
  auto* json = cmd->add_flag("--json", options->json, "machine-readable output");
  cmd->add_flag("--map", options->map, "an SVG picture of each config space on stdout")
      ->excludes(json);
  cmd->callback([options, &exit_code] { exit_code = run_inspect(*options); });
}

VPCI_REGISTER_COMMAND(register_inspect_command);

}  // namespace
}  // namespace vpci::tools
