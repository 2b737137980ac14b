#include "virtio/device_core.h"

#include <cassert>
#include <limits>

#include "virtio/spec.h"

namespace vpci::virtio {
namespace {

// Feature bits 24..49 belong to the transport and ring (§2.2); a device must not claim them.
constexpr std::uint64_t kReservedFeatureMask =
    ((std::uint64_t{1} << 50) - 1) & ~((std::uint64_t{1} << 24) - 1);
// Status bits the driver may set. SUSPEND (16) needs VIRTIO_F_SUSPEND, never offered.
constexpr std::uint8_t kDriverStatusBits = status::kAcknowledge | status::kDriver |
                                           status::kFeaturesOk | status::kDriverOk |
                                           status::kFailed;

}  // namespace

DeviceCore::DeviceCore(std::unique_ptr<Device> device, std::shared_ptr<GuestMemory> memory,
                       InterruptSink* interrupts, CoreOptions options)
    : device_(std::move(device)),
      memory_(std::move(memory)),
      interrupts_(interrupts),
      options_(std::move(options)) {
  assert(device_ != nullptr && memory_ != nullptr && interrupts_ != nullptr);
  assert((device_->device_features() & kReservedFeatureMask) == 0);
  device_->attach(this);
  device_queues_ = device_->num_queues();
  queues_.reserve(device_queues_ + 1u);
  for (std::uint16_t i = 0; i < device_queues_; ++i) {
    const std::uint16_t max_size = device_->max_queue_size(i);
    assert(max_size > 0 && max_size <= kMaxQueueSize);
    queues_.push_back(std::make_unique<Virtqueue>(i, max_size));
  }
  if (options_.admin_owner != nullptr) {
    // §4.1.4.3: admin_queue_index >= num_queues; one admin queue right after them.
    queues_.push_back(std::make_unique<Virtqueue>(device_queues_, kAdminQueueSize));
    admin_ = std::make_unique<admin::AdminCommandEngine>(*options_.admin_owner);
    if (options_.admin_observer) admin_->set_observer(options_.admin_observer);
  }
}

DeviceCore::~DeviceCore() {
  // Requests still in flight complete into the queues, which go before the device.
  device_->drain();
  device_->attach(nullptr);
}

Status DeviceCore::set_driver_interface(DriverInterface interface) {
  if (status_ != 0) {
    return make_error(ErrorCode::kConflict,
                      "driver interface changed while the device is initialised (status {:#x})",
                      status_);
  }
  interface_ = interface;
  return {};
}

// ---- features ------------------------------------------------------------------------------

std::uint64_t DeviceCore::device_features() const {
  std::uint64_t features = device_->device_features() & ~kReservedFeatureMask;
  if (options_.offer_indirect_desc) features |= feature_bit(feature::kIndirectDesc);
  if (options_.offer_event_idx) features |= feature_bit(feature::kEventIdx);
  if (interface_ == DriverInterface::kLegacy) {
    // §6.3 (legacy): every vpci device parses chains as byte streams, whatever the
    // descriptor layout, so it says so — a legacy virtio-net driver then puts the
    // header and data in one buffer.
    features |= feature_bit(feature::kAnyLayout);
    // §4.1.4.8: the legacy interface carries feature bits 0-31 only.
    return features & 0xFFFF'FFFFu;
  }
  // §6.2: "A device MUST offer VIRTIO_F_VERSION_1."
  features |= feature_bit(feature::kVersion1);
  if (options_.offer_access_platform || options_.require_access_platform) {
    features |= feature_bit(feature::kAccessPlatform);
  }
  if (options_.offer_ring_packed) features |= feature_bit(feature::kRingPacked);
  if (options_.offer_ring_reset) features |= feature_bit(feature::kRingReset);
  if (admin_) {
    features |= feature_bit(admin::kFeatureAdminVq) | feature_bit(admin::kFeatureSrIov);
  }
  return features;
}

std::uint32_t DeviceCore::device_features_word(std::uint32_t select) const {
  if (select >= 2) return 0;
  return static_cast<std::uint32_t>(device_features() >> (32 * select));
}

std::uint32_t DeviceCore::driver_features_word(std::uint32_t select) const {
  if (select >= 2) return 0;
  return static_cast<std::uint32_t>(driver_features_ >> (32 * select));
}

Status DeviceCore::write_driver_features_word(std::uint32_t select, std::uint32_t value) {
  if (select >= 2) {
    if (value == 0) return {};
    return make_error(ErrorCode::kProtocolViolation, "driver features word {} written with {:#x}",
                      select, value);
  }
  const unsigned shift = 32 * select;
  const std::uint64_t merged = (driver_features_ & ~(std::uint64_t{0xFFFF'FFFFu} << shift)) |
                               (std::uint64_t{value} << shift);
  return set_driver_features(merged);
}

Status DeviceCore::set_driver_features(std::uint64_t features) {
  // §3.1.1 step 5: the driver accepts no new feature bits after FEATURES_OK; a legacy
  // driver's features are fixed once DRIVER_OK is set.
  if ((status_ & (status::kFeaturesOk | status::kDriverOk)) != 0) {
    return make_error(ErrorCode::kProtocolViolation, "driver features written after {}",
                      (status_ & status::kFeaturesOk) != 0 ? "FEATURES_OK" : "DRIVER_OK");
  }
  if (interface_ == DriverInterface::kLegacy) {
    if ((features >> 32) != 0) {
      return make_error(ErrorCode::kProtocolViolation, "legacy driver wrote feature bits above 31");
    }
    // Legacy devices simply drop bits they did not offer; there is no FEATURES_OK to refuse.
    driver_features_ = features & device_features();
    return {};
  }
  driver_features_ = features;  // checked against the offer when FEATURES_OK is set
  return {};
}

Status DeviceCore::negotiate_modern_features() {
  const std::uint64_t offered = device_features();
  // §2.2.1: "The driver MUST NOT accept a feature which the device did not offer".
  if ((driver_features_ & ~offered) != 0) {
    return make_error(ErrorCode::kProtocolViolation,
                      "driver accepted features {:#x} that were not offered",
                      driver_features_ & ~offered);
  }
  // §6.2: "A device MAY fail to operate further if VIRTIO_F_VERSION_1 is not accepted."
  // Through the modern interface a driver without VERSION_1 cannot be served.
  if (!has_feature(driver_features_, feature::kVersion1)) {
    return make_error(ErrorCode::kProtocolViolation, "driver did not accept VIRTIO_F_VERSION_1");
  }
  if (options_.require_access_platform &&
      !has_feature(driver_features_, feature::kAccessPlatform)) {
    return make_error(ErrorCode::kProtocolViolation,
                      "driver did not accept VIRTIO_F_ACCESS_PLATFORM");
  }
  VPCI_TRY(device_->accept_features(driver_features_));
  negotiated_features_ = driver_features_;
  return {};
}

// ---- status --------------------------------------------------------------------------------

Status DeviceCore::write_status(std::uint8_t value) {
  if (value == 0) {
    reset();
    return {};
  }
  // DEVICE_NEEDS_RESET is the device's (§2.1); a driver writing back what it read must
  // not be mistaken for clearing or setting it.
  const std::uint8_t requested = value & static_cast<std::uint8_t>(~status::kDeviceNeedsReset);
  const std::uint8_t current = status_ & static_cast<std::uint8_t>(~status::kDeviceNeedsReset);
  // §2.1.1: "The driver MUST NOT clear a device status bit."
  if ((current & ~requested) != 0) {
    return make_error(ErrorCode::kProtocolViolation,
                      "driver cleared status bits {:#x} (status {:#x} -> {:#x})",
                      current & ~requested, status_, value);
  }
  std::uint8_t added = requested & static_cast<std::uint8_t>(~current);
  Status result;
  if ((added & ~kDriverStatusBits) != 0) {
    result = make_error(ErrorCode::kProtocolViolation, "driver set unsupported status bits {:#x}",
                        added & ~kDriverStatusBits);
    added &= kDriverStatusBits;
  }

  if ((added & status::kFeaturesOk) != 0) {
    if (interface_ == DriverInterface::kLegacy) {
      // Legacy drivers have no FEATURES_OK step (§3.1.2); ignore the bit.
      added &= static_cast<std::uint8_t>(~status::kFeaturesOk);
      if (result)
        result = make_error(ErrorCode::kProtocolViolation, "FEATURES_OK set by a legacy driver");
    } else if (auto negotiated = negotiate_modern_features(); !negotiated) {
      // §2.2.2: refuse by not setting FEATURES_OK; the driver sees it on re-reading
      // status (§3.1.1 step 6) and sets FAILED.
      added &= static_cast<std::uint8_t>(~status::kFeaturesOk);
      if (result)
        result = tl::unexpected(std::move(negotiated).error().with_context("FEATURES_OK refused"));
    }
  }

  const bool driver_ok_now = (added & status::kDriverOk) != 0;
  if (driver_ok_now && interface_ == DriverInterface::kModern &&
      ((current | added) & status::kFeaturesOk) == 0) {
    added &= static_cast<std::uint8_t>(~status::kDriverOk);
    if (result)
      result = make_error(ErrorCode::kProtocolViolation, "DRIVER_OK set without FEATURES_OK");
  }

  status_ |= static_cast<std::uint8_t>(added & ~status::kDriverOk);
  if ((added & status::kDriverOk) != 0) {
    if (interface_ == DriverInterface::kLegacy) {
      negotiated_features_ = driver_features_;
      if (auto accepted = device_->accept_features(negotiated_features_); !accepted) {
        set_needs_reset(std::move(accepted).error().with_context("legacy features refused"));
      }
    }
    status_ |= status::kDriverOk;
    // Polling, watching and held checks read the rings from the event loop, at moments
    // nobody chose: a read of host memory in shared guest RAM, but through DMA_READ
    // messages a request that can reach QEMU in the middle of its own memory transaction
    // (seen with SeaBIOS in boot 3 of guest.serve: "vfio_wait_reqs - timed out",
    // "unexpected reply", a hung guest). So they run only where memory is shared; the
    // vfio-user server offers mapped doorbells under the same condition
    // (server/session.cc, handle_region_info).
    memory_shared_ = memory_->snapshot()->any_host_mapped();
    if (auto activated = device_->activate(event_loop_); !activated) {
      set_needs_reset(std::move(activated).error().with_context("device activation"));
    }
    // Drivers may make buffers available before DRIVER_OK; serve them now rather than
    // wait for a notification that may already have been sent (and ignored).
    for (auto& queue : queues_) {
      if (running()) process(*queue);
    }
    for (auto& queue : queues_) {
      if (running()) watch_unnotified(*queue);
    }
  }
  return result;
}

void DeviceCore::watch_unnotified(Virtqueue& queue) {
  if (options_.idle_poll.count() > 0 && memory_shared_) poller_.watch(queue);
}

void DeviceCore::reset() {
  status_ = 0;
  driver_features_ = 0;
  negotiated_features_ = 0;
  config_dirty_ = false;
  failure_.reset();
  pending_kicks_.clear();
  poller_.stop();
  coalescer_.cancel_all();
  memory_shared_ = false;
  for (auto& queue : queues_) queue->reset();
  if (admin_) admin_->reset();
  device_->reset();
}

bool DeviceCore::running() const {
  return (status_ & status::kDriverOk) != 0 && (status_ & status::kFailed) == 0;
}

void DeviceCore::set_needs_reset(const Error& error) {
  if (!failure_) failure_ = error;
  const bool already = (status_ & status::kDeviceNeedsReset) != 0;
  status_ |= status::kDeviceNeedsReset;
  // §2.1.2: after setting DEVICE_NEEDS_RESET with DRIVER_OK set, the device MUST send a
  // configuration change notification.
  if (!already && (status_ & status::kDriverOk) != 0) interrupts_->raise_config_interrupt();
}

// ---- configuration --------------------------------------------------------------------------

Status DeviceCore::read_config(std::uint32_t offset, std::span<std::uint8_t> out) {
  const std::uint64_t end = std::uint64_t{offset} + out.size();
  if (end > device_->config_size()) {
    return make_error(ErrorCode::kOutOfRange, "config read {:#x}+{} beyond {} bytes", offset,
                      out.size(), device_->config_size());
  }
  device_->read_config(offset, out);
  return {};
}

Status DeviceCore::write_config(std::uint32_t offset, std::span<const std::uint8_t> data) {
  const std::uint64_t end = std::uint64_t{offset} + data.size();
  if (end > device_->config_size()) {
    return make_error(ErrorCode::kOutOfRange, "config write {:#x}+{} beyond {} bytes", offset,
                      data.size(), device_->config_size());
  }
  device_->write_config(offset, data);
  return {};
}

std::uint8_t DeviceCore::config_generation() {
  if (config_dirty_) {
    ++config_generation_;
    config_dirty_ = false;
  }
  return config_generation_;
}

void DeviceCore::config_changed() {
  config_dirty_ = true;
  if ((status_ & status::kDriverOk) != 0) interrupts_->raise_config_interrupt();
}

void DeviceCore::device_failed(const Error& error) {
  set_needs_reset(error);
}

// ---- queues ----------------------------------------------------------------------------------

Result<QueueRegisters> DeviceCore::queue_registers(std::uint16_t queue) const {
  if (queue >= queues_.size()) {
    return make_error(ErrorCode::kOutOfRange, "queue {} does not exist ({} queues)", queue,
                      queues_.size());
  }
  const Virtqueue& q = *queues_[queue];
  return QueueRegisters{q.max_size(),      q.size(),    q.layout().desc, q.layout().driver,
                        q.layout().device, q.enabled(), q.failed()};
}

Result<Virtqueue*> DeviceCore::queue_for_setup(std::uint16_t queue) {
  if (queue >= queues_.size()) {
    return make_error(ErrorCode::kOutOfRange, "queue {} does not exist ({} queues)", queue,
                      queues_.size());
  }
  // §2.12: the admin queue exists for a driver that negotiated ADMIN_VQ.
  if (queue >= device_queues_ && !has_feature(driver_features_, admin::kFeatureAdminVq)) {
    return make_error(ErrorCode::kOutOfRange,
                      "queue {} is the admin queue, and VIRTIO_F_ADMIN_VQ was not negotiated",
                      queue);
  }
  return queues_[queue].get();
}

Status DeviceCore::set_queue_size(std::uint16_t queue, std::uint16_t size) {
  VPCI_ASSIGN_OR_RETURN(Virtqueue * q, queue_for_setup(queue));
  return q->set_size(size);
}

Status DeviceCore::set_queue_desc(std::uint16_t queue, GuestAddress address) {
  VPCI_ASSIGN_OR_RETURN(Virtqueue * q, queue_for_setup(queue));
  return q->set_desc_address(address);
}

Status DeviceCore::set_queue_driver(std::uint16_t queue, GuestAddress address) {
  VPCI_ASSIGN_OR_RETURN(Virtqueue * q, queue_for_setup(queue));
  return q->set_driver_address(address);
}

Status DeviceCore::set_queue_device(std::uint16_t queue, GuestAddress address) {
  VPCI_ASSIGN_OR_RETURN(Virtqueue * q, queue_for_setup(queue));
  return q->set_device_address(address);
}

RingOptions DeviceCore::ring_options() const {
  RingOptions options;
  options.event_idx = has_feature(negotiated_features_, feature::kEventIdx);
  options.indirect = has_feature(negotiated_features_, feature::kIndirectDesc);
  return options;
}

Status DeviceCore::enable_queue(std::uint16_t queue) {
  VPCI_ASSIGN_OR_RETURN(Virtqueue * q, queue_for_setup(queue));
  if (q->enabled()) return {};  // re-writing 1 is harmless
  if (interface_ == DriverInterface::kModern && (status_ & status::kFeaturesOk) == 0) {
    // §3.1.1 step 7 comes after FEATURES_OK; the ring format is not known before.
    return make_error(ErrorCode::kProtocolViolation, "queue {} enabled before FEATURES_OK", queue);
  }
  if (interface_ == DriverInterface::kLegacy && (status_ & status::kDriverOk) == 0) {
    // The ring rules depend on the features; a legacy driver has written them by now,
    // but they are latched only at DRIVER_OK.
    negotiated_features_ = driver_features_;
  }
  const RingFormat format = has_feature(negotiated_features_, feature::kRingPacked)
                                ? RingFormat::kPacked
                                : RingFormat::kSplit;
  // A failure is reported through queue_failed(), which sets DEVICE_NEEDS_RESET.
  VPCI_TRY(q->enable(memory_, format, ring_options(), this));
  // Buffers may already be waiting: a notification that arrived while the ring was being
  // set up (the transport serves register accesses while enabling waits for
  // message-based DMA) found the queue not yet enabled and was dropped.
  if (running()) {
    process(*q);
    watch_unnotified(*q);
  }
  return {};
}

Status DeviceCore::reset_queue(std::uint16_t queue) {
  VPCI_ASSIGN_OR_RETURN(Virtqueue * q, queue_for_setup(queue));
  if (!has_feature(negotiated_features_, feature::kRingReset)) {
    return make_error(ErrorCode::kProtocolViolation, "queue {} reset without VIRTIO_F_RING_RESET",
                      queue);
  }
  device_->reset_queue(queue);
  coalescer_.cancel(queue);
  q->reset();
  return {};
}

Status DeviceCore::set_legacy_queue_pfn(std::uint16_t queue, std::uint32_t pfn) {
  VPCI_ASSIGN_OR_RETURN(Virtqueue * q, queue_for_setup(queue));
  if (interface_ != DriverInterface::kLegacy) {
    return make_error(ErrorCode::kProtocolViolation,
                      "legacy queue address written through the modern interface");
  }
  if (pfn == 0) {
    // What legacy drivers write to tear a queue down.
    device_->reset_queue(queue);
    coalescer_.cancel(queue);
    q->reset();
    return {};
  }
  if (q->enabled()) {
    return make_error(ErrorCode::kConflict, "queue {} address written while enabled", queue);
  }
  const GuestAddress base = GuestAddress{pfn} << kLegacyQueuePfnShift;
  VPCI_ASSIGN_OR_RETURN(QueueLayout layout,
                        legacy_split_layout(base, q->max_size(), kLegacyQueueAlign));
  VPCI_TRY(q->set_layout(layout));
  return enable_queue(queue);
}

Result<std::uint32_t> DeviceCore::legacy_queue_pfn(std::uint16_t queue) const {
  VPCI_ASSIGN_OR_RETURN(QueueRegisters regs, queue_registers(queue));
  if (!regs.enabled) return 0u;
  return static_cast<std::uint32_t>(regs.desc >> kLegacyQueuePfnShift);
}

// ---- notifications ------------------------------------------------------------------------------

Status DeviceCore::notify(std::uint16_t queue) {
  if (queue >= queues_.size()) {
    return make_error(ErrorCode::kOutOfRange, "notification for queue {} ({} queues)", queue,
                      queues_.size());
  }
  // §2.1.2: no buffers are consumed before DRIVER_OK; after FAILED the driver gave up.
  if (!running()) return {};
  process(*queues_[queue]);
  return {};
}

void DeviceCore::process(Virtqueue& queue) {
  if (processing_) {
    // A register access that arrived while the device waited inside its own queue work
    // (a DMA_READ/DMA_WRITE round trip: the server answers the client's accesses
    // meanwhile, server/message_dma.h). The device is never reentered: the kick is
    // remembered and served when the current work returns.
    pending_kicks_.insert(queue.index());
    return;
  }
  if (event_loop_ != nullptr && !memory_->snapshot()->all_host_mapped()) {
    // Guest memory reached through messages: the work waits for the client's DMA
    // replies, and the client may be waiting for the reply to the very access that
    // asked for the work (a non-posted legacy I/O write of DRIVER_OK or a doorbell —
    // QEMU then holds the lock its DMA handler needs). So the work runs as deferred work
    // on the device's loop, after the access has been answered.
    pending_kicks_.insert(queue.index());
    if (!kicks_scheduled_) {
      kicks_scheduled_ = true;
      event_loop_->defer([this] { run_pending_kicks(); });
    }
    return;
  }
  processing_ = true;
  process_now(queue.index());
  processing_ = false;
}

void DeviceCore::run_pending_kicks() {
  kicks_scheduled_ = false;
  if (processing_ || pending_kicks_.empty()) return;
  const std::uint16_t first = *pending_kicks_.begin();
  pending_kicks_.erase(pending_kicks_.begin());
  processing_ = true;
  process_now(first);
  processing_ = false;
}

void DeviceCore::process_now(std::uint16_t queue) {
  std::uint16_t next = queue;
  while (true) {
    Virtqueue& current = *queues_[next];
    if (current.enabled() && !current.failed() && running()) {
      if (next >= device_queues_) {
        admin_->serve(current);  // the admin queue: commands for the owner (§2.12)
      } else {
        device_->process_queue(current);
        current.notify_driver_if_needed();
        if (memory_shared_) poller_.served(current);
      }
    }
    if (pending_kicks_.empty()) break;
    next = *pending_kicks_.begin();
    pending_kicks_.erase(pending_kicks_.begin());
  }
}

void DeviceCore::used_buffer_notification(std::uint16_t queue) {
  // §2.1.2 / §2.4.1: no notifications before DRIVER_OK or after a reset.
  if ((status_ & status::kDriverOk) != 0) interrupts_->raise_queue_interrupt(queue);
}

bool DeviceCore::hold_notification_check(std::uint16_t queue, std::uint64_t used) {
  if (!memory_shared_) return false;
  return coalescer_.hold(queue, used, [this, queue] {
    if (Virtqueue* q = this->queue(queue)) q->check_held_notification();
  });
}

void DeviceCore::queue_failed(std::uint16_t queue, const Error& error) {
  (void)queue;  // the error message names the queue
  set_needs_reset(error);
}

}  // namespace vpci::virtio
