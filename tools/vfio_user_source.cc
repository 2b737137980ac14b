#include "tools/vfio_user_source.h"

#include <algorithm>

#include <fmt/format.h>

#include "server/protocol.h"

namespace vpci::tools {
namespace {

namespace wire = vpci::server::vfio_user;

// Config spaces are 256 (conventional) or 4096 bytes (PCIe); a larger region is read up
// to 4096, a smaller one that is neither is what the server has.
constexpr std::uint64_t kMaxConfigBytes = 4096;

std::string region_name(std::uint32_t index) {
  if (index < client::kPciBarRegionCount) return fmt::format("BAR{}", index);
  switch (index) {
    case client::kPciRomRegion: return "ROM";
    case client::kPciConfigRegion: return "config";
    case client::kPciVgaRegion: return "VGA";
    default: return fmt::format("region {}", index);
  }
}

std::string irq_name(std::uint32_t index) {
  static constexpr std::array<const char*, 5> kNames = {"INTx", "MSI", "MSI-X", "ERR", "REQ"};
  return index < kNames.size() ? kNames[index] : fmt::format("IRQ index {}", index);
}

std::string flag_list(std::uint32_t flags,
                      std::initializer_list<std::pair<std::uint32_t, const char*>> names) {
  std::string out;
  for (const auto& [bit, name] : names) {
    if ((flags & bit) == 0) continue;
    if (!out.empty()) out += ",";
    out += name;
  }
  return out.empty() ? "-" : out;
}

std::string region_flags(std::uint32_t flags) {
  return flag_list(flags, {{wire::kRegionFlagRead, "read"},
                           {wire::kRegionFlagWrite, "write"},
                           {wire::kRegionFlagMmap, "mmap"},
                           {wire::kRegionFlagCaps, "caps"}});
}

std::string irq_flags(std::uint32_t flags) {
  return flag_list(flags, {{wire::kIrqInfoEventfd, "eventfd"},
                           {wire::kIrqInfoMaskable, "maskable"},
                           {wire::kIrqInfoAutomasked, "automasked"},
                           {wire::kIrqInfoNoResize, "noresize"}});
}

}  // namespace

Result<LiveDevice> read_vfio_user_device(std::string_view source,
                                         std::chrono::milliseconds timeout) {
  LiveDevice device;
  device.socket = vfio_user_socket(source);
  client::ClientOptions options;
  options.timeout = timeout;
  VPCI_ASSIGN_OR_RETURN(auto connection, client::VfioUserClient::connect(device.socket, options));
  device.version = connection->version();
  VPCI_ASSIGN_OR_RETURN(device.info, connection->device_info());
  if ((device.info.flags & wire::kDeviceFlagPci) == 0 ||
      device.info.num_regions <= client::kPciConfigRegion) {
    return make_error(ErrorCode::kUnsupported,
                      "vfio-user server {}: not a PCI device (GET_INFO flags {:#x}, {} regions; a "
                      "PCI device has the PCI flag and a config region, index 7)",
                      device.socket, device.info.flags, device.info.num_regions);
  }
  for (std::uint32_t i = 0; i < device.info.num_regions; ++i) {
    VPCI_ASSIGN_OR_RETURN(auto region, connection->region_info(i));
    device.regions.push_back(std::move(region));
  }
  for (std::uint32_t i = 0; i < device.info.num_irqs; ++i) {
    VPCI_ASSIGN_OR_RETURN(auto irq, connection->irq_info(i));
    device.irqs.push_back(irq);
  }
  const client::RegionInfo& config = device.regions[client::kPciConfigRegion];
  if (config.size == 0 || (config.flags & wire::kRegionFlagRead) == 0) {
    return make_error(ErrorCode::kUnsupported,
                      "vfio-user server {}: the config region is {} bytes with flags {}",
                      device.socket, config.size, region_flags(config.flags));
  }
  std::vector<std::uint8_t> bytes(std::min(config.size, kMaxConfigBytes));
  VPCI_TRY(connection->region_read(client::kPciConfigRegion, 0, bytes));
  VPCI_ASSIGN_OR_RETURN(device.dump, pci::parse_raw_config(bytes));
  device.dump.file = std::string(source);
  for (unsigned bar = 0; bar < client::kPciBarRegionCount; ++bar) {
    if (device.regions[bar].size != 0) device.dump.bar_sizes[bar] = device.regions[bar].size;
  }
  return device;
}

std::string live_device_text(const LiveDevice& device) {
  std::string text = fmt::format(
      "vfio-user server {}: protocol {}.{}, max_msg_fds {}, max_data_xfer_size {}, pgsizes "
      "{:#x}{}{}\n",
      device.socket, device.version.major, device.version.minor, device.version.max_msg_fds,
      device.version.max_data_xfer_size, device.version.pgsizes,
      device.version.write_multiple ? ", write_multiple" : "",
      device.version.migration ? ", migration" : "");
  text += fmt::format("  device: flags {}, {} regions, {} IRQ indexes\n",
                      flag_list(device.info.flags,
                                {{wire::kDeviceFlagReset, "reset"}, {wire::kDeviceFlagPci, "pci"}}),
                      device.info.num_regions, device.info.num_irqs);
  for (const auto& r : device.regions) {
    if (r.size == 0 && r.flags == 0) continue;  // an unimplemented region
    text += fmt::format("  region {} ({}): {:#x} bytes, {}{}", r.index, region_name(r.index),
                        r.size, region_flags(r.flags), r.has_fd ? ", fd" : "");
    for (const auto& area : r.sparse_mmap)
      text += fmt::format(", sparse mmap {:#x}+{:#x}", area.offset, area.size);
    if (r.type) text += fmt::format(", type {}/{}", r.type->first, r.type->second);
    text += "\n";
  }
  for (const auto& irq : device.irqs) {
    if (irq.count == 0) continue;
    text += fmt::format("  irq {} ({}): {} vector(s), {}\n", irq.index, irq_name(irq.index),
                        irq.count, irq_flags(irq.flags));
  }
  return text;
}

nlohmann::json live_device_json(const LiveDevice& device) {
  nlohmann::json regions = nlohmann::json::array();
  for (const auto& r : device.regions) {
    nlohmann::json region = {{"index", r.index},
                             {"name", region_name(r.index)},
                             {"size", r.size},
                             {"flags", r.flags},
                             {"readable", (r.flags & wire::kRegionFlagRead) != 0},
                             {"writable", (r.flags & wire::kRegionFlagWrite) != 0},
                             {"mmap", (r.flags & wire::kRegionFlagMmap) != 0},
                             {"fd", r.has_fd}};
    nlohmann::json sparse = nlohmann::json::array();
    for (const auto& area : r.sparse_mmap)
      sparse.push_back({{"offset", area.offset}, {"size", area.size}});
    region["sparse_mmap"] = sparse;
    if (r.type) region["type"] = {{"type", r.type->first}, {"subtype", r.type->second}};
    regions.push_back(region);
  }
  nlohmann::json irqs = nlohmann::json::array();
  for (const auto& irq : device.irqs) {
    irqs.push_back({{"index", irq.index},
                    {"name", irq_name(irq.index)},
                    {"count", irq.count},
                    {"flags", irq.flags}});
  }
  return {{"socket", device.socket},
          {"version",
           {{"major", device.version.major},
            {"minor", device.version.minor},
            {"max_msg_fds", device.version.max_msg_fds},
            {"max_data_xfer_size", device.version.max_data_xfer_size},
            {"pgsizes", device.version.pgsizes},
            {"max_dma_maps", device.version.max_dma_maps},
            {"write_multiple", device.version.write_multiple},
            {"migration", device.version.migration}}},
          {"device",
           {{"flags", device.info.flags},
            {"reset", (device.info.flags & wire::kDeviceFlagReset) != 0},
            {"num_regions", device.info.num_regions},
            {"num_irqs", device.info.num_irqs}}},
          {"regions", regions},
          {"irqs", irqs}};
}

}  // namespace vpci::tools
