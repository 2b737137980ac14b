#include "tools/output_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace vpci::tools {

Status write_file_atomically(const std::filesystem::path& path, std::string_view contents) {
  const std::filesystem::path dir = path.has_parent_path() ? path.parent_path() : ".";
  std::string temp = (dir / ("." + path.filename().string() + ".XXXXXX")).string();
  const int fd = mkstemp(temp.data());
  if (fd < 0) {
    return make_error(ErrorCode::kIoError, "cannot create a file in {}: {}", dir.string(),
                      std::strerror(errno));
  }
  std::string_view rest = contents;
  while (!rest.empty()) {
    const ssize_t n = ::write(fd, rest.data(), rest.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      const int saved = errno;
      ::close(fd);
      ::unlink(temp.c_str());
      return make_error(ErrorCode::kIoError, "writing {}: {}", path.string(), std::strerror(saved));
    }
    rest.remove_prefix(static_cast<std::size_t>(n));
  }
  // Regular permissions for a user file (mkstemp creates 0600).
  const mode_t mask = ::umask(0);
  ::umask(mask);
  ::fchmod(fd, 0666 & ~mask);
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    const int saved = errno;
    ::unlink(temp.c_str());
    return make_error(ErrorCode::kIoError, "writing {}: {}", path.string(), std::strerror(saved));
  }
  if (::rename(temp.c_str(), path.c_str()) != 0) {
    const int saved = errno;
    ::unlink(temp.c_str());
    return make_error(ErrorCode::kIoError, "cannot create {}: {}", path.string(), std::strerror(saved));
  }
  return {};
}

}  // namespace vpci::tools
