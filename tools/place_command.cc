// `vpci place SOURCE [--device BDF] [--pasid SPEC] [--add SPEC]... [--at OFF | --table FILE |
//  --search-gaps] [--hide ID|@OFF]... [-o OUT] [--json | --map]`
//
// Composes the guest view of a passed-through device (pci/placement.h): hides
// capabilities, places emulated extended capabilities (PASID first), and writes the
// result as an lspci -F decodable dump whose TAB-indented comment lines carry the
// placements and the emulated-register overlay (lspci and our reader skip such lines,
// pciutils lib/dump.c). docs/placement.md is the user documentation.

#include <cstdio>
#include <iterator>
#include <memory>
#include <optional>

#include <fmt/format.h>

#include "base/input_file.h"
#include "pci/dump.h"
#include "pci/placement.h"
#include "tools/cli_error.h"
#include "tools/commands.h"
#include "tools/device_report.h"
#include "tools/output_file.h"

namespace vpci::tools {
namespace {

struct PlaceOptions {
  std::string source;
  std::string device;
  std::string pasid;
  std::vector<std::string> add;
  std::string at;
  std::string table;
  bool search_gaps = false;
  std::vector<std::string> hide;
  std::string output;
  bool json = false;
  bool map = false;
};

std::string hex_bytes(const std::vector<std::uint8_t>& bytes, std::size_t begin, std::size_t end) {
  std::string text;
  for (std::size_t i = begin; i < end && i < bytes.size(); ++i) {
    text += fmt::format("{}{:02x}", text.empty() ? "" : " ", bytes[i]);
  }
  return text;
}

// pciutils refuses lines of 255 bytes or more (lib/dump.c); comments are cut well below.
std::string comment_line(std::string text) {
  constexpr std::size_t kMax = 240;
  if (text.size() > kMax) text = text.substr(0, kMax - 3) + "...";
  return "\t" + text + "\n";
}

std::string annotated_dump(const pci::DeviceAddress& address, const pci::PlacementResult& result,
                           const std::string& source) {
  std::string comments;
  for (const auto& p : result.placed) {
    comments += comment_line(
        fmt::format("vpci place: {} [ext {:#x} v{}] at {:#x}, {} bytes, rule {}: {}", p.label, p.id,
                    p.version, p.offset, p.length, pci::placement_rule_name(p.rule), p.detail));
  }
  for (const auto& h : result.hidden) {
    comments += comment_line(
        fmt::format("vpci place: hidden {} {:#x} {}{}: {}", pci::space_name(h.space), h.offset,
                    pci::capability_name(h.space, h.id),
                    h.id_zeroed ? " (ID zeroed, next kept)" : " (unlinked)", h.reason));
  }
  // One line per 16 bytes: offset+length, then the emulated and write masks.
  for (const auto& field : result.overlay) {
    for (std::size_t at = 0; at < field.value.size(); at += 16) {
      const std::size_t end = std::min(field.value.size(), at + 16);
      comments += comment_line(fmt::format("vpci overlay: {:#x}+{} emulated {} wmask {}  {}",
                                           field.offset + at, end - at,
                                           hex_bytes(field.emulated_mask, at, end),
                                           hex_bytes(field.write_mask, at, end), field.what));
    }
  }
  const std::string dump = pci::format_lspci_dump(
      address, result.guest.bytes(), fmt::format("guest view by vpci place from {}", source));
  const std::size_t first_line = dump.find('\n') + 1;
  return dump.substr(0, first_line) + comments + dump.substr(first_line);
}

bool is_binary_file(const std::string& path) {
  const auto text = read_input_file(path, kConfigSpaceInput);
  if (!text) return false;
  return !std::all_of(text->begin(), text->end(), [](char c) {
    const auto b = static_cast<unsigned char>(c);
    return b == '\n' || b == '\r' || b == '\t' || (b >= 0x20 && b < 0x7F);
  });
}

nlohmann::json ranges_json(const std::vector<pci::ConfigRange>& ranges) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& r : ranges) out.push_back({{"start", r.begin}, {"end", r.end}});
  return out;
}

// The guest view as a dump of its whole space, for the report and the map.
pci::DeviceDump guest_dump_of(const pci::DeviceDump& dump, const pci::PlacementResult& result) {
  pci::DeviceDump guest;
  guest.address = dump.address;
  guest.config.assign(result.guest.bytes().begin(), result.guest.bytes().end());
  pci::classify_dump_size(guest);
  return guest;
}

nlohmann::json result_json(const pci::DeviceDump& dump, const PlaceOptions& options,
                           const std::optional<pci::PasidSpec>& pasid,
                           const pci::PlacementResult& result) {
  nlohmann::json out;
  out["source"] = options.source;
  out["device"] = {{"bdf", dump.address.to_string()},
                   {"vendor_id", result.guest.raw16(pci::reg::kVendorId)},
                   {"device_id", result.guest.raw16(pci::reg::kDeviceId)}};
  if (pasid) {
    nlohmann::json p = {{"source", pci::pasid_source_name(pasid->source)},
                        {"max_width", pasid->fields.max_width},
                        {"exec", pasid->fields.execute},
                        {"priv", pasid->fields.privileged},
                        {"capability_register", pci::pasid_capability_register(pasid->fields)}};
    if (pasid->source == pci::PasidSource::kIommufd) {
      p["iommufd"] = {{"out_max_pasid_log2", pasid->iommufd.out_max_pasid_log2},
                      {"out_capabilities", pasid->iommufd.out_capabilities}};
    } else if (pasid->source == pci::PasidSource::kVfioFeature) {
      p["vfio_feature"] = {{"capabilities", pasid->vfio.capabilities},
                           {"width", pasid->vfio.width}};
    }
    out["pasid"] = std::move(p);
  }
  out["placed"] = nlohmann::json::array();
  for (const auto& p : result.placed) {
    out["placed"].push_back({{"id", p.id},
                             {"name", pci::capability_name(pci::CapabilitySpace::kExtended, p.id)},
                             {"label", p.label},
                             {"version", p.version},
                             {"offset", p.offset},
                             {"length", p.length},
                             {"rule", pci::placement_rule_name(p.rule)},
                             {"detail", p.detail}});
  }
  out["hidden"] = nlohmann::json::array();
  for (const auto& h : result.hidden) {
    out["hidden"].push_back({{"space", pci::space_name(h.space)},
                             {"offset", h.offset},
                             {"id", h.id},
                             {"name", pci::capability_name(h.space, h.id)},
                             {"length", h.length},
                             {"id_zeroed", h.id_zeroed},
                             {"reason", h.reason}});
  }
  out["free_space"] = nlohmann::json::array();
  for (const auto& f : result.free_space) {
    out["free_space"].push_back({{"rule", pci::placement_rule_name(f.rule)},
                                 {"status", pci::free_space_status_name(f.status)},
                                 {"detail", f.detail},
                                 {"ranges", ranges_json(f.ranges)}});
  }
  out["overlay"] = nlohmann::json::array();
  for (const auto& field : result.overlay) {
    out["overlay"].push_back(
        {{"offset", field.offset},
         {"length", field.value.size()},
         {"what", field.what},
         {"value", hex_bytes(field.value, 0, field.value.size())},
         {"emulated_mask", hex_bytes(field.emulated_mask, 0, field.value.size())},
         {"write_mask", hex_bytes(field.write_mask, 0, field.value.size())}});
  }
  out["warnings"] = result.warnings;
  out["output"] = options.output.empty() ? nlohmann::json(nullptr) : nlohmann::json(options.output);
  const pci::DeviceDump guest_dump = guest_dump_of(dump, result);
  PciNames names;
  out["guest"] = report_json(DeviceReport::build(guest_dump), names);
  return out;
}

// The source panel and the guest panel, with added capabilities and hidden ones marked.
std::string result_map(const pci::DeviceDump& dump, const pci::PlacementResult& result) {
  PciNames names;
  std::vector<MapPanel> panels;
  MapPanel before = report_map_panel(DeviceReport::build(dump), names);
  before.title += "  (source)";
  panels.push_back(std::move(before));
  const pci::DeviceDump guest_dump = guest_dump_of(dump, result);
  MapPanel after = report_map_panel(DeviceReport::build(guest_dump), names);
  after.title += "  (guest view)";
  for (auto& region : after.regions) {
    for (const auto& p : result.placed) {
      if (region.kind != MapRegionKind::kFree && region.begin == p.offset) {
        region.kind = MapRegionKind::kAdded;
        region.label = fmt::format("{} added ({})", p.label, pci::placement_rule_name(p.rule));
      }
    }
  }
  for (const auto& h : result.hidden) {
    // Drawn after the free ranges, so a hidden body shows as hidden, not as free.
    after.regions.push_back({h.offset, h.offset + h.length, MapRegionKind::kHidden,
                             fmt::format("hidden: {}", pci::capability_name(h.space, h.id))});
  }
  panels.push_back(std::move(after));
  return render_config_map_svg(panels);
}

std::string result_text(const pci::DeviceDump& dump, const PlaceOptions& options,
                        const pci::PlacementResult& result) {
  std::string out = fmt::format("{} -> {}\n", dump.address.to_string(), options.output);
  for (const auto& p : result.placed) {
    out += fmt::format("  placed {} [{:#x}] at {:#x} ({} bytes), rule {}: {}\n", p.label, p.id,
                       p.offset, p.length, pci::placement_rule_name(p.rule), p.detail);
  }
  for (const auto& h : result.hidden) {
    out += fmt::format("  hidden {} {:#x} {}{}: {}\n", pci::space_name(h.space), h.offset,
                       pci::capability_name(h.space, h.id),
                       h.id_zeroed ? " (ID zeroed, next kept)" : "", h.reason);
  }
  if (!result.free_space.empty()) out += "  free-space sources:\n";
  for (const auto& f : result.free_space) {
    out +=
        fmt::format("    {:<10} {}{}\n", pci::placement_rule_name(f.rule),
                    pci::free_space_status_name(f.status), f.detail.empty() ? "" : ": " + f.detail);
  }
  if (!result.overlay.empty()) out += "  emulated overlay:\n";
  for (const auto& field : result.overlay) {
    out += fmt::format("    {:#05x}+{:<3} wmask {}  {}\n", field.offset, field.value.size(),
                       hex_bytes(field.write_mask, 0, field.write_mask.size()), field.what);
  }
  return out;
}

int usage_error(const std::string& message) {
  return tools::usage_error("place", message);
}
int rejected(const Error& error) {
  return tools::rejected("place", error);
}

int run_place(const PlaceOptions& options) {
  if (options.pasid.empty() && options.add.empty() && options.hide.empty()) {
    return usage_error("nothing to do: give --pasid, --add or --hide");
  }
  if (!options.at.empty() && options.pasid.empty()) {
    return usage_error("--at places the --pasid capability; other capabilities take at= in --add");
  }
  pci::PlacementRequest request;
  std::optional<pci::PasidSpec> pasid;
  if (!options.pasid.empty()) {
    auto spec = pci::parse_pasid_spec(options.pasid);
    if (!spec) return usage_error(spec.error().message);
    std::optional<std::uint16_t> at;
    if (!options.at.empty()) {
      auto value = pci::parse_number(options.at, 0xFFFF);
      if (!value) return usage_error(fmt::format("--at: {}", value.error().message));
      at = static_cast<std::uint16_t>(*value);
    }
    pasid = *spec;
    request.add.push_back(pci::make_pasid_request(spec->fields, at));
  }
  for (const auto& text : options.add) {
    auto cap = pci::parse_capability_spec(text);
    if (!cap) return usage_error(cap.error().message);
    request.add.push_back(std::move(*cap));
  }
  for (const auto& text : options.hide) {
    auto hide = pci::parse_hide_spec(text);
    if (!hide) return usage_error(hide.error().message);
    request.hide.push_back(*hide);
  }
  std::optional<pci::DeviceAddress> wanted;
  if (!options.device.empty()) {
    auto parsed = pci::parse_device_address(options.device);
    if (!parsed) return usage_error(fmt::format("--device: {}", parsed.error().message));
    wanted = *parsed;
  }
  request.search_gaps = options.search_gaps;
  if (!options.table.empty()) {
    auto table = pci::load_free_space_table(options.table);
    if (!table) return rejected(table.error());
    request.table = std::move(*table);
  }

  auto devices = pci::load_dump_source(options.source);
  if (!devices) return rejected(devices.error());
  std::optional<pci::DeviceDump> selected;
  if (wanted) {
    for (auto& d : *devices) {
      if (d.address == *wanted) selected = std::move(d);
    }
    // A raw config file carries no address; --device gives it one.
    if (!selected && devices->size() == 1 && is_binary_file(options.source)) {
      selected = std::move(devices->front());
      selected->address = *wanted;
    }
    if (!selected) {
      return tools::rejected("place",
                             fmt::format("{}: no device {}", options.source, wanted->to_string()));
    }
  } else if (devices->size() == 1) {
    selected = std::move(devices->front());
  } else {
    std::string list;
    for (const auto& d : *devices) list += (list.empty() ? "" : ", ") + d.address.to_string();
    // Rejected, not usage: the same command line is right for a file with one device.
    return tools::rejected(
        "place", fmt::format("{}: holds {} devices ({}); choose one with --device", options.source,
                             devices->size(), list));
  }

  auto result = pci::place_capabilities(selected->config, request);
  if (!result)
    return tools::rejected("place", result.error().with_context(selected->address.to_string()));
  for (const auto& warning : result->warnings)
    fmt::print(stderr, "vpci place: warning: {}\n", warning);
  const std::string dump = annotated_dump(selected->address, *result, options.source);
  if (!options.output.empty()) {
    if (auto written = write_file_atomically(options.output, dump); !written)
      return rejected(written.error());
  }
  if (options.json) {
    fmt::print("{}\n", result_json(*selected, options, pasid, *result).dump(2));
  } else if (options.map) {
    fmt::print("{}", result_map(*selected, *result));
  } else if (!options.output.empty()) {
    fmt::print("{}", result_text(*selected, options, *result));
  } else {
    fmt::print("{}", dump);
  }
  return 0;
}

void register_place_command(CLI::App& app, int& exit_code) {
  auto options = std::make_shared<PlaceOptions>();
  CLI::App* cmd = app.add_subcommand(
      "place",
      "Compose a passed-through device's guest view: place emulated extended capabilities "
      "(PASID first), hide capabilities, report the emulated-register overlay");
  cmd->add_option("SOURCE", options->source,
                  "lspci -xxxx text, a raw config file, or a /sys/bus/pci/devices/... directory")
      ->required();
  cmd->add_option(
      "--device", options->device,
      "the device (BB:DD.F or DDDD:BB:DD.F); required when SOURCE holds several, names a "
      "raw config file");
  cmd->add_option("--pasid", options->pasid,
                  "add a PASID capability: width=N[,exec][,priv] | "
                  "iommufd,max_pasid_log2=N[,capabilities=X] | vfio,width=N[,capabilities=X]");
  // One value per occurrence (repeat the flag), so a following SOURCE is not swallowed.
  cmd->add_option(
         "--add", options->add,
         "add an extended capability: vsec,id=N[,rev=N][,data=HEX][,length=N][,at=OFF] | "
         "dvsec,vendor=N,id=N[,...] | raw,id=N[,version=N][,data=HEX][,wmask=HEX][,at=OFF] | "
         "free-space-gap,length=N[,at=OFF] | free-space-table,ranges=OFF+LEN[/...][,at=OFF]")
      ->allow_extra_args(false);
  auto* at =
      cmd->add_option("--at", options->at, "offset for the PASID capability (rule 1, explicit)");
  auto* table =
      cmd->add_option("--table", options->table,
                      "free-space table (TOML, keyed vendor:device[:subsystem]) (rule 2)");
  auto* gaps =
      cmd->add_flag("--search-gaps", options->search_gaps,
                    "when the default (tail) offset is taken, search for an unclaimed all-zero "
                    "range (rule 5; warns: holes can hold undocumented registers)");
  at->excludes(table)->excludes(gaps);
  table->excludes(gaps);
  cmd->add_option(
         "--hide", options->hide,
         "hide a capability: extended ID (0x1b), std:ID, or @OFFSET; the one at 0x100 keeps "
         "its next pointer with ID 0")
      ->allow_extra_args(false);
  cmd->add_option(
      "-o,--output", options->output,
      "write the guest view (lspci -F decodable, overlay in comment lines) to this file; "
      "written only on success");
  auto* json = cmd->add_flag("--json", options->json, "machine-readable result on stdout");
  cmd->add_flag("--map", options->map, "an SVG of the source and guest layouts on stdout")
      ->excludes(json);
  cmd->callback([options, &exit_code] { exit_code = run_place(*options); });
}

VPCI_REGISTER_COMMAND(register_place_command);

}  // namespace
}  // namespace vpci::tools
