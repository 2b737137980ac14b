#include "virtio/descriptor_chain.h"

#include <algorithm>
#include <limits>

#include "virtio/virtqueue.h"

namespace vpci::virtio {

// ---- ChainCursor ----------------------------------------------------------------------

template <typename Step>
Status ChainCursor::advance(std::uint64_t length, Step&& step) {
  if (length > remaining()) {
    return make_error(ErrorCode::kOutOfRange, "{} bytes requested but only {} remain in the chain",
                      length, remaining());
  }
  while (length > 0) {
    // Zero-length buffers never enter a chain, so the current buffer has bytes left.
    const ChainBuffer& buffer = buffers_[buffer_index_];
    const std::uint64_t piece = std::min<std::uint64_t>(buffer.length - buffer_offset_, length);
    VPCI_TRY(step(buffer.address + buffer_offset_, piece));
    position_ += piece;
    length -= piece;
    buffer_offset_ += static_cast<std::uint32_t>(piece);
    if (buffer_offset_ == buffer.length) {
      ++buffer_index_;
      buffer_offset_ = 0;
    }
  }
  return {};
}

// ---- ChainReader ----------------------------------------------------------------------

Status ChainReader::read(std::span<std::uint8_t> out) {
  std::size_t done = 0;
  return advance(out.size(), [&](GuestAddress address, std::uint64_t piece) -> Status {
    VPCI_TRY(memory_->read(address, out.subspan(done, static_cast<std::size_t>(piece))));
    done += static_cast<std::size_t>(piece);
    return {};
  });
}

Status ChainReader::skip(std::uint64_t length) {
  return advance(length, [](GuestAddress, std::uint64_t) -> Status { return {}; });
}

Result<HostBufferList> ChainReader::take_buffers(std::uint64_t length) {
  HostBufferList list;
  VPCI_TRY(advance(length, [&](GuestAddress address, std::uint64_t piece) -> Status {
    VPCI_ASSIGN_OR_RETURN(HostBufferList part,
                          memory_->host_buffers(address, piece, Access::kRead));
    list.spans.insert(list.spans.end(), part.spans.begin(), part.spans.end());
    for (auto& pin : part.pins) list.pins.push_back(std::move(pin));
    return {};
  }));
  return list;
}

// ---- ChainWriter ----------------------------------------------------------------------

Status ChainWriter::write(std::span<const std::uint8_t> data) {
  std::size_t done = 0;
  return advance(data.size(), [&](GuestAddress address, std::uint64_t piece) -> Status {
    VPCI_TRY(memory_->write(address, data.subspan(done, static_cast<std::size_t>(piece))));
    done += static_cast<std::size_t>(piece);
    return {};
  });
}

Status ChainWriter::skip(std::uint64_t length) {
  if (length > remaining()) {
    return make_error(ErrorCode::kOutOfRange, "{} bytes requested but only {} remain in the chain",
                      length, remaining());
  }
  if (length > 0 && !skipped_) {
    skipped_ = true;
    written_before_skip_ = position();
  }
  return advance(length, [](GuestAddress, std::uint64_t) -> Status { return {}; });
}

Result<HostBufferList> ChainWriter::take_buffers(std::uint64_t length) {
  HostBufferList list;
  VPCI_TRY(advance(length, [&](GuestAddress address, std::uint64_t piece) -> Status {
    VPCI_ASSIGN_OR_RETURN(HostBufferList part,
                          memory_->host_buffers(address, piece, Access::kWrite));
    list.spans.insert(list.spans.end(), part.spans.begin(), part.spans.end());
    for (auto& pin : part.pins) list.pins.push_back(std::move(pin));
    return {};
  }));
  return list;
}

// ---- DescriptorChain --------------------------------------------------------------------

DescriptorChain::DescriptorChain(Virtqueue* queue, std::uint64_t queue_epoch,
                                 std::shared_ptr<const MemoryMap> memory,
                                 ChainDescriptors&& descriptors)
    : queue_(queue),
      queue_epoch_(queue_epoch),
      memory_(std::move(memory)),
      descriptors_(std::move(descriptors)),
      reader_(memory_.get(), descriptors_.readable, descriptors_.readable_bytes),
      writer_(memory_.get(), descriptors_.writable, descriptors_.writable_bytes) {}

// Inline buffers are copied by a move, so the cursors are re-pointed at this object's
// lists; the MemoryMap pointer stays valid (the map object itself does not move).
DescriptorChain::DescriptorChain(DescriptorChain&& other) noexcept
    : queue_(std::exchange(other.queue_, nullptr)),
      queue_epoch_(other.queue_epoch_),
      memory_(std::move(other.memory_)),
      descriptors_(std::move(other.descriptors_)),
      reader_(other.reader_),
      writer_(other.writer_) {
  reader_.rebind(descriptors_.readable);
  writer_.rebind(descriptors_.writable);
}

DescriptorChain& DescriptorChain::operator=(DescriptorChain&& other) noexcept {
  if (this != &other) {
    if (queue_ != nullptr) queue_->abandon_chain(queue_epoch_, descriptors_, *memory_);
    queue_ = std::exchange(other.queue_, nullptr);
    queue_epoch_ = other.queue_epoch_;
    memory_ = std::move(other.memory_);
    descriptors_ = std::move(other.descriptors_);
    reader_ = other.reader_;
    writer_ = other.writer_;
    reader_.rebind(descriptors_.readable);
    writer_.rebind(descriptors_.writable);
  }
  return *this;
}

DescriptorChain::~DescriptorChain() {
  if (queue_ != nullptr) queue_->abandon_chain(queue_epoch_, descriptors_, *memory_);
}

void DescriptorChain::complete() {
  const std::uint64_t written = writer_.bytes_written();
  complete(static_cast<std::uint32_t>(
      std::min<std::uint64_t>(written, std::numeric_limits<std::uint32_t>::max())));
}

void DescriptorChain::complete(std::uint32_t used_length) {
  if (queue_ == nullptr) return;
  std::exchange(queue_, nullptr)->complete_chain(queue_epoch_, descriptors_, *memory_, used_length);
}

void DescriptorChain::return_to_ring() {
  if (queue_ == nullptr) return;
  std::exchange(queue_, nullptr)->unpop_chain(queue_epoch_, descriptors_);
  memory_.reset();
}

void DescriptorChain::fail(Error error) {
  if (queue_ == nullptr) return;
  std::exchange(queue_, nullptr)->fail_chain(queue_epoch_, std::move(error));
}

}  // namespace vpci::virtio
