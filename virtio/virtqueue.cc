#include "virtio/virtqueue.h"

#include <algorithm>

namespace vpci::virtio {

Virtqueue::Virtqueue(std::uint16_t index, std::uint16_t max_size)
    : index_(index), max_size_(max_size) {
  layout_.size = max_size;
}

Status Virtqueue::set_size(std::uint16_t size) {
  if (enabled_) {
    return make_error(ErrorCode::kConflict, "queue {}: size written while the queue is enabled",
                      index_);
  }
  // §4.1.4.3.2: the driver may reduce queue_size but never raise it above the maximum.
  if (size == 0 || size > max_size_) {
    return make_error(ErrorCode::kInvalidArgument, "queue {}: size {} not in 1..{}", index_, size,
                      max_size_);
  }
  layout_.size = size;
  return {};
}

Status Virtqueue::set_desc_address(GuestAddress address) {
  if (enabled_)
    return make_error(ErrorCode::kConflict, "queue {}: address written while enabled", index_);
  layout_.desc = address;
  return {};
}

Status Virtqueue::set_driver_address(GuestAddress address) {
  if (enabled_)
    return make_error(ErrorCode::kConflict, "queue {}: address written while enabled", index_);
  layout_.driver = address;
  return {};
}

Status Virtqueue::set_device_address(GuestAddress address) {
  if (enabled_)
    return make_error(ErrorCode::kConflict, "queue {}: address written while enabled", index_);
  layout_.device = address;
  return {};
}

Status Virtqueue::set_layout(const QueueLayout& layout) {
  VPCI_TRY(set_size(layout.size));
  layout_ = layout;
  return {};
}

Status Virtqueue::enable(std::shared_ptr<GuestMemory> memory, RingFormat format,
                         const RingOptions& options, QueueEventSink* sink) {
  if (enabled_) return make_error(ErrorCode::kConflict, "queue {} is already enabled", index_);
  sink_ = sink;
  error_.reset();
  ring_ = std::monostate{};
  auto snapshot = memory->snapshot();
  Status started;
  if (format == RingFormat::kSplit) {
    auto ring = SplitRing::create(*snapshot, layout_, options);
    if (ring)
      ring_ = *ring;
    else
      started = tl::unexpected(std::move(ring).error());
  } else {
    auto ring = PackedRing::create(*snapshot, layout_, options);
    if (ring)
      ring_ = *ring;
    else
      started = tl::unexpected(std::move(ring).error());
  }
  if (!started) {
    Error error = std::move(started).error().with_context(fmt::format("enabling queue {}", index_));
    fail(error);
    return tl::unexpected(std::move(error));
  }
  ++epoch_;
  format_ = format;
  memory_ = std::move(memory);
  enabled_ = true;
  return {};
}

bool Virtqueue::rings_mapped() const {
  if (!enabled_ || memory_ == nullptr) return false;
  const auto snapshot = memory_->snapshot();
  const Status mapped = format_ == RingFormat::kPacked ? PackedRing::check_areas(*snapshot, layout_)
                                                       : SplitRing::check_areas(*snapshot, layout_);
  return mapped.has_value();
}

void Virtqueue::reset() {
  ++epoch_;
  enabled_ = false;
  error_.reset();
  ring_ = std::monostate{};
  memory_.reset();
  layout_ = QueueLayout{max_size_, 0, 0, 0};
  used_batch_ = false;
  completed_at_check_ = stats_.completed;
}

void Virtqueue::unpop_chain(std::uint64_t epoch, const ChainDescriptors& chain) {
  if (epoch != epoch_ || !running()) return;  // a reset already took every buffer back
  if (auto* split = std::get_if<SplitRing>(&ring_)) {
    split->unpop();
  } else if (auto* packed = std::get_if<PackedRing>(&ring_)) {
    packed->unpop(chain.ring_slots);
  }
  --stats_.popped;
}

std::optional<DescriptorChain> Virtqueue::pop() {
  if (!running()) return std::nullopt;
  auto snapshot = memory_->snapshot();
  ChainDescriptors descriptors;
  Result<bool> popped = std::visit(
      [&](auto& ring) -> Result<bool> {
        if constexpr (std::is_same_v<std::decay_t<decltype(ring)>, std::monostate>) {
          return false;
        } else {
          return ring.pop(*snapshot, descriptors);
        }
      },
      ring_);
  if (!popped) {
    fail(std::move(popped).error().with_context(fmt::format("queue {}", index_)));
    return std::nullopt;
  }
  if (!*popped) return std::nullopt;
  ++stats_.popped;
  return std::optional<DescriptorChain>(std::in_place, this, epoch_, std::move(snapshot),
                                        std::move(descriptors));
}

void Virtqueue::complete_chain(std::uint64_t epoch, const ChainDescriptors& chain,
                               const MemoryMap& memory, std::uint32_t used_length) {
  if (epoch != epoch_ || !running()) {
    ++stats_.stale;
    return;
  }
  // §2.7.8.2 / §2.8.4: the used length never exceeds what the device could write.
  used_length =
      static_cast<std::uint32_t>(std::min<std::uint64_t>(used_length, chain.writable_bytes));
  // Through the chain's snapshot, not a fresh one (saves a lock and two reference counts
  // per chain). It keeps every region it lists mapped, so the write is as safe; a ring
  // range removed since the pop is written as it was mapped then, as if the completion
  // had come just before the removal (a vfio-user DMA_UNMAP waits for this snapshot).
  Status pushed;
  if (auto* split = std::get_if<SplitRing>(&ring_)) {
    pushed = split->push_used(memory, chain.id, used_length, !used_batch_);
  } else if (auto* packed = std::get_if<PackedRing>(&ring_)) {
    pushed = packed->push_used(memory, chain.id, chain.ring_slots, used_length, !used_batch_);
  }
  if (!pushed) {
    fail(std::move(pushed).error().with_context(
        fmt::format("queue {}: writing used entry", index_)));
    return;
  }
  ++stats_.completed;
}

void Virtqueue::fail_chain(std::uint64_t epoch, Error error) {
  if (epoch != epoch_ || !running()) {
    ++stats_.stale;
    return;
  }
  fail(std::move(error).with_context(fmt::format("queue {}", index_)));
}

void Virtqueue::abandon_chain(std::uint64_t epoch, const ChainDescriptors& chain,
                              const MemoryMap& memory) {
  ++stats_.abandoned;
  complete_chain(epoch, chain, memory, 0);
}

void Virtqueue::end_used_batch() {
  used_batch_ = false;
  if (!running()) return;
  const auto snapshot = memory_->snapshot();
  Status published;
  if (auto* split = std::get_if<SplitRing>(&ring_)) {
    published = split->publish_used(*snapshot);
  } else if (auto* packed = std::get_if<PackedRing>(&ring_)) {
    published = packed->publish_used(*snapshot);
  }
  if (!published) {
    fail(std::move(published).error().with_context(
        fmt::format("queue {}: publishing used entries", index_)));
  }
}

void Virtqueue::set_notifications_suppressed(bool suppress) {
  if (!running()) return;
  auto snapshot = memory_->snapshot();
  Status written;
  if (auto* split = std::get_if<SplitRing>(&ring_)) {
    written = split->set_notifications_suppressed(*snapshot, suppress);
  } else if (auto* packed = std::get_if<PackedRing>(&ring_)) {
    written = packed->set_notifications_suppressed(*snapshot, suppress);
  }
  if (!written) {
    fail(std::move(written).error().with_context(
        fmt::format("queue {}: writing event suppression", index_)));
  }
}

void Virtqueue::notify_driver_if_needed() {
  // Nothing used since the last check (a doorbell that found the ring empty): nothing to
  // decide, so no guest-memory snapshot either.
  if (!running() || !used_since_check()) return;
  if (sink_ != nullptr &&
      sink_->hold_notification_check(index_, stats_.completed - completed_at_check_)) {
    return;
  }
  check_notification();
}

bool Virtqueue::used_since_check() const {
  return std::visit(
      [](const auto& ring) {
        if constexpr (std::is_same_v<std::decay_t<decltype(ring)>, std::monostate>) {
          return false;
        } else {
          return ring.used_since_check();
        }
      },
      ring_);
}

void Virtqueue::check_held_notification() {
  if (!running() || !used_since_check()) return;
  if (!rings_mapped()) {
    // The ring's own range since its last check stays: the next check covers it again.
    completed_at_check_ = stats_.completed;
    ++stats_.notifications;
    if (sink_ != nullptr) sink_->used_buffer_notification(index_);
    return;
  }
  check_notification();
}

void Virtqueue::check_notification() {
  if (!running() || !used_since_check()) return;
  completed_at_check_ = stats_.completed;
  auto snapshot = memory_->snapshot();
  Result<bool> needed = false;
  if (auto* split = std::get_if<SplitRing>(&ring_)) {
    needed = split->needs_notification(*snapshot);
  } else if (auto* packed = std::get_if<PackedRing>(&ring_)) {
    needed = packed->needs_notification(*snapshot);
  }
  if (!needed) {
    fail(std::move(needed).error().with_context(
        fmt::format("queue {}: reading event suppression", index_)));
    return;
  }
  if (*needed && sink_ != nullptr) {
    ++stats_.notifications;
    sink_->used_buffer_notification(index_);
  }
}

void Virtqueue::fail(Error error) {
  if (error_.has_value()) return;  // the first violation is the one worth reporting
  error_ = std::move(error);
  if (sink_ != nullptr) sink_->queue_failed(index_, *error_);
}

}  // namespace vpci::virtio
