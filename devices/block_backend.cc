#include "devices/block_backend.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <limits>
#include <vector>

#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>

namespace vpci::devices {
namespace {

Error os_error(std::string_view what, const std::string& path, int err) {
  return Error{ErrorCode::kIoError, fmt::format("{} {}: {}", what, path, errno_text(err))};
}

bool is_unsupported(int err) {
  return err == EOPNOTSUPP || err == ENOTSUP || err == ENOSYS || err == EINVAL;
}

}  // namespace

Result<std::unique_ptr<FileBlockBackend>> FileBlockBackend::open(const std::string& path,
                                                                 bool read_only) {
  // O_NONBLOCK: opening a FIFO read-only would wait for a writer; adopt() refuses it.
  const int fd = ::open(path.c_str(), (read_only ? O_RDONLY : O_RDWR) | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return tl::unexpected(os_error("opening", path, errno));
  return adopt(fd, path);
}

Result<std::unique_ptr<FileBlockBackend>> FileBlockBackend::adopt(int fd, std::string path) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return tl::unexpected(os_error("stat of", path, err));
  }
  std::uint64_t size = 0;
  const bool block_device = S_ISBLK(st.st_mode);
  if (block_device) {
    if (::ioctl(fd, BLKGETSIZE64, &size) != 0) {
      const int err = errno;
      ::close(fd);
      return tl::unexpected(os_error("BLKGETSIZE64 on", path, err));
    }
  } else if (S_ISREG(st.st_mode)) {
    size = static_cast<std::uint64_t>(st.st_size);
  } else {
    ::close(fd);
    return make_error(ErrorCode::kInvalidArgument,
                      "{} is neither a regular file nor a block device", path);
  }
  // Regular files and block devices ignore O_NONBLOCK, but drop it so nothing depends
  // on how the caller opened the descriptor.
  if (const int flags = ::fcntl(fd, F_GETFL); flags >= 0 && (flags & O_NONBLOCK) != 0) {
    (void)::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
  }
  return std::unique_ptr<FileBlockBackend>(
      new FileBlockBackend(fd, size, block_device, std::move(path)));
}

FileBlockBackend::~FileBlockBackend() {
  ::close(fd_);
}

Status FileBlockBackend::transfer(bool write, std::uint64_t offset,
                                  std::span<const std::span<std::uint8_t>> buffers) {
  std::vector<iovec> iov;
  iov.reserve(buffers.size());
  for (const auto& span : buffers) {
    if (!span.empty()) iov.push_back(iovec{span.data(), span.size()});
  }
  std::size_t first = 0;
  while (first < iov.size()) {
    const int count = static_cast<int>(std::min<std::size_t>(iov.size() - first, IOV_MAX));
    if (offset > static_cast<std::uint64_t>(std::numeric_limits<off_t>::max())) {
      return make_error(ErrorCode::kOutOfRange, "offset {} beyond the file offset range", offset);
    }
    const ssize_t done = write ? ::pwritev(fd_, &iov[first], count, static_cast<off_t>(offset))
                               : ::preadv(fd_, &iov[first], count, static_cast<off_t>(offset));
    if (done < 0) {
      if (errno == EINTR) continue;
      return tl::unexpected(os_error(write ? "writing" : "reading", path_, errno));
    }
    if (done == 0) {
      return make_error(ErrorCode::kIoError, "{} {}: unexpected end of file at {}",
                        write ? "writing" : "reading", path_, offset);
    }
    // Continue after a short transfer: drop the completed iovecs, trim the partial one.
    offset += static_cast<std::uint64_t>(done);
    auto left = static_cast<std::size_t>(done);
    while (left > 0 && first < iov.size()) {
      if (left >= iov[first].iov_len) {
        left -= iov[first].iov_len;
        ++first;
      } else {
        iov[first].iov_base = static_cast<std::uint8_t*>(iov[first].iov_base) + left;
        iov[first].iov_len -= left;
        left = 0;
      }
    }
  }
  return {};
}

Status FileBlockBackend::read(std::uint64_t offset,
                              std::span<const std::span<std::uint8_t>> buffers) {
  return transfer(false, offset, buffers);
}

Status FileBlockBackend::write(std::uint64_t offset,
                               std::span<const std::span<std::uint8_t>> buffers) {
  return transfer(true, offset, buffers);
}

Status FileBlockBackend::flush() {
  // fdatasync writes the data and the metadata needed to read it back (size,
  // allocation); that is what FLUSH promises (§5.2.6.2).
  while (::fdatasync(fd_) != 0) {
    if (errno != EINTR) return tl::unexpected(os_error("fdatasync of", path_, errno));
  }
  return {};
}

Status FileBlockBackend::discard(std::uint64_t offset, std::uint64_t length) {
  if (length == 0) return {};
  if (::fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                  static_cast<off_t>(length)) != 0) {
    const int err = errno;
    if (is_unsupported(err))
      return make_error(ErrorCode::kUnsupported, "discard on {}: {}", path_, errno_text(err));
    return tl::unexpected(os_error("discard on", path_, err));
  }
  return {};
}

Status FileBlockBackend::write_zeroes(std::uint64_t offset, std::uint64_t length, bool may_unmap) {
  if (length == 0) return {};
  const auto off = static_cast<off_t>(offset);
  const auto len = static_cast<off_t>(length);
  // Cheapest first: zero-range keeps the allocation; a punched hole also reads back as
  // zeroes and is allowed when the driver set `unmap` (§5.2.6.2).
  if (::fallocate(fd_, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, off, len) == 0) return {};
  if (!is_unsupported(errno)) return tl::unexpected(os_error("zeroing", path_, errno));
  if (may_unmap && ::fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len) == 0)
    return {};
  // Fall back to writing zeroes.
  static const std::vector<std::uint8_t> zeroes(1 << 20, 0);
  while (length > 0) {
    const std::size_t chunk =
        static_cast<std::size_t>(std::min<std::uint64_t>(length, zeroes.size()));
    // pwritev only reads its buffers; iovec merely lacks const.
    const std::span<std::uint8_t> span(const_cast<std::uint8_t*>(zeroes.data()), chunk);
    VPCI_TRY(transfer(true, offset, std::span<const std::span<std::uint8_t>>(&span, 1)));
    offset += chunk;
    length -= chunk;
  }
  return {};
}

}  // namespace vpci::devices
