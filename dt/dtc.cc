#include "dt/dtc.h"

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <regex>

#include <sys/socket.h>
#include <sys/wait.h>

extern char** environ;

namespace vpci::dt {
namespace {

// Closes a descriptor once, on every path.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  [[nodiscard]] int get() const { return fd_; }
  int* out() { return &fd_; }

 private:
  int fd_ = -1;
};

struct Pipe {
  Fd read;
  Fd write;
};

Status make_pipe(Pipe& pipe) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    return make_error(ErrorCode::kIoError, "pipe: {}", errno_text(errno));
  }
  *pipe.read.out() = fds[0];
  *pipe.write.out() = fds[1];
  return {};
}

// stdin is fed through a socket pair rather than a pipe so that writing after the
// child exited fails with EPIPE through send(MSG_NOSIGNAL) instead of raising SIGPIPE
// in a process (a toolstack) whose signal handling is not ours to change.
Status make_input_channel(Pipe& channel) {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    return make_error(ErrorCode::kIoError, "socketpair: {}", errno_text(errno));
  }
  ::shutdown(fds[0], SHUT_WR);
  ::shutdown(fds[1], SHUT_RD);
  *channel.read.out() = fds[0];
  *channel.write.out() = fds[1];
  return {};
}

}  // namespace

std::string dtc_program() {
  // Read before any thread could call setenv (the CLI is single-threaded here).
  const char* configured = std::getenv("VPCI_DTC");  // NOLINT(concurrency-mt-unsafe)
  return configured != nullptr && *configured != '\0' ? configured : "dtc";
}

Result<ProcessOutput> run_process(const std::string& program, const std::vector<std::string>& args,
                                  std::span<const std::uint8_t> input) {
  Pipe in;
  Pipe out;
  Pipe err;
  VPCI_TRY(make_input_channel(in));
  VPCI_TRY(make_pipe(out));
  VPCI_TRY(make_pipe(err));

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in.read.get(), 0);
  posix_spawn_file_actions_adddup2(&actions, out.write.get(), 1);
  posix_spawn_file_actions_adddup2(&actions, err.write.get(), 2);

  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(program.c_str()));
  for (const auto& arg : args) argv.push_back(const_cast<char*>(arg.c_str()));
  argv.push_back(nullptr);

  pid_t pid = -1;
  const int spawn_status =
      ::posix_spawnp(&pid, program.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (spawn_status != 0) {
    return make_error(ErrorCode::kIoError, "cannot run {}: {}", program, errno_text(spawn_status));
  }
  in.read.reset();
  out.write.reset();
  err.write.reset();

  // Feed stdin and drain both outputs together: a child that fills one pipe while we
  // block writing the other would deadlock.
  ProcessOutput result;
  std::size_t written = 0;
  if (input.empty()) in.write.reset();
  const auto set_nonblocking = [](int fd) {
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  };
  if (in.write.get() >= 0) set_nonblocking(in.write.get());
  std::uint8_t buffer[65536];
  while (out.read.get() >= 0 || err.read.get() >= 0) {
    pollfd fds[3];
    int count = 0;
    int out_index = -1;
    int err_index = -1;
    int in_index = -1;
    if (out.read.get() >= 0) {
      out_index = count;
      fds[count++] = {out.read.get(), POLLIN, 0};
    }
    if (err.read.get() >= 0) {
      err_index = count;
      fds[count++] = {err.read.get(), POLLIN, 0};
    }
    if (in.write.get() >= 0) {
      in_index = count;
      fds[count++] = {in.write.get(), POLLOUT, 0};
    }
    if (::poll(fds, static_cast<nfds_t>(count), -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (in_index >= 0 && fds[in_index].revents != 0) {
      const ssize_t n =
          ::send(in.write.get(), input.data() + written, input.size() - written, MSG_NOSIGNAL);
      if (n > 0) written += static_cast<std::size_t>(n);
      if (n < 0 && errno != EAGAIN && errno != EINTR) in.write.reset();
      if (written == input.size()) in.write.reset();
    }
    const auto drain = [&](int index, Fd& fd, auto&& sink) {
      if (index < 0 || fds[index].revents == 0) return;
      const ssize_t n = ::read(fd.get(), buffer, sizeof buffer);
      if (n > 0) {
        sink(n);
      } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
        fd.reset();
      }
    };
    drain(out_index, out.read,
          [&](ssize_t n) { result.out.insert(result.out.end(), buffer, buffer + n); });
    drain(err_index, err.read, [&](ssize_t n) {
      result.err.append(reinterpret_cast<char*>(buffer), static_cast<std::size_t>(n));
    });
  }
  in.write.reset();
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) {
    result.exit_status = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    result.exit_status = 128 + WTERMSIG(status);
  }
  // posix_spawnp reports a missing program through the child's exit status 127.
  if (result.exit_status == 127 && result.out.empty()) {
    return make_error(ErrorCode::kIoError, "cannot run {} (is it installed and on PATH?)", program);
  }
  return result;
}

}  // namespace vpci::dt

namespace vpci::dt {

std::string describe_dtc_failure(std::string_view err, std::string_view origin) {
  // dtc positions are "<stdin>:LINE.COL" with an optional "-END" range, then either
  // " message" (parser errors, after "Error: ") or ": ERROR (check): message".
  static const std::regex kPositioned(R"(^(?:Error: )?<stdin>:(\d+)\.(\d+)(?:-[0-9.]+)?:? (.*)$)");
  std::string first;
  std::size_t more = 0;
  std::string unpositioned;
  while (!err.empty()) {
    const auto newline = err.find('\n');
    const std::string line(err.substr(0, newline));
    err.remove_prefix(newline == std::string_view::npos ? err.size() : newline + 1);
    if (line.empty()) continue;
    std::smatch match;
    if (std::regex_match(line, match, kPositioned)) {
      if (first.empty()) {
        first = fmt::format("{}:{}:{}: {}", origin, match[1].str(), match[2].str(), match[3].str());
      } else {
        ++more;
      }
      continue;
    }
    if (line.starts_with("FATAL ERROR: Unable to parse") ||
        line.starts_with("ERROR: Input tree has errors")) {
      continue;  // summaries of the errors above
    }
    std::string text = line;
    for (auto at = text.find("<stdin>"); at != std::string::npos;
         at = text.find("<stdin>", at + origin.size())) {
      text.replace(at, 7, origin);
    }
    unpositioned += (unpositioned.empty() ? "" : "; ") + text;
  }
  if (first.empty()) {
    return fmt::format("{}: {}", origin,
                       unpositioned.empty() ? "dtc failed without a message" : unpositioned);
  }
  if (more != 0) first += fmt::format(" (and {} more error{})", more, more == 1 ? "" : "s");
  return first;
}

}  // namespace vpci::dt
