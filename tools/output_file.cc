#include "tools/output_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include <sys/stat.h>

namespace vpci::tools {
namespace {

enum class Target { kReplace, kStream };

Result<Target> classify(const std::filesystem::path& path) {
  struct stat info {};
  if (::stat(path.c_str(), &info) != 0) {
    if (errno == ENOENT) return Target::kReplace;  // a new file (a missing directory fails later)
    return make_error(ErrorCode::kIoError, "{}: cannot stat: {}", path.string(), errno_text(errno));
  }
  if (S_ISREG(info.st_mode)) return Target::kReplace;
  if (S_ISCHR(info.st_mode) || S_ISFIFO(info.st_mode)) return Target::kStream;
  const std::string_view what =
      S_ISDIR(info.st_mode) ? "a directory" : "neither a file nor a stream";
  return make_error(ErrorCode::kInvalidArgument, "{}: is {}, expected an output file",
                    path.string(), what);
}

Status write_all(int fd, std::string_view rest, const std::filesystem::path& path) {
  while (!rest.empty()) {
    const ssize_t n = ::write(fd, rest.data(), rest.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      return make_error(ErrorCode::kIoError, "{}: write error: {}", path.string(),
                        n < 0 ? errno_text(errno) : "no progress");
    }
    rest.remove_prefix(static_cast<std::size_t>(n));
  }
  return {};
}

// Opens a stream target without blocking: a FIFO with no reader fails with ENXIO
// instead of waiting forever for one.
Result<int> open_stream(const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    const int saved = errno;
    return make_error(ErrorCode::kIoError, "{}: cannot open for writing: {}", path.string(),
                      saved == ENXIO ? "a FIFO with no reader" : errno_text(saved));
  }
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0) ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
  return fd;
}

// The temporary beside `path`, written and flushed; its name, or an error.
Result<std::string> write_temporary(const std::filesystem::path& path, std::string_view contents) {
  const std::filesystem::path dir = path.has_parent_path() ? path.parent_path() : ".";
  std::string temp = (dir / ("." + path.filename().string() + ".XXXXXX")).string();
  const int fd = ::mkstemp(temp.data());
  if (fd < 0) {
    return make_error(ErrorCode::kIoError, "{}: cannot create a file in {}: {}", path.string(),
                      dir.string(), errno_text(errno));
  }
  Status written = write_all(fd, contents, path);
  // Regular permissions for a user file (mkstemp creates 0600).
  const mode_t mask = ::umask(0);
  ::umask(mask);
  if (written && (::fchmod(fd, 0666 & ~mask) != 0 || ::fsync(fd) != 0)) {
    written =
        make_error(ErrorCode::kIoError, "{}: write error: {}", path.string(), errno_text(errno));
  }
  if (::close(fd) != 0 && written) {
    written =
        make_error(ErrorCode::kIoError, "{}: write error: {}", path.string(), errno_text(errno));
  }
  if (!written) {
    ::unlink(temp.c_str());
    return tl::unexpected(std::move(written).error());
  }
  return temp;
}

}  // namespace

Status write_output_files(const std::vector<OutputFile>& files) {
  std::vector<Target> targets;
  for (const auto& f : files) {
    VPCI_ASSIGN_OR_RETURN(const Target target, classify(f.path));
    targets.push_back(target);
  }
  std::vector<std::string> temporaries(files.size());
  const auto cleanup = [&] {
    for (const auto& t : temporaries) {
      if (!t.empty()) ::unlink(t.c_str());
    }
  };
  std::vector<int> streams(files.size(), -1);
  const auto close_streams = [&] {
    for (const int fd : streams) {
      if (fd >= 0) ::close(fd);
    }
  };
  for (std::size_t i = 0; i < files.size(); ++i) {
    auto made = targets[i] == Target::kStream ? open_stream(files[i].path).map([&](int fd) {
      streams[i] = fd;
      return std::string();
    })
                                              : write_temporary(files[i].path, files[i].contents);
    if (!made) {
      cleanup();
      close_streams();
      return tl::unexpected(std::move(made).error());
    }
    temporaries[i] = std::move(*made);
  }
  for (std::size_t i = 0; i < files.size(); ++i) {
    if (targets[i] != Target::kReplace) continue;
    if (::rename(temporaries[i].c_str(), files[i].path.c_str()) != 0) {
      const int saved = errno;
      cleanup();
      close_streams();
      return make_error(ErrorCode::kIoError, "{}: cannot create: {}", files[i].path.string(),
                        errno_text(saved));
    }
    temporaries[i].clear();
  }
  Status status;
  for (std::size_t i = 0; i < files.size(); ++i) {
    if (streams[i] < 0) continue;
    if (auto written = write_all(streams[i], files[i].contents, files[i].path);
        !written && status) {
      status = std::move(written);
    }
  }
  close_streams();
  return status;
}

Status write_file_atomically(const std::filesystem::path& path, std::string_view contents) {
  return write_output_files({OutputFile{path, std::string(contents)}});
}

}  // namespace vpci::tools
