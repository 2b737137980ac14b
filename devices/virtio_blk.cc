#include "devices/virtio_blk.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <vector>

#include "base/little_endian.h"
#include "base/log.h"
#include "virtio/spec.h"
#include "virtio/virtqueue.h"

namespace vpci::devices {
namespace {

using virtio::feature_bit;
using virtio::from_le;

template <typename T>
void put_le(std::array<std::uint8_t, blk::config::kSize>& config, std::uint32_t offset, T value) {
  store_le<T>(std::span(config).subspan(offset), value);
}

}  // namespace

Result<std::unique_ptr<BlockDevice>> BlockDevice::create(std::unique_ptr<BlockBackend> backend,
                                                         BlockDeviceOptions options) {
  if (backend == nullptr)
    return make_error(ErrorCode::kInvalidArgument, "virtio-blk needs a backend");
  if (options.num_queues == 0)
    return make_error(ErrorCode::kInvalidArgument, "virtio-blk needs at least one queue");
  if (!std::has_single_bit(options.queue_size) || options.queue_size > virtio::kMaxQueueSize ||
      options.queue_size < 4) {
    return make_error(ErrorCode::kInvalidArgument,
                      "queue size {} is not a power of two in 4..32768", options.queue_size);
  }
  if (!std::has_single_bit(options.logical_block_size) ||
      options.logical_block_size < blk::kSectorSize || options.logical_block_size > 65536) {
    return make_error(ErrorCode::kInvalidArgument,
                      "block size {} is not a power of two in 512..65536",
                      options.logical_block_size);
  }
  if (options.serial.size() > blk::kIdBytes) {
    return make_error(ErrorCode::kInvalidArgument, "serial '{}' is longer than {} bytes",
                      options.serial, blk::kIdBytes);
  }
  if (options.seg_max == 0) options.seg_max = options.queue_size - 2u;
  if (options.discard_sector_alignment == 0)
    options.discard_sector_alignment = options.logical_block_size / 512;
  if (options.discard && (options.max_discard_sectors == 0 || options.max_discard_seg == 0)) {
    return make_error(ErrorCode::kInvalidArgument, "discard limits must be non-zero");
  }
  if (options.write_zeroes &&
      (options.max_write_zeroes_sectors == 0 || options.max_write_zeroes_seg == 0)) {
    return make_error(ErrorCode::kInvalidArgument, "write-zeroes limits must be non-zero");
  }
  return std::unique_ptr<BlockDevice>(new BlockDevice(std::move(backend), std::move(options)));
}

BlockDevice::BlockDevice(std::unique_ptr<BlockBackend> backend, BlockDeviceOptions options)
    : backend_(std::move(backend)), options_(std::move(options)) {
  capacity_ = backend_->size_bytes() / blk::kSectorSize;
  build_config();
}

BlockDevice::~BlockDevice() {
  drain();  // a DeviceCore has drained already, before its queues went
  io_.reset();
}

std::uint32_t BlockDevice::device_id() const {
  return virtio::device_id::kBlock;
}

std::uint64_t BlockDevice::device_features() const {
  // §5.2.5.2: devices SHOULD always offer FLUSH.
  std::uint64_t features = feature_bit(blk::kFeatureSegMax) | feature_bit(blk::kFeatureBlkSize) |
                           feature_bit(blk::kFeatureFlush) | feature_bit(blk::kFeatureTopology);
  if (options_.size_max != 0) features |= feature_bit(blk::kFeatureSizeMax);
  if (options_.read_only) features |= feature_bit(blk::kFeatureReadOnly);
  if (options_.num_queues > 1) features |= feature_bit(blk::kFeatureMultiQueue);
  // Discard and write-zeroes modify the disk; a read-only device does not offer them.
  if (options_.discard && !options_.read_only) features |= feature_bit(blk::kFeatureDiscard);
  if (options_.write_zeroes && !options_.read_only)
    features |= feature_bit(blk::kFeatureWriteZeroes);
  return features;
}

void BlockDevice::build_config() {
  config_.fill(0);  // §5.2.5.2: unused0 and unused1 are 0
  put_le<std::uint64_t>(config_, blk::config::kCapacity, capacity_);
  put_le<std::uint32_t>(config_, blk::config::kSizeMax, options_.size_max);
  put_le<std::uint32_t>(config_, blk::config::kSegMax, options_.seg_max);
  put_le<std::uint32_t>(config_, blk::config::kBlkSize, options_.logical_block_size);
  config_[blk::config::kPhysicalBlockExp] = options_.physical_block_exp;
  config_[blk::config::kAlignmentOffset] = options_.alignment_offset;
  put_le<std::uint16_t>(config_, blk::config::kMinIoSize, options_.min_io_size);
  put_le<std::uint32_t>(config_, blk::config::kOptIoSize, options_.opt_io_size);
  // writeback stays 0: it is meaningful only with VIRTIO_BLK_F_CONFIG_WCE, not offered.
  put_le<std::uint16_t>(config_, blk::config::kNumQueues, options_.num_queues);
  put_le<std::uint32_t>(config_, blk::config::kMaxDiscardSectors, options_.max_discard_sectors);
  put_le<std::uint32_t>(config_, blk::config::kMaxDiscardSeg, options_.max_discard_seg);
  put_le<std::uint32_t>(config_, blk::config::kDiscardSectorAlignment,
                        options_.discard_sector_alignment);
  put_le<std::uint32_t>(config_, blk::config::kMaxWriteZeroesSectors,
                        options_.max_write_zeroes_sectors);
  put_le<std::uint32_t>(config_, blk::config::kMaxWriteZeroesSeg, options_.max_write_zeroes_seg);
  config_[blk::config::kWriteZeroesMayUnmap] = options_.write_zeroes_may_unmap ? 1 : 0;
}

void BlockDevice::read_config(std::uint32_t offset, std::span<std::uint8_t> out) const {
  // DeviceCore checked the range.
  std::memcpy(out.data(), config_.data() + offset, out.size());
}

void BlockDevice::refresh_capacity() {
  const std::uint64_t capacity = backend_->size_bytes() / blk::kSectorSize;
  if (capacity == capacity_) return;
  capacity_ = capacity;
  build_config();
  if (host() != nullptr) host()->config_changed();
}

void BlockDevice::process_queue(virtio::Virtqueue& queue) {
  while (auto chain = queue.pop()) serve(queue, *chain);
  if (io_ != nullptr) io_->submit();  // one system call for everything popped above
}

Status BlockDevice::activate(EventLoop* loop) {
  if (loop == nullptr || io_ != nullptr) return {};
  // Every request of every queue can be in flight at once; more than 256 in the kernel
  // gains nothing on one file, and the rest wait inside the engine.
  const unsigned depth =
      std::min(256u, unsigned{options_.num_queues} * unsigned{options_.queue_size});
  VPCI_ASSIGN_OR_RETURN(io_, open_block_io(options_.io, *backend_, depth, *loop, *this));
  logger().debug("{}: virtio-blk I/O through {}", backend_->name(), io_->name());
  return {};
}

void BlockDevice::drain() {
  if (io_ != nullptr) io_->drain();
}

void BlockDevice::reset() {
  // §2.4: after reset the driver may reuse every buffer, so nothing may still be
  // reading or writing them. The chains complete into the reset queues harmlessly.
  drain();
  io_.reset();
  in_flight_.clear();
  free_slots_.clear();
  completed_queues_.clear();
}

void BlockDevice::reset_queue(std::uint16_t queue) {
  (void)queue;
  drain();  // the engine does not know queues; waiting for all is short and rare
}

void BlockDevice::serve(virtio::Virtqueue& queue, virtio::DescriptorChain& chain) {
  ++stats_.requests;
  // §5.2.6: the header is the first 16 device-readable bytes and the status the last
  // device-writable byte. Without them there is no request to answer at all.
  if (chain.readable_bytes() < sizeof(blk::RequestHeader)) {
    chain.fail(Error{ErrorCode::kProtocolViolation,
                     fmt::format("virtio-blk request {} has {} readable bytes, less than a header",
                                 chain.id(), chain.readable_bytes())});
    return;
  }
  if (chain.writable_bytes() == 0) {
    chain.fail(Error{ErrorCode::kProtocolViolation,
                     fmt::format("virtio-blk request {} has no writable status byte", chain.id())});
    return;
  }
  auto raw = chain.reader().read_obj<blk::RequestHeader>();
  if (!raw) {
    chain.fail(std::move(raw).error().with_context("reading virtio-blk request header"));
    return;
  }
  const std::uint32_t type = from_le(raw->type);
  const std::uint64_t sector = from_le(raw->sector);
  const std::uint64_t data_out =
      chain.readable_bytes() - sizeof(blk::RequestHeader);   // driver → device
  const std::uint64_t data_in = chain.writable_bytes() - 1;  // device → driver

  const bool asynchronous =
      io_ != nullptr && chain.memory().all_host_mapped() &&
      (type == blk::kTypeIn || type == blk::kTypeOut || type == blk::kTypeFlush);
  std::uint8_t status = blk::kStatusUnsupported;
  switch (type) {
    case blk::kTypeIn:
      ++stats_.reads;
      if (asynchronous) {
        auto refused = start_io(queue, chain, type, sector, data_in);
        if (!refused) return;
        status = *refused;
      } else {
        status = do_read(chain, sector, data_in);
      }
      break;
    case blk::kTypeOut:
      ++stats_.writes;
      if (asynchronous) {
        auto refused = start_io(queue, chain, type, sector, data_out);
        if (!refused) return;
        status = *refused;
      } else {
        status = do_write(chain, sector, data_out);
      }
      break;
    case blk::kTypeFlush:
      ++stats_.flushes;
      if (asynchronous) {
        auto refused = start_io(queue, chain, type, 0, 0);
        if (!refused) return;
        status = *refused;
      } else {
        status = backend_->flush() ? blk::kStatusOk : blk::kStatusIoErr;
      }
      break;
    case blk::kTypeGetId: status = do_get_id(chain, data_in); break;
    case blk::kTypeDiscard:
      ++stats_.discards;
      status = do_segments(chain, type, data_out);
      break;
    case blk::kTypeWriteZeroes:
      ++stats_.write_zeroes;
      status = do_segments(chain, type, data_out);
      break;
    default:
      // GET_LIFETIME, SECURE_ERASE, zoned and unknown requests are not offered.
      status = blk::kStatusUnsupported;
      break;
  }
  if (status == blk::kStatusIoErr) ++stats_.io_errors;
  if (status == blk::kStatusUnsupported) ++stats_.unsupported;
  finish(chain, status);
}

void BlockDevice::finish(virtio::DescriptorChain& chain, std::uint8_t status) {
  // The status byte goes last; whatever the handler did not write is skipped, which
  // keeps the used length to the bytes really written (§2.7.8.2).
  auto& writer = chain.writer();
  if (!writer.skip(writer.remaining() - 1) || !writer.write_obj(status)) {
    chain.fail(Error{ErrorCode::kProtocolViolation, "cannot write the virtio-blk status byte"});
    return;
  }
  chain.complete();
}

std::optional<std::uint8_t> BlockDevice::start_io(virtio::Virtqueue& queue,
                                                  virtio::DescriptorChain& chain,
                                                  std::uint32_t type, std::uint64_t sector,
                                                  std::uint64_t length) {
  BlockIoOp op;
  virtio::HostBufferList buffers;
  if (type == blk::kTypeFlush) {
    op.op = BlockOp::kFlush;
  } else {
    const bool read = type == blk::kTypeIn;
    // §5.2.6.2: a write on a read-only device fails and writes nothing; data moves in
    // multiples of 512 bytes inside the capacity.
    if (!read && options_.read_only) return blk::kStatusIoErr;
    if (length % blk::kSectorSize != 0 || !in_range(sector, length / blk::kSectorSize))
      return blk::kStatusIoErr;
    if (length == 0) return blk::kStatusOk;
    auto taken = read ? chain.writer().take_buffers(length) : chain.reader().take_buffers(length);
    if (!taken) return blk::kStatusIoErr;
    buffers = std::move(*taken);
    op.op = read ? BlockOp::kRead : BlockOp::kWrite;
    op.offset = sector * blk::kSectorSize;
    op.buffers.reserve(buffers.spans.size());
    for (const auto& span : buffers.spans) op.buffers.push_back(iovec{span.data(), span.size()});
  }
  std::size_t slot = in_flight_.size();
  if (!free_slots_.empty()) {
    slot = free_slots_.back();
    free_slots_.pop_back();
  } else {
    in_flight_.emplace_back();
  }
  in_flight_[slot].emplace(InFlight{std::move(chain), std::move(buffers), &queue});
  op.tag = slot;
  ++stats_.asynchronous;
  io_->enqueue(std::move(op));
  return std::nullopt;
}

void BlockDevice::io_completed(std::uint64_t tag, Status result) {
  auto& slot = in_flight_.at(static_cast<std::size_t>(tag));
  std::uint8_t status = blk::kStatusOk;
  if (!result) {
    ++stats_.io_errors;
    status = blk::kStatusIoErr;
    logger().debug("{}: {}", backend_->name(), result.error().message);
  }
  finish(slot->chain, status);
  if (std::find(completed_queues_.begin(), completed_queues_.end(), slot->queue) ==
      completed_queues_.end()) {
    completed_queues_.push_back(slot->queue);
  }
  slot.reset();
  free_slots_.push_back(static_cast<std::size_t>(tag));
}

void BlockDevice::io_batch_done() {
  // One used buffer notification per queue and batch; EVENT_IDX / NO_INTERRUPT decide
  // whether it is sent (§2.7.10).
  for (virtio::Virtqueue* queue : completed_queues_) queue->notify_driver_if_needed();
  completed_queues_.clear();
}

std::uint8_t BlockDevice::do_read(virtio::DescriptorChain& chain, std::uint64_t sector,
                                  std::uint64_t length) {
  // §5.2.6: data moves in multiples of 512 bytes.
  if (length % blk::kSectorSize != 0 || !in_range(sector, length / blk::kSectorSize))
    return blk::kStatusIoErr;
  if (length == 0) return blk::kStatusOk;
  if (!chain.memory().all_host_mapped()) return bounce(chain, sector, length, /*to_guest=*/true);
  auto buffers = chain.writer().take_buffers(length);
  if (!buffers) return blk::kStatusIoErr;
  return backend_->read(sector * blk::kSectorSize, buffers->spans) ? blk::kStatusOk
                                                                   : blk::kStatusIoErr;
}

// Guest memory the server cannot map (virtio/guest_memory.h: message-backed regions)
// has no host spans for zero-copy I/O: data moves through a bounded bounce buffer, one
// piece at a time, so a request of any size costs at most kBouncePiece bytes here.
std::uint8_t BlockDevice::bounce(virtio::DescriptorChain& chain, std::uint64_t sector,
                                 std::uint64_t length, bool to_guest) {
  std::vector<std::uint8_t> bounce(static_cast<std::size_t>(std::min(length, kBouncePiece)));
  const std::uint64_t offset = sector * blk::kSectorSize;
  for (std::uint64_t done = 0; done < length;) {
    const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(bounce.size(), length - done));
    const std::span<std::uint8_t> piece(bounce.data(), n);
    const std::span<std::uint8_t> spans[] = {piece};
    const bool moved = to_guest
                           ? backend_->read(offset + done, spans) && chain.writer().write(piece)
                           : chain.reader().read(piece) && backend_->write(offset + done, spans);
    if (!moved) return blk::kStatusIoErr;
    done += n;
  }
  return blk::kStatusOk;
}

std::uint8_t BlockDevice::do_write(virtio::DescriptorChain& chain, std::uint64_t sector,
                                   std::uint64_t length) {
  // §5.2.6.2: on a read-only device the write fails and no data is written.
  if (options_.read_only) return blk::kStatusIoErr;
  if (length % blk::kSectorSize != 0 || !in_range(sector, length / blk::kSectorSize))
    return blk::kStatusIoErr;
  if (length == 0) return blk::kStatusOk;
  if (!chain.memory().all_host_mapped()) return bounce(chain, sector, length, /*to_guest=*/false);
  auto buffers = chain.reader().take_buffers(length);
  if (!buffers) return blk::kStatusIoErr;
  return backend_->write(sector * blk::kSectorSize, buffers->spans) ? blk::kStatusOk
                                                                    : blk::kStatusIoErr;
}

std::uint8_t BlockDevice::do_get_id(virtio::DescriptorChain& chain, std::uint64_t length) {
  // §5.2.6: a NUL-padded string of up to 20 bytes, without terminator at 20.
  std::array<std::uint8_t, blk::kIdBytes> id{};
  std::memcpy(id.data(), options_.serial.data(), options_.serial.size());
  const std::size_t bytes =
      static_cast<std::size_t>(std::min<std::uint64_t>(length, blk::kIdBytes));
  if (!chain.writer().write(std::span<const std::uint8_t>(id.data(), bytes)))
    return blk::kStatusIoErr;
  return blk::kStatusOk;
}

std::uint8_t BlockDevice::do_segments(virtio::DescriptorChain& chain, std::uint32_t type,
                                      std::uint64_t length) {
  const bool discard = type == blk::kTypeDiscard;
  const bool offered = discard ? options_.discard : options_.write_zeroes;
  if (!offered) return blk::kStatusUnsupported;
  if (options_.read_only) return blk::kStatusIoErr;  // both modify the disk
  if (length == 0 || length % sizeof(blk::DiscardWriteZeroesSegment) != 0) return blk::kStatusIoErr;
  const std::uint64_t count = length / sizeof(blk::DiscardWriteZeroesSegment);
  const std::uint32_t max_segments =
      discard ? options_.max_discard_seg : options_.max_write_zeroes_seg;
  const std::uint32_t max_sectors =
      discard ? options_.max_discard_sectors : options_.max_write_zeroes_sectors;
  if (count > max_segments) return blk::kStatusUnsupported;

  // Validate every segment before touching the disk, so UNSUPP and range errors leave
  // it unchanged.
  std::vector<blk::DiscardWriteZeroesSegment> segments;
  segments.reserve(static_cast<std::size_t>(count));
  for (std::uint64_t i = 0; i < count; ++i) {
    auto raw = chain.reader().read_obj<blk::DiscardWriteZeroesSegment>();
    if (!raw) return blk::kStatusIoErr;
    blk::DiscardWriteZeroesSegment segment{from_le(raw->sector), from_le(raw->num_sectors),
                                           from_le(raw->flags)};
    // §5.2.6.2: UNSUPP for unknown flags, and for unmap on a discard.
    const std::uint32_t allowed = discard ? 0u : blk::kSegmentFlagUnmap;
    if ((segment.flags & ~allowed) != 0) return blk::kStatusUnsupported;
    if (segment.num_sectors > max_sectors || !in_range(segment.sector, segment.num_sectors)) {
      return blk::kStatusIoErr;
    }
    segments.push_back(segment);
  }
  for (const auto& segment : segments) {
    const std::uint64_t offset = segment.sector * blk::kSectorSize;
    const std::uint64_t bytes = std::uint64_t{segment.num_sectors} * blk::kSectorSize;
    Status done = discard
                      ? backend_->discard(offset, bytes)
                      : backend_->write_zeroes(offset, bytes,
                                               options_.write_zeroes_may_unmap &&
                                                   (segment.flags & blk::kSegmentFlagUnmap) != 0);
    if (!done) {
      return done.error().code == ErrorCode::kUnsupported ? blk::kStatusUnsupported
                                                          : blk::kStatusIoErr;
    }
  }
  return blk::kStatusOk;
}

}  // namespace vpci::devices
