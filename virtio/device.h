// The device-type side of a virtio device (virtio-blk, virtio-rng, ...): what differs
// between device types, and nothing a transport or the generic core already handles.
//
// A `Device` is owned by a `DeviceCore` (virtio/device_core.h), which does feature
// negotiation, the status state machine, queue setup and validation, and notifications.
// The core calls the device on the transport's thread; the device talks back through
// the `DeviceHost` it is given when attached.
#pragma once

#include <cstdint>
#include <span>

#include "base/error.h"
#include "base/event_loop.h"
#include "virtio/virtqueue.h"

namespace vpci::virtio {

// Services the core offers to its device.
class DeviceHost {
 public:
  // The features both sides agreed on (valid from FEATURES_OK, or DRIVER_OK for a
  // legacy driver); 0 before.
  [[nodiscard]] virtual std::uint64_t negotiated_features() const = 0;
  // The device changed its configuration space: bump config_generation and send a
  // configuration change notification (§2.5, §2.3).
  virtual void config_changed() = 0;
  // The device hit an error it cannot recover from without a reset (§2.1.2).
  virtual void device_failed(const Error& error) = 0;
  // Queue `index` (nullptr if there is none), for devices that fill buffers when their
  // back end has data rather than when the driver notifies (virtio-net receive).
  [[nodiscard]] virtual Virtqueue* queue(std::uint16_t index) = 0;

 protected:
  ~DeviceHost() = default;
};

class Device {
 public:
  virtual ~Device() = default;

  // Virtio device ID (§5, e.g. 2 for block).
  [[nodiscard]] virtual std::uint32_t device_id() const = 0;
  // Device-type feature bits (0-23 and 50+); the core adds the transport and ring bits
  // it supports (VERSION_1, RING_PACKED, ...). Must not include bits 24-49.
  [[nodiscard]] virtual std::uint64_t device_features() const = 0;
  [[nodiscard]] virtual std::uint16_t num_queues() const = 0;
  // Largest queue size the device accepts for `queue` (queue_size at reset).
  [[nodiscard]] virtual std::uint16_t max_queue_size(std::uint16_t queue) const = 0;

  // Device configuration space (§2.5), little-endian. The core has checked that
  // [offset, offset + size) lies inside config_size().
  [[nodiscard]] virtual std::uint32_t config_size() const = 0;
  virtual void read_config(std::uint32_t offset, std::span<std::uint8_t> out) const = 0;
  // Writes to read-only fields are ignored (the default).
  virtual void write_config(std::uint32_t offset, std::span<const std::uint8_t> data) {
    (void)offset;
    (void)data;
  }

  // Called when the driver sets FEATURES_OK with `features` (already a subset of the
  // offer). An error refuses FEATURES_OK (§2.2.2).
  [[nodiscard]] virtual Status accept_features(std::uint64_t features) {
    (void)features;
    return {};
  }
  // Called when the driver sets DRIVER_OK, with the event loop the device runs on
  // (base/event_loop.h; nullptr when the bus has none, e.g. in-process tests). A device
  // with a back end of its own (a tap, an io_uring) registers its sources on `loop` here
  // and removes them in reset(); one that needs a loop and gets none returns an error.
  // An error sets DEVICE_NEEDS_RESET.
  [[nodiscard]] virtual Status activate(EventLoop* loop) {
    (void)loop;
    return {};
  }
  // Available buffer notification for `queue` (running, DRIVER_OK set). Synchronous
  // devices pop and complete every chain here; the core sends the used buffer
  // notification afterwards. Asynchronous devices pop here, complete chains later from
  // their back end's callbacks on the loop — in any order — and then call
  // Virtqueue::notify_driver_if_needed(), which applies EVENT_IDX / NO_INTERRUPT.
  virtual void process_queue(Virtqueue& queue) = 0;
  // Device reset (§2.4): drop all per-session state. Queues are reset by the core.
  virtual void reset() {}
  // One queue was reset (§2.6.1, VIRTIO_F_RING_RESET): drop work queued for it.
  virtual void reset_queue(std::uint16_t queue) { (void)queue; }
  // Blocks until every request handed to the back end has completed (its chain is back
  // in the used ring), so no back end touches guest memory after this returns. Called
  // before guest memory is unmapped and before the device is destroyed; bounded by the
  // back end's own I/O time. Synchronous devices have nothing in flight.
  virtual void drain() {}

  void attach(DeviceHost* host) { host_ = host; }

 protected:
  [[nodiscard]] DeviceHost* host() const { return host_; }

 private:
  DeviceHost* host_ = nullptr;
};

}  // namespace vpci::virtio
