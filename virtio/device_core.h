// DeviceCore: the transport-independent half of a virtio device, and the one object a
// transport (virtio-pci modern / legacy / transitional, an MMR window, vfio-user
// region accesses, virtio-mmio) drives.
//
//   transport ──calls──▶ DeviceCore ──calls──▶ Device (blk, rng, ...)
//       ▲                    │
//       └── InterruptSink ◀──┘   (used buffer / configuration change notifications)
//
// What the transport maps onto it (virtio 1.3 §4.1.4.3 common configuration):
//   device_feature_select / device_feature   → device_features_word(select)
//   driver_feature_select / driver_feature   → write_driver_features_word(select, v),
//                                              driver_features_word(select)
//   device_status                            → status(), write_status(v) (0 resets)
//   config_generation                        → config_generation()
//   num_queues                               → num_queues()
//   queue_select                             → the transport's own register; every
//                                              queue call takes the queue index
//   queue_size                               → queue_registers(q).size, set_queue_size
//   queue_desc / queue_driver / queue_device → set_queue_desc/driver/device (64-bit;
//                                              the transport assembles the halves)
//   queue_enable                             → enable_queue(q), queue_registers(q).enabled
//   queue_reset (VIRTIO_F_RING_RESET)        → reset_queue(q); reads back 0 at once
//   notify doorbell                          → notify(q)
//   device-specific configuration            → read_config / write_config
// The transport owns everything transport-specific: selectors, MSI-X vectors and their
// mapping from queue index, the ISR byte (set bit 0 in raise_queue_interrupt, bit 1 in
// raise_config_interrupt, clear on read), INTx, BAR layout, notify_off_multiplier.
//
// Legacy and transitional devices (virtio 1.3 §4.1.4.8, §2.7.2): call
// set_driver_interface(kLegacy) while the status is 0 once the driver is known to use
// the legacy interface. Then device_features_word(0) holds bits 0-31 only (VERSION_1
// and above are never offered), driver features apply as written, there is no
// FEATURES_OK step (features are latched at DRIVER_OK), queues have no size
// negotiation and are placed with set_legacy_queue_pfn(q, pfn) (descriptor table at
// pfn << 12, available ring after it, used ring at the next 4096-byte boundary;
// pfn 0 resets the queue).
//
// Status state machine (§2.1, §3.1.1): writing 0 resets the device. Otherwise the
// driver may only add bits (§2.1.1: it MUST NOT clear one; such a write is refused).
// FEATURES_OK is kept only if the driver's features are acceptable — a subset of the
// offer, including VERSION_1, ACCESS_PLATFORM when required, and whatever the device
// accepts (§2.2.2); the driver re-reads status to find out (§3.1.1 step 6). Feature
// writes after FEATURES_OK are refused. DRIVER_OK requires FEATURES_OK (modern) and
// activates the device; queues are processed only while DRIVER_OK is set and FAILED
// is not (§2.1.2). DEVICE_NEEDS_RESET is device-owned: set when a queue or the device
// fails, followed by a configuration change notification when DRIVER_OK is set
// (§2.1.2); only a reset clears it. The failed queue stops; other queues keep running.
//
// Configuration generation (§2.5, §4.1.4.3): bumped lazily — a change only marks the
// space dirty, and the next read of config_generation() increments it — so the 8-bit
// counter advances at most once per driver read loop.
//
// Errors: every method taking driver input returns a Status describing a refused
// access; transports usually just log it. Nothing here asserts on driver input.
//
// Threading: not thread-safe. The transport serialises all calls (one thread, or its
// own lock); the Device runs inside notify() on that thread; interrupts are raised from
// it too. Guest memory may change concurrently (see virtio/guest_memory.h).
//
// Processing model: notify(q) runs the device synchronously — it pops and completes
// every available chain before returning — then sends a used buffer notification if
// the driver wants one. Asynchronous devices can complete chains later on the same
// thread and call Virtqueue::notify_driver_if_needed() themselves. The device is never
// reentered: a notification that arrives while the device is working (the transport
// served a register access while the device waited for message-based DMA) is
// remembered and served, in queue order, when the current work returns. When guest
// memory is reached through messages and the device has an event loop, the work a
// register access asks for runs as deferred work on the loop, after that access has
// been answered (see process()).
//
// Admin virtqueue (§2.12, CoreOptions::admin_owner): offered with SR_IOV on the modern
// interface only; set up through queue_select like any queue once ADMIN_VQ is
// negotiated; its commands run in the core (admin_commands.h), never in the Device.
//
// Never offered (a transport must not advertise what the core does not do):
// VIRTIO_F_NOTIFICATION_DATA (doorbells carry only the queue index), IN_ORDER,
// ORDER_PLATFORM, NOTIF_CONFIG_DATA, SUSPEND, SR_IOV and ADMIN_VQ without an admin owner, and the
// legacy-only NOTIFY_ON_EMPTY. ANY_LAYOUT is offered on the legacy interface (devices never assume
// a descriptor layout).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <vector>

#include "base/error.h"
#include "virtio/admin_commands.h"
#include "virtio/device.h"
#include "virtio/guest_memory.h"
#include "virtio/interrupt_coalescer.h"
#include "virtio/queue_poller.h"
#include "virtio/ring_layout.h"
#include "virtio/virtqueue.h"

namespace vpci::virtio {

// Implemented by the transport.
class InterruptSink {
 public:
  // Used buffer notification for `queue` (§2.3): the queue's MSI-X vector, or ISR bit 0.
  virtual void raise_queue_interrupt(std::uint16_t queue) = 0;
  // Configuration change notification (§2.3): the config MSI-X vector, or ISR bit 1.
  virtual void raise_config_interrupt() = 0;

 protected:
  ~InterruptSink() = default;
};

enum class DriverInterface : std::uint8_t { kModern, kLegacy };

struct CoreOptions {
  bool offer_ring_packed = true;       // VIRTIO_F_RING_PACKED
  bool offer_event_idx = true;         // VIRTIO_F_EVENT_IDX
  bool offer_indirect_desc = true;     // VIRTIO_F_INDIRECT_DESC
  bool offer_ring_reset = true;        // VIRTIO_F_RING_RESET
  bool offer_access_platform = false;  // VIRTIO_F_ACCESS_PLATFORM (IOVA / Xen grants)
  // Refuse FEATURES_OK unless ACCESS_PLATFORM is accepted (§6.2 allows failing): set
  // when addresses are only meaningful through a translation (Xen grants, IOMMU).
  bool require_access_platform = false;
  // The owner of an SR-IOV group (virtio 1.3 §2.12): with it the core offers
  // VIRTIO_F_ADMIN_VQ and VIRTIO_F_SR_IOV and has one admin virtqueue, at index
  // num_queues(), whose commands AdminCommandEngine executes for this owner. Must outlive
  // the core.
  admin::LegacyMembers* admin_owner = nullptr;
  // Told of every admin command served (`vpci serve --trace`).
  std::function<void(const admin::CommandRecord&)> admin_observer = nullptr;
  // After serving a queue, poll it from the event loop for this long after the last
  // buffer found, with the driver's notifications suppressed (queue_poller.h); 0: off.
  // Only while guest memory is host-mapped (shared RAM), like idle_poll and coalescing.
  std::chrono::microseconds poll_window{0};
  // Notifications may never reach the device (a vfio-user client maps the notification
  // area: VirtioPciOptions::notify_mappable): from DRIVER_OK on, every enabled queue is
  // watched — polled through its window, then looked at every `idle_poll` — and never
  // asks for notifications (queue_poller.h). Only while some guest memory is
  // host-mapped (shared RAM): the vfio-user server maps doorbells under the same
  // condition. 0: the device relies on notifications.
  std::chrono::microseconds idle_poll{0};
  // A watched queue idle this long is looked at QueuePoller::kIdleBackoffFactor times less
  // often (queue_poller.h).
  std::chrono::milliseconds idle_backoff_after = QueuePoller::kDefaultBackoffAfter;
  // Hold used buffer notification checks back so completions share an interrupt
  // (interrupt_coalescer.h); only while guest memory is host-mapped. Off by default.
  CoalescingLimits coalescing{};
};

// Size of the admin virtqueue: Linux issues one command at a time per VF and spins on a
// full ring, so a small queue is plenty.
inline constexpr std::uint16_t kAdminQueueSize = 64;

struct QueueRegisters {
  std::uint16_t max_size = 0;
  std::uint16_t size = 0;
  GuestAddress desc = 0;
  GuestAddress driver = 0;
  GuestAddress device = 0;
  bool enabled = false;
  bool failed = false;
};

// Legacy PCI queue address unit (§4.1.4.8: "queue address ... shifted right by 12").
inline constexpr unsigned kLegacyQueuePfnShift = 12;
inline constexpr std::uint64_t kLegacyQueueAlign = 4096;

class DeviceCore final : private DeviceHost, private QueueEventSink {
 public:
  // `interrupts` must outlive the core.
  DeviceCore(std::unique_ptr<Device> device, std::shared_ptr<GuestMemory> memory,
             InterruptSink* interrupts, CoreOptions options = {});
  DeviceCore(const DeviceCore&) = delete;
  DeviceCore& operator=(const DeviceCore&) = delete;
  ~DeviceCore();

  [[nodiscard]] std::uint32_t device_id() const { return device_->device_id(); }
  [[nodiscard]] Device& device() { return *device_; }
  [[nodiscard]] const std::shared_ptr<GuestMemory>& memory() const { return memory_; }

  // ---- driver interface (transitional devices) ----------------------------------------
  // Only while status is 0; kModern after construction.
  Status set_driver_interface(DriverInterface interface);
  [[nodiscard]] DriverInterface driver_interface() const { return interface_; }

  // ---- features (§2.2) ----------------------------------------------------------------
  // Everything offered: device bits plus the ring/transport bits enabled in CoreOptions
  // (VERSION_1 always, for the modern interface); bits 0-31 only for a legacy driver.
  [[nodiscard]] std::uint64_t device_features() const;
  // 32-bit window `select` of device_features() (0 for select >= 2).
  [[nodiscard]] std::uint32_t device_features_word(std::uint32_t select) const;
  Status write_driver_features_word(std::uint32_t select, std::uint32_t value);
  Status set_driver_features(std::uint64_t features);
  [[nodiscard]] std::uint64_t driver_features() const { return driver_features_; }
  [[nodiscard]] std::uint32_t driver_features_word(std::uint32_t select) const;
  [[nodiscard]] std::uint64_t negotiated_features() const override { return negotiated_features_; }

  // ---- status (§2.1, §3.1) -------------------------------------------------------------
  [[nodiscard]] std::uint8_t status() const { return status_; }
  Status write_status(std::uint8_t value);
  // Device reset (§2.4): status 0, features cleared, every queue reset.
  void reset();
  // Why DEVICE_NEEDS_RESET was set, if it was.
  [[nodiscard]] const std::optional<Error>& failure() const { return failure_; }

  // ---- device configuration (§2.5) --------------------------------------------------------
  [[nodiscard]] std::uint32_t config_size() const { return device_->config_size(); }
  Status read_config(std::uint32_t offset, std::span<std::uint8_t> out);
  Status write_config(std::uint32_t offset, std::span<const std::uint8_t> data);
  // Reading the generation applies a pending bump (see above); hence not const.
  [[nodiscard]] std::uint8_t config_generation();

  // ---- queues (§4.1.4.3) -------------------------------------------------------------------
  // The device's queues (common configuration num_queues: admin queues excluded).
  [[nodiscard]] std::uint16_t num_queues() const { return device_queues_; }
  // Every queue index a driver may select: the device's, then the admin queue if any.
  [[nodiscard]] std::uint16_t queue_count() const {
    return static_cast<std::uint16_t>(queues_.size());
  }
  // §4.1.4.3 admin_queue_index / admin_queue_num (0 admin queues: no ADMIN_VQ).
  [[nodiscard]] std::uint16_t admin_queue_index() const { return device_queues_; }
  [[nodiscard]] std::uint16_t admin_queue_count() const {
    return static_cast<std::uint16_t>(queues_.size() - device_queues_);
  }
  [[nodiscard]] const admin::AdminCommandEngine* admin_engine() const { return admin_.get(); }
  [[nodiscard]] admin::AdminCommandEngine* admin_engine() { return admin_.get(); }
  [[nodiscard]] Result<QueueRegisters> queue_registers(std::uint16_t queue) const;
  Status set_queue_size(std::uint16_t queue, std::uint16_t size);
  Status set_queue_desc(std::uint16_t queue, GuestAddress address);
  Status set_queue_driver(std::uint16_t queue, GuestAddress address);
  Status set_queue_device(std::uint16_t queue, GuestAddress address);
  // queue_enable = 1. Refused before FEATURES_OK (modern), since the ring format
  // depends on the negotiated features. A layout that fails validation fails the
  // queue and sets DEVICE_NEEDS_RESET.
  Status enable_queue(std::uint16_t queue);
  // queue_reset = 1 (§2.6.1); requires VIRTIO_F_RING_RESET.
  Status reset_queue(std::uint16_t queue);
  // Legacy queue address register: pfn 0 resets the queue, anything else places a split
  // ring of the maximum size at pfn << 12 (§2.7.2) and enables it.
  Status set_legacy_queue_pfn(std::uint16_t queue, std::uint32_t pfn);
  [[nodiscard]] Result<std::uint32_t> legacy_queue_pfn(std::uint16_t queue) const;

  // ---- notifications (§2.3) ----------------------------------------------------------------
  // Available buffer notification. Ignored (successfully) unless DRIVER_OK is set,
  // FAILED is not, and the queue is enabled and healthy; out-of-range queues are an error.
  // The loop the device runs on, handed to Device::activate (pci::Function::set_event_loop).
  void set_event_loop(EventLoop* loop) {
    event_loop_ = loop;
    poller_.set_event_loop(loop);
    coalescer_.set_event_loop(loop);
  }
  // The poll windows (CoreOptions::poll_window).
  [[nodiscard]] const QueuePoller& poller() const { return poller_; }
  // Interrupt coalescing (CoreOptions::coalescing).
  [[nodiscard]] const InterruptCoalescer& coalescer() const { return coalescer_; }
  Status notify(std::uint16_t queue);
  // Returns once no request of the device is in flight any more (Device::drain): before
  // guest memory under them goes away (vfio-user DMA_UNMAP) or the core does.
  void drain() { device_->drain(); }

  // For tests, diagnostics and asynchronous devices.
  [[nodiscard]] Virtqueue* queue(std::uint16_t index) override {
    return index < queues_.size() ? queues_[index].get() : nullptr;
  }

 private:
  // DeviceHost
  void config_changed() override;
  void device_failed(const Error& error) override;
  // QueueEventSink
  void used_buffer_notification(std::uint16_t queue) override;
  bool hold_notification_check(std::uint16_t queue, std::uint64_t used) override;
  void queue_failed(std::uint16_t queue, const Error& error) override;

  [[nodiscard]] Result<Virtqueue*> queue_for_setup(std::uint16_t queue);
  [[nodiscard]] Status negotiate_modern_features();
  [[nodiscard]] RingOptions ring_options() const;
  [[nodiscard]] bool running() const;
  void process(Virtqueue& queue);
  // CoreOptions::idle_poll: hands `queue` to the poller's watch where that is safe.
  void watch_unnotified(Virtqueue& queue);
  // Serves `queue`, then every kick that arrived meanwhile (processing_ is set).
  void process_now(std::uint16_t queue);
  void run_pending_kicks();
  void set_needs_reset(const Error& error);

  std::unique_ptr<Device> device_;
  std::shared_ptr<GuestMemory> memory_;
  InterruptSink* interrupts_;
  CoreOptions options_;
  DriverInterface interface_ = DriverInterface::kModern;
  std::vector<std::unique_ptr<Virtqueue>> queues_;  // device queues, then the admin queue
  std::uint16_t device_queues_ = 0;
  std::unique_ptr<admin::AdminCommandEngine> admin_;

  std::uint8_t status_ = 0;
  std::uint64_t driver_features_ = 0;
  std::uint64_t negotiated_features_ = 0;
  std::uint8_t config_generation_ = 0;
  bool config_dirty_ = false;
  std::optional<Error> failure_;
  EventLoop* event_loop_ = nullptr;
  bool processing_ = false;
  bool kicks_scheduled_ = false;  // run_pending_kicks is deferred on the loop
  // Notifications that arrived inside Device::process_queue, or wait for the loop.
  std::set<std::uint16_t> pending_kicks_;
  InterruptCoalescer coalescer_{options_.coalescing};
  // Guest memory was host-mapped at DRIVER_OK: polling, watching and coalescing may run.
  bool memory_shared_ = false;
  // Polls served queues (after options_ and the queues: it refers to both).
  QueuePoller poller_{options_.poll_window, options_.idle_poll,
                      [this](Virtqueue& queue) {
                        if (queue.rings_mapped()) process(queue);
                      },
                      options_.idle_backoff_after};
};

}  // namespace vpci::virtio
