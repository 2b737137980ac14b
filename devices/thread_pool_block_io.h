// The fallback engine of devices/block_io.h: a few worker threads run the backend's
// synchronous preadv / pwritev / fdatasync (devices/block_backend.h) and hand results
// back through an eventfd the device's loop watches. Used where io_uring is unavailable
// and for backends without a file descriptor. Same contract as io_uring: a result is
// delivered only after the system call returned, so a FLUSH started after a write's
// completion covers it.
//
// Threading: enqueue/submit/drain and the completions run on the loop's thread; the
// workers only touch the job and result queues, under `mutex_`. The backend must allow
// concurrent calls (FileBlockBackend uses positional I/O only).
#pragma once

#include <condition_variable>
#include <deque>
#include <memory>
#include <thread>
#include <vector>

#include "base/thread_annotations.h"
#include "devices/block_io.h"

namespace vpci::devices {

class ThreadPoolBlockIo final : public BlockIo {
 public:
  [[nodiscard]] static Result<std::unique_ptr<ThreadPoolBlockIo>> create(
      BlockBackend& backend, unsigned threads, EventLoop& loop, BlockIoCompletions& completions);
  ~ThreadPoolBlockIo() override;
  ThreadPoolBlockIo(const ThreadPoolBlockIo&) = delete;
  ThreadPoolBlockIo& operator=(const ThreadPoolBlockIo&) = delete;

  [[nodiscard]] std::string_view name() const override { return "thread pool"; }
  void enqueue(BlockIoOp op) override;
  void submit() override VPCI_EXCLUDES(mutex_);
  void drain() override VPCI_EXCLUDES(mutex_);
  [[nodiscard]] std::size_t in_flight() const override { return staged_.size() + started_; }

 private:
  struct Finished {
    std::uint64_t tag;
    Status result;
  };
  ThreadPoolBlockIo(BlockBackend& backend, EventLoop& loop, BlockIoCompletions& completions)
      : backend_(backend), loop_(loop), completions_(completions) {}
  void work() VPCI_EXCLUDES(mutex_);
  [[nodiscard]] Status run(BlockIoOp& op);
  // Delivers finished results; returns how many.
  std::size_t deliver() VPCI_EXCLUDES(mutex_);
  void on_eventfd();

  BlockBackend& backend_;
  EventLoop& loop_;
  BlockIoCompletions& completions_;
  int event_fd_ = -1;
  EventLoop::SourceId source_ = 0;
  std::vector<BlockIoOp> staged_;  // loop thread: enqueued, not yet submitted
  std::size_t started_ = 0;        // loop thread: submitted, not yet delivered

  Mutex mutex_;
  std::condition_variable_any changed_;  // a job arrived, one finished, or stopping
  std::deque<BlockIoOp> jobs_ VPCI_GUARDED_BY(mutex_);
  std::vector<Finished> finished_ VPCI_GUARDED_BY(mutex_);
  std::size_t busy_ VPCI_GUARDED_BY(mutex_) = 0;  // jobs a worker is running
  bool stopping_ VPCI_GUARDED_BY(mutex_) = false;
  std::vector<std::thread> workers_;
};

}  // namespace vpci::devices
