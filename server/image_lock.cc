#include "server/image_lock.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <string>
#include <system_error>

#include <fmt/format.h>
#include <sys/stat.h>

namespace vpci::server {
namespace {

flock whole_file(short type) {
  flock lock{};
  lock.l_type = type;
  lock.l_whence = SEEK_SET;
  lock.l_start = 0;
  lock.l_len = 0;  // to the end, however the file grows
  lock.l_pid = 0;  // must be 0 for OFD locks
  return lock;
}

// Up to 4 KiB of a small /proc file; empty when it cannot be read.
std::string read_proc_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return {};
  std::string text(4096, '\0');
  std::size_t used = 0;
  while (used < text.size()) {
    const ssize_t n = ::read(fd, text.data() + used, text.size() - used);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    used += static_cast<std::size_t>(n);
  }
  ::close(fd);
  text.resize(used);
  return text;
}

// Which process holds a lock on the file `image` describes. The kernel reports the pid
// of classic POSIX locks (F_OFD_GETLK), but -1 for OFD locks, which belong to an open
// file, in both F_GETLK and /proc/locks. /proc/<pid>/fdinfo/<fd> lists the locks held
// through that descriptor, though, so the descriptors of the processes we may inspect
// (our own user's) are searched for one on the same inode that holds a lock. This runs
// only when a lock was refused.
std::optional<pid_t> find_lock_holder(int fd, const struct stat& image, short wanted) {
  flock probe = whole_file(wanted);
  if (::fcntl(fd, F_OFD_GETLK, &probe) == 0 && probe.l_type != F_UNLCK && probe.l_pid > 0) {
    return probe.l_pid;
  }
  std::error_code ec;
  std::filesystem::directory_iterator processes("/proc", ec);
  for (; !ec && processes != std::filesystem::directory_iterator(); processes.increment(ec)) {
    const std::string pid_text = processes->path().filename().string();
    if (pid_text.empty() || pid_text.find_first_not_of("0123456789") != std::string::npos) {
      continue;
    }
    std::error_code fd_ec;
    std::filesystem::directory_iterator fds(processes->path() / "fd", fd_ec);
    for (; !fd_ec && fds != std::filesystem::directory_iterator(); fds.increment(fd_ec)) {
      struct stat target {};
      if (::stat(fds->path().c_str(), &target) != 0 || target.st_dev != image.st_dev ||
          target.st_ino != image.st_ino) {
        continue;
      }
      const std::string info =
          read_proc_file((processes->path() / "fdinfo" / fds->path().filename()).string());
      if (info.find("\nlock:") != std::string::npos) {
        return static_cast<pid_t>(std::stol(pid_text));
      }
    }
  }
  return std::nullopt;
}

// "process 1234 (qemu-system-x86) holds a lock on it", or what is known instead.
std::string describe_holder(int fd, short wanted) {
  struct stat image {};
  if (::fstat(fd, &image) != 0) return "another process holds a lock on it";
  const std::optional<pid_t> holder = find_lock_holder(fd, image, wanted);
  if (!holder) return "another process holds a lock on it";
  if (*holder == ::getpid()) return "another device of this configuration uses it";
  std::string name = read_proc_file(fmt::format("/proc/{}/comm", *holder));
  while (!name.empty() && name.back() == '\n') name.pop_back();
  if (name.empty()) return fmt::format("process {} holds a lock on it", *holder);
  return fmt::format("process {} ({}) holds a lock on it", *holder, name);
}

}  // namespace

Status lock_image(int fd, const std::filesystem::path& path, bool read_only) {
  const short type = read_only ? F_RDLCK : F_WRLCK;
  flock lock = whole_file(type);
  if (::fcntl(fd, F_OFD_SETLK, &lock) == 0) return {};
  const int saved = errno;
  const char* how = read_only ? "reading" : "writing";
  if (saved == EAGAIN || saved == EACCES) {
    return make_error(ErrorCode::kConflict, "cannot lock image {} for {}: {}", path.string(), how,
                      describe_holder(fd, type));
  }
  return make_error(ErrorCode::kIoError,
                    "cannot lock image {} for {}: {} (images are only served locked)",
                    path.string(), how, errno_text(saved));
}

Result<UniqueFd> open_locked_image(const std::filesystem::path& path, bool read_only) {
  // O_NONBLOCK: a FIFO opened read-only would wait for a writer.
  UniqueFd fd(::open(path.c_str(), (read_only ? O_RDONLY : O_RDWR) | O_NONBLOCK | O_CLOEXEC));
  if (!fd.valid()) {
    const int saved = errno;
    return make_error(saved == ENOENT ? ErrorCode::kNotFound : ErrorCode::kIoError,
                      "opening {}: {}", path.string(), errno_text(saved));
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    return make_error(ErrorCode::kIoError, "stat of {}: {}", path.string(), errno_text(errno));
  }
  if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
    return make_error(ErrorCode::kInvalidArgument,
                      "{} is neither a regular file nor a block device", path.string());
  }
  VPCI_TRY(lock_image(fd.get(), path, read_only));
  return fd;
}

namespace {

// Opens the default image that is already there, never through a symbolic link (it is
// emptied and rewritten: a link could aim that at any file). An invalid fd when there is
// no such file.
Result<UniqueFd> open_existing_default_image(const std::filesystem::path& path, int access) {
  UniqueFd fd(::open(path.c_str(), access | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
  if (fd.valid() || errno == ENOENT) return fd;
  if (errno == ELOOP) {
    return make_error(ErrorCode::kInvalidArgument,
                      "image {} is a symbolic link; the default image is never written through one",
                      path.string());
  }
  return make_error(ErrorCode::kIoError, "opening image {}: {}", path.string(), errno_text(errno));
}

}  // namespace

Result<UniqueFd> open_fresh_image(const std::filesystem::path& path, std::uint64_t bytes,
                                  bool& created) {
  created = false;
  // Never O_TRUNC: the file may be another server's image, and only the lock says so.
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644));
  if (fd.valid()) {
    created = true;
  } else if (errno == EEXIST) {
    VPCI_ASSIGN_OR_RETURN(fd, open_existing_default_image(path, O_RDWR));
    if (!fd.valid()) {  // removed between the two opens
      return make_error(ErrorCode::kIoError, "image {} vanished while it was opened",
                        path.string());
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
      return make_error(ErrorCode::kInvalidArgument, "image {} exists and is not a regular file",
                        path.string());
    }
  } else {
    return make_error(ErrorCode::kIoError, "cannot create image {}: {}", path.string(),
                      errno_text(errno));
  }
  if (auto locked = lock_image(fd.get(), path, /*read_only=*/false); !locked) {
    // Even a file this call created belongs to whoever locked it first (another server
    // that opened it in between), so it is not removed.
    created = false;
    return tl::unexpected(std::move(locked.error()));
  }
  // Empty first, so no byte of an earlier run survives inside the new size.
  if (::ftruncate(fd.get(), 0) != 0 || ::ftruncate(fd.get(), static_cast<off_t>(bytes)) != 0) {
    return make_error(ErrorCode::kIoError, "cannot size image {} to {} bytes: {}", path.string(),
                      bytes, errno_text(errno));
  }
  return fd;
}

Status check_image_lockable(const std::filesystem::path& path) {
  VPCI_ASSIGN_OR_RETURN(const UniqueFd fd, open_existing_default_image(path, O_RDONLY));
  if (!fd.valid()) return {};  // nothing there: nothing to conflict with
  // F_OFD_GETLK tests a write lock without taking one; it needs no write access.
  flock probe = whole_file(F_WRLCK);
  if (::fcntl(fd.get(), F_OFD_GETLK, &probe) != 0) {
    return make_error(ErrorCode::kIoError, "cannot test the lock of image {}: {}", path.string(),
                      errno_text(errno));
  }
  if (probe.l_type == F_UNLCK) return {};
  return make_error(ErrorCode::kConflict, "cannot lock image {} for writing: {}", path.string(),
                    describe_holder(fd.get(), F_WRLCK));
}

}  // namespace vpci::server
