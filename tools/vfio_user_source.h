// SOURCE "vfio-user:PATH" for `vpci inspect` and `vpci dump`: a live vfio-user server,
// read through the client (client/vfio_user_client.h) — VERSION, GET_INFO, every region's
// and IRQ index's info, and the config region, all read-only: nothing is written and the
// device is never reset, so a server in use by a guest is left as it was.
#pragma once

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "client/vfio_user_client.h"
#include "pci/dump.h"

namespace vpci::tools {

inline constexpr std::string_view kVfioUserPrefix = "vfio-user:";

[[nodiscard]] inline bool is_vfio_user_source(std::string_view source) {
  return source.starts_with(kVfioUserPrefix);
}
// The SOCKET of a vfio-user:SOCKET source.
[[nodiscard]] inline std::string vfio_user_socket(std::string_view source) {
  return std::string(source.substr(kVfioUserPrefix.size()));
}

struct LiveDevice {
  std::string socket;    // PATH
  pci::DeviceDump dump;  // the config region as a device (BAR sizes from regions 0-5)
  client::ServerVersion version;
  client::DeviceInfo info;
  std::vector<client::RegionInfo> regions;
  std::vector<client::IrqInfo> irqs;
};

Result<LiveDevice> read_vfio_user_device(std::string_view source,
                                         std::chrono::milliseconds timeout);

// "vfio-user server PATH: protocol 0.2, max_data_xfer_size ..., regions: ..." lines.
std::string live_device_text(const LiveDevice& device);
nlohmann::json live_device_json(const LiveDevice& device);

}  // namespace vpci::tools
