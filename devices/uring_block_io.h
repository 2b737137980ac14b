// The io_uring engine of devices/block_io.h: readv / writev / fsync(DATASYNC) on the
// backing file's descriptor, queued as submission entries and started in one
// io_uring_submit per batch; the kernel signals completions through an eventfd the
// device's loop watches (io_uring_register_eventfd), and the loop reaps them.
//
// A short read or write (the kernel may stop early, e.g. on a signal) is resubmitted for
// the rest; only an error or an unexpected end of file fails the operation, as QEMU's
// io_uring driver does. At most `depth` operations are in the kernel at once (the ring's
// size); more wait in a queue and start as completions make room.
#pragma once

#include <liburing.h>

#include <deque>
#include <memory>

#include "devices/block_io.h"

namespace vpci::devices {

class UringBlockIo final : public BlockIo {
 public:
  // Fails (kUnsupported, with the kernel's reason) where io_uring cannot be used.
  [[nodiscard]] static Result<std::unique_ptr<UringBlockIo>> create(
      int fd, unsigned depth, EventLoop& loop, BlockIoCompletions& completions);
  ~UringBlockIo() override;
  UringBlockIo(const UringBlockIo&) = delete;
  UringBlockIo& operator=(const UringBlockIo&) = delete;

  [[nodiscard]] std::string_view name() const override { return "io_uring"; }
  void enqueue(BlockIoOp op) override;
  void submit() override;
  void drain() override;
  [[nodiscard]] std::size_t in_flight() const override { return waiting_.size() + in_kernel_; }

 private:
  struct Pending {
    BlockIoOp op;
    std::size_t first_buffer = 0;  // buffers before this one have moved completely
  };
  UringBlockIo(int fd, unsigned depth, EventLoop& loop, BlockIoCompletions& completions)
      : fd_(fd), depth_(depth), loop_(loop), completions_(completions) {}
  // Moves waiting operations into the submission queue while the ring has room.
  void fill_ring();
  // False (and `pending` back in the queue) if the ring has no free entry.
  bool prepare(Pending* pending);
  // Handles every completion the kernel has posted; returns how many.
  std::size_t reap();
  void complete(Pending* pending_raw, int result);
  void on_eventfd();

  io_uring ring_{};
  bool ring_ready_ = false;
  int fd_;
  unsigned depth_;
  int event_fd_ = -1;
  EventLoop& loop_;
  EventLoop::SourceId source_ = 0;
  BlockIoCompletions& completions_;
  std::deque<std::unique_ptr<Pending>> waiting_;  // enqueued, not yet in the ring
  std::size_t in_kernel_ = 0;                     // prepared or submitted, not reaped
  bool has_unsubmitted_ = false;                  // prepared since the last io_uring_submit
};

}  // namespace vpci::devices
