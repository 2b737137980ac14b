#include "server/served_device.h"

#include <fmt/format.h>

#include "base/little_endian.h"
#include "devices/block_backend.h"
#include "devices/tap_backend.h"
#include "devices/virtio_blk.h"
#include "devices/virtio_net.h"
#include "devices/virtio_rng.h"
#include "pci/registers.h"
#include "server/image_lock.h"
#include "virtio/pci/transport_function.h"

namespace vpci::server {
namespace {

// notify = "mapped": how often an idle device looks at its rings. The guest's doorbells
// are memory writes nobody is told of, so this bounds the wait of the first request
// after a pause (later ones find the poll window open), and costs an idle device one
// timer wake-up per millisecond — a quarter of that after a second of idleness
// (QueuePoller's backoff; docs/PERFORMANCE.md: the window should cover the guest's pause
// between requests, or nearly every request waits for a look).
constexpr std::chrono::microseconds kMappedIdleLook{1000};

std::string format_bytes(std::uint64_t bytes) {
  if (bytes >= (1ull << 30) && bytes % (1ull << 30) == 0) return fmt::format("{} GiB", bytes >> 30);
  if (bytes >= (1ull << 20) && bytes % (1ull << 20) == 0) return fmt::format("{} MiB", bytes >> 20);
  return fmt::format("{} bytes", bytes);
}

// The MAC of a net device's function `vf` (0: the PF or the only function): VF n's is the
// PF's with n added to the last byte, so a host can tell the functions apart.
std::array<std::uint8_t, 6> net_mac(const ServedDeviceSpec& spec, unsigned vf) {
  auto mac = spec.mac.value_or(std::array<std::uint8_t, 6>{0x02});
  mac[5] = static_cast<std::uint8_t>(mac[5] + vf);
  return mac;
}

Result<std::unique_ptr<devices::NetDevice>> make_net_device(const ServedDeviceSpec& spec,
                                                            const std::string& tap_name,
                                                            std::array<std::uint8_t, 6> mac) {
  VPCI_ASSIGN_OR_RETURN(auto tap, devices::TapBackend::open(tap_name, spec.queues));
  devices::NetDeviceOptions options;
  options.mac = mac;
  options.queue_pairs = spec.queues;
  options.mtu = spec.mtu;
  options.mergeable_rx_buffers = spec.mergeable_rx_buffers;
  return devices::NetDevice::create(std::move(tap), options);
}

class VirtioServedDevice final : public ServedDevice {
 public:
  VirtioServedDevice(ServedDeviceSpec spec, devices::FileBlockBackend* backend,
                     const devices::BlockDevice* blk, const devices::NetDevice* net)
      : spec_(std::move(spec)), backend_(backend), blk_(blk), net_(net) {}

  [[nodiscard]] std::vector<std::string> device_stats() const override {
    std::vector<std::string> lines;
    if (blk_ != nullptr) {
      const auto& s = blk_->stats();
      lines.push_back(fmt::format(
          "{} requests: {} reads, {} writes, {} flushes, {} discards, {} write-zeroes; {} I/O "
          "errors, {} unsupported; {} through {}",
          s.requests, s.reads, s.writes, s.flushes, s.discards, s.write_zeroes, s.io_errors,
          s.unsupported, s.asynchronous,
          blk_->io_engine().empty() ? "no I/O engine" : std::string(blk_->io_engine())));
    }
    if (net_ != nullptr) {
      const auto& s = net_->stats();
      const auto queue = [&](std::string_view what, std::size_t pair,
                             const devices::NetQueueStats& q) {
        lines.push_back(fmt::format("{}{}: {} packets, {} bytes, {} drops{}", what, pair, q.packets,
                                    q.bytes, q.drops,
                                    what == "rx" ? fmt::format(", {} filtered", q.filtered) : ""));
      };
      for (std::size_t pair = 0; pair < s.receive.size(); ++pair) {
        queue("rx", pair, s.receive[pair]);
        queue("tx", pair, s.transmit[pair]);
      }
      lines.push_back(fmt::format(
          "control: {} commands, {} answered ERR; {} of {} queue pairs "
          "active",
          s.control_commands, s.control_errors, net_->active_pairs(), s.receive.size()));
    }
    return lines;
  }

  Status build(std::unique_ptr<virtio::Device> device,
               std::vector<std::unique_ptr<virtio::Device>> vf_devices) {
    virtio::pci::VirtioPciOptions options;
    // QEMU's vfio-user client emulates the MSI-X table and never forwards table
    // writes (reference vfio-user.md §5): vector messages leave unmasked and QEMU
    // applies the guest's masks.
    options.msix_owner = pci::MsixTableOwner::kBus;
    options.xen_backend_domid = spec_.xen_backend_domid;
    options.core.poll_window = std::chrono::microseconds(spec_.poll_us);
    options.core.coalescing = {std::chrono::microseconds(spec_.interrupt_delay_us),
                               spec_.interrupt_batch};
    if (spec_.notify == NotifyMode::kMapped) {
      options.notify_mappable = true;
      options.core.idle_poll = kMappedIdleLook;
    }
    // legacy-over-admin and sriov-pf: each command on the PF's admin queue, for --trace.
    options.core.admin_observer = [sink = admin_trace_](const virtio::admin::CommandRecord& r) {
      if (*sink) {
        (*sink)(fmt::format("admin {} group {} member {}: {}, used {} bytes",
                            virtio::admin::opcode_name(r.opcode), r.group_type, r.member,
                            virtio::admin::status_name(r.status, r.qualifier), r.used_length));
      }
    };
    // legacy-over-mmr: the guest sees the mapper's transitional device; the MMR device
    // behind it is only reachable through the mapper (seed 004's hypervisor-side variant
    // driver).
    VPCI_ASSIGN_OR_RETURN(
        function_, virtio::pci::make_transport_function(spec_.transport, std::move(device), memory_,
                                                        options, std::move(vf_devices)));
    ids_ = read_ids(*function_);
    return {};
  }

  void set_admin_trace(std::function<void(const std::string&)> sink) override {
    *admin_trace_ = std::move(sink);
  }

  [[nodiscard]] const ServedDeviceSpec& spec() const override { return spec_; }
  [[nodiscard]] pci::Function& function() override { return *function_; }
  [[nodiscard]] const std::shared_ptr<virtio::GuestMemory>& guest_memory() const override {
    return memory_;
  }

  Status flush() override {
    if (backend_ == nullptr || spec_.read_only) return {};
    return backend_->flush().map_error(
        [&](Error e) { return std::move(e).with_context(spec_.path.string()); });
  }

  [[nodiscard]] std::string describe() const override {
    std::string text =
        fmt::format("{}: {}, {}, {:04x}:{:04x} rev {}", spec_.name, device_kind_name(spec_.kind),
                    transport_kind_name(spec_.transport), ids_.vendor, ids_.device, ids_.revision);
    if (backend_ != nullptr) {
      text += fmt::format(", {} ({}{})", spec_.path.string(), format_bytes(backend_->size_bytes()),
                          spec_.read_only ? ", read-only" : "");
      if (spec_.queues > 1) text += fmt::format(", {} queues", spec_.queues);
      if (spec_.io != devices::BlockIoMode::kAuto)
        text +=
            fmt::format(", io {}", devices::kBlockIoModeNames[static_cast<std::size_t>(spec_.io)]);
    }
    if (spec_.kind == DeviceKind::kVirtioNet && spec_.mac) {
      const auto& m = *spec_.mac;
      text +=
          fmt::format(", tap {}, MAC {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}, {} queue pair(s)",
                      spec_.tap, m[0], m[1], m[2], m[3], m[4], m[5], spec_.queues);
      if (spec_.mtu != 0) text += fmt::format(", MTU {}", spec_.mtu);
    }
    if (spec_.transport == TransportKind::kSriovPf) {
      text += fmt::format(", {} VF(s)", spec_.vfs);
      if (spec_.kind == DeviceKind::kVirtioNet)
        text += fmt::format(" on taps {}..{}", vf_tap_name(spec_.tap, 1),
                            vf_tap_name(spec_.tap, spec_.vfs));
    }
    if (spec_.poll_us != 0) text += fmt::format(", polls {} us", spec_.poll_us);
    if (spec_.interrupt_delay_us != 0) {
      text += fmt::format(", interrupts coalesced up to {} us", spec_.interrupt_delay_us);
      if (spec_.interrupt_batch != 0) text += fmt::format(" or {} buffers", spec_.interrupt_batch);
    }
    if (spec_.notify == NotifyMode::kMapped)
      text +=
          fmt::format(", doorbells mapped (looks every {} us when idle, every {} us after {} ms)",
                      kMappedIdleLook.count(),
                      kMappedIdleLook.count() * virtio::QueuePoller::kIdleBackoffFactor,
                      virtio::QueuePoller::kDefaultBackoffAfter.count());
    if (spec_.xen_backend_domid)
      text += fmt::format(", Xen grants to domain {}", *spec_.xen_backend_domid);
    return text;
  }

 private:
  struct Ids {
    std::uint16_t vendor = 0;
    std::uint16_t device = 0;
    std::uint8_t revision = 0;
  };
  static Ids read_ids(pci::Function& function) {
    std::array<std::uint8_t, pci::reg::kRevisionId + 1> header{};
    (void)function.config_read(0, header);
    const std::span<const std::uint8_t> bytes(header);
    return Ids{load_le<std::uint16_t>(bytes.subspan(pci::reg::kVendorId)),
               load_le<std::uint16_t>(bytes.subspan(pci::reg::kDeviceId)),
               header[pci::reg::kRevisionId]};
  }

  ServedDeviceSpec spec_;
  // Shared with the admin observer the function holds (set_admin_trace fills it in later).
  std::shared_ptr<std::function<void(const std::string&)>> admin_trace_ =
      std::make_shared<std::function<void(const std::string&)>>();
  devices::FileBlockBackend* backend_;  // owned by the device inside the function
  const devices::BlockDevice* blk_;     // the device inside the function, if virtio-blk
  const devices::NetDevice* net_;       // the device inside the function, if virtio-net
  std::shared_ptr<virtio::GuestMemory> memory_ = std::make_shared<virtio::GuestMemory>();
  std::unique_ptr<pci::Function> function_;  // the transport (or the mapper around it)
  Ids ids_;
};

}  // namespace

Result<std::unique_ptr<ServedDevice>> ServedDevice::create(const ServedDeviceSpec& spec,
                                                           UniqueFd image) {
  std::unique_ptr<virtio::Device> device;
  devices::FileBlockBackend* backend = nullptr;
  const devices::BlockDevice* blk = nullptr;
  const devices::NetDevice* net = nullptr;
  switch (spec.kind) {
    case DeviceKind::kVirtioRng: device = std::make_unique<devices::RngDevice>(); break;
    case DeviceKind::kVirtioBlk: {
      if (!image.valid()) {
        VPCI_ASSIGN_OR_RETURN(image, open_locked_image(spec.path, spec.read_only));
      }
      VPCI_ASSIGN_OR_RETURN(auto file,
                            devices::FileBlockBackend::adopt(image.release(), spec.path.string()));
      backend = file.get();
      devices::BlockDeviceOptions options;
      options.read_only = spec.read_only;
      options.serial = spec.name.substr(0, 20);
      options.num_queues = spec.queues;
      options.io = spec.io;
      VPCI_ASSIGN_OR_RETURN(auto block, devices::BlockDevice::create(std::move(file), options));
      blk = block.get();
      device = std::move(block);
      break;
    }
    case DeviceKind::kVirtioNet: {
      VPCI_ASSIGN_OR_RETURN(auto network, make_net_device(spec, spec.tap, net_mac(spec, 0)));
      net = network.get();
      device = std::move(network);
      break;
    }
  }
  // sriov-pf: each VF a device of the PF's kind with a back end of its own.
  std::vector<std::unique_ptr<virtio::Device>> vf_devices;
  for (unsigned vf = 1; spec.transport == TransportKind::kSriovPf && vf <= spec.vfs; ++vf) {
    if (spec.kind == DeviceKind::kVirtioNet) {
      VPCI_ASSIGN_OR_RETURN(auto network,
                            make_net_device(spec, vf_tap_name(spec.tap, vf), net_mac(spec, vf)));
      vf_devices.push_back(std::move(network));
    } else if (spec.kind == DeviceKind::kVirtioRng) {
      vf_devices.push_back(std::make_unique<devices::RngDevice>());
    } else {
      return make_error(ErrorCode::kInvalidArgument, "{}: a {} device has no VFs", spec.name,
                        device_kind_name(spec.kind));
    }
  }
  auto served = std::make_unique<VirtioServedDevice>(spec, backend, blk, net);
  VPCI_TRY(served->build(std::move(device), std::move(vf_devices)));
  return std::unique_ptr<ServedDevice>(std::move(served));
}

}  // namespace vpci::server
