#include "devices/block_io.h"

#include "base/log.h"
#include "devices/thread_pool_block_io.h"
#include "devices/uring_block_io.h"

namespace vpci::devices {

std::uint64_t BlockIoOp::bytes() const {
  std::uint64_t total = 0;
  for (const iovec& buffer : buffers) total += buffer.iov_len;
  return total;
}

Result<std::unique_ptr<BlockIo>> open_block_io(BlockIoMode mode, BlockBackend& backend,
                                               unsigned depth, EventLoop& loop,
                                               BlockIoCompletions& completions) {
  if (mode != BlockIoMode::kThreads) {
    if (backend.fd() >= 0) {
      auto uring = UringBlockIo::create(backend.fd(), depth, loop, completions);
      if (uring) return std::unique_ptr<BlockIo>(std::move(*uring));
      if (mode == BlockIoMode::kIoUring)
        return tl::unexpected(std::move(uring).error().with_context("io = \"io_uring\""));
      logger().warn("{}: io_uring unavailable ({}); using a pool of {} threads instead",
                    backend.name(), uring.error().message, kBlockIoThreads);
    } else if (mode == BlockIoMode::kIoUring) {
      return make_error(ErrorCode::kUnsupported, "{}: io_uring needs a file descriptor",
                        backend.name());
    }
  }
  VPCI_ASSIGN_OR_RETURN(auto pool,
                        ThreadPoolBlockIo::create(backend, kBlockIoThreads, loop, completions));
  return std::unique_ptr<BlockIo>(std::move(pool));
}

}  // namespace vpci::devices
