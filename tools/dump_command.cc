// `vpci dump SOURCE [--device BDF] [-o FILE] [--timeout MS]`: converts any supported
// source (lspci text, raw config file, sysfs device directory, a live vfio-user server)
// to `lspci -xxxx` text that
// `lspci -F FILE -vvv` decodes.
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>

#include <fmt/format.h>

#include "pci/dump.h"
#include "tools/cli_error.h"
#include "tools/commands.h"
#include "tools/output_file.h"
#include "tools/vfio_user_source.h"

namespace vpci::tools {
namespace {

struct DumpOptions {
  std::string source;
  std::string device;
  std::string output;
  int timeout_ms = 5000;  // vfio-user: each wait for the server
};

int run_dump(const DumpOptions& options) {
  // A malformed --device is a usage error whatever SOURCE holds (tools/cli_error.h).
  std::optional<pci::DeviceAddress> wanted;
  if (!options.device.empty()) {
    auto parsed = pci::parse_device_address(options.device);
    if (!parsed) return usage_error("dump", "--device: " + parsed.error().message);
    wanted = *parsed;
  }
  std::string comment = "written by vpci dump";
  Result<std::vector<pci::DeviceDump>> devices = std::vector<pci::DeviceDump>{};
  if (is_vfio_user_source(options.source)) {
    auto live =
        read_vfio_user_device(options.source, std::chrono::milliseconds(options.timeout_ms));
    if (!live) return rejected("dump", live.error());
    devices->push_back(std::move(live->dump));
    comment = fmt::format("read by vpci dump from vfio-user server {}", live->socket);
  } else {
    devices = pci::load_dump_source(options.source);
  }
  if (!devices) return rejected("dump", devices.error());
  std::string text;
  for (const auto& d : *devices) {
    if (wanted && !(d.address == *wanted)) continue;
    text += pci::format_lspci_dump(d.address, d.config, comment);
  }
  if (text.empty())
    return rejected("dump", fmt::format("{}: no device {}", options.source, wanted->to_string()));
  if (options.output.empty() || options.output == "-") {
    fmt::print("{}", text);
    return kExitSuccess;
  }
  if (auto written = write_file_atomically(options.output, text); !written)
    return rejected("dump", written.error());
  return kExitSuccess;
}

void register_dump_command(CLI::App& app, int& exit_code) {
  auto options = std::make_shared<DumpOptions>();
  CLI::App* cmd = app.add_subcommand(
      "dump", "Write config spaces as lspci -xxxx text (decodable with lspci -F FILE -vvv)");
  cmd->add_option(
         "SOURCE", options->source,
         "lspci -x/-xxx/-xxxx text, a raw config file, a /sys/bus/pci/devices/... directory, or "
         "vfio-user:SOCKET (a live vfio-user server, read-only)")
      ->required();
  cmd->add_option("--device", options->device, "only the device at this address");
  cmd->add_option("-o,--output", options->output, "output file (default: stdout)");
  cmd->add_option("--timeout", options->timeout_ms,
                  "vfio-user: milliseconds to wait for each reply of the server (default 5000)")
      ->check(CLI::Range(1, 3600000));
  cmd->callback([options, &exit_code] { exit_code = run_dump(*options); });
}

VPCI_REGISTER_COMMAND(register_dump_command);

}  // namespace
}  // namespace vpci::tools
