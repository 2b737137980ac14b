#include "devices/uring_block_io.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <sys/eventfd.h>

namespace vpci::devices {

Result<std::unique_ptr<UringBlockIo>> UringBlockIo::create(int fd, unsigned depth, EventLoop& loop,
                                                           BlockIoCompletions& completions) {
  if (depth == 0) return make_error(ErrorCode::kInvalidArgument, "io_uring depth must be > 0");
  std::unique_ptr<UringBlockIo> io(new UringBlockIo(fd, depth, loop, completions));
  // liburing returns -errno. ENOSYS: no io_uring in this kernel or a seccomp filter;
  // EPERM: kernel.io_uring_disabled; ENOMEM: RLIMIT_MEMLOCK before Linux 5.12.
  if (const int rc = ::io_uring_queue_init(depth, &io->ring_, 0); rc < 0) {
    return make_error(ErrorCode::kUnsupported, "io_uring_queue_init({}): {}", depth,
                      errno_text(-rc));
  }
  io->ring_ready_ = true;
  io->event_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (io->event_fd_ < 0) return make_error(ErrorCode::kIoError, "eventfd: {}", errno_text(errno));
  if (const int rc = ::io_uring_register_eventfd(&io->ring_, io->event_fd_); rc < 0) {
    return make_error(ErrorCode::kUnsupported, "io_uring_register_eventfd: {}", errno_text(-rc));
  }
  UringBlockIo* self = io.get();
  VPCI_ASSIGN_OR_RETURN(io->source_, loop.add_fd(io->event_fd_, EPOLLIN,
                                                 [self](std::uint32_t) { self->on_eventfd(); }));
  return io;
}

UringBlockIo::~UringBlockIo() {
  if (ring_ready_) drain();
  if (source_ != 0) loop_.remove_fd(source_);
  if (ring_ready_) ::io_uring_queue_exit(&ring_);
  if (event_fd_ >= 0) ::close(event_fd_);
}

void UringBlockIo::enqueue(BlockIoOp op) {
  waiting_.push_back(std::make_unique<Pending>(Pending{std::move(op), 0}));
}

void UringBlockIo::fill_ring() {
  while (!waiting_.empty() && in_kernel_ < depth_) {
    std::unique_ptr<Pending> next = std::move(waiting_.front());
    waiting_.pop_front();
    Pending* raw = next.release();  // the ring's user_data owns it until reaped
    if (!prepare(raw)) break;
  }
}

bool UringBlockIo::prepare(Pending* pending) {
  io_uring_sqe* sqe = ::io_uring_get_sqe(&ring_);
  if (sqe == nullptr) {
    // The submission queue holds `depth_` entries and in_kernel_ < depth_, so this only
    // happens when prepared entries have not been submitted yet: hand them over.
    ::io_uring_submit(&ring_);
    has_unsubmitted_ = false;
    sqe = ::io_uring_get_sqe(&ring_);
  }
  if (sqe == nullptr) {
    // Cannot happen (see above); keep the operation rather than lose it.
    waiting_.push_front(std::unique_ptr<Pending>(pending));
    return false;
  }
  BlockIoOp& op = pending->op;
  const iovec* buffers = op.buffers.data() + pending->first_buffer;
  const auto count = static_cast<unsigned>(op.buffers.size() - pending->first_buffer);
  switch (op.op) {
    case BlockOp::kRead: ::io_uring_prep_readv(sqe, fd_, buffers, count, op.offset); break;
    case BlockOp::kWrite: ::io_uring_prep_writev(sqe, fd_, buffers, count, op.offset); break;
    case BlockOp::kFlush: ::io_uring_prep_fsync(sqe, fd_, IORING_FSYNC_DATASYNC); break;
  }
  ::io_uring_sqe_set_data(sqe, pending);
  ++in_kernel_;
  has_unsubmitted_ = true;
  return true;
}

void UringBlockIo::submit() {
  fill_ring();
  if (!has_unsubmitted_) return;
  has_unsubmitted_ = false;
  // An error here (EINTR, EAGAIN under memory pressure) leaves the entries in the
  // submission queue; the next submit or drain hands them over.
  if (::io_uring_submit(&ring_) < 0) has_unsubmitted_ = true;
}

std::size_t UringBlockIo::reap() {
  std::size_t reaped = 0;
  io_uring_cqe* cqe = nullptr;
  while (::io_uring_peek_cqe(&ring_, &cqe) == 0 && cqe != nullptr) {
    auto* pending = static_cast<Pending*>(::io_uring_cqe_get_data(cqe));
    const int result = cqe->res;
    ::io_uring_cqe_seen(&ring_, cqe);
    --in_kernel_;
    ++reaped;
    complete(pending, result);
  }
  return reaped;
}

void UringBlockIo::complete(Pending* pending_raw, int result) {
  std::unique_ptr<Pending> pending(pending_raw);
  BlockIoOp& op = pending->op;
  if (result == -EINTR || result == -EAGAIN) {
    waiting_.push_front(std::move(pending));  // transient: try the same thing again
    return;
  }
  if (result < 0) {
    const char* what = op.op == BlockOp::kFlush  ? "fdatasync"
                       : op.op == BlockOp::kRead ? "read"
                                                 : "write";
    completions_.io_completed(op.tag, make_error(ErrorCode::kIoError, "{} at byte {}: {}", what,
                                                 op.offset, errno_text(-result)));
    return;
  }
  if (op.op == BlockOp::kFlush) {
    completions_.io_completed(op.tag, {});
    return;
  }
  // Skip what moved; anything left is a short transfer to resubmit.
  auto moved = static_cast<std::size_t>(result);
  op.offset += moved;
  while (pending->first_buffer < op.buffers.size() && moved > 0) {
    iovec& buffer = op.buffers[pending->first_buffer];
    const std::size_t step = std::min(moved, buffer.iov_len);
    buffer.iov_base = static_cast<std::uint8_t*>(buffer.iov_base) + step;
    buffer.iov_len -= step;
    moved -= step;
    if (buffer.iov_len == 0) ++pending->first_buffer;
  }
  if (pending->first_buffer == op.buffers.size()) {
    completions_.io_completed(op.tag, {});
    return;
  }
  if (result == 0) {
    // Nothing moved and something remains: the file ended (it shrank under us).
    completions_.io_completed(
        op.tag, make_error(ErrorCode::kIoError, "{} at byte {}: unexpected end of file",
                           op.op == BlockOp::kRead ? "read" : "write", op.offset));
    return;
  }
  waiting_.push_front(std::move(pending));
}

void UringBlockIo::on_eventfd() {
  std::uint64_t count = 0;
  [[maybe_unused]] const ssize_t n = ::read(event_fd_, &count, sizeof(count));
  if (reap() == 0) return;
  submit();  // resubmissions and operations that waited for room
  completions_.io_batch_done();
}

void UringBlockIo::drain() {
  submit();
  bool delivered = false;
  while (in_flight() > 0) {
    io_uring_cqe* cqe = nullptr;
    const int rc = ::io_uring_wait_cqe(&ring_, &cqe);
    if (rc < 0 && rc != -EINTR && rc != -EAGAIN) break;  // the ring is gone; nothing to wait for
    delivered = reap() > 0 || delivered;
    submit();
  }
  if (delivered) completions_.io_batch_done();
}

}  // namespace vpci::devices
