#include "devices/thread_pool_block_io.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <span>

#include <sys/eventfd.h>

namespace vpci::devices {

Result<std::unique_ptr<ThreadPoolBlockIo>> ThreadPoolBlockIo::create(
    BlockBackend& backend, unsigned threads, EventLoop& loop, BlockIoCompletions& completions) {
  if (threads == 0) return make_error(ErrorCode::kInvalidArgument, "a thread pool needs threads");
  std::unique_ptr<ThreadPoolBlockIo> io(new ThreadPoolBlockIo(backend, loop, completions));
  io->event_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (io->event_fd_ < 0) return make_error(ErrorCode::kIoError, "eventfd: {}", errno_text(errno));
  ThreadPoolBlockIo* self = io.get();
  VPCI_ASSIGN_OR_RETURN(io->source_, loop.add_fd(io->event_fd_, EPOLLIN,
                                                 [self](std::uint32_t) { self->on_eventfd(); }));
  for (unsigned i = 0; i < threads; ++i) io->workers_.emplace_back([self] { self->work(); });
  return io;
}

ThreadPoolBlockIo::~ThreadPoolBlockIo() {
  drain();
  {
    MutexLock lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  for (auto& worker : workers_) worker.join();
  if (source_ != 0) loop_.remove_fd(source_);
  if (event_fd_ >= 0) ::close(event_fd_);
}

void ThreadPoolBlockIo::enqueue(BlockIoOp op) {
  staged_.push_back(std::move(op));
}

void ThreadPoolBlockIo::submit() {
  if (staged_.empty()) return;
  {
    MutexLock lock(mutex_);
    for (auto& op : staged_) jobs_.push_back(std::move(op));
  }
  started_ += staged_.size();
  staged_.clear();
  changed_.notify_all();
}

Status ThreadPoolBlockIo::run(BlockIoOp& op) {
  if (op.op == BlockOp::kFlush) return backend_.flush();
  std::vector<std::span<std::uint8_t>> spans;
  spans.reserve(op.buffers.size());
  for (const iovec& buffer : op.buffers)
    spans.emplace_back(static_cast<std::uint8_t*>(buffer.iov_base), buffer.iov_len);
  return op.op == BlockOp::kRead ? backend_.read(op.offset, spans)
                                 : backend_.write(op.offset, spans);
}

void ThreadPoolBlockIo::work() {
  for (;;) {
    BlockIoOp op;
    {
      MutexLock lock(mutex_);
      while (jobs_.empty() && !stopping_) changed_.wait(mutex_);
      if (jobs_.empty()) return;  // stopping, and nothing left to do
      op = std::move(jobs_.front());
      jobs_.pop_front();
      ++busy_;
    }
    Status result = run(op);
    {
      MutexLock lock(mutex_);
      finished_.push_back(Finished{op.tag, std::move(result)});
      --busy_;
    }
    changed_.notify_all();
    const std::uint64_t one = 1;
    // Fails only when the counter would overflow: the loop is awake anyway.
    [[maybe_unused]] const ssize_t n = ::write(event_fd_, &one, sizeof(one));
  }
}

std::size_t ThreadPoolBlockIo::deliver() {
  std::vector<Finished> finished;
  {
    MutexLock lock(mutex_);
    finished.swap(finished_);
  }
  started_ -= finished.size();
  for (auto& done : finished) completions_.io_completed(done.tag, std::move(done.result));
  return finished.size();
}

void ThreadPoolBlockIo::on_eventfd() {
  std::uint64_t count = 0;
  [[maybe_unused]] const ssize_t n = ::read(event_fd_, &count, sizeof(count));
  if (deliver() > 0) completions_.io_batch_done();
}

void ThreadPoolBlockIo::drain() {
  submit();
  {
    MutexLock lock(mutex_);
    while (!jobs_.empty() || busy_ > 0) changed_.wait(mutex_);
  }
  if (deliver() > 0) completions_.io_batch_done();
}

}  // namespace vpci::devices
