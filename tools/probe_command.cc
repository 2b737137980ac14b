// `vpci probe vfio-user:SOCKET [--legacy] [--intx] [--write SECTOR] [--message-dma]
// [--json] [--timeout MS]`: identifies the device a vfio-user server presents, brings it
// up with vpci's own virtio driver and runs a self-test suited to it (driver/
// device_probe.h), then leaves it reset. Exit 0 when it passes (or the device is not
// virtio: nothing to test), 1 when it fails, with what failed.
#include <chrono>
#include <memory>
#include <optional>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "client/vfio_user_client.h"
#include "driver/device_probe.h"
#include "driver/vfio_user_access.h"
#include "tools/cli_error.h"
#include "tools/commands.h"
#include "tools/vfio_user_source.h"

namespace vpci::tools {
namespace {

struct ProbeCliOptions {
  std::string source;
  bool legacy = false;
  bool intx = false;
  bool message_dma = false;
  bool json = false;
  std::optional<std::uint64_t> write_sector;
  int timeout_ms = 5000;
};

nlohmann::json report_json(const std::string& socket, const driver::ProbeReport& r) {
  nlohmann::json facts = nlohmann::json::object();
  for (const auto& [key, value] : r.facts) facts[key] = value;
  nlohmann::json out = {
      {"socket", socket},   {"vendor_id", r.vendor_id}, {"device_id", r.device_id},
      {"virtio", r.virtio}, {"type", r.type_name},      {"passed", r.passed},
      {"facts", facts}};
  if (r.virtio) {
    out["virtio_type"] = r.virtio_type;
    out["interface"] = r.interface;
    out["features"] = r.features;
  }
  if (!r.failure.empty()) out["failure"] = r.failure;
  return out;
}

std::string report_text(const std::string& socket, const driver::ProbeReport& r) {
  std::string text =
      fmt::format("{}: {:04x}:{:04x}, {}", socket, r.vendor_id, r.device_id, r.type_name);
  if (r.virtio) text += fmt::format(" ({} interface, features {:#x})", r.interface, r.features);
  text += "\n";
  for (const auto& [key, value] : r.facts) text += fmt::format("  {}: {}\n", key, value);
  text += r.passed ? "  result: pass\n" : fmt::format("  result: FAIL: {}\n", r.failure);
  return text;
}

int run_probe(const ProbeCliOptions& options) {
  if (!is_vfio_user_source(options.source)) {
    return usage_error("probe",
                       fmt::format("SOURCE \"{}\" is not vfio-user:SOCKET", options.source));
  }
  const std::string socket = vfio_user_socket(options.source);
  client::ClientOptions client_options;
  client_options.timeout = std::chrono::milliseconds(options.timeout_ms);
  auto connection = client::VfioUserClient::connect(socket, client_options);
  if (!connection) return rejected("probe", connection.error());
  auto access = driver::VfioUserAccess::create(**connection, options.message_dma);
  if (!access) return rejected("probe", access.error());
  driver::ProbeOptions probe_options;
  probe_options.legacy = options.legacy;
  probe_options.use_msix = !options.intx;
  probe_options.blk_scratch_sector = options.write_sector;
  probe_options.timeout = std::chrono::milliseconds(options.timeout_ms);
  auto report = driver::probe_device(**access, probe_options);
  if (!report) return rejected("probe", report.error());
  if (options.message_dma) {
    report->facts.emplace_back("DMA messages",
                               fmt::format("{} answered, {} refused", (*connection)->dma_requests(),
                                           (*connection)->dma_refused()));
  }
  if (options.json) {
    fmt::print("{}\n", report_json(socket, *report).dump(2));
  } else {
    fmt::print("{}", report_text(socket, *report));
  }
  if (!report->passed) {
    print_error("probe", fmt::format("{}: {} self-test failed: {}", socket, report->type_name,
                                     report->failure));
    return kExitRejected;
  }
  return kExitSuccess;
}

void register_probe_command(CLI::App& app, int& exit_code) {
  auto options = std::make_shared<ProbeCliOptions>();
  CLI::App* cmd = app.add_subcommand(
      "probe",
      "Identify the device a vfio-user server presents, drive it with vpci's virtio driver "
      "(rng: read bytes; blk: capacity and sector 0; net: MAC and link) and leave it reset");
  cmd->add_option("SOURCE", options->source, "vfio-user:SOCKET")->required();
  cmd->add_flag("--legacy", options->legacy,
                "drive the legacy interface (I/O BAR0, or an MMR device's window); without, "
                "the modern one when the device has it, else the legacy one");
  cmd->add_flag("--intx", options->intx, "use INTx and the ISR instead of MSI-X");
  cmd->add_flag("--message-dma", options->message_dma,
                "map the driver's memory without an fd: the server reaches it through "
                "DMA_READ/DMA_WRITE messages");
  cmd->add_option("--write", options->write_sector,
                  "blk: also write a pattern to this scratch sector, read it back and restore "
                  "what was there");
  cmd->add_flag("--json", options->json, "machine-readable output");
  cmd->add_option("--timeout", options->timeout_ms,
                  "milliseconds to wait for each reply and each request (default 5000)")
      ->check(CLI::Range(1, 3600000));
  cmd->callback([options, &exit_code] { exit_code = run_probe(*options); });
}

VPCI_REGISTER_COMMAND(register_probe_command);

}  // namespace
}  // namespace vpci::tools
