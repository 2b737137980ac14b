#include "base/input_file.h"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <sys/stat.h>

namespace vpci {
namespace {

// Closes the descriptor on every path out of read_input_file.
class ScopedFd {
 public:
  explicit ScopedFd(int fd) : fd_(fd) {}
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;
  ~ScopedFd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

std::string_view file_type_name(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISBLK(mode)) return "a block device";
  return "not a regular file";
}

tl::unexpected<Error> too_large(const std::filesystem::path& path, const InputFileKind& kind) {
  return make_error(ErrorCode::kNoSpace, "{}: larger than the {} limit for a {}", path.string(),
                    describe_size(kind.max_bytes), kind.noun);
}

}  // namespace

std::string describe_size(std::size_t bytes) {
  if (bytes >= kMiB && bytes % kMiB == 0) return fmt::format("{} MiB", bytes / kMiB);
  if (bytes >= 1024 && bytes % 1024 == 0) return fmt::format("{} KiB", bytes / 1024);
  return fmt::format("{} bytes", bytes);
}

Result<std::string> read_input_file(const std::filesystem::path& path, const InputFileKind& kind) {
  // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer with no
  // way out; reads below wait with poll() and a timeout instead.
  const int raw_fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  if (raw_fd < 0) {
    const int saved = errno;
    return make_error(saved == ENOENT ? ErrorCode::kNotFound : ErrorCode::kIoError,
                      "{}: cannot open: {}", path.string(), errno_text(saved));
  }
  const ScopedFd fd(raw_fd);
  struct stat info {};
  if (::fstat(fd.get(), &info) != 0) {
    return make_error(ErrorCode::kIoError, "{}: cannot stat: {}", path.string(), errno_text(errno));
  }
  const bool regular = S_ISREG(info.st_mode);
  if (!regular && !S_ISFIFO(info.st_mode) && !S_ISCHR(info.st_mode)) {
    return make_error(ErrorCode::kInvalidArgument, "{}: is {}, expected a {}", path.string(),
                      file_type_name(info.st_mode), kind.noun);
  }
  // A regular file says its size up front (a huge sparse file is refused unread).
  // sysfs attributes report a nominal size (4096) unrelated to what a read returns,
  // so the size is a bound, never a promise.
  if (regular && static_cast<std::uintmax_t>(info.st_size) > kind.max_bytes)
    return too_large(path, kind);

  // A FIFO reads 0 both when its writer has finished and when no writer has opened
  // it yet; only after poll() has seen a writer (data or a hang-up) is 0 the end.
  const bool fifo = S_ISFIFO(info.st_mode);
  bool writer_seen = false;
  std::string data;
  char buffer[65536];
  for (;;) {
    const ssize_t n = ::read(fd.get(), buffer, sizeof buffer);
    if (n > 0) {
      if (data.size() + static_cast<std::size_t>(n) > kind.max_bytes) return too_large(path, kind);
      data.append(buffer, static_cast<std::size_t>(n));
      continue;
    }
    if (n == 0) {
      if (!fifo || writer_seen || !data.empty()) return data;
    } else if (errno == EINTR) {
      continue;
    } else if (errno != EAGAIN) {
      return make_error(ErrorCode::kIoError, "{}: read error: {}", path.string(),
                        errno_text(errno));
    }
    pollfd waiter{fd.get(), POLLIN, 0};
    const int ready = ::poll(&waiter, 1, static_cast<int>(kInputIdleTimeout.count()));
    if (ready < 0 && errno != EINTR) {
      return make_error(ErrorCode::kIoError, "{}: poll: {}", path.string(), errno_text(errno));
    }
    if (ready == 0) {
      return make_error(ErrorCode::kIoError, "{}: no data for {} s (a FIFO with no writer?)",
                        path.string(), kInputIdleTimeout.count() / 1000);
    }
    if ((waiter.revents & (POLLIN | POLLHUP)) != 0) writer_seen = true;
  }
}

}  // namespace vpci
