// `vpci inspect SOURCE [--device BDF] [--json | --map] [--partial] [--strict] [--timeout MS]`
#include <cstdio>
#include <memory>
#include <optional>

#include <fmt/format.h>

#include "pci/dump.h"
#include "tools/cli_error.h"
#include "tools/commands.h"
#include "tools/device_report.h"
#include "tools/vfio_user_source.h"

namespace vpci::tools {
namespace {

struct InspectOptions {
  std::string source;
  std::string device;
  bool json = false;
  bool map = false;
  bool partial = false;
  bool strict = false;
  int timeout_ms = 5000;  // vfio-user: each wait for the server
};

// Where a device came from, for messages: "file:line: BDF" for lspci text (the device
// line), "file: BDF" otherwise (the sysfs `config` file, a raw file).
std::string device_position(const pci::DeviceDump& dump) {
  if (dump.line != 0)
    return fmt::format("{}:{}: {}", dump.file.string(), dump.line, dump.address.to_string());
  return fmt::format("{}: {}", dump.file.string(), dump.address.to_string());
}

void print_reports(const InspectOptions& options, const std::vector<DeviceReport>& reports,
                   PciNames& names, const std::optional<LiveDevice>& live) {
  if (options.map) {
    std::vector<MapPanel> panels;
    for (const auto& r : reports) panels.push_back(report_map_panel(r, names));
    fmt::print("{}", render_config_map_svg(panels));
    return;
  }
  if (options.json) {
    nlohmann::json out = {{"devices", nlohmann::json::array()}};
    for (const auto& r : reports) out["devices"].push_back(report_json(r, names));
    if (live) out["vfio_user"] = live_device_json(*live);
    fmt::print("{}\n", out.dump(2));
    return;
  }
  if (live) fmt::print("{}\n", live_device_text(*live));
  for (std::size_t i = 0; i < reports.size(); ++i) {
    if (i != 0) fmt::print("\n");
    fmt::print("{}", report_text(reports[i], names));
  }
}

int run_inspect(const InspectOptions& options) {
  // A malformed --device is a usage error whatever SOURCE holds (tools/cli_error.h).
  std::optional<pci::DeviceAddress> wanted;
  if (!options.device.empty()) {
    auto parsed = pci::parse_device_address(options.device);
    if (!parsed) return usage_error("inspect", "--device: " + parsed.error().message);
    wanted = *parsed;
  }
  // A live vfio-user server, read-only; otherwise a file or sysfs.
  std::optional<LiveDevice> live;
  Result<std::vector<pci::DeviceDump>> devices = std::vector<pci::DeviceDump>{};
  if (is_vfio_user_source(options.source)) {
    auto read =
        read_vfio_user_device(options.source, std::chrono::milliseconds(options.timeout_ms));
    if (!read) return rejected("inspect", read.error());
    live = std::move(*read);
    devices->push_back(live->dump);
  } else {
    devices = pci::load_dump_source(options.source);
  }
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
  std::vector<DeviceReport> reports;
  reports.reserve(selected.size());
  for (const auto& d : selected) reports.push_back(DeviceReport::build(d));

  // A truncated space is refused unless asked for: what was not read must never pass
  // for a complete view (or its bytes for free ones).
  if (!options.partial) {
    bool refused = false;
    for (std::size_t i = 0; i < reports.size(); ++i) {
      if (!reports[i].truncated()) continue;
      print_error("inspect",
                  fmt::format("{}: config space truncated: {}; --partial shows what was read",
                              device_position(selected[i]), truncation_summary(reports[i])));
      refused = true;
    }
    if (refused) return kExitRejected;
  }

  PciNames names;
  print_reports(options, reports, names, live);
  if (!options.strict) return kExitSuccess;
  bool problems = false;
  for (std::size_t i = 0; i < reports.size(); ++i) {
    for (const auto* d : reports[i].problems()) {
      const std::string at =
          d->offset ? fmt::format(" at {} {:#x}", pci::space_name(d->space), *d->offset) : "";
      print_error("inspect",
                  fmt::format("{}: {} [{}]{}: {} (--strict)", device_position(selected[i]),
                              pci::severity_name(d->severity), d->code, at, d->message));
      problems = true;
    }
  }
  return problems ? kExitRejected : kExitSuccess;
}

void register_inspect_command(CLI::App& app, int& exit_code) {
  auto options = std::make_shared<InspectOptions>();
  CLI::App* cmd = app.add_subcommand("inspect",
                                     "Decode PCI config spaces: header, BARs, bridge windows, "
                                     "subsystem, capabilities (MSI, MSI-X, DVSEC "
                                     "and virtio fields decoded), free ranges, diagnostics");
  cmd->add_option(
         "SOURCE", options->source,
         "lspci -x/-xxx/-xxxx text, a raw config file, a /sys/bus/pci/devices/... directory, a "
         "directory of those (/sys/bus/pci/devices), or vfio-user:SOCKET (a live vfio-user "
         "server: its config space, regions and IRQs, read-only)")
      ->required();
  cmd->add_option("--device", options->device,
                  "only the device at this address (BB:DD.F or DDDD:BB:DD.F)");
  auto* json = cmd->add_flag("--json", options->json, "machine-readable output");
  cmd->add_flag("--map", options->map, "an SVG picture of each config space on stdout")
      ->excludes(json);
  cmd->add_flag(
      "--partial", options->partial,
      "accept a truncated config space (lspci -x, sysfs read without root) and show what was read, "
      "the rest marked unread; without it a truncated space is refused (exit 1)");
  cmd->add_flag(
      "--strict", options->strict,
      "exit 1 when a device has a diagnostic (warning or error), after printing the report");
  cmd->add_option("--timeout", options->timeout_ms,
                  "vfio-user: milliseconds to wait for each reply of the server (default 5000)")
      ->check(CLI::Range(1, 3600000));
  cmd->callback([options, &exit_code] { exit_code = run_inspect(*options); });
}

VPCI_REGISTER_COMMAND(register_inspect_command);

}  // namespace
}  // namespace vpci::tools
