// One device of a `vpci serve` process, built from its ServedDeviceSpec: the back end
// (entropy source or image file), the virtio device, its guest memory table, the
// virtio-pci transport: the pci::Function the vfio-user session drives.
//
//   ServedDeviceSpec ──▶ virtio::Device (rng / blk + FileBlockBackend)
//                         └▶ virtio-pci transport (modern | transitional | mmr)
//                             [└▶ legacy I/O → MMR mapper, for legacy-over-mmr]
//                                 ▲ VfioUserServer (socket_server.h), which feeds the
//                                   device's virtio::GuestMemory from DMA_MAP/UNMAP
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "base/error.h"
#include "pci/function.h"
#include "server/serve_config.h"
#include "server/unique_fd.h"
#include "virtio/guest_memory.h"

namespace vpci::server {

class ServedDevice {
 public:
  virtual ~ServedDevice() = default;

  // Opens the back end and builds the device; errors name the device and the file.
  // A virtio-blk image is opened and locked for as long as the device lives (shared
  // when read-only, else exclusive: server/image_lock.h), unless `image` already holds
  // it opened and locked by the caller (the default image of `vpci serve`).
  static Result<std::unique_ptr<ServedDevice>> create(const ServedDeviceSpec& spec,
                                                      UniqueFd image = UniqueFd());

  [[nodiscard]] virtual const ServedDeviceSpec& spec() const = 0;
  // What the vfio-user server serves.
  [[nodiscard]] virtual pci::Function& function() = 0;
  // The guest memory the device reads: what the server feeds with DMA_MAP/UNMAP.
  [[nodiscard]] virtual const std::shared_ptr<virtio::GuestMemory>& guest_memory() const = 0;
  // Makes everything the guest wrote durable (virtio-blk: fsync the image).
  virtual Status flush() = 0;
  // One line for the console: "blk0: virtio-blk, modern, 1af4:1042, disk.img (64 MiB)".
  [[nodiscard]] virtual std::string describe() const = 0;
  // What the device did, for `vpci serve --stats` ("rx0: 12 packets, ..."), one entry per
  // line; empty for devices that count nothing. Call once the device's loop has stopped.
  [[nodiscard]] virtual std::vector<std::string> device_stats() const { return {}; }
  // Where a line per admin command goes (`vpci serve --trace`; legacy-over-admin devices
  // only: opcode, group, member, status/qualifier). Set before the device's loop starts.
  virtual void set_admin_trace(std::function<void(const std::string&)> sink) { (void)sink; }
};

}  // namespace vpci::server
