// The `vpci serve` configuration: which devices one server process runs, read from
// TOML (docs/serve.md has the reference; `vpci serve` with no file uses
// kDefaultServeConfig).
//
//   socket_dir = "/run/vpci"          # optional; each device listens on <dir>/<name>.sock
//   [[device]]
//   name = "blk0"                     # [A-Za-z0-9_.-], 1-64 chars, unique
//   kind = "virtio-blk"               # virtio-rng | virtio-blk | virtio-net
//   transport = "transitional"        # modern | transitional | legacy | mmr |
//                                     # legacy-over-mmr | legacy-over-admin | sriov-pf
//   path = "disk.img"                 # virtio-blk only; relative to the config file
//   read_only = false                 # virtio-blk only
//   queues = 4                        # virtio-blk request queues (VIRTIO_BLK_F_MQ) or
//                                     # virtio-net queue pairs (VIRTIO_NET_F_MQ)
//   io = "auto"                       # virtio-blk only: auto | io_uring | threads
//   tap = "vtap0"                     # virtio-net only, required: opened or created
//   mac = "52:54:00:12:34:56"         # virtio-net only; default 02:... from the name
//   mtu = 1500                        # virtio-net only: offers VIRTIO_NET_F_MTU
//   mergeable_rx_buffers = true       # virtio-net only: offers VIRTIO_NET_F_MRG_RXBUF
//   xen_backend_domid = 1             # optional: adds the Xen grant capability
//   poll_us = 50                      # optional: poll served queues this long (0: off)
//   notify = "message"                # optional; "mapped": the guest maps the doorbells
//   interrupt_delay_us = 50           # optional: coalesce interrupts, at most this late
//   interrupt_batch = 4               # optional, with a delay: ... or this many buffers
//   vfs = 2                           # transport "sriov-pf" only, required: its VFs
//                                     # (virtio-net VF n uses the tap <tap>v<n>)
//
// Every problem is reported with the file, line and key ("serve.toml:7:8:
// device[2].kind: unknown kind \"virtio-rgn\" (did you mean \"virtio-rng\"?)"), and
// all of them are collected, not just the first.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"
#include "base/xen_domid.h"
#include "devices/block_io.h"
#include "virtio/pci/virtio_pci_function.h"

namespace vpci::server {

enum class DeviceKind : std::uint8_t { kVirtioRng, kVirtioBlk, kVirtioNet };
using virtio::pci::TransportKind;  // the one transport-kind enum (virtio/pci)

std::string_view device_kind_name(DeviceKind kind);
using virtio::pci::transport_kind_name;

// How the guest's doorbells reach the device (docs/serve.md "notify").
enum class NotifyMode : std::uint8_t {
  kMessage,  // each doorbell write is a REGION_WRITE message (posted)
  kMapped,   // the client maps the notification area; the device polls its rings
};
inline constexpr std::array<std::string_view, 2> kNotifyModeNames = {"message", "mapped"};

struct ServedDeviceSpec {
  std::string name;
  DeviceKind kind = DeviceKind::kVirtioRng;
  TransportKind transport = TransportKind::kModern;
  std::filesystem::path path;  // virtio-blk backing file, resolved against the config dir
  bool read_only = false;
  std::uint16_t queues = 1;                               // virtio-blk request queues
  devices::BlockIoMode io = devices::BlockIoMode::kAuto;  // virtio-blk I/O engine
  std::string tap;                                        // virtio-net: the tap's name
  std::optional<std::array<std::uint8_t, 6>> mac;         // virtio-net; parse fills the default
  std::uint16_t mtu = 0;                                  // virtio-net; 0: not offered (1500)
  bool mergeable_rx_buffers = true;                       // virtio-net: offer MRG_RXBUF
  std::optional<std::uint16_t> xen_backend_domid;
  std::uint16_t vfs = 0;      // sriov-pf: the PF's VFs (TotalVFs)
  std::uint32_t poll_us = 0;  // poll window after a served queue (CoreOptions::poll_window)
  NotifyMode notify = NotifyMode::kMessage;
  std::uint32_t interrupt_delay_us = 0;  // CoreOptions::coalescing.max_delay; 0: off
  std::uint32_t interrupt_batch = 0;     // CoreOptions::coalescing.max_batch; 0: no limit
  std::uint32_t line = 0;                // where the [[device]] table starts, for later messages
};

struct ServeConfig {
  std::string source;  // file name for messages ("<default>" for the embedded one)
  std::optional<std::filesystem::path> socket_dir;
  std::vector<ServedDeviceSpec> devices;
};

// Xen domain IDs a backend can have: those below DOMID_FIRST_RESERVED.
inline constexpr std::uint32_t kMaxBackendDomid = vpci::xen::kDomidFirstReserved - 1;
inline constexpr std::size_t kMaxDeviceNameLength = 64;
// virtio-blk request queues per device: as many as a large guest has vCPUs worth serving.
inline constexpr std::int64_t kMaxBlkQueues = 64;
// The longest poll window: a second of busy polling after the last request is already
// far beyond what pays (docs/serve.md).
inline constexpr std::int64_t kMaxPollMicroseconds = 1000000;
// Interrupt coalescing: at most 10 ms late (a longer hold only stalls a driver waiting
// for its completions); a batch of at most a split ring's largest size (§2.7).
inline constexpr std::int64_t kMaxInterruptDelayMicroseconds = 10000;
inline constexpr std::int64_t kMaxInterruptBatch = 32768;
// VFs of one sriov-pf device: each is a whole virtio function with its own back end.
inline constexpr std::int64_t kMaxVfs = 64;
// The tap of virtio-net VF `vf` (1-based) of a sriov-pf device whose own tap is `pf_tap`.
std::string vf_tap_name(std::string_view pf_tap, unsigned vf);
// One process serves at most this many devices (SECURITY.md: resource limits).
inline constexpr std::size_t kMaxServedDevices = 4096;

// Parses and validates `text`. `source` names the file in messages; relative `path`s
// resolve against `base_dir`. With `check_files`, virtio-blk paths must name existing
// regular files (or block devices) — the normal case; tests of the syntax alone pass
// false.
Result<ServeConfig> parse_serve_config(std::string_view text, std::string source,
                                       const std::filesystem::path& base_dir,
                                       bool check_files = true);
// Reads `file` (base/input_file.h) and parses it; relative paths resolve against the
// file's directory, made absolute.
Result<ServeConfig> load_serve_config(const std::filesystem::path& file);

// The configuration `vpci serve` runs without a file: a modern virtio-rng and a modern
// virtio-blk backed by `blk_image` (which the caller creates: a fresh 64 MiB image).
std::string default_serve_config_text(const std::filesystem::path& blk_image);
inline constexpr std::uint64_t kDefaultImageBytes = 64ull << 20;

}  // namespace vpci::server
