// Asynchronous block I/O for virtio-blk: the device hands reads, writes and flushes to
// an engine and gets each result back later, on its event loop, in any order — so many
// requests are in flight at once and the loop keeps serving the guest meanwhile.
//
// Two engines, one contract:
//   * io_uring (devices/uring_block_io.h): readv/writev/fsync submitted in batches, their
//     completions signalled through an eventfd the loop watches. The default.
//   * a thread pool (devices/thread_pool_block_io.h) running the backend's preadv /
//     pwritev / fdatasync, for where io_uring is unavailable (a seccomp filter, the
//     kernel.io_uring_disabled sysctl, a kernel before 5.6) or for backends without a
//     file descriptor.
//
// Ordering is the guest's business (virtio 1.3 §5.2.6.4: requests complete in any
// order); what the device promises is §5.2.6.2's FLUSH rule — a FLUSH completes only
// after every write that completed before it was submitted is stable. Both engines keep
// it: a write's completion is reported only after the kernel finished it, and the flush
// (fdatasync) starts after that.
//
// Threading: every call, and every completion callback, happens on the loop's thread.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <sys/uio.h>

#include "base/error.h"
#include "base/event_loop.h"
#include "devices/block_backend.h"

namespace vpci::devices {

enum class BlockOp : std::uint8_t { kRead, kWrite, kFlush };

// One operation. `buffers` stay valid, untouched by anyone else, until its completion.
struct BlockIoOp {
  BlockOp op = BlockOp::kRead;
  std::uint64_t offset = 0;                   // bytes; reads and writes only
  std::vector<iovec> buffers;                 // reads and writes only
  std::uint64_t tag = 0;                      // handed back with the completion
  [[nodiscard]] std::uint64_t bytes() const;  // sum of the buffer lengths
};

// Where an engine reports results.
class BlockIoCompletions {
 public:
  // `tag`'s operation finished: every byte moved (a short transfer is finished by the
  // engine or reported as an error), or the flush made earlier writes stable.
  virtual void io_completed(std::uint64_t tag, Status result) = 0;
  // Called after a run of io_completed calls, so the device sends one used buffer
  // notification per batch rather than one per request.
  virtual void io_batch_done() = 0;

 protected:
  ~BlockIoCompletions() = default;
};

class BlockIo {
 public:
  virtual ~BlockIo() = default;

  // "io_uring" or "thread pool", for messages.
  [[nodiscard]] virtual std::string_view name() const = 0;
  // Queues `op`; it starts at the latest at the next submit().
  virtual void enqueue(BlockIoOp op) = 0;
  // Starts everything queued (one system call for a whole batch with io_uring).
  virtual void submit() = 0;
  // Blocks until every operation enqueued so far has completed and its completion has
  // been delivered. For device reset and DMA unmap, which must not return while the
  // kernel may still touch guest memory; bounded by the storage's own I/O time.
  virtual void drain() = 0;
  [[nodiscard]] virtual std::size_t in_flight() const = 0;
};

// Which engine `vpci serve`'s `io` key asks for.
enum class BlockIoMode : std::uint8_t {
  kAuto,     // io_uring, else the thread pool with a logged notice
  kIoUring,  // io_uring or an error
  kThreads,  // the thread pool
};
inline constexpr std::array<std::string_view, 3> kBlockIoModeNames = {"auto", "io_uring",
                                                                      "threads"};

// Threads of the fallback pool per device.
inline constexpr unsigned kBlockIoThreads = 4;

// Opens the engine `mode` asks for over `backend` (its fd for io_uring), registered on
// `loop`, delivering to `completions`; at most `depth` operations in flight before
// submit() waits for room. kAuto falls back to the thread pool, logging why.
Result<std::unique_ptr<BlockIo>> open_block_io(BlockIoMode mode, BlockBackend& backend,
                                               unsigned depth, EventLoop& loop,
                                               BlockIoCompletions& completions);

}  // namespace vpci::devices
